-- The learned index access method, its operator classes and the statistics view.
-- Operators are PostgreSQL's built-in comparisons, numbered as btree numbers them
-- (1 <, 2 <=, 3 =, 4 >=, 5 >), one family per group of comparable types, so
-- cross-type comparisons such as int4_col = 5::int8 use the index.

CREATE FUNCTION learned_handler(internal) RETURNS index_am_handler
    AS 'MODULE_PATHNAME', 'learned_handler' LANGUAGE C STRICT;

CREATE ACCESS METHOD learned TYPE INDEX HANDLER learned_handler;
COMMENT ON ACCESS METHOD learned IS 'learned index: a recursive model index over a sorted run';

CREATE OPERATOR FAMILY integer_ops USING learned;

CREATE OPERATOR CLASS int2_ops DEFAULT FOR TYPE int2 USING learned FAMILY integer_ops AS
    OPERATOR 1 <,
    OPERATOR 2 <=,
    OPERATOR 3 =,
    OPERATOR 4 >=,
    OPERATOR 5 >;

CREATE OPERATOR CLASS int4_ops DEFAULT FOR TYPE int4 USING learned FAMILY integer_ops AS
    OPERATOR 1 <,
    OPERATOR 2 <=,
    OPERATOR 3 =,
    OPERATOR 4 >=,
    OPERATOR 5 >;

CREATE OPERATOR CLASS int8_ops DEFAULT FOR TYPE int8 USING learned FAMILY integer_ops AS
    OPERATOR 1 <,
    OPERATOR 2 <=,
    OPERATOR 3 =,
    OPERATOR 4 >=,
    OPERATOR 5 >;

ALTER OPERATOR FAMILY integer_ops USING learned ADD
    OPERATOR 1 < (int2, int4),
    OPERATOR 2 <= (int2, int4),
    OPERATOR 3 = (int2, int4),
    OPERATOR 4 >= (int2, int4),
    OPERATOR 5 > (int2, int4),
    OPERATOR 1 < (int2, int8),
    OPERATOR 2 <= (int2, int8),
    OPERATOR 3 = (int2, int8),
    OPERATOR 4 >= (int2, int8),
    OPERATOR 5 > (int2, int8),
    OPERATOR 1 < (int4, int2),
    OPERATOR 2 <= (int4, int2),
    OPERATOR 3 = (int4, int2),
    OPERATOR 4 >= (int4, int2),
    OPERATOR 5 > (int4, int2),
    OPERATOR 1 < (int4, int8),
    OPERATOR 2 <= (int4, int8),
    OPERATOR 3 = (int4, int8),
    OPERATOR 4 >= (int4, int8),
    OPERATOR 5 > (int4, int8),
    OPERATOR 1 < (int8, int2),
    OPERATOR 2 <= (int8, int2),
    OPERATOR 3 = (int8, int2),
    OPERATOR 4 >= (int8, int2),
    OPERATOR 5 > (int8, int2),
    OPERATOR 1 < (int8, int4),
    OPERATOR 2 <= (int8, int4),
    OPERATOR 3 = (int8, int4),
    OPERATOR 4 >= (int8, int4),
    OPERATOR 5 > (int8, int4);

CREATE OPERATOR FAMILY float_ops USING learned;

CREATE OPERATOR CLASS float4_ops DEFAULT FOR TYPE float4 USING learned FAMILY float_ops AS
    OPERATOR 1 <,
    OPERATOR 2 <=,
    OPERATOR 3 =,
    OPERATOR 4 >=,
    OPERATOR 5 >;

CREATE OPERATOR CLASS float8_ops DEFAULT FOR TYPE float8 USING learned FAMILY float_ops AS
    OPERATOR 1 <,
    OPERATOR 2 <=,
    OPERATOR 3 =,
    OPERATOR 4 >=,
    OPERATOR 5 >;

ALTER OPERATOR FAMILY float_ops USING learned ADD
    OPERATOR 1 < (float4, float8),
    OPERATOR 2 <= (float4, float8),
    OPERATOR 3 = (float4, float8),
    OPERATOR 4 >= (float4, float8),
    OPERATOR 5 > (float4, float8),
    OPERATOR 1 < (float8, float4),
    OPERATOR 2 <= (float8, float4),
    OPERATOR 3 = (float8, float4),
    OPERATOR 4 >= (float8, float4),
    OPERATOR 5 > (float8, float4);

