#!/usr/bin/env bash
# Maintenance figures on the mariadb-sysbench workload, in one run:
#  - prune on a repository of SNAPSHOTS [50] full backups (day1.xbs and
#    day2.xbs in turn, made with --time one day apart), after `forget
#    --keep-last 1` drops all but the newest: the first prune marks and
#    repacks, the second (after the 5 s grace period) deletes;
#  - `check --read-data` beside `rustic check --read-data` on repositories
#    holding the same two days.
#
#   benches/prune-check.sh [WORKLOAD_DIR]
#
# WORKLOAD_DIR holds day1.xbs and day2.xbs from ../shared/workloads/mariadb-sysbench.sh
# (made there when missing). Needs rustic (cargo install rustic-rs). Each step
# prints seconds, MB/s (of the repository's bytes for check), peak RSS and
# the repository's size. Compare ratios within one run: the machines are noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${1:-/tmp/dedupe-workload}
OUT=${BENCH_DIR:-/tmp/dedupe-maint-bench}
SNAPSHOTS=${SNAPSHOTS:-50}
[ -f "$WL/day1.xbs" ] || bash ../shared/workloads/mariadb-sysbench.sh "$WL"
export PATH="$HOME/.cargo/bin:$PATH"
command -v rustic >/dev/null || { echo "rustic missing: cargo install rustic-rs" >&2; exit 1; }
cargo build --release -p dedupe-cli >/dev/null
DEDUPE=$PWD/target/release/dedupe
rm -rf "$OUT"; mkdir -p "$OUT"
export DEDUPE_PASSWORD=bench RUSTIC_PASSWORD=bench DEDUPE_CACHE_DIR=$OUT/dedupe-cache
repo_bytes() { du -sb "$1" | cut -f1; }
printf '%-8s %-34s %8s %9s %9s %10s\n' tool step seconds MB/s "RSS MiB" "repo MB"
step() { # tool label bytes-for-MB/s repo command...
  local tool=$1 label=$2 bytes=$3 repo=$4; shift 4
  /usr/bin/time -o "$OUT/time" -f "%e %M" "$@" >"$OUT/stdout" 2>"$OUT/stderr" || { cat "$OUT/stderr" >&2; exit 1; }
  local t; t=$(tail -1 "$OUT/time")
  awk -v tool="$tool" -v l="$label" -v s="${t% *}" -v b="$bytes" -v k="${t#* }" -v r="$(repo_bytes "$repo")" \
    'BEGIN { printf "%-8s %-34s %8.2f %9.0f %9.0f %10.0f\n", tool, l, s, (s > 0 ? b/s/1e6 : 0), k/1024, r/1e6 }'
}
cat "$WL/day1.xbs" "$WL/day2.xbs" >/dev/null

# Prune on SNAPSHOTS backups.
R=$OUT/many
"$DEDUPE" --repo "$R" init -q
for i in $(seq 1 "$SNAPSHOTS"); do
  day=$(( i % 2 == 1 ? 1 : 2 ))
  t=$(date -u -d "2026-01-01 + $i days" +%Y-%m-%dT03:00:00Z)
  "$DEDUPE" --repo "$R" backup -q --name db --time "$t" - < "$WL/day$day.xbs"
done
echo "# $SNAPSHOTS snapshots: $("$DEDUPE" --repo "$R" snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') listed, $(repo_bytes "$R") bytes"
"$DEDUPE" --repo "$R" forget -q --keep-last 1
sleep 6   # packs younger than the grace period are not judged
step dedupe "prune --dry-run ($SNAPSHOTS snapshots)" 0 "$R" "$DEDUPE" --repo "$R" prune --keep-delete 5s --dry-run
step dedupe "prune: mark and repack" 0 "$R" "$DEDUPE" --repo "$R" prune --keep-delete 5s
cat "$OUT/stderr"
sleep 6
step dedupe "prune: delete" 0 "$R" "$DEDUPE" --repo "$R" prune --keep-delete 5s
cat "$OUT/stderr"
F=$OUT/fresh
"$DEDUPE" --repo "$F" init -q
"$DEDUPE" --repo "$F" backup -q --name db - < "$WL/day$(( SNAPSHOTS % 2 == 1 ? 1 : 2 )).xbs"
echo "# after prune $(repo_bytes "$R") bytes; a fresh repository holding the kept snapshot $(repo_bytes "$F") bytes"

# check --read-data beside rustic, on the same two days.
D=$OUT/dedupe-two; export RUSTIC_REPOSITORY=$OUT/rustic-two
"$DEDUPE" --repo "$D" init -q
rustic init --no-progress >/dev/null 2>&1
for day in 1 2; do
  "$DEDUPE" --repo "$D" backup -q --name db - < "$WL/day$day.xbs"
  rustic backup --no-progress --force --stdin-filename day.xbs - < "$WL/day$day.xbs" >/dev/null 2>&1
done
for round in 1 2; do
  step dedupe "check --read-data (round $round)" "$(repo_bytes "$D")" "$D" "$DEDUPE" --repo "$D" check --read-data
  step rustic "check --read-data (round $round)" "$(repo_bytes "$RUSTIC_REPOSITORY")" "$RUSTIC_REPOSITORY" rustic check --no-progress --read-data
done
