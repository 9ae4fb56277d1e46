//! The encoding of run entries: groups of up to [`GROUP`] sorted (key, TID)
//! pairs, each encoded on its own so that a lookup decodes one group, not a
//! page. Free of pgrx, so that it is tested with plain `cargo test`.
//!
//! A group's first key is not in its bytes (the page keeps it in its group
//! table, where a lookup finds the group without decoding anything). The rest
//! is one byte of modes, then the keys, then the TIDs, each stream as a few
//! LEB128 parameters and bit-packed values (least significant bit first, each
//! array starting on a byte boundary). The encoder tries every mode that
//! applies and keeps the smallest:
//!
//! Keys (ascending):
//! - **delta**: the gaps between neighbours, less the smallest gap. Keys that
//!   grow by 1..8 cost 3 bits; uniform 64-bit keys cost the bits of their
//!   largest gap.
//! - **runs**: each run of equal keys once, as (gap to the previous run's
//!   key, length). A group of duplicates costs a few bytes in all.
//!
//! TIDs (a heap block and a line pointer offset):
//! - **frame**: block and offset less the group's smallest of each: random
//!   heap order, the bits of the table's size.
//! - **ascending**: for TIDs that only grow, block gaps, and per entry the
//!   offset gap on the same block or the offset itself on a new one: a heap
//!   in key order costs about a bit an entry, however full its pages are.
//! - **line**: TIDs as positions on a line of `k` slots a block (`k` the
//!   largest offset of the group), zigzag-coded gaps: a heap almost in key
//!   order (timestamps with jitter) costs the bits of how far rows moved.
//!
//! An encoded group is never larger than [`MAX_ENCODED`] bytes, whatever the
//! data (the frame and delta modes always apply), and decoding checks every
//! length and value against the bytes it was given: damaged bytes are an
//! error, never a wrong entry out of range or a read outside the slice.

/// Entries in a full group.
pub const GROUP: usize = 128;

/// Entries a lookup decodes at a time: it stops at the chunk that holds its
/// key, and a scan goes on chunk by chunk.
const CHUNK: usize = 32;

/// A heap TID as a sortable integer: block in the high bits, offset in the
/// low 16 (as `run::Tid`).
pub type Tid = u64;

/// Bytes an encoded group may take at most: modes, parameters, 64-bit key
/// gaps and 32-bit blocks with 16-bit offsets.
pub const MAX_ENCODED: usize = 1 + 3 * 10 + 2 + 4 * 10 + 3 + (GROUP * (64 + 32 + 16)).div_ceil(8);

/// The bytes do not decode: the page holding them is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run entry encoding is damaged: {}", self.0)
    }
}

const KEYS_RUNS: u8 = 1;
const TIDS_SHIFT: u8 = 1;
const TIDS_FRAME: u8 = 0;
const TIDS_ASCENDING: u8 = 1;
const TIDS_LINE: u8 = 2;
const MODE_BITS: u8 = 0b111;

fn block(t: Tid) -> u64 {
    t >> 16
}

fn offset(t: Tid) -> u64 {
    t & 0xFFFF
}

