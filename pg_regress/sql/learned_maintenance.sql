-- DDL, VACUUM, statistics, and the errors for what is not supported.
CREATE TABLE m (id int, k int8);
INSERT INTO m SELECT g, g FROM generate_series(1, 10000) g;
CREATE INDEX m_k ON m USING learned (k);

-- the stats view and function
SELECT schema_name, table_name, index_name, key_type, entries, run_pages, null_entries,
       delta_entries, delta_pages, model_leaves, max_error, generation, retrain_count,
       last_retrain IS NULL AS never_retrained, built_at <= now() AS built_in_past, index_size > 0 AS has_size
FROM pg_stat_learned_indexes WHERE index_name = 'm_k';
SELECT entries, max_error <= 64 AS window_within_target FROM learned_index_stats('m_k');

-- VACUUM tombstones dead run entries and removes dead delta entries
INSERT INTO m SELECT g, g FROM generate_series(10001, 12000) g;
DELETE FROM m WHERE id % 2 = 0;
VACUUM m;
SET enable_seqscan = off;
SELECT count(*) FROM m WHERE k > 0;
SELECT count(*) FROM m WHERE k > 10000;
SELECT entries, delta_entries FROM learned_index_stats('m_k');
SELECT learned_verify('m_k');
-- emptied delta pages are reused rather than the index growing
DELETE FROM m WHERE id > 10000;
VACUUM m;
SELECT pg_relation_size('m_k') AS size_before \gset
INSERT INTO m SELECT g, g FROM generate_series(10001, 12000) g;
SELECT pg_relation_size('m_k') = :size_before AS reused_pages;
SELECT count(*) FROM m WHERE k > 10000;
SELECT learned_verify('m_k');
RESET enable_seqscan;

-- learned_retrain folds the delta into a new generation of the run, without
-- blocking readers or writers; dead entries are dropped, NULLs kept
CREATE TABLE rt (id int, k int4);
INSERT INTO rt SELECT g, g FROM generate_series(1, 5000) g;
CREATE INDEX rt_k ON rt USING learned (k);
CREATE INDEX rt_id ON rt (id);
INSERT INTO rt SELECT g, 100000 + g FROM generate_series(1, 3000) g;
INSERT INTO rt VALUES (0, NULL), (0, NULL), (0, -5);
DELETE FROM rt WHERE k BETWEEN 200 AND 400;
SELECT generation, retrain_count, last_retrain IS NULL AS never, delta_entries > 0 AS has_delta,
       last_retrain_seconds IS NULL AS no_duration, round(delta_fraction::numeric, 3) AS delta_fraction
FROM learned_index_stats('rt_k');
SELECT generation, entries, delta_merged, dead_dropped, pages_written > 0 AS wrote, path
FROM learned_retrain('rt_k');
SELECT generation, retrain_count, last_retrain IS NOT NULL AS retrained, entries, delta_entries,
       delta_pages, null_entries, last_retrain_seconds >= 0 AS timed, delta_fraction
FROM learned_index_stats('rt_k');
SELECT learned_verify('rt_k');
SET enable_seqscan = off;
SELECT count(*), min(k), max(k) FROM rt WHERE k >= 100000;
SELECT count(*) FROM rt WHERE k BETWEEN 150 AND 450;
SELECT count(*) FROM rt WHERE k IS NULL;
SELECT k FROM rt WHERE k < 3 ORDER BY k;
RESET enable_seqscan;
-- VACUUM after a retrain cleans the new generation and the one before
DELETE FROM rt WHERE k BETWEEN 100001 AND 100010;
VACUUM rt;
SELECT learned_verify('rt_k');
INSERT INTO rt SELECT g, 200000 + g FROM generate_series(1, 100) g;
SELECT generation, delta_merged FROM learned_retrain('rt_k');
SELECT learned_verify('rt_k');
SELECT learned_retrain('rt_id');
DROP TABLE rt;

