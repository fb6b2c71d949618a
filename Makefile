# Thin entry points. Everything a fresh machine needs is installed from here:
# the pinned Claude Code CLI via npm (tools/claude-cli), crates via cargo.

CLI_DIR := tools/claude-cli
CLI_BIN := $(CLI_DIR)/node_modules/.bin/claude
CLI_VERSION := $(shell sed -n 's/.*"@anthropic-ai\/claude-code": "\([^"]*\)".*/\1/p' $(CLI_DIR)/package.json)
# The oldest CLI the SDK supports: `make test` runs the SDK's integration tests on it too.
OLDEST_CLI_DIR := tools/claude-cli-oldest
OLDEST_CLI_BIN := $(OLDEST_CLI_DIR)/node_modules/.bin/claude
OLDEST_CLI_VERSION := $(shell sed -n 's/.*"@anthropic-ai\/claude-code": "\([^"]*\)".*/\1/p' $(OLDEST_CLI_DIR)/package.json)
CARGO ?= cargo
# The browser test drives Debian's Chromium through its chromedriver.
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

export CLAUDE_CODE_CLI_PATH ?= $(CURDIR)/$(CLI_BIN)

.PHONY: run serve test bench soak cli cli-oldest browser faketime check lint clean

## make run: the quickstart example (real Claude when credentials exist, else the bundled mock model)
run: cli
	$(CARGO) run --quiet -p claude-code-sdk --example quickstart

## make serve: the HTTP server and its web page on 127.0.0.1:8080 (real Claude or the mock model)
serve: cli
	$(CARGO) run --quiet -p claude-code-server --example demo

## make test: every test, against the real pinned CLI and the testkit's mock model,
## with a PostgreSQL server (DATABASE_URL, else 127.0.0.1:5432, else a private one);
## the web page in headless Chromium (crates/claude-code-server/tests/browser.rs);
## then the SDK's integration tests again on the oldest supported CLI (tests that need
## a newer CLI print "SKIPPED <test>: needs Claude Code CLI x.y.z ..." there)
test: cli cli-oldest browser faketime
	$(CARGO) build --workspace --all-targets --all-features --quiet
	CLAUDE_SDK_REQUIRE_PG=1 tools/with-postgres $(CARGO) test --workspace --all-features --quiet -- --test-threads=4
	@echo "== compatibility run: the SDK's integration tests on Claude Code CLI $(OLDEST_CLI_VERSION)"
	CLAUDE_CODE_CLI_PATH=$(CURDIR)/$(OLDEST_CLI_BIN) CLAUDE_SDK_REQUIRE_PG=1 tools/with-postgres $(CARGO) test -p claude-code-sdk --all-features --test '*' --quiet -- --test-threads=4

## make bench: this SDK side by side with the official Python and TypeScript SDKs (pinned,
## installed under target/bench), the SDK's latency table and the codec micro-benchmark,
## written into BENCHMARKS.md; about 20 minutes (BENCH_RUNS / BENCH_HEAVY_RUNS scale it)
bench: cli
	CARGO=$(CARGO) tools/bench/run

## make soak: the fault tests in rounds, 1,000 queries through the pool (bounded), the
## fuzzers (cargo fuzz on nightly, else a stable harness); rewrites RELIABILITY.md.
## About 20 minutes; tools/soak.sh names the knobs (SOAK_N, SOAK_SECONDS, FUZZ_SECONDS, ...)
soak: cli
	tools/soak.sh

## make lint: formatting, clippy and rustdoc, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features --quiet -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --all-features --no-deps --quiet

## the pinned CLI, installed once (npm ci is reproducible from package-lock.json)
cli: $(CLI_BIN)
$(CLI_BIN): $(CLI_DIR)/package.json $(CLI_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is required to install the pinned Claude Code CLI" >&2; exit 1; }
	cd $(CLI_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@$(CLI_BIN) --version | grep -q "$(CLI_VERSION)" || { echo "installed CLI is not $(CLI_VERSION)" >&2; exit 1; }
	@touch $(CLI_BIN)

## the oldest supported CLI, for the compatibility run of `make test`
cli-oldest: $(OLDEST_CLI_BIN)
$(OLDEST_CLI_BIN): $(OLDEST_CLI_DIR)/package.json $(OLDEST_CLI_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is required to install the oldest supported Claude Code CLI" >&2; exit 1; }
	cd $(OLDEST_CLI_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@$(OLDEST_CLI_BIN) --version | grep -q "$(OLDEST_CLI_VERSION)" || { echo "installed CLI is not $(OLDEST_CLI_VERSION)" >&2; exit 1; }
	@touch $(OLDEST_CLI_BIN)

## Debian's Chromium and its WebDriver, for the browser test (tests/browser.rs of the
## server), installed once with apt-get (as root, or through sudo when there is one)
browser: $(CHROMIUM) $(CHROMEDRIVER)
$(CHROMIUM) $(CHROMEDRIVER) &:
	@command -v apt-get >/dev/null || { echo "the browser test needs Debian's chromium and chromium-driver (apt-get not found)" >&2; exit 1; }
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver
	@test -x $(CHROMIUM) && test -x $(CHROMEDRIVER) || { echo "chromium or chromedriver is still missing" >&2; exit 1; }

## libfaketime, for the clock-jump test of the server (tests/host_faults.rs): Debian's
## faketime, installed once with apt-get
LIBFAKETIME := /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
faketime: $(LIBFAKETIME)
$(LIBFAKETIME):
	@command -v apt-get >/dev/null || { echo "the clock-jump test needs Debian's faketime (apt-get not found)" >&2; exit 1; }
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq faketime

clean:
	$(CARGO) clean
	rm -rf $(CLI_DIR)/node_modules $(OLDEST_CLI_DIR)/node_modules
