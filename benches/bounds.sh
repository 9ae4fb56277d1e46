#!/usr/bin/env bash
# How much of an index-only scan any index access method can change: perf
# samples of the executor against the access method's, for the zipf probe and
# the 1,000-key range count (benches/bounds.py). Reproduces "What bounds the
# zipf probe and the range count" in benches/README.md. Needs perf (installed
# from the Debian archive when missing).
#   benches/bounds.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || apt-get install -y -q linux-perf >/dev/null
benches/install_release.sh
dir=/tmp/learneddb-bounds-$$
port=$((48000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 1GB" "autovacuum = off" "jit = off"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
PATH=/usr/lib/postgresql/15/bin:$PATH python3 benches/bounds.py "$dir/sock" "$port" "$@"
