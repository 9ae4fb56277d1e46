//! Order-preserving `u64` encodings ("ordinals") of the supported key types.
//!
//! Everything inside the index works on ordinals: `a < b` as values exactly when
//! `ord(a) < ord(b)`. Types of one operator family share one ordinal space when
//! PostgreSQL compares them by widening (all integers are compared as `int8`, all
//! floats as `float8`), so a cross-type comparison needs no conversion at all.
//! Dates (days) and timestamps (microseconds) live in different spaces; comparing
//! across them goes through [`EqualRange`]. Pure Rust: no pgrx here.

const SIGN: u64 = 1 << 63;

/// Microseconds per day, as PostgreSQL's `USECS_PER_DAY`.
pub const USECS_PER_DAY: i64 = 86_400_000_000;
/// PostgreSQL's `DATEVAL_NOBEGIN` / `DATEVAL_NOEND`: `-infinity` / `infinity` dates.
pub const DATE_NOBEGIN: i32 = i32::MIN;
pub const DATE_NOEND: i32 = i32::MAX;
/// PostgreSQL's `DT_NOBEGIN` / `DT_NOEND` for timestamps.
pub const TS_NOBEGIN: i64 = i64::MIN;
pub const TS_NOEND: i64 = i64::MAX;
/// First date (days since 2000-01-01) that no longer fits in a timestamp
/// (`TIMESTAMP_END_JULIAN - POSTGRES_EPOCH_JDATE`), and the first that does
/// (`DATETIME_MIN_JULIAN - POSTGRES_EPOCH_JDATE`).
const DATE_TS_END: i64 = 109_203_528 - 2_451_545;
const DATE_TS_MIN: i64 = -2_451_545;
/// Largest UTC offset a time zone can have (PostgreSQL caps it below 16 hours),
/// rounded up to a day: the slack for comparisons that depend on `TimeZone`.
pub const TZ_SLACK_USECS: i64 = USECS_PER_DAY;

/// The key types the access method indexes. The discriminant is stored in the metapage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KeyKind {
    Int2 = 1,
    Int4 = 2,
    Int8 = 3,
    Date = 4,
    Timestamp = 5,
    TimestampTz = 6,
    Float4 = 7,
    Float8 = 8,
}

/// The ordinal space a kind's values live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// `int2`, `int4`, `int8`: the value as `i64`.
    Integer,
    /// `float4`, `float8`: the value as `f64`.
    Float,
    /// `date`: days since 2000-01-01 as `i64`.
    Days,
    /// `timestamp`, `timestamptz`: microseconds since 2000-01-01 as `i64`.
    Micros,
}

impl KeyKind {
    pub const ALL: [KeyKind; 8] = [
        KeyKind::Int2,
        KeyKind::Int4,
        KeyKind::Int8,
        KeyKind::Date,
        KeyKind::Timestamp,
        KeyKind::TimestampTz,
        KeyKind::Float4,
        KeyKind::Float8,
    ];

    pub fn from_u8(v: u8) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// The SQL name of the type.
    pub fn sql_name(self) -> &'static str {
        match self {
            KeyKind::Int2 => "smallint",
            KeyKind::Int4 => "integer",
            KeyKind::Int8 => "bigint",
            KeyKind::Date => "date",
            KeyKind::Timestamp => "timestamp without time zone",
            KeyKind::TimestampTz => "timestamp with time zone",
            KeyKind::Float4 => "real",
            KeyKind::Float8 => "double precision",
        }
    }

    pub fn space(self) -> Space {
        match self {
            KeyKind::Int2 | KeyKind::Int4 | KeyKind::Int8 => Space::Integer,
            KeyKind::Float4 | KeyKind::Float8 => Space::Float,
            KeyKind::Date => Space::Days,
            KeyKind::Timestamp | KeyKind::TimestampTz => Space::Micros,
        }
    }

    /// Whether comparing a value of this kind with one of `other` depends on the
    /// session's `TimeZone` (PostgreSQL converts through local time). Such
    /// comparisons are answered from a slightly wider range and rechecked.
    pub fn tz_dependent_with(self, other: KeyKind) -> bool {
        let tz = |k| k == KeyKind::TimestampTz;
        let local = |k| matches!(k, KeyKind::Date | KeyKind::Timestamp);
        (tz(self) && local(other)) || (local(self) && tz(other))
    }

    /// Ordinal of a value given as its raw 64-bit datum payload: the integer for
    /// integer/date/timestamp kinds, the IEEE bits (`f32` widened to `f64` for
    /// `Float4`) for floats.
    pub fn ordinal(self, raw: RawValue) -> u64 {
        match raw {
            RawValue::Int(v) => ord_from_i64(v),
            RawValue::Float(v) => ord_from_f64(v),
        }
    }

    /// Inverse of [`KeyKind::ordinal`] for ordinals that came from this kind.
    pub fn value(self, ord: u64) -> RawValue {
        match self.space() {
            Space::Float => RawValue::Float(f64_from_ord(ord)),
            _ => RawValue::Int(i64_from_ord(ord)),
        }
    }
}

