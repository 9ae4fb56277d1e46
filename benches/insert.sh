#!/usr/bin/env bash
# Cost of index maintenance on INSERT, learned index against btree, for random
# and time-ordered keys (benches/insert.py). Reproduces the insert table in
# benches/README.md.
#   benches/insert.sh [rows] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
benches/install_release.sh
dir=/tmp/learneddb-insert-$$
port=$((47000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 1GB" "max_wal_size = 4GB" "autovacuum = off"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
PATH=/usr/lib/postgresql/15/bin:$PATH python3 benches/insert.py "$dir/sock" "$port" "$@"
