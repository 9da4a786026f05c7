#!/usr/bin/env bash
# Time to the first query: `restore --mount --writable` (instant restore)
# beside a full `restore --target` of the same snapshot, each followed by
# the database's own recovery and a server start, then the same query on
# both and table checksums compared.
#
#   XBS=/tmp/dedupe-workload/day2.xbs benches/instant-restore.sh        # MariaDB (mariadb-sysbench.sh)
#   PGTAR=/tmp/dedupe-pg-workload/base2.tar benches/instant-restore.sh  # PostgreSQL (postgres-pgbench.sh)
#
# Run as root (the PostgreSQL server runs as `postgres`). Page cache is
# dropped before each restore. BENCH_DIR (default /tmp/dedupe-instant) holds
# the repository and both copies.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
D=${DEDUPE:-$here/target/release/dedupe}
B=${BENCH_DIR:-/tmp/dedupe-instant}
export DEDUPE_PASSWORD=bench
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
wait_for() { # command, seconds
  local t0; t0=$(now)
  until eval "$1" >/dev/null 2>&1; do
    if [ "$(echo "$(now) - $t0 > $2" | bc)" = 1 ]; then echo "timed out: $1" >&2; return 1; fi
    sleep 0.05
  done
}

rm -rf "$B" && mkdir -p "$B" && chmod 755 "$B"
mkdir -p "$B/logs" && chown postgres "$B/logs" 2>/dev/null || true
cd "$B"
"$D" init --repo repo >/dev/null 2>&1
cleanup() {
  for s in srv-mount srv-full; do
    [ -S "$B/$s/sock" ] && mariadb-admin --no-defaults --socket="$B/$s/sock" -uroot shutdown 2>/dev/null || true
    [ -f "$B/$s/data/postmaster.pid" ] && su postgres -s /bin/bash -c "$PGBIN/pg_ctl -D $B/$s/data -m immediate stop" >/dev/null 2>&1 || true
  done
  [ -f "$B/mnt/postmaster.pid" ] && su postgres -s /bin/bash -c "$PGBIN/pg_ctl -D $B/mnt -m immediate stop" >/dev/null 2>&1 || true
  fusermount3 -u -z "$B/mnt" 2>/dev/null || true
}
trap cleanup EXIT

if [ -n "${XBS:-}" ]; then
  "$D" backup --repo repo --name maria - <"$XBS" 2>&1 | tail -1
  maria_start() { # datadir, dir
    mkdir -p "$2/tmp"
    mariadbd --no-defaults --user=root --innodb-buffer-pool-size=128M --skip-networking \
      --datadir="$1" --socket="$2/sock" --tmpdir="$2/tmp" --pid-file="$2/pid" --log-error="$2/err" >/dev/null 2>&1 &
    wait_for "mariadb --no-defaults --socket=$2/sock -uroot -e 'select 1'" 120
  }
  q="select c from sbtest.sbtest1 where id = 123457"
  scan="select count(*) from sbtest.sbtest1"
  tables=$(for i in $(seq 1 32); do echo "sbtest.sbtest$i"; done | paste -sd,)

  drop; mkdir -p mnt; t0=$(now)
  "$D" restore latest --repo repo --mount mnt --writable 2>mount.err &
  wait_for "test -f mnt/xtrabackup_checkpoints" 60
  t1=$(now); mariabackup --prepare --target-dir=mnt >prepare-mount.log 2>&1; t2=$(now)
  maria_start "$B/mnt" "$B/srv-mount"; mariadb --no-defaults --socket=srv-mount/sock -uroot -N -e "$q" >/dev/null; t3=$(now)
  echo "instant: mount $(echo "$t1-$t0" | bc) s, prepare $(echo "$t2-$t1" | bc) s, start + first query $(echo "$t3-$t2" | bc) s: first query after $(echo "$t3-$t0" | bc) s"
  t4=$(now); mariadb --no-defaults --socket=srv-mount/sock -uroot -N -e "$scan" >/dev/null; echo "instant: then a scan of sbtest1 $(since "$t4") s"
  mariadb --no-defaults --socket=srv-mount/sock -uroot -N -e "checksum table $tables extended" 2>/dev/null >ck-mount || true
  mariadb-admin --no-defaults --socket=srv-mount/sock -uroot shutdown; sleep 1
  echo "overlay after prepare, start, checksums and shutdown: $(du -sh mnt.overlay | cut -f1)"
  fusermount3 -u mnt; wait

  drop; t0=$(now)
  "$D" restore latest --repo repo --target full 2>/dev/null; t1=$(now)
  mariabackup --prepare --target-dir=full >prepare-full.log 2>&1; t2=$(now)
  maria_start "$B/full" "$B/srv-full"; mariadb --no-defaults --socket=srv-full/sock -uroot -N -e "$q" >/dev/null; t3=$(now)
  echo "full:    restore $(echo "$t1-$t0" | bc) s, prepare $(echo "$t2-$t1" | bc) s, start + first query $(echo "$t3-$t2" | bc) s: first query after $(echo "$t3-$t0" | bc) s"
  t4=$(now); mariadb --no-defaults --socket=srv-full/sock -uroot -N -e "$scan" >/dev/null; echo "full:    then a scan of sbtest1 $(since "$t4") s"
  mariadb --no-defaults --socket=srv-full/sock -uroot -N -e "checksum table $tables extended" 2>/dev/null >ck-full || true
  mariadb-admin --no-defaults --socket=srv-full/sock -uroot shutdown
  cmp ck-mount ck-full && echo "checksums of $(wc -l <ck-full) tables equal"
