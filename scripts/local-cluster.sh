#!/usr/bin/env bash
# A whole local cluster on embedded defaults: one manager and three stock
# influxd servers, each behind its cflux-agent's front door (auth on, one
# shared secret generated into $RUN_DIR, so a password set through one node
# works on all; writes at any front door replicate to every node). A first
# admin is created on the first run, its generated password kept in
# $RUN_DIR/admin-password. Everything lives under $RUN_DIR;
# Ctrl-C (or SIGTERM) stops every process. Ports:
#   manager 127.0.0.1:8000 (gRPC, legacy HTTP, /metrics)
#   node N  front door 127.0.0.1:1808N (connect here), influxd (private)
#           127.0.0.1:1807N, agent /health and /metrics 127.0.0.1:1809N
set -euo pipefail

RUN_DIR=${RUN_DIR:-.run}
MANAGER_ADDR=${MANAGER_ADDR:-127.0.0.1:8000}
CLUSTER=${CLUSTER:-local}
NODES=${NODES:-3}
BIN=${BIN:-target/release}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)

# Secrets are made once per run directory and kept, so a restart keeps its
# users; only this user can read them.
new_secret() { # file
  [ -s "$1" ] && return 0
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1")
}
new_secret "$RUN_DIR/shared-secret"
new_secret "$RUN_DIR/replication-secret"
first_run=false
[ -s "$RUN_DIR/admin-password" ] || first_run=true
new_secret "$RUN_DIR/admin-password"
# influxd and the agents read it from the environment, not from `ps`.
INFLUXDB_HTTP_SHARED_SECRET=$(cat "$RUN_DIR/shared-secret")
export INFLUXDB_HTTP_SHARED_SECRET
ADMIN_PASSWORD=$(cat "$RUN_DIR/admin-password")

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping the local cluster"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

wait_http() { # url what
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not come up; see its log in $RUN_DIR" >&2
  exit 1
}

"$BIN/cflux-manager" --listen "$MANAGER_ADDR" --data-dir "$RUN_DIR/manager" 2>"$RUN_DIR/manager.log" &
pids+=($!)
wait_http "http://$MANAGER_ADDR/metrics" "the manager"

for n in $(seq 1 "$NODES"); do
  d="$RUN_DIR/node$n"
  mkdir -p "$d"
  INFLUXDB_META_DIR="$d/meta" INFLUXDB_DATA_DIR="$d/data" INFLUXDB_DATA_WAL_DIR="$d/wal" \
  INFLUXDB_HTTP_BIND_ADDRESS="127.0.0.1:1807$n" INFLUXDB_BIND_ADDRESS="127.0.0.1:1810$n" \
  INFLUXDB_HTTP_AUTH_ENABLED=true INFLUXDB_REPORTING_DISABLED=true INFLUXDB_HTTP_LOG_ENABLED=false INFLUXDB_LOGGING_LEVEL=warn \
  INFLUXDB_SUBSCRIBER_ENABLED=false \
    influxd run 2>"$d/influxd.log" >&2 &
  pids+=($!)
done
for n in $(seq 1 "$NODES"); do
  wait_http "http://127.0.0.1:1807$n/ping" "influxd $n"
  d="$RUN_DIR/node$n"
  CFLUX_ENDPOINT="http://$MANAGER_ADDR" CLUSTER="$CLUSTER" \
    "$BIN/cflux-agent" --influxdb-url "http://127.0.0.1:1807$n" --meta-dir "$d/meta" \
    --state-dir "$d/agent" --listen "127.0.0.1:1809$n" \
    --frontdoor-listen "127.0.0.1:1808$n" --http-addr "127.0.0.1:1808$n" \
    --replicate --replication-secret-file "$RUN_DIR/replication-secret" 2>"$d/agent.log" &
  pids+=($!)
done
for n in $(seq 1 "$NODES"); do wait_http "http://127.0.0.1:1808$n/ping" "the front door of node $n"; done

query() { # node statement: through the node's front door, as the admin
  curl -fsS -o /dev/null -u "admin:$ADMIN_PASSWORD" "http://127.0.0.1:1808$1/query" \
    --data-urlencode "q=$2"
}
if $first_run; then
  # A server without an admin takes this one statement without credentials.
  curl -fsS -o /dev/null "http://127.0.0.1:18081/query" \
    --data-urlencode "q=CREATE USER admin WITH PASSWORD '$ADMIN_PASSWORD' WITH ALL PRIVILEGES" ||
    { echo "cannot create the first admin; see $RUN_DIR/node1/agent.log" >&2; exit 1; }
fi
for n in $(seq 1 "$NODES"); do
  for _ in $(seq 1 200); do query "$n" "SHOW USERS" 2>/dev/null && break; sleep 0.1; done
  query "$n" "SHOW USERS" ||
    { echo "the admin cannot log in on node $n; see $RUN_DIR/node$n/agent.log" >&2; exit 1; }
done

cat <<MSG
Local Clusterflux cluster '$CLUSTER' is up (logs and data in $RUN_DIR):
  manager  $MANAGER_ADDR      console http://$MANAGER_ADDR/   curl http://$MANAGER_ADDR/nodes
$(for n in $(seq 1 "$NODES"); do echo "  node $n   front door http://127.0.0.1:1808$n   agent http://127.0.0.1:1809$n/health"; done)
The first admin is 'admin', its password in $RUN_DIR/admin-password. Connect through any front door:
$(for n in $(seq 1 "$NODES"); do echo "  influx -host 127.0.0.1 -port 1808$n -username admin -password $ADMIN_PASSWORD"; done)
Try:  CREATE USER alice WITH PASSWORD 'pw1' on node 1, then log in as alice on node 2.
      Writes replicate: INSERT on node 1, SELECT the same points on node 3;
      a DELETE on node 2 deletes them on every node.
Ctrl-C stops everything.
MSG
wait
