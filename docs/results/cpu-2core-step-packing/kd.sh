#!/bin/bash
# KD-Pruned and the rows it starts from (Pruned-Baseline, Full-Finetune), 70 steps each
# (280 examples), held-out loss and checkpoint every 32 steps, 2 documents per task, parts
# of at most 1,024 padded tokens.
#   kd.sh NAME BINARY
# writes kd-NAME.time.txt and kd-NAME.{ft,kd}-metrics.jsonl beside this script. With
# SWEELOL_MEMSTAT=reset and a binary built with ../cpu-2core-frozen-packings/memstat.patch
# (plus `memstat("  grads-ready")` before the optimizer step), also kd-NAME.memstat: one
# line per phase, `hwm` the highest RSS within it (MiB). `time -v`'s maximum is then only
# the last phase's, since the reset clears the kernel's high-water mark.
name=$1; bin=$2
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
out=$(mktemp -d)
/usr/bin/time -v "$bin" study --only KD-Pruned --set overrides.n_train=280 --set eval.limit=2 \
  --set overrides.eval_every=32 --set overrides.checkpoint_every=32 --set overrides.max_batch_tokens=1024 \
  --out "$out" > "$out.log" 2>&1
grep MEMSTAT "$out.log" > "$here/kd-$name.memstat" || rm -f "$here/kd-$name.memstat"
grep -E "Maximum resident|Elapsed|System time|User time|train .* s  eval|Command being" "$out.log" > "$here/kd-$name.time.txt"
cp "$out/default/kd-pruned/train/metrics.jsonl" "$here/kd-$name.kd-metrics.jsonl"
cp "$out/default/full-finetune/train/metrics.jsonl" "$here/kd-$name.ft-metrics.jsonl"
rm -rf "$out" "$out.log"
