#!/usr/bin/env bash
# Full vs incremental backups "of the same day" on the pgbench workload:
#   dedupe (PostgreSQL 18, pg_basebackup, --pg-incremental)  beside
#   pgBackRest 2.45 (Debian) full + incr on PostgreSQL 15.
#
#   benches/pg-incremental.sh        (as root; PostgreSQL 18 from scripts/test.sh's
#                                     wheels, pgbackrest from apt-get)
#
# Environment (defaults in brackets):
#   SCALE [60]          pgbench scale
#   TXNS  [60000]       pgbench transactions of the "day of writes" (-c 2 -j 2 -t TXNS/2)
#   TEXT_ROWS [1000000] rows of the notes table (as shared/workloads/postgres-pgbench.sh)
#   OUT   [/var/tmp/dedupe-pg-incremental]   everything goes here; removed first
#   DEDUPE [target/release/dedupe]
#   PG18 [/opt/dedupe-test-pg/18/bin]  PG15 [/usr/lib/postgresql/15/bin]
#   PORT18 [5470] PORT18R [5471] (restored copy) PORT15 [5472]
# Must run as root (servers and their tools run as postgres through runuser).
# Only one heavy step runs at a time. Results: $OUT/figures.md, $OUT/results.env,
# $OUT/json/*.json, logs in $OUT/logs.
set -euo pipefail

SCALE=${SCALE:-60}
TXNS=${TXNS:-60000}
TEXT_ROWS=${TEXT_ROWS:-1000000}
cd "$(dirname "$0")/.."
OUT=${OUT:-/var/tmp/dedupe-pg-incremental}
DEDUPE=${DEDUPE:-$PWD/target/release/dedupe}
PG18=${PG18:-/opt/dedupe-test-pg/18/bin}
PG15=${PG15:-/usr/lib/postgresql/15/bin}
PORT18=${PORT18:-5470}
PORT18R=${PORT18R:-5471}
PORT15=${PORT15:-5472}
export DEDUPE_PASSWORD=${DEDUPE_PASSWORD:-bench-pg-incremental}
export DEDUPE_PG_BIN=$PG18
PER_CLIENT=$((TXNS / 2))

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }

