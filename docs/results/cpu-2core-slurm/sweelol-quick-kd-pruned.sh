#!/bin/sh
# Written by `cargo xtask study --slurm`; submitted with sbatch.
exec '/work/main/target/release/xtask' '--backend' 'flex' '--dtype' 'f32' 'study' '--preset' '/work/main/configs/study/quick.toml' '--out' '/tmp/slurm-ci/slurm' '--limit=2' '--stage' 'KD-Pruned' '--marker' '18eea918fb187b88-57de'
