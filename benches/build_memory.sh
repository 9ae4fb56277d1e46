#!/usr/bin/env bash
# Peak private memory of the backend while it builds a btree and a learned
# index over N int8 keys in random heap order, with the default
# maintenance_work_mem (64MB). Reproduces the build-memory line in
# benches/README.md.
#   benches/build_memory.sh [rows]      (default 50000000)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-50000000}
benches/install_release.sh
dir=/tmp/learneddb-buildmem-$$
port=$((46000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 1GB" "max_wal_size = 16GB" "max_parallel_maintenance_workers = 0"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
sql() { psql -h "$dir/sock" -p "$port" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
sql -c "CREATE EXTENSION learneddb"
sql -c "CREATE TABLE t AS SELECT hashint8(g) AS k FROM generate_series(1, $rows) g"
build() { # $1 = index definition; prints seconds and peak RssAnon growth in MB
  local fifo=$dir/pid; rm -f "$fifo"
  ( sql -c "SELECT pg_backend_pid()" -c "\\o /dev/null" -c "SELECT pg_sleep(1)" -c "CREATE INDEX $1" ) > "$fifo" &
  local client=$!; sleep 0.3
  local pid; pid=$(head -1 "$fifo")
  local base; base=$(awk '/RssAnon/ {print $2}' /proc/$pid/status)
  local peak=$base start; start=$(date +%s.%N)
  while kill -0 "$client" 2>/dev/null; do
    local now; now=$(awk '/RssAnon/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    [ "${now:-0}" -gt "$peak" ] && peak=$now
    sleep 0.05
  done
  wait "$client"
  printf '%s: %.1f s, backend private memory grew by %d MB\n' "$1" "$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')" $(( (peak - base) / 1024 ))
}
echo "$rows rows, random order, maintenance_work_mem = $(sql -c 'SHOW maintenance_work_mem')"
build "t_btree ON t (k)"
build "t_learned ON t USING learned (k)"
sql -c "SELECT pg_size_pretty(pg_relation_size('t_btree')), pg_size_pretty(pg_relation_size('t_learned'))"