as_pg() { runuser -u postgres -- "$@"; }
log() { printf '\n=== %s  %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- start clean: stop servers a previous run of this script left, remove OUT
stop_if_running() { # DATADIR BIN
  if [ -f "$1/postmaster.pid" ]; then as_pg "$2/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true; fi
}
if [ -d "$OUT" ]; then
  stop_if_running "$OUT/restored-incr" "$PG18"
  stop_if_running "$OUT/pg18data" "$PG18"
  stop_if_running "$OUT/pg15data" "$PG15"
fi
rm -rf "$OUT"
mkdir -p "$OUT"/{logs,json,sock18,sock18r,sock15,pgbr-repo,pgbr-log,pgbr-lock}
chown postgres: "$OUT" "$OUT"/{logs,sock18,sock18r,sock15,pgbr-repo,pgbr-log,pgbr-lock}
RES=$OUT/results.env
: >"$RES"
put() { printf '%s=%q\n' "$1" "$2" >>"$RES"; printf '    %s = %s\n' "$1" "$2"; }

# Every server this script started is stopped on exit, whatever happens.
cleanup() {
  stop_if_running "$OUT/restored-incr" "$PG18"
  stop_if_running "$OUT/pg18data" "$PG18"
  stop_if_running "$OUT/pg15data" "$PG15"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
dusb() { du -sb "$1" | cut -f1; }

SOCK18=$OUT/sock18
SOCK18R=$OUT/sock18r
SOCK15=$OUT/sock15
psql18() { as_pg "$PG18/psql" -h "$SOCK18" -p "$PORT18" -X -A -t -q -v ON_ERROR_STOP=1 -d bench "$@"; }
psql18r() { as_pg "$PG18/psql" -h "$SOCK18R" -p "$PORT18R" -X -A -t -q -v ON_ERROR_STOP=1 -d bench "$@"; }
psql15() { as_pg "$PG15/psql" -h "$SOCK15" -p "$PORT15" -X -A -t -q -v ON_ERROR_STOP=1 -d bench "$@"; }

NOTES_SQL="CREATE TABLE notes AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS body FROM generate_series(1,$TEXT_ROWS) g; ALTER TABLE notes ADD PRIMARY KEY (id);"
UPDATE_SQL="UPDATE notes SET body = md5(random()::text) WHERE id % 50 = 0"

# Per-table checksum: row count and md5 over the sorted md5s of the rows'
# text (order-independent, and stays below the 1 GB string limit at any scale).
table_sums() { # psql-function
  local q=$1 t
  for t in $($q -c "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"); do
    printf '%s|%s\n' "$t" "$($q -c "SET work_mem = '256MB'" -c "SELECT count(*) || '|' || coalesce(md5(string_agg(h, ',' ORDER BY h)), '-') FROM (SELECT md5(t::text) AS h FROM \"$t\" t) s")"
  done
}

echo "SCALE=$SCALE TXNS=$TXNS (pgbench -n -c 2 -j 2 -t $PER_CLIENT) TEXT_ROWS=$TEXT_ROWS OUT=$OUT"
echo "dedupe: $("$DEDUPE" --version)  pg18: $(as_pg "$PG18/postgres" --version)  pg15: $("$PG15/postgres" --version)  $(pgbackrest version)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load at start: $LOAD_START"

#######################################################################
# 1. PostgreSQL 18 cluster and load
#######################################################################
log "PG18: initdb, start, load (scale $SCALE)"
as_pg "$PG18/initdb" -D "$OUT/pg18data" >"$OUT/logs/initdb18.log" 2>&1
cat >>"$OUT/pg18data/postgresql.conf" <<EOF
port = $PORT18
listen_addresses = ''
unix_socket_directories = '$SOCK18'
wal_level = replica
summarize_wal = on
archive_mode = off
EOF
as_pg "$PG18/pg_ctl" -D "$OUT/pg18data" -l "$OUT/logs/pg18.log" -w start >/dev/null
as_pg "$PG18/createdb" -h "$SOCK18" -p "$PORT18" bench
put pg18_data_checksums "$(psql18 -c 'SHOW data_checksums')"
put pg18_summarize_wal "$(psql18 -c 'SHOW summarize_wal')"
t0=$(now)
as_pg "$PG18/pgbench" -h "$SOCK18" -p "$PORT18" -i -q -s "$SCALE" bench >"$OUT/logs/load18.log" 2>&1
psql18 -c "$NOTES_SQL"
psql18 -c CHECKPOINT
put pg18_load_seconds "$(secs "$t0" "$(now)")"
put pg18_db_size_day1 "$(psql18 -c "SELECT pg_database_size('bench')")"

#######################################################################
# 2. Day 1: full into A; the same stream into B
#######################################################################
A=$OUT/repoA
B=$OUT/repoB
dA() { "$DEDUPE" --repo "$A" --cache-dir "$OUT/cacheA" "$@"; }
dB() { "$DEDUPE" --repo "$B" --cache-dir "$OUT/cacheB" "$@"; }
dA init >"$OUT/logs/initA.log" 2>&1
dB init >"$OUT/logs/initB.log" 2>&1
PRODUCER="runuser -u postgres -- $PG18/pg_basebackup -h $SOCK18 -p $PORT18 -D - -Ft -X fetch -c fast"
put producer "$PRODUCER"

# A bare producer run, its stream counted: KEY producer-args...
raw() {
  local key=$1 t0 n; shift
  t0=$(now)
  n=$("$@" 2>"$OUT/logs/$key.err" | wc -c) || { cat "$OUT/logs/$key.err" >&2; exit 1; }
  put "${key}_seconds" "$(secs "$t0" "$(now)")"
  put "${key}_bytes" "$n"
  if [ -s "$OUT/logs/$key.err" ]; then sed 's/^/    stderr: /' "$OUT/logs/$key.err"; fi
}

# dedupe backup with timing and repository growth; KEY REPO_DIR dedupe-args...
dbackup() {
  local key=$1 dir=$2; shift 2
  local before t0 t1
  before=$(dusb "$dir")
  t0=$(now)
  "$@" >"$OUT/json/$key.json" 2>"$OUT/logs/$key.err" || { cat "$OUT/logs/$key.err" >&2; exit 1; }
  t1=$(now)
  put "${key}_wall" "$(secs "$t0" "$t1")"
  put "${key}_repo_growth" "$(( $(dusb "$dir") - before ))"
  local f
  for f in snapshot bytes bytes_read new_bytes new_bytes_stored delta_bytes delta_bytes_stored files seconds; do
    put "${key}_$f" "$(jq -r ".$f" "$OUT/json/$key.json")"
  done
  if [ -s "$OUT/logs/$key.err" ]; then sed 's/^/    stderr: /' "$OUT/logs/$key.err"; fi
}

log "day 1: dedupe full into A"
dbackup day1_A "$A" dA --json backup --name pg --command "$PRODUCER"
ID1=$(jq -r .snapshot "$OUT/json/day1_A.json")

log "day 1: the same snapshot into B (restore --stdout | backup -)"
copy_day1() { dA restore "$ID1" --stdout | dB --json backup --name pg -; }
dbackup day1_B "$B" copy_day1

# Raw day-1 stream, measured AFTER the dedupe day-1 full (no writes between).
log "day 1: raw pg_basebackup stream | wc -c (after the dedupe full)"
raw raw_day1_full $PRODUCER

#######################################################################
# 3. A day of writes
#######################################################################
log "day of writes: pgbench -n -c 2 -j 2 -t $PER_CLIENT; $UPDATE_SQL; CHECKPOINT"
lsn_w0=$(psql18 -c "SELECT pg_current_wal_lsn()")
t0=$(now)
as_pg "$PG18/pgbench" -h "$SOCK18" -p "$PORT18" -n -c 2 -j 2 -t "$PER_CLIENT" bench >"$OUT/logs/pgbench18.log" 2>&1
put pg18_pgbench_seconds "$(secs "$t0" "$(now)")"
put pg18_pgbench_tx "$(grep -E 'number of transactions actually processed' "$OUT/logs/pgbench18.log" | sed 's/.*: //')"
put pg18_pgbench_failed "$(grep -E 'number of failed transactions' "$OUT/logs/pgbench18.log" | sed 's/.*: //')"
put pg18_update "$(as_pg "$PG18/psql" -h "$SOCK18" -p "$PORT18" -X -A -t -v ON_ERROR_STOP=1 -d bench -c "$UPDATE_SQL")"
psql18 -c CHECKPOINT
lsn_w1=$(psql18 -c "SELECT pg_current_wal_lsn()")
put pg18_wal_of_writes "$(psql18 -c "SELECT pg_wal_lsn_diff('$lsn_w1', '$lsn_w0')::bigint")"
psql18 -c "SELECT pg_switch_wal()" >/dev/null
# Wait (at most 60 s) for the summarizer to have summarized up to the redo
# point of that CHECKPOINT (its summaries end at checkpoint redo points, so
# this is as far as it goes before the next checkpoint; pg_basebackup
# --incremental waits for the rest itself).
redo=$(psql18 -c "SELECT redo_lsn FROM pg_control_checkpoint()")
put pg18_checkpoint_redo "$redo"
caught=no
for _ in $(seq 1 120); do
  if [ "$(psql18 -c "SELECT summarized_lsn >= '$redo'::pg_lsn FROM pg_get_wal_summarizer_state()")" = t ]; then caught=yes; break; fi
  sleep 0.5
done
put pg18_summarizer_caught_up "$caught"
put pg18_summarizer_state "$(psql18 -c "SELECT summarized_tli || ' ' || summarized_lsn || ' ' || pending_lsn FROM pg_get_wal_summarizer_state()")"
put pg18_db_size_day2 "$(psql18 -c "SELECT pg_database_size('bench')")"

#######################################################################
# 4. Day 2: incremental into A, then at once a full into B
#######################################################################
log "day 2: dedupe --pg-incremental into A"
dbackup day2_incr_A "$A" dA --json backup --name pg --pg-incremental --command "$PRODUCER"
ID2=$(jq -r .snapshot "$OUT/json/day2_incr_A.json")
log "day 2: dedupe full into B (no writes since the incremental)"
dbackup day2_full_B "$B" dB --json backup --name pg --command "$PRODUCER"

# Raw streams of day 2, outside the repositories: the incremental against the
# day-1 manifest (read out of A, which restore does not change), then a full.
log "day 2: raw incremental stream (--incremental=day-1 manifest) | wc -c"
dA restore "$ID1" --path backup_manifest --stdout >"$OUT/day1.backup_manifest"
chown postgres "$OUT/day1.backup_manifest"
raw raw_day2_incr $PRODUCER --incremental="$OUT/day1.backup_manifest"
log "day 2: raw full stream | wc -c"
raw raw_day2_full $PRODUCER
dA --json snapshots >"$OUT/json/snapshots_A.json"
dB --json snapshots >"$OUT/json/snapshots_B.json"
put day2_incr_A_built_on "$(jq -r --arg id "$ID2" '.[] | select(.id == $id) | .metadata.postgresql.built_on // "?"' "$OUT/json/snapshots_A.json")"
put repoA_bytes "$(dusb "$A")"
put repoB_bytes "$(dusb "$B")"

#######################################################################
# 5. Verify the incremental snapshot
#######################################################################
# Source checksums only now: the scans set hint bits and write WAL, which
# must not get into the backups above.
log "checksums of the source tables"
table_sums psql18 >"$OUT/checksums-source.txt"
cat "$OUT/checksums-source.txt"
as_pg "$PG18/pg_ctl" -D "$OUT/pg18data" -m fast -w stop >/dev/null

log "restore the incremental snapshot $ID2 from A, pg_verifybackup, start, compare"
R=$OUT/restored-incr
t0=$(now)
dA restore "$ID2" --target "$R" >"$OUT/logs/restore_incr.log" 2>&1
put restore_incr_seconds "$(secs "$t0" "$(now)")"
chown -R postgres: "$R"
chmod 700 "$R"
put restored_bytes "$(dusb "$R")"
as_pg "$PG18/pg_verifybackup" "$R" >"$OUT/logs/verifybackup.log" 2>&1 || true
put pg_verifybackup "$(tail -1 "$OUT/logs/verifybackup.log")"
as_pg "$PG18/pg_ctl" -D "$R" -l "$OUT/logs/pg18-restored.log" -w -t 300 \
  -o "-p $PORT18R -k $SOCK18R -c listen_addresses='' -c summarize_wal=off" start >/dev/null
table_sums psql18r >"$OUT/checksums-restored.txt"
as_pg "$PG18/pg_ctl" -D "$R" -m fast -w stop >/dev/null
if cmp -s "$OUT/checksums-source.txt" "$OUT/checksums-restored.txt"; then
  put restored_tables_equal yes
else
  put restored_tables_equal NO
  diff "$OUT/checksums-source.txt" "$OUT/checksums-restored.txt" || true
fi

#######################################################################
# 6. pgBackRest 2.45 on PostgreSQL 15
#######################################################################
log "PG15: initdb, pgBackRest stanza, load (scale $SCALE)"
PBCONF=$OUT/pgbackrest.conf
cat >"$PBCONF" <<EOF
[global]
repo1-path=$OUT/pgbr-repo
repo1-retention-full=4
compress-type=zst
process-max=2
start-fast=y
log-path=$OUT/pgbr-log
lock-path=$OUT/pgbr-lock
log-level-console=info
log-level-file=detail

[bench]
pg1-path=$OUT/pg15data
pg1-socket-path=$SOCK15
pg1-port=$PORT15
EOF
chmod 644 "$PBCONF"
PBR() { as_pg pgbackrest --config="$PBCONF" --stanza=bench "$@"; }
as_pg "$PG15/initdb" -D "$OUT/pg15data" --data-checksums >"$OUT/logs/initdb15.log" 2>&1
cat >>"$OUT/pg15data/postgresql.conf" <<EOF
port = $PORT15
listen_addresses = ''
unix_socket_directories = '$SOCK15'
wal_level = replica
archive_mode = on
archive_command = 'pgbackrest --config=$PBCONF --stanza=bench archive-push %p'
EOF
as_pg "$PG15/pg_ctl" -D "$OUT/pg15data" -l "$OUT/logs/pg15.log" -w start >/dev/null
PBR stanza-create >"$OUT/logs/pgbr-stanza.log" 2>&1
PBR check >"$OUT/logs/pgbr-check.log" 2>&1
as_pg "$PG15/createdb" -h "$SOCK15" -p "$PORT15" bench
t0=$(now)
as_pg "$PG15/pgbench" -h "$SOCK15" -p "$PORT15" -i -q -s "$SCALE" bench >"$OUT/logs/load15.log" 2>&1
psql15 -c "$NOTES_SQL"
psql15 -c CHECKPOINT
put pg15_load_seconds "$(secs "$t0" "$(now)")"
put pg15_db_size_day1 "$(psql15 -c "SELECT pg_database_size('bench')")"

pbr_backup() { # KEY TYPE
  local before t0
  before=$(dusb "$OUT/pgbr-repo/backup")
  t0=$(now)
  PBR backup --type="$2" >"$OUT/logs/pgbr-$1.log" 2>&1
  put "pgbr_$1_wall" "$(secs "$t0" "$(now)")"
  put "pgbr_$1_backupdir_growth" "$(( $(dusb "$OUT/pgbr-repo/backup") - before ))"
  PBR info --output=json >"$OUT/json/pgbr-info-$1.json"
  local j=".[0].backup[-1]"
  put "pgbr_$1_label" "$(jq -r "$j.label" "$OUT/json/pgbr-info-$1.json")"
  put "pgbr_$1_db_size" "$(jq -r "$j.info.size" "$OUT/json/pgbr-info-$1.json")"
  put "pgbr_$1_db_delta" "$(jq -r "$j.info.delta" "$OUT/json/pgbr-info-$1.json")"
  put "pgbr_$1_repo_size" "$(jq -r "$j.info.repository.size" "$OUT/json/pgbr-info-$1.json")"
  put "pgbr_$1_repo_delta" "$(jq -r "$j.info.repository.delta" "$OUT/json/pgbr-info-$1.json")"
  put "pgbr_$1_archive_bytes" "$(dusb "$OUT/pgbr-repo/archive")"
  grep -E 'backup size|file total' "$OUT/logs/pgbr-$1.log" | sed 's/^/    log: /' || true
}

log "pgBackRest full"
pbr_backup full full

log "PG15 day of writes: pgbench -n -c 2 -j 2 -t $PER_CLIENT; update; CHECKPOINT"
t0=$(now)
as_pg "$PG15/pgbench" -h "$SOCK15" -p "$PORT15" -n -c 2 -j 2 -t "$PER_CLIENT" bench >"$OUT/logs/pgbench15.log" 2>&1
put pg15_pgbench_seconds "$(secs "$t0" "$(now)")"
put pg15_pgbench_tx "$(grep -E 'number of transactions actually processed' "$OUT/logs/pgbench15.log" | sed 's/.*: //')"
put pg15_update "$(as_pg "$PG15/psql" -h "$SOCK15" -p "$PORT15" -X -A -t -v ON_ERROR_STOP=1 -d bench -c "$UPDATE_SQL")"
psql15 -c CHECKPOINT
put pg15_db_size_day2 "$(psql15 -c "SELECT pg_database_size('bench')")"

log "pgBackRest incr"
pbr_backup incr incr
PBR info >"$OUT/logs/pgbr-info.txt" 2>&1
as_pg "$PG15/pg_ctl" -D "$OUT/pg15data" -m fast -w stop >/dev/null
put pgbr_repo_bytes "$(dusb "$OUT/pgbr-repo")"

#######################################################################
# 7. The table
#######################################################################
# shellcheck disable=SC1090
. "$RES"
fmt() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
g() { local n="$1_$2"; printf '%s' "${!n}"; }
ratio=$(awk -v a="$day2_incr_A_new_bytes_stored" -v b="$day2_full_B_new_bytes_stored" 'BEGIN { printf "%.3f", a / b }')
pbratio=$(awk -v a="$pgbr_incr_repo_delta" -v b="$pgbr_full_repo_delta" 'BEGIN { printf "%.3f", a / b }')
{
  echo "# Full vs incremental backups of the same day: dedupe (PG 18) and pgBackRest 2.45 (PG 15)"
  echo
  echo "pgbench scale $SCALE (+ notes, $TEXT_ROWS rows); day of writes: $pg18_pgbench_tx transactions (PG18), $pg15_pgbench_tx (PG15), \`pgbench -n -c 2 -j 2 -t $PER_CLIENT\`, then \`$UPDATE_SQL\` and CHECKPOINT. $(date -u '+%F %H:%M UTC'), \`$0\`."
  echo
  echo "| step | stream bytes | seconds | bytes read from server | stored bytes |"
  echo "|---|---:|---:|---:|---:|"
  echo "| dedupe PG18 day-1 full (A) | $(fmt "$day1_A_bytes_read") | $day1_A_wall | $(fmt "$day1_A_bytes_read") | $(fmt "$day1_A_new_bytes_stored") |"
  echo "| dedupe PG18 day-2 incremental (A) | $(fmt "$day2_incr_A_bytes_read") | $day2_incr_A_wall | $(fmt "$day2_incr_A_bytes_read") | $(fmt "$day2_incr_A_new_bytes_stored") |"
  echo "| dedupe PG18 day-2 full (B) | $(fmt "$day2_full_B_bytes_read") | $day2_full_B_wall | $(fmt "$day2_full_B_bytes_read") | $(fmt "$day2_full_B_new_bytes_stored") |"
  echo "| pgBackRest PG15 full | n/a | $pgbr_full_wall | $(fmt "$pgbr_full_db_delta") | $(fmt "$pgbr_full_repo_delta") |"
  echo "| pgBackRest PG15 incr | n/a | $pgbr_incr_wall | $(fmt "$pgbr_incr_db_delta") | $(fmt "$pgbr_incr_repo_delta") |"
  echo
  echo "**dedupe: incremental stored / day-2 full stored = $ratio** (pgBackRest: incr repo delta / full repo delta = $pbratio)."
  echo
  echo "Columns. dedupe: stream bytes = \`bytes_read\` of its JSON (what it read of pg_basebackup's tar stream; the server sends what it reads,"
  echo "so it is also the bytes-read column); seconds = wall time of the whole \`dedupe backup --command\` (pg_basebackup + ingest);"
  echo "stored = \`new_bytes_stored\`. pgBackRest: bytes read = \`info.delta\` (database bytes copied), stored = \`info.repository.delta\`"
  echo "(\`pgbackrest info --output=json\`); its WAL archive is extra (below)."
  echo "dedupe's \`bytes_read\` counts the tar members' data, not their 512-byte headers and padding; the exact tar stream"
  echo "length is that of the bare pg_basebackup runs below (separate runs of the same state, about 0.7 MB more for a full)."
  echo
  echo "## More figures"
  echo
  echo "| dedupe | bytes (logical) | bytes_read | new_bytes | new_bytes_stored | delta_bytes | JSON seconds | wall s | repo dir growth (du -sb) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for k in day1_A day1_B day2_incr_A day2_full_B; do
    echo "| $k | $(fmt "$(g $k bytes)") | $(fmt "$(g $k bytes_read)") | $(fmt "$(g $k new_bytes)") | $(fmt "$(g $k new_bytes_stored)") | $(fmt "$(g $k delta_bytes)") | $(g $k seconds) | $(g $k wall) | $(fmt "$(g $k repo_growth)") |"
  done
  echo
  echo "| bare pg_basebackup to \`wc -c\` (outside dedupe) | bytes | seconds |"
  echo "|---|---:|---:|"
  echo "| day-1 full (taken right after dedupe's day-1 full and the copy into B) | $(fmt "$raw_day1_full_bytes") | $raw_day1_full_seconds |"
  echo "| day-2 incremental vs the day-1 manifest (after dedupe's day-2 backups) | $(fmt "$raw_day2_incr_bytes") | $raw_day2_incr_seconds |"
  echo "| day-2 full (after that) | $(fmt "$raw_day2_full_bytes") | $raw_day2_full_seconds |"
  echo
  echo "| pgBackRest | database size | backup size (copied) | repo size | repo delta (stored) | backup dir growth (du -sb) | WAL archive after (du -sb) | wall s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  echo "| full $pgbr_full_label | $(fmt "$pgbr_full_db_size") | $(fmt "$pgbr_full_db_delta") | $(fmt "$pgbr_full_repo_size") | $(fmt "$pgbr_full_repo_delta") | $(fmt "$pgbr_full_backupdir_growth") | $(fmt "$pgbr_full_archive_bytes") | $pgbr_full_wall |"
  echo "| incr $pgbr_incr_label | $(fmt "$pgbr_incr_db_size") | $(fmt "$pgbr_incr_db_delta") | $(fmt "$pgbr_incr_repo_size") | $(fmt "$pgbr_incr_repo_delta") | $(fmt "$pgbr_incr_backupdir_growth") | $(fmt "$pgbr_incr_archive_bytes") | $pgbr_incr_wall |"
  echo
  echo "Other: PG18 database size day 1 $(fmt "$pg18_db_size_day1"), day 2 $(fmt "$pg18_db_size_day2"); WAL of the PG18 writes $(fmt "$pg18_wal_of_writes");"
  echo "PG15 database size day 1 $(fmt "$pg15_db_size_day1"), day 2 $(fmt "$pg15_db_size_day2"). pgbench: PG18 ${pg18_pgbench_seconds} s, PG15 ${pg15_pgbench_seconds} s."
  echo "WAL summarizer caught up with the CHECKPOINT after the writes (redo $pg18_checkpoint_redo) before day 2: $pg18_summarizer_caught_up (tli, summarized_lsn, pending_lsn: $pg18_summarizer_state)."
  echo "Load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; other work on the machine shows here)."
  echo "Repositories at the end: A $(fmt "$repoA_bytes"), B $(fmt "$repoB_bytes"), pgBackRest $(fmt "$pgbr_repo_bytes") bytes."
  echo "Incremental snapshot $day2_incr_A_snapshot built on $day2_incr_A_built_on (day-1 $day1_A_snapshot);"
  echo "restored in ${restore_incr_seconds} s ($(fmt "$restored_bytes") bytes); pg_verifybackup: \"$pg_verifybackup\"; tables equal to the source: $restored_tables_equal."
  echo
  echo "Per-table checksums (table|rows|md5 of sorted row md5s), source after day 2:"
  echo '```'
  cat "$OUT/checksums-source.txt"
  echo '```'
} >"$OUT/figures.md"

log "done"
cat "$OUT/figures.md"
