#!/usr/bin/env bash
# Runs InfluxDB 1.x's own HTTP integration suite (the `tests/` package of
# influxdata/influxdb) against a running server or front door, in the
# suite's remote mode (env URL). The suite's Go sources are NOT in this
# repository and must never be copied into it: scripts/influxdb-suite-build.sh
# downloads them from Debian's source package and builds the test binary
# (target/influxdb-suite/influxdb-suite.test); tests/influxdb_suite.rs runs
# it in CI.
#
#   influxdb-suite.sh [-t SECS] [-l LOGDIR] [-s] SUITE URL [READ_URL]
#
# SUITE is the suite compiled as a test binary (`go test -c`) whose TestMain
# makes one pass, not one per index type, with URL set (the build script's
# binary does). Every top-level test runs in its own process, one after the
# other (some panic in remote mode, and a panic ends the binary), with a
# timeout of SECS (default 180); each prints `PASS|FAIL|SKIP name`, then
# `N passed, N failed, N skipped`; the exit status is 1 if any failed. The
# output of each test is kept in LOGDIR (default: a new temporary dir).
# Against a bare influxd 1.6.7, 3 tests fail and 13 skip (remote mode), so
# compare with that rather than expect 0 (docs/influxdb-suite.md).
# With -s (step), after each test's line the script waits for a line on its
# stdin before the next test, so the caller can check the servers between
# tests (each test starts by dropping every database); EOF stops the run.
# With READ_URL, writes (POST /write, /api/v2/write) go to URL and every
# other request to READ_URL, through scripts/split-proxy.py, which this
# script starts on a free loopback port and stops at the end (the suite
# takes one URL). Nothing else is started: the servers must be up, with
# authentication off (the suite sends no credentials); each test drops every
# database on them.
set -euo pipefail

timeout=180 logdir= step=
while getopts t:l:s opt; do
  case $opt in t) timeout=$OPTARG ;; l) logdir=$OPTARG ;; s) step=1 ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { sed -n '10p' "$0" >&2; exit 2; }
suite=$1 url=$2 read_url=${3:-}

[ -x "$suite" ] || { echo "$suite: not an executable test binary" >&2; exit 2; }
[ -n "$logdir" ] || logdir=$(mktemp -d /tmp/influxdb-suite-logs.XXXXXX)
mkdir -p "$logdir/tmp"
export TMPDIR=$logdir/tmp # the suite makes an (unused) temp dir per server

proxy_pid=
if [ -n "$read_url" ]; then
  python3 "$(dirname "$0")/split-proxy.py" --listen 127.0.0.1:0 --port-file "$logdir/proxy.port" \
    "$url" "$read_url" </dev/null 2>"$logdir/proxy.log" &
  proxy_pid=$!
  trap 'kill "$proxy_pid" 2>/dev/null || true' EXIT
  rm -f "$logdir/proxy.port"
  for _ in $(seq 100); do
    [ -s "$logdir/proxy.port" ] || ! kill -0 "$proxy_pid" 2>/dev/null && break
    sleep 0.1
  done
  [ -s "$logdir/proxy.port" ] || { echo "split-proxy.py did not start: $(cat "$logdir/proxy.log")" >&2; exit 1; }
  url=http://127.0.0.1:$(cat "$logdir/proxy.port")
fi
export URL=$url

# Listing runs TestMain too: list with the suite's own in-process server
# (once per index type), so that a target that breaks TestMain still gets
# one line per test.
mapfile -t tests < <(env -u URL "$suite" -test.list '^Test' </dev/null | awk '/^Test/ && !seen[$0]++')
[ ${#tests[@]} -gt 0 ] || { echo "cannot list the tests of $suite" >&2; exit 1; }
passed=0 failed=0 skipped=0
for t in "${tests[@]}"; do
  log=$logdir/$t.log
  if timeout -k 10 "$timeout" "$suite" -test.run "^$t\$" -test.v -test.timeout "${timeout}s" </dev/null >"$log" 2>&1; then
    if grep -q "^--- SKIP: $t " "$log"; then r=SKIP; elif grep -q "^--- PASS: $t " "$log"; then r=PASS; else r=FAIL; fi
  else r=FAIL; fi
  case $r in PASS) passed=$((passed + 1)) ;; FAIL) failed=$((failed + 1)) ;; SKIP) skipped=$((skipped + 1)) ;; esac
  echo "$r $t"
  if [ -n "$step" ] && ! read -r _; then
    echo "stdin closed after $t: stopping" >&2
    break
  fi
done
echo "logs in $logdir" >&2
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
