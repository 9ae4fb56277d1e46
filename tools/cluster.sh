#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a private port, run as the postgres user
# (PostgreSQL refuses to run as root). LEARNEDDB_PG=15|18 picks the major.
#   tools/cluster.sh start DIR PORT [extra postgresql.conf lines...]
#   tools/cluster.sh stop DIR [mode]
# SERVER_ENV="VAR=value ..." in the environment is passed to the server;
# INITDB_ARGS="..." to initdb.
# The socket directory is DIR/sock; connect with psql -h DIR/sock -p PORT -U postgres.
set -euo pipefail
. "$(dirname "$0")/pg.sh"
BIN=$PG_BIN
cmd=$1 dir=$2
as_pg() { if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }
case "$cmd" in
start)
  port=$3; shift 3
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    mkdir -p "$dir/sock"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir"
    # shellcheck disable=SC2086 # INITDB_ARGS is a list of words
    as_pg "$BIN/initdb" -D "$dir/data" -U postgres --no-sync -A trust ${INITDB_ARGS:-} >"$dir/initdb.log" 2>&1
    {
      echo "port = $port"
      echo "unix_socket_directories = '$dir/sock'"
      echo "listen_addresses = ''"
      echo "fsync = off"
      echo "shared_buffers = 256MB"
      echo "max_connections = 40"
      for line in "$@"; do echo "$line"; done
    } | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
  fi
  # shellcheck disable=SC2086 # SERVER_ENV is a list of VAR=value words
  as_pg env ${SERVER_ENV:-} "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
  ;;
stop)
  mode=${3:-fast}
  as_pg "$BIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
  ;;
*) echo "usage: $0 start|stop DIR ..." >&2; exit 2 ;;
esac
