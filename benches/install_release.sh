#!/usr/bin/env bash
# What every benchmark runs first: the tools (tools/setup.sh) and the release
# build of the extension, installed into PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config >/tmp/learneddb-bench-install.log 2>&1 \
  || { cat /tmp/learneddb-bench-install.log; exit 1; }
