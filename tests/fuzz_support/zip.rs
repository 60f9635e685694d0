//! Mutations of PyTorch `.pth` checkpoints, which are zip archives of stored (uncompressed)
//! entries: `data.pkl` (the pickle that describes the tensors) and `data/N` (their storages).
//! The archive is read with a minimal reader of its own, an entry or the pickle's integer
//! operands (shapes, strides, storage offsets and sizes) are rewritten, and the archive is
//! written again with correct CRCs, so the zip reader lets the damage through to the pickle
//! reader and the tensor code. Raw rewrites of the zip records' own fields (sizes, offsets,
//! counts) reach the zip reader itself.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::crc::crc32;
use super::mutate::{apply as apply_bytes, byte_op, int_value, ByteOp, IntValue};

/// The entries of a zip of stored entries; `None` when it is not one.
pub fn read(zip: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(zip.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(zip.get(at..at + 4)?.try_into().ok()?));
    let eocd = zip.windows(4).rposition(|w| w == b"PK\x05\x06")?;
    let count = usize::from(u16_at(eocd + 10)?);
    let mut at = u32_at(eocd + 16)? as usize;
    let mut entries = Vec::new();
    for _ in 0..count {
        if u32_at(at)? != 0x0201_4b50 || u16_at(at + 10)? != 0 {
            return None;
        }
        let size = u32_at(at + 20)? as usize;
        let (name_len, extra_len, comment_len) = (
            usize::from(u16_at(at + 28)?),
            usize::from(u16_at(at + 30)?),
            usize::from(u16_at(at + 32)?),
        );
        let local = u32_at(at + 42)? as usize;
        let name = String::from_utf8(zip.get(at + 46..at + 46 + name_len)?.to_vec()).ok()?;
        let data_at =
            local + 30 + usize::from(u16_at(local + 26)?) + usize::from(u16_at(local + 28)?);
        entries.push((name, zip.get(data_at..data_at + size)?.to_vec()));
        at += 46 + name_len + extra_len + comment_len;
    }
    Some(entries)
}

/// Writes stored `entries` as a zip (no alignment padding: readers do not need it).
pub fn write(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let crc = crc32(data);
        let offset = out.len() as u32;
        let common = |buf: &mut Vec<u8>| {
            buf.extend(0u16.to_le_bytes()); // flags
            buf.extend(0u16.to_le_bytes()); // method: stored
            buf.extend(0u32.to_le_bytes()); // time, date
            buf.extend(crc.to_le_bytes());
            buf.extend((data.len() as u32).to_le_bytes());
            buf.extend((data.len() as u32).to_le_bytes());
            buf.extend((name.len() as u16).to_le_bytes());
            buf.extend(0u16.to_le_bytes()); // extra length
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend(20u16.to_le_bytes()); // version needed
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(data);

        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // version made by
        central.extend(20u16.to_le_bytes()); // version needed
        common(&mut central);
        central.extend([0u8; 8]); // comment length, disk, internal and external attributes
        central.extend([0u8; 2]);
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]); // disk numbers
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// An integer in a pickle: where its opcode starts, how many bytes opcode and operand take,
/// and its value.
#[derive(Debug, Clone, Copy)]
pub struct PickleInt {
    pub at: usize,
    pub len: usize,
    pub value: u64,
}

