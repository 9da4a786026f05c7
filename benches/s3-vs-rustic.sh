#!/usr/bin/env bash
# Object-storage figures on the mariadb-sysbench workload, in one run:
# dedupe on local disk, dedupe on a loopback S3 server (s3s-fs), rustic on
# the same server (its opendal S3 backend), then dedupe and rustic again
# with DELAY_MS [20] added to every request by a proxy (benches/tools/s3_proxy.rs).
# The machines are noisy: compare ratios within one run.
#
#   benches/s3-vs-rustic.sh [WORKLOAD_DIR]
#
# WORKLOAD_DIR holds day1.xbs and day2.xbs from ../shared/workloads/mariadb-sysbench.sh
# (made there when missing). Needs rustic (cargo install rustic-rs) and the
# server: S3_SERVER=moto [default] (pip install 'moto[server]', keeps objects in
# memory) or S3_SERVER=s3s-fs (cargo install s3s-fs@0.14.1 --features binary;
# its ranged reads slow down with the offset, so restores measure the server).
# Each step prints seconds, MB/s of the input, peak RSS and the repository's size.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${1:-/tmp/dedupe-workload}
OUT=${BENCH_DIR:-/tmp/dedupe-s3-bench}
DELAY_MS=${DELAY_MS:-20}
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
python3 -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$PORT', aws_access_key_id='bench', aws_secret_access_key='benchsecret', region_name='us-east-1').create_bucket(Bucket='bench')" 2>/dev/null || true

export DEDUPE_PASSWORD=bench RUSTIC_PASSWORD=bench
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
size() { stat -c %s "$1"; }
printf '%-8s %-16s %-24s %8s %9s %9s %10s\n' tool store step seconds MB/s "RSS MiB" "repo MB"
step() { # tool store label input_bytes repo_dir command...
  local tool=$1 store=$2 label=$3 bytes=$4 repo=$5; shift 5
  /usr/bin/time -o "$OUT/time" -f "%e %M" "$@" >/dev/null 2>"$OUT/stderr" || { cat "$OUT/stderr" >&2; exit 1; }
  local t; t=$(tail -1 "$OUT/time")
  awk -v tool="$tool" -v st="$store" -v l="$label" -v s="${t% *}" -v b="$bytes" -v k="${t#* }" -v r="$(repo_bytes "$repo")" \
    'BEGIN { printf "%-8s %-16s %-24s %8.2f %9.0f %9.0f %10.0f\n", tool, st, l, s, b/s/1e6, k/1024, r/1e6 }'
}
repo_bytes() { # a directory, or s3:<prefix> in the bench bucket
  case $1 in
    s3:*) python3 -c "import boto3,sys; c=boto3.client('s3', endpoint_url='http://127.0.0.1:$PORT', aws_access_key_id='bench', aws_secret_access_key='benchsecret', region_name='us-east-1'); p=c.get_paginator('list_objects_v2'); print(sum(o['Size'] for pg in p.paginate(Bucket='bench', Prefix='${1#s3:}/') for o in pg.get('Contents', [])))" ;;
    *) du -sb "$1" | cut -f1 ;;
  esac
}
D1=$(size "$WL/day1.xbs"); D2=$(size "$WL/day2.xbs")
cat "$WL/day1.xbs" "$WL/day2.xbs" >/dev/null   # every step reads from the page cache

dedupe_run() { # store-label repo endpoint-port-or-empty objects-dir
  local label=$1 repo=$2 port=$3 dir=$4
  export DEDUPE_CACHE_DIR=$OUT/cache-$label
  if [ -n "$port" ]; then export AWS_ENDPOINT_URL=http://127.0.0.1:$port; fi
  "$DEDUPE" --repo "$repo" init -q
  step dedupe "$label" "backup day1 (new)" "$D1" "$dir" sh -c "'$DEDUPE' --repo '$repo' backup -q --name db - < '$WL/day1.xbs'"
  step dedupe "$label" "backup day2" "$D2" "$dir" sh -c "'$DEDUPE' --repo '$repo' backup -q --name db - < '$WL/day2.xbs'"
  rm -rf "$DEDUPE_CACHE_DIR"   # a restore host: nothing cached
  local snap; snap=$("$DEDUPE" --repo "$repo" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[1]["id"])')
  rm -rf "$DEDUPE_CACHE_DIR"
  step dedupe "$label" "restore day2 --stdout" "$D2" "$dir" sh -c "'$DEDUPE' --repo '$repo' restore $snap --stdout > /dev/null"
  unset AWS_ENDPOINT_URL
}

rustic_run() { # store-label endpoint-port prefix
  local label=$1 port=$2 prefix=$3
  local dir=s3:$prefix cache=$OUT/rustic-cache-$prefix prof=$OUT/rustic-$prefix
  # rustic takes opendal's options from a profile only.
  cat > "$prof.toml" <<TOML
[repository]
repository = "opendal:s3"
password = "bench"
cache-dir = "$cache"
[repository.options]
bucket = "bench"
root = "/$prefix"
endpoint = "http://127.0.0.1:$port"
access_key_id = "bench"
secret_access_key = "benchsecret"
region = "us-east-1"
TOML
  local r="rustic -P $prof --no-progress"
  $r init >/dev/null 2>&1
  step rustic "$label" "backup day1 (new)" "$D1" "$dir" sh -c "$r backup --force --stdin-filename day.xbs - < '$WL/day1.xbs'"
  step rustic "$label" "backup day2" "$D2" "$dir" sh -c "$r backup --force --stdin-filename day.xbs - < '$WL/day2.xbs'"
  rm -rf "$cache"   # a restore host: nothing cached
  local snap; snap=$($r snapshots --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); s=[x for g in d for x in (g[1] if isinstance(g,list) else g["snapshots"])]; s.sort(key=lambda x: x["time"]); print(s[1]["id"])')
  rm -rf "$cache"
  step rustic "$label" "dump day2 (restore)" "$D2" "$dir" sh -c "$r dump $snap:/day.xbs > /dev/null"
}

mkdir -p "$OUT/local"
dedupe_run "local disk" "$OUT/local/repo" "" "$OUT/local"
dedupe_run "s3" "s3://bench/dedupe" "$PORT" "s3:dedupe"
rustic_run "s3" "$PORT" rustic
dedupe_run "s3 +${DELAY_MS}ms" "s3://bench/dedupe-slow" "$SLOW" "s3:dedupe-slow"
rustic_run "s3 +${DELAY_MS}ms" "$SLOW" rustic-slow