CREATE OPERATOR FAMILY datetime_ops USING learned;

CREATE OPERATOR CLASS date_ops DEFAULT FOR TYPE date USING learned FAMILY datetime_ops AS
    OPERATOR 1 <,
    OPERATOR 2 <=,
    OPERATOR 3 =,
    OPERATOR 4 >=,
    OPERATOR 5 >;

CREATE OPERATOR CLASS timestamp_ops DEFAULT FOR TYPE timestamp USING learned FAMILY datetime_ops AS
    OPERATOR 1 <,
    OPERATOR 2 <=,
    OPERATOR 3 =,
    OPERATOR 4 >=,
    OPERATOR 5 >;

CREATE OPERATOR CLASS timestamptz_ops DEFAULT FOR TYPE timestamptz USING learned FAMILY datetime_ops AS
    OPERATOR 1 <,
    OPERATOR 2 <=,
    OPERATOR 3 =,
    OPERATOR 4 >=,
    OPERATOR 5 >;

ALTER OPERATOR FAMILY datetime_ops USING learned ADD
    OPERATOR 1 < (date, timestamp),
    OPERATOR 2 <= (date, timestamp),
    OPERATOR 3 = (date, timestamp),
    OPERATOR 4 >= (date, timestamp),
    OPERATOR 5 > (date, timestamp),
    OPERATOR 1 < (date, timestamptz),
    OPERATOR 2 <= (date, timestamptz),
    OPERATOR 3 = (date, timestamptz),
    OPERATOR 4 >= (date, timestamptz),
    OPERATOR 5 > (date, timestamptz),
    OPERATOR 1 < (timestamp, date),
    OPERATOR 2 <= (timestamp, date),
    OPERATOR 3 = (timestamp, date),
    OPERATOR 4 >= (timestamp, date),
    OPERATOR 5 > (timestamp, date),
    OPERATOR 1 < (timestamp, timestamptz),
    OPERATOR 2 <= (timestamp, timestamptz),
    OPERATOR 3 = (timestamp, timestamptz),
    OPERATOR 4 >= (timestamp, timestamptz),
    OPERATOR 5 > (timestamp, timestamptz),
    OPERATOR 1 < (timestamptz, date),
    OPERATOR 2 <= (timestamptz, date),
    OPERATOR 3 = (timestamptz, date),
    OPERATOR 4 >= (timestamptz, date),
    OPERATOR 5 > (timestamptz, date),
    OPERATOR 1 < (timestamptz, timestamp),
    OPERATOR 2 <= (timestamptz, timestamp),
    OPERATOR 3 = (timestamptz, timestamp),
    OPERATOR 4 >= (timestamptz, timestamp),
    OPERATOR 5 > (timestamptz, timestamp);

-- Valid indexes only (one being built, or left by a failed concurrent build,
-- may have no complete metapage), and no other session's temporary ones.
-- missing_ok: one the view's snapshot lists may have been dropped since, or
-- marked dead by a REINDEX CONCURRENTLY; it is left out rather than fail.
CREATE VIEW pg_stat_learned_indexes AS
    SELECT s.*
    FROM pg_class c
    JOIN pg_am am ON am.oid = c.relam AND am.amname = 'learned'
    JOIN pg_index i ON i.indexrelid = c.oid AND i.indisvalid
    CROSS JOIN LATERAL learned_index_stats(c.oid::regclass, missing_ok => true) s
    WHERE c.relkind = 'i' AND NOT pg_is_other_temp_schema(c.relnamespace)
      AND pg_relation_size(c.oid) > 0;

COMMENT ON VIEW pg_stat_learned_indexes IS 'one row per learned index: size, model error, delta, scans';
-- Readable by every role, as pg_stat_user_indexes is.
GRANT SELECT ON pg_stat_learned_indexes TO PUBLIC;

-- Retraining takes a lock that keeps VACUUM off the table and writes the
-- index anew; verifying reads the whole table. As amcheck's functions, they
-- are for superusers and the roles they grant them to.
REVOKE EXECUTE ON FUNCTION learned_retrain(regclass) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION learned_verify(regclass, bool) FROM PUBLIC;
