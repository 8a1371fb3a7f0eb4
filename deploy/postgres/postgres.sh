#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for the evidence ledger's tests, CI and the
# demo, from Debian's postgresql package (deploy/packages.sh installs it): no Docker.
#
#   postgres.sh start [--dir DIR] [--port N]   initdb DIR/data once, start the server (or
#                                              find it running), create the database
#                                              `consentwatch`; print its URL on stdout
#   postgres.sh stop [--dir DIR]               stop it (fast shutdown); nothing running is fine
#   postgres.sh status [--dir DIR]             print the URL; exit 0 when up, 3 when down
#
# DIR defaults to $REPO/var/postgres (git-ignored) and holds the cluster (DIR/data), the
# server's log (DIR/postgres.log), its Unix socket and the port it used last (DIR/port).
# Without --port, start reuses that port if it is free, else picks a free one.
# PostgreSQL refuses to run as root: as root the script runs the server as the `postgres`
# system user and hands DIR to it, so DIR's parents must be searchable by that user (a
# directory under /tmp is; pytest's /tmp/pytest-of-root is not).
# The server listens on 127.0.0.1 only, with `trust` authentication: for local tests and
# demos, never for a deployment. The URL is postgresql://postgres@127.0.0.1:PORT/consentwatch.
# Only the URL goes to stdout; messages go to stderr.
#
# Environment: PG_BIN (the directory of initdb/pg_ctl; default: the newest
# /usr/lib/postgresql/*/bin), PG_START_TIMEOUT (s, default 60), PYTHON (python3).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
START_TIMEOUT=${PG_START_TIMEOUT:-60}
DATABASE=consentwatch
SUPERUSER=postgres

log() { printf '[postgres.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    cat >&2 <<'USAGE'
usage: postgres.sh start [--dir DIR] [--port N]
       postgres.sh stop [--dir DIR]
       postgres.sh status [--dir DIR]
USAGE
    exit 2
}

find_bin() {
    if [[ -n ${PG_BIN:-} ]]; then
        [[ -x $PG_BIN/pg_ctl ]] || die "PG_BIN=$PG_BIN holds no pg_ctl"
        echo "$PG_BIN"
        return
    fi
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
        sort -V | tail -n 1)
    if [[ -n $dir && -x $dir/pg_ctl ]]; then
        echo "$dir"
        return
    fi
    command -v pg_ctl >/dev/null 2>&1 ||
        die "no PostgreSQL server binaries (install the postgresql package: deploy/packages.sh)"
    dirname "$(command -v pg_ctl)"
}

# Run a server binary as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    "$PYTHON" - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

port_is_free() {
    "$PYTHON" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

running() {
    [[ -f $DATA/PG_VERSION ]] || return 1
    as_owner "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

url() { echo "postgresql://$SUPERUSER@127.0.0.1:$1/$DATABASE"; }

psql_cmd() {
    as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U "$SUPERUSER" \
        -d postgres -tA -c "$2"
}

ensure_database() {
    local port=$1
    if [[ -z $(psql_cmd "$port" "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'") ]]; then
        # A concurrent start may have created it meanwhile: that is fine too.
        psql_cmd "$port" "CREATE DATABASE $DATABASE" 2>/dev/null ||
            [[ -n $(psql_cmd "$port" "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'") ]] ||
            die "could not create the database $DATABASE"
    fi
}

prepare_dir() {
    mkdir -p "$DIR"
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "there is no postgres system user (install postgresql)"
        chown postgres: "$DIR"
        chmod 700 "$DIR"
        runuser -u postgres -- test -w "$DIR" ||
            die "the postgres user cannot reach $DIR (a parent directory is not searchable)"
    fi
}

cmd_start() {
    local want_port=$1 port
    prepare_dir
    exec {lockfd}>>"$DIR/.lock"
    flock "$lockfd"
    if running; then
        port=$(cat "$DIR/port" 2>/dev/null || true)
        [[ -n $port ]] || die "a server runs from $DATA but $DIR/port is missing"
        if [[ -n $want_port && $want_port != "$port" ]]; then
            die "a server from $DIR already runs on port $port, not $want_port (stop it first)"
        fi
        ensure_database "$port"
        log "already running from $DIR on port $port"
        url "$port"
        return 0
    fi
    if [[ ! -f $DATA/PG_VERSION ]]; then
        log "initdb $DATA"
        rm -rf "$DATA"
        as_owner "$BIN/initdb" -D "$DATA" -U "$SUPERUSER" --auth=trust --encoding=UTF8 \
            --locale=C --no-sync >"$DIR/initdb.log" 2>&1 ||
            { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    port=$want_port
    if [[ -n $port ]]; then
        port_is_free "$port" || die "port $port on 127.0.0.1 is in use"
    else
        port=$(cat "$DIR/port" 2>/dev/null || true)
        if [[ -z $port ]] || ! port_is_free "$port"; then
            port=$(free_port)
        fi
    fi
    echo "$port" >"$DIR/port"
    log "starting PostgreSQL on 127.0.0.1:$port (dir $DIR)"
    if ! as_owner "$BIN/pg_ctl" start -D "$DATA" -l "$DIR/postgres.log" -w -t "$START_TIMEOUT" \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$DIR'" \
        >/dev/null {lockfd}>&-; then
        tail -n 20 "$DIR/postgres.log" >&2 2>/dev/null || true
        die "PostgreSQL did not start (see $DIR/postgres.log)"
    fi
    ensure_database "$port"
    log "up"
    url "$port"
}

cmd_stop() {
    [[ -d $DIR ]] || { log "nothing running from $DIR"; return 0; }
    exec {lockfd}>>"$DIR/.lock"
    flock "$lockfd"
    if ! running; then
        log "nothing running from $DIR"
        return 0
    fi
    log "stopping PostgreSQL (dir $DIR)"
    as_owner "$BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >/dev/null {lockfd}>&- ||
        die "PostgreSQL did not stop (see $DIR/postgres.log)"
    log "stopped"
}

cmd_status() {
    if ! running; then
        log "down"
        exit 3
    fi
    url "$(cat "$DIR/port")"
}

[[ $# -ge 1 ]] || usage
COMMAND=$1
shift
PORT=""
DIR=$REPO/var/postgres
while [[ $# -gt 0 ]]; do
    case $1 in
        --port) [[ $# -ge 2 ]] || usage; PORT=$2; shift 2 ;;
        --port=*) PORT=${1#--port=}; shift ;;
        --dir) [[ $# -ge 2 ]] || usage; DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        -h | --help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
if [[ -n $PORT && ! $PORT =~ ^[0-9]+$ ]]; then
    die "--port wants a number, got '$PORT'"
fi
DIR=$(realpath -m -- "$DIR")
DATA=$DIR/data
BIN=$(find_bin)

case $COMMAND in
    start) cmd_start "$PORT" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
