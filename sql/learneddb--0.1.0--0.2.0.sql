-- learneddb 0.1.0 to 0.2.0.
--
-- learned_index_stats gains missing_ok (no row rather than an ERROR for an
-- index dropped, or made not valid, since the caller listed it), which the
-- view passes; the view becomes readable by every role. (Development builds
-- of 0.1.0 older than its grants on learned_retrain and learned_verify differ
-- in more than this: drop the extension and create it again instead.)

\echo Use "ALTER EXTENSION learneddb UPDATE TO '0.2.0'" to load this file. \quit

-- The view is replaced in place, and the old function dropped once nothing
-- uses it: views built on this one, and privileges granted on it, stay.
CREATE  FUNCTION "learned_index_stats"(
	"index" regclass, /* IndexArg */
	"missing_ok" bool DEFAULT false /* bool */
) RETURNS TABLE (
	"schema_name" TEXT,  /* String */
	"table_name" TEXT,  /* String */
	"index_name" TEXT,  /* String */
	"key_type" TEXT,  /* String */
	"entries" bigint,  /* i64 */
	"run_pages" bigint,  /* i64 */
	"null_entries" bigint,  /* i64 */
	"delta_entries" bigint,  /* i64 */
	"delta_pages" bigint,  /* i64 */
	"model_leaves" bigint,  /* i64 */
	"model_bytes" bigint,  /* i64 */
	"max_error" bigint,  /* i64 */
	"mean_error" double precision,  /* f64 */
	"generation" bigint,  /* i64 */
	"built_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_retrain" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"retrain_count" bigint,  /* i64 */
	"last_retrain_seconds" double precision,  /* Option < f64 > */
	"delta_fraction" double precision,  /* f64 */
	"retrain_skipped" TEXT,  /* Option < String > */
	"retrain_skipped_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"index_size" bigint,  /* i64 */
	"retained_pages" bigint,  /* i64 */
	"free_pages" bigint,  /* i64 */
	"idx_scan" bigint,  /* i64 */
	"idx_tup_read" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'learned_index_stats_wrapper';

CREATE OR REPLACE VIEW pg_stat_learned_indexes AS
    SELECT s.*
    FROM pg_class c
    JOIN pg_am am ON am.oid = c.relam AND am.amname = 'learned'
    JOIN pg_index i ON i.indexrelid = c.oid AND i.indisvalid
    CROSS JOIN LATERAL learned_index_stats(c.oid::regclass, missing_ok => true) s
    WHERE c.relkind = 'i' AND NOT pg_is_other_temp_schema(c.relnamespace)
      AND pg_relation_size(c.oid) > 0;


DROP FUNCTION learned_index_stats(regclass);

-- Readable by every role, as pg_stat_user_indexes is.
GRANT SELECT ON pg_stat_learned_indexes TO PUBLIC;
