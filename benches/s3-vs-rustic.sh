#!/usr/bin/env bash
# Object-storage figures on the mariadb-sysbench workload, in one run:
# dedupe on local disk, dedupe on a loopback S3 server, rustic on the same
# server (its opendal S3 backend), and both again with DELAY_MS [20] added to
# every request by a proxy (benches/tools/s3_proxy.rs).
#
# The machines are noisy, and on 2 cores the server, the proxy and the tool
# share the CPU; so what is compared is measured side by side: each round
# backs up into fresh repositories with dedupe, rustic, dedupe +delay and
# rustic +delay in a row, and restores alternate between the direct path and
# the delayed one on the same repository. Compare ratios within one run.
#
#   benches/s3-vs-rustic.sh [WORKLOAD_DIR]
#
# WORKLOAD_DIR holds day1.xbs and day2.xbs from ../shared/workloads/mariadb-sysbench.sh
# (made there when missing). Needs rustic (cargo install rustic-rs) and the
# server: S3_SERVER=moto [default] (pip install 'moto[server]', keeps objects in
# memory) or S3_SERVER=s3s-fs (cargo install s3s-fs@0.14.1 --features binary;
# its ranged reads slow down with the offset, so restores measure the server).
# ROUNDS [3] backup rounds (who goes first alternates), RESTORES [3] restore pairs.
# Each step prints seconds, MB/s of the input, peak RSS and the repository's size.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${1:-/tmp/dedupe-workload}
OUT=${BENCH_DIR:-/tmp/dedupe-s3-bench}
DELAY_MS=${DELAY_MS:-20}
ROUNDS=${ROUNDS:-3}
RESTORES=${RESTORES:-3}
[ -f "$WL/day1.xbs" ] || bash ../shared/workloads/mariadb-sysbench.sh "$WL"
export PATH="$HOME/.cargo/bin:$PATH"
command -v rustic >/dev/null || { echo "rustic missing: cargo install rustic-rs" >&2; exit 1; }
S3_SERVER=${S3_SERVER:-moto}
command -v "${S3_SERVER/moto/moto_server}" >/dev/null || { echo "$S3_SERVER missing (see the top of this script)" >&2; exit 1; }
cargo build --release -p dedupe-cli >/dev/null && cargo build --release -p dedupe-suite --example s3-proxy >/dev/null
DEDUPE=$PWD/target/release/dedupe
PROXY=$PWD/target/release/examples/s3-proxy
rm -rf "$OUT"; mkdir -p "$OUT/s3/bench"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "$S3_SERVER" = moto ]; then
  moto_server -H 127.0.0.1 -p "$PORT" >"$OUT/s3.log" 2>&1 &
else
  s3s-fs --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key benchsecret "$OUT/s3" >"$OUT/s3.log" 2>&1 &
fi
S3PID=$!
"$PROXY" "$PORT" "$DELAY_MS" >"$OUT/proxy.port" &
PROXYPID=$!
trap 'kill $S3PID $PROXYPID 2>/dev/null' EXIT
sleep 3
SLOW=$(cat "$OUT/proxy.port")
s3py() { # python3 with `c`, a boto3 client of the server
  python3 -c "import boto3,sys; c=boto3.client('s3', endpoint_url='http://127.0.0.1:$PORT', aws_access_key_id='bench', aws_secret_access_key='benchsecret', region_name='us-east-1'); $1"
}
s3py "c.create_bucket(Bucket='bench')" 2>/dev/null || true

export DEDUPE_PASSWORD=bench RUSTIC_PASSWORD=bench
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
size() { stat -c %s "$1"; }
printf '%-8s %-12s %-26s %8s %9s %9s %10s\n' tool store step seconds MB/s "RSS MiB" "repo MB"
step() { # tool store label input_bytes repo_dir command...
  local tool=$1 store=$2 label=$3 bytes=$4 repo=$5; shift 5
  /usr/bin/time -o "$OUT/time" -f "%e %M" "$@" >/dev/null 2>"$OUT/stderr" || { cat "$OUT/stderr" >&2; exit 1; }
  local t; t=$(tail -1 "$OUT/time")
  awk -v tool="$tool" -v st="$store" -v l="$label" -v s="${t% *}" -v b="$bytes" -v k="${t#* }" -v r="$(repo_bytes "$repo")" \
    'BEGIN { printf "%-8s %-12s %-26s %8.2f %9.0f %9.0f %10.0f\n", tool, st, l, s, b/s/1e6, k/1024, r/1e6 }'
}
repo_bytes() { # a directory, or s3:<prefix> in the bench bucket
  case $1 in
    s3:*) s3py "p=c.get_paginator('list_objects_v2'); print(sum(o['Size'] for pg in p.paginate(Bucket='bench', Prefix='${1#s3:}/') for o in pg.get('Contents', [])))" ;;
    *) du -sb "$1" | cut -f1 ;;
  esac
}
drop() { # s3:<prefix>: its objects deleted (the server keeps them in memory)
  s3py "p=c.get_paginator('list_objects_v2')
for pg in p.paginate(Bucket='bench', Prefix='${1#s3:}/'):
    ks=[{'Key': o['Key']} for o in pg.get('Contents', [])]
    ks and c.delete_objects(Bucket='bench', Delete={'Objects': ks})"
}
D1=$(size "$WL/day1.xbs"); D2=$(size "$WL/day2.xbs")
cat "$WL/day1.xbs" "$WL/day2.xbs" >/dev/null   # every step reads from the page cache

endpoint() { # port-or-empty: where dedupe and rustic send their requests
  if [ -n "$1" ]; then export AWS_ENDPOINT_URL=http://127.0.0.1:$1; else unset AWS_ENDPOINT_URL; fi
}

