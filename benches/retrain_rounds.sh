#!/usr/bin/env bash
# A worst case for the size of an index retrained under random inserts, without
# the worker: 10M key-ordered rows with a learned index, then ROUNDS rounds of
# ROWS random keys inserted and learned_retrain (default 40 x 50,000). Prints
# each retrain (path, pages written, seconds | run, delta and free pages, index
# blocks), then the index against a fresh build of the same rows.
#   ROUNDS=40 ROWS=50000 benches/retrain_rounds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
benches/install_release.sh >/dev/null
dir=/tmp/learneddb-rounds-$$; port=$((46000 + $$ % 10000))
ROUNDS=${ROUNDS:-40}; ROWS=${ROWS:-50000}
tools/cluster.sh start "$dir" "$port" "shared_buffers = 2GB" "max_wal_size = 8GB" "checkpoint_timeout = 1h" "autovacuum = off" >/dev/null
trap 'tools/cluster.sh stop "$dir" >/dev/null; rm -rf "$dir"' EXIT
P="psql -h $dir/sock -p $port -U postgres -X -At -q"
$P -c "CREATE EXTENSION learneddb"
$P -c "CREATE TABLE t AS SELECT sum((hashint8(g) & 7) + 1) OVER (ORDER BY g) AS k FROM generate_series(1, 10000000) g"
$P -c "CREATE INDEX t_k ON t USING learned (k)"
max=$($P -c "SELECT max(k) FROM t")
for i in $(seq 1 $ROUNDS); do
  $P -c "INSERT INTO t SELECT (random() * $max)::int8 FROM generate_series(1, $ROWS)"
  r=$($P -c "SELECT path, pages_written, round(seconds::numeric, 2) FROM learned_retrain('t_k')")
  s=$($P -c "SELECT run_pages, delta_pages, free_pages, index_size / 8192 FROM learned_index_stats('t_k')")
  echo "$i $r | $s"
done
$P -c "CREATE INDEX t_fresh ON t USING learned (k)"
echo "index blocks after the rounds | a fresh build's | ratio"
$P -c "SELECT pg_relation_size('t_k') / 8192, pg_relation_size('t_fresh') / 8192, round(pg_relation_size('t_k')::numeric / pg_relation_size('t_fresh'), 2)"
