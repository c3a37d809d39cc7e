#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for trying `fp8 sweep --slurm` and for the real-Slurm test.
#
#   scripts/slurm/cluster.sh start  [DIR]   # start munged, slurmctld, slurmd; wait for the node to be idle
#   scripts/slurm/cluster.sh status [DIR]   # which daemons run, and `sinfo`
#   scripts/slurm/cluster.sh stop   [DIR]   # stop the daemons this script started
#
# DIR (or $FP8_SLURM_DIR; default /tmp/fp8-slurm) holds everything: etc/slurm.conf, the
# controller's state, slurmd's spool, logs, pid files and munged's files. `start` prints
#   export SLURM_CONF=DIR/etc/slurm.conf
# on stdout (all else goes to stderr): eval it so that sbatch, squeue, … talk to this cluster.
#
# It installs nothing (see scripts/slurm/install-deps.sh) and must run as root: slurmctld and
# slurmd run as root (SlurmUser=root), munged as the `munge` user on the default socket
# /run/munge/munge.socket.2, with the key /etc/munge/munge.key (generated if absent; override with
# $FP8_MUNGE_KEY). A munged that already answers on that socket is used as it is.
#
# The plugins are the ones that work in a container without systemd or cgroups:
# proctrack/linuxproc, task/none, select/cons_tres with CR_CPU (a task takes CPUs, not whole
# nodes), no accounting database; finished jobs are logged by jobcomp/filetxt to DIR/log/jobcomp.txt.
# The node's CPUs and memory are read from this machine. Ports: $FP8_SLURMCTLD_PORT (6817) and
# $FP8_SLURMD_PORT (6818). Both `start` and `stop` are idempotent; `stop` cancels the cluster's jobs,
# then kills only the daemons whose pid files are under DIR.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|status [DIR]   (DIR default: \$FP8_SLURM_DIR or /tmp/fp8-slurm)" >&2
    exit 2
}

[ $# -ge 1 ] || usage
CMD=$1
DIR=${2:-${FP8_SLURM_DIR:-/tmp/fp8-slurm}}
case "$CMD" in start | stop | status) ;; *) usage ;; esac
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

