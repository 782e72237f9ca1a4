# dnsproxy: build, run and test.
#
#   make run-host      build and run the proxy natively with ./settings.ini
#   make install       install the binary, its precompiled component, settings.ini,
#                      the systemd unit, completions and man page (PREFIX, DESTDIR)
#   make build         build the container image dnsproxy:latest (FROM scratch)
#   make run           run it in the background as container `dnsproxy`
#                      (LOCAL_PORT=53, EXTRA_VARS="-e TLS_HOST=..."); make stop, make logs
#   make test          every test: unit, property, snapshot and end to end
#   make bench         dnsproxy beside stubby, dnsdist, unbound and kresd (bench/)
#   make fuzz          coverage-guided fuzzing of the core, the TLS record
#                      layer and the ini reader (FUZZ_SECONDS per target,
#                      default 60; fuzz/README.md)

CARGO      ?= cargo
TARGET_DIR ?= target
# The native build is static (musl): the same binary serves the host, the
# tests and the container image.
NATIVE_TARGET ?= x86_64-unknown-linux-musl
WASM       := $(TARGET_DIR)/wasm32-wasip2/release/proxy-component.wasm
NATIVE_DIR := $(TARGET_DIR)/$(NATIVE_TARGET)/release
HOST       := $(NATIVE_DIR)/dnsproxy
IMAGE      ?= dnsproxy:latest
IMAGE_DIR  := $(TARGET_DIR)/image
CONTAINER  ?= dnsproxy
LOCAL_PORT ?= 53
EXTRA_VARS ?=
CONFIG     ?= settings.ini
BENCH_PORT ?= 5399
NATIVE_PORT ?= 5398
BENCH_ARGS ?=

.PHONY: setup setup-test build-component build-host run-host install check-install test unit bench-latency \
	lint spec docker-check bench bench-container bench-idle bench-pressure bench-workers profile build run stop logs \
	validate-k8s vendor-test \
	fuzz fuzz-seed clean

# What building needs (never a service, never a test tool).
setup:
	scripts/setup.sh

# What the tests need on top (make test, .ci/run).
setup-test:
	scripts/setup-test.sh

# What is shipped (the component, the host) and the native build of the
# component's shell (what `make profile` and `make bench` compare the
# component with) are each optimised as one program: whole-program LTO in
# one codegen unit lets LLVM inline across tokio, rustls, wasmtime and the
# proxy's own crates. A forwarded query at 100 qps took 103.8k instructions
# with the workspace's thin LTO and 91.0k with this (component 58.0k ->
# 49.6k, host 45.8k -> 41.3k; the native build 30.6k -> 27.5k;
# bench/profile.sh). It costs build time (the host's link is one thread),
# so the tests are built apart, in Cargo.toml's `release-tests` profile
# (the release profile without LTO, in target/<triple>/release-tests/): the
# unit tests, the fixture resolver and the spec suite's harness. The spec
# suite runs the binary built here. In `make test` from a clean tree the
# unit tests' build took 6.8 minutes with the profile where `cargo test
# --release` (thin LTO, which generates the code of wasmtime and Cranelift
# again in each test binary that links them) took 13.1, and the fixture
# resolver and the suite's harness 2.9 where they took 3.7.
WHOLE_PROGRAM := --config 'profile.release.lto="fat"' --config profile.release.codegen-units=1

# How the tests, the fixture resolver and the spec harness are built (see
# above; spec-tests/src/images.rs names the same profile for the fixture).
TEST_BUILD := --profile release-tests --target $(NATIVE_TARGET)

# The component is also inlined more deeply than LLVM's default (a
# threshold of 225): Cranelift inlines nothing, and in the compiled
# component every call costs more than natively (a stack-limit and an
# epoch check at each function's entry, arguments through memory past a
# few). At 1,000 a query took 27.5k instructions at saturation where it
# took 30.5k (the component's part 19.0k -> 16.3k), and 78.6k at 100 qps
# where it took 84.7k (47.6k -> 41.7k); the compiled component grew from
# 5.4 to 7.9 MB and compiling it from 1.1 to 1.6 s. 2,000 saved little
# more (27.4k, 76.4k) for 9.8 MB. The flag joins .cargo/config.toml's.
COMPONENT_INLINING := --config 'target.wasm32-wasip2.rustflags=["-Cllvm-args=-inline-threshold=1000"]'

