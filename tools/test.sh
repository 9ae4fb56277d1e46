#!/usr/bin/env bash
# Runs every test. `cargo pgrx test` installs the extension and runs every cargo
# target: the model and key unit tests, the #[pg_test]s, and the integration
# tests in tests/ (differential, crash, corruption), which start clusters of
# their own. Then the pg_regress suite. Ends with one line "N passed, M failed"
# over all suites.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh || exit 1
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
log=$(mktemp -d /tmp/learneddb-test-log.XXXX)
chmod 755 "$log"
pass=0 fail=0
count_cargo() { # sums "test result: ... N passed; M failed" lines
  local p f
  p=$(grep -hoE '[0-9]+ passed' "$1" | awk '{s+=$1} END {print s+0}')
  f=$(grep -hoE '[0-9]+ failed' "$1" | awk '{s+=$1} END {print s+0}')
  pass=$((pass + p)); fail=$((fail + f))
}

echo "== cargo pgrx test: unit tests, #[pg_test]s, integration tests"
pgdata=/tmp/learneddb-pgrx-test
mkdir -p "$pgdata" && chown postgres:postgres "$pgdata"
cargo pgrx test pg15 --runas postgres --pgdata "$pgdata/data" 2>&1 | tee "$log/pgrx.txt" | grep -E "^test |test result|panicked|^error"
[ "${PIPESTATUS[0]}" -eq 0 ] || { grep -qE "[1-9][0-9]* failed" "$log/pgrx.txt" || fail=$((fail + 1)); }
count_cargo "$log/pgrx.txt"

echo "== install the extension for the server-level suites"
cargo pgrx install --pg-config "$PG_CONFIG" >"$log/install.txt" 2>&1 || { cat "$log/install.txt"; exit 1; }

echo "== pg_regress"
tools/regress.sh 2>&1 | tee "$log/regress.txt" | grep -E "^(test|ok|not ok)|passed|failed"
p=$(grep -oE 'pg_regress: [0-9]+ passed' "$log/regress.txt" | grep -oE '[0-9]+' || echo 0)
f=$(grep -oE '[0-9]+ failed' "$log/regress.txt" | tail -1 | grep -oE '[0-9]+' || echo 1)
pass=$((pass + p)); fail=$((fail + f))

echo "logs in $log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