/// The integers a pickle pushes (BININT1, BININT2, BININT, LONG1), in order. Stops at the
/// first opcode it does not know (the rest is then left to byte mutations).
pub fn pickle_ints(pkl: &[u8]) -> Vec<PickleInt> {
    let mut out = Vec::new();
    let mut at = 0;
    let u32_at = |at: usize| {
        pkl.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let le = |from: usize, n: usize| -> Option<u64> {
        let bytes = pkl.get(from..from + n)?;
        let mut v = [0u8; 8];
        v[..n.min(8)].copy_from_slice(&bytes[..n.min(8)]);
        Some(u64::from_le_bytes(v))
    };
    while let Some(&op) = pkl.get(at) {
        let start = at;
        at += 1;
        let width = match op {
            b'K' => Some(1),
            b'M' => Some(2),
            b'J' => Some(4),
            _ => None,
        };
        if let Some(w) = width {
            if let Some(value) = le(at, w) {
                out.push(PickleInt {
                    at: start,
                    len: 1 + w,
                    value,
                });
            }
            at += w;
            continue;
        }
        let skip = match op {
            0x8a => {
                // LONG1: a length byte, then that many little-endian bytes.
                let n = usize::from(pkl.get(at).copied().unwrap_or(0));
                if let Some(value) = le(at + 1, n) {
                    out.push(PickleInt {
                        at: start,
                        len: 2 + n,
                        value,
                    });
                }
                1 + n
            }
            0x80 | b'q' | b'h' => 1,
            b'r' | b'j' => 4,
            b'G' => 8,
            b'X' | b'B' => match u32_at(at) {
                Some(n) => 4 + n,
                None => break,
            },
            b'U' | b'C' => 1 + usize::from(pkl.get(at).copied().unwrap_or(0)),
            b'c' => {
                // GLOBAL: two newline-terminated lines.
                let mut lines = 0;
                let mut n = 0;
                while lines < 2 {
                    match pkl.get(at + n) {
                        Some(b'\n') => lines += 1,
                        Some(_) => {}
                        None => break,
                    }
                    n += 1;
                }
                n
            }
            b'}' | b'(' | b')' | b't' | b'R' | b'u' | b's' | b'N' | b'Q' | b']' | b'e' | b'a'
            | b'b' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | b'0' | b'1' | b'2' | 0x94 => 0,
            _ => break,
        };
        at += skip;
    }
    out
}

/// The shortest pickle encoding of `value` (LONG1 of the value as a signed 64-bit integer past
/// `i32::MAX`, so that the top values are negative numbers).
fn encode_int(value: u64) -> Vec<u8> {
    match value {
        0..=0xff => vec![b'K', value as u8],
        0x100..=0xffff => vec![b'M', value as u8, (value >> 8) as u8],
        0x1_0000..=0x7fff_ffff => {
            let mut v = vec![b'J'];
            v.extend((value as u32).to_le_bytes());
            v
        }
        _ => {
            let mut v = vec![0x8a, 8];
            v.extend(value.to_le_bytes());
            v
        }
    }
}

/// Replaces the integer `int` of `pkl` by `value`.
fn set_int(pkl: &mut Vec<u8>, int: PickleInt, value: u64) {
    pkl.splice(int.at..int.at + int.len, encode_int(value));
}

/// One `.pth` mutation.
#[derive(Debug, Clone)]
pub enum PthOp {
    /// Rewrites the operand of the nth int opcode of `data.pkl` (shape, stride, offset, size).
    PickleInt {
        nth: Index,
        value: IntValue,
    },
    /// Rewrites two consecutive int operands (two dimensions of one shape, or a size and its
    /// stride), as a single rewrite rarely makes a consistent bad shape.
    PickleIntPair {
        nth: Index,
        first: IntValue,
        second: IntValue,
    },
    /// Adds a small delta to the nth int operand.
    PickleNudge {
        nth: Index,
        delta: i8,
    },
    /// Mutates an entry's bytes (the archive is rewritten with the right CRC).
    Entry {
        entry: Index,
        op: ByteOp,
    },
    /// Cuts a storage entry short.
    TruncateEntry {
        entry: Index,
        keep: Index,
    },
    DropEntry {
        entry: Index,
    },
    /// Raw mutation of the written archive (its records' sizes, offsets, counts).
    Raw(ByteOp),
}

pub fn pth_op() -> impl Strategy<Value = PthOp> {
    prop_oneof![
        5 => (any::<Index>(), int_value()).prop_map(|(nth, value)| PthOp::PickleInt { nth, value }),
        2 => (any::<Index>(), any::<i8>()).prop_map(|(nth, delta)| PthOp::PickleNudge { nth, delta }),
        2 => (any::<Index>(), int_value(), int_value())
            .prop_map(|(nth, first, second)| PthOp::PickleIntPair { nth, first, second }),
        3 => (any::<Index>(), byte_op()).prop_map(|(entry, op)| PthOp::Entry { entry, op }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(entry, keep)| PthOp::TruncateEntry { entry, keep }),
        1 => any::<Index>().prop_map(|entry| PthOp::DropEntry { entry }),
        2 => byte_op().prop_map(PthOp::Raw),
    ]
}

/// `pth` mutated by `ops`.
pub fn mutate(pth: &[u8], ops: &[PthOp], seeds: &[Vec<u8>]) -> Vec<u8> {
    let Some(mut entries) = read(pth) else {
        let mut bytes = pth.to_vec();
        for op in ops {
            if let PthOp::Raw(op) | PthOp::Entry { op, .. } = op {
                apply_bytes(&mut bytes, op, seeds);
            }
        }
        return bytes;
    };
    let pkl = entries.iter().position(|(n, _)| n.ends_with("data.pkl"));
    let mut raw = Vec::new();
    for op in ops {
        let n = entries.len().max(1);
        match op {
            PthOp::PickleInt { nth, value } => {
                if let Some(p) = pkl {
                    let data = &mut entries[p].1;
                    let ints = pickle_ints(data);
                    if !ints.is_empty() {
                        set_int(data, ints[nth.index(ints.len())], value.get());
                    }
                }
            }
            PthOp::PickleIntPair { nth, first, second } => {
                if let Some(p) = pkl {
                    let data = &mut entries[p].1;
                    let ints = pickle_ints(data);
                    if ints.len() >= 2 {
                        let i = nth.index(ints.len() - 1);
                        // The later one first: rewriting the earlier shifts what follows.
                        set_int(data, ints[i + 1], second.get());
                        set_int(data, ints[i], first.get());
                    }
                }
            }
            PthOp::PickleNudge { nth, delta } => {
                if let Some(p) = pkl {
                    let data = &mut entries[p].1;
                    let ints = pickle_ints(data);
                    if !ints.is_empty() {
                        let int = ints[nth.index(ints.len())];
                        set_int(data, int, int.value.wrapping_add(*delta as i64 as u64));
                    }
                }
            }
            PthOp::Entry { entry, op } => {
                if let Some(e) = entries.get_mut(entry.index(n)) {
                    apply_bytes(&mut e.1, op, seeds);
                }
            }
            PthOp::TruncateEntry { entry, keep } => {
                if let Some(e) = entries.get_mut(entry.index(n)) {
                    let len = e.1.len();
                    e.1.truncate(keep.index(len.max(1)));
                }
            }
            PthOp::DropEntry { entry } => {
                if !entries.is_empty() {
                    entries.remove(entry.index(n));
                }
            }
            PthOp::Raw(op) => raw.push(op),
        }
    }
    let mut out = write(&entries);
    for op in raw {
        apply_bytes(&mut out, op, seeds);
    }
    out
}

/// Mutations of one of `seeds` (`.pth` files).
pub fn mutated_pth(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (any::<Index>(), vec(pth_op(), 1..=3))
        .prop_map(move |(seed, ops)| mutate(&seeds[seed.index(seeds.len())], &ops, &seeds))
        .boxed()
}

#[test]
fn fixtures_read_and_rewrite() {
    let pth = std::fs::read("tests/fixtures/gan/srvgg_general.pth").unwrap();
    let entries = read(&pth).expect("a stored zip");
    assert!(entries.iter().any(|(n, _)| n.ends_with("data.pkl")));
    assert_eq!(read(&write(&entries)), Some(entries.clone()));
    let pkl = &entries
        .iter()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .unwrap()
        .1;
    let ints = pickle_ints(pkl);
    assert!(ints.len() > 20, "{ints:?}");
    let mut edited = pkl.clone();
    set_int(&mut edited, ints[3], 1 << 40);
    let again = pickle_ints(&edited);
    assert_eq!(again.len(), ints.len());
    assert_eq!(again[3].value, 1 << 40);
    assert_eq!(again[4].value, ints[4].value);
}
