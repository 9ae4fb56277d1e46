//! Page formats and buffer access. Every page change goes through Generic WAL
//! ([`wal`]) or, for a freshly built index, `log_newpage_range`.

pub mod amcache;
pub mod buffer;
pub mod codec;
pub mod delta;
pub mod extents;
pub mod meta;
pub mod model_pages;
pub mod packed;
pub mod page;
pub mod run;
pub mod search;
pub mod wal;

pub use buffer::Buf;
pub use meta::Meta;
