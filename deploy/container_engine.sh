#!/usr/bin/env bash
# A Docker engine for the project's container tests and image builds.
#
#   deploy/container_engine.sh run -- CMD [ARG...]  runs CMD with DOCKER_HOST set to an engine
#                                                   that answers, starting one if none does; the
#                                                   engine this starts is stopped (by pid) when
#                                                   the last `run` using it ends, pass or fail
#   deploy/container_engine.sh start                starts (or finds) an engine and leaves it
#                                                   running; prints `export DOCKER_HOST=...`
#   deploy/container_engine.sh stop                 stops the engine this script started
#   deploy/container_engine.sh find                 prints the DOCKER_HOST of an engine that
#                                                   answers, or why none does (exit 1)
#
# Where an engine answers (DOCKER_HOST, else the default socket /var/run/docker.sock), it is
# used and never stopped. Otherwise, as root, Debian's engine is installed where it is missing
# (docker.io, containerd, runc, iptables; about 30 s) and `dockerd` is started with its own data
# root, exec root, pid file and unix socket under CONTAINER_ENGINE_DIR (default
# /var/tmp/tfx-image-pipeline-engine: outside any checkout, so every checkout of the project
# on a machine shares one engine and its image cache, and `make clean` keeps it).
# `run` without any engine still runs CMD, with DOCKER_HOST unset and the reason printed: the
# container tests then skip, or fail where REQUIRE_CONTAINER_ENGINE=1 (the Makefile sets it).
set -euo pipefail

ENGINE_DIR=${CONTAINER_ENGINE_DIR:-/var/tmp/tfx-image-pipeline-engine}
SOCKET="$ENGINE_DIR/docker.sock"
OWN_HOST="unix://$SOCKET"
PID_FILE="$ENGINE_DIR/dockerd.pid"
# Who started the engine: "run" (stopped when its last `run` ends) or "start" (kept until `stop`).
STARTED_BY_FILE="$ENGINE_DIR/started-by"
LEASES_DIR="$ENGINE_DIR/leases"
LOCK_FILE="$ENGINE_DIR/lock"
LOG_FILE="$ENGINE_DIR/dockerd.log"
READY_TIMEOUT_SECONDS=${CONTAINER_ENGINE_READY_TIMEOUT:-60}
ENGINE_PACKAGES=(docker.io containerd runc iptables)

say() { echo "container-engine: $*" >&2; }

# Whether an engine answers at $1 (a DOCKER_HOST value) within 10 s.
answers() {
    command -v docker >/dev/null 2>&1 || return 1
    DOCKER_HOST="$1" timeout 10 docker info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

# The DOCKER_HOST of an engine that answers now, or nothing.
answering_host() {
    local host
    for host in "${DOCKER_HOST:-}" unix:///var/run/docker.sock "$OWN_HOST"; do
        if [[ -n "$host" ]] && answers "$host"; then
            echo "$host"
            return 0
        fi
    done
    return 1
}

own_pid() {
    [[ -s "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null && cat "$PID_FILE"
}

install_engine() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(dockerd)
    command -v docker >/dev/null 2>&1 || missing+=(docker)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no engine answers and ${missing[*]} missing, and this machine has no apt-get: install Docker and set DOCKER_HOST"
        return 1
    fi
    say "installing Debian's engine (${ENGINE_PACKAGES[*]}): ${missing[*]} missing"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${ENGINE_PACKAGES[@]}"; } >"$ENGINE_DIR/apt.log" 2>&1; then
        say "apt-get install ${ENGINE_PACKAGES[*]} failed; its log: $ENGINE_DIR/apt.log"
        tail -n 5 "$ENGINE_DIR/apt.log" >&2
        return 1
    fi
}

# Starts dockerd on the project's own socket; $1 records who started it. Call with the lock held.
start_own_engine() {
    if [[ $EUID -ne 0 ]]; then
        say "no engine answers, and starting one needs root (running as uid $EUID); set DOCKER_HOST to an engine"
        return 1
    fi
    install_engine || return 1
    mkdir -p "$ENGINE_DIR/data" "$ENGINE_DIR/exec" "$LEASES_DIR"
    rm -f "$SOCKET" "$PID_FILE"
    say "starting dockerd (data root $ENGINE_DIR/data, socket $SOCKET, log $LOG_FILE)"
    # setsid: the engine outlives the shell that started it (for `start`), and a Ctrl-C in the
    # test run does not reach it before the trap stops it.
    setsid dockerd \
        --host "$OWN_HOST" \
        --data-root "$ENGINE_DIR/data" \
        --exec-root "$ENGINE_DIR/exec" \
        --pidfile "$PID_FILE" \
        >"$LOG_FILE" 2>&1 </dev/null 9>&- &
    local launched=$! waited=0
    echo "$1" >"$STARTED_BY_FILE"
    until answers "$OWN_HOST"; do
        if ! kill -0 "$launched" 2>/dev/null; then
            say "dockerd exited during start-up; the end of $LOG_FILE:"
            tail -n 15 "$LOG_FILE" >&2
            rm -f "$STARTED_BY_FILE"
            return 1
        fi
        if ((waited >= READY_TIMEOUT_SECONDS)); then
            say "dockerd did not answer within ${READY_TIMEOUT_SECONDS}s; stopping it; the end of $LOG_FILE:"
            tail -n 15 "$LOG_FILE" >&2
            stop_own_engine
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "dockerd $(cat "$PID_FILE") is ready after ${waited}s"
}

# Stops the project's dockerd by its pid, then the containerd it started, if that outlived it.
stop_own_engine() {
    local pid containerd_pid waited=0
    pid=$(own_pid) || { rm -f "$STARTED_BY_FILE"; return 0; }
    containerd_pid=$(cat "$ENGINE_DIR/exec/containerd/containerd.pid" 2>/dev/null || true)
    say "stopping dockerd $pid"
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= 30)); then
            say "dockerd $pid did not stop within 30s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    if [[ -n "$containerd_pid" ]] && kill -0 "$containerd_pid" 2>/dev/null; then
        say "stopping the containerd $containerd_pid that dockerd $pid left behind"
        kill -TERM "$containerd_pid" 2>/dev/null || true
        sleep 2
        kill -KILL "$containerd_pid" 2>/dev/null || true
    fi
    rm -f "$STARTED_BY_FILE" "$PID_FILE"
}

