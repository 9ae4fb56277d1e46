#!/usr/bin/env bash
# Runs the pg_regress suite in pg_regress/ against a private cluster with the
# installed extension, like `make installcheck`. Prints "N passed, M failed".
#   tools/regress.sh            run, compare with pg_regress/expected
# LEARNEDDB_PG=15|18 picks the server (tools/pg.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
. tools/pg.sh
REGRESS=$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress
dir=/tmp/learneddb-regress-$$
port=$((30000 + $$ % 10000))
tests="init $(ls pg_regress/sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | grep -v "^init$" | sort | tr "\n" " ")"
tools/cluster.sh start "$dir" "$port" "autovacuum = off" || exit 1
out=$dir/out
mkdir -p "$out"
chmod 777 "$out"
"$REGRESS" --inputdir=pg_regress --outputdir="$out" --bindir="$PG_BIN" \
  --host="$dir/sock" --port="$port" --user=postgres --dbname=learneddb_regression $tests | tee "$out/summary.txt"
status=${PIPESTATUS[0]}
tools/cluster.sh stop "$dir"
# PostgreSQL 15 prints "test NAME ... ok", 18 prints "ok N - NAME" (TAP).
passed=$(grep -cE '^test .* ok|^ok ' "$out/summary.txt")
failed=$(grep -cE 'FAILED|failed \(ignored\)|^not ok ' "$out/summary.txt")
if [ "$failed" -gt 0 ] || [ "$status" -ne 0 ]; then
  cp -r "$out" pg_regress/last-run 2>/dev/null
  echo "diffs kept in pg_regress/last-run/regression.diffs"
  [ -f "$out/regression.diffs" ] && head -100 "$out/regression.diffs"
fi
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
rm -rf "$dir"
echo "pg_regress: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
