#!/usr/bin/env bash
# A whole local cluster on embedded defaults: one manager and three stock
# influxd servers, each with its cflux-agent. Everything lives under $RUN_DIR;
# Ctrl-C (or SIGTERM) stops every process. Ports:
#   manager 127.0.0.1:8000 (gRPC, legacy HTTP, /metrics)
#   node N  influxd http 127.0.0.1:1808N, agent /health and /metrics 127.0.0.1:1809N
set -euo pipefail

RUN_DIR=${RUN_DIR:-.run}
MANAGER_ADDR=${MANAGER_ADDR:-127.0.0.1:8000}
CLUSTER=${CLUSTER:-local}
NODES=${NODES:-3}
BIN=${BIN:-target/release}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)

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
  INFLUXDB_HTTP_BIND_ADDRESS="127.0.0.1:1808$n" INFLUXDB_BIND_ADDRESS="127.0.0.1:1810$n" \
  INFLUXDB_REPORTING_DISABLED=true INFLUXDB_HTTP_LOG_ENABLED=false INFLUXDB_LOGGING_LEVEL=warn \
    influxd run 2>"$d/influxd.log" >&2 &
  pids+=($!)
done
for n in $(seq 1 "$NODES"); do
  wait_http "http://127.0.0.1:1808$n/ping" "influxd $n"
  d="$RUN_DIR/node$n"
  CFLUX_ENDPOINT="http://$MANAGER_ADDR" CLUSTER="$CLUSTER" \
    "$BIN/cflux-agent" --influxdb-url "http://127.0.0.1:1808$n" --meta-dir "$d/meta" \
    --state-dir "$d/agent" --listen "127.0.0.1:1809$n" 2>"$d/agent.log" &
  pids+=($!)
done
for n in $(seq 1 "$NODES"); do wait_http "http://127.0.0.1:1809$n/health" "agent $n"; done

cat <<MSG
Local Clusterflux cluster '$CLUSTER' is up (logs and data in $RUN_DIR):
  manager  $MANAGER_ADDR      console http://$MANAGER_ADDR/   curl http://$MANAGER_ADDR/nodes
$(for n in $(seq 1 "$NODES"); do echo "  node $n   influxd http://127.0.0.1:1808$n   agent http://127.0.0.1:1809$n/health"; done)
Try:  influx -port 18081 -execute 'CREATE DATABASE demo'  then  influx -port 18082 -execute 'SHOW DATABASES'
Ctrl-C stops everything.
MSG
wait
