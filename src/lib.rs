//! learneddb: a learned index access method for PostgreSQL.
//!
//! `model` and `key` are pure Rust; `storage` and `am` connect them to
//! PostgreSQL's buffers, WAL and index AM API.

// `storage` and `am` pass `pg_sys::Relation` around as a handle: it is the open
// relation PostgreSQL gave the access-method callback, valid until the
// callback returns, and every function taking one only uses it within that.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod am;
pub mod error;
pub mod key;
pub mod model;
pub mod pause;
pub mod retrain;
pub mod stats;
pub mod storage;
pub mod verify;
pub mod worker;

::pgrx::pg_module_magic!();

pgrx::extension_sql_file!("../sql/learneddb.sql", name = "access_method", finalize);

#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    am::options::init();
    pause::init();
    storage::run::init();
    worker::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
