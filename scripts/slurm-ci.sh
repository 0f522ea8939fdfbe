#!/usr/bin/env bash
# The study on a real Slurm (issue: the study's stages as Slurm jobs). On a one-node cluster
# of this machine (scripts/slurm-local.sh):
#   1. `study --preset quick --limit 2 --slurm`, then Full-Finetune's job is cancelled while
#      it waits: KD-Pruned (its teacher is Full-Finetune) and the table job must never run;
#   2. the same command again submits exactly Full-Finetune, KD-Pruned and the table job;
#   3. the table equals a local run's of the same preset (`diff` prints nothing).
# Prints the sbatch lines, `sacct -c` after each wave, and the diff; exits non-zero on any
# failed check.
#   scripts/slurm-ci.sh [WORKDIR]    # as root, with slurm-wlm and munge installed
set -euo pipefail
cd "$(dirname "$0")/.."
# Without WORKDIR the work goes to a temporary folder, removed at the end: two quick studies
# hold about 27 GB of models and checkpoints.
if [ $# -ge 1 ]; then work=$(realpath -m "$1"); keep=1; else work=$(mktemp -d /tmp/sweelol-slurm.XXXXXX); keep=0; fi
mkdir -p "$work"
# mktemp makes the folder private (0700); munged runs as the munge user and must reach its
# socket and log under it.
chmod 755 "$work"
cargo build --release -q -p xtask
xtask=$(realpath target/release/xtask)
scripts/slurm-local.sh start "$work/cluster"
export SLURM_CONF="$work/cluster/slurm.conf"
trap 'scripts/slurm-local.sh stop "$work/cluster"; [ "$keep" = 1 ] || rm -rf "$work"' EXIT
study=(study --preset quick --limit 2)
run_dir="$work/slurm/quick"

fail() { echo "slurm-ci: FAILED: $*" >&2; exit 1; }
# Waits (at most an hour) until no job is queued or running.
wait_for_queue() {
  for _ in $(seq 1800); do
    [ -z "$(squeue --noheader --format=%i)" ] && return 0
    sleep 2
  done
  squeue; fail "jobs still queued after an hour"
}
# The state of the newest job called $1 in the completion log.
state_of() { sacct -c --noheader --format=jobname%40,state | awk -v n="$1" '$1 == n { s = $2 } END { print s }'; }

echo "== 1. submit, then cancel Full-Finetune's job while it waits"
"$xtask" "${study[@]}" --out "$work/slurm" --slurm | tee "$work/submit-1.txt"
ft=$(squeue --noheader --name=sweelol-quick-full-finetune --format=%i)
[ -n "$ft" ] || fail "no queued job for Full-Finetune"
scancel "$ft"
echo "scancel $ft (sweelol-quick-full-finetune)"
wait_for_queue
sacct -c --format=jobid,jobname%32,state,nodelist,end
for job in full-finetune kd-pruned table; do
  [ "$(state_of "sweelol-quick-$job")" = CANCELLED ] || fail "sweelol-quick-$job is not CANCELLED"
done
for job in baseline pruned-baseline prompt-tune lora finetuned-pruned; do
  [ "$(state_of "sweelol-quick-$job")" = COMPLETED ] || fail "sweelol-quick-$job did not complete"
done
# Never ran: no log, no training record, no table.
ls "$run_dir"/slurm/sweelol-quick-kd-pruned-*.log 2>/dev/null && fail "KD-Pruned's job ran"
[ ! -e "$run_dir/kd-pruned/stage-train.json" ] || fail "KD-Pruned was trained"
[ ! -e "$run_dir/table.md" ] || fail "a table was written with a run missing"
echo "never ran: sweelol-quick-kd-pruned, sweelol-quick-table (cancelled with their dependency)"

echo "== 2. submit again: only what is missing"
"$xtask" "${study[@]}" --out "$work/slurm" --slurm | tee "$work/submit-2.txt"
submitted=$(grep -o -- '--job-name=[^ ]*' "$work/submit-2.txt" | sed 's/--job-name=//' | tr '\n' ' ')
[ "$submitted" = "sweelol-quick-full-finetune sweelol-quick-kd-pruned sweelol-quick-table " ] \
  || fail "the resubmission sent: $submitted"
wait_for_queue
sacct -c --format=jobid,jobname%32,state,nodelist,end
for job in full-finetune kd-pruned table; do
  [ "$(state_of "sweelol-quick-$job")" = COMPLETED ] || fail "sweelol-quick-$job did not complete"
done

# A finished row keeps no checkpoints (the study removes them; 3 GiB per full-weight row).
ls -d "$run_dir"/*/train/checkpoints 2>/dev/null && fail "finished rows kept their checkpoints"

echo "== 3. the same study run locally; the tables must be equal"
"$xtask" "${study[@]}" --out "$work/local" > "$work/local.txt" 2>&1 || { tail -n 30 "$work/local.txt"; fail "the local run"; }
diff -u "$work/local/quick/table.md" "$run_dir/table.md" && diff -u "$work/local/quick/table.csv" "$run_dir/table.csv" \
  || fail "the Slurm table differs from the local one"
echo "slurm-ci: the Slurm table equals the local table (diff empty); all checks passed"
