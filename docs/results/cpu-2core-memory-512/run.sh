#!/bin/bash
# Full-Finetune from the GGUF base, bf16 products, rows of up to 512 tokens, batch 4: RSS
# sampled every 0.2 s and `time -v`. usage: run.sh NAME [VAR=value for the run...]
# From the environment: NTRAIN (examples, 4 a step; 120), EVERY (held-out loss and checkpoint
# cadence; 0 = at the end), EXTRA (more --set arguments). Outputs NAME.log, NAME.rss,
# NAME.metrics.jsonl beside this script.
here=$(cd "$(dirname "$0")" && pwd)
name=$1; shift
out=/tmp/ftmem-$name; rm -rf "$out"
cd "$here/../../.."
env "$@" /usr/bin/time -v target/release/xtask train --config configs/full-finetune.toml --dtype bf16 \
  --set data.n_train=${NTRAIN:-120} $EXTRA --set data.max_len=512 \
  --set train.eval_every=${EVERY:-0} --set train.checkpoint_every=${EVERY:-0} \
  --set "output.dir=\"$out\"" --set "output.artifact_dir=\"$out/model\"" --set output.progress=false \
  > "$here/$name.log" 2>&1 &
pid=$!
sleep 1
child=$(pgrep -P $pid xtask)
: > "$here/$name.rss"
while kill -0 $pid 2>/dev/null; do
  grep VmRSS /proc/$child/status 2>/dev/null | awk -v t="$(date +%s)" '{print t, $2}' >> "$here/$name.rss"
  sleep 0.2
done
cp "$out/metrics.jsonl" "$here/$name.metrics.jsonl"; rm -rf "$out"
grep "Maximum resident\|Elapsed" "$here/$name.log"
