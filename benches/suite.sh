#!/usr/bin/env bash
# The whole benchmark in one command (about 15 minutes here): installs what is
# missing (the release build, matplotlib in a virtualenv, tpchgen-cli from
# crates.io), starts a private PostgreSQL 15 cluster, runs suite.py (results in
# benches/results/results.json), draws the plots and rewrites benches/README.md's
# tables with report.py, and stops the cluster.
#   benches/suite.sh                      everything at the default sizes
#   benches/suite.sh --parts scaling,cold only those parts (the others keep their last results)
#   benches/suite.sh --large              adds 100M rows to the scaling part
#   benches/suite.sh --quick              small sizes, to check the script
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=/opt/learneddb-bench-venv
benches/install_release.sh
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet matplotlib
fi
export TPCHGEN="$HOME/.cargo/bin/tpchgen-cli"
[ -x "$TPCHGEN" ] || cargo install --locked --quiet tpchgen-cli --version 4.0.0
dir=/tmp/learneddb-suite-$$
port=$((45000 + $$ % 10000))
tools/cluster.sh start "$dir" "$port" "shared_buffers = 3GB" "max_wal_size = 8GB" "checkpoint_timeout = 1h" "jit = off"
trap 'tools/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
"$VENV/bin/python" benches/suite.py "$dir" "$port" "$@"
results=benches/results/results.json
for ((i = 1; i <= $#; i++)); do [ "${!i}" = --results ] && { j=$((i + 1)); results=${!j}; }; done
"$VENV/bin/python" benches/report.py "$results"