CONF=$DIR/etc/slurm.conf
RUN=$DIR/run
LOG=$DIR/log
MUNGE_DIR=$DIR/munge
MUNGE_SOCKET=/run/munge/munge.socket.2
MUNGE_KEY=${FP8_MUNGE_KEY:-/etc/munge/munge.key}
CTLD_PORT=${FP8_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${FP8_SLURMD_PORT:-6818}
WAIT_S=${FP8_SLURM_WAIT_S:-60}
NODE=$(hostname -s)
export SLURM_CONF=$CONF

say() { echo "cluster.sh: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# The pid in FILE, when that process is alive.
live_pid() {
    local file=$1 pid
    [ -s "$file" ] || return 1
    pid=$(cat "$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

check_tools() {
    local missing=() t
    for t in munged munge unmunge slurmctld slurmd sbatch squeue sinfo scontrol runuser; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        die "missing: ${missing[*]} (Debian: apt-get install slurm-wlm munge, or scripts/slurm/install-deps.sh)"
    fi
    [ "$(id -u)" -eq 0 ] || die "must run as root (slurmctld and slurmd run as root, munged as user munge)"
    getent passwd munge >/dev/null || die "no user \`munge\` (the munge package creates it)"
}

munge_works() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

write_conf() {
    local cpus mem_kb mem_mb
    cpus=$(nproc)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    # Leave a tenth of the memory to the system, as a real node would.
    mem_mb=$((mem_kb * 9 / 10 / 1024))
    mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$RUN" "$LOG"
    cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm/cluster.sh: a one-node cluster on localhost.
ClusterName=fp8local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.txt
# The node's own CPU and memory figures count, not what slurmd detects (containers differ).
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to scontrol/squeue for 10 minutes.
MinJobAge=600
# A cancelled task gets SIGTERM, then SIGKILL after this many seconds.
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munged() {
    if munge_works; then
        if live_pid "$MUNGE_DIR/munged.pid" >/dev/null; then
            say "munged already running (started here)"
        else
            say "munged already answers on $MUNGE_SOCKET; using it"
        fi
        return
    fi
    if [ ! -s "$MUNGE_KEY" ]; then
        say "generating munge key $MUNGE_KEY"
        mkdir -p "$(dirname "$MUNGE_KEY")"
        mungekey --create --keyfile="$MUNGE_KEY"
    fi
    chown munge: "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    mkdir -p /run/munge "$MUNGE_DIR"
    chown munge: /run/munge "$MUNGE_DIR"
    chmod 0755 /run/munge
    chmod 0700 "$MUNGE_DIR"
    # munged runs as `munge`: it must be able to reach its own directory under DIR.
    chmod o+x "$DIR"
    say "starting munged"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" ||
        die "munged failed to start; see $MUNGE_DIR/munged.log"
    for _ in $(seq 50); do
        munge_works && return
        sleep 0.1
    done
    die "munged started but does not answer on $MUNGE_SOCKET; see $MUNGE_DIR/munged.log"
}

# A TCP port on localhost that something listens on.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_daemon() {
    local name=$1 port=$2
    shift 2
    if live_pid "$RUN/$name.pid" >/dev/null; then
        say "$name already running"
        return
    fi
    if port_in_use "$port"; then
        die "port $port is in use (another Slurm cluster on this machine?): stop it, or choose other ports with FP8_SLURMCTLD_PORT and FP8_SLURMD_PORT"
    fi
    say "starting $name"
    "$name" "$@" || die "$name failed to start; see $LOG/$name.log"
    for _ in $(seq 100); do
        if live_pid "$RUN/$name.pid" >/dev/null; then
            # A daemon that cannot bind its port exits just after writing its pid file.
            sleep 0.3
            live_pid "$RUN/$name.pid" >/dev/null && return
            break
        fi
        sleep 0.1
    done
    tail -n 5 "$LOG/$name.log" >&2 || true
    die "$name did not start; see $LOG/$name.log"
}

node_state() { sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -n1; }

wait_idle() {
    local deadline=$((SECONDS + WAIT_S)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state || true)
        case "$state" in
        idle | mix | alloc)
            say "node $NODE is $state; cluster ready"
            return
            ;;
        esac
        sleep 0.5
    done
    say "node $NODE not idle after ${WAIT_S}s (state: ${state:-unknown}); scontrol says:"
    scontrol show node "$NODE" >&2 || true
    tail -n 20 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2 || true
    exit 1
}

stop_pidfile() {
    local name=$1 file=$2 pid
    if ! pid=$(live_pid "$file"); then
        say "$name: not running from $DIR; nothing to stop"
        rm -f "$file"
        return
    fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

case "$CMD" in
start)
    check_tools
    start_munged
    if [ ! -f "$CONF" ] || ! live_pid "$RUN/slurmctld.pid" >/dev/null; then
        write_conf
    fi
    start_daemon slurmctld "$CTLD_PORT" -f "$CONF"
    start_daemon slurmd "$SLURMD_PORT" -f "$CONF" -N "$NODE"
    wait_idle
    echo "export SLURM_CONF=$CONF"
    ;;
stop)
    # Jobs first: a job's slurmstepd outlives slurmd, so cancel this cluster's jobs and give
    # them a few seconds to go (KillWait is 5 s) before stopping the daemons.
    if [ -f "$CONF" ] && live_pid "$RUN/slurmctld.pid" >/dev/null; then
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            say "cancelling this cluster's jobs: $(echo "$jobs" | tr '\n' ' ')"
            # shellcheck disable=SC2086 # one job id per word
            scancel --full $jobs 2>/dev/null || true
            for _ in $(seq 150); do
                [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
                sleep 0.1
            done
        fi
    fi
    stop_pidfile slurmd "$RUN/slurmd.pid"
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile munged "$MUNGE_DIR/munged.pid"
    ;;
status)
    for d in "slurmctld:$RUN/slurmctld.pid" "slurmd:$RUN/slurmd.pid" "munged:$MUNGE_DIR/munged.pid"; do
        name=${d%%:*}
        if pid=$(live_pid "${d#*:}"); then
            say "$name running (pid $pid)"
        else
            say "$name not running (from $DIR)"
        fi
    done
    if [ -f "$CONF" ] && live_pid "$RUN/slurmctld.pid" >/dev/null; then
        sinfo >&2 || true
    fi
    ;;
esac