# The host (and the native build of the component's shell, so that the two
# stay comparable) is inlined more deeply too: every host call runs through
# wasmtime's small generic canonical-ABI helpers (`options_memory_raw`, once
# per field lifted or lowered, was 1.7k instructions of a paced query in
# about 30 calls), which LLVM's default threshold leaves as calls. At 500
# the host's part of a forwarded query at 100 qps fell from 35.3k to 32.3k
# instructions, at saturation from 9.7k to 9.1k, and of a cache hit at
# saturation from 2.1k to 1.9k; 1,000 saved only 0.1k to 0.3k more, for a
# stripped binary of 42 MB where 500 gives 37 MB (31.7 MB before). The
# native shell gains 4-10% as well (bench/profile.sh, README "Benchmark").
HOST_INLINING := --config 'target.$(NATIVE_TARGET).rustflags=["-Cllvm-args=-inline-threshold=500"]'

# The component (and the policy-probe test guest) for wasm32-wasip2.
build-component: setup
	$(CARGO) build --release $(WHOLE_PROGRAM) $(COMPONENT_INLINING) --target wasm32-wasip2 -p proxy-component -p policy-probe

# The host embeds the component; `precompile` leaves its AOT artefact beside
# the binary so start-up takes milliseconds.
build-host: build-component
	$(CARGO) build --release $(WHOLE_PROGRAM) $(HOST_INLINING) --target $(NATIVE_TARGET) -p dnsproxy -p proxy-component
	$(HOST) precompile --out $(NATIVE_DIR)/

run-host: build-host
	$(HOST) --config $(CONFIG)

# `make build-host && sudo make install`: the binary in $(PREFIX)/bin, its
# precompiled component in $(PREFIX)/lib/dnsproxy (where the binary looks for
# it: a system service has no cache it may write), the systemd unit in
# $(PREFIX)/lib/systemd/system (systemd reads /usr/lib and /usr/local/lib),
# completions and the man page under $(PREFIX)/share, and
# $(SYSCONFDIR)/dnsproxy/settings.ini unless one is there already: an
# existing settings.ini is never overwritten. DESTDIR stages it all (packages).
# The component is compiled for this machine's CPU; on another CPU the proxy
# compiles it at start instead (about 1.3 s).
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR    ?=
BINDIR     := $(PREFIX)/bin
LIBDIR     := $(PREFIX)/lib/dnsproxy
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DATADIR    := $(PREFIX)/share
install:
	@test -x $(HOST) || { echo "make install: no $(HOST); run make build-host first" >&2; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(UNITDIR) \
	  $(DESTDIR)$(DATADIR)/man/man1 $(DESTDIR)$(DATADIR)/bash-completion/completions \
	  $(DESTDIR)$(DATADIR)/zsh/site-functions $(DESTDIR)$(DATADIR)/fish/vendor_completions.d \
	  $(DESTDIR)$(DATADIR)/doc/dnsproxy $(DESTDIR)$(SYSCONFDIR)/dnsproxy
	install -m 0755 $(HOST) $(DESTDIR)$(BINDIR)/dnsproxy
	strip --strip-debug $(DESTDIR)$(BINDIR)/dnsproxy
	rm -f $(DESTDIR)$(LIBDIR)/dnsproxy-*.cwasm
	$(DESTDIR)$(BINDIR)/dnsproxy precompile --out $(DESTDIR)$(LIBDIR)/ >/dev/null
	chmod 0644 $(DESTDIR)$(LIBDIR)/dnsproxy-*.cwasm
	$(DESTDIR)$(BINDIR)/dnsproxy generate man $(DESTDIR)$(DATADIR)/man/man1
	$(DESTDIR)$(BINDIR)/dnsproxy generate completions bash > $(DESTDIR)$(DATADIR)/bash-completion/completions/dnsproxy
	$(DESTDIR)$(BINDIR)/dnsproxy generate completions zsh > $(DESTDIR)$(DATADIR)/zsh/site-functions/_dnsproxy
	$(DESTDIR)$(BINDIR)/dnsproxy generate completions fish > $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/dnsproxy.fish
	chmod 0644 $(DESTDIR)$(DATADIR)/man/man1/dnsproxy*.1 $(DESTDIR)$(DATADIR)/bash-completion/completions/dnsproxy \
	  $(DESTDIR)$(DATADIR)/zsh/site-functions/_dnsproxy $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/dnsproxy.fish
	sed -e 's|/usr/bin/dnsproxy|$(BINDIR)/dnsproxy|' -e 's|/etc/dnsproxy/|$(SYSCONFDIR)/dnsproxy/|' \
	  -e 's|$$(PREFIX)|$(PREFIX)|g' -e 's|$$(SYSCONFDIR)|$(SYSCONFDIR)|g' \
	  deploy/systemd/dnsproxy.service > $(DESTDIR)$(UNITDIR)/dnsproxy.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/dnsproxy.service
	install -m 0644 README.md LICENSE-MIT LICENSE-APACHE $(DESTDIR)$(DATADIR)/doc/dnsproxy/
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/dnsproxy/settings.ini ]; then \
	  echo "make install: keeping the existing $(DESTDIR)$(SYSCONFDIR)/dnsproxy/settings.ini"; \
	else \
	  echo "install -m 0644 settings.ini $(DESTDIR)$(SYSCONFDIR)/dnsproxy/settings.ini"; \
	  install -m 0644 settings.ini $(DESTDIR)$(SYSCONFDIR)/dnsproxy/settings.ini; \
	fi

