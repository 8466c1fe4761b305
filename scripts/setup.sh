#!/usr/bin/env bash
# Installs what a fresh machine lacks to build, run and test Clusterflux.
# Idempotent: every step checks first, so `make run` / `make test` can call it
# every time at almost no cost.
set -euo pipefail

need_apt=()
command -v influxd >/dev/null || need_apt+=(influxdb)
command -v influx >/dev/null || need_apt+=(influxdb-client)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler) # etcd-client's build needs it
# The console's browser test (tests/console.rs): headless Chromium under Selenium.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
python3 -c 'import venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
# InfluxDB's own HTTP suite (tests/influxdb_suite.rs): Go, and the packaged
# sources of influxdb and its dependencies it compiles against
# (scripts/influxdb-suite-build.sh fetches the suite itself).
command -v go >/dev/null || need_apt+=(golang-go)
[ -d /usr/share/gocode/src/github.com/influxdata/influxdb ] || need_apt+=(golang-github-influxdb-influxdb-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # Debian's packages start their services on install where an init system
  # runs; the tests start their own servers, so keep the packaged ones off.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  $SUDO systemctl disable --now influxdb etcd >/dev/null 2>&1 || true
fi

if ! python3 -c 'import grpc, grpc_tools, grpc_reflection' >/dev/null 2>&1; then
  echo "setup: installing grpcio, grpcio-tools and grpcio-reflection (pip)"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check 'grpcio==1.85.*' 'grpcio-tools==1.85.*' 'grpcio-reflection==1.85.*'
fi

if ! command -v buf >/dev/null; then
  echo "setup: installing buf (npm @bufbuild/buf)"
  npm install --global --silent --no-fund --no-audit @bufbuild/buf@1.75.0 >/dev/null
fi

# The Debian package (tests/packaging.rs); compiling it takes minutes, once.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "setup: installing cargo-deb 3.8.0 (cargo install)"
  cargo install --quiet --locked cargo-deb --version 3.8.0
fi
