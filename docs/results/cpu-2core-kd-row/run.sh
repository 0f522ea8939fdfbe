#!/bin/bash
# KD-Pruned bench steps, bf16 products, rows of up to 512 tokens: NEW, OLD, NEW, OLD, one
# after the other on the idle machine. usage: run.sh NEW_XTASK OLD_XTASK
# (the bench also trains the two rows KD-Pruned starts from: Full-Finetune, Finetuned-Pruned)
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
for name in new old new2 old2; do
  case $name in old*) bin=$2;; *) bin=$1;; esac
  "$bin" bench --dtype bf16 --only kd-pruned --steps 4 --max-len 512 --docs 1 --out "$here/bench-$name.json" > /dev/null 2>&1
done
