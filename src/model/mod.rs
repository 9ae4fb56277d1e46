//! The Recursive Model Index: a root linear model routes a key to one of many
//! linear leaf models; the leaf predicts the key's position in the sorted run and
//! bounds its own error, so the last-mile search reads a small window.
//!
//! The model is stored as one flat little-endian byte string (see [`layout`]) and
//! read in place through [`ModelView`]: the per-backend cache is a plain copy of
//! those bytes, so loading it costs a memcpy and a checksum, not a
//! deserialization, and it lives in PostgreSQL memory with no destructor to run.
//! Pure Rust: no pgrx here.

mod layout;
mod train;

pub use layout::{ModelError, ModelView};
pub use train::Trainer;

/// Where the lower bound of a key may lie in the run.
///
/// For a key `k`, let `lb(k)` be the number of run entries with ordinal `< k`.
/// The model guarantees `lo <= lb(k) <= hi` and predicts `pred` in that range.
/// `hi` may equal the run length (every key is smaller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub lo: u64,
    pub hi: u64,
    pub pred: u64,
}

#[cfg(test)]
mod tests;