/// A key value in the form the ordinal functions take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RawValue {
    Int(i64),
    Float(f64),
}

#[inline]
pub fn ord_from_i64(v: i64) -> u64 {
    (v as u64) ^ SIGN
}

#[inline]
pub fn i64_from_ord(o: u64) -> i64 {
    (o ^ SIGN) as i64
}

/// The one NaN every NaN is stored as: PostgreSQL treats all NaNs as equal and
/// greater than every other value, `+Infinity` included.
const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

/// Float ordinal: IEEE bits made monotone (negative values flipped). All NaNs map
/// to one ordinal above `+Infinity`. `-0.0` and `+0.0` get adjacent ordinals so
/// that an index-only scan can return the sign, and [`f64_equal_range`] makes them
/// one key for searching.
#[inline]
pub fn ord_from_f64(v: f64) -> u64 {
    let bits = if v.is_nan() {
        CANONICAL_NAN
    } else {
        v.to_bits()
    };
    if bits & SIGN != 0 {
        !bits
    } else {
        bits | SIGN
    }
}

#[inline]
pub fn f64_from_ord(o: u64) -> f64 {
    if o & SIGN != 0 {
        f64::from_bits(o & !SIGN)
    } else {
        f64::from_bits(!o)
    }
}

/// The ordinals that a search argument is equal to, in the column's ordinal space,
/// as an inclusive range `[lo, hi]` over `i128` so that "between two ordinals"
/// can be said: when `lo == hi + 1` no stored value equals the argument, which
/// lies strictly between ordinals `hi` and `lo`.
///
/// `lossy` marks ranges that are only a superset (the comparison depends on the
/// session time zone): the scan widens the operator's range and rechecks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EqualRange {
    pub lo: i128,
    pub hi: i128,
    pub lossy: bool,
}

/// Inclusive ordinal interval selected by one comparison; `None` when empty.
pub type Interval = Option<(u64, u64)>;

/// btree strategy numbers, which the operator classes use as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Less = 1,
    LessEqual = 2,
    Equal = 3,
    GreaterEqual = 4,
    Greater = 5,
}

impl Strategy {
    pub fn from_number(n: u16) -> Option<Strategy> {
        Some(match n {
            1 => Strategy::Less,
            2 => Strategy::LessEqual,
            3 => Strategy::Equal,
            4 => Strategy::GreaterEqual,
            5 => Strategy::Greater,
            _ => return None,
        })
    }
}

impl EqualRange {
    pub fn exact(o: u64) -> Self {
        EqualRange {
            lo: o as i128,
            hi: o as i128,
            lossy: false,
        }
    }

    /// Strictly above ordinal `o` and below `o + 1`.
    pub fn just_above(o: u64) -> Self {
        EqualRange {
            lo: o as i128 + 1,
            hi: o as i128,
            lossy: false,
        }
    }

    /// The ordinals selected by `column <op> argument`.
    pub fn interval(self, strategy: Strategy) -> Interval {
        const MAX: i128 = u64::MAX as i128;
        let (lo, hi) = match (strategy, self.lossy) {
            (Strategy::Less, false) => (0, self.lo - 1),
            (Strategy::Less | Strategy::LessEqual, _) => (0, self.hi),
            (Strategy::Equal, _) => (self.lo, self.hi),
            (Strategy::GreaterEqual | Strategy::Greater, true) => (self.lo, MAX),
            (Strategy::GreaterEqual, false) => (self.lo, MAX),
            (Strategy::Greater, false) => (self.hi + 1, MAX),
        };
        let (lo, hi) = (lo.max(0), hi.min(MAX));
        (lo <= hi).then_some((lo as u64, hi as u64))
    }
}

