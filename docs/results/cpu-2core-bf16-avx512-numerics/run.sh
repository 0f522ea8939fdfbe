#!/usr/bin/env bash
# Issue 25 item 2 on the AMD EPYC (avx512_bf16): Baseline limit 200 bf16 vs f32, 50 steps FT/LoRA bf16 vs f32.
set -u
X=/work/bin/xtask-num
cd /work/num
/usr/bin/time -v $X --dtype bf16 eval --limit 200 --out /work/num/eval-bf16 > eval-bf16.log 2>&1
python3 /work/main/scripts/compare-evals.py /work/study-results/default/baseline/eval /work/num/eval-bf16 --out eval-compare.json > eval-compare.txt 2>&1
for v in ft-f32-50 ft-bf16-50 lora-f32-50 lora-bf16-50; do
  /usr/bin/time -v $X train --config $v.toml > $v.log 2>&1
done
echo done > finished
