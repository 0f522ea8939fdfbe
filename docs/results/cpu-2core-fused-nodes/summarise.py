"""steady.md from the four runs of run.sh: steps 6-25 summed, loss per step compared."""
import json, re, sys
rows = []
runs = {}
for name, binary in [("base", "before"), ("new", "after"), ("new2", "after"), ("base2", "before")]:
    steps = [json.loads(l) for l in open(f"steady-{name}.metrics.jsonl") if '"kind":"train"' in l]
    runs[name] = steps
    late = [s for s in steps if s["step"] >= 6]
    secs = sum(s["step_s"] for s in late)
    toks = sum(s["tokens"] for s in late)
    scored = sum(s["target_tokens"] for s in late)
    phases = {k: sum(s["phases"][k] for s in late) for k in late[0]["phases"]}
    t = open(f"steady-{name}.time.txt").read()
    get = lambda pat: re.search(pat, t).group(1)
    rows.append((name, binary, secs, toks / secs, scored / secs, steps[0]["step_s"], steps[-1]["loss"],
                 get(r"Elapsed.*: (\S+)"), get(r"Maximum resident set size \(kbytes\): (\d+)"), get(r"Percent of CPU this job got: (\S+)"), phases))
print("| run | binary | steps 6-25: s | real tokens/s | scored tokens/s | step 1 s | loss at step 25 | wall | peak RSS kB | CPU |")
print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.4f} | {r[7]} | {r[8]} | {r[9]} |")
print()
print("Phases, steps 6-25 (s):")
print()
keys = list(rows[0][10])
print("| run | " + " | ".join(keys) + " |")
print("|---|" + "---:|" * len(keys))
for r in rows:
    print(f"| {r[0]} | " + " | ".join(f"{r[10][k]:.1f}" for k in keys) + " |")
print()
worst = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(runs["new"], runs["base"]))
print(f"Largest relative difference of a step's loss, after vs before: {worst:.2e}")
