-- amcostestimate: selective predicates use the learned index, unselective
-- ones read the table; next to a btree the (cheaper) learned index wins.
CREATE TABLE p (id int, ts timestamptz, pad text);
INSERT INTO p SELECT g, TIMESTAMPTZ '2025-01-01 00:00+00' + g * INTERVAL '1 second', repeat('x', 50)
FROM generate_series(1, 100000) g;
CREATE INDEX p_ts_learned ON p USING learned (ts);
VACUUM ANALYZE p;

EXPLAIN (COSTS OFF) SELECT * FROM p WHERE ts = '2025-01-01 10:00+00';
EXPLAIN (COSTS OFF) SELECT * FROM p WHERE ts BETWEEN '2025-01-01 10:00+00' AND '2025-01-01 10:05+00';
EXPLAIN (COSTS OFF) SELECT * FROM p WHERE ts > '2025-01-01 01:00+00';
EXPLAIN (COSTS OFF) SELECT * FROM p ORDER BY ts LIMIT 10;
EXPLAIN (COSTS OFF) SELECT * FROM p ORDER BY ts DESC LIMIT 10;

CREATE INDEX p_ts_btree ON p (ts);
ANALYZE p;
EXPLAIN (COSTS OFF) SELECT * FROM p WHERE ts = '2025-01-01 10:00+00';
EXPLAIN (COSTS OFF) SELECT ts FROM p WHERE ts BETWEEN '2025-01-01 10:00+00' AND '2025-01-01 10:05+00';

-- the buffers a point lookup touches: one run page (plus the heap page)
SET enable_seqscan = off;
SELECT count(*) FROM p WHERE ts = '2025-01-01 10:00+00';
SELECT explain_stable($$(ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF)
  SELECT id FROM p WHERE ts = '2025-01-01 10:00+00'$$);

-- Rows inserted in random key order after the build land in delta pages whose
-- key ranges all overlap, so every lookup reads all of them: the cost says so,
-- and the planner moves to the btree. REINDEX folds the delta into the run.
RESET enable_seqscan;
INSERT INTO p SELECT 100000 + g, TIMESTAMPTZ '2025-01-01 00:00+00' + (hashint4(g) & 65535) * INTERVAL '1 second', 'y'
FROM generate_series(1, 60000) g;
ANALYZE p;
SELECT delta_pages > 100 AS large_delta FROM learned_index_stats('p_ts_learned');
EXPLAIN (COSTS OFF) SELECT * FROM p WHERE ts = '2025-01-01 10:00+00';
REINDEX INDEX p_ts_learned;
EXPLAIN (COSTS OFF) SELECT * FROM p WHERE ts = '2025-01-01 10:00+00';

-- Rows appended in time order fill delta pages with narrow, disjoint key
-- ranges: a lookup reads the directory and at most one closed page, not all of
-- them, and the open page only if its keys reach down to the lookup's (compare
-- the buffers with the unsorted case above). A lookup of a key older than the
-- appended rows reads neither the directory nor a delta page.
-- That is still a few pages more than btree's descent, and the planner says so.
INSERT INTO p SELECT 200000 + g, TIMESTAMPTZ '2025-01-03 00:00+00' + g * INTERVAL '1 second', 'z'
FROM generate_series(1, 60000) g;
ANALYZE p;
SELECT delta_pages > 100 AS large_delta FROM learned_index_stats('p_ts_learned');
EXPLAIN (COSTS OFF) SELECT * FROM p WHERE ts = '2025-01-03 10:00+00';
BEGIN;
DROP INDEX p_ts_btree;
SELECT explain_stable($$(ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF)
  SELECT id FROM p WHERE ts = '2025-01-03 10:00+00'$$);
SELECT explain_stable($$(ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF)
  SELECT id FROM p WHERE ts = '2025-01-01 10:00+00'$$);
ROLLBACK;