# `make install` into a scratch DESTDIR, checked (scripts/check-install.sh).
check-install: build-host setup-test
	scripts/check-install.sh

# The image: FROM scratch with the static binary, its AOT artefact and the
# default settings.ini, nothing else. The build context is $(IMAGE_DIR), so
# only those files are sent to the Docker daemon; nothing is pulled.
build: build-host
	rm -rf $(IMAGE_DIR)
	mkdir -p $(IMAGE_DIR)
	install -m 0755 $(HOST) $(IMAGE_DIR)/dnsproxy
	strip --strip-debug $(IMAGE_DIR)/dnsproxy
	$(IMAGE_DIR)/dnsproxy precompile --out $(IMAGE_DIR)/ >/dev/null
	chmod 0644 $(IMAGE_DIR)/dnsproxy-*.cwasm
	install -m 0644 settings.ini $(IMAGE_DIR)/settings.ini
	docker build --pull=false -f Dockerfile -t $(IMAGE) $(IMAGE_DIR)

# `make run LOCAL_PORT=5353 EXTRA_VARS="-e TLS_HOST=8.8.8.8 -e SPKI=..."`:
# UDP and TCP on the host's LOCAL_PORT (all interfaces; PUBLISH_HOST=127.0.0.1
# for this machine only) go to port 53 in the container. EXTRA_VARS goes to
# `docker run` as is. The container is kept after it exits so `make logs`
# shows why; `make stop` removes it.
PUBLISH_HOST ?=
PUBLISH := $(if $(PUBLISH_HOST),$(PUBLISH_HOST):)$(LOCAL_PORT)
run:
	@docker image inspect $(IMAGE) >/dev/null 2>&1 || { echo "make run: no image $(IMAGE); run make build first" >&2; exit 1; }
	docker run -d --name $(CONTAINER) --pull never \
	  --read-only --cap-drop ALL --security-opt no-new-privileges \
	  -p $(PUBLISH):53/udp -p $(PUBLISH):53/tcp $(EXTRA_VARS) $(IMAGE)

stop:
	docker stop $(CONTAINER)
	docker rm $(CONTAINER)

logs:
	docker logs -f $(CONTAINER)

# Every test: lint, the unit and property tests of each crate, the spec
# suite (containers), and the Kubernetes manifests. The tests are built
# in their own profile (TEST_BUILD) for the static target; the spec suite
# runs the whole-program binary and image that `build` makes.
test: lint unit spec validate-k8s check-install

unit: build-host
	$(CARGO) test $(TEST_BUILD) --workspace --exclude spec-tests
	$(MAKE) vendor-test

# The vendored mio's patches: 1, 2 and 4 are for the poll(2) selector (the
# component's), and on Linux their test forces that selector, in a target
# directory of its own; 3 is for epoll (the host's workers, the native build),
# and 5 for the waker (the host's workers).
vendor-test:
	RUSTFLAGS="--cfg mio_unsupported_force_poll_poll" $(CARGO) test \
	  --manifest-path vendor/mio/Cargo.toml --features os-poll,net \
	  --test dnsproxy_rearm --test dnsproxy_wait_set --target-dir $(TARGET_DIR)/vendor-mio
	$(CARGO) test --manifest-path vendor/mio/Cargo.toml --features os-poll,net \
	  --test dnsproxy_on_demand --test dnsproxy_quiet_wake --target-dir $(TARGET_DIR)/vendor-mio-epoll

