//! `#[pg_test]` tests: the access method inside a transaction.

use pgrx::prelude::*;

#[pg_test]
fn builds_and_finds_every_key() {
    Spi::run("CREATE TABLE t AS SELECT g AS k FROM generate_series(1, 20000) g").unwrap();
    Spi::run("CREATE INDEX t_k ON t USING learned (k)").unwrap();
    Spi::run("SET enable_seqscan = off").unwrap();
    let n = Spi::get_one::<i64>("SELECT count(*) FROM t WHERE k BETWEEN 100 AND 199").unwrap();
    assert_eq!(n, Some(100));
    assert_eq!(Spi::get_one::<bool>("SELECT learned_verify('t_k')").unwrap(), Some(true));
}