dedupe_backups() { # store-label repo port-or-empty objects-dir
  local label=$1 repo=$2 dir=$4
  endpoint "$3"
  export DEDUPE_CACHE_DIR=$OUT/cache-${repo//[^a-z0-9]/_}
  "$DEDUPE" --repo "$repo" init -q
  step dedupe "$label" "backup day1 (new)" "$D1" "$dir" sh -c "'$DEDUPE' --repo '$repo' backup -q --name db - < '$WL/day1.xbs'"
  step dedupe "$label" "backup day2" "$D2" "$dir" sh -c "'$DEDUPE' --repo '$repo' backup -q --name db - < '$WL/day2.xbs'"
}

dedupe_restore() { # store-label repo port-or-empty objects-dir: day2 restored on a host with nothing cached
  local label=$1 repo=$2 dir=$4
  endpoint "$3"
  export DEDUPE_CACHE_DIR=$OUT/restore-cache
  rm -rf "$DEDUPE_CACHE_DIR"
  local snap; snap=$("$DEDUPE" --repo "$repo" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[1]["id"])')
  rm -rf "$DEDUPE_CACHE_DIR"
  step dedupe "$label" "restore day2 --stdout" "$D2" "$dir" sh -c "'$DEDUPE' --repo '$repo' restore $snap --stdout > /dev/null"
}

rustic_profile() { # prefix port: the profile's path (rustic takes opendal's options from a profile only)
  local prof=$OUT/rustic-$1-$2
  cat > "$prof.toml" <<TOML
[repository]
repository = "opendal:s3"
password = "bench"
cache-dir = "$OUT/rustic-cache-$1"
[repository.options]
bucket = "bench"
root = "/$1"
endpoint = "http://127.0.0.1:$2"
access_key_id = "bench"
secret_access_key = "benchsecret"
region = "us-east-1"
TOML
  echo "$prof"
}

rustic_backups() { # store-label prefix port
  local label=$1 prefix=$2
  local r; r="rustic -P $(rustic_profile "$prefix" "$3") --no-progress"
  $r init >/dev/null 2>&1
  step rustic "$label" "backup day1 (new)" "$D1" "s3:$prefix" sh -c "$r backup --force --stdin-filename day.xbs - < '$WL/day1.xbs'"
  step rustic "$label" "backup day2" "$D2" "s3:$prefix" sh -c "$r backup --force --stdin-filename day.xbs - < '$WL/day2.xbs'"
}

rustic_dump() { # store-label prefix port
  local label=$1 prefix=$2
  local r; r="rustic -P $(rustic_profile "$prefix" "$3") --no-progress"
  rm -rf "$OUT/rustic-cache-$prefix"   # a restore host: nothing cached
  local snap; snap=$($r snapshots --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); s=[x for g in d for x in (g[1] if isinstance(g,list) else g["snapshots"])]; s.sort(key=lambda x: x["time"]); print(s[1]["id"])')
  rm -rf "$OUT/rustic-cache-$prefix"
  step rustic "$label" "dump day2 (restore)" "$D2" "s3:$prefix" sh -c "$r dump $snap:/day.xbs > /dev/null"
}

mkdir -p "$OUT/local"
dedupe_backups "local disk" "$OUT/local/repo" "" "$OUT/local"
dedupe_restore "local disk" "$OUT/local/repo" "" "$OUT/local"
FAST="s3" SLOWL="s3 +${DELAY_MS}ms"
# A server that has never held a gigabyte is slower at its first one (its
# allocator grows): warm it up, unmeasured, so the first round is fair.
endpoint "$PORT"; DEDUPE_CACHE_DIR=$OUT/warmup-cache "$DEDUPE" --repo s3://bench/warmup init -q
DEDUPE_CACHE_DIR=$OUT/warmup-cache "$DEDUPE" --repo s3://bench/warmup backup -q --name db - < "$WL/day1.xbs"
drop s3:warmup
for i in $(seq 1 "$ROUNDS"); do
  # Who goes first alternates, so neither tool always meets the server after the other.
  if [ $((i % 2)) = 1 ]; then
    dedupe_backups "$FAST" "s3://bench/dedupe-$i" "$PORT" "s3:dedupe-$i"
    rustic_backups "$FAST" "rustic-$i" "$PORT"
    dedupe_backups "$SLOWL" "s3://bench/dedupe-slow-$i" "$SLOW" "s3:dedupe-slow-$i"
    rustic_backups "$SLOWL" "rustic-slow-$i" "$SLOW"
  else
    rustic_backups "$FAST" "rustic-$i" "$PORT"
    dedupe_backups "$FAST" "s3://bench/dedupe-$i" "$PORT" "s3:dedupe-$i"
    rustic_backups "$SLOWL" "rustic-slow-$i" "$SLOW"
    dedupe_backups "$SLOWL" "s3://bench/dedupe-slow-$i" "$SLOW" "s3:dedupe-slow-$i"
  fi
  drop "s3:dedupe-slow-$i"; drop "s3:rustic-slow-$i"
  [ "$i" = 1 ] || { drop "s3:dedupe-$i"; drop "s3:rustic-$i"; }
done
# Restores read the first round's repositories, directly and through the proxy in turn.
for _ in $(seq 1 "$RESTORES"); do
  dedupe_restore "$FAST" "s3://bench/dedupe-1" "$PORT" "s3:dedupe-1"
  dedupe_restore "$SLOWL" "s3://bench/dedupe-1" "$SLOW" "s3:dedupe-1"
done
rustic_dump "$FAST" rustic-1 "$PORT"
rustic_dump "$SLOWL" rustic-1 "$SLOW"
