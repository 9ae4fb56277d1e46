//! The index access method: one file per group of callbacks.

pub mod build;
pub mod cost;
pub mod datum;
pub mod handler;
pub mod insert;
pub mod options;
pub mod parallel;
pub mod scan;
pub mod scankey;
pub mod sort;
pub mod vacuum;
pub mod validate;
