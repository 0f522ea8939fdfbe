#!/usr/bin/env bash
# Replays hostile-user cases against a built xtask and the real model, writing
# a Markdown table (command, exit code, the message's key line) to $OUT/replay.md and the
# full output of each case to $OUT/cases.log.
#
#   cargo build --release -p xtask && scripts/replay-robustness.sh [OUT]
#
# Needs ../shared (data, fixtures) and a LoRA adapter of the real model at
# results/default/lora/adapter (made by `cargo xtask study`).
set -u
unset RUST_BACKTRACE RUST_LIB_BACKTRACE  # the messages as a user sees them
cd "$(dirname "$0")/.."
X=${XTASK:-target/release/xtask}
OUT=${1:-docs/results/robustness-replay}
S=$(mktemp -d /tmp/sweelol-replay.XXXXXX)
LORA=${LORA:-results/default/lora/adapter}
mkdir -p "$OUT"
: > "$OUT/cases.log"
printf '| # | case | command | exit | seconds | message (key line) |\n|---|---|---|---:|---:|---|\n' > "$OUT/replay.md"
N=0
# case "description" "grep pattern for the key line" command...
case_() {
    local desc=$1 pat=$2; shift 2
    N=$((N + 1))
    local t0=$(date +%s.%N)
    "$@" > "$S/out" 2>&1
    local rc=$?
    local secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
    local line=$(grep -E -m1 -- "$pat" "$S/out" | sed "s#$S#\$S#g; s#$PWD/##g" | cut -c1-400 | sed 's/|/\\|/g')
    local cmd=$(echo "$*" | sed "s#$S#\$S#g; s#$PWD/##g; s#target/release/xtask#xtask#")
    printf '| %d | %s | `%s` | %d | %s | %s |\n' "$N" "$desc" "$cmd" "$rc" "$secs" "${line:-(no match for /$pat/)}" >> "$OUT/replay.md"
    { echo "### $N. $desc (exit $rc, ${secs}s)"; echo "\$ $cmd"; sed "s#$S#\$S#g" "$S/out" | grep -v '^\s*$' | tail -15; echo; } >> "$OUT/cases.log"
}
T=mmlu_abstract_algebra,mmlu_formal_logic
lines() { wc -l < "$1"; }

# 1. eval reuses whatever an --out holds
case_ "Baseline, 2 docs per task (setup)" "Average MMLU" $X eval --tasks $T --limit 2 --out $S/base
case_ "LoRA adapter into the Baseline's --out" "different run" $X eval --adapter $LORA --tasks $T --limit 2 --out $S/base
case_ "--num-fewshot 5 into a 0-shot --out" "different run" $X eval --num-fewshot 5 --tasks $T --limit 2 --out $S/base
case_ "--num-fewshot 5 --fresh replaces them" "Average MMLU" $X eval --num-fewshot 5 --fresh --tasks $T --limit 2 --out $S/base
case_ "back to 0-shot, --fresh, 4 docs (setup)" "Average MMLU" $X eval --fresh --tasks $T --limit 4 --out $S/base
case_ "smaller --limit reuses a prefix" "mmlu_abstract_algebra \| 2" $X eval --tasks $T --limit 2 --out $S/base
case_ "... and keeps the rest of the file" "^[0-9]" lines $S/base/mmlu_abstract_algebra.jsonl

# 2. two runs on one --out
$X eval --tasks $T --limit 6 --out $S/two > $S/first.log 2>&1 &
FIRST=$!
for _ in $(seq 1 600); do [ -s $S/two/.lock ] && break; sleep 0.1; done
case_ "second eval while the first runs (pid $FIRST)" "in use" $X eval --adapter $LORA --tasks $T --limit 6 --out $S/two
wait $FIRST; echo "first run exit $?" >> "$OUT/cases.log"
case_ "the first run's file afterwards: 6 complete lines" "^[0-9]" sh -c "python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' $S/two/mmlu_formal_logic.jsonl && wc -l < $S/two/mmlu_formal_logic.jsonl" _

