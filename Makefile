# dnsproxy: build, run and test.
#
#   make run-host      build and run the proxy natively with ./settings.ini
#   make test          every test: unit, property, snapshot and end to end
#   make bench         dnsproxy beside stubby, dnsdist, unbound and kresd

CARGO      ?= cargo
TARGET_DIR ?= target
WASM       := $(TARGET_DIR)/wasm32-wasip2/release/proxy-component.wasm
HOST       := $(TARGET_DIR)/release/dnsproxy
CONFIG     ?= settings.ini
BENCH_PORT ?= 5399
NATIVE_PORT ?= 5398
BENCH_ARGS ?=

.PHONY: setup build-component build-host run-host test lint spec bench clean

setup:
	scripts/setup.sh

# The component (and the policy-probe test guest) for wasm32-wasip2.
build-component: setup
	$(CARGO) build --release --target wasm32-wasip2 -p proxy-component -p policy-probe

# The host embeds the component; `precompile` leaves its AOT artefact beside
# the binary so start-up takes milliseconds.
build-host: build-component
	$(CARGO) build --release -p dnsproxy -p proxy-component
	$(HOST) precompile --out $(TARGET_DIR)/release/

run-host: build-host
	$(HOST) --config $(CONFIG)

# Tests use the release profile: it shares the one wasmtime build with the
# binary the end-to-end tests start.
test: build-host lint
	$(CARGO) test --release --workspace

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip2 -p proxy-component -p policy-probe -- -D warnings

# The black-box conformance suite (grows into the container harness).
spec: build-host
	$(CARGO) test --release -p spec-tests

# `native` is the same shell built natively (no sandbox): the ratio of their
# CPU per query is what the WASI component costs.
bench: build-host
	../shared/bench/peers.sh $(BENCH_ARGS) \
	  --extra native=$(NATIVE_PORT)='$(CURDIR)/$(TARGET_DIR)/release/proxy-component' \
	  --extra dnsproxy=$(BENCH_PORT)='env LOCAL_HOST=127.0.0.1 LOCAL_PORT=$(BENCH_PORT) TLS_HOST=$${PB_UPSTREAM%:*} TLS_PORT=$${PB_UPSTREAM##*:} TLS_HOSTNAME=$$PB_TLS_NAME TLS_CA_FILE=$$PB_CA_FILE SPKI=$$PB_SPKI_PIN LOG_LEVEL=warn $(CURDIR)/$(HOST) --config /dev/null'

clean:
	$(CARGO) clean
