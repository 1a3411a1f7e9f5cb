#!/usr/bin/env bash
# A real two-node SLURM cluster on this one machine, for tests (tests/test_distributed.py) and for trying
# slurm/train_multinode.sbatch without a cluster. Debian's slurmctld, slurmd and munge, run as root.
#
#   slurm/local_cluster.sh install        # apt-get the packages (Debian/Ubuntu, root)
#   slurm/local_cluster.sh start DIR      # config, state and logs under DIR; prints the line to source
#   source DIR/env                        # SLURM_CONF for sbatch, squeue, scontrol
#   slurm/local_cluster.sh stop DIR       # cancels jobs, stops every daemon it started (by PID)
#
# Two slurmd daemons (`slurmd -N node1`, `-N node2`) listen on their own ports with NodeAddr=127.0.0.1.
# The node names do not resolve, so jobs need MASTER_ADDR=127.0.0.1 in their environment (Lightning
# otherwise looks up "node1" as the main node's address and waits forever).
set -euo pipefail

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

install_packages() {
    [ "$(id -u)" -eq 0 ] || die "install needs root (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

free_ports() {  # N free TCP ports on 127.0.0.1
    python3 - "$1" <<'EOF'
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
EOF
}

wait_for() {  # seconds, description, command...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "$what did not come up within ${seconds}s; see the logs in $DIR"
}

nodes_idle() { [ "$(sinfo -h -o '%t %D' | awk '$1 == "idle" {n += $2} END {print n + 0}')" -eq 2 ]; }

start() {
    [ "$(id -u)" -eq 0 ] || die "start needs root (slurmd runs jobs as their users)"
    for program in munged slurmctld slurmd sbatch; do
        command -v "$program" >/dev/null || die "$program not found: run 'slurm/local_cluster.sh install' (Debian packages slurmctld slurmd slurm-client munge)"
    done
    [ -r /etc/munge/munge.key ] || die "/etc/munge/munge.key missing (the munge package creates it)"
    mkdir -p "$DIR/state" "$DIR/spool"
    read -r CTL_PORT PORT1 PORT2 < <(free_ports 3)
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=pykinml-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTL_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
NodeName=node1 NodeAddr=127.0.0.1 Port=$PORT1 CPUs=2 State=UNKNOWN
NodeName=node2 NodeAddr=127.0.0.1 Port=$PORT2 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
    echo "export SLURM_CONF=$DIR/slurm.conf" >"$DIR/env"
    export SLURM_CONF="$DIR/slurm.conf"
    munged --force --socket="$DIR/munge.socket" --pid-file="$DIR/munged.pid" \
        --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed"
    slurmctld -f "$SLURM_CONF"
    wait_for 20 slurmctld scontrol ping
    slurmd -f "$SLURM_CONF" -N node1
    slurmd -f "$SLURM_CONF" -N node2
    wait_for 30 "the two nodes" nodes_idle
    echo "SLURM cluster up: 2 nodes (node1, node2) on 127.0.0.1; source $DIR/env"
}

stop() {
    if [ -f "$DIR/env" ]; then
        # shellcheck disable=SC1091
        source "$DIR/env"
        scancel --full --quiet --partition=debug 2>/dev/null || true
    fi
    local pids=()
    for file in "$DIR"/slurmd-node1.pid "$DIR"/slurmd-node2.pid "$DIR"/slurmctld.pid "$DIR"/munged.pid; do
        [ -f "$file" ] && pids+=("$(cat "$file")")
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 40); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 1 ] || return 0
        sleep 0.25
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
}

case "${1:-}" in
    install) install_packages ;;
    start) [ -n "${2:-}" ] || die "usage: $0 start DIR"; DIR=$(realpath -m "$2"); start ;;
    stop) [ -n "${2:-}" ] || die "usage: $0 stop DIR"; DIR=$(realpath -m "$2"); stop ;;
    *) die "usage: $0 install | start DIR | stop DIR" ;;
esac
