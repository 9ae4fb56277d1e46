#!/usr/bin/env bash
# The distributions table of benches/README.md ("Key distributions that hurt
# learned indexes"): installs the release build, starts a private cluster,
# runs distributions.py, stops the cluster.
#   benches/distributions.sh [rows]        (default 1,000,000; about 5 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
benches/install_release.sh
dir=/tmp/learneddb-distributions-$$
port=$((45000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 3GB" "max_wal_size = 8GB" "checkpoint_timeout = 1h" "jit = off"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
python3 benches/distributions.py "$dir/sock" "$port" "$@"
