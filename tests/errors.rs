//! Errors a user reads are PostgreSQL's alone: with `RUST_BACKTRACE=1` in the
//! server's environment (a common shell setting), an invalid reloption gives
//! PostgreSQL's message and detail, with no Rust backtrace appended to the
//! DETAIL or written to the server log.

mod common;

use common::Cluster;

#[test]
fn reloption_errors_carry_no_rust_backtrace() {
    let cluster = Cluster::start_with_env("errors", &[], "RUST_BACKTRACE=1");
    let mut c = cluster.connect();
    c.batch_execute("CREATE TABLE t (k int8); CREATE INDEX t_k ON t USING learned (k)")
        .unwrap();
    let cases = [
        (
            "CREATE INDEX ON t USING learned (k) WITH (target_window = 0)",
            "value 0 out of bounds for option \"target_window\"",
            Some("Valid values are between \"2\" and \"65536\"."),
        ),
        (
            "CREATE INDEX ON t USING learned (k) WITH (target_window = 'abc')",
            "invalid value for integer option \"target_window\": abc",
            None,
        ),
        (
            "CREATE INDEX ON t USING learned (k) WITH (no_such_option = 1)",
            "unrecognized parameter \"no_such_option\"",
            None,
        ),
        (
            "ALTER INDEX t_k SET (target_window = 1)",
            "value 1 out of bounds for option \"target_window\"",
            Some("Valid values are between \"2\" and \"65536\"."),
        ),
    ];
    for (sql, message, detail) in cases {
        let err = c.batch_execute(sql).unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.message(), message, "{sql}");
        assert_eq!(db.detail(), detail, "{sql}");
        assert_eq!(db.code().code(), "22023", "{sql}");
    }
    let log = cluster.log();
    for sign in [
        "stack backtrace",
        "backtrace::",
        "rust_begin_unwind",
        "pgrx",
    ] {
        assert!(
            !log.contains(sign),
            "the server log shows a Rust backtrace:\n{log}"
        );
    }
}
