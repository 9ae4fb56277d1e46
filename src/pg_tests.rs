//! `#[pg_test]` tests: the access method inside a transaction.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    #[pg_test]
    fn builds_and_finds_every_key() {
        Spi::run("CREATE TABLE t AS SELECT g AS k FROM generate_series(1, 20000) g").unwrap();
        Spi::run("CREATE INDEX t_k ON t USING learned (k)").unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        assert_eq!(count("SELECT count(*) FROM t WHERE k BETWEEN 100 AND 199"), 100);
        assert_eq!(count("SELECT count(*) FROM t WHERE k = 20000"), 1);
        assert_eq!(count("SELECT count(*) FROM t WHERE k > 20000"), 0);
        assert_eq!(Spi::get_one::<bool>("SELECT learned_verify('t_k')").unwrap(), Some(true));
    }
}
