//! The stored form of the model and the functions that evaluate it in place.
//!
//! ```text
//! offset  field
//!      0  magic u32, version u32
//!      8  nkeys u64, nleaves u64, key_min u64
//!     32  root slope f64, root intercept f64, root err_lo u32, root err_hi u32
//!     56  max window u32, mean window f32, checksum u64 (FNV-1a of everything else)
//!     72  first_key [u64; L]   smallest key routed to each leaf
//!         start     [u64; L+1] run position where each leaf begins; start[L] = nkeys
//!         slope     [f64; L]
//!         intercept [f64; L]
//!         err       [u32; 2L]  (err_lo, err_hi) per leaf
//! ```
//! Training and lookup call the same `predict` functions below, so the stored
//! error bounds hold bit for bit for the predictions a scan makes.

use super::Window;

const MAGIC: u32 = 0x4C52_4D49; // "LRMI"
/// 2: a leaf predicts positions from its start (`start + floor(intercept +
/// slope * x)`), so a leaf moved by a whole number of positions predicts
/// exactly what it did, moved (a partial merge moves the leaves after the
/// stretch it rewrites). 1: from the run's start; read as it is.
const VERSION: u32 = 2;
const FROM_RUN_START_VERSION: u32 = 1;
const HEADER: usize = 72;
const CHECKSUM_AT: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
    Truncated { len: usize, need: usize },
    BadMagic(u32),
    BadVersion(u32),
    BadChecksum,
    BadShape(&'static str),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::Truncated { len, need } => write!(f, "model is {len} bytes, needs {need}"),
            ModelError::BadMagic(m) => write!(f, "model magic {m:#x} is wrong"),
            ModelError::BadVersion(v) => write!(f, "model format version {v} is not supported"),
            ModelError::BadChecksum => write!(f, "model checksum does not match"),
            ModelError::BadShape(what) => write!(f, "model is inconsistent: {what}"),
        }
    }
}

/// Parameters of one leaf as the trainer produces them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Leaf {
    pub first_key: u64,
    pub start: u64,
    pub slope: f64,
    pub intercept: f64,
    pub err_lo: u32,
    pub err_hi: u32,
    /// Whether the intercept counts from the leaf's start (version 2) or
    /// from the run's (version 1).
    pub from_start: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Root {
    pub key_min: u64,
    pub slope: f64,
    pub intercept: f64,
    pub err_lo: u32,
    pub err_hi: u32,
}

/// `floor(intercept + slope * x)` clamped to `[lo, hi]`. Monotone non-decreasing
/// in `x` for `slope >= 0`, which the error bounds for absent keys rely on.
///
/// Without `f64::floor`, which baseline x86-64 has no instruction for (it is a
/// libm call, twice a lookup): above `lo >= 0` the value is positive, where
/// truncation is the floor, and `floor(v) <= lo` and `v <= lo` pick the same
/// answer for every position below 2^53 (where `lo as f64` is exact).
#[inline]
pub(crate) fn linear_floor(slope: f64, intercept: f64, x: f64, lo: u64, hi: u64) -> u64 {
    let v = intercept + slope * x;
    if v.is_nan() || v <= lo as f64 {
        lo
    } else if v >= hi as f64 {
        hi
    } else {
        (v as u64).max(lo).min(hi)
    }
}

#[inline]
pub(crate) fn root_predict(root: &Root, nleaves: u64, key: u64) -> u64 {
    let x = key.saturating_sub(root.key_min) as f64;
    linear_floor(root.slope, root.intercept, x, 0, nleaves - 1)
}

