#!/usr/bin/env bash
# A single-node Slurm on this machine, for the cluster tests and for trying `collapse-lab slurm`
# by hand (Debian's slurmctld/slurmd 22.05 and munge; run as root, no systemd needed).
#
#   scripts/slurm-local.sh install   # apt-get install slurmctld slurmd slurm-client munge
#   scripts/slurm-local.sh start     # munged, slurmctld, slurmd; waits until the node is idle
#   scripts/slurm-local.sh stop      # stops the daemons it started (by pid)
#   scripts/slurm-local.sh status
#
# State, logs and pid files live in $SLURM_LOCAL_DIR (default /tmp/collapse-lab-slurm). The
# node has this machine's CPU count and one partition, `debug`.
set -euo pipefail
state=${SLURM_LOCAL_DIR:-/tmp/collapse-lab-slurm}
conf=/etc/slurm/slurm.conf

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "slurm-local: must run as root (it starts munged, slurmctld and slurmd)" >&2
        exit 2
    fi
}

install() {
    need_root
    if command -v slurmctld > /dev/null && command -v slurmd > /dev/null && command -v sbatch > /dev/null && command -v munged > /dev/null; then
        return 0
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge > "${TMPDIR:-/tmp}/slurm-local-apt.log" 2>&1 || {
        # A stale package index is the usual cause: refresh it once.
        apt-get update -q > /dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge > "${TMPDIR:-/tmp}/slurm-local-apt.log" 2>&1
    }
}

write_conf() {
    local cpus mem
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    mkdir -p "$state/spool" "$state/ctld" /etc/slurm
    cat > "$conf" <<EOF
# Written by collapse-lab's scripts/slurm-local.sh: one node, this machine.
ClusterName=collapse-lab-local
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmUser=root
SlurmdUser=root
ReturnToService=2
MpiDefault=none
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=600
KillWait=10
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2> /dev/null; }

start() {
    need_root
    install
    write_conf
    if [ ! -s /etc/munge/munge.key ]; then
        head -c 1024 /dev/urandom > /etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! alive "$state/munged.pid"; then
        runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid --force
        sleep 0.5
        cp /run/munge/munged.pid "$state/munged.pid"
    fi
    alive "$state/slurmctld.pid" || slurmctld
    alive "$state/slurmd.pid" || slurmd
    for _ in $(seq 60); do
        if sinfo -h -o '%T' 2> /dev/null | grep -qx idle; then
            echo "slurm-local: node idle (partition debug, $(nproc) CPUs); state in $state"
            return 0
        fi
        sleep 1
    done
    echo "slurm-local: the node did not become idle within 60 s; see $state/slurmctld.log and $state/slurmd.log" >&2
    sinfo >&2 || true
    exit 1
}

stop() {
    for d in slurmd slurmctld munged; do
        if alive "$state/$d.pid"; then
            kill "$(cat "$state/$d.pid")" 2> /dev/null || true
        fi
    done
    for d in slurmd slurmctld munged; do
        for _ in $(seq 50); do
            alive "$state/$d.pid" || break
            sleep 0.2
        done
        rm -f "$state/$d.pid"
    done
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) sinfo && squeue ;;
    *)
        echo "usage: $0 install|start|stop|status" >&2
        exit 2
        ;;
esac
