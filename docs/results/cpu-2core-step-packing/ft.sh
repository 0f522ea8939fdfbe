#!/bin/bash
# Full-Finetune, bf16, 25 steps of 4 rows of up to 512 tokens (n_train 100), no held-out
# loss or checkpoint before the end, micro-batches of more than 1,024 padded tokens in parts.
#   ft.sh NAME BINARY [--set KEY=VALUE ...]   (H runs: --set train.max_batch_tokens=512)
# writes ft-NAME.metrics.jsonl and ft-NAME.time.txt beside this script, or in $FT_OUT.
name=$1; bin=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
dest=${FT_OUT:-$here}
cd "$here/../../.."
out=$(mktemp -d)
/usr/bin/time -v "$bin" train --config configs/full-finetune.toml --dtype bf16 --set data.n_train=100 \
    --set data.max_len=512 --set train.eval_every=0 --set train.checkpoint_every=0 \
    --set train.max_batch_tokens=1024 "$@" \
    --set "output.dir=\"$out\"" --set "output.artifact_dir=\"$out/model\"" --set output.progress=false > "$out/log" 2>&1
cp "$out/metrics.jsonl" "$dest/ft-$name.metrics.jsonl"
grep -E "Elapsed|Maximum resident|System time|User time|Minor" "$out/log" > "$dest/ft-$name.time.txt"
rm -rf "$out"
