#!/usr/bin/env bash
# Build time of a learned index and a btree, serial and with two parallel
# workers, on PostgreSQL 18 (benches/parallel_build.py). Reproduces the
# parallel build table in benches/README.md.
#   benches/parallel_build.sh [rows] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
export LEARNEDDB_PG=18
benches/install_release.sh
. tools/pg.sh
dir=/tmp/learneddb-parbuild-$$
port=$((47000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 1GB" "max_wal_size = 8GB" "autovacuum = off" \
  "max_worker_processes = 8" "max_parallel_workers = 4"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
PATH=$PG_BIN:$PATH python3 benches/parallel_build.py "$dir/sock" "$port" "$@"
