"""Steps 6 onward of each run's metrics: seconds, tokens/s and phase totals.

    python3 summary.py [FOLDER]   (this script's folder by default)
"""
import glob, json, os, sys

here = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
for path in sorted(glob.glob(os.path.join(here, "*metrics.jsonl"))):
    steps = [json.loads(l) for l in open(path) if '"kind":"train"' in l]
    late = [s for s in steps if s["step"] >= 6]
    secs = sum(s["step_s"] for s in late)
    toks = sum(s["tokens"] for s in late)
    phases = {k: round(sum(s["phases"][k] for s in late), 1) for k in late[0]["phases"]}
    print(f"{os.path.basename(path)}: {len(steps)} steps, steps 6+ {secs:.1f} s, {toks / secs:.1f} tokens/s, {phases}, last loss {steps[-1]['loss']:.4f}")