# 3. checkpoints: killed run, then the newest checkpoint damaged in place
mkdir -p $S/cfg
sed -e "s#^tokenizer = \"../../#tokenizer = \"$PWD/../#" -e "s#^path = \"../../#path = \"$PWD/../#" \
    -e 's/^n_train = .*/n_train = 12/' -e 's/^n_eval = .*/n_eval = 0/' -e 's/^max_len = .*/max_len = 64/' \
    -e 's/^min_response_tokens = .*/min_response_tokens = 8/' -e 's/^# max_steps = .*/max_steps = 3/' \
    -e 's/^batch_size = .*/batch_size = 2/' -e 's/^checkpoint_every = .*/checkpoint_every = 1/' \
    -e 's/^keep_checkpoints = .*/keep_checkpoints = 3/' -e 's/^progress = .*/progress = false/' \
    -e "s#^dir = .*#dir = \"$S/run\"#" -e "s#^artifact_dir = .*#artifact_dir = \"$S/run/adapter\"#" \
    configs/lora.toml > $S/cfg/lora.toml
$X train --config $S/cfg/lora.toml > $S/train1.log 2>&1 &
TR=$!
for _ in $(seq 1 3000); do [ -d $S/run/checkpoints/step-00000002 ] && break; sleep 0.1; done
kill -9 $TR; wait $TR 2>/dev/null
echo "train killed after: $(ls $S/run/checkpoints)" >> "$OUT/cases.log"
python3 - "$S/run/checkpoints/step-00000002/trainable.safetensors" <<'PY'
import os, sys
p = sys.argv[1]; n = os.path.getsize(p); k = min(65536, n // 4)
with open(p, "r+b") as f:
    f.seek(n - k); f.write(os.urandom(k))
print("damaged", k, "bytes of", n)
PY
case_ "resume after 64 KiB of random bytes in the newest trainable.safetensors" "is bad|moved" $X train --config $S/cfg/lora.toml
case_ "... the adapter it wrote is finite" "finite" /work/venv/bin/python -c "import sys; from safetensors.numpy import load_file; import numpy as np; t=load_file(sys.argv[1]); print('finite' if all(np.isfinite(v).all() and np.abs(v).max() < 1e3 for v in t.values()) else 'NOT finite')" $S/run/adapter/adapter_model.safetensors
sed -i 's/^lr = .*/lr = 3e-4/' $S/cfg/lora.toml
case_ "rerun with another lr over those checkpoints" "different config" $X train --config $S/cfg/lora.toml
sed -i 's/^lr = .*/lr = 2e-4/' $S/cfg/lora.toml
for d in $S/run/checkpoints/step-*; do printf 'xxxx' | dd of=$d/optimizer.safetensors bs=1 seek=200000 conv=notrunc 2>/dev/null; done
case_ "every checkpoint damaged" "no usable checkpoint" $X train --config $S/cfg/lora.toml

# 4. a tokenizer with ids past the config's vocabulary
mkdir -p $S/badvocab && cp ../shared/fixtures/tiny-gemma3/{config.json,model.safetensors} $S/badvocab/
gunzip -c ../shared/fixtures/gemma-3-270m/tokenizer.json.gz > $S/badvocab/tokenizer.json
case_ "eval: tokenizer larger than vocab_size" "tokenizer" $X eval --model $S/badvocab --tasks $T --limit 2 --out $S/bv
case_ "... leaves no jsonl behind" "^[0-9]" sh -c "ls $S/bv/*.jsonl 2>/dev/null | wc -l" _
case_ "generate: tokenizer larger than vocab_size" "tokenizer" $X generate --model $S/badvocab --prompt hi

# 5. checks before work
case_ "unknown task after a good one" "unknown task" $X eval --tasks mmlu_abstract_algebra,nosuch --out $S/u
case_ "... nothing was scored" "^[0-9]" sh -c "ls $S/u 2>/dev/null | wc -l" _
case_ "--limit 0" "error" $X eval --limit 0 --out $S/z
mkdir -p $S/empty $S/corrupt $S/ia3 && echo '{"peft_type": "LORA",' > $S/corrupt/adapter_config.json && echo '{"peft_type": "IA3"}' > $S/ia3/adapter_config.json
case_ "--adapter missing" "adapter" $X eval --adapter $S/nosuch --tasks $T --out $S/a1
case_ "--adapter empty" "adapter" $X eval --adapter $S/empty --tasks $T --out $S/a2
case_ "--adapter corrupt JSON" "adapter" $X eval --adapter $S/corrupt --tasks $T --out $S/a3
case_ "--adapter wrong type" "adapter" $X eval --adapter $S/ia3 --tasks $T --out $S/a4
case_ "study --preset nosuch" "preset" $X study --preset nosuch
case_ "--temperature=-1" "error" $X generate --prompt hi --temperature=-1
case_ "data missing, offline" "abstract_algebra test: put" env HF_HUB_OFFLINE=1 HF_HUB_CACHE=$S/hf $X eval --data $S/nodata --tasks $T --out $S/d

# 6. CLI
case_ "--version" "xtask" $X --version
case_ "eval --help: --model" "^ +--model" $X eval --help
case_ "eval --help: --limit" "^ +--limit" $X eval --help
case_ "eval --help: --out" "^ +--out" $X eval --help
case_ "eval --help: --num-fewshot" "^ +--num-fewshot" $X eval --help
case_ "train --help: --config" "^ +--config" $X train --help
# 7. context length (a prompt of the whole context that generates: docs/results/cpu-2core-long-prompt/)
case_ "a 40,000-word prompt" "32768" sh -c '"$0" generate --prompt "$(python3 -c "print(\"a \" * 40000)")" --max-new-tokens 1' $X
case_ "a prompt of 32,751 tokens and 8 new ones: 32,759 of 32,768 positions (minutes)" "Maximum resident" sh -c '/usr/bin/time -v "$0" generate --prompt "$(python3 -c "print(\"0123456789\" * 3275, end=\"\")")" --max-new-tokens 8' $X
case_ "--max-new-tokens past the context" "32768" $X generate --prompt hi --max-new-tokens 40000
case_ "a task named twice" "twice" $X eval --tasks $T,mmlu_abstract_algebra --limit 2 --out $S/dup

# 8. Ctrl-C while the first group of documents is scored, then the same command again
sigint_eval() {
    "$X" eval --tasks hellaswag --limit 96 --out "$1" &
    local pid=$!
    # The task's file is opened just before its first group is scored.
    for _ in $(seq 1 3000); do [ -f "$1/hellaswag.jsonl" ] && break; sleep 0.1; done
    kill -INT $pid
    wait $pid
}
case_ "Ctrl-C in the first group of 32 documents" "interrupted" sigint_eval $S/int
case_ "... the lines written are whole" "^[0-9]" sh -c "python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' $S/int/hellaswag.jsonl && wc -l < $S/int/hellaswag.jsonl" _
case_ "the same command again" "resumed" $X eval --tasks hellaswag --limit 96 --out $S/int
case_ "... counts only the documents it scored in docs/s" "docs/s" python3 -c "import json; d = json.load(open('$S/int/summary.json')); print(f\"{d['docs_per_second']:.2f} docs/s over {d['seconds']:.1f} s\")"

# 9. training: checks before the model loads, one run per directory
base_cfg() { sed -e "s#^dir = .*#dir = \"$S/$1\"#" -e "s#^artifact_dir = .*#artifact_dir = \"$S/$1/adapter\"#" "$S/cfg/lora.toml"; }
base_cfg big | sed -e 's/^n_train = .*/n_train = 20000/' > $S/cfg/big.toml
case_ "n_train larger than Dolly" "n_train" $X train --config $S/cfg/big.toml
base_cfg warm | sed -e 's/^warmup_steps = .*/warmup_steps = 100/' > $S/cfg/warm.toml
case_ "warmup_steps past the last step" "warmup_steps" $X train --config $S/cfg/warm.toml
base_cfg two | sed -e 's/^max_steps = .*/max_steps = 30/' > $S/cfg/two.toml
$X train --config $S/cfg/two.toml > $S/two-first.log 2>&1 &
TWO=$!
for _ in $(seq 1 600); do [ -s $S/two/.lock ] && break; sleep 0.1; done
case_ "a second training on the same directory" "in use" $X train --config $S/cfg/two.toml
kill $TWO 2>/dev/null; wait $TWO 2>/dev/null

# 10. the disk fills during evaluation (a 16 KiB tmpfs; needs root)
mkdir -p $S/full
if mount -t tmpfs -o size=16k tmpfs $S/full 2>/dev/null; then
    case_ "disk full while scoring" "No space|space" $X eval --tasks $T --limit 100 --out $S/full/out
    case_ "... files left: none empty, no temporary" "files" sh -c "echo files: \$(cd $S/full/out && ls -A | tr '\n' ' '); echo empty: \$(find $S/full/out -type f -empty ! -name .lock | wc -l); echo temporary: \$(find $S/full/out -name '*.tmp*' | wc -l)"
    umount $S/full
fi

rm -rf "$S"
echo "wrote $OUT/replay.md"