/// Where an argument of kind `arg` with raw value `v` falls in the ordinal space of
/// a column of kind `col`. Both kinds must be of one operator family.
pub fn equal_range(col: KeyKind, arg: KeyKind, v: RawValue) -> EqualRange {
    match (col.space(), arg.space(), v) {
        (Space::Float, Space::Float, RawValue::Float(f)) => f64_equal_range(f),
        (Space::Integer, Space::Integer, RawValue::Int(i)) => EqualRange::exact(ord_from_i64(i)),
        (Space::Days, Space::Days, RawValue::Int(d)) => EqualRange::exact(ord_from_i64(d)),
        (Space::Days, Space::Micros, RawValue::Int(ts)) => {
            if col.tz_dependent_with(arg) {
                days_around_timestamptz(ts)
            } else {
                timestamp_among_days(ts)
            }
        }
        (Space::Micros, Space::Days, RawValue::Int(d)) => {
            let r = date_among_timestamps(d);
            if col.tz_dependent_with(arg) {
                widen_for_tz(r)
            } else {
                r
            }
        }
        (Space::Micros, Space::Micros, RawValue::Int(ts)) => {
            let r = EqualRange::exact(ord_from_i64(ts));
            if col.tz_dependent_with(arg) {
                widen_for_tz(r)
            } else {
                r
            }
        }
        _ => panic!("equal_range: {col:?} and {arg:?} are not in one operator family"),
    }
}

/// `-0.0` and `+0.0` are one key: their ordinals are adjacent.
pub fn f64_equal_range(v: f64) -> EqualRange {
    if v == 0.0 {
        EqualRange {
            lo: ord_from_f64(-0.0) as i128,
            hi: ord_from_f64(0.0) as i128,
            lossy: false,
        }
    } else {
        EqualRange::exact(ord_from_f64(v))
    }
}

/// A timestamp compared with dates: PostgreSQL converts the date to midnight.
fn timestamp_among_days(ts: i64) -> EqualRange {
    match ts {
        TS_NOBEGIN => EqualRange::exact(ord_from_i64(DATE_NOBEGIN as i64)),
        TS_NOEND => EqualRange::exact(ord_from_i64(DATE_NOEND as i64)),
        _ => {
            let day = ts.div_euclid(USECS_PER_DAY);
            if ts.rem_euclid(USECS_PER_DAY) == 0 {
                EqualRange::exact(ord_from_i64(day))
            } else {
                EqualRange::just_above(ord_from_i64(day))
            }
        }
    }
}

/// A date compared with timestamps: midnight of that day. Dates beyond the
/// timestamp range sort between every finite timestamp and the infinities, as
/// PostgreSQL's `date2timestamp_opt_overflow` makes them.
pub fn date_among_timestamps(d: i64) -> EqualRange {
    if d == DATE_NOBEGIN as i64 {
        EqualRange::exact(ord_from_i64(TS_NOBEGIN))
    } else if d == DATE_NOEND as i64 {
        EqualRange::exact(ord_from_i64(TS_NOEND))
    } else if d >= DATE_TS_END {
        EqualRange::just_above(ord_from_i64(TS_NOEND - 1))
    } else if d < DATE_TS_MIN {
        EqualRange::just_above(ord_from_i64(TS_NOBEGIN))
    } else {
        EqualRange::exact(ord_from_i64(d * USECS_PER_DAY))
    }
}

/// Local and UTC time differ by less than [`TZ_SLACK_USECS`]; infinities map to
/// themselves whatever the zone.
fn widen_for_tz(r: EqualRange) -> EqualRange {
    let inf = [
        ord_from_i64(TS_NOBEGIN) as i128,
        ord_from_i64(TS_NOEND) as i128,
    ];
    if r.lo == r.hi && inf.contains(&r.lo) {
        return r;
    }
    let slack = TZ_SLACK_USECS as i128;
    EqualRange {
        lo: (r.lo - slack).max(ord_from_i64(TS_NOBEGIN) as i128 + 1),
        hi: (r.hi + slack).min(ord_from_i64(TS_NOEND) as i128 - 1),
        lossy: true,
    }
}

