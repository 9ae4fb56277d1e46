//! Errors a user reads are PostgreSQL's: raised with `ereport`, a SQLSTATE and
//! a message, never with a Rust backtrace attached.
//!
//! pgrx turns an ERROR raised inside a PostgreSQL function into a Rust panic
//! and re-raises it at the `#[pg_guard]` boundary, appending the Rust
//! backtrace to its DETAIL when `RUST_BACKTRACE` is set in the server's
//! environment. [`pg_call`] catches such an error and raises it again as it
//! was, with PostgreSQL's words alone.

use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;

/// Runs `f`, which calls into PostgreSQL; an ERROR it raises is raised again
/// with its SQLSTATE, message, detail and hint, and `context` (if any) added
/// to the message.
pub fn pg_call<T>(f: impl FnOnce() -> T, context: impl FnOnce() -> Option<String>) -> T {
    // A bare catch_unwind, not PgTryBuilder: this wraps every buffer read, and
    // the builder allocates its handler table on each call. Nothing of the
    // caller's is left half-changed by an ERROR in `f`: it is re-raised at once.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => match payload.downcast::<CaughtError>() {
            Ok(caught) => match *caught {
                CaughtError::PostgresError(r) => {
                    let message = match context() {
                        Some(c) => format!("{} ({c})", r.message()),
                        None => r.message().to_string(),
                    };
                    let mut report = ErrorReport::new(r.sql_error_code(), message, "learneddb");
                    if let Some(d) = r.detail() {
                        report = report.set_detail(d);
                    }
                    if let Some(h) = r.hint() {
                        report = report.set_hint(h);
                    }
                    report.report(PgLogLevel::ERROR);
                    unreachable!("an ERROR does not return")
                }
                other => std::panic::resume_unwind(Box::new(other)),
            },
            Err(payload) => std::panic::resume_unwind(payload),
        },
    }
}
