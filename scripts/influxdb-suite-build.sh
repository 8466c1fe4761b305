#!/usr/bin/env bash
# Builds InfluxDB 1.x's own HTTP integration suite (the `tests/` package of
# influxdata/influxdb) as a Go test binary, from Debian's source package of
# the influxdb installed here, and prints the binary's path.
#
#   influxdb-suite-build.sh [CACHE_DIR]      (default: target/influxdb-suite)
#
# The suite's Go sources are not in this repository and must never be
# copied into it: they are downloaded at build time from deb.debian.org (a
# package registry, reachable from CI; GitHub is not), into CACHE_DIR.
# Idempotent: a binary already built from the same source version by this
# same script is reused (a stamp file records both).
#
# Needs (scripts/setup.sh installs them): golang-go, and
# golang-github-influxdb-influxdb-dev, which puts the matching sources of
# influxdb and of its dependencies under /usr/share/gocode (all of influxdb
# but `tests/`); the suite compiles against them in GOPATH mode.
#
# Two changes to the suite, both checked to have applied:
# - Debian's packaged `run.Config` names the field `ReportingEnabled` where
#   the suite's `NewConfig` sets `ReportingDisabled = true`;
# - `TestMain` runs every test once per index type; against a remote server
#   (env URL) the index type changes nothing, so one pass is made.
#
# How its results are read: scripts/influxdb-suite.sh and
# docs/influxdb-suite.md.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$repo/target/influxdb-suite}
gocode=/usr/share/gocode
pkg=golang-github-influxdb-influxdb-dev
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
bin=$cache/influxdb-suite.test

fail() { echo "influxdb-suite-build: $*" >&2; exit 1; }

command -v go >/dev/null || fail "no go: install golang-go (scripts/setup.sh does)"
[ -d "$gocode/src/github.com/influxdata/influxdb/cmd/influxd/run" ] ||
  fail "no influxdb sources under $gocode: install $pkg (scripts/setup.sh does)"
# The source version of the packaged sources: the suite must be the same one.
version=$(dpkg-query -W -f '${source:Version}' "$pkg" 2>/dev/null) ||
  fail "$pkg is not installed (scripts/setup.sh installs it)"
stamp="influxdb $version; $(sha256sum "$0" | cut -d' ' -f1)"
if [ -x "$bin" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$bin"
  exit 0
fi
rm -f "$bin" "$cache/stamp"

# 1. The source package's orig tarball, through apt with a deb-src entry of
#    our own (nothing of the machine's apt configuration is changed): the
#    Sources index is checked against Debian's signed Release file, and the
#    tarball against the index's SHA256.
apt_dir=$cache/apt
# (--print-uris leaves out files already in the current directory: it runs
# in an empty one.)
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/empty" "$cache/download"
# The release this machine runs (its influxdb is that release's), with its
# updates and security suites, where a newer influxdb may come from.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || fail "no VERSION_CODENAME in /etc/os-release: not Debian?"
cat >"$apt_dir/src.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $codename-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
  -o Debug::NoLocking=true -o APT::Sandbox::User=root)
uris=
if ! uris=$(cd "$apt_dir/empty" && apt-get "${apt_opts[@]}" -qq --print-uris source "influxdb=$version" 2>/dev/null) ||
  ! grep -q '\.orig\.tar\.' <<<"$uris"; then
  echo "influxdb-suite-build: fetching Debian's Sources index (deb.debian.org)" >&2
  apt-get "${apt_opts[@]}" -qq update >&2 || fail "apt-get update of $apt_dir failed"
  uris=$(cd "$apt_dir/empty" && apt-get "${apt_opts[@]}" -qq --print-uris source "influxdb=$version" 2>/dev/null) ||
    fail "apt-get source --print-uris influxdb=$version failed"
fi
# A line: 'URL' FILE SIZE SHA256:HEX. Only the orig tarball is needed.
read -r url file _ hash < <(grep "\.orig\.tar\." <<<"$uris" | tr -d "'") ||
  fail "no orig tarball for influxdb=$version in: $uris"
tarball=$cache/download/$file
if ! [ -f "$tarball" ] || [ "SHA256:$(sha256sum "$tarball" | cut -d' ' -f1)" != "$hash" ]; then
  echo "influxdb-suite-build: downloading $url" >&2
  rm -f "$tarball"
  /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file "$url" "$tarball" "$hash" >&2 ||
    fail "downloading $url failed"
fi

# 2. tests/ of that tarball into a GOPATH of our own, beside symlinks to the
#    packaged root package (the first GOPATH entry holding the import path's
#    directory wins, so it must be complete).
gopath=$cache/gopath
src=$gopath/src/github.com/influxdata/influxdb
rm -rf "$gopath" "$cache/extract"
mkdir -p "$src" "$cache/extract"
tar -xzf "$tarball" -C "$cache/extract" --wildcards --no-wildcards-match-slash '*/tests/*' ||
  fail "no tests/ in $tarball"
mv "$cache/extract"/*/tests "$src/tests"
rm -rf "$cache/extract"
for f in "$gocode"/src/github.com/influxdata/influxdb/*.go; do ln -s "$f" "$src/"; done

# 3. The two changes, each checked.
sed -i 's/c\.ReportingDisabled = true/c.ReportingEnabled = false/' "$src/tests/server_helpers.go"
grep -q 'c\.ReportingEnabled = false' "$src/tests/server_helpers.go" ||
  fail "patch 1 (ReportingEnabled) did not apply"
grep -q '^	for _, indexType = range tsdb\.RegisteredIndexes() {$' "$src/tests/server_test.go" ||
  fail "patch 2: TestMain's loop not found"
sed -i '/^	for _, indexType = range tsdb\.RegisteredIndexes() {$/a\
		if RemoteEnabled() \&\& indexType != tsdb.RegisteredIndexes()[0] {\
			continue // against a remote server, one pass\
		}' "$src/tests/server_test.go"
grep -q 'if RemoteEnabled() && indexType != tsdb.RegisteredIndexes()\[0\] {' "$src/tests/server_test.go" ||
  fail "patch 2 (one pass against a remote server) did not apply"

# 4. The test binary (GOPATH mode; the build cache stays under CACHE_DIR).
echo "influxdb-suite-build: compiling the suite (go test -c)" >&2
(cd "$src/tests" &&
  GO111MODULE=off GOPATH="$gopath:$gocode" GOCACHE="$cache/gocache" GOFLAGS= \
    go test -c -o "$bin.tmp" .) >&2 || fail "go test -c failed"
mv "$bin.tmp" "$bin"
echo "$stamp" >"$cache/stamp"
echo "$bin"
