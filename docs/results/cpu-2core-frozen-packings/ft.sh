#!/bin/bash
# Full-Finetune, bf16, rows of up to 512 tokens, 4 a micro-batch, one memory line per step
# (a binary built with memstat.patch applied).
#   [EVERY=32] [EXTRA="--set KEY=VALUE ..."] ft.sh NAME BINARY N_TRAIN [ENV=VALUE ...]
# ft-B: 4f3b203 + patch, 280 examples, EVERY=32; ft-C: the same with the fix;
# ft-A: 4f3b203 + patch, 240 examples, no held-out loss or checkpoint before the end;
# ft-L4: ft-C's binary with blocks from 4 MiB up mapped on their own (a temporary knob).
name=$1; bin=$2; n=$3; shift 3
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
out=$(mktemp -d)
env SWEELOL_MEMSTAT=1 "$@" /usr/bin/time -v "$bin" train --config configs/full-finetune.toml --dtype bf16 --set data.n_train=$n \
    --set data.max_len=512 --set train.eval_every=${EVERY:-0} --set train.checkpoint_every=${EVERY:-0} \
    --set "output.dir=\"$out\"" --set "output.artifact_dir=\"$out/model\"" --set output.progress=false $EXTRA > "$out/log" 2>&1
cp "$out/metrics.jsonl" "$here/ft-$name.metrics.jsonl"
grep MEMSTAT "$out/log" > "$here/ft-$name.memstat"
grep -E "Elapsed|Maximum resident|System time|User time" "$out/log" > "$here/ft-$name.time.txt"
rm -rf "$out"
