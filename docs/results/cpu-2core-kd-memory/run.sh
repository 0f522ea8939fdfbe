#!/usr/bin/env bash
# KD-Pruned at the default preset's 512 tokens, bf16: 2 steps and the held-out loss before and after, peak RSS.
cd /work/main
R=/work/study-results/default
for v in old:/work/bin/xtask-1f0c322 new:/work/bin/xtask-kdeval; do
  name=${v%%:*}; x=${v#*:}
  rm -rf /work/kdmem/$name
  /usr/bin/time -v $x --dtype bf16 train --config configs/kd-pruned.toml \
    --set model.source=$R/pruned-baseline/model --set distill.teacher=$R/full-finetune/model \
    --set distill.masks=$R/pruned-baseline/model/pruning_masks.safetensors \
    --set data.max_len=512 --set data.n_train=16 --set data.n_eval=16 --set train.max_steps=2 --set train.warmup_steps=1 \
    --set output.dir=/work/kdmem/$name --set output.artifact_dir=/work/kdmem/$name/model --set output.progress=false \
    > /work/kdmem/$name.log 2>&1
  echo "$name exit $?"
done
