#!/bin/bash
# Full-Finetune, bf16 products, rows of up to 512 tokens, batch 4, 100 examples (25 steps),
# no held-out loss or checkpoint before the end: BEFORE, AFTER, AFTER, BEFORE, one after
# the other on the idle machine. usage: run.sh BEFORE_XTASK AFTER_XTASK [OUT_DIR]
# Outputs steady-{base,new,new2,base2}.{metrics.jsonl,time.txt} in OUT_DIR (default: beside
# this script).
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
here=$(cd "${3:-$here}" && pwd)
for name in base new new2 base2; do
  case $name in base*) bin=$1;; *) bin=$2;; esac
  out=$(mktemp -d)
  /usr/bin/time -v "$bin" train --config configs/full-finetune.toml --dtype bf16 --set data.n_train=100 \
    --set data.max_len=512 --set train.eval_every=0 --set train.checkpoint_every=0 \
    --set "output.dir=\"$out\"" --set "output.artifact_dir=\"$out/model\"" --set output.progress=false \
    > "$out/log" 2>&1
  cp "$out/metrics.jsonl" "$here/steady-$name.metrics.jsonl"
  grep -E "Command being timed|User time|System time|Percent of CPU|Elapsed|Maximum resident|Minor" "$out/log" \
    | sed 's/^\t//' > "$here/steady-$name.time.txt"
  rm -rf "$out"
done