fi

if [ -n "${PGTAR:-}" ]; then
  PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
  rm -rf full mnt ck-mount ck-full
  "$D" backup --repo repo --name pg - <"$PGTAR" 2>&1 | tail -1
  pg_start() { # datadir
    su postgres -s /bin/bash -c "$PGBIN/pg_ctl -D $1 -o '-c listen_addresses= -c unix_socket_directories=$1 -c port=5499' -l $B/logs/pg-$(basename "$1").log -w -t 300 start" >/dev/null
  }
  psql_in() { su postgres -s /bin/bash -c "$PGBIN/psql -h $1 -p 5499 -d bench -XAt -c \"$2\""; }
  q="select abalance from pgbench_accounts where aid = 123457"
  scan="select count(*) from pgbench_accounts"
  sums="select string_agg(md5(t::text), '') from (select * from pgbench_accounts order by aid) t"

  drop; mkdir -p mnt && chown postgres mnt; t0=$(now)
  "$D" restore latest --repo repo --mount mnt --writable 2>mount.err &
  wait_for "test -f mnt/PG_VERSION" 60
  t1=$(now); pg_start "$B/mnt"; psql_in "$B/mnt" "$q" >/dev/null; t3=$(now)
  echo "instant: mount $(echo "$t1-$t0" | bc) s, recovery + start + first query $(echo "$t3-$t1" | bc) s: first query after $(echo "$t3-$t0" | bc) s"
  t4=$(now); psql_in "$B/mnt" "$scan" >/dev/null; echo "instant: then a scan of pgbench_accounts $(since "$t4") s"
  psql_in "$B/mnt" "select md5(($sums))" >ck-mount
  su postgres -s /bin/bash -c "$PGBIN/pg_ctl -D $B/mnt -m fast stop" >/dev/null
  echo "overlay after recovery, start, checksums and shutdown: $(du -sh mnt.overlay | cut -f1)"
  fusermount3 -u mnt; wait

  drop; t0=$(now)
  "$D" restore latest --repo repo --target full 2>/dev/null; chown -R postgres full; chmod 700 full; t1=$(now)
  pg_start "$B/full"; psql_in "$B/full" "$q" >/dev/null; t3=$(now)
  echo "full:    restore $(echo "$t1-$t0" | bc) s, recovery + start + first query $(echo "$t3-$t1" | bc) s: first query after $(echo "$t3-$t0" | bc) s"
  t4=$(now); psql_in "$B/full" "$scan" >/dev/null; echo "full:    then a scan of pgbench_accounts $(since "$t4") s"
  psql_in "$B/full" "select md5(($sums))" >ck-full
  su postgres -s /bin/bash -c "$PGBIN/pg_ctl -D $B/full -m fast stop" >/dev/null
  cmp ck-mount ck-full && echo "pgbench_accounts checksums equal"
fi
