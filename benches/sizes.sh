#!/usr/bin/env bash
# The size table of benches/README.md ("Size by column shape"): installs the
# release build, starts a private cluster, runs sizes.py, stops the cluster.
#   benches/sizes.sh [rows]        (default 10,000,000; about 15 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
benches/install_release.sh
dir=/tmp/learneddb-sizes-$$
port=$((45000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 3GB" "max_wal_size = 8GB" "checkpoint_timeout = 1h"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
python3 benches/sizes.py "$dir/sock" "$port" "$@"
