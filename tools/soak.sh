#!/usr/bin/env bash
# make soak: the fault tests (several rounds), the server's overload test, the pool
# soak, the 3-replica fleet soak with schemathesis against a live replica, then the
# fuzzers, each bounded; rewrites RELIABILITY.md from what they measured. About 20
# minutes at the defaults on a 2-core machine once the fuzz targets are built (a first,
# cold build of the libFuzzer targets takes ~15 minutes there: it gets 5, then the
# stable harness is used instead):
#   SOAK_ROUNDS=1         rounds of the fault tests (the SDK's tests/reliability.rs, faults.rs,
#                         errors.rs; the server's host_faults.rs, security.rs, fleet.rs's SIGKILL)
#   SOAK_N=1000           pool queries; SOAK_SECONDS=420 stops starting new ones after that
#   SOAK_CONCURRENCY=6
#   SOAK_FLEET_N=300      fleet runs; SOAK_FLEET_SECONDS=180 stops starting new ones after that
#   SOAK_FLEET_CONCURRENCY=6
#   SOAK_SCHEMATHESIS=1   schemathesis against a live fleet replica (0: skip)
#   FUZZ_SECONDS=60       per fuzz target (cargo fuzz on nightly when it works, else stable-fuzz)
set -uo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
out=target/soak
bin=${CARGO_TARGET_DIR:-target}/debug
rm -rf "$out" && mkdir -p "$out"
rounds=${SOAK_ROUNDS:-1}
export SOAK_N=${SOAK_N:-1000} SOAK_SECONDS=${SOAK_SECONDS:-420} SOAK_CONCURRENCY=${SOAK_CONCURRENCY:-6}
export SOAK_FLEET_N=${SOAK_FLEET_N:-300} SOAK_FLEET_SECONDS=${SOAK_FLEET_SECONDS:-180}
export SOAK_FLEET_CONCURRENCY=${SOAK_FLEET_CONCURRENCY:-6} SOAK_SCHEMATHESIS=${SOAK_SCHEMATHESIS:-1}
fuzz_seconds=${FUZZ_SECONDS:-60}
status=0

echo "== build"
$CARGO build --quiet -p claude-code-testkit --bins || exit 1
$CARGO build --quiet -p claude-code-sdk --example soak || exit 1
$CARGO build --quiet -p claude-code-server --bin claude-code-server --example fleet_soak || exit 1
$CARGO test --quiet -p claude-code-server --test overload --no-run || exit 1
$CARGO test --quiet -p claude-code-sdk --test reliability --test faults --test errors --no-run || exit 1
$CARGO test --quiet -p claude-code-server --test host_faults --test security --test fleet --no-run || exit 1

echo "== fault tests, $rounds rounds"
for round in $(seq 1 "$rounds"); do
  RELIABILITY_LOG="$PWD/$out/faults.jsonl" timeout 900 $CARGO test --quiet -p claude-code-sdk \
    --test reliability --test faults --test errors -- --test-threads=2 --format pretty \
    > "$out/tests-$round.txt" 2>&1 || status=1
  echo "  round $round: $(grep -c ' ... ok$' "$out/tests-$round.txt") passed, $(grep -c ' ... FAILED$' "$out/tests-$round.txt") failed"
  # The server's host faults (database restart, full disk, clock jump, a replica
  # SIGKILLed) and security suite, on a PostgreSQL database (tools/with-postgres).
  { RELIABILITY_LOG="$PWD/$out/faults.jsonl" CLAUDE_SDK_REQUIRE_PG=1 timeout 900 tools/with-postgres \
      $CARGO test --quiet -p claude-code-server --test host_faults --test security -- --test-threads=2 --format pretty
    RELIABILITY_LOG="$PWD/$out/faults.jsonl" CLAUDE_SDK_REQUIRE_PG=1 timeout 600 tools/with-postgres \
      $CARGO test --quiet -p claude-code-server --test fleet -- fleet_replica_killed_mid_run --format pretty
  } > "$out/server-tests-$round.txt" 2>&1 || status=1
  echo "  round $round, server: $(grep -c ' ... ok$' "$out/server-tests-$round.txt") passed, $(grep -c ' ... FAILED$' "$out/server-tests-$round.txt") failed"
done

echo "== overload: 200 clients against a pool of 2 and a queue of 6"
RELIABILITY_LOG="$PWD/$out/overload.jsonl" timeout 600 $CARGO test --quiet -p claude-code-server \
  --test overload -- --format pretty > "$out/overload.txt" 2>&1 || status=1
echo "  $(grep -c ' ... ok$' "$out/overload.txt") passed, $(grep -c ' ... FAILED$' "$out/overload.txt") failed"

echo "== pool soak: $SOAK_N queries (at most ${SOAK_SECONDS}s of starts), $SOAK_CONCURRENCY at once"
SOAK_OUT="$out/soak.json" timeout $((SOAK_SECONDS + 300)) "$bin/examples/soak" 2> "$out/soak.log" || status=1
tail -3 "$out/soak.log"

echo "== fleet soak: $SOAK_FLEET_N runs through 3 replicas on PostgreSQL (at most ${SOAK_FLEET_SECONDS}s of starts)"
SOAK_FLEET_OUT="$out/fleet-soak.json" timeout $((SOAK_FLEET_SECONDS + 600)) \
  tools/with-postgres "$bin/examples/fleet_soak" 2> "$out/fleet-soak.log" || status=1
grep -v '^ ' "$out/fleet-soak.log" | tail -3

echo "== fuzzers, ${fuzz_seconds}s each"
fuzz/seed.sh
engine=stable
if $CARGO +nightly fuzz --version >/dev/null 2>&1 \
   && (cd fuzz && timeout 300 $CARGO +nightly fuzz build -O --features libfuzzer >"../$out/fuzz-build.log" 2>&1); then
  engine=libfuzzer
fi
for target in wire_lines transcript; do
  if [ "$engine" = libfuzzer ]; then
    (cd fuzz && timeout $((fuzz_seconds + 120)) $CARGO +nightly fuzz run -O --features libfuzzer "$target" \
      "corpus/$target" -- -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -max_len=65536 -print_final_stats=1) > "$out/fuzz-$target.log" 2>&1 || status=1
  else
    (cd fuzz && $CARGO build --quiet --release --bin stable-fuzz \
      && timeout $((fuzz_seconds + 60)) "${CARGO_TARGET_DIR:-target}/release/stable-fuzz" "$target" "corpus/$target" "$fuzz_seconds") \
      > "$out/fuzz-$target.log" 2>&1 || status=1
  fi
  echo "  $target ($engine): $(tail -1 "$out/fuzz-$target.log")"
done
echo "$engine" > "$out/fuzz-engine"

python3 tools/reliability_report.py "$out" > RELIABILITY.md || status=1
echo "== RELIABILITY.md rewritten (status $status)"
exit $status