#[inline]
pub(crate) fn leaf_predict(leaf: &Leaf, end: u64, key: u64) -> u64 {
    let x = key.saturating_sub(leaf.first_key) as f64;
    if leaf.from_start {
        leaf.start + linear_floor(leaf.slope, leaf.intercept, x, 0, end - leaf.start)
    } else {
        linear_floor(leaf.slope, leaf.intercept, x, leaf.start, end)
    }
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn size_for(nleaves: usize) -> usize {
    HEADER + nleaves * (8 + 8 + 8 + 8 + 8) + 8
}

/// Serializes a trained model.
pub(crate) fn encode(
    nkeys: u64,
    root: &Root,
    leaves: &[Leaf],
    max_window: u32,
    mean_window: f32,
) -> Vec<u8> {
    let l = leaves.len();
    let from_start = leaves[0].from_start;
    debug_assert!(leaves.iter().all(|f| f.from_start == from_start));
    let version = if from_start {
        VERSION
    } else {
        FROM_RUN_START_VERSION
    };
    let mut b = Vec::with_capacity(size_for(l));
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&nkeys.to_le_bytes());
    b.extend_from_slice(&(l as u64).to_le_bytes());
    b.extend_from_slice(&root.key_min.to_le_bytes());
    b.extend_from_slice(&root.slope.to_le_bytes());
    b.extend_from_slice(&root.intercept.to_le_bytes());
    b.extend_from_slice(&root.err_lo.to_le_bytes());
    b.extend_from_slice(&root.err_hi.to_le_bytes());
    b.extend_from_slice(&max_window.to_le_bytes());
    b.extend_from_slice(&mean_window.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // checksum, filled below
    debug_assert_eq!(b.len(), HEADER);
    leaves
        .iter()
        .for_each(|f| b.extend_from_slice(&f.first_key.to_le_bytes()));
    leaves
        .iter()
        .for_each(|f| b.extend_from_slice(&f.start.to_le_bytes()));
    b.extend_from_slice(&nkeys.to_le_bytes());
    leaves
        .iter()
        .for_each(|f| b.extend_from_slice(&f.slope.to_le_bytes()));
    leaves
        .iter()
        .for_each(|f| b.extend_from_slice(&f.intercept.to_le_bytes()));
    for f in leaves {
        b.extend_from_slice(&f.err_lo.to_le_bytes());
        b.extend_from_slice(&f.err_hi.to_le_bytes());
    }
    debug_assert_eq!(b.len(), size_for(l));
    let sum = fnv1a(&[&b[..CHECKSUM_AT], &b[HEADER..]]);
    b[CHECKSUM_AT..HEADER].copy_from_slice(&sum.to_le_bytes());
    b
}

/// A stored model, read in place. Opening checks the header and the sizes, which
/// is enough for every read to stay in bounds; [`ModelView::verify_checksum`]
/// checks the content and is meant for when the bytes are first loaded.
#[derive(Clone, Copy)]
pub struct ModelView<'a> {
    bytes: &'a [u8],
    nkeys: u64,
    nleaves: usize,
    root: Root,
    from_start: bool,
}

impl<'a> ModelView<'a> {
    pub fn open(bytes: &'a [u8]) -> Result<Self, ModelError> {
        if bytes.len() < HEADER {
            return Err(ModelError::Truncated {
                len: bytes.len(),
                need: HEADER,
            });
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let f64_at = |o: usize| f64::from_bits(u64_at(o));
        if u32_at(0) != MAGIC {
            return Err(ModelError::BadMagic(u32_at(0)));
        }
        let version = u32_at(4);
        if version != VERSION && version != FROM_RUN_START_VERSION {
            return Err(ModelError::BadVersion(version));
        }
        let nkeys = u64_at(8);
        let nleaves = u64_at(16);
        if nleaves == 0 || nleaves > (bytes.len() / 40) as u64 {
            return Err(ModelError::BadShape("leaf count"));
        }
        let nleaves = nleaves as usize;
        let need = size_for(nleaves);
        if bytes.len() < need {
            return Err(ModelError::Truncated {
                len: bytes.len(),
                need,
            });
        }
        let root = Root {
            key_min: u64_at(24),
            slope: f64_at(32),
            intercept: f64_at(40),
            err_lo: u32_at(48),
            err_hi: u32_at(52),
        };
        let view = ModelView {
            bytes: &bytes[..need],
            nkeys,
            nleaves,
            root,
            from_start: version == VERSION,
        };
        if view.start(nleaves) != nkeys || view.start(0) != 0 {
            return Err(ModelError::BadShape("leaf positions"));
        }
        Ok(view)
    }

    pub fn verify_checksum(&self) -> Result<(), ModelError> {
        let stored = self.u64_at(CHECKSUM_AT);
        if fnv1a(&[&self.bytes[..CHECKSUM_AT], &self.bytes[HEADER..]]) != stored {
            return Err(ModelError::BadChecksum);
        }
        Ok(())
    }

    #[inline]
    fn u64_at(&self, o: usize) -> u64 {
        u64::from_le_bytes(self.bytes[o..o + 8].try_into().unwrap())
    }

    #[inline]
    fn u32_at(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.bytes[o..o + 4].try_into().unwrap())
    }

