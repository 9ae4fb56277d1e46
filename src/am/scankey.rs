//! Scan keys to a plan: the ordinal intervals to read, in order, and whether
//! NULL entries are wanted. Conversions of arguments happen here, once per
//! rescan; the lookup path then compares `u64` ordinals only.

use super::datum::{kind_of_type, raw_value};
use crate::key::{equal_range, KeyKind, Strategy};
use pgrx::pg_sys;
use pgrx::prelude::*;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Disjoint, sorted, inclusive ordinal intervals of non-null keys to return.
    pub intervals: Vec<(u64, u64)>,
    /// Return entries whose key is NULL.
    pub nulls: bool,
    /// Some interval is only a superset of the condition (time zone dependent
    /// comparisons): the executor must recheck.
    pub recheck: bool,
}

impl Plan {
    /// Whether ordinal `k` falls in one of the intervals.
    pub fn contains(&self, k: u64) -> bool {
        let i = self.intervals.partition_point(|&(_, hi)| hi < k);
        i < self.intervals.len() && self.intervals[i].0 <= k
    }

    /// Whether the intervals reaching `floor` or above are single keys.
    pub fn points_from(&self, floor: u64) -> bool {
        self.intervals
            .iter()
            .all(|&(lo, hi)| hi < floor || lo == hi)
    }

    /// The smallest interval covering all of them.
    pub fn hull(&self) -> Option<(u64, u64)> {
        Some((self.intervals.first()?.0, self.intervals.last()?.1))
    }
}

/// Sorts and merges overlapping or adjacent intervals.
pub fn normalize(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Intersection of two normalized interval lists.
pub fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Builds the plan for `keys` on a column of `kind` into `out`, reusing its
/// memory: a nested loop rescans once per outer row, and a probe of one key
/// (the inner side's usual scan key) then allocates nothing.
///
/// # Safety
/// `keys` must be the scan keys the executor passed to `amrescan`.
pub unsafe fn plan_into(kind: KeyKind, keys: &[pg_sys::ScanKeyData], out: &mut Plan) {
    match keys {
        [sk] if sk.sk_flags == 0 => {
            // What `plan` makes of one scalar key, without its vectors.
            let (strategy, arg_kind) = operator(kind, sk);
            let r = equal_range(kind, arg_kind, raw_value(arg_kind, sk.sk_argument));
            out.intervals.clear();
            out.intervals.extend(r.interval(strategy));
            out.nulls = false;
            out.recheck = r.lossy;
        }
        _ => *out = plan(kind, keys),
    }
}

/// The comparison a non-null scan key makes, and the kind of its argument.
fn operator(kind: KeyKind, sk: &pg_sys::ScanKeyData) -> (Strategy, KeyKind) {
    let Some(strategy) = Strategy::from_number(sk.sk_strategy) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!(
                "learned index: unsupported strategy number {}",
                sk.sk_strategy
            )
        );
    };
    let arg_kind = if sk.sk_subtype == pg_sys::InvalidOid {
        kind
    } else {
        kind_of_type(sk.sk_subtype).unwrap_or_else(|| -> KeyKind {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "learned index: comparison with type {} is not supported",
                    sk.sk_subtype.to_u32()
                )
            );
        })
    };
    (strategy, arg_kind)
}

/// Builds the plan for `keys` on a column of `kind`.
///
/// # Safety
/// `keys` must be the scan keys the executor passed to `amrescan`.
pub unsafe fn plan(kind: KeyKind, keys: &[pg_sys::ScanKeyData]) -> Plan {
    // None: no comparison yet, every non-null key.
    let mut intervals: Option<Vec<(u64, u64)>> = None;
    let (mut nonnull, mut nulls, mut recheck) = (true, true, false);
    for sk in keys {
        let flags = sk.sk_flags as u32;
        if flags & pg_sys::SK_ISNULL != 0 {
            if flags & pg_sys::SK_SEARCHNULL != 0 {
                nonnull = false;
            } else if flags & pg_sys::SK_SEARCHNOTNULL != 0 {
                nulls = false;
            } else {
                // A comparison with NULL matches nothing.
                nonnull = false;
                nulls = false;
            }
            continue;
        }
        nulls = false;
        let (strategy, arg_kind) = operator(kind, sk);
        let mut set = Vec::new();
        let mut add = |d: pg_sys::Datum| {
            let r = equal_range(kind, arg_kind, raw_value(arg_kind, d));
            recheck |= r.lossy;
            if let Some(iv) = r.interval(strategy) {
                set.push(iv);
            }
        };
        if flags & pg_sys::SK_SEARCHARRAY != 0 {
            for d in array_elements(sk.sk_argument) {
                add(d);
            }
        } else {
            add(sk.sk_argument);
        }
        let set = normalize(set);
        intervals = Some(match intervals {
            None => set,
            Some(iv) => intersect(&iv, &set),
        });
    }
    let intervals = match (nonnull, intervals) {
        (false, _) => Vec::new(),
        (true, None) => vec![(0, u64::MAX)],
        (true, Some(iv)) => iv,
    };
    Plan {
        intervals,
        nulls,
        recheck,
    }
}

/// The non-null elements of an array datum.
unsafe fn array_elements(d: pg_sys::Datum) -> Vec<pg_sys::Datum> {
    let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
    let elemtype = (*arr).elemtype;
    let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
    pg_sys::get_typlenbyvalalign(elemtype, &mut len, &mut byval, &mut align);
    let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
    let mut nulls: *mut bool = std::ptr::null_mut();
    let mut n = 0;
    pg_sys::deconstruct_array(
        arr, elemtype, len as i32, byval, align, &mut elems, &mut nulls, &mut n,
    );
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        if !*nulls.add(i) {
            out.push(*elems.add(i));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_merges_adjacent_and_overlapping() {
        assert_eq!(
            normalize(vec![(5, 6), (1, 2), (3, 3), (10, 20), (15, 30)]),
            vec![(1, 3), (5, 6), (10, 30)]
        );
        assert_eq!(normalize(vec![(1, 2), (3, 3)]), vec![(1, 3)]);
        assert_eq!(normalize(vec![(0, u64::MAX), (5, 5)]), vec![(0, u64::MAX)]);
    }

    #[test]
    fn intersect_keeps_overlaps_only() {
        assert_eq!(
            intersect(&[(0, 10), (20, 30)], &[(5, 25)]),
            vec![(5, 10), (20, 25)]
        );
        assert_eq!(intersect(&[(0, 10)], &[(11, 12)]), vec![]);
    }
}
