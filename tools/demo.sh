#!/usr/bin/env bash
# Shows learneddb working: builds and installs the extension, starts a
# throwaway cluster, loads 1M timestamps with jitter, creates a btree and a
# learned index on them, prints both sizes, EXPLAIN (ANALYZE, BUFFERS) of a
# point and a range query on each, and the pg_stat_learned_indexes row; then
# stops the cluster.
#   tools/demo.sh [15|18]     the PostgreSQL major to run it on (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
export LEARNEDDB_PG=${1:-${LEARNEDDB_PG:-15}}
tools/setup.sh
. tools/pg.sh
echo "== building and installing learneddb (release) for PostgreSQL $PG_MAJOR"
cargo pgrx install --release --pg-config "$PG_CONFIG" --no-default-features --features "pg$PG_MAJOR" \
  >/tmp/learneddb-demo-install.log 2>&1 \
  || { cat /tmp/learneddb-demo-install.log; exit 1; }
dir=/tmp/learneddb-demo-$$
port=$((40000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
psql() { command "$PG_BIN/psql" -h "$dir/sock" -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql <<'SQL'
\echo == 1M readings, one per second with up to 2 s of jitter
CREATE EXTENSION learneddb;
CREATE TABLE readings (id bigint, at timestamptz, value float8);
INSERT INTO readings
SELECT g, TIMESTAMPTZ '2025-01-01 00:00+00' + g * INTERVAL '1 second' + random() * INTERVAL '2 seconds', random()
FROM generate_series(1, 1000000) g;
\timing on
CREATE INDEX readings_at_btree ON readings (at);
CREATE INDEX readings_at_learned ON readings USING learned (at);
\timing off
VACUUM ANALYZE readings;
\echo
\echo == index sizes
SELECT relname AS index, pg_size_pretty(pg_relation_size(oid)) AS size,
       round(pg_relation_size(oid)::numeric / pg_relation_size('readings_at_btree'), 2) AS vs_btree
FROM pg_class WHERE relname LIKE 'readings_at_%' ORDER BY relname;

SELECT at AS probe FROM readings WHERE id = 500000 \gset
\echo == point query through the btree
BEGIN;
DROP INDEX readings_at_learned;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT * FROM readings WHERE at = :'probe';
ROLLBACK;
\echo == point query through the learned index
BEGIN;
DROP INDEX readings_at_btree;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT * FROM readings WHERE at = :'probe';
ROLLBACK;
\echo == range query (one minute) through the btree
BEGIN;
DROP INDEX readings_at_learned;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT count(*) FROM readings WHERE at BETWEEN '2025-01-05 12:00+00' AND '2025-01-05 12:01+00';
ROLLBACK;
\echo == range query (one minute) through the learned index
BEGIN;
DROP INDEX readings_at_btree;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT count(*) FROM readings WHERE at BETWEEN '2025-01-05 12:00+00' AND '2025-01-05 12:01+00';
ROLLBACK;
\echo == with both indexes, the planner picks
EXPLAIN (COSTS OFF) SELECT * FROM readings WHERE at BETWEEN '2025-01-05 12:00+00' AND '2025-01-05 12:01+00';
\echo == pg_stat_learned_indexes
\x on
SELECT * FROM pg_stat_learned_indexes;
SQL
