#!/usr/bin/env python3
"""Per-document agreement of two `xtask eval` output folders (say f32 and bf16 runs of one
model): the share of documents whose decision (argmax log-likelihood, lm-eval's `acc`)
is the same, whose acc_norm is the same, and the largest log-likelihood difference.

    scripts/compare-evals.py results/f32 results/bf16 [--out compare.json]
"""
import argparse
import json
import pathlib


def read(folder, task):
    with open(folder / f"{task}.jsonl") as f:
        return {d["doc_id"]: d for d in map(json.loads, f)}


def argmax(xs):
    return max(range(len(xs)), key=lambda i: xs[i])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=pathlib.Path)
    ap.add_argument("b", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    tasks = sorted(p.stem for p in args.a.glob("*.jsonl"))
    report, totals = {}, {"docs": 0, "decisions_equal": 0, "acc_norm_equal": 0}
    for task in tasks:
        a, b = read(args.a, task), read(args.b, task)
        if a.keys() != b.keys():
            raise SystemExit(f"{task}: the folders scored different documents")
        same = sum(argmax(a[i]["loglikelihoods"]) == argmax(b[i]["loglikelihoods"]) for i in a)
        norm = sum(a[i].get("acc_norm") == b[i].get("acc_norm") for i in a)
        worst = max(abs(x - y) for i in a for x, y in zip(a[i]["loglikelihoods"], b[i]["loglikelihoods"]))
        acc = lambda d: 100 * sum(x["acc"] for x in d.values()) / len(d)
        report[task] = {"docs": len(a), "decisions_equal": same, "acc_norm_equal": norm,
                        "max_abs_ll_diff": worst, "acc_a": acc(a), "acc_b": acc(b)}
        totals["docs"] += len(a)
        totals["decisions_equal"] += same
        totals["acc_norm_equal"] += norm
        print(f"{task}: {same}/{len(a)} decisions equal, acc {acc(a):.2f} vs {acc(b):.2f}, worst |ll diff| {worst:.4f}")
    totals["share_equal"] = totals["decisions_equal"] / totals["docs"]
    print(f"all: {totals['decisions_equal']}/{totals['docs']} decisions equal ({100 * totals['share_equal']:.1f}%)")
    if args.out:
        args.out.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "tasks": report, "total": totals}, indent=2) + "\n")


if __name__ == "__main__":
    main()
