#!/bin/bash
# KD-Pruned and the rows it starts from, 70 steps each (280 examples), held-out loss and
# checkpoint every 32 steps, 2 documents per task; one memory line per step.
#   kd.sh NAME BINARY [STUDY ARGS ...]
# kd-F: the fix; kd-S: the same with `--set overrides.max_batch_tokens=1024`.
name=$1; bin=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
out=$(mktemp -d)
SWEELOL_MEMSTAT=1 /usr/bin/time -v "$bin" study --only KD-Pruned --set overrides.n_train=280 --set eval.limit=2 \
  --set overrides.eval_every=32 --set overrides.checkpoint_every=32 "$@" --out "$out" > "$out.log" 2>&1
grep MEMSTAT "$out.log" > "$here/kd-$name.memstat"
grep -E "Maximum resident|Elapsed|System time|User time|train .* s  eval|Command being" "$out.log" > "$here/kd-$name.time.txt"
cp "$out/default/kd-pruned/train/metrics.jsonl" "$here/kd-$name.kd-metrics.jsonl"
rm -rf "$out" "$out.log"
