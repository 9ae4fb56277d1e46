-- The query shapes a learned index answers, with pinned plans.
SET enable_seqscan = off;

CREATE TABLE q (id int, k int8);
INSERT INTO q SELECT g, (g / 3) * 10 FROM generate_series(1, 30000) g;  -- duplicates
INSERT INTO q SELECT 30000 + g, NULL FROM generate_series(1, 50) g;
CREATE INDEX q_k ON q USING learned (k);
VACUUM ANALYZE q;

-- point, range, BETWEEN, IN / = ANY, IS NULL / IS NOT NULL
EXPLAIN (COSTS OFF) SELECT id FROM q WHERE k = 500;
SELECT id FROM q WHERE k = 500 ORDER BY id;
SELECT count(*) FROM q WHERE k = 501;
SELECT count(*) FROM q WHERE k < 100;
SELECT count(*) FROM q WHERE k <= 100;
SELECT count(*) FROM q WHERE k > 99900;
SELECT count(*) FROM q WHERE k >= 99900;
SELECT count(*) FROM q WHERE k BETWEEN 1000 AND 1990;
SELECT count(*) FROM q WHERE k > 1000 AND k < 1000;
EXPLAIN (COSTS OFF) SELECT id FROM q WHERE k = ANY('{10, 20, 20, 999999}');
SELECT id FROM q WHERE k = ANY('{10, 20, 20, 999999}') ORDER BY id;
SELECT id FROM q WHERE k IN (30, 40) ORDER BY id;
SELECT count(*) FROM q WHERE k = ANY('{}'::int8[]);
SELECT count(*) FROM q WHERE k = ANY('{NULL, 50}'::int8[]);
EXPLAIN (COSTS OFF) SELECT id FROM q WHERE k IS NULL;
SELECT count(*) FROM q WHERE k IS NULL;
SELECT count(*) FROM q WHERE k IS NOT NULL;
SELECT count(*) FROM q WHERE k = NULL;

-- cross-type arguments use the index
EXPLAIN (COSTS OFF) SELECT id FROM q WHERE k = 500::int4;
SELECT count(*) FROM q WHERE k < 100::int2;

-- ordered output, both directions, with and without LIMIT; NULLs last ascending
EXPLAIN (COSTS OFF) SELECT k FROM q ORDER BY k LIMIT 5;
SELECT k FROM q ORDER BY k LIMIT 5;
EXPLAIN (COSTS OFF) SELECT k FROM q ORDER BY k DESC LIMIT 5;
SELECT k FROM q ORDER BY k DESC LIMIT 5;
SELECT k FROM q WHERE k > 99950 ORDER BY k;
SELECT k FROM q WHERE k < 40 ORDER BY k DESC;
SELECT k FROM q WHERE k = ANY('{70, 10, 40}') ORDER BY k DESC;
SELECT count(*) FROM (SELECT k FROM q ORDER BY k) s;

-- index-only scans
EXPLAIN (COSTS OFF) SELECT k FROM q WHERE k BETWEEN 100 AND 120;
SELECT k FROM q WHERE k BETWEEN 100 AND 120;

-- bitmap scans
SET enable_indexscan = off;
SET enable_indexonlyscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM q WHERE k BETWEEN 100 AND 120;
SELECT count(*) FROM q WHERE k BETWEEN 100 AND 120;
SELECT count(*) FROM q WHERE k = ANY('{10, 20}') OR k IS NULL;
RESET enable_indexscan;
RESET enable_indexonlyscan;

-- inserts go to the delta and are merged in order
INSERT INTO q SELECT 40000 + g, g * 10 + 5 FROM generate_series(1, 2000) g;
INSERT INTO q VALUES (50000, NULL), (50001, -5), (50002, 1000000);
SELECT k FROM q WHERE k BETWEEN 100 AND 130 ORDER BY k;
SELECT k FROM q WHERE k BETWEEN 100 AND 130 ORDER BY k DESC;
SELECT k FROM q ORDER BY k LIMIT 3;
SELECT k FROM q ORDER BY k DESC LIMIT 3;
SELECT count(*) FROM q WHERE k IS NULL;
SELECT count(*) FROM q;
SELECT count(*) FROM (SELECT k FROM q ORDER BY k) s;

