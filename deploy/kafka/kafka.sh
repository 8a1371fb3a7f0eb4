#!/usr/bin/env bash
# A real single-node Kafka broker (KRaft, combined broker+controller) on 127.0.0.1,
# run from jars fetched from Maven Central: no Docker, no download from anywhere else.
# The tests, CI, the demo and a developer's shell all use this one script.
#
#   kafka.sh start [--port N] [--dir DIR]   start (or find running) a broker; print its
#                                           bootstrap address 127.0.0.1:PORT on stdout once
#                                           it answers a real Kafka request
#   kafka.sh stop [--dir DIR]               stop it: SIGTERM, then SIGKILL after a grace time
#   kafka.sh status [--dir DIR]             print the address; exit 0 when up, 3 when down
#   kafka.sh fetch                          only fetch the jars into deploy/kafka/lib/
#
# A cluster: `start --brokers N` (N >= 2, default 1) starts N combined broker+controller
# nodes on 127.0.0.1, node ids 1..N, one cluster id, a static quorum of N voters, each node
# in DIR/node-K with its own ports, data and logs. Internal topics and topics created
# without a replication factor get min(3, N) replicas; with 3, min.insync.replicas is 2. It
# prints the comma-separated bootstrap list once every node answers and lists N brokers.
# `stop` and `status` then handle every node (they read N from DIR/cluster). For fault
# tests, one node at a time (it keeps its ports, so the quorum and clients find it again):
#
#   kafka.sh kill-node K [--dir DIR]        SIGKILL node K (kill -9), wait until it is gone
#   kafka.sh stop-node K [--dir DIR]        stop node K cleanly (SIGTERM: controlled shutdown)
#   kafka.sh start-node K [--dir DIR]       start node K again; return once it answers and
#                                           the cluster lists every broker again
#
# DIR defaults to $REPO/var/kafka (git-ignored). It holds server.properties, the data
# (DIR/data), the broker's log (DIR/logs/server.log), its stdout/stderr (DIR/kafka.out),
# kafka.pid and bootstrap. Without --port, start reuses the port the dir had last time if
# it is free, else picks a free one. Only the address goes to stdout; messages go to stderr.
#
# Environment: KAFKA_START_TIMEOUT (s, default 90), KAFKA_STOP_TIMEOUT (s, default 30),
# KAFKA_HEAP_OPTS (default "-Xms256m -Xmx1g", a cluster's nodes "-Xms128m -Xmx512m"),
# KAFKA_JVM_OPTS (extra JVM flags), KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS (default 0: a new
# consumer group starts at once; Kafka's own default, 3000, waits that long for more
# members, so workers started together join one generation; read when a node's
# configuration is written: `start`, `start-node`),
# JAVA_HOME or JAVA, PYTHON (python3 for the free-port pick and the readiness probe).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LIB=$HERE/lib
POM=$HERE/pom.xml
LOG4J_CONF=$HERE/log4j2.xml
PYTHON=${PYTHON:-python3}
if [[ -n ${JAVA:-} ]]; then
    :
elif [[ -n ${JAVA_HOME:-} && -x ${JAVA_HOME}/bin/java ]]; then
    JAVA=$JAVA_HOME/bin/java
else
    JAVA=java
fi
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}
GROUP_DELAY_MS=${KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS:-0}