lint: setup-test
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --target $(NATIVE_TARGET) --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip2 -p proxy-component -p policy-probe -- -D warnings

# The black-box conformance suite: the real binary (and the real image)
# against DoT resolvers in containers (spec-tests/). The harness builds its
# resolver images itself; it needs the static fixture resolver and the image.
# Containers and networks it leaves behind (an interrupted run) are removed
# afterwards, whatever the result. The suite is one test binary with a
# module per group (spec-tests/tests/*.rs), built once; each group runs in a
# process of its own, one group after another, so one group's load never
# lands on another's timing. Every group runs even when one fails, and the
# time each took is printed at the end (CI must stay under an hour).
# SPEC_GROUPS picks groups (e.g. SPEC_GROUPS="pinning faults"); SPEC_ARGS go
# to the test binary (e.g. SPEC_ARGS=--nocapture, or a test name).
SPEC_GROUPS ?= $(filter-out spec,$(basename $(notdir $(wildcard spec-tests/tests/*.rs))))
SPEC_ARGS ?=
spec: docker-check setup-test build
	$(CARGO) build $(TEST_BUILD) -p dot-fixture
	$(CARGO) test $(TEST_BUILD) -p spec-tests --no-run
	status=0; failed=""; times=""; for group in $(SPEC_GROUPS); do \
	  echo "spec: $$group"; start=$$(date +%s); \
	  $(CARGO) test $(TEST_BUILD) -p spec-tests -- "$$group::" $(SPEC_ARGS) \
	    || { status=1; failed="$$failed $$group"; }; \
	  times="$$times $$group=$$(( $$(date +%s) - start ))s"; \
	done; \
	  echo "spec: seconds per group:$$times"; \
	  docker ps -aq --filter label=dnsproxy-spec | xargs -r docker rm -f >/dev/null; \
	  docker network ls -q --filter label=dnsproxy-spec | xargs -r docker network rm >/dev/null; \
	  [ -z "$$failed" ] || echo "spec: failed:$$failed" >&2; \
	  exit $$status

docker-check:
	@docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || { \
	  echo "make: the spec-tests harness and the image need a running Docker Engine, and none answers (docker version failed)" >&2; exit 1; }

# `native` is the same shell built natively (no sandbox): the ratio of their
# CPU per query is what the WASI component costs.
BENCH_HOST_CMD = env LOCAL_HOST=127.0.0.1 LOCAL_PORT=$(BENCH_PORT) TLS_HOST=$${PB_UPSTREAM%:*} TLS_PORT=$${PB_UPSTREAM\#\#*:} TLS_HOSTNAME=$$PB_TLS_NAME TLS_CA_FILE=$$PB_CA_FILE SPKI=$$PB_SPKI_PIN LOG_LEVEL=warn $(CURDIR)/$(HOST) --config /dev/null
bench: build-host
	bench/peers.sh --extra-cached $(BENCH_ARGS) \
	  --extra native=$(NATIVE_PORT)='$(CURDIR)/$(NATIVE_DIR)/proxy-component' \
	  --extra dnsproxy=$(BENCH_PORT)='$(BENCH_HOST_CMD)'

# The image beside the same binary run on the host, in one run. The container
# uses the host's network (--network host): the benchmark's upstream listens on
# 127.0.0.1, and a published port would add Docker's userland proxy to what is
# measured. Everything else is as `make run` has it (read-only, no
# capabilities, user 65532, the image's settings.ini under the env overrides).
# docker run stays in the foreground and forwards peers.sh's SIGTERM to it.
BENCH_CONTAINER_PORT ?= 5397
bench-container: build
	bench/peers.sh $(BENCH_ARGS) \
	  --extra dnsproxy=$(BENCH_PORT)='$(BENCH_HOST_CMD)' \
	  --extra container=$(BENCH_CONTAINER_PORT)='exec docker run --rm --name $(CONTAINER)-bench --pull never --network host --read-only --cap-drop ALL --security-opt no-new-privileges -v $$PB_CA_FILE:/bench/ca.pem:ro -e LOCAL_HOST=127.0.0.1 -e LOCAL_PORT=$(BENCH_CONTAINER_PORT) -e TLS_HOST=$${PB_UPSTREAM%:*} -e TLS_PORT=$${PB_UPSTREAM##*:} -e TLS_HOSTNAME=$$PB_TLS_NAME -e TLS_CA_FILE=/bench/ca.pem -e SPKI=$$PB_SPKI_PIN -e LOG_LEVEL=warn $(IMAGE)'

# Where the CPU goes, per UDP query, in instructions (callgrind): component
# against host, the top functions, host calls and clock reads per query
# (bench/profile.sh; PROFILE_ARGS e.g. --rate 300 --queries 2000).
PROFILE_ARGS ?=
profile: build-host
	$(CARGO) build --release --target $(NATIVE_TARGET) -p dot-fixture
	command -v valgrind >/dev/null && command -v dnsperf >/dev/null || apt-get install -y valgrind dnsperf
	bench/profile.sh $(PROFILE_ARGS)

# The latency the proxy adds at a paced rate (100 qps, one query at a time),
# read off the loopback interface by tcpdump: misses (without the upstream's
# own time) and cache hits, for dnsproxy and for the native build of its
# shell (bench/added-latency.sh).
bench-latency: build-host
	$(CARGO) build --release --target $(NATIVE_TARGET) -p dot-fixture
	command -v tcpdump >/dev/null && command -v dnsperf >/dev/null || apt-get install -y tcpdump dnsperf
	bench/added-latency.sh
	bench/added-latency.sh --binary $(NATIVE_DIR)/proxy-component

# Scaling over workers: the proxy with WORKERS=1 and with WORKERS=2 side by
# side in one run of the benchmark (caches off, and fixed offered rates).
bench-workers: build-host
	bench/peers.sh --only dnsdist-mif $(BENCH_ARGS) --suites nocache,rate5000,rate20000 \
	  --extra w1=$(BENCH_PORT)='$(subst LOCAL_PORT=$(BENCH_PORT),LOCAL_PORT=$(BENCH_PORT) WORKERS=1,$(BENCH_HOST_CMD))' \
	  --extra w2=$(NATIVE_PORT)='$(subst LOCAL_PORT=$(BENCH_PORT),LOCAL_PORT=$(NATIVE_PORT) WORKERS=2,$(BENCH_HOST_CMD))'

# What idle TCP clients cost: the proxy's RSS, UDP and TCP qps, and its CPU
# per query at a fixed rate (IDLE_RATE, 1,000 a second), beside 0, 1,000 and
# 10,000 connected idle clients (IDLE_COUNTS).
IDLE_COUNTS ?= 0 1000 10000
bench-idle: build-host
	$(CARGO) build --release --target $(NATIVE_TARGET) -p dot-fixture
	scripts/idle-clients.sh $(HOST) $(NATIVE_DIR)/dot-fixture $(IDLE_COUNTS)

# What 2,048 clients holding TCP connections (a query every 5 s each,
# reconnecting when closed) cost at the default limits, beside 1,000 qps.
bench-pressure: build-host
	$(CARGO) build --release --target $(NATIVE_TARGET) -p dot-fixture
	scripts/pressure.sh $(HOST) $(NATIVE_DIR)/dot-fixture

# The Kubernetes manifests (deploy/kubernetes) against the Kubernetes schemas,
# offline (installs kubernetes-validate from PyPI if missing).
validate-k8s:
	scripts/validate-k8s.sh

# Fuzzing (fuzz/README.md): each target for FUZZ_SECONDS, one at a time under
# nice, with libFuzzer via cargo-fuzz on the stable toolchain (installed if
# missing); new inputs go into fuzz/corpus/<target>, which is then minimised.
# FUZZ_TARGETS picks targets (default: all). `make unit` replays the corpora.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_TARGETS)

# Writes the seed inputs (fuzz/corpus/<target>/seed-*): real DNS messages
# encoded by hickory-proto, and settings.ini.
fuzz-seed:
	$(CARGO) run --release --target $(NATIVE_TARGET) -p fuzz-checks --example seed_corpora -- fuzz/corpus

clean:
	$(CARGO) clean

# A soak benchmark, not a test: the real binary under mixed UDP and TCP load with
# upstream restarts and hostile clients for SOAK_MINUTES (default 30), printing
# RSS every 10 s, then answered % and SERVFAIL % (scripts/soak.sh).
SOAK_MINUTES ?= 30
.PHONY: soak
soak: build-host
	SOAK_MINUTES=$(SOAK_MINUTES) DNSPROXY_BIN=$(CURDIR)/$(HOST) scripts/soak.sh
