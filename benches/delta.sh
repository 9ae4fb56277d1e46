#!/usr/bin/env bash
# What rows inserted since the last retrain cost a lookup, learned index
# against btree (benches/delta.py). Reproduces "Lookups before a retrain" in
# benches/README.md.
#   benches/delta.sh [rows]
set -euo pipefail
cd "$(dirname "$0")/.."
benches/install_release.sh
dir=/tmp/learneddb-delta-$$
port=$((48000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 3GB" "max_wal_size = 8GB" \
  "checkpoint_timeout = 1h" "autovacuum = off"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
PATH=/usr/lib/postgresql/15/bin:$PATH python3 benches/delta.py "$dir/sock" "$port" "$@"
