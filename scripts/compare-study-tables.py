"""Compares two study tables (`table.json`) cell by cell: per row and task the accuracy, its
interval, acc_norm, n and the McNemar p values; Average MMLU with its delta; held-out losses;
the findings' verdicts; the greedy answers. Prints the number of cells and every difference.

    python3 scripts/compare-study-tables.py A/table.json B/table.json
"""
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
def cells(t):
    out = {}
    for r in t["rows"]:
        for task, c in r["tasks"].items():
            out[(r["row"], task)] = (c["acc"], c["ci95"], c["acc_norm"], c["n"], c["p_vs_baseline"], c["p_holm"])
        out[(r["row"], "average_mmlu")] = (r["average_mmlu"], r["average_mmlu_vs_baseline"])
        out[(r["row"], "held_out_loss")] = r["held_out_loss"]
    out[("findings",)] = [(f["id"], f["verdict"]) for f in t["findings"]]
    out[("answers",)] = [[(x["row"], x["answer"]) for x in p["answers"]] for p in t["answers"]]
    return out
ca, cb = cells(a), cells(b)
diff = [k for k in sorted(set(ca) | set(cb), key=str) if ca.get(k) != cb.get(k)]
print(f"{len(ca)} cells compared (per row and task: acc, interval, acc_norm, n, McNemar p, Holm p; Average MMLU with its delta; held-out loss; verdicts; greedy answers)")
print("differences:", len(diff))
for k in diff:
    print(" ", k, ca.get(k), "->", cb.get(k))
