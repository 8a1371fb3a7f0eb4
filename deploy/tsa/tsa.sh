#!/usr/bin/env bash
# A throwaway RFC 3161 time-stamping authority on 127.0.0.1 for the tests and the demo:
# Debian's `openssl ts -reply` behind a small HTTP front (deploy/tsa/server.py, standard
# library only), with its own test CA. No Docker, nothing from the network.
#
#   tsa.sh start [--dir DIR] [--port N] [--expired]   make the test CA once, start the
#                          TSA (or find it running); print its URL on stdout
#   tsa.sh stop [--dir DIR]      stop it; nothing running is fine
#   tsa.sh status [--dir DIR]    print the URL; exit 0 when up, 3 when down
#
# DIR defaults to $REPO/var/tsa (git-ignored) and holds the test CA and the TSA's keys:
#   DIR/ca.pem              the root (self-signed): what `verify --tsa-cert` is given
#   DIR/tsa.pem, tsa.key    the TSA certificate (extendedKeyUsage critical timeStamping)
#   DIR/tsa-expired.pem     the same key, certified by the CA for 2020 only (for tests:
#                           `start --expired` signs with it, so its tokens must not verify)
#   DIR/tsa.cnf             openssl's configuration; DIR/server.log, DIR/pid, DIR/port
# Only the URL goes to stdout; messages go to stderr. For tests and demos only: the keys
# are unencrypted and the CA is made on the spot.
#
# Environment: OPENSSL (openssl), PYTHON (python3), TSA_START_TIMEOUT (s, default 20).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
OPENSSL=${OPENSSL:-openssl}
START_TIMEOUT=${TSA_START_TIMEOUT:-20}

log() { printf '[tsa.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    cat >&2 <<'USAGE'
usage: tsa.sh start [--dir DIR] [--port N] [--expired]
       tsa.sh stop [--dir DIR]
       tsa.sh status [--dir DIR]
USAGE
    exit 2
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running() {
    [[ -f $DIR/pid ]] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null
}

url() { echo "http://127.0.0.1:$1/"; }

# The CA's own configuration, for `openssl ca` (which can date a certificate in the past).
write_configs() {
    cat >"$DIR/ca.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
dir = $DIR/ca
database = \$dir/index.txt
new_certs_dir = \$dir/certs
serial = \$dir/serial
certificate = $DIR/ca.pem
private_key = $DIR/ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
email_in_dn = no
[any]
commonName = supplied
[tsa_ext]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    cat >"$DIR/tsa.cnf" <<EOF
[tsa]
default_tsa = tsa_default
[tsa_default]
dir = $DIR
serial = \$dir/tsaserial
crypto_device = builtin
signer_cert = \$dir/tsa.pem
certs = \$dir/ca.pem
signer_key = \$dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.4146.2.3
other_policies = 1.3.6.1.4.1.4146.2.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
[tsa_expired]
dir = $DIR
serial = \$dir/tsaserial
crypto_device = builtin
signer_cert = \$dir/tsa-expired.pem
certs = \$dir/ca.pem
signer_key = \$dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.4146.2.3
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
EOF
}

make_ca() {
    [[ -f $DIR/ca.pem && -f $DIR/tsa.pem && -f $DIR/tsa-expired.pem ]] && return 0
    log "making the test CA and TSA certificates in $DIR"
    mkdir -p "$DIR/ca/certs"
    : >"$DIR/ca/index.txt"
    echo 01 >"$DIR/ca/serial"
    echo 01 >"$DIR/tsaserial"
    write_configs
    "$OPENSSL" req -x509 -new -newkey rsa:2048 -nodes -keyout "$DIR/ca.key" -out "$DIR/ca.pem" \
        -days 3650 -subj "/CN=consentwatch test TSA root" -sha256 \
        -addext "basicConstraints=critical,CA:true" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
        die "openssl could not make the test CA"
    "$OPENSSL" req -new -newkey rsa:2048 -nodes -keyout "$DIR/tsa.key" -out "$DIR/tsa.csr" \
        -subj "/CN=consentwatch test TSA" 2>/dev/null || die "openssl could not make the TSA key"
    "$OPENSSL" ca -batch -config "$DIR/ca.cnf" -extensions tsa_ext -in "$DIR/tsa.csr" \
        -out "$DIR/tsa.pem" -days 3650 -notext 2>/dev/null ||
        die "openssl could not certify the TSA"
    "$OPENSSL" ca -batch -config "$DIR/ca.cnf" -extensions tsa_ext -in "$DIR/tsa.csr" \
        -out "$DIR/tsa-expired.pem" -startdate 20200101000000Z -enddate 20201231235959Z \
        -notext 2>/dev/null || die "openssl could not certify the expired TSA"
}

cmd_start() {
    local want_port=$1 section=$2 port
    command -v "$OPENSSL" >/dev/null 2>&1 || die "no openssl (install Debian's openssl package)"
    mkdir -p "$DIR"
    exec {lockfd}>>"$DIR/.lock"
    flock "$lockfd"
    make_ca
    if running; then
        port=$(cat "$DIR/port")
        [[ $(cat "$DIR/section" 2>/dev/null) == "$section" ]] ||
            die "a TSA from $DIR already runs with another certificate (stop it first)"
        log "already running from $DIR on port $port"
        url "$port"
        return 0
    fi
    port=${want_port:-$(free_port)}
    log "starting the TSA on 127.0.0.1:$port (dir $DIR)"
    "$PYTHON" "$HERE/server.py" --dir "$DIR" --port "$port" --section "$section" \
        >"$DIR/server.log" 2>&1 {lockfd}>&- &
    echo $! >"$DIR/pid"
    echo "$port" >"$DIR/port"
    echo "$section" >"$DIR/section"
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$PYTHON" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; do
        running || { cat "$DIR/server.log" >&2; die "the TSA did not start (see $DIR/server.log)"; }
        ((SECONDS < deadline)) || { cmd_stop; die "the TSA did not listen within ${START_TIMEOUT}s"; }
        sleep 0.1
    done
    log "up"
    url "$port"
}

cmd_stop() {
    [[ -f $DIR/pid ]] || { log "nothing running from $DIR"; return 0; }
    local pid
    pid=$(cat "$DIR/pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        local deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null; do
            ((SECONDS < deadline)) || { kill -9 "$pid" 2>/dev/null || true; break; }
            sleep 0.05
        done
        log "stopped"
    else
        log "nothing running from $DIR"
    fi
    rm -f "$DIR/pid"
}

cmd_status() {
    running || { log "down"; exit 3; }
    url "$(cat "$DIR/port")"
}

[[ $# -ge 1 ]] || usage
COMMAND=$1
shift
PORT=""
SECTION=tsa_default
DIR=$REPO/var/tsa
while [[ $# -gt 0 ]]; do
    case $1 in
        --port) [[ $# -ge 2 ]] || usage; PORT=$2; shift 2 ;;
        --dir) [[ $# -ge 2 ]] || usage; DIR=$2; shift 2 ;;
        --expired) SECTION=tsa_expired; shift ;;
        -h | --help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
[[ -z $PORT || $PORT =~ ^[0-9]+$ ]] || die "--port wants a number, got '$PORT'"
DIR=$(realpath -m -- "$DIR")

case $COMMAND in
    start) cmd_start "$PORT" "$SECTION" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
