//! Byte-level mutations, AFL-style: bit flips, byte sets, truncations, removals, insertions,
//! copies within the input, splices from another seed, and integer rewrites (1, 2, 4 or 8
//! bytes, either endianness) with boundary values or small deltas. Positions are proptest
//! `Index`es, resolved against the input's length when applied; half of them fall in the first
//! 64 bytes, where headers (lengths, sizes, offsets) live.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Boundary values for integer rewrites: zero and one, powers of two and their neighbours at
/// every width, sign boundaries, and the sizes that make products overflow.
pub const INTERESTING: [u64; 40] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    9,
    15,
    16,
    31,
    32,
    63,
    64,
    100,
    127,
    128,
    255,
    256,
    1000,
    1024,
    4096,
    16384,
    16385,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    100_000,
    1_000_000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
    360_000_000_000,
];

/// A position in the input: anywhere, or within its first 64 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Pos {
    pub head: bool,
    pub at: Index,
}

impl Pos {
    /// The position in an input of `len` bytes (`len` itself allowed where `end` is true, for
    /// insertions at the end); 0 for an empty input.
    pub fn resolve(self, len: usize, end: bool) -> usize {
        let span = if self.head { len.min(64) } else { len } + usize::from(end);
        if span == 0 {
            0
        } else {
            self.at.index(span)
        }
    }
}

pub fn pos() -> impl Strategy<Value = Pos> {
    (any::<bool>(), any::<Index>()).prop_map(|(head, at)| Pos { head, at })
}

/// An integer value to write: a boundary value, or any value.
#[derive(Debug, Clone, Copy)]
pub enum IntValue {
    Interesting(Index),
    Any(u64),
}

impl IntValue {
    pub fn get(self) -> u64 {
        match self {
            Self::Interesting(i) => INTERESTING[i.index(INTERESTING.len())],
            Self::Any(v) => v,
        }
    }
}

pub fn int_value() -> impl Strategy<Value = IntValue> {
    prop_oneof![
        4 => any::<Index>().prop_map(IntValue::Interesting),
        1 => any::<u64>().prop_map(IntValue::Any),
    ]
}

/// One byte-level mutation.
#[derive(Debug, Clone)]
pub enum ByteOp {
    Flip {
        at: Pos,
        bit: u8,
    },
    Set {
        at: Pos,
        value: u8,
    },
    Truncate {
        at: Pos,
    },
    Remove {
        at: Pos,
        len: usize,
    },
    Insert {
        at: Pos,
        bytes: Vec<u8>,
    },
    /// Copies `len` bytes from `from` over the bytes at `to` (growing the input if needed).
    Copy {
        from: Pos,
        to: Pos,
        len: usize,
    },
    /// Inserts `len` bytes of another seed (index `seed` in the target's seed list).
    Splice {
        seed: Index,
        from: Pos,
        to: Pos,
        len: usize,
    },
    /// Writes `value` as a `width`-byte integer over the bytes at `at`.
    Int {
        at: Pos,
        width: u8,
        big: bool,
        value: IntValue,
    },
    /// Adds `delta` to the `width`-byte integer at `at`.
    Add {
        at: Pos,
        width: u8,
        big: bool,
        delta: i8,
    },
}

fn width() -> impl Strategy<Value = u8> {
    prop_oneof![Just(1u8), Just(2), Just(4), Just(8)]
}

pub fn byte_op() -> impl Strategy<Value = ByteOp> {
    prop_oneof![
        3 => (pos(), 0u8..8).prop_map(|(at, bit)| ByteOp::Flip { at, bit }),
        2 => (pos(), any::<u8>()).prop_map(|(at, value)| ByteOp::Set { at, value }),
        1 => pos().prop_map(|at| ByteOp::Truncate { at }),
        2 => (pos(), 1usize..64).prop_map(|(at, len)| ByteOp::Remove { at, len }),
        2 => (pos(), vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| ByteOp::Insert { at, bytes }),
        1 => (pos(), pos(), 1usize..256).prop_map(|(from, to, len)| ByteOp::Copy { from, to, len }),
        1 => (any::<Index>(), pos(), pos(), 1usize..512)
            .prop_map(|(seed, from, to, len)| ByteOp::Splice { seed, from, to, len }),
        4 => (pos(), width(), any::<bool>(), int_value())
            .prop_map(|(at, width, big, value)| ByteOp::Int { at, width, big, value }),
        2 => (pos(), width(), any::<bool>(), any::<i8>())
            .prop_map(|(at, width, big, delta)| ByteOp::Add { at, width, big, delta }),
    ]
}

