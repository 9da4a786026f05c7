#!/usr/bin/env bash
# The index at scale: what a command costs in a repository whose index holds
# ENTRIES records, without writing that much data (real, sealed index objects
# naming synthetic packs: benches/tools/index_scale.rs).
#
#   benches/index-scale.sh [ENTRIES]      # default 100000000 (10^8): ~10 GB of disk
#                                         # 1000000000 (10^9) needs ~100 GB
# Environment: WORK [/var/tmp/dedupe-index-scale], DEDUPE_BIN [target/release/dedupe].
#
# Prints, each with wall time and peak RSS (/usr/bin/time):
#   - generating the index objects;
#   - the first command (builds the cache from every index object);
#   - `wal push` of one 16 MiB segment, five times, warm cache;
#   - opening the index and lookups per second, hits and misses;
#   - a first backup of 1 GiB of new data, beside the same into an empty repository;
#   - prune (marking, then deleting that first backup's packs: every index
#     object read, the small ones and those naming a deleted pack rewritten),
#     then `wal push` after it (the cache follows the compaction record);
#   - check (it reads every index object; the synthetic packs are missing, so
#     it reports them and exits non-zero, which is expected here).
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${1:-100000000}
WORK=${WORK:-/var/tmp/dedupe-index-scale}
BIN=${DEDUPE_BIN:-$PWD/target/release/dedupe}
cargo build --release --quiet --locked --example index-scale
TOOL=$PWD/target/release/examples/index-scale
# The default Argon2id cost, as a DBA gets it: every command pays it once.
export DEDUPE_PASSWORD=bench
unset DEDUPE_KDF_MEMORY_KIB
rm -rf "$WORK"; mkdir -p "$WORK"
BIG=$WORK/repo EMPTY=$WORK/empty

# Runs a command; prints "<label>: <seconds> s, <peak RSS> MiB".
measure() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  report "$label"
}
report() {
  read -r secs kib < <(tail -1 "$WORK/time")   # after "Command exited with …" if it failed
  printf '%-44s %8.2f s %8d MiB\n' "$1:" "$secs" $((kib / 1024))
}

"$BIN" --repo "$BIG" --cache-dir "$WORK/cache" init -q
"$BIN" --repo "$EMPTY" --cache-dir "$WORK/cache-empty" init -q
echo "entries: $ENTRIES, binary: $BIN ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
measure "generate the index objects" "$TOOL" generate "$BIG" "$ENTRIES"
echo "  index objects: $(ls "$BIG/index" | wc -l), $(du -sh "$BIG/index" | cut -f1)"
measure "first command (builds the cache): stats" "$BIN" --repo "$BIG" --cache-dir "$WORK/cache" stats
echo "  cache: $(du -sh "$WORK/cache" | cut -f1)"
measure "stats again (warm)" "$BIN" --repo "$BIG" --cache-dir "$WORK/cache" stats

head -c $((16 << 20)) /dev/urandom >"$WORK/wal"
for i in 1 2 3 4 5; do
  seg=$(printf '0000000100000000000000%02X' "$i")
  cp "$WORK/wal" "$WORK/$seg"
  printf '%s\n' "$(date +%N)" >>"$WORK/$seg"   # each segment its own content
  truncate -s $((16 << 20)) "$WORK/$seg"
  measure "wal push $seg" "$BIN" --repo "$BIG" --cache-dir "$WORK/cache" wal push --name pg "$WORK/$seg"
done
measure "wal push into the empty repository" "$BIN" --repo "$EMPTY" --cache-dir "$WORK/cache-empty" \
  wal push --name pg "$WORK/000000010000000000000001"

measure "open + 10^6 hits + 10^6 misses" "$TOOL" lookups "$BIG" "$WORK/cache" "$ENTRIES"
echo "  $(cat "$WORK/out")"

# Twice each, alternating (the machine is noisy), each round with data new to both.
for round in 1 2; do
  head -c $((1 << 30)) /dev/urandom >"$WORK/new"
  measure "backup 1 GiB of new data, empty repository ($round)" sh -c \
    "'$BIN' --repo '$EMPTY' --cache-dir '$WORK/cache-empty' backup --name x - <'$WORK/new'"
  measure "backup 1 GiB of new data, $ENTRIES entries ($round)" sh -c \
    "'$BIN' --repo '$BIG' --cache-dir '$WORK/cache' backup --name x - <'$WORK/new'"
done
echo "  cache segments: $(grep -c '^seg-' "$WORK/cache"/*/index/segments 2>/dev/null || echo '-')"

# Only the newest backup of x kept: the first one's packs are marked, then deleted.
"$BIN" --repo "$BIG" --cache-dir "$WORK/cache" forget --name x --keep-last 1 >/dev/null
sleep 6
measure "prune (marks)" "$BIN" --repo "$BIG" --cache-dir "$WORK/cache" prune --keep-delete 5s
sleep 6
measure "prune (deletes, compacts)" "$BIN" --repo "$BIG" --cache-dir "$WORK/cache" --json prune --keep-delete 5s
echo "  $(tr -d '\n ' <"$WORK/out" | grep -o '"packs_deleted":[0-9]*,"bytes_freed":[0-9]*'), compaction records: $(ls "$BIG/compactions" | wc -l)"
seg=0000000100000000000000F0
cp "$WORK/wal" "$WORK/$seg"; date +%N >>"$WORK/$seg"; truncate -s $((16 << 20)) "$WORK/$seg"
measure "wal push after the prune" "$BIN" --repo "$BIG" --cache-dir "$WORK/cache" wal push --name pg "$WORK/$seg"
/usr/bin/time -f "%e %M" -o "$WORK/time" "$BIN" --repo "$BIG" --cache-dir "$WORK/cache" check >"$WORK/out" 2>&1 || true
report "check (synthetic packs reported missing)"
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
