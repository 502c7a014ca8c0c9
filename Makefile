# edge: two commands for a newcomer.
#   make demo   run the synthetic origin, an edge node and the admin API, and print what to try
#   make test   everything CI runs: fmt, clippy, `edge check` on every shipped config, all tests

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
# Where cargo puts the binary (CARGO_TARGET_DIR is honoured).
EDGE_BIN := $(or $(CARGO_TARGET_DIR),target)/debug/edge

.PHONY: deb demo test deps-build deps-test deps-bench build fmt clippy hygiene audit check-configs unit bench release-pgo fuzz clean man

demo: deps-build
	$(CARGO) run --locked -p edge -- demo

test: deps-test fmt clippy hygiene build check-configs unit

deps-build:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

deps-bench:
	@scripts/deps.sh bench

build:
	$(CARGO) build --locked -p edge

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Dependencies: none unused (cargo-machete), licenses, duplicate versions and
# sources as deny.toml says (cargo-deny). Each runs when installed
# (cargo install --locked cargo-machete cargo-deny).
hygiene:
	@if command -v cargo-machete >/dev/null 2>&1; then $(CARGO) machete; \
	  else echo "hygiene: cargo-machete not installed, unused dependencies not checked"; fi
	@if command -v cargo-deny >/dev/null 2>&1; then $(CARGO) deny --offline --log-level error check licenses bans sources; \
	  else echo "hygiene: cargo-deny not installed, licenses and sources not checked"; fi

# RustSec advisories (cargo-deny fetches the advisory database from GitHub).
audit:
	$(CARGO) deny check advisories

check-configs: build
	scripts/check-configs.sh $(EDGE_BIN)

# Then the cache, request-path and proxying tests again with every node's
# fast paths off (`server.fast_paths = false`, set by the testkit): the
# general path (pingora's duplex pump, the map-built hit) must answer as
# they do (issue 17). `--workspace` as above, so the
# features are the same and nothing but the binary's tests is rebuilt.
unit:
	$(CARGO) test --locked --workspace --no-fail-fast
	EDGE_TEST_FAST_PATHS=off $(CARGO) test --locked --workspace --no-fail-fast \
	  --test cache --test cache_rfc --test video --test llhls --test door --test requests \
	  --test lb --test run --test limits --test site

# PGO=1: `make bench` and `make deb` take `make release-pgo`'s build
# ($(PGO_DIR)/use/release/edge) instead of the plain release build,
# running benches/pgo/build.sh whole first (the training run and the build
# with the profile again: 19 minutes here after a commit, the
# instrumented build relinked).
override PGO := $(or $(strip $(PGO)),0)
ifneq ($(words $(PGO))$(filter-out 0 1,$(PGO)),1)
$(error PGO is 0 or 1, not "$(PGO)")
endif
override PGO_DIR := $(or $(PGO_DIR),$(or $(CARGO_TARGET_DIR),target)/pgo)
export PGO_DIR

# Load tests against nginx, HAProxy, Varnish and a DNS server; method and commands in benches/RESULTS.md.
bench: deps-bench
ifeq ($(PGO),1)
	benches/pgo/build.sh
	EDGE_RELEASE_BIN=$(PGO_DIR)/use/release/edge benches/run.sh
else
	$(CARGO) build --locked --release -p edge
	EDGE_RELEASE_BIN= benches/run.sh
endif

# A profile-guided release build (instrumented build, a training run of
# benches/pgo/train.sh's request mix on loopback, llvm-profdata, the build
# with the profile): target/pgo/use/release/edge. About twice a release
# build's time; what it gains is in benches/RESULTS.md.
release-pgo: deps-build
	benches/pgo/build.sh

# Fuzz the HTTP/1 framing and the Host/path normalizers (fuzz/, cargo-fuzz),
# FUZZ_SECONDS each. Not part of `make test`. cargo-fuzz needs nightly
# flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
FUZZ_SECONDS ?= 60
fuzz: deps-build
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for t in http1_head normalize dns_answer; do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

clean:
	$(CARGO) clean

# The manual page, from the command line's own definition.
MAN_PAGE := $(or $(CARGO_TARGET_DIR),target)/edge.1
man: build
	$(EDGE_BIN) man > $(MAN_PAGE)
	@echo "$(MAN_PAGE) (read it with man -l $(MAN_PAGE))"

# A Debian package (cargo-deb): the release binary, the systemd unit, a
# default config, the manual page, bash completions, the docs.
# PGO=1: of the profile-guided build (above); the package is then under
# $(PGO_DIR)/use/debian.
DEB_TARGET_DIR := $(if $(filter 1,$(PGO)),$(PGO_DIR)/use,$(or $(CARGO_TARGET_DIR),target))
RELEASE_DIR := $(DEB_TARGET_DIR)/release
deb: deps-build
ifeq ($(PGO),1)
	benches/pgo/build.sh
else
	$(CARGO) build --locked --release -p edge
endif
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install --locked cargo-deb
	$(RELEASE_DIR)/edge man | gzip -9n > $(RELEASE_DIR)/edge.1.gz
	$(RELEASE_DIR)/edge completions bash > $(RELEASE_DIR)/edge.bash
	CARGO_TARGET_DIR=$(DEB_TARGET_DIR) $(CARGO) deb --locked -p edge --no-build --strip
