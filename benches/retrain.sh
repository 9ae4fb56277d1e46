#!/usr/bin/env bash
# Reproduces the retraining tables of benches/README.md: installs the release
# build, starts a private cluster with the worker preloaded, runs retrain.py.
#   benches/retrain.sh [rows] [stream]
set -euo pipefail
cd "$(dirname "$0")/.."
benches/install_release.sh
dir=/tmp/learneddb-retrain-$$
port=$((46000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 3GB" "max_wal_size = 8GB" \
  "checkpoint_timeout = 1h" "shared_preload_libraries = 'learneddb'" \
  "learneddb.retrain_naptime = 5" "log_line_prefix = '%m '"
work=$(mktemp -d)
chmod 777 "$work"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir" "$work"' EXIT
PATH=/usr/lib/postgresql/15/bin:$PATH python3 benches/retrain.py "$dir/sock" "$port" "$dir/server.log" "$work" "$@"
