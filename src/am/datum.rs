//! Between PostgreSQL datums of the supported types and ordinals.

use crate::key::{KeyKind, RawValue};
use pgrx::pg_sys;

pub fn kind_of_type(typid: pg_sys::Oid) -> Option<KeyKind> {
    Some(match typid {
        pg_sys::INT2OID => KeyKind::Int2,
        pg_sys::INT4OID => KeyKind::Int4,
        pg_sys::INT8OID => KeyKind::Int8,
        pg_sys::DATEOID => KeyKind::Date,
        pg_sys::TIMESTAMPOID => KeyKind::Timestamp,
        pg_sys::TIMESTAMPTZOID => KeyKind::TimestampTz,
        pg_sys::FLOAT4OID => KeyKind::Float4,
        pg_sys::FLOAT8OID => KeyKind::Float8,
        _ => return None,
    })
}

/// The raw value of a datum of `kind`. All supported types are pass-by-value.
pub fn raw_value(kind: KeyKind, d: pg_sys::Datum) -> RawValue {
    let v = d.value();
    match kind {
        KeyKind::Int2 => RawValue::Int(v as i16 as i64),
        KeyKind::Int4 | KeyKind::Date => RawValue::Int(v as i32 as i64),
        KeyKind::Int8 | KeyKind::Timestamp | KeyKind::TimestampTz => RawValue::Int(v as i64),
        KeyKind::Float4 => RawValue::Float(f32::from_bits(v as u32) as f64),
        KeyKind::Float8 => RawValue::Float(f64::from_bits(v as u64)),
    }
}

pub fn ordinal(kind: KeyKind, d: pg_sys::Datum) -> u64 {
    kind.ordinal(raw_value(kind, d))
}

/// The datum an ordinal of `kind` came from, for index-only scans.
pub fn datum(kind: KeyKind, ord: u64) -> pg_sys::Datum {
    match (kind, kind.value(ord)) {
        (KeyKind::Int2, RawValue::Int(v)) => pg_sys::Datum::from(v as i16),
        (KeyKind::Int4 | KeyKind::Date, RawValue::Int(v)) => pg_sys::Datum::from(v as i32),
        (_, RawValue::Int(v)) => pg_sys::Datum::from(v),
        (KeyKind::Float4, RawValue::Float(f)) => pg_sys::Datum::from((f as f32).to_bits()),
        (_, RawValue::Float(f)) => pg_sys::Datum::from(f.to_bits()),
    }
}

/// Kind of the index's (single) key column.
///
/// # Safety
/// `index` must be an open index relation.
pub unsafe fn index_kind(index: pg_sys::Relation) -> KeyKind {
    let desc = (*index).rd_att;
    // PostgreSQL 18 puts `natts` compact attributes before the full ones.
    #[cfg(not(feature = "pg18"))]
    let attr = (*desc).attrs.as_ptr();
    #[cfg(feature = "pg18")]
    let attr = (*desc)
        .compact_attrs
        .as_ptr()
        .add((*desc).natts as usize)
        .cast::<pg_sys::FormData_pg_attribute>();
    let typid = (*attr).atttypid;
    kind_of_type(typid).unwrap_or_else(|| -> KeyKind {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "learned index \"{}\": type {} is not supported",
                crate::storage::page::relation_name(index),
                std::ffi::CStr::from_ptr(pg_sys::format_type_be(typid)).to_string_lossy()
            ),
            "Supported types: int2, int4, int8, float4, float8, date, timestamp, timestamptz."
        );
    })
}
