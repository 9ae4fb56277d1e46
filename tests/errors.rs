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

/// `pg_stat_learned_indexes` lists what every session can read: not another
/// session's temporary index (whose pages only that session can read), nor
/// an index a concurrent build left invalid (it may hold no complete
/// metapage), which `learned_index_stats` refuses by name.
#[test]
fn the_stats_view_skips_indexes_it_cannot_read() {
    let cluster = Cluster::start("stats_view", &[]);
    let mut c = cluster.connect();
    common::run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 20000) g;
         CREATE INDEX t_k ON t USING learned (k);",
    );
    // A concurrent build waits for older snapshots before it makes the
    // index valid: this one gives up meanwhile.
    let mut old = cluster.connect();
    common::run_each(
        &mut old,
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM t;",
    );
    c.batch_execute("SET statement_timeout = '2s'").unwrap();
    let failed = c
        .batch_execute("CREATE INDEX CONCURRENTLY t_k2 ON t USING learned (k)")
        .unwrap_err();
    assert!(
        common::db_message(&failed).contains("statement timeout"),
        "{failed}"
    );
    old.batch_execute("COMMIT").unwrap();
    c.batch_execute("RESET statement_timeout").unwrap();
    let mut temp = cluster.connect();
    common::run_each(
        &mut temp,
        "CREATE TEMP TABLE tt (k int8);
         INSERT INTO tt SELECT g FROM generate_series(1, 1000) g;
         CREATE INDEX tt_k ON tt USING learned (k);",
    );
    let listed = |c: &mut postgres::Client| -> Vec<String> {
        common::texts(
            c,
            "SELECT index_name FROM pg_stat_learned_indexes ORDER BY 1",
        )
    };
    assert_eq!(listed(&mut c), ["t_k"]);
    assert_eq!(listed(&mut temp), ["t_k", "tt_k"]);
    let refused = c
        .query_one("SELECT * FROM learned_index_stats('t_k2')", &[])
        .unwrap_err();
    assert_eq!(common::sqlstate(&refused), "55000", "{refused:?}");
    let message = common::db_message(&refused);
    assert!(message.contains("is not valid"), "{message}");
    // As the view reads an index: no row rather than an ERROR.
    let quiet = "SELECT count(*)::text FROM learned_index_stats('t_k2', missing_ok => true)";
    assert_eq!(common::texts(&mut c, quiet), ["0"]);
}

/// The view lists the indexes its snapshot saw; one dropped before the view
/// reads it (it waits for the table's lock meanwhile) is left out, not an
/// ERROR for every caller. (A REINDEX CONCURRENTLY drops the old index so,
/// after marking it not valid.)
#[test]
fn the_stats_view_passes_over_an_index_dropped_while_it_runs() {
    let cluster = Cluster::start("stats_drop", &[]);
    let mut c = cluster.connect();
    common::run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 1000) g;
         CREATE INDEX t_k ON t USING learned (k);
         CREATE TABLE u (k int8);
         INSERT INTO u SELECT g FROM generate_series(1, 1000) g;
         CREATE INDEX u_k ON u USING learned (k);",
    );
    let mut dropper = cluster.connect();
    common::run_each(&mut dropper, "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE");
    let mut v = cluster.connect();
    let pid = common::backend_pid(&mut v);
    let view = std::thread::spawn(move || {
        v.query(
            "SELECT index_name FROM pg_stat_learned_indexes ORDER BY 1",
            &[],
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect::<Vec<String>>())
    });
    common::wait_for("the view to wait for the table's lock", 30, || {
        common::wait_event(&mut c, pid) == "Lock:relation"
    });
    common::run_each(&mut dropper, "DROP INDEX t_k; COMMIT");
    assert_eq!(view.join().unwrap().unwrap(), ["u_k"]);
    let gone =
        "SELECT count(*)::text FROM learned_index_stats(123456789::regclass, missing_ok => true)";
    assert_eq!(common::texts(&mut c, gone), ["0"]);
}

/// `learned_retrain` and `learned_verify` are not for every role (as
/// amcheck's functions are not): a role not granted them is refused before
/// anything is locked; the statistics stay readable.
#[test]
fn retrain_and_verify_need_a_grant() {
    let cluster = Cluster::start("grants", &[]);
    let mut c = cluster.connect();
    common::run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 1000) g;
         CREATE INDEX t_k ON t USING learned (k);
         CREATE ROLE reader;
         GRANT SELECT ON t TO reader;
         SET ROLE reader;",
    );
    for f in [
        "learned_retrain('t_k')",
        "learned_verify('t_k')",
        "learned_verify('t_k', false)",
    ] {
        let refused = c.query_one(&format!("SELECT {f}"), &[]).unwrap_err();
        assert_eq!(
            common::sqlstate(&refused),
            "42501",
            "{f}: {}",
            common::db_message(&refused)
        );
    }
    let entries = common::texts(&mut c, "SELECT entries FROM learned_index_stats('t_k')");
    assert_eq!(entries, ["1000"]);
    let listed = "SELECT index_name FROM pg_stat_learned_indexes";
    assert_eq!(common::texts(&mut c, listed), ["t_k"]);
    common::run_each(
        &mut c,
        "RESET ROLE;
         GRANT EXECUTE ON FUNCTION learned_verify(regclass, bool) TO reader;
         SET ROLE reader;",
    );
    assert_eq!(
        common::texts(&mut c, "SELECT learned_verify('t_k')::text"),
        ["true"]
    );
}

/// The heap check of `learned_verify` evaluates the index's expressions,
/// the table owner's functions: it runs them as that owner (as amcheck
/// does), not as the superuser who verifies, and the caller is itself again
/// afterwards. (The function divides by a value the planner cannot fold:
/// PostgreSQL 18 plans a SQL function's body with its arguments as
/// constants, and would fold `$1 / 0` in a CASE arm it never takes.)
#[test]
fn verify_runs_index_expressions_as_the_table_owner() {
    let cluster = Cluster::start("verify_owner", &[]);
    let mut c = cluster.connect();
    common::run_each(
        &mut c,
        "CREATE ROLE tabowner;
         GRANT CREATE ON SCHEMA public TO tabowner;
         CREATE FUNCTION owner_only(int8) RETURNS int8 LANGUAGE sql IMMUTABLE
             AS $$ SELECT $1 / (current_user = 'tabowner')::int $$;
         CREATE TABLE t (k int8);
         ALTER TABLE t OWNER TO tabowner;
         SET ROLE tabowner;
         INSERT INTO t SELECT g FROM generate_series(1, 1000) g;
         CREATE INDEX t_e ON t USING learned (owner_only(k));
         RESET ROLE;",
    );
    assert_eq!(
        common::texts(&mut c, "SELECT learned_verify('t_e')::text"),
        ["true"]
    );
    assert_eq!(
        common::texts(&mut c, "SELECT current_user::text"),
        ["postgres"]
    );
}