    pub fn nkeys(&self) -> u64 {
        self.nkeys
    }

    pub fn nleaves(&self) -> usize {
        self.nleaves
    }

    pub fn max_window(&self) -> u32 {
        self.u32_at(56)
    }

    pub fn mean_window(&self) -> f32 {
        f32::from_bits(self.u32_at(60))
    }

    /// Whether its leaves predict positions from their start (version 2),
    /// so that they can be moved ([`super::Trainer::finish_between`]).
    pub fn from_start(&self) -> bool {
        self.from_start
    }

    #[inline]
    fn first_key(&self, i: usize) -> u64 {
        self.u64_at(HEADER + 8 * i)
    }

    #[inline]
    fn start(&self, i: usize) -> u64 {
        self.u64_at(HEADER + 8 * self.nleaves + 8 * i)
    }

    /// Where the last leaf begins in the run.
    pub fn last_leaf_start(&self) -> u64 {
        self.start(self.nleaves - 1)
    }

    /// Where leaf `i` begins in the run.
    pub fn leaf_start(&self, i: usize) -> u64 {
        self.start(i)
    }

    /// The leaf whose positions include `pos`: the last one starting at or
    /// before it.
    pub fn leaf_at_position(&self, pos: u64) -> usize {
        let (mut lo, mut hi) = (0usize, self.nleaves);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.start(mid) <= pos {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub(crate) fn leaf(&self, i: usize) -> Leaf {
        let l = self.nleaves;
        let base = HEADER + 8 * l + 8 * (l + 1);
        Leaf {
            first_key: self.first_key(i),
            start: self.start(i),
            slope: f64::from_bits(self.u64_at(base + 8 * i)),
            intercept: f64::from_bits(self.u64_at(base + 8 * l + 8 * i)),
            err_lo: self.u32_at(base + 16 * l + 8 * i),
            err_hi: self.u32_at(base + 16 * l + 8 * i + 4),
            from_start: self.from_start,
        }
    }

    /// The leaf a key routes to: the last leaf whose first key is `<= key`, or
    /// leaf 0. The root model narrows the search; if its bound does not hold
    /// (a damaged model) a plain binary search over all leaves decides.
    pub fn leaf_for(&self, key: u64) -> usize {
        let l = self.nleaves;
        let r = root_predict(&self.root, l as u64, key) as usize;
        let lo = r.saturating_sub(self.root.err_lo as usize);
        let hi = (r.saturating_add(self.root.err_hi as usize)).min(l - 1);
        let i = self.last_leaf_at_or_below(key, lo, hi + 1);
        let ok =
            (i == 0 || self.first_key(i) <= key) && (i + 1 == l || self.first_key(i + 1) > key);
        if ok {
            i
        } else {
            self.last_leaf_at_or_below(key, 0, l)
        }
    }

    /// Binary search in `[lo, hi)` for the last leaf with first key `<= key`.
    fn last_leaf_at_or_below(&self, key: u64, mut lo: usize, mut hi: usize) -> usize {
        let base = lo;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.first_key(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == base {
            base
        } else {
            lo - 1
        }
    }

    /// The window that holds the lower bound of `key` (see [`Window`]).
    pub fn window(&self, key: u64) -> Window {
        let i = self.leaf_for(key);
        let mut leaf = self.leaf(i);
        let end = self.start(i + 1).min(self.nkeys);
        leaf.start = leaf.start.min(end);
        let pred = leaf_predict(&leaf, end, key);
        Window {
            lo: pred.saturating_sub(leaf.err_lo as u64).max(leaf.start),
            hi: pred.saturating_add(leaf.err_hi as u64).min(end),
            pred,
        }
    }
}
