#!/usr/bin/env bash
# What every benchmark runs first: the tools (tools/setup.sh) and the release
# build of the extension, installed into PostgreSQL $LEARNEDDB_PG (15 unless
# set; tools/pg.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
. tools/pg.sh
cargo pgrx install --release --pg-config "$PG_CONFIG" --no-default-features --features "pg$PG_MAJOR" \
  >/tmp/learneddb-bench-install.log 2>&1 \
  || { cat /tmp/learneddb-bench-install.log; exit 1; }
