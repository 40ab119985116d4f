#!/usr/bin/env bash
# Stop the daemons that scripts/slurm-up.sh started (and only those), newest first.
#   scripts/slurm-down.sh                 stop them unless a live process still holds the cluster
#   scripts/slurm-down.sh --release PID   first drop PID's hold (slurm-up.sh --hold PID)
# Packages, configuration and the accounting database stay, so the next slurm-up.sh is quick.
set -uo pipefail

RUN=/run/covpipe-slurm
[ -f "$RUN/started" ] || { echo "slurm-down: nothing started by slurm-up.sh"; exit 0; }
exec 9>"$RUN/lock"
flock 9
if [ "${1:-}" = "--release" ]; then rm -f "$RUN/holders/${2:?--release needs a PID}"; fi
live=()
for holder in "$RUN"/holders/*; do
    [ -e "$holder" ] || continue
    if kill -0 "$(basename "$holder")" 2>/dev/null; then live+=("$(basename "$holder")"); else rm -f "$holder"; fi
done
if [ ${#live[@]} -gt 0 ]; then
    echo "slurm-down: still held by ${live[*]}; leaving the cluster up"
    exit 0
fi

stop() { # stop NAME PIDFILE
    local pid
    pid=$(cat "$2" 2>/dev/null) || return 0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    echo "slurm-down: stopping $1 (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
}

# "name pidfile" lines, in start order: stop the last started first
tac "$RUN/started" | while read -r name pidfile; do
    [ -n "$name" ] && stop "$name" "$pidfile"
done
rm -f "$RUN/started"
