-- Every supported type builds, answers the comparison operators, sorts its
-- extreme values exactly as btree does, and returns them in index-only scans.

SELECT amname, amtype FROM pg_am WHERE amname = 'learned';
SELECT opcname, amvalidate(oid) FROM pg_opclass
WHERE opcmethod = (SELECT oid FROM pg_am WHERE amname = 'learned') ORDER BY opcname;

SET enable_seqscan = off;
SET enable_bitmapscan = off;

-- int2 / int4 / int8 with their extremes
CREATE TABLE ti (a int2, b int4, c int8);
INSERT INTO ti SELECT g, g * 1000, g::int8 * 1000000000 FROM generate_series(-300, 300) g;
INSERT INTO ti VALUES (-32768, -2147483648, -9223372036854775808), (32767, 2147483647, 9223372036854775807), (NULL, NULL, NULL);
CREATE INDEX ti_a ON ti USING learned (a);
CREATE INDEX ti_b ON ti USING learned (b);
CREATE INDEX ti_c ON ti USING learned (c);
SELECT a FROM ti ORDER BY a LIMIT 3;
SELECT a FROM ti ORDER BY a DESC LIMIT 3;
SELECT b FROM ti WHERE b >= 299000 ORDER BY b;
SELECT c FROM ti WHERE c < -299000000000 ORDER BY c DESC;
SELECT count(*) FROM ti WHERE a = 7 AND a <= 7 AND a >= 7;
EXPLAIN (COSTS OFF) SELECT c FROM ti WHERE c = 5000000000;
SELECT learned_verify('ti_a'), learned_verify('ti_b'), learned_verify('ti_c');

-- float4 / float8: -0 equals 0, NaN sorts above Infinity, all NaNs are equal
CREATE TABLE tf (r float4, d float8);
INSERT INTO tf VALUES ('NaN', 'NaN'), ('Infinity', 'Infinity'), ('-Infinity', '-Infinity'),
  ('-0', '-0'), ('0', '0'), (1.5, 1.5), (-1.5, -1.5), ('3.4e38', '1.7976931348623157e308'),
  ('-3.4e38', '-1.7976931348623157e308'), ('1e-45', '5e-324'), (NULL, NULL), ('NaN', '-NaN');
CREATE INDEX tf_r ON tf USING learned (r);
CREATE INDEX tf_d ON tf USING learned (d);
SELECT r FROM tf ORDER BY r;
SELECT d FROM tf ORDER BY d DESC;
SELECT count(*) FROM tf WHERE d = 0;
SELECT count(*) FROM tf WHERE d = '-0';
SELECT count(*) FROM tf WHERE r = 'NaN';
SELECT count(*) FROM tf WHERE d > 'Infinity';
SELECT count(*) FROM tf WHERE d < 0;
SELECT r FROM tf WHERE r > 1e-46::float8 AND r < 2 ORDER BY r;
EXPLAIN (COSTS OFF) SELECT r FROM tf WHERE r > 1.0::float8;
SELECT learned_verify('tf_r'), learned_verify('tf_d');

-- date / timestamp / timestamptz, infinities included
SET TimeZone = 'UTC';
CREATE TABLE tt (d date, ts timestamp, tz timestamptz);
INSERT INTO tt SELECT DATE '2024-01-01' + g, TIMESTAMP '2024-01-01' + g * INTERVAL '1 hour',
  TIMESTAMPTZ '2024-01-01 00:00+00' + g * INTERVAL '1 hour' FROM generate_series(0, 999) g;
INSERT INTO tt VALUES ('infinity', 'infinity', 'infinity'), ('-infinity', '-infinity', '-infinity'), (NULL, NULL, NULL),
  ('4713-01-01 BC', '4713-01-01 00:00 BC', '4713-01-01 00:00+00 BC');
CREATE INDEX tt_d ON tt USING learned (d);
CREATE INDEX tt_ts ON tt USING learned (ts);
CREATE INDEX tt_tz ON tt USING learned (tz);
SELECT d FROM tt ORDER BY d LIMIT 3;
SELECT ts FROM tt ORDER BY ts DESC LIMIT 3;
SELECT tz FROM tt WHERE tz BETWEEN '2024-01-02 00:00+00' AND '2024-01-02 03:00+00' ORDER BY tz;
-- cross-type: date against timestamp, timestamp against timestamptz
SELECT count(*) FROM tt WHERE d < TIMESTAMP '2024-01-05 12:00';
SELECT count(*) FROM tt WHERE d <= TIMESTAMP '2024-01-05 00:00';
SELECT count(*) FROM tt WHERE ts < TIMESTAMPTZ '2024-01-02 00:00+00';
SELECT count(*) FROM tt WHERE tz >= DATE '2024-02-01';
SELECT count(*) FROM tt WHERE ts < now();
EXPLAIN (COSTS OFF) SELECT ts FROM tt WHERE ts < now();
EXPLAIN (COSTS OFF) SELECT d FROM tt WHERE d = TIMESTAMP '2024-01-05 00:00';
SELECT learned_verify('tt_d'), learned_verify('tt_ts'), learned_verify('tt_tz');

-- unsupported types say so
CREATE TABLE tx (t text, n numeric);
CREATE INDEX ON tx USING learned (t);
CREATE INDEX ON tx USING learned (n);
-- an expression over a supported type is fine
CREATE INDEX ti_expr ON ti USING learned ((b / 1000));
SELECT count(*) FROM ti WHERE (b / 1000) BETWEEN 10 AND 19;
