#!/usr/bin/env bash
# Starts a single-node Slurm cluster for the sweep tests (Debian's slurm-wlm; root only): munge,
# slurmctld and slurmd in the foreground under `timeout` (so they stop by themselves after
# STAGEWISE_SLURM_LIFETIME seconds, default 5400), ports 16817/16818. Prints the variables the
# tests read (`eval "$(.ci/slurm.sh)"`); prints nothing and exits 1 when Slurm cannot run here.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "not root: cannot start Slurm" >&2; exit 1; }
if ! command -v slurmctld >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || { echo "no apt-get to install slurm-wlm" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null 2>&1; } \
    || { echo "could not install slurm-wlm" >&2; exit 1; }
fi
LIFE="${STAGEWISE_SLURM_LIFETIME:-5400}"
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
[ -f /etc/munge/munge.key ] || { echo "no munge key" >&2; exit 1; }
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
D="$(mktemp -d)"
H="$(hostname -s)"
CPUS="$(nproc)"
MEM="$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
mkdir -p "$D/state" "$D/spool"
cat > "$D/slurm.conf" <<CONF
ClusterName=stagewise-test
SlurmctldHost=$H
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/slurmd-%n
SlurmctldPidFile=$D/state/slurmctld.pid
SlurmdPidFile=$D/state/slurmd.pid
SlurmctldLogFile=$D/state/slurmctld.log
SlurmdLogFile=$D/state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$H CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$D/slurm.conf"
timeout "$LIFE" slurmctld -D -c > "$D/slurmctld.out" 2>&1 &
CTLD=$!
sleep 1
timeout "$LIFE" slurmd -D > "$D/slurmd.out" 2>&1 &
SLURMD=$!
for _ in $(seq 30); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then
    echo "export SLURM_CONF=$D/slurm.conf"
    echo "export STAGEWISE_TEST_SLURM=1"
    echo "export STAGEWISE_TEST_SLURM_PIDS=\"$CTLD $SLURMD\""
    exit 0
  fi
  sleep 1
done
echo "Slurm did not come up:" >&2
tail -5 "$D/state/slurmctld.log" "$D/state/slurmd.log" >&2 || true
kill "$CTLD" "$SLURMD" 2>/dev/null || true
exit 1