/// Dates whose local midnight may compare equal to UTC instant `ts`.
fn days_around_timestamptz(ts: i64) -> EqualRange {
    match ts {
        TS_NOBEGIN | TS_NOEND => timestamp_among_days(ts),
        _ => {
            let lo = (ts - TZ_SLACK_USECS).div_euclid(USECS_PER_DAY);
            let hi = (ts + TZ_SLACK_USECS).div_euclid(USECS_PER_DAY) + 1;
            EqualRange {
                lo: ord_from_i64(lo) as i128,
                hi: ord_from_i64(hi) as i128,
                lossy: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    fn float_cmp(a: f64, b: f64) -> std::cmp::Ordering {
        // PostgreSQL's float8 comparison: NaNs equal each other and sort last.
        match (a.is_nan(), b.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => a.partial_cmp(&b).unwrap(),
        }
    }

    fn interesting_floats() -> Vec<f64> {
        vec![
            f64::NEG_INFINITY,
            f64::MIN,
            -1.5,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1e-300,
            1.0,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
            -f64::NAN,
            f32::MAX as f64,
            f32::MIN_POSITIVE as f64,
        ]
    }

    #[test]
    fn float_extremes_sort_like_postgres() {
        let v = interesting_floats();
        for &a in &v {
            for &b in &v {
                let by_ord = ord_from_f64(a).cmp(&ord_from_f64(b));
                let want = float_cmp(a, b);
                // Zeros are one key but have adjacent ordinals.
                if a == 0.0 && b == 0.0 {
                    continue;
                }
                assert_eq!(by_ord, want, "{a} vs {b}");
            }
        }
        assert_eq!(ord_from_f64(f64::NAN), ord_from_f64(-f64::NAN));
        assert_eq!(ord_from_f64(-0.0) + 1, ord_from_f64(0.0));
        assert!(ord_from_f64(f64::INFINITY) < ord_from_f64(f64::NAN));
    }

    #[test]
    fn zero_equal_range_selects_both_zeros() {
        for z in [0.0, -0.0] {
            let r = f64_equal_range(z);
            let eq = r.interval(Strategy::Equal).unwrap();
            assert_eq!(eq, (ord_from_f64(-0.0), ord_from_f64(0.0)));
            let lt = r.interval(Strategy::Less).unwrap();
            assert_eq!(lt.1 + 1, ord_from_f64(-0.0));
            let gt = r.interval(Strategy::Greater).unwrap();
            assert_eq!(gt.0, ord_from_f64(0.0) + 1);
        }
    }

    #[test]
    fn strategies_on_exact_and_between() {
        let e = EqualRange::exact(10);
        assert_eq!(e.interval(Strategy::Less), Some((0, 9)));
        assert_eq!(e.interval(Strategy::LessEqual), Some((0, 10)));
        assert_eq!(e.interval(Strategy::Equal), Some((10, 10)));
        assert_eq!(e.interval(Strategy::GreaterEqual), Some((10, u64::MAX)));
        assert_eq!(e.interval(Strategy::Greater), Some((11, u64::MAX)));
        let b = EqualRange::just_above(10);
        assert_eq!(b.interval(Strategy::Less), Some((0, 10)));
        assert_eq!(b.interval(Strategy::LessEqual), Some((0, 10)));
        assert_eq!(b.interval(Strategy::Equal), None);
        assert_eq!(b.interval(Strategy::GreaterEqual), Some((11, u64::MAX)));
        assert_eq!(b.interval(Strategy::Greater), Some((11, u64::MAX)));
        assert_eq!(EqualRange::exact(0).interval(Strategy::Less), None);
        assert_eq!(
            EqualRange::exact(u64::MAX).interval(Strategy::Greater),
            None
        );
    }

    #[test]
    fn dates_against_timestamps() {
        // 2000-01-02 00:00 equals date 1; 2000-01-02 00:00:01 lies after it.
        let r = equal_range(
            KeyKind::Date,
            KeyKind::Timestamp,
            RawValue::Int(USECS_PER_DAY),
        );
        assert_eq!(r, EqualRange::exact(ord_from_i64(1)));
        let r = equal_range(
            KeyKind::Date,
            KeyKind::Timestamp,
            RawValue::Int(USECS_PER_DAY + 1),
        );
        assert_eq!(r, EqualRange::just_above(ord_from_i64(1)));
        let r = equal_range(KeyKind::Date, KeyKind::Timestamp, RawValue::Int(-1));
        assert_eq!(r, EqualRange::just_above(ord_from_i64(-1)));
        let r = equal_range(
            KeyKind::Timestamp,
            KeyKind::Date,
            RawValue::Int(DATE_NOEND as i64),
        );
        assert_eq!(r, EqualRange::exact(ord_from_i64(TS_NOEND)));
        // A date past the timestamp range: above every finite timestamp, below infinity.
        let r = equal_range(
            KeyKind::Timestamp,
            KeyKind::Date,
            RawValue::Int(DATE_TS_END + 5),
        );
        let gt = r.interval(Strategy::Greater).unwrap();
        assert_eq!(gt, (ord_from_i64(TS_NOEND), u64::MAX));
        assert!(r.interval(Strategy::Less).unwrap().1 == ord_from_i64(TS_NOEND - 1));
    }

    #[test]
    fn tz_dependent_ranges_are_supersets() {
        let ts = 123 * USECS_PER_DAY + 5;
        let r = equal_range(KeyKind::Timestamp, KeyKind::TimestampTz, RawValue::Int(ts));
        assert!(r.lossy);
        let (lo, hi) = r.interval(Strategy::Equal).unwrap();
        assert!(lo <= ord_from_i64(ts - 16 * 3_600_000_000));
        assert!(hi >= ord_from_i64(ts + 16 * 3_600_000_000));
        // Infinity is infinity in every zone.
        let r = equal_range(
            KeyKind::Timestamp,
            KeyKind::TimestampTz,
            RawValue::Int(TS_NOEND),
        );
        assert!(!r.lossy);
        let r = equal_range(KeyKind::Date, KeyKind::TimestampTz, RawValue::Int(ts));
        let (lo, hi) = r.interval(Strategy::Equal).unwrap();
        assert!(lo <= ord_from_i64(122) && hi >= ord_from_i64(124));
    }

    proptest! {
        #[test]
        fn integers_preserve_order_and_round_trip(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), ord_from_i64(a).cmp(&ord_from_i64(b)));
            prop_assert_eq!(i64_from_ord(ord_from_i64(a)), a);
        }

        #[test]
        fn floats_preserve_order_and_round_trip(a: f64, b: f64) {
            if !(a == 0.0 && b == 0.0) {
                prop_assert_eq!(float_cmp(a, b), ord_from_f64(a).cmp(&ord_from_f64(b)));
            }
            if !a.is_nan() {
                prop_assert_eq!(f64_from_ord(ord_from_f64(a)).to_bits(), a.to_bits());
            }
        }

        #[test]
        fn float4_round_trips_through_float8(a: f32) {
            let back = f64_from_ord(ord_from_f64(a as f64)) as f32;
            if a.is_nan() { prop_assert!(back.is_nan()); } else { prop_assert_eq!(back.to_bits(), a.to_bits()); }
        }

        #[test]
        fn strategy_intervals_match_comparisons(arg: i64, v: i64) {
            let r = EqualRange::exact(ord_from_i64(arg));
            let o = ord_from_i64(v);
            let inside = |s| r.interval(s).is_some_and(|(lo, hi)| lo <= o && o <= hi);
            prop_assert_eq!(inside(Strategy::Less), v < arg);
            prop_assert_eq!(inside(Strategy::LessEqual), v <= arg);
            prop_assert_eq!(inside(Strategy::Equal), v == arg);
            prop_assert_eq!(inside(Strategy::GreaterEqual), v >= arg);
            prop_assert_eq!(inside(Strategy::Greater), v > arg);
        }

        #[test]
        fn date_vs_timestamp_intervals_match_midnight_comparison(d in -3_000_000i64..110_000_000, ts in -211_813_488_000_000_000i64..9_223_371_331_200_000_000) {
            // column date d, argument timestamp ts: d <op> ts  <=>  midnight(d) <op> ts.
            let r = equal_range(KeyKind::Date, KeyKind::Timestamp, RawValue::Int(ts));
            let o = ord_from_i64(d);
            let mid = d as i128 * USECS_PER_DAY as i128;
            let inside = |s| r.interval(s).is_some_and(|(lo, hi)| lo <= o && o <= hi);
            prop_assert_eq!(inside(Strategy::Less), mid < ts as i128);
            prop_assert_eq!(inside(Strategy::Equal), mid == ts as i128);
            prop_assert_eq!(inside(Strategy::Greater), mid > ts as i128);
        }
    }
}
