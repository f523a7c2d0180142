#!/usr/bin/env bash
# A real two-node Slurm cluster on this one machine, for tests of rankrun under srun.
#
#   bash tests/slurm/cluster.sh start    install slurm-wlm + munge if missing, start munged,
#                                        slurmctld and two slurmd (node1, node2), wait for idle,
#                                        run one step across both; exit 1 if any of it fails
#   bash tests/slurm/cluster.sh stop     cancel jobs, end the daemons by their pidfiles
#   bash tests/slurm/cluster.sh status   the daemons and sinfo; exit 0 only if both nodes idle
#
# Run as root. Both nodes are 127.0.0.1 with their own slurmd port; /etc/hosts names them.
# start is idempotent, and so is stop. stop keeps the config, logs and state under $STATE
# and /etc/slurm/slurm.conf (marked as ours; a slurm.conf not marked so is never touched).
# A munged that was already running is used and left running.
set -euo pipefail

STATE=${RANKRUN_SLURM_STATE:-/var/lib/rankrun-slurm}
TIMEOUT=${RANKRUN_SLURM_TIMEOUT:-60}  # seconds start waits for two idle nodes
CONF=/etc/slurm/slurm.conf
MARK="# written by rankrun tests/slurm/cluster.sh"
NODES=(node1 node2)
RUN=$STATE/run
MUNGE_PID=$RUN/munged.pid  # only when this script started munged

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The pid in pidfile $1 when it is alive and its command is $2, else nothing.
live_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    echo "$pid"
}

install_packages() {
    local missing=0 tool
    for tool in munged slurmctld slurmd sinfo srun scontrol; do
        command -v "$tool" >/dev/null || missing=1
    done
    ((missing)) || return 0
    say "installing slurm-wlm and munge with apt-get"
    # Keep the packages' init scripts from starting daemons this script would not own.
    local policy=/usr/sbin/policy-rc.d ours=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o Dpkg::Options::=--force-confold slurm-wlm munge \
        >"$STATE/apt.log" 2>&1; } || rc=$?
    ((ours)) && rm -f "$policy"
    ((rc == 0)) || { tail -20 "$STATE/apt.log" >&2; die "apt-get failed (log: $STATE/apt.log)"; }
}