-- a column where every value is equal
CREATE TABLE eq (k int4);
INSERT INTO eq SELECT 7 FROM generate_series(1, 5000);
CREATE INDEX eq_k ON eq USING learned (k);
SELECT count(*) FROM eq WHERE k = 7;
SELECT count(*) FROM eq WHERE k < 7;
SELECT count(*) FROM eq WHERE k > 7;
SELECT count(*) FROM eq WHERE k >= 7;
SELECT learned_verify('eq_k');

-- nested loop: the inner side probes the learned index once per outer row
CREATE TABLE probes AS SELECT g * 10 AS k FROM generate_series(1, 100) g;
ANALYZE probes;
SET enable_hashjoin = off;
SET enable_mergejoin = off;
SELECT explain_stable('(COSTS OFF) SELECT count(*) FROM probes p JOIN q ON q.k = p.k');
SELECT count(*) FROM probes p JOIN q ON q.k = p.k;
RESET enable_hashjoin;
RESET enable_mergejoin;

-- merge join: the learned index delivers the inner side in key order (the
-- merge compares with the btree operator family the planner maps ours to)
SET enable_hashjoin = off;
SET enable_nestloop = off;
SELECT explain_stable('(COSTS OFF) SELECT count(*) FROM probes p JOIN q ON q.k = p.k');
SELECT count(*) FROM probes p JOIN q ON q.k = p.k;
RESET enable_hashjoin;
RESET enable_nestloop;

SELECT learned_verify('q_k');

-- cursors move both ways: no Material node under a scrollable cursor, and a
-- plain cursor can step back, across run pages, delta entries and NULLs
RESET enable_indexscan;
RESET enable_indexonlyscan;
RESET enable_bitmapscan;
SET enable_bitmapscan = off;
INSERT INTO q SELECT 40000 + g, 10 * g + 5 FROM generate_series(1, 30) g;  -- delta, between run keys
INSERT INTO q VALUES (50001, NULL), (50002, 15);
EXPLAIN (COSTS OFF) DECLARE s SCROLL CURSOR FOR SELECT k FROM q WHERE k BETWEEN 0 AND 300;
BEGIN;
DECLARE c CURSOR FOR SELECT k FROM q WHERE k BETWEEN 0 AND 60 OR k IS NULL ORDER BY k;
FETCH 5 FROM c;
FETCH BACKWARD 2 FROM c;
FETCH 3 FROM c;
FETCH LAST FROM c;
FETCH BACKWARD 3 FROM c;
FETCH ABSOLUTE 1 FROM c;
FETCH BACKWARD 1 FROM c;
FETCH 2 FROM c;
COMMIT;
BEGIN;
DECLARE d SCROLL CURSOR FOR SELECT id, k FROM q WHERE k = ANY('{1000, 2000, 300005}') OR k BETWEEN 2395 AND 2420 ORDER BY k DESC;
FETCH ALL FROM d;
FETCH BACKWARD ALL FROM d;
FETCH ABSOLUTE 4 FROM d;
FETCH RELATIVE -2 FROM d;
FETCH FORWARD 3 FROM d;
COMMIT;
RESET enable_bitmapscan;

-- an index-only cursor keeps pins between fetches; they are released however
-- its transaction ends (no buffer leak warnings, no errors on release)
SET enable_bitmapscan = off;
BEGIN;
DECLARE e CURSOR FOR SELECT k FROM q WHERE k BETWEEN 0 AND 60;
FETCH 2 FROM e;
SAVEPOINT s;
FETCH 2 FROM e;
SELECT 1 / 0;
ROLLBACK TO s;
FETCH 2 FROM e;
ROLLBACK;
BEGIN;
DECLARE e CURSOR FOR SELECT k FROM q WHERE k BETWEEN 0 AND 60;
FETCH 2 FROM e;
SAVEPOINT s;
FETCH 2 FROM e;
RELEASE s;
SELECT 1 / 0;
ROLLBACK;
BEGIN;
DECLARE e CURSOR WITH HOLD FOR SELECT k FROM q WHERE k BETWEEN 0 AND 60;
FETCH 2 FROM e;
COMMIT;
FETCH 2 FROM e;
CLOSE e;
BEGIN;
DECLARE e CURSOR FOR SELECT k FROM q WHERE k BETWEEN 0 AND 60;
FETCH 2 FROM e;
COMMIT;
RESET enable_bitmapscan;