fn width(range: u64) -> u8 {
    (64 - range.leading_zeros()) as u8
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Values less their minimum, packed at the width of their range.
struct Packed {
    min: u64,
    width: u8,
}

impl Packed {
    fn of(values: &[u64]) -> Packed {
        let min = values.iter().copied().min().unwrap_or(0);
        let max = values.iter().copied().max().unwrap_or(0);
        Packed {
            min,
            width: width(max - min),
        }
    }

    /// Bytes of the parameters and of `n` values.
    fn len(&self, n: usize) -> usize {
        varint_len(self.min) + 1 + (n * self.width as usize).div_ceil(8)
    }

    fn write(&self, values: &[u64], out: &mut Vec<u8>) {
        put_varint(out, self.min);
        out.push(self.width);
        let w = self.width as u32;
        if w == 0 {
            return;
        }
        let mut acc: u128 = 0;
        let mut bits = 0u32;
        for &v in values {
            acc |= ((v - self.min) as u128) << bits;
            bits += w;
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(acc as u8);
        }
    }
}

/// Encodes `keys` (ascending) and their `tids` (ascending among equal keys),
/// at most [`GROUP`] of them, appending to `out`; the first key is not
/// written (see the module comment).
pub fn encode(keys: &[u64], tids: &[Tid], out: &mut Vec<u8>) {
    let n = keys.len();
    assert!(n > 0 && n <= GROUP && tids.len() == n);
    debug_assert!(keys.windows(2).all(|w| w[0] <= w[1]));
    let mode_at = out.len();
    out.push(0);
    let keys_mode = encode_keys(keys, out);
    let tids_mode = encode_tids(tids, out);
    out[mode_at] = keys_mode | tids_mode << TIDS_SHIFT;
}

fn encode_keys(keys: &[u64], out: &mut Vec<u8>) -> u8 {
    let gaps: Vec<u64> = keys.windows(2).map(|w| w[1] - w[0]).collect();
    let delta = Packed::of(&gaps);
    let mut runs: Vec<u64> = Vec::new(); // gaps between runs' keys
    let mut lens: Vec<u64> = Vec::new(); // run lengths less one
    let mut start = 0;
    for i in 1..=keys.len() {
        if i == keys.len() || keys[i] != keys[start] {
            if start > 0 {
                runs.push(keys[start] - keys[start - 1]);
            }
            lens.push((i - start - 1) as u64);
            start = i;
        }
    }
    // The last run's length follows from the others'.
    lens.pop();
    let (rp, lp) = (Packed::of(&runs), Packed::of(&lens));
    if 1 + rp.len(runs.len()) + lp.len(lens.len()) < delta.len(gaps.len()) {
        out.push(runs.len() as u8);
        rp.write(&runs, out);
        lp.write(&lens, out);
        KEYS_RUNS
    } else {
        delta.write(&gaps, out);
        0
    }
}

fn encode_tids(tids: &[Tid], out: &mut Vec<u8>) -> u8 {
    let n = tids.len();
    let blocks: Vec<u64> = tids.iter().map(|&t| block(t)).collect();
    let offsets: Vec<u64> = tids.iter().map(|&t| offset(t)).collect();
    let (fb, fo) = (Packed::of(&blocks), Packed::of(&offsets));
    let mut best = (fb.len(n) + fo.len(n), TIDS_FRAME);

    let ascending = tids.windows(2).all(|w| w[0] < w[1]);
    let (mut ab, mut ao) = (Vec::new(), Vec::new());
    if ascending && n > 1 {
        for w in tids.windows(2) {
            let gap = block(w[1]) - block(w[0]);
            ab.push(gap);
            ao.push(if gap == 0 {
                offset(w[1]) - offset(w[0])
            } else {
                offset(w[1])
            });
        }
        let len = varint_len(block(tids[0]))
            + varint_len(offset(tids[0]))
            + Packed::of(&ab).len(n - 1)
            + Packed::of(&ao).len(n - 1);
        if len < best.0 {
            best = (len, TIDS_ASCENDING);
        }
    }

    // Positions on a line of `k` slots a block, relative to the first TID.
    let k = offsets.iter().copied().max().unwrap_or(0);
    let mut line = Vec::new();
    if n > 1 && k > 0 && offsets.iter().all(|&o| o > 0) {
        let pos =
            |t: Tid| (block(t) as i128 - block(tids[0]) as i128) * k as i128 + offset(t) as i128;
        let mut fits = true;
        for w in tids.windows(2) {
            let gap = pos(w[1]) - pos(w[0]);
            fits &= gap.unsigned_abs() < (1u128 << 62);
            line.push(zigzag(gap as i64));
        }
        if fits {
            let len = varint_len(block(tids[0]))
                + varint_len(offset(tids[0]))
                + varint_len(k)
                + Packed::of(&line).len(n - 1);
            if len < best.0 {
                best = (len, TIDS_LINE);
            }
        }
    }

    match best.1 {
        TIDS_FRAME => {
            fb.write(&blocks, out);
            fo.write(&offsets, out);
        }
        TIDS_ASCENDING => {
            put_varint(out, block(tids[0]));
            put_varint(out, offset(tids[0]));
            Packed::of(&ab).write(&ab, out);
            Packed::of(&ao).write(&ao, out);
        }
        _ => {
            put_varint(out, block(tids[0]));
            put_varint(out, offset(tids[0]));
            put_varint(out, k);
            Packed::of(&line).write(&line, out);
        }
    }
    best.1
}

/// Reads the parameters [`encode`] wrote, checking every bound.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn byte(&mut self) -> Result<u8, Malformed> {
        let b = *self.bytes.get(self.at).ok_or(Malformed("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7F) as u64) << shift;
            if b < 0x80 {
                if shift == 63 && b > 1 {
                    break;
                }
                return Ok(v);
            }
        }
        Err(Malformed("a parameter overflows"))
    }
}

/// Where a [`Packed`] array lies: its values are read one at a time, by
/// position, so a lookup decodes only what it reads.
#[derive(Clone, Copy, Default)]
struct Array {
    /// Byte offset of the first value in the bytes the group was opened in.
    at: usize,
    width: u32,
    mask: u64,
    min: u64,
}

impl Array {
    /// The parameters of an array of `n` values at the reader's position;
    /// steps over its values, which must lie inside the reader's bytes.
    fn parse(r: &mut Reader, n: usize) -> Result<Array, Malformed> {
        let min = r.varint()?;
        let width = r.byte()? as u32;
        if width > 64 {
            return Err(Malformed("a width exceeds 64 bits"));
        }
        let len = (n * width as usize).div_ceil(8);
        if r.bytes.len() - r.at < len {
            return Err(Malformed("truncated"));
        }
        let at = r.at;
        r.at += len;
        let mask = if width == 64 {
            u64::MAX
        } else {
            (1 << width) - 1
        };
        Ok(Array {
            at,
            width,
            mask,
            min,
        })
    }

    /// Value `i`, which must be below the `n` the array was parsed with,
    /// from the bytes it was parsed in (or a longer slice starting at the
    /// same place: an 8-byte load may then read past the array's end, and
    /// only its own bits are kept).
    #[inline]
    fn get(&self, bytes: &[u8], i: usize) -> u64 {
        let w = self.width as usize;
        if w == 0 {
            return self.min;
        }
        let bit = i * w;
        let (byte, shift) = (self.at + bit / 8, (bit % 8) as u32);
        let x = match bytes.get(byte..byte + 8) {
            Some(word) => {
                let mut x = u64::from_le_bytes(word.try_into().expect("8 bytes")) >> shift;
                // Widths over 56 bits may straddle a ninth byte, which is
                // then the array's own.
                if w + shift as usize > 64 {
                    x |= (bytes[byte + 8] as u64) << (64 - shift);
                }
                x
            }
            None => {
                let mut x = 0u128;
                let end = self.at + (bit + w).div_ceil(8);
                for (k, &b) in bytes[byte..end].iter().enumerate() {
                    x |= (b as u128) << (8 * k);
                }
                (x >> shift) as u64
            }
        };
        (x & self.mask).wrapping_add(self.min)
    }

