#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the study's Slurm test (scripts/slurm-ci.sh):
# munged, slurmctld and slurmd on localhost, no cgroups, state and logs under DIR.
#   scripts/slurm-local.sh start DIR   # writes DIR/slurm.conf, starts the daemons, waits for the node
#   scripts/slurm-local.sh stop DIR    # stops them
# Needs root and Debian's slurm-wlm and munge (apt-get install slurm-wlm munge).
# Clients find the cluster through SLURM_CONF=DIR/slurm.conf.
set -euo pipefail
cmd=${1:?start or stop}
dir=$(realpath -m "${2:?state directory}")
conf="$dir/slurm.conf"

stop() {
  for d in slurmd slurmctld; do
    if [ -f "$dir/$d.pid" ]; then kill "$(cat "$dir/$d.pid")" 2>/dev/null || true; fi
  done
  if [ -f "$dir/munged.pid" ]; then kill "$(cat "$dir/munged.pid")" 2>/dev/null || true; fi
  sleep 1
}

case "$cmd" in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac

mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
chown munge:munge "$dir/munge"
chmod 755 "$dir"
# munged runs as the munge user: every folder above DIR must let others through (o+x).
if [ "$(id -u)" = 0 ] && ! runuser -u munge -- test -w "$dir/munge"; then
  echo "slurm-local: the munge user cannot write $dir/munge; make every folder above $dir searchable by others (chmod o+x)" >&2
  exit 1
fi
# munged: its own socket, so a machine's running munged (if any) is left alone.
sudo_munge() { if [ "$(id -u)" = 0 ]; then runuser -u munge -- "$@"; else "$@"; fi; }
sudo_munge /usr/sbin/munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
  --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/seed" --force
node=$(hostname -s)
# The node's CPUs and memory as slurmd sees them (`slurmd -C`), less 1 GiB for the daemons.
read -r cpus mem < <(slurmd -C | awk '/^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["CPUs"], v["RealMemory"] - 1024 }')
cat > "$conf" <<CONF
ClusterName=sweelol-ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$conf"
slurmctld -f "$conf"
slurmd -f "$conf"
for _ in $(seq 60); do
  if sinfo --noheader --format=%T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm: one node ($node, $cpus CPUs, $mem MB) up; SLURM_CONF=$conf"
    exit 0
  fi
  sleep 1
done
echo "slurm: the node did not come up; logs in $dir/log" >&2
tail -n 20 "$dir/log/"*.log >&2 || true
stop
exit 1