-- REINDEX folds the delta into the run
REINDEX INDEX m_k;
SELECT entries, delta_entries, delta_pages FROM learned_index_stats('m_k');
REINDEX INDEX CONCURRENTLY m_k;
SELECT learned_verify('m_k');
DROP INDEX m_k;
CREATE INDEX CONCURRENTLY m_k ON m USING learned (k);
SELECT entries FROM learned_index_stats('m_k');
SELECT learned_verify('m_k');

-- TRUNCATE, CLUSTER (on a btree), ALTER COLUMN TYPE rebuild it
CREATE INDEX m_id ON m (id);
CLUSTER m USING m_id;
SELECT learned_verify('m_k');
ALTER TABLE m ALTER COLUMN k TYPE int4;
SELECT key_type, entries FROM learned_index_stats('m_k');
SELECT learned_verify('m_k');
TRUNCATE m;
SELECT entries, run_pages FROM learned_index_stats('m_k');
INSERT INTO m VALUES (1, 1), (2, NULL);
SELECT learned_verify('m_k');
SET enable_seqscan = off;
SELECT id FROM m WHERE k = 1;
SELECT id FROM m WHERE k IS NULL;
RESET enable_seqscan;

-- unlogged and temporary tables
CREATE UNLOGGED TABLE u (k int8);
INSERT INTO u SELECT g FROM generate_series(1, 1000) g;
CREATE INDEX u_k ON u USING learned (k);
SELECT learned_verify('u_k');
CREATE TEMP TABLE tmp (k int8);
INSERT INTO tmp SELECT g FROM generate_series(1, 1000) g;
CREATE INDEX tmp_k ON tmp USING learned (k);
INSERT INTO tmp VALUES (5000);
SELECT learned_verify('tmp_k');

-- a smaller target window gives more leaves and narrower windows
CREATE TABLE w (k float8);
INSERT INTO w SELECT sin(g) * 1000 FROM generate_series(1, 20000) g;
CREATE INDEX w_64 ON w USING learned (k);
CREATE INDEX w_8 ON w USING learned (k) WITH (target_window = 8);
SELECT a.model_leaves < b.model_leaves AS more_leaves, b.max_error <= 8 AS narrow
FROM learned_index_stats('w_64') a, learned_index_stats('w_8') b;
ALTER INDEX w_8 SET (target_window = 1);
-- the worker's per-index settings
ALTER INDEX w_8 SET (retrain = off, retrain_threshold = 0.25);
SELECT reloptions FROM pg_class WHERE relname = 'w_8';
ALTER INDEX w_8 SET (retrain_threshold = -2);
ALTER INDEX w_8 SET (retrain = maybe);
ALTER INDEX w_8 RESET (retrain, retrain_threshold);

-- what is not supported says so
CREATE INDEX ON m USING learned (id, k);
CREATE UNIQUE INDEX ON m USING learned (k);
CREATE INDEX ON m USING learned (k) INCLUDE (id);
CREATE INDEX ON m USING learned (k DESC);
CREATE INDEX ON m USING learned (k NULLS FIRST);
CLUSTER m USING m_k;
SELECT learned_verify('m_id');
SELECT * FROM learned_index_stats('m');
-- a partitioned learned index has no storage: its partitions' indexes do
CREATE TABLE pt (k int8) PARTITION BY RANGE (k);
CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (100);
CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (100) TO (200);
CREATE INDEX pt_k ON pt USING learned (k);
SELECT learned_verify('pt_k');
SELECT * FROM learned_index_stats('pt_k');
SELECT learned_verify('pt1_k_idx');
DROP TABLE pt;

-- a build larger than maintenance_work_mem sorts in runs on disk and merges them;
-- learned_verify (which sorts too) then checks every row against the heap
CREATE TABLE big AS SELECT (hashint8(g) % 100000)::int8 AS k FROM generate_series(1, 300000) g;
INSERT INTO big SELECT NULL FROM generate_series(1, 100);
SET maintenance_work_mem = '1MB';
CREATE INDEX big_k ON big USING learned (k);
SELECT learned_verify('big_k');
RESET maintenance_work_mem;
SELECT entries, null_entries FROM learned_index_stats('big_k');