    /// Values `start..start + out.len()` into `out` (as [`Array::get`],
    /// with a loop per width: this is the inner loop of every lookup).
    #[inline]
    fn unpack(&self, bytes: &[u8], start: usize, out: &mut [u64]) {
        if self.width == 0 {
            out.fill(self.min);
            return;
        }
        unpack_bits(&bytes[self.at..], self.width as usize, start, self.min, out);
    }
}

/// `out.len()` values of `w` bits each (1 to 64), least significant bit
/// first, from value `start` of `src`, plus `min`. `src` holds at least
/// their bytes. Each width has its own loop, so that shifts and masks are
/// constants.
fn unpack_bits(src: &[u8], w: usize, start: usize, min: u64, out: &mut [u64]) {
    macro_rules! widths {
        ($($n:literal)*) => {
            match w {
                $($n => unpack_width::<$n>(src, start, min, out),)*
                _ => unreachable!("widths are checked to be 1..=64"),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
            32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59
            60 61 62 63 64)
}

#[inline(always)]
fn unpack_width<const W: usize>(src: &[u8], start: usize, min: u64, out: &mut [u64]) {
    let mask = if W == 64 { u64::MAX } else { (1u64 << W) - 1 };
    // Values that start nine or more bytes before the end are read with one
    // unaligned 8-byte load (and the ninth byte when they straddle it:
    // widths over 56 bits); the last few byte by byte.
    let fast = (src.len().saturating_sub(8) * 8)
        .div_ceil(W)
        .saturating_sub(start)
        .min(out.len());
    let one = |j: usize| {
        let bit = (start + j) * W;
        let (byte, shift) = (bit / 8, (bit % 8) as u32);
        let word = u64::from_le_bytes(src[byte..byte + 8].try_into().expect("8 bytes"));
        let mut x = word >> shift;
        if W > 56 && shift > 0 && W + shift as usize > 64 {
            x |= (src[byte + 8] as u64) << (64 - shift);
        }
        (x & mask).wrapping_add(min)
    };
    // Up to the first value on a byte boundary one by one; then eight values
    // at a time, which take exactly W bytes: their loads and shifts are
    // constants from the block's first byte, so the loop unrolls.
    let mut j = ((8 - start % 8) % 8).min(fast);
    for (k, v) in out[..j].iter_mut().enumerate() {
        *v = one(k);
    }
    if W <= 56 {
        while j + 8 <= fast {
            let base = (start + j) * W / 8;
            // Value 7's load ends here; within `src`, as value j + 7 < fast.
            let block = &src[base..base + 7 * W / 8 + 8];
            for (k, v) in out[j..j + 8].iter_mut().enumerate() {
                let (byte, shift) = (k * W / 8, k * W % 8);
                let word = u64::from_le_bytes(block[byte..byte + 8].try_into().expect("8 bytes"));
                *v = ((word >> shift) & mask).wrapping_add(min);
            }
            j += 8;
        }
    }
    for (k, v) in out[..fast].iter_mut().enumerate().skip(j) {
        *v = one(k);
    }
    for (j, v) in out.iter_mut().enumerate().skip(fast) {
        let bit = (start + j) * W;
        let mut x = 0u128;
        for (k, &b) in src[bit / 8..(bit + W).div_ceil(8)].iter().enumerate() {
            x |= (b as u128) << (8 * k);
        }
        *v = ((x >> (bit % 8)) as u64 & mask).wrapping_add(min);
    }
}

/// Whether a decoded (block, offset) is no heap TID. Without branches, so
/// that a loop decoding many can check them all and fail once.
#[inline]
fn tid_out_of_range(block: u64, offset: u64) -> bool {
    (block > u32::MAX as u64) | (offset > 0xFFFF)
}

fn check_tid(block: u64, offset: u64) -> Result<Tid, Malformed> {
    if tid_out_of_range(block, offset) {
        return Err(Malformed("a TID is out of range"));
    }
    Ok(block << 16 | offset)
}

/// One group, decoded as far as it is read. Opening it checks its layout
/// (modes, parameters, and that its arrays fill its bytes exactly) without
/// decoding a value; keys and TIDs are then decoded on demand, in order (the
/// frame mode's TIDs by position), and each is checked as it is decoded: a
/// lookup that needs one entry of a group decodes the keys up to it and its
/// TID, and a damaged value is an error when it is read, never a wrong entry.
///
/// Every method that reads values takes the bytes the group was opened in,
/// or a longer slice starting at the same place.
pub struct Group {
    n: usize,
    /// The next group's first key: no key of this one may exceed it.
    bound: u64,
    keys: [u64; GROUP],
    /// `keys[..kn]` are decoded.
    kn: usize,
    /// The delta mode's gaps (unused in the runs mode, which is decoded
    /// whole on opening).
    gaps: Array,
    tids: [Tid; GROUP],
    /// `tids[..tn]` are decoded in order (0 in the frame mode; TIDs of
    /// equal steps are read by position too).
    tn: usize,
    tid_mode: u8,
    /// Frame: blocks and offsets. Ascending: block gaps and offsets (or
    /// offset gaps). Line: `a` holds the positions' zigzag gaps.
    a: Array,
    b: Array,
    /// The line mode's slots a block.
    line: u64,
    /// The last decoded TID's block and offset (ascending and line).
    block: u64,
    offset: u64,
}

impl Default for Group {
    fn default() -> Group {
        Group {
            n: 0,
            bound: 0,
            keys: [0; GROUP],
            kn: 0,
            gaps: Array::default(),
            tids: [0; GROUP],
            tn: 0,
            tid_mode: TIDS_FRAME,
            a: Array::default(),
            b: Array::default(),
            line: 0,
            block: 0,
            offset: 0,
        }
    }
}

impl Group {
    /// Opens the group of `n` entries encoded in `bytes[range]`, whose first
    /// key is `first` and whose keys may not exceed `bound`.
    pub fn open(
        &mut self,
        bytes: &[u8],
        range: std::ops::Range<usize>,
        first: u64,
        n: usize,
        bound: u64,
    ) -> Result<(), Malformed> {
        self.n = 0;
        if n == 0 || n > GROUP {
            return Err(Malformed("group size out of range"));
        }
        if first > bound {
            return Err(Malformed("group keys out of order"));
        }
        let end = range.end;
        let mut r = Reader {
            bytes: bytes.get(..end).ok_or(Malformed("truncated"))?,
            at: range.start,
        };
        let mode = r.byte()?;
        if mode & !MODE_BITS != 0 || mode >> TIDS_SHIFT > TIDS_LINE {
            return Err(Malformed("unknown mode"));
        }
        self.bound = bound;
        self.keys[0] = first;
        self.kn = 1;
        if mode & KEYS_RUNS != 0 {
            self.decode_runs(&mut r, n)?;
        } else {
            self.gaps = Array::parse(&mut r, n - 1)?;
        }
        self.tid_mode = mode >> TIDS_SHIFT;
        self.tn = 0;
        match self.tid_mode {
            TIDS_FRAME => {
                self.a = Array::parse(&mut r, n)?;
                self.b = Array::parse(&mut r, n)?;
            }
            TIDS_ASCENDING => {
                (self.block, self.offset) = (r.varint()?, r.varint()?);
                self.a = Array::parse(&mut r, n - 1)?;
                self.b = Array::parse(&mut r, n - 1)?;
                self.tids[0] = check_tid(self.block, self.offset)?;
                self.tn = 1;
            }
            _ => {
                let (b0, o0, k) = (r.varint()?, r.varint()?, r.varint()?);
                if k == 0 || k > 0xFFFF || b0 > u32::MAX as u64 || o0 == 0 || o0 > k {
                    return Err(Malformed("a line parameter is out of range"));
                }
                self.a = Array::parse(&mut r, n - 1)?;
                self.tids[0] = check_tid(b0, o0)?;
                (self.line, self.block, self.offset) = (k, b0, o0);
                self.tn = 1;
            }
        }
        if r.at != end {
            return Err(Malformed("group length does not match its contents"));
        }
        self.n = n;
        Ok(())
    }

    /// The runs mode: each run of equal keys once, decoded whole.
    fn decode_runs(&mut self, r: &mut Reader, n: usize) -> Result<(), Malformed> {
        let m = r.byte()? as usize;
        if m >= n {
            return Err(Malformed("more key runs than entries"));
        }
        let gaps = Array::parse(r, m)?;
        let lens = Array::parse(r, m)?;
        let (mut at, mut key) = (0usize, self.keys[0]);
        for j in 0..=m {
            if j > 0 {
                key = key
                    .checked_add(gaps.get(r.bytes, j - 1))
                    .ok_or(Malformed("a key overflows"))?;
                if key > self.bound {
                    return Err(Malformed("group keys out of order"));
                }
            }
            let len = if j < m {
                lens.get(r.bytes, j)
                    .checked_add(1)
                    .map_or(usize::MAX, |l| l.min(n as u64) as usize)
            } else {
                n.saturating_sub(at)
            };
            if len == 0 || at + len > n {
                return Err(Malformed("key runs do not add up to the group"));
            }
            self.keys[at..at + len].fill(key);
            at += len;
        }
        self.kn = n;
        Ok(())
    }

    /// Decodes keys until `upto` are (at most the group's length), a chunk
    /// at a time.
    fn decode_keys(&mut self, bytes: &[u8], upto: usize) -> Result<(), Malformed> {
        while self.kn < upto {
            let (from, to) = (self.kn, (self.kn + CHUNK).min(self.n));
            let mut gaps = [0u64; CHUNK];
            let gaps = &mut gaps[..to - from];
            self.gaps.unpack(bytes, from - 1, gaps);
            let mut key = self.keys[from - 1];
            let mut overflow = false;
            for (k, &g) in self.keys[from..to].iter_mut().zip(gaps.iter()) {
                let (next, o) = key.overflowing_add(g);
                overflow |= o;
                key = next;
                *k = key;
            }
            if overflow {
                return Err(Malformed("a key overflows"));
            }
            if key > self.bound {
                return Err(Malformed("group keys out of order"));
            }
            self.kn = to;
        }
        Ok(())
    }

    /// Key `i` (below the group's length).
    #[inline]
    pub fn key(&mut self, bytes: &[u8], i: usize) -> Result<u64, Malformed> {
        if i >= self.kn {
            self.decode_keys(bytes, i + 1)?;
        }
        Ok(self.keys[i])
    }

    /// The first slot whose key is at least `key`, or the group's length:
    /// keys are decoded only until one reaches `key`.
    pub fn lower_bound(&mut self, bytes: &[u8], key: u64) -> Result<usize, Malformed> {
        // Keys below `from` are below `key`: the search is of the chunk
        // decoded last, when one was.
        let mut from = 0;
        while self.keys[self.kn - 1] < key {
            if self.kn == self.n {
                return Ok(self.n);
            }
            from = self.kn;
            self.decode_keys(bytes, self.kn + 1)?;
        }
        Ok(from + self.keys[from..self.kn].partition_point(|&k| k < key))
    }

    /// TID `i` (below the group's length).
    #[inline]
    pub fn tid(&mut self, bytes: &[u8], i: usize) -> Result<Tid, Malformed> {
        if i < self.tn {
            return Ok(self.tids[i]);
        }
        if self.tid_mode == TIDS_FRAME {
            return check_tid(self.a.get(bytes, i), self.b.get(bytes, i));
        }
        if self.tid_mode == TIDS_LINE && self.a.width == 0 {
            let (blk, off) = self.line_at(i)?;
            return check_tid(blk as u64, off as u64);
        }
        if self.equal_ascending() {
            return self.ascending_at(i);
        }
        if i >= self.tn {
            self.decode_tids(bytes, i + 1)?;
        }
        Ok(self.tids[i])
    }

    /// The whole group, decoded: what a scan that reads every entry wants
    /// (in bulk, with the unpacking loop per width).
    pub fn decoded(&mut self, bytes: &[u8]) -> Result<(&[u64], &[Tid]), Malformed> {
        self.entries(bytes, 0, self.n)
    }

    /// Entries `from..to` (`to` at most the group's length), decoded in
    /// bulk: what a scan that starts or stops inside the group wants. Keys
    /// are decoded from the group's start (each is a sum of gaps); TIDs read
    /// by position (the frame mode, and TIDs of equal steps: a heap in key
    /// order) are decoded from `from` only.
    pub fn entries(
        &mut self,
        bytes: &[u8],
        from: usize,
        to: usize,
    ) -> Result<(&[u64], &[Tid]), Malformed> {
        let to = to.min(self.n);
        let from = from.min(to);
        self.decode_keys(bytes, to)?;
        if from == to {
            // Nothing to read (and no slot `from` to place on a line).
        } else if self.tid_mode == TIDS_FRAME {
            let mut offsets = [0u64; GROUP];
            self.a.unpack(bytes, from, &mut self.tids[from..to]);
            self.b.unpack(bytes, from, &mut offsets[from..to]);
            let mut bad = false;
            for (t, &o) in self.tids[from..to].iter_mut().zip(&offsets[from..to]) {
                bad |= tid_out_of_range(*t, o);
                *t = *t << 16 | o;
            }
            if bad {
                return Err(Malformed("a TID is out of range"));
            }
        } else if self.tn >= to {
            // Decoded in order already.
        } else if self.tid_mode == TIDS_LINE && self.a.width == 0 {
            let step = unzigzag(self.a.min);
            let (mut blk, mut off) = self.line_at(from)?;
            for i in from..to {
                if i > from {
                    (blk, off) = self.line_step(blk, off, step)?;
                }
                self.tids[i] = check_tid(blk as u64, off as u64)?;
            }
        } else if self.equal_ascending() {
            for i in from..to {
                self.tids[i] = self.ascending_at(i)?;
            }
        } else {
            self.decode_tids(bytes, to)?;
        }
        Ok((&self.keys[from..to], &self.tids[from..to]))
    }

    /// Slot `i`'s (block, offset) on a line whose steps all equal the
    /// array's minimum: the line's position moves by the step each slot.
    fn line_at(&self, i: usize) -> Result<(i64, i64), Malformed> {
        let k = self.line as i128;
        let first = self.tids[0];
        let p = (first >> 16) as i128 * k + (first & 0xFFFF) as i128 - 1
            + i as i128 * unzigzag(self.a.min) as i128;
        let blk = p.div_euclid(k);
        if !(0..=u32::MAX as i128).contains(&blk) {
            return Err(Malformed("a block is out of range"));
        }
        Ok((blk as i64, (p.rem_euclid(k) + 1) as i64))
    }

    /// Ascending TIDs whose block gaps are all equal and whose offsets (or
    /// offset gaps) are too: a heap in key order inside one block, or one
    /// row a block.
    #[inline]
    fn equal_ascending(&self) -> bool {
        self.tid_mode == TIDS_ASCENDING && self.a.width == 0 && self.b.width == 0
    }

    /// TID `i` of [`Group::equal_ascending`] TIDs: each step adds the block
    /// gap, then adds the offset gap on the same block or sets the offset.
    fn ascending_at(&self, i: usize) -> Result<Tid, Malformed> {
        let (b0, o0) = (self.tids[0] >> 16, self.tids[0] & 0xFFFF);
        let (gap, o) = (self.a.min as u128, self.b.min as u128);
        if i == 0 {
            return Ok(self.tids[0]);
        }
        let block = b0 as u128 + i as u128 * gap;
        let offset = if gap == 0 {
            o0 as u128 + i as u128 * o
        } else {
            o
        };
        if block > u32::MAX as u128 || offset > 0xFFFF {
            return Err(Malformed("a TID is out of range"));
        }
        Ok((block as u64) << 16 | offset as u64)
    }

    /// One step of `z` slots along the line of `line` slots a block: most
    /// steps stay on the block; the others divide (in 64 bits, checked).
    #[inline]
    fn line_step(&self, blk: i64, off: i64, z: i64) -> Result<(i64, i64), Malformed> {
        let k = self.line as i64;
        let o = off
            .checked_add(z)
            .ok_or(Malformed("a block is out of range"))?;
        if (1..=k).contains(&o) {
            return Ok((blk, o));
        }
        let blk = blk
            .checked_add((o - 1).div_euclid(k))
            .filter(|b| (0..=u32::MAX as i64).contains(b))
            .ok_or(Malformed("a block is out of range"))?;
        Ok((blk, (o - 1).rem_euclid(k) + 1))
    }

    /// The first slot whose key is above `key`, or the group's length: keys
    /// are decoded only until one passes it.
    pub fn upper_bound(&mut self, bytes: &[u8], key: u64) -> Result<usize, Malformed> {
        match key.checked_add(1) {
            Some(next) => self.lower_bound(bytes, next),
            None => Ok(self.n),
        }
    }

    /// Decodes ascending or line TIDs until `upto` are, a chunk at a time.
    fn decode_tids(&mut self, bytes: &[u8], upto: usize) -> Result<(), Malformed> {
        while self.tn < upto {
            let (from, to) = (self.tn, (self.tn + CHUNK).min(self.n));
            let (mut a, mut b) = ([0u64; CHUNK], [0u64; CHUNK]);
            let a = &mut a[..to - from];
            self.a.unpack(bytes, from - 1, a);
            if self.tid_mode == TIDS_ASCENDING {
                let b = &mut b[..to - from];
                self.b.unpack(bytes, from - 1, b);
                // Checked once a chunk, not a branch an entry.
                let (mut block, mut offset, mut bad) = (self.block, self.offset, false);
                for (t, (&gap, &o)) in self.tids[from..to].iter_mut().zip(a.iter().zip(b.iter())) {
                    let (next, over) = block.overflowing_add(gap);
                    let (same, over_same) = offset.overflowing_add(o);
                    (block, offset) = (next, if gap == 0 { same } else { o });
                    bad |= over | (gap == 0 && over_same) | tid_out_of_range(block, offset);
                    *t = block << 16 | offset;
                }
                if bad {
                    return Err(Malformed("a TID is out of range"));
                }
                (self.block, self.offset) = (block, offset);
            } else {
                let (mut blk, mut off) = (self.block as i64, self.offset as i64);
                for (i, &z) in (from..to).zip(a.iter()) {
                    (blk, off) = self.line_step(blk, off, unzigzag(z))?;
                    self.tids[i] = check_tid(blk as u64, off as u64)?;
                }
                (self.block, self.offset) = (blk as u64, off as u64);
            }
            self.tn = to;
        }
        Ok(())
    }
}

/// Decodes a whole group of `keys.len()` entries whose first key is `first`
/// from exactly `bytes`, into `keys` and `tids`.
#[cfg(test)]
pub fn decode(
    bytes: &[u8],
    first: u64,
    keys: &mut [u64],
    tids: &mut [Tid],
) -> Result<(), Malformed> {
    let mut g = Group::default();
    if tids.len() != keys.len() {
        return Err(Malformed("group size out of range"));
    }
    g.open(bytes, 0..bytes.len(), first, keys.len(), u64::MAX)?;
    let (k, t) = g.decoded(bytes)?;
    keys.copy_from_slice(k);
    tids.copy_from_slice(t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn roundtrip(keys: &[u64], tids: &[Tid]) -> usize {
        let mut out = Vec::new();
        encode(keys, tids, &mut out);
        assert!(out.len() <= MAX_ENCODED, "{} bytes", out.len());
        let (mut k, mut t) = (vec![0; keys.len()], vec![0; keys.len()]);
        decode(&out, keys[0], &mut k, &mut t).expect("decodes");
        assert_eq!(k, keys);
        assert_eq!(t, tids);
        // Shorter or longer bytes are an error, not a wrong group.
        assert!(decode(&out[..out.len() - 1], keys[0], &mut k, &mut t).is_err());
        let mut longer = out.clone();
        longer.push(0);
        assert!(decode(&longer, keys[0], &mut k, &mut t).is_err());
        out.len()
    }

    /// (key, TID) pairs sorted as a run holds them.
    fn sorted(mut pairs: Vec<(u64, Tid)>) -> (Vec<u64>, Vec<Tid>) {
        pairs.sort_unstable();
        pairs.dedup();
        pairs.into_iter().unzip()
    }

    fn tid(block: u64, offset: u64) -> Tid {
        block << 16 | offset
    }

    fn any_tid() -> impl Strategy<Value = Tid> {
        prop_oneof![
            (0u64..=u32::MAX as u64, 0u64..=0xFFFF).prop_map(|(b, o)| tid(b, o)),
            (0u64..50, 1u64..300).prop_map(|(b, o)| tid(b, o)),
        ]
    }

    fn any_key() -> impl Strategy<Value = u64> {
        prop_oneof![any::<u64>(), 0u64..1000, Just(0), Just(u64::MAX)]
    }

    /// Value `i` of `w` bits, bit by bit: what `unpack_bits` must return.
    fn bits_at(src: &[u8], w: usize, i: usize) -> u64 {
        (0..w).fold(0, |v, b| {
            let bit = i * w + b;
            v | ((src[bit / 8] >> (bit % 8) & 1) as u64) << b
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Every width, from any value on, up to the last byte: the eight-at-
        /// a-time blocks, the values before and after them and those read
        /// byte by byte at the end all agree with a bit-by-bit reading.
        #[test]
        fn unpacking_reads_every_bit(w in 1usize..=64, src in vec(any::<u8>(), 1..200),
                                     start in 0usize..200, len in 0usize..200, min in any::<u64>()) {
            let values = src.len() * 8 / w;
            let start = start.min(values);
            let len = len.min(values - start);
            let mut out = vec![0u64; len];
            unpack_bits(&src, w, start, min, &mut out);
            for (j, &v) in out.iter().enumerate() {
                prop_assert_eq!(v, bits_at(&src, w, start + j).wrapping_add(min), "value {}", start + j);
            }
        }

        /// Any sorted group decodes to exactly what was encoded.
        #[test]
        fn any_group_roundtrips(pairs in vec((any_key(), any_tid()), 1..=GROUP)) {
            let (keys, tids) = sorted(pairs);
            roundtrip(&keys, &tids);
        }

        /// Keys with small gaps and a heap in key order: the case the
        /// ascending mode is for.
        #[test]
        fn ordered_heaps_roundtrip(start in any::<u64>(), gaps in vec(0u64..9, GROUP),
                                   b0 in 0u64..1_000_000, per_block in 1u64..300, skip in 0u64..3) {
            let mut keys = Vec::new();
            let mut k = start;
            for g in gaps {
                k = k.saturating_add(g);
                keys.push(k);
            }
            let tids: Vec<Tid> = (0..GROUP as u64)
                .map(|i| tid(b0 + i / per_block * (1 + skip), 1 + i % per_block))
                .collect();
            roundtrip(&keys, &tids);
        }

        /// Reading a group lazily, in any order and after any search, gives
        /// the entries that were encoded, and its lower bound is exact.
        #[test]
        fn lazy_reads_are_exact(pairs in vec((any_key(), any_tid()), 1..=GROUP),
                                reads in vec((any::<prop::sample::Index>(), any::<bool>()), 0..40),
                                probe in any_key()) {
            let (keys, tids) = sorted(pairs);
            let mut out = Vec::new();
            encode(&keys, &tids, &mut out);
            // A longer slice after the group, as a page has.
            let len = out.len();
            out.extend_from_slice(&[0xA5; 16]);
            let mut g = Group::default();
            g.open(&out, 0..len, keys[0], keys.len(), u64::MAX).expect("opens");
            prop_assert_eq!(g.lower_bound(&out, probe).unwrap(), keys.partition_point(|&k| k < probe));
            for (i, tid_first) in reads {
                let i = i.index(keys.len());
                if tid_first {
                    prop_assert_eq!(g.tid(&out, i).unwrap(), tids[i]);
                }
                prop_assert_eq!(g.key(&out, i).unwrap(), keys[i]);
                prop_assert_eq!(g.tid(&out, i).unwrap(), tids[i]);
            }
            prop_assert_eq!(g.lower_bound(&out, probe).unwrap(), keys.partition_point(|&k| k < probe));
            // The rest in bulk, after whatever was read one at a time.
            let (k, t) = g.decoded(&out).unwrap();
            prop_assert_eq!(k, &keys[..]);
            prop_assert_eq!(t, &tids[..]);
            for (i, &t) in tids.iter().enumerate() {
                prop_assert_eq!(g.tid(&out, i).unwrap(), t);
            }
            // A bound below the group's last key is damage, found on opening
            // (runs of keys are decoded then) or when the key is read.
            if keys[0] < keys[keys.len() - 1] {
                let bound = keys[keys.len() - 1] - 1;
                prop_assert!(g.open(&out, 0..len, keys[0], keys.len(), bound).is_err()
                             || (0..keys.len()).any(|i| g.key(&out, i).is_err()));
            }
        }

        /// Slices of a group read in bulk (as scans read them), and single
        /// TIDs by position, are exact on every TID shape: a random heap (the
        /// frame mode), a heap in key order with full blocks (a line of equal
        /// steps, read by position), with rows moved (a line of unequal
        /// steps) and with gaps (ascending).
        #[test]
        fn slices_are_exact(n in 1..=GROUP, gaps in vec(0u64..5, GROUP), shape in 0..4u8,
                            start in (0u64..1000, 1u64..=60), k in 1u64..=60, seed in any::<u64>(),
                            ranges in vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..8),
                            probe in 0u64..700) {
            let keys: Vec<u64> = gaps[..n].iter().scan(100, |k, &g| { *k += g; Some(*k) }).collect();
            let (b0, o0) = (start.0, start.1.min(k));
            let mix = |i: u64| seed.wrapping_mul(i | 1).rotate_left(i as u32 % 64);
            let tids: Vec<Tid> = (0..n as u64).map(|i| match shape {
                0 => tid(mix(i) % 100_000, 1 + mix(i + 7) % 300),
                1 => { let p = b0 * k + o0 - 1 + i; tid(p / k, p % k + 1) }
                2 => { let p = b0 * k + o0 - 1 + i * 2 + mix(i) % 2; tid(p / k, p % k + 1) }
                _ => tid(b0 + i * (mix(i) % 3), 1 + i % 7),
            }).collect();
            let (keys, tids) = sorted(keys.into_iter().zip(tids).collect());
            let mut out = Vec::new();
            encode(&keys, &tids, &mut out);
            let len = out.len();
            out.extend_from_slice(&[0x5A; 16]);
            let mut g = Group::default();
            g.open(&out, 0..len, keys[0], keys.len(), u64::MAX).expect("opens");
            if shape == 1 && n > 16 {
                // Full blocks in key order: TIDs read by position.
                prop_assert!(g.tid_mode == TIDS_LINE && g.a.width == 0 || g.equal_ascending());
            }
            prop_assert_eq!(g.upper_bound(&out, probe).unwrap(), keys.partition_point(|&k| k <= probe));
            for (a, b) in ranges {
                let (a, b) = (a.index(n + 1), b.index(n + 1));
                let (from, to) = (a.min(b), a.max(b));
                let (sk, st) = g.entries(&out, from, to).unwrap();
                prop_assert_eq!(sk, &keys[from..to]);
                prop_assert_eq!(st, &tids[from..to]);
                if from < n {
                    prop_assert_eq!(g.tid(&out, from).unwrap(), tids[from]);
                }
            }
            let (sk, st) = g.decoded(&out).unwrap();
            prop_assert_eq!(sk, &keys[..]);
            prop_assert_eq!(st, &tids[..]);
        }

        /// Changing any byte never panics and never decodes past the slice.
        #[test]
        fn damaged_bytes_are_an_error_or_a_group(pairs in vec((any_key(), any_tid()), 1..=GROUP),
                                                 at in any::<prop::sample::Index>(), xor in 1u8..=255) {
            let (keys, tids) = sorted(pairs);
            let mut out = Vec::new();
            encode(&keys, &tids, &mut out);
            let i = at.index(out.len());
            out[i] ^= xor;
            let (mut k, mut t) = (vec![0; keys.len()], vec![0; keys.len()]);
            if decode(&out, keys[0], &mut k, &mut t).is_ok() {
                prop_assert!(t.iter().all(|&t| block(t) <= u32::MAX as u64));
            }
        }
    }

    #[test]
    fn sizes_follow_the_data() {
        let n = GROUP as u64;
        // Unique keys growing by 1..8, heap in key order, 226 rows a block.
        let keys: Vec<u64> = (0..n).map(|i| 1000 + i * 4 + i % 5).collect();
        let tids: Vec<Tid> = (0..n)
            .map(|i| tid(7 + (i + 100) / 226, 1 + (i + 100) % 226))
            .collect();
        let len = roundtrip(&keys, &tids);
        assert!(len * 8 <= 5 * GROUP, "{len} bytes");
        // Pages of varying fill in key order cost no more.
        let tids: Vec<Tid> = (0..n)
            .map(|i| tid(7 + i / 30, 1 + i % 30 + (i / 30) % 3))
            .collect();
        assert!(roundtrip(&keys, &tids) * 8 <= 6 * GROUP);
        // One key: the runs mode.
        let keys = vec![42; GROUP];
        let tids: Vec<Tid> = (0..n).map(|i| tid(i * 97 % 50_000, 1 + i % 200)).collect();
        let sorted_tids = {
            let mut t = tids.clone();
            t.sort_unstable();
            t
        };
        let len = roundtrip(&keys, &sorted_tids);
        assert!(len * 8 <= 25 * GROUP, "{len} bytes");
        // Random heap order: the frame mode, the bits of the table's size.
        let keys: Vec<u64> = (0..n).map(|i| i * 3).collect();
        let tids: Vec<Tid> = (0..n)
            .map(|i| tid(i * 7919 % 44_000, 1 + i * 31 % 226))
            .collect();
        let len = roundtrip(&keys, &tids);
        assert!(len * 8 <= (3 + 16 + 8 + 1) * GROUP, "{len} bytes");
        // A heap almost in key order (rows moved by a few places): the line mode.
        let tids: Vec<Tid> = (0..n)
            .map(|i| {
                let j = (i ^ 1).min(n - 1);
                tid(3 + j / 136, 1 + j % 136)
            })
            .collect();
        let len = roundtrip(&keys, &tids);
        assert!(len * 8 <= (3 + 3 + 1) * GROUP, "{len} bytes");
        // The worst case stays within the bound.
        let keys: Vec<u64> = (0..n).map(|i| i << 56).collect();
        let tids: Vec<Tid> = (0..n)
            .map(|i| tid(u32::MAX as u64 - i * 0x0101_0101, 0xFFFF - i))
            .collect();
        let len = roundtrip(&keys, &tids);
        assert!(len <= MAX_ENCODED);
    }
}
