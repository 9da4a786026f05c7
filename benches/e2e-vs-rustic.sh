#!/usr/bin/env bash
# End-to-end figures on the mariadb-sysbench workload (or the
# postgres-pgbench one), dedupe beside rustic in one run (the machines are
# noisy: compare ratios, not absolutes).
#
#   benches/e2e-vs-rustic.sh [WORKLOAD_DIR]
#   DAY1=base1.tar DAY2=base2.tar benches/e2e-vs-rustic.sh /tmp/dedupe-pg-workload
#
# WORKLOAD_DIR holds day1.xbs and day2.xbs from ../shared/workloads/mariadb-sysbench.sh
# (made there when missing), or the files DAY1 and DAY2 name (base1.tar and
# base2.tar from ../shared/workloads/postgres-pgbench.sh). Needs `rustic` (cargo install rustic-rs) and a
# release build of dedupe (cargo build --release). Repositories go to $BENCH_DIR
# [/tmp/dedupe-bench]; each step prints seconds, MB/s, peak RSS and repository size.
# rustic runs with --force: without it, rustic takes a stdin stream whose
# parent snapshot has the same name as unchanged and reads none of it.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${1:-/tmp/dedupe-workload}
DAY1=$WL/${DAY1:-day1.xbs} DAY2=$WL/${DAY2:-day2.xbs}
OUT=${BENCH_DIR:-/tmp/dedupe-bench}
[ -f "$DAY1" ] || bash ../shared/workloads/mariadb-sysbench.sh "$WL"
command -v rustic >/dev/null || { echo "rustic missing: cargo install rustic-rs" >&2; exit 1; }
DEDUPE=$PWD/target/release/dedupe
[ -x "$DEDUPE" ] || cargo build --release
rm -rf "$OUT"; mkdir -p "$OUT"
export DEDUPE_PASSWORD=bench RUSTIC_PASSWORD=bench DEDUPE_CACHE_DIR=$OUT/dedupe-cache
export RUSTIC_REPOSITORY=$OUT/rustic-repo DEDUPE_REPO=$OUT/dedupe-repo
size() { stat -c %s "$1"; }
repo_bytes() { du -sb "$1" | cut -f1; }
printf '%-8s %-22s %8s %9s %9s %12s\n' tool step seconds MB/s "RSS MiB" "repo MB"
step() { # tool label input_bytes repo command...
  local tool=$1 label=$2 bytes=$3 repo=$4; shift 4
  /usr/bin/time -o "$OUT/time" -f "%e %M" "$@" >/dev/null 2>"$OUT/stderr" || { cat "$OUT/stderr" >&2; exit 1; }
  local t; t=$(tail -1 "$OUT/time")
  local secs=${t% *} kb=${t#* }
  awk -v tool="$tool" -v l="$label" -v s="$secs" -v b="$bytes" -v k="$kb" -v r="$(repo_bytes "$repo")" \
    'BEGIN { printf "%-8s %-22s %8.2f %9.0f %9.0f %12.0f\n", tool, l, s, b/s/1e6, k/1024, r/1e6 }'
}
D1=$(size "$DAY1"); D2=$(size "$DAY2")
cat "$DAY1" "$DAY2" >/dev/null   # both tools read from the page cache

"$DEDUPE" init -q
step dedupe "backup day1 (new)" "$D1" "$DEDUPE_REPO" sh -c "'$DEDUPE' backup -q --name db - < '$DAY1'"
step dedupe "backup day2" "$D2" "$DEDUPE_REPO" sh -c "'$DEDUPE' backup -q --name db - < '$DAY2'"
step dedupe "backup day1 again" "$D1" "$DEDUPE_REPO" sh -c "'$DEDUPE' backup -q --name db - < '$DAY1'"
# A --parallel=4 stream of the database as it was after day2 (see below), if made:
#   start mariadbd on $WL/datadir, mariabackup --backup --stream=xbstream --parallel=4 > $WL/day2-p4.xbs
if [ -f "$WL/day2-p4.xbs" ]; then
  cat "$WL/day2-p4.xbs" >/dev/null   # from the page cache, like the others
  step dedupe "backup day2 parallel=4" "$(size "$WL/day2-p4.xbs")" "$DEDUPE_REPO" sh -c "'$DEDUPE' backup -q --name db - < '$WL/day2-p4.xbs'"
fi
D2SNAP=$("$DEDUPE" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[1]["id"])')
step dedupe "restore day2 --stdout" "$D2" "$DEDUPE_REPO" sh -c "'$DEDUPE' restore $D2SNAP --stdout > /dev/null"

rustic init --no-progress >/dev/null 2>&1
step rustic "backup day1 (new)" "$D1" "$RUSTIC_REPOSITORY" sh -c "rustic backup --no-progress --force --stdin-filename day.xbs - < '$DAY1'"
step rustic "backup day2" "$D2" "$RUSTIC_REPOSITORY" sh -c "rustic backup --no-progress --force --stdin-filename day.xbs - < '$DAY2'"
step rustic "backup day1 again" "$D1" "$RUSTIC_REPOSITORY" sh -c "rustic backup --no-progress --force --stdin-filename day.xbs - < '$DAY1'"
R2SNAP=$(rustic snapshots --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); s=[x for g in d for x in (g[1] if isinstance(g,list) else g["snapshots"])]; s.sort(key=lambda x: x["time"]); print(s[1]["id"])')
step rustic "dump day2 (restore)" "$D2" "$RUSTIC_REPOSITORY" sh -c "rustic dump --no-progress $R2SNAP:/day.xbs > /dev/null"