write_config() {
    local host want
    host=$(hostname -s)
    want=$(cat <<EOF
$MARK; stop and start it again after editing.
ClusterName=rankrun
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=17000
SlurmdPort=17001
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=60
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=/var/spool/slurmd-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
NodeName=node[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=17001-17002 CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
    if [[ -e $CONF ]] && ! head -1 "$CONF" | grep -qF "$MARK"; then
        die "$CONF exists and was not written by this script; not touching it"
    fi
    if [[ "$(cat "$CONF" 2>/dev/null)" != "$want" ]]; then
        if [[ -e $CONF ]]; then say "slurm.conf changed: restarting"; stop_daemons; fi
        mkdir -p /etc/slurm && printf '%s\n' "$want" >"$CONF"
    fi
    grep -qE '^127\.0\.0\.1[[:space:]]+node1 node2([[:space:]]|$)' /etc/hosts ||
        echo "127.0.0.1 node1 node2  $MARK" >>/etc/hosts
}

start_munge() {
    live_pid "$MUNGE_PID" munged >/dev/null && return 0
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "using the munged already running"
        return 0
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    fi
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged
    cp /run/munge/munged.pid "$MUNGE_PID"
}

start_daemons() {
    start_munge
    install -d -m 0755 "$STATE/ctld" "$STATE/log"
    live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null || slurmctld -i
    local node
    for node in "${NODES[@]}"; do
        mkdir -p "/var/spool/slurmd-$node"
        live_pid "$RUN/slurmd-$node.pid" slurmd >/dev/null || slurmd -N "$node"
    done
}

nodes_idle() {
    [[ $(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u) == $'node1 idle\nnode2 idle' ]]
}

start() {
    local t0=$SECONDS
    mkdir -p "$RUN"
    install_packages
    write_config
    start_daemons
    local dead
    until nodes_idle; do
        # A daemon that exits (a port in use, a bad config) leaves the nodes down for good.
        dead=; ((SECONDS - t0 < 3)) || dead=$(daemons_dead)  # pidfiles come a moment late
        if [[ -n $dead ]] || ((SECONDS - t0 > TIMEOUT)); then
            if [[ -n $dead ]]; then say "exited:$dead"
            else say "nodes not idle after ${TIMEOUT}s:"; fi
            timeout 15 sinfo -N -o '%N %T %E' >&2 || true
            tail -n 5 "$STATE"/log/*.log >&2 || true
            die "cluster did not come up (logs: $STATE/log)"
        fi
        sleep 0.5
    done
    # Idle nodes may be slurmctld's saved state: one real step across both proves them.
    timeout 60 srun -N2 --ntasks-per-node=1 --immediate=30 -t 1 -J cluster-sh-check true ||
        die "the nodes look idle, but a two-node step failed (logs: $STATE/log)"
    say "two idle nodes (node1, node2) after $((SECONDS - t0))s"
}

# The daemons start_daemons started that are no longer running, as " name name...".
daemons_dead() {
    local node
    live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null || printf ' slurmctld'
    for node in "${NODES[@]}"; do
        live_pid "$RUN/slurmd-$node.pid" slurmd >/dev/null || printf ' slurmd-%s' "$node"
    done
}

# TERM the daemons given as PIDFILE:COMMAND, together (each takes ~2s to exit); KILL those
# still there after 10s.
end_daemons() {
    local spec pid pids=() i
    for spec; do
        if pid=$(live_pid "${spec%:*}" "${spec##*:}"); then
            kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        fi
    done
    for ((i = 0; i < 100; i++)); do
        for pid in "${pids[@]}"; do [[ -e /proc/$pid ]] && break; pid=; done
        [[ -z ${pid:-} ]] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        [[ -e /proc/$pid ]] || continue
        say "pid $pid ignored SIGTERM for 10s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    done
    for spec; do rm -f "${spec%:*}"; done
}

# The step daemons of this machine: only this cluster's, since it owns /etc/slurm/slurm.conf.
stepd_pids() {
    local p
    for p in /proc/[0-9]*; do
        [[ $(cat "$p/comm" 2>/dev/null) == slurmstepd ]] && echo "${p#/proc/}"
    done
    return 0
}

stop_daemons() {
    local jobs i pids
    if live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
        jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ') || true
        if [[ -n ${jobs// /} ]]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
        fi
    fi
    for ((i = 0; i < 150; i++)); do  # KillWait is 5s
        [[ -z $(stepd_pids) ]] && break
        sleep 0.1
    done
    pids=$(stepd_pids | tr '\n' ' ')
    if [[ -n $pids ]]; then
        say "killing leftover slurmstepd: $pids"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    end_daemons "$RUN/slurmd-node1.pid:slurmd" "$RUN/slurmd-node2.pid:slurmd" \
        "$RUN/slurmctld.pid:slurmctld"
    end_daemons "$MUNGE_PID:munged"
}

status() {
    local rc=0 node
    show() {
        local pid
        if pid=$(live_pid "$1" "$2"); then echo "$3: running, pid $pid"; else
            echo "$3: not running"
            rc=3
        fi
    }
    if live_pid "$MUNGE_PID" munged >/dev/null; then show "$MUNGE_PID" munged munged
    elif munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then echo "munged: running (not ours)"
    else echo "munged: not running"; rc=3; fi
    show "$RUN/slurmctld.pid" slurmctld slurmctld
    for node in "${NODES[@]}"; do show "$RUN/slurmd-$node.pid" slurmd "slurmd $node"; done
    if ((rc == 0)); then sinfo -N -o '%N %P %T' || rc=3; fi
    ((rc == 0)) && { nodes_idle || rc=3; }
    return "$rc"
}

[[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts daemons)"
case ${1:-} in
    start) start ;;
    stop) mkdir -p "$RUN"; stop_daemons; say "stopped" ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
