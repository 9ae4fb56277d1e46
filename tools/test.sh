#!/usr/bin/env bash
# Runs every test. `cargo pgrx test` installs the extension and runs every cargo
# target: the model and key unit tests, the #[pg_test]s, and the integration
# tests in tests/ (differential, crash, corruption), which start clusters of
# their own. Then the pg_regress suite. All of it on PostgreSQL 15, then 18.
# Ends with one line "N passed, M failed" over all suites.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh || exit 1
. tools/pg.sh
log=$(mktemp -d /tmp/learneddb-test-log.XXXX)
chmod 755 "$log"
pass=0 fail=0
count_cargo() { # sums "test result: ... N passed; M failed" lines
  local p f
  p=$(grep -hoE '[0-9]+ passed' "$1" | awk '{s+=$1} END {print s+0}')
  f=$(grep -hoE '[0-9]+ failed' "$1" | awk '{s+=$1} END {print s+0}')
  pass=$((pass + p)); fail=$((fail + f))
}

# Every suite, on every supported major (tools/pg.sh). The pg_upgrade test in
# the PostgreSQL 18 suite upgrades from the 15 build installed just before it.
for major in $PG_MAJORS; do
  export LEARNEDDB_PG=$major
  echo "== PostgreSQL $major: cargo pgrx test: unit tests, #[pg_test]s, integration tests"
  pgdata=/tmp/learneddb-pgrx-test-$major
  mkdir -p "$pgdata" && chown postgres:postgres "$pgdata"
  cargo pgrx test "pg$major" --runas postgres --pgdata "$pgdata/data" 2>&1 | tee "$log/pgrx-$major.txt" | grep -E "^test |test result|panicked|^error"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { grep -qE "[1-9][0-9]* failed" "$log/pgrx-$major.txt" || fail=$((fail + 1)); }
  count_cargo "$log/pgrx-$major.txt"

  echo "== PostgreSQL $major: install the extension for the server-level suites"
  cargo pgrx install --pg-config "$(pg_config_for "$major")" --no-default-features --features "pg$major" \
    >"$log/install-$major.txt" 2>&1 || { cat "$log/install-$major.txt"; exit 1; }

  echo "== PostgreSQL $major: pg_regress"
  tools/regress.sh 2>&1 | tee "$log/regress-$major.txt" | grep -E "^(test|ok|not ok)|passed|failed"
  p=$(grep -oE 'pg_regress: [0-9]+ passed' "$log/regress-$major.txt" | grep -oE '[0-9]+' || echo 0)
  f=$(grep -oE '[0-9]+ failed' "$log/regress-$major.txt" | tail -1 | grep -oE '[0-9]+' || echo 1)
  pass=$((pass + p)); fail=$((fail + f))
done

echo "logs in $log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
