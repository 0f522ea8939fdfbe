#!/usr/bin/env bash
# The GPU machine's job, in order, for each backend binary that was built and carried:
#   1. `xtask check`: backend sanity (the tiny model's logits vs transformers) and the
#      Baseline's first 20 documents per study task vs lm-eval 0.4.13 (decisions, log-likelihoods);
#   2. `xtask bench --compare-torch python3 --torch-device cuda` for the five techniques at
#      batch 8 x 512 and 16 x 512 (fixed shapes: lengths padded to multiples of 64),
#      ours vs PyTorch eager on the same batches, with warm-up and shape counts;
#   3. the same bench with `--dtype bf16` (bf16 products from f32 weights; PyTorch under bf16
#      autocast) at 16 x 512 (a backend without bf16 kernels refuses it in seconds);
# writing everything to docs/results/<gpu>-<backend>/. No network and no Rust toolchain are
# needed there: binaries, data, fixtures and the GGUF are carried.
#
#   BIN=bin SHARED=shared SWEELOL_CACHE=cache scripts/gpu-check.sh     # on the GPU machine
#   scripts/gpu-check.sh --dry-run                                      # here, on the CPU
#
# BIN holds xtask-tch (libtorch; run as tch-cuda) and/or xtask-wgpu; SHARED holds data/ and
# fixtures/; SWEELOL_CACHE holds models/ with the GGUF. --dry-run runs the same steps on this
# CPU with target/release/xtask (flex) and a tiny model with Gemma's real vocabulary, at tiny
# sizes, so device time goes to the GPU part only.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
export SWEELOL_ROOT=$PWD HF_HUB_OFFLINE=1
unset RUST_BACKTRACE
PY=${PYTHON:-python3}
SHARED=${SHARED:-../shared}
export SWEELOL_DATA=${SWEELOL_DATA:-$SHARED/data}
STEPS=${STEPS:-2}
DOCS=${DOCS:-8}
START=$(date +%s)
log() { echo "[gpu-check +$(( $(date +%s) - START ))s] $*" >&2; }

if [ $DRY = 1 ]; then
    GPU=dry-run-cpu
    TORCH_DEVICE=cpu
    BACKENDS="flex:target/release/xtask"
    SIZES="2x64"
    BF16_SIZES="2x64"
    STEPS=1 DOCS=2
    MODEL=$(mktemp -d /tmp/sweelol-tiny.XXXXXX)/model
    # A tiny Gemma 3 with the real 262,145-token vocabulary, random weights (transformers).
    "$PY" - "$SHARED/fixtures" "$MODEL" <<'PY' || exit 1
import gzip, json, shutil, sys, torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig
fixtures, out = sys.argv[1], sys.argv[2]
cfg = json.load(open(f"{fixtures}/tiny-gemma3/config.json"))
cfg["vocab_size"] = 262145
torch.manual_seed(0)
model = Gemma3ForCausalLM(Gemma3TextConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")}))
model.save_pretrained(out, safe_serialization=True)
with gzip.open(f"{fixtures}/gemma-3-270m/tokenizer.json.gz") as src, open(f"{out}/tokenizer.json", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    CHECK_MODEL=(--model "$MODEL" --docs 2)
    BENCH_MODEL=(--model "$MODEL")
else
    GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z ' 'a-z-' | sed 's/^nvidia-//')
    [ -n "$GPU" ] || { echo "no GPU found (nvidia-smi)" >&2; exit 1; }
    TORCH_DEVICE=cuda
    BIN=${BIN:-bin}
    BACKENDS=""
    [ -x "$BIN/xtask-tch" ] && BACKENDS="$BACKENDS tch-cuda:$BIN/xtask-tch"
    [ -x "$BIN/xtask-wgpu" ] && BACKENDS="$BACKENDS wgpu:$BIN/xtask-wgpu"
    [ -n "$BACKENDS" ] || { echo "no xtask-tch or xtask-wgpu in $BIN" >&2; exit 1; }
    SIZES=${SIZES:-"8x512 16x512"}
    BF16_SIZES=${BF16_SIZES:-"16x512"}
    # libtorch's and CUDA's libraries from the machine's own PyTorch (torch 2.11 + cu130).
    TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    NV=$("$PY" -c 'import glob, os, nvidia; print(":".join(glob.glob(os.path.join(os.path.dirname(nvidia.__path__[0]), "nvidia", "*", "lib"))))' 2>/dev/null || true)
    export LD_LIBRARY_PATH=$TORCH_LIB:$NV:${LD_LIBRARY_PATH:-}
    CHECK_MODEL=()
    BENCH_MODEL=()
fi

FAILED=0
for entry in $BACKENDS; do
    backend=${entry%%:*}
    x=${entry#*:}
    out=docs/results/$GPU-${backend%%:*}
    mkdir -p "$out"
    log "$backend: check"
    "$x" --backend "$backend" check "${CHECK_MODEL[@]}" --out "$out/check.json" > "$out/check.log" 2>&1 \
        || { log "$backend: check FAILED (see $out/check.log)"; FAILED=1; continue; }
    RUNS=$SIZES
    for size in $BF16_SIZES; do RUNS="$RUNS $size-bf16"; done
    for run in $RUNS; do
        size=${run%-bf16} dtype=f32
        [ "$run" != "$size" ] && dtype=bf16
        b=${size%x*} len=${size#*x}
        log "$backend: bench $run"
        "$x" --backend "$backend" --dtype "$dtype" bench "${BENCH_MODEL[@]}" --compare-torch "$PY" --torch-device "$TORCH_DEVICE" \
            --batch-size "$b" --max-len "$len" --pad-to-multiple 64 --steps "$STEPS" --docs "$DOCS" \
            --out "$out/bench-$run.json" > "$out/bench-$run.log" 2>&1 \
            || { log "$backend: bench $run FAILED (see $out/bench-$run.log)"; FAILED=1; }
    done
done
log "done (exit $FAILED); results in docs/results/$GPU-*"
exit $FAILED