/// One to `max` byte mutations.
pub fn byte_ops(max: usize) -> impl Strategy<Value = Vec<ByteOp>> {
    vec(byte_op(), 1..=max)
}

/// Reads the `width`-byte integer at `at` (zero-padded past the end).
fn read_int(bytes: &[u8], at: usize, width: usize, big: bool) -> u64 {
    let mut buf = [0u8; 8];
    for (i, slot) in buf.iter_mut().take(width).enumerate() {
        *slot = bytes.get(at + i).copied().unwrap_or(0);
    }
    if big {
        buf[..width].reverse();
    }
    u64::from_le_bytes(buf)
}

/// Writes the low `width` bytes of `value` at `at`, growing `bytes` if needed.
pub fn write_int(bytes: &mut Vec<u8>, at: usize, width: usize, big: bool, value: u64) {
    let mut le = value.to_le_bytes()[..width].to_vec();
    if big {
        le.reverse();
    }
    if bytes.len() < at + width {
        bytes.resize(at + width, 0);
    }
    bytes[at..at + width].copy_from_slice(&le);
}

/// Applies `op` to `bytes`; `seeds` are the target's seeds, for splices.
pub fn apply(bytes: &mut Vec<u8>, op: &ByteOp, seeds: &[Vec<u8>]) {
    let len = bytes.len();
    match op {
        ByteOp::Flip { at, bit } => {
            if len > 0 {
                bytes[at.resolve(len, false)] ^= 1 << bit;
            }
        }
        ByteOp::Set { at, value } => {
            if len > 0 {
                bytes[at.resolve(len, false)] = *value;
            }
        }
        ByteOp::Truncate { at } => bytes.truncate(at.resolve(len, false)),
        ByteOp::Remove { at, len: n } => {
            let start = at.resolve(len, false);
            let end = (start + n).min(len);
            bytes.drain(start..end);
        }
        ByteOp::Insert { at, bytes: new } => {
            let at = at.resolve(len, true);
            bytes.splice(at..at, new.iter().copied());
        }
        ByteOp::Copy { from, to, len: n } => {
            if len > 0 {
                let from = from.resolve(len, false);
                let chunk = bytes[from..(from + n).min(len)].to_vec();
                let to = to.resolve(len, false);
                if bytes.len() < to + chunk.len() {
                    bytes.resize(to + chunk.len(), 0);
                }
                bytes[to..to + chunk.len()].copy_from_slice(&chunk);
            }
        }
        ByteOp::Splice {
            seed,
            from,
            to,
            len: n,
        } => {
            if !seeds.is_empty() {
                let other = &seeds[seed.index(seeds.len())];
                let from = from.resolve(other.len(), false);
                let chunk = &other[from.min(other.len())..(from + n).min(other.len())];
                let at = to.resolve(len, true);
                bytes.splice(at..at, chunk.iter().copied());
            }
        }
        ByteOp::Int {
            at,
            width,
            big,
            value,
        } => {
            let w = usize::from(*width);
            let at = at.resolve(len, false);
            write_int(bytes, at, w, *big, value.get());
        }
        ByteOp::Add {
            at,
            width,
            big,
            delta,
        } => {
            let w = usize::from(*width);
            let at = at.resolve(len, false);
            let v = read_int(bytes, at, w, *big).wrapping_add(*delta as i64 as u64);
            write_int(bytes, at, w, *big, v);
        }
    }
}

/// Applies every op in turn.
pub fn apply_all(bytes: &mut Vec<u8>, ops: &[ByteOp], seeds: &[Vec<u8>]) {
    for op in ops {
        apply(bytes, op, seeds);
    }
}
