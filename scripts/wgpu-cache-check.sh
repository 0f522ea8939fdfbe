#!/usr/bin/env bash
# Does a second wgpu process start warm from CubeCL's persistent caches? Runs the same small
# LoRA bench three times — cold caches, warm caches, CubeCL's cache folder deleted — with
# the Vulkan driver's own shader cache off, so only what `persist_jit_caches` keeps carries
# over. Works on any Vulkan device, a software one (Mesa's lavapipe) included.
#
#   scripts/wgpu-cache-check.sh XTASK_WGPU MODEL_DIR OUT_DIR
#
# XTASK_WGPU: an xtask built with --features wgpu; MODEL_DIR: a transformers directory (a
# tiny model keeps this quick: see gpu-check.sh --dry-run); OUT_DIR: where the three bench
# JSONs, their logs and summary.txt go.
set -u
X=$1 MODEL=$2 OUT=$3
mkdir -p "$OUT"
export MESA_SHADER_CACHE_DISABLE=true
export SWEELOL_CACHE
SWEELOL_CACHE=$(mktemp -d /tmp/sweelol-jit.XXXXXX)
# The model cache (the GGUF) is not needed: the bench runs on MODEL_DIR.
run() {
    local name=$1 t0 t1 rc
    t0=$(date +%s.%N)
    "$X" --backend wgpu bench --model "$MODEL" --only lora --steps 2 --docs 1 --batch-size 2 --max-len 64 \
        --pad-to-multiple 64 --out "$OUT/$name.json" > "$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    echo "$name: exit $rc, wall $(echo "$t1 - $t0" | bc) s, CubeCL cache $(du -sh "$SWEELOL_CACHE/cubecl" 2>/dev/null | cut -f1)" | tee -a "$OUT/summary.txt"
}
: > "$OUT/summary.txt"
run cold
run warm
rm -rf "$SWEELOL_CACHE/cubecl"
run cleared
rm -rf "$SWEELOL_CACHE"