log() { printf '[kafka.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    cat >&2 <<'EOF'
usage: kafka.sh start [--port N | --brokers N] [--dir DIR]
       kafka.sh stop [--dir DIR]
       kafka.sh status [--dir DIR]
       kafka.sh kill-node|stop-node|start-node K [--dir DIR]   (a cluster's node K)
       kafka.sh fetch
EOF
    exit 2
}

# ---------------------------------------------------------------- jars

# Copy the pom's runtime dependencies into lib/, once: a stamp holding the pom's hash says
# they are there. flock makes two concurrent callers fetch once; the second waits, then
# finds the stamp.
fetch() {
    mkdir -p "$LIB"
    local lockfd want stamp=$LIB/.pom.sha256
    want=$(sha256sum "$POM" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        return 0
    fi
    exec {lockfd}>"$LIB/.fetch.lock"
    flock "$lockfd"
    if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
        command -v mvn >/dev/null 2>&1 || die "mvn (Maven) is needed to fetch the Kafka jars"
        log "fetching the Kafka jars from Maven Central into $LIB (once)"
        local started=$SECONDS
        rm -f "$stamp" "$LIB"/*.jar
        # (sed: Maven 3.8's -q still prints colour resets; -Dstyle.color does not stop them)
        if ! mvn -q -B -Dstyle.color=never -f "$POM" \
            dependency:copy-dependencies -DoutputDirectory="$LIB" -DincludeScope=runtime 2>&1 |
            sed 's/\x1b\[[0-9;]*m//g' >&2; then
            die "mvn dependency:copy-dependencies failed (see above)"
        fi
        ls "$LIB"/kafka_2.13-*.jar >/dev/null 2>&1 || die "no kafka_2.13 jar in $LIB after the fetch"
        echo "$want" >"$stamp"
        log "fetched $(find "$LIB" -name '*.jar' | wc -l) jars in $((SECONDS - started)) s"
    fi
    exec {lockfd}>&-
}

# ---------------------------------------------------------------- helpers

# Two (or more) distinct free TCP ports on 127.0.0.1, one per line.
free_ports() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
EOF
}

port_is_free() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
# As a server binds (Kafka sets SO_REUSEADDR): old TIME_WAIT connections don't count.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

# A Kafka cluster id: 16 random bytes, base64url without padding, not starting with '-'
# (what org.apache.kafka.common.Uuid.randomUuid() gives; saves a JVM start).
new_cluster_id() {
    "$PYTHON" - <<'EOF'
import base64, os
while True:
    cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not cid.startswith("-"):
        print(cid)
        break
EOF
}

# Wait until the broker at 127.0.0.1:$1 answers: a Metadata request (after ApiVersions)
# whose answer lists at least one live broker, i.e. the broker is registered and unfenced.
# Only the standard library, so it works before .venv exists. $2: timeout in seconds
# (0: try once), $3: the broker's pid (give up at once if it dies; empty: don't check),
# $4: how many live brokers the answer must list (default 1: a cluster is whole once
# every node is registered and unfenced). Exit 0 ready, 1 timed out, 2 process gone.
probe() {
    "$PYTHON" - "$@" <<'EOF'
import os, socket, struct, sys, time

port, timeout = int(sys.argv[1]), float(sys.argv[2])
pid = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None
want_brokers = int(sys.argv[4]) if len(sys.argv) > 4 else 1
METADATA, API_VERSIONS, METADATA_VERSION = 3, 18, 4


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return buf


def call(sock, key, version, corr, body):
    client_id = b"kafka.sh"
    header = struct.pack(">hhih", key, version, corr, len(client_id)) + client_id
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    payload = recv_exact(sock, size)
    (got,) = struct.unpack(">i", payload[:4])
    if got != corr:
        raise ConnectionError("unexpected correlation id")
    return payload[4:]


def ready():
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.settimeout(2)
        body = call(sock, API_VERSIONS, 0, 1, b"")
        (err, n) = struct.unpack(">hi", body[:6])
        if err:
            return False
        versions = {}
        for i in range(n):
            key, lo, hi = struct.unpack(">hhh", body[6 + 6 * i : 12 + 6 * i])
            versions[key] = (lo, hi)
        lo, hi = versions.get(METADATA, (0, -1))
        if not lo <= METADATA_VERSION <= hi:
            print(f"broker does not serve Metadata v{METADATA_VERSION} ({lo}..{hi})", file=sys.stderr)
            sys.exit(4)
        # Metadata v4: topics = null (int32 -1), allow_auto_topic_creation = false.
        body = call(sock, METADATA, METADATA_VERSION, 2, struct.pack(">ib", -1, 0))
        (_throttle, brokers) = struct.unpack(">ii", body[:8])
        return brokers >= want_brokers


deadline = time.monotonic() + timeout
while True:
    if pid is not None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(2)
    try:
        if ready():
            sys.exit(0)
    except (OSError, struct.error):
        pass
    if time.monotonic() >= deadline:
        sys.exit(1)
    time.sleep(0.25)
EOF
}

# Is the process alive? A zombie (exited, not yet reaped by whoever adopted it) is not.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [[ -r /proc/$1/stat ]]; then
        local stat
        stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
        stat=${stat##*) }
        [[ ${stat:0:1} != Z ]] || return 1
    fi
    return 0
}

# The pid in DIR/kafka.pid if that process is alive and is our broker for DIR, else nothing.
running_pid() {
    local pid
    [[ -f $PIDFILE ]] || return 0
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    alive "$pid" || return 0
    # Guard against a reused pid: the process must be kafka.Kafka with this dir's config.
    if [[ -r /proc/$pid/cmdline ]]; then
        local cmd
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
        [[ $cmd == *kafka.Kafka*"$DIR/server.properties"* ]] || return 0
    fi
    echo "$pid"
}

configured_port() {
    # The PLAINTEXT port in DIR/server.properties, if any.
    [[ -f $DIR/server.properties ]] || return 0
    sed -n 's/^listeners=PLAINTEXT:\/\/127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$DIR/server.properties"
}

configured_controller_port() {
    [[ -f $DIR/server.properties ]] || return 0
    sed -n 's/^listeners=.*CONTROLLER:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$DIR/server.properties"
}

write_config() {
    local port=$1 cport=$2
    cat >"$DIR/server.properties.tmp" <<EOF
# Written by deploy/kafka/kafka.sh on every start: edits here are lost.
# One node in KRaft combined mode: it is both the broker and the only controller.
process.roles=broker,controller
node.id=1
# A static quorum (one voter): the controller port may change between starts of the same
# dir, which a dynamic quorum (formatted with --standalone) would not allow.
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DIR/data

# A single broker: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# A new group starts at once instead of waiting 3 s for more members (unless asked).
group.initial.rebalance.delay.ms=$GROUP_DELAY_MS
# Topics created without a partition count (or auto-created) get 4 partitions.
num.partitions=4
# auto.create.topics.enable stays at Kafka's default (true): producing to an unknown topic
# creates it, as most local setups expect. Tests create their topics explicitly.

# Modest threads and memory on a small machine beside the test suite.
num.network.threads=2
num.io.threads=4
log.cleaner.dedupe.buffer.size=33554432
EOF
    mv "$DIR/server.properties.tmp" "$DIR/server.properties"
}

java_cmd() {
    # shellcheck disable=SC2206 # word splitting of the option strings is intended
    local heap=($HEAP_OPTS) extra=(${KAFKA_JVM_OPTS:-})
    JAVA_CMD=("$JAVA" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$DIR/logs"
        "${extra[@]}" -cp "$LIB/*")
}

format_storage() {
    [[ -f $DIR/data/meta.properties ]] && return 0
    local id_file=${CLUSTER_ID_FILE:-$DIR/cluster.id}  # a cluster's nodes share one id
    [[ -f $id_file ]] || new_cluster_id >"$id_file"
    log "formatting the KRaft storage in $DIR/data"
    local heap_saved=$HEAP_OPTS
    HEAP_OPTS="-Xmx256m"
    java_cmd
    HEAP_OPTS=$heap_saved
    if ! "${JAVA_CMD[@]}" kafka.tools.StorageTool format \
        -t "$(cat "$id_file")" -c "$DIR/server.properties" >"$DIR/format.out" 2>&1; then
        cat "$DIR/format.out" >&2
        die "formatting the storage failed"
    fi
}

launch() {
    java_cmd
    rm -f "$PIDFILE"
    # setsid: the broker gets its own session, so a Ctrl-C in the caller's terminal or the
    # end of the caller's process group does not reach it; only `kafka.sh stop` does.
    # The inner shell writes its own pid, then becomes java (exec keeps the pid). All of
    # the broker's fds point at files: a caller reading our stdout through a pipe (pytest's
    # subprocess.run) must not wait for the broker to close it.
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid -f nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-launch "$PIDFILE" \
        "${JAVA_CMD[@]}" kafka.Kafka "$DIR/server.properties" \
        </dev/null >>"$DIR/kafka.out" 2>&1 {DIRLOCK}>&-
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $PIDFILE ]] && return 0
        sleep 0.05
    done
    die "the broker process did not start (see $DIR/kafka.out)"
}

show_failure() {
    log "---- last lines of $DIR/kafka.out"
    tail -n 20 "$DIR/kafka.out" >&2 2>/dev/null || true
    # Without the indented lines of the config dumps, which would fill the tail.
    log "---- last lines of $DIR/logs/server.log"
    grep -v $'^\t' "$DIR/logs/server.log" 2>/dev/null | tail -n 30 >&2 || true
}

# ---------------------------------------------------------------- commands

cmd_start() {
    local want_port=$1 port cport pid rc started log_mark new_output
    [[ ! -f $DIR/cluster ]] || die "$DIR holds a $(cat "$DIR/cluster")-node cluster: use another --dir"
    mkdir -p "$DIR"
    exec {DIRLOCK}>"$DIR/.lock"
    flock "$DIRLOCK"

    pid=$(running_pid)
    if [[ -n $pid ]]; then
        port=$(configured_port)
        if [[ -n $want_port && $want_port != "$port" ]]; then
            die "a broker from $DIR is already running on port $port, not $want_port (stop it first)"
        fi
        rc=0
        probe "$port" "$START_TIMEOUT" "$pid" || rc=$?
        if [[ $rc -ne 0 ]]; then
            show_failure
            die "the broker running from $DIR (pid $pid) does not answer on 127.0.0.1:$port"
        fi
        log "already running from $DIR (pid $pid)"
        echo "127.0.0.1:$port" >"$DIR/bootstrap"
        echo "127.0.0.1:$port"
        return 0
    fi

    fetch
    command -v "$JAVA" >/dev/null 2>&1 || die "java (17 or newer) is needed"
    mkdir -p "$DIR/logs" "$DIR/data"
    rm -f "$DIR/bootstrap"
    started=$SECONDS
    for _ in 1 2 3; do
        # Ports: the one asked for; else this dir's previous ones when free; else free ones.
        if [[ -n $want_port ]] && ! port_is_free "$want_port"; then
            die "port $want_port on 127.0.0.1 is in use"
        fi
        port=$want_port
        cport=$(configured_controller_port)
        if [[ -z $port ]]; then
            port=$(configured_port)
            if [[ -z $port ]] || ! port_is_free "$port"; then
                port=""
            fi
        fi
        if [[ -z $cport || $cport == "$port" ]] || ! port_is_free "$cport"; then
            cport=""
        fi
        if [[ -z $port || -z $cport ]]; then
            local ports
            mapfile -t ports < <(free_ports 3)
            [[ -n $port ]] || port=${ports[0]}
            if [[ -z $cport ]]; then
                cport=${ports[1]}
                [[ $cport != "$port" ]] || cport=${ports[2]}
            fi
        fi
        write_config "$port" "$cport"
        format_storage
        log "starting the broker on 127.0.0.1:$port (controller :$cport, dir $DIR)"
        log_mark=$(stat -c %s "$DIR/logs/server.log" 2>/dev/null || echo 0)
        launch
        pid=$(cat "$PIDFILE")
        rc=0
        probe "$port" "$START_TIMEOUT" "$pid" || rc=$?
        if [[ $rc -eq 0 ]]; then
            log "up in $((SECONDS - started)) s (pid $pid)"
            echo "127.0.0.1:$port" >"$DIR/bootstrap"
            echo "127.0.0.1:$port"
            return 0
        fi
        new_output=$({ cat "$DIR/kafka.out"; tail -c +$((log_mark + 1)) "$DIR/logs/server.log"; } \
            2>/dev/null || true)
        if [[ $rc -eq 2 && -z $want_port && $new_output == *"Address already in use"* ]]; then
            # Someone took a port between our pick and the broker's bind: pick again.
            log "a port was taken meanwhile; retrying with other ports"
            : >"$DIR/kafka.out"
            continue
        fi
        show_failure
        if [[ $rc -eq 2 ]]; then
            rm -f "$PIDFILE"
            die "the broker exited during startup"
        fi
        stop_pid "$pid"
        rm -f "$PIDFILE"
        die "the broker did not answer on 127.0.0.1:$port within ${START_TIMEOUT} s (stopped it)"
    done
    show_failure
    die "could not find free ports for the broker"
}

# SIGTERM (Kafka then shuts down cleanly), SIGKILL after STOP_TIMEOUT seconds.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "still running after ${STOP_TIMEOUT} s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "pid $pid survived SIGKILL"
}

cmd_stop() {
    local pid
    if [[ ! -d $DIR ]]; then
        log "nothing running from $DIR"
        return 0
    fi
    exec {DIRLOCK}>"$DIR/.lock"
    flock "$DIRLOCK"
    pid=$(running_pid)
    if [[ -z $pid ]]; then
        rm -f "$PIDFILE" "$DIR/bootstrap"
        log "nothing running from $DIR"
        return 0
    fi
    log "stopping the broker (pid $pid)"
    stop_pid "$pid"
    rm -f "$PIDFILE" "$DIR/bootstrap"
    log "stopped"
}

cmd_status() {
    local pid port
    [[ -d $DIR ]] || { log "down (no $DIR)"; exit 3; }
    pid=$(running_pid)
    if [[ -z $pid ]]; then
        log "down"
        exit 3
    fi
    port=$(configured_port)
    if ! probe "$port" 0 "$pid"; then
        log "process $pid is running but 127.0.0.1:$port does not answer (starting or stuck)"
        exit 3
    fi
    echo "127.0.0.1:$port"
}

# ---------------------------------------------------------------- a cluster of N nodes
#
# CLUSTER_DIR/cluster holds N; CLUSTER_DIR/ports one line per node: "K PORT CONTROLLER_PORT"
# (kept across restarts: the quorum and the clients know each node by its ports);
# CLUSTER_DIR/cluster.id the id every node is formatted with; CLUSTER_DIR/node-K the node.
# The single-node functions above work on $DIR and $PIDFILE: use_node points them at a
# node's dir.

use_node() {
    DIR=$CLUSTER_DIR/node-$1
    PIDFILE=$DIR/kafka.pid
    # N JVMs side by side: a smaller heap each, unless KAFKA_HEAP_OPTS says otherwise.
    HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
}

cluster_size() {
    [[ -f $CLUSTER_DIR/cluster ]] && cat "$CLUSTER_DIR/cluster"
}

node_ports() {  # "PORT CPORT" of node $1
    awk -v k="$1" '$1 == k { print $2, $3 }' "$CLUSTER_DIR/ports"
}

cluster_bootstrap() {
    awk '{ printf "%s127.0.0.1:%s", (NR > 1 ? "," : ""), $2 } END { print "" }' \
        "$CLUSTER_DIR/ports"
}

write_node_config() {
    local k=$1 n=$2 port cport voters replicas min_isr
    read -r port cport < <(node_ports "$k")
    voters=$(awk '{ printf "%s%s@127.0.0.1:%s", (NR > 1 ? "," : ""), $1, $3 }' \
        "$CLUSTER_DIR/ports")
    replicas=$((n < 3 ? n : 3))
    min_isr=$((replicas < 3 ? 1 : 2))  # 2 of 3: one node may be down
    cat >"$DIR/server.properties.tmp" <<EOF
# Written by deploy/kafka/kafka.sh on every start: edits here are lost.
# Node $k of a $n-node KRaft cluster; every node is both a broker and a controller.
process.roles=broker,controller
node.id=$k
# A static quorum of every node: each keeps its ports across restarts.
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DIR/data

# Every topic on $replicas nodes; a write with acks=all needs $min_isr of them, so the
# cluster takes writes with one node down and loses none of them.
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
# A killed node is fenced (its partitions led elsewhere) within 6 s, not Kafka's 9 s.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
group.initial.rebalance.delay.ms=$GROUP_DELAY_MS
num.partitions=4

# $n JVMs on a small machine beside the test suite.
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
log.cleaner.dedupe.buffer.size=16777216
EOF
    mv "$DIR/server.properties.tmp" "$DIR/server.properties"
}

# Start node $1 of $2 (config written, storage formatted at the first start) and return
# its pid; the caller waits for readiness.
launch_node() {
    local k=$1 n=$2
    use_node "$k"
    mkdir -p "$DIR/logs" "$DIR/data"
    write_node_config "$k" "$n"
    CLUSTER_ID_FILE=$CLUSTER_DIR/cluster.id format_storage
    log "starting node $k on 127.0.0.1:$(node_ports "$k" | cut -d' ' -f1) (dir $DIR)"
    launch
}

# Wait until node $1 answers and lists all $2 brokers; on failure show its logs and die.
await_node() {
    local k=$1 n=$2 port pid rc=0
    use_node "$k"
    port=$(node_ports "$k" | cut -d' ' -f1)
    pid=$(running_pid)
    [[ -n $pid ]] || { show_failure; die "node $k exited during startup"; }
    probe "$port" "$START_TIMEOUT" "$pid" "$n" || rc=$?
    if [[ $rc -ne 0 ]]; then
        show_failure
        die "node $k did not list $n live brokers on 127.0.0.1:$port within ${START_TIMEOUT} s"
    fi
}

# Fresh ports for every node, or the ones the dir had when every one of them is free.
assign_ports() {
    local n=$1 k ok=1 port cport
    if [[ -f $CLUSTER_DIR/ports && $(wc -l <"$CLUSTER_DIR/ports") -eq $n ]]; then
        while read -r k port cport; do
            if ! port_is_free "$port" || ! port_is_free "$cport"; then
                ok=0
            fi
        done <"$CLUSTER_DIR/ports"
        [[ $ok -eq 0 ]] || return 0
    fi
    local ports
    mapfile -t ports < <(free_ports $((2 * n)))
    for ((k = 1; k <= n; k++)); do
        echo "$k ${ports[2 * k - 2]} ${ports[2 * k - 1]}"
    done >"$CLUSTER_DIR/ports"
}

cluster_lock() {
    mkdir -p "$CLUSTER_DIR"
    exec {DIRLOCK}>"$CLUSTER_DIR/.lock"
    flock "$DIRLOCK"
}

cmd_cluster_start() {
    local n=$1 k started=$SECONDS running=0 had
    cluster_lock
    if [[ -f $CLUSTER_DIR/server.properties ]]; then
        die "$CLUSTER_DIR holds a single broker: use another --dir for a cluster"
    fi
    had=$(cluster_size || true)
    if [[ -n $had && $had != "$n" ]]; then
        die "$CLUSTER_DIR holds a $had-node cluster, not $n (use another --dir)"
    fi
    if [[ -n $had ]]; then
        for ((k = 1; k <= n; k++)); do
            use_node "$k"
            [[ -z $(running_pid) ]] || running=$((running + 1))
        done
    fi
    fetch
    command -v "$JAVA" >/dev/null 2>&1 || die "java (17 or newer) is needed"
    echo "$n" >"$CLUSTER_DIR/cluster"
    # New ports only while no node runs: a running node knows the others by their ports.
    [[ $running -gt 0 ]] || assign_ports "$n"
    rm -f "$CLUSTER_DIR/bootstrap"
    for ((k = 1; k <= n; k++)); do
        use_node "$k"
        [[ -n $(running_pid) ]] || launch_node "$k" "$n"
    done
    for ((k = 1; k <= n; k++)); do
        await_node "$k" "$n"
    done
    log "$n nodes up in $((SECONDS - started)) s"
    cluster_bootstrap | tee "$CLUSTER_DIR/bootstrap"
}

node_arg() {
    local n
    n=$(cluster_size) || die "no cluster in $CLUSTER_DIR (start it with --brokers N)"
    [[ $NODE =~ ^[0-9]+$ && $NODE -ge 1 && $NODE -le $n ]] ||
        die "node wants a number from 1 to $n, got '$NODE'"
    echo "$n"
}

cmd_node() {
    local action=$1 n pid i
    cluster_lock
    n=$(node_arg)
    use_node "$NODE"
    pid=$(running_pid)
    case $action in
        kill)
            [[ -n $pid ]] || { log "node $NODE is not running"; return 0; }
            log "kill -9 of node $NODE (pid $pid)"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                alive "$pid" || break
                sleep 0.1
            done
            alive "$pid" && die "node $NODE (pid $pid) survived SIGKILL"
            rm -f "$PIDFILE"
            ;;
        stop)
            [[ -n $pid ]] || { log "node $NODE is not running"; return 0; }
            log "stopping node $NODE (pid $pid)"
            stop_pid "$pid"
            rm -f "$PIDFILE"
            ;;
        start)
            if [[ -z $pid ]]; then
                fetch
                launch_node "$NODE" "$n"
            fi
            await_node "$NODE" "$n"
            log "node $NODE is up; the cluster lists $n brokers"
            ;;
    esac
}

cmd_cluster_stop() {
    local n k pid
    cluster_lock
    n=$(cluster_size)
    for ((k = 1; k <= n; k++)); do
        use_node "$k"
        pid=$(running_pid)
        [[ -n $pid ]] || continue
        # SIGTERM to all at once: stopping them one by one would move every partition's
        # leadership around the shrinking cluster first.
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((k = 1; k <= n; k++)); do
        use_node "$k"
        pid=$(running_pid)
        [[ -z $pid ]] || stop_pid "$pid"
        rm -f "$PIDFILE"
    done
    rm -f "$CLUSTER_DIR/bootstrap"
    log "stopped the $n nodes"
}

cmd_cluster_status() {
    local n k pid port down=0
    n=$(cluster_size)
    for ((k = 1; k <= n; k++)); do
        use_node "$k"
        pid=$(running_pid)
        port=$(node_ports "$k" | cut -d' ' -f1)
        if [[ -z $pid ]]; then
            log "node $k: down"
            down=1
        elif ! probe "$port" 0 "$pid" "$n"; then
            log "node $k: process $pid runs but 127.0.0.1:$port does not list $n brokers"
            down=1
        else
            log "node $k: up on 127.0.0.1:$port (pid $pid)"
        fi
    done
    [[ $down -eq 0 ]] || exit 3
    cluster_bootstrap
}

# ---------------------------------------------------------------- arguments

[[ $# -ge 1 ]] || usage
COMMAND=$1
shift
NODE=""
case $COMMAND in
    kill-node | stop-node | start-node)
        [[ $# -ge 1 ]] || usage
        NODE=$1
        shift
        ;;
esac
PORT=""
BROKERS=""
DIR=$REPO/var/kafka
while [[ $# -gt 0 ]]; do
    case $1 in
        --port) [[ $# -ge 2 ]] || usage; PORT=$2; shift 2 ;;
        --port=*) PORT=${1#--port=}; shift ;;
        --brokers) [[ $# -ge 2 ]] || usage; BROKERS=$2; shift 2 ;;
        --brokers=*) BROKERS=${1#--brokers=}; shift ;;
        --dir) [[ $# -ge 2 ]] || usage; DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        -h | --help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
if [[ -n $PORT && ! $PORT =~ ^[0-9]+$ ]]; then
    die "--port wants a number, got '$PORT'"
fi
if [[ -n $BROKERS && ! $BROKERS =~ ^[1-9][0-9]*$ ]]; then
    die "--brokers wants a number of at least 1, got '$BROKERS'"
fi
if [[ -n $PORT && ${BROKERS:-1} -gt 1 ]]; then
    die "--port is for one broker; a cluster picks its nodes' ports"
fi
# Checked where a node's configuration is written (start, start-node): a bad value left in
# the environment must not keep anyone from stopping a broker.
if [[ $COMMAND == start || $COMMAND == start-node ]] && ! [[ $GROUP_DELAY_MS =~ ^[0-9]{1,10}$ && 10#$GROUP_DELAY_MS -le 2147483647 ]]; then
    die "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS wants a number of ms (0 to 2147483647), got '$GROUP_DELAY_MS'"
fi
DIR=$(realpath -m -- "$DIR")
PIDFILE=$DIR/kafka.pid
# A cluster's dir says so (DIR/cluster); then stop and status handle every node.
CLUSTER_DIR=$DIR
IS_CLUSTER=0
if [[ ${BROKERS:-1} -gt 1 || ( -z $BROKERS && -f $DIR/cluster ) ]]; then
    IS_CLUSTER=1
fi

case $COMMAND in
    start)
        if [[ $IS_CLUSTER -eq 1 ]]; then
            cmd_cluster_start "${BROKERS:-$(cluster_size)}"
        else
            cmd_start "$PORT"
        fi
        ;;
    stop) if [[ $IS_CLUSTER -eq 1 ]]; then cmd_cluster_stop; else cmd_stop; fi ;;
    status) if [[ $IS_CLUSTER -eq 1 ]]; then cmd_cluster_status; else cmd_status; fi ;;
    kill-node) cmd_node kill ;;
    stop-node) cmd_node stop ;;
    start-node) cmd_node start ;;
    fetch) fetch ;;
    *) usage ;;
esac
