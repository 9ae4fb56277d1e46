CREATE EXTENSION learneddb;
-- EXPLAIN output that reads the same on every supported major: PostgreSQL 18
-- prints fractional row counts, "Index Searches" and "Disabled" lines.
CREATE FUNCTION explain_stable(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN ' || query LOOP
    CONTINUE WHEN line ~ '^\s*(Index Searches|Disabled): ';
    RETURN NEXT regexp_replace(line, 'rows=(\d+)\.00 ', 'rows=\1 ', 'g');
  END LOOP;
END
$$;
