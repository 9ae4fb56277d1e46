#!/usr/bin/env bash
# Reproduces benches/README.md: installs the release build, starts a private
# cluster with enough shared_buffers to hold every index and table (cached
# probes, as ANCHORS.md measures btree), runs bench.py, stops the cluster.
#   benches/run.sh [sizes...]
set -euo pipefail
cd "$(dirname "$0")/.."
benches/install_release.sh
dir=/tmp/learneddb-bench-$$
port=$((45000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 3GB" "max_wal_size = 8GB" "checkpoint_timeout = 1h"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
python3 benches/bench.py "$dir/sock" "$port" "$@"
