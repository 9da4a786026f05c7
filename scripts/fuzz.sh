#!/usr/bin/env bash
# Long fuzz runs of dedupe's parsers and decoders (see fuzz/src/lib.rs).
#   scripts/fuzz.sh                  # every target, 600 s each
#   scripts/fuzz.sh xbstream 3600    # one target for an hour
#   scripts/fuzz.sh all 120          # every target, 2 minutes each
#
# Builds the stable driver (`dedupe-fuzz`) once with LLVM's coverage
# instrumentation (SanitizerCoverage: stable -C options) in the `fuzz`
# profile (release with overflow checks and debug assertions), then runs each
# target from its seeds in fuzz/corpus/<target>/ plus what earlier runs found
# (fuzz/work/<target>/, kept between runs, not committed). Prints executions
# per second; a crash, hang or allocation bomb is saved to
# fuzz/artifacts/<target>/ and named at the end, and the script exits 1.
#
# Environment: FUZZ_SEED (default: the time), FUZZ_MEM_LIMIT_MB (64),
# FUZZ_TIMEOUT (10 s for one input), CARGO_TARGET_DIR (target/).
# Reproduce a finding: target/<triple>/fuzz/dedupe-fuzz replay TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-all}
seconds=${2:-600}
triple=$(rustc -vV | sed -n 's/^host: //p')
dir=${CARGO_TARGET_DIR:-target}
# --target keeps the instrumentation off build scripts and proc macros,
# which run inside the compiler and cannot call the driver's hooks.
export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-trace-compares"
cargo build --profile fuzz --target "$triple" -p dedupe-fuzz --bin dedupe-fuzz
bin="$dir/$triple/fuzz/dedupe-fuzz"

if [ "$target" = all ]; then
  mapfile -t targets < <("$bin" list | awk '{print $1}')
else
  targets=("$target")
fi

status=0
summaries=()
for t in "${targets[@]}"; do
  echo "== $t: $seconds s"
  mkdir -p "fuzz/work/$t"
  set +e
  out=$("$bin" run "$t" --seconds "$seconds" --seed "${FUZZ_SEED:-$(date +%s)}" \
    --corpus "fuzz/corpus/$t" --corpus "fuzz/work/$t" --save-corpus "fuzz/work/$t" \
    --artifacts fuzz/artifacts --mem-limit-mb "${FUZZ_MEM_LIMIT_MB:-64}" --timeout "${FUZZ_TIMEOUT:-10}" \
    --report-every 30)
  rc=$?
  set -e
  echo "$out"
  case $rc in
    0) ;;
    1) status=1 ;;
    70) status=1; out="$t: HANG (input saved under fuzz/artifacts/$t/)" ;;
    71) status=1; out="$t: ALLOCATION OVER THE HARD CAP (input saved as fuzz/artifacts/$t/oom-over-hard-cap)" ;;
    *) status=1; out="$t: the driver died (exit $rc)" ;;
  esac
  summaries+=("$(echo "$out" | head -1)")
  while IFS= read -r line; do summaries+=("$line"); done < <(echo "$out" | tail -n +2)
done

echo
echo "== summary"
printf '%s\n' "${summaries[@]}"
exit "$status"
