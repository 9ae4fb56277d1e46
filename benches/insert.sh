#!/usr/bin/env bash
# Cost of index maintenance on INSERT: 1M random int8 keys inserted into a
# 1M-row table with no index, with a btree, and with a learned index (whose
# entries go to WAL-logged delta pages). Reproduces the insert line in
# benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
benches/install_release.sh
dir=/tmp/learneddb-insert-$$
port=$((47000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 1GB" "max_wal_size = 4GB"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
psql -h "$dir/sock" -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION learneddb;
CREATE TABLE plain (k int8); CREATE TABLE bt (k int8); CREATE TABLE ln (k int8);
INSERT INTO plain SELECT g FROM generate_series(1, 1000000) g;
INSERT INTO bt SELECT g FROM generate_series(1, 1000000) g;
INSERT INTO ln SELECT g FROM generate_series(1, 1000000) g;
CREATE INDEX ON bt (k);
CREATE INDEX ON ln USING learned (k);
CHECKPOINT;
\timing on
\echo no index:
INSERT INTO plain SELECT hashint8(g) FROM generate_series(1, 1000000) g;
\echo btree:
INSERT INTO bt SELECT hashint8(g) FROM generate_series(1, 1000000) g;
\echo learned:
INSERT INTO ln SELECT hashint8(g) FROM generate_series(1, 1000000) g;
SQL
