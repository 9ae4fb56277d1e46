//! `aminsert`: new entries go to the delta, WAL-logged.

use super::datum::{index_kind, ordinal};
use crate::storage::delta;
use crate::storage::run::tid_from_ptr;
use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_guard]
#[allow(clippy::too_many_arguments)] // the signature is PostgreSQL's
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    _heap: pg_sys::Relation,
    _check_unique: pg_sys::IndexUniqueCheck::Type,
    _index_unchanged: bool,
    _index_info: *mut pg_sys::IndexInfo,
) -> bool {
    // SAFETY: the executor passes one value and null flag for our one column,
    // and a valid heap TID.
    let key = (!*isnull).then(|| ordinal(index_kind(index), *values));
    delta::insert(index, key, tid_from_ptr(&*heap_tid));
    false
}
