# Clusterflux. Every target installs what a fresh machine lacks (scripts/setup.sh)
# and shares one release build, so tests, benchmarks and binaries compile once.

CARGO ?= cargo
RUN_DIR ?= .run
MANAGER_ADDR ?= 127.0.0.1:8000

.PHONY: setup build test run bench proto-check lint deb clean

setup:
	@bash scripts/setup.sh

# --tests: the same feature resolution as `make test` (dev-dependencies
# unify features), so the binaries and the suite share one build.
build: setup
	$(CARGO) build --release --bins --tests

# The whole suite: contract checks, unit tests, and integration tests that
# start real managers, etcd clusters, influxd servers and a Python client.
test: setup proto-check
	$(CARGO) fmt --check
	$(CARGO) bench --no-run --quiet
	$(CARGO) test --release --lib --bins --tests

# A local cluster on embedded defaults: a manager and three influxd servers,
# each with its agent, in the foreground (Ctrl-C stops it all).
run: build
	RUN_DIR=$(RUN_DIR) MANAGER_ADDR=$(MANAGER_ADDR) bash scripts/local-cluster.sh

bench: setup
	$(CARGO) bench --bench manager
	$(CARGO) bench --bench frontdoor
	$(CARGO) bench --bench propagation
	$(CARGO) bench --bench scale
	$(CARGO) bench --bench replication
	$(CARGO) bench --bench catch_up

# The Debian package, from the release binaries, into target/debian/.
deb: build
	$(CARGO) deb --no-build

# Lint the contract and check it against the last released version.
proto-check: setup
	buf lint
	buf breaking --against proto/releases/clusterflux-v1.binpb

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(RUN_DIR)