# Runs "$@" holding the engine directory's lock (leases and start/stop are decided under it).
with_lock() {
    mkdir -p "$ENGINE_DIR"
    exec 9>"$LOCK_FILE"
    flock 9
    local rc=0
    "$@" || rc=$?
    flock -u 9
    exec 9>&-
    return "$rc"
}

# Prints the DOCKER_HOST to use, starting the project's engine (recorded as started by $1) if
# no engine answers. Call with the lock held.
ensure_engine() {
    local host
    if host=$(answering_host); then
        echo "$host"
        return 0
    fi
    start_own_engine "$1" || return 1
    echo "$OWN_HOST"
}

live_leases() {
    local lease
    for lease in "$LEASES_DIR"/*; do
        [[ -e "$lease" ]] || continue
        if kill -0 "${lease##*/}" 2>/dev/null; then
            echo "${lease##*/}"
        else
            rm -f "$lease" # its `run` was killed before it could clean up
        fi
    done
}

release_lease() {
    rm -f "$LEASES_DIR/$$"
    if [[ "$(cat "$STARTED_BY_FILE" 2>/dev/null)" == run ]] && [[ -z "$(live_leases)" ]]; then
        stop_own_engine
    fi
}

cmd_run() {
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || { say "usage: $0 run -- CMD [ARG...]"; exit 2; }
    local host rc=0
    if host=$(with_lock ensure_engine run); then
        mkdir -p "$LEASES_DIR"
        touch "$LEASES_DIR/$$"
        trap 'with_lock release_lease' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        export DOCKER_HOST="$host"
        say "DOCKER_HOST=$DOCKER_HOST"
    else
        unset DOCKER_HOST
        say "running without a container engine: container tests skip, or fail where REQUIRE_CONTAINER_ENGINE=1"
    fi
    "$@" || rc=$?
    return "$rc"
}

cmd_start() {
    local host
    host=$(with_lock ensure_engine start) || exit 1
    echo "export DOCKER_HOST=$host"
}

cmd_stop() {
    if [[ "$(cat "$STARTED_BY_FILE" 2>/dev/null)" == run ]] && [[ -n "$(live_leases)" ]]; then
        say "a running \`run\` (pid $(live_leases | tr '\n' ' ')) uses the engine; it stops it when it ends"
        exit 1
    fi
    with_lock stop_own_engine
}

cmd_find() {
    local host
    if host=$(answering_host); then
        echo "$host"
    elif ! command -v docker >/dev/null 2>&1; then
        say "no docker client on PATH (start one with: deploy/container_engine.sh start)"
        exit 1
    else
        say "no engine answers at ${DOCKER_HOST:+DOCKER_HOST=$DOCKER_HOST, }unix:///var/run/docker.sock or $OWN_HOST (start one with: deploy/container_engine.sh start)"
        exit 1
    fi
}

case "${1:-}" in
    run) shift; cmd_run "$@" ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    find) cmd_find ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
