//! PNG-aware mutations: the file is split into chunks (length, type, data, CRC), a chunk's
//! data is mutated and its CRC recomputed (so the decoder's check passes and the chunk's
//! parser sees the bytes), chunks are removed, duplicated or moved, text chunks (`tEXt`) with
//! awkward keywords and text are inserted, and sometimes a length or CRC is left wrong.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::crc::crc32;
use super::json::{json_plan, mutate_json, JsonPlan};
use super::mutate::{apply as apply_bytes, byte_op, int_value, ByteOp, IntValue};

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// One chunk: its type and data (length and CRC are written from them).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub kind: [u8; 4],
    pub data: Vec<u8>,
}

/// The chunks of a PNG; `None` when it does not split cleanly.
pub fn chunks(png: &[u8]) -> Option<Vec<Chunk>> {
    let mut rest = png.strip_prefix(SIGNATURE)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let data = rest.get(8..8 + len)?.to_vec();
        rest = rest.get(12 + len..)?;
        out.push(Chunk { kind, data });
    }
    Some(out)
}

/// Writes `chunks` as a PNG with correct lengths and CRCs.
pub fn write(chunks: &[Chunk]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    for c in chunks {
        out.extend((c.data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(c.kind);
        out.extend(&c.data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    out
}

/// Offset of chunk `n`'s length field in the output of [`write`].
fn chunk_offset(chunks: &[Chunk], n: usize) -> usize {
    8 + chunks[..n].iter().map(|c| 12 + c.data.len()).sum::<usize>()
}

/// One PNG mutation.
#[derive(Debug, Clone)]
pub enum PngOp {
    /// Mutates a chunk's data; the CRC is recomputed.
    Data {
        chunk: Index,
        op: ByteOp,
    },
    Remove {
        chunk: Index,
    },
    Duplicate {
        chunk: Index,
        to: Index,
    },
    /// Inserts a `tEXt` chunk: keyword, NUL, text.
    Text {
        at: Index,
        keyword: Vec<u8>,
        text: Vec<u8>,
    },
    /// Writes a wrong length into a chunk's length field (after writing).
    Length {
        chunk: Index,
        value: IntValue,
    },
    /// Breaks a chunk's CRC (after writing).
    Crc {
        chunk: Index,
    },
    /// Mutates the JSON record of the `diffsr` tEXt chunk (values with control characters,
    /// wrong types, huge numbers), as a crafted file would carry it.
    Record(JsonPlan),
}

fn text_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..40),
        Just(b"diffsr".to_vec()),
        Just(b"parameters".to_vec()),
        Just(b"\x1b]0;title\x07\x1b[2J\rfake line".to_vec()),
        Just(br#"{"model":"m","prompt":"p","negative_prompt":"","seed":1,"steps":2,"scheduler":"ddim","guidance":1,"noise_level":20,"eta":0,"diffsr_version":"0"}"#.to_vec()),
        Just(vec![b'k'; 90]),
    ]
}

pub fn png_op() -> impl Strategy<Value = PngOp> {
    prop_oneof![
        6 => (any::<Index>(), byte_op()).prop_map(|(chunk, op)| PngOp::Data { chunk, op }),
        1 => any::<Index>().prop_map(|chunk| PngOp::Remove { chunk }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(chunk, to)| PngOp::Duplicate { chunk, to }),
        2 => (any::<Index>(), text_bytes(), text_bytes())
            .prop_map(|(at, keyword, text)| PngOp::Text { at, keyword, text }),
        1 => (any::<Index>(), int_value()).prop_map(|(chunk, value)| PngOp::Length { chunk, value }),
        1 => any::<Index>().prop_map(|chunk| PngOp::Crc { chunk }),
        3 => json_plan().prop_map(PngOp::Record),
    ]
}

/// `png` mutated by `ops` (raw byte ops where it does not split into chunks).
pub fn mutate(png: &[u8], ops: &[PngOp], seeds: &[Vec<u8>]) -> Vec<u8> {
    let Some(mut list) = chunks(png) else {
        let mut bytes = png.to_vec();
        for op in ops {
            if let PngOp::Data { op, .. } = op {
                apply_bytes(&mut bytes, op, seeds);
            }
        }
        return bytes;
    };
    let mut after: Vec<&PngOp> = Vec::new();
    for op in ops {
        let n = list.len().max(1);
        match op {
            PngOp::Data { chunk, op } => {
                if let Some(c) = list.get_mut(chunk.index(n)) {
                    apply_bytes(&mut c.data, op, seeds);
                }
            }
            PngOp::Remove { chunk } => {
                if !list.is_empty() {
                    list.remove(chunk.index(n));
                }
            }
            PngOp::Duplicate { chunk, to } => {
                if let Some(c) = list.get(chunk.index(n)).cloned() {
                    list.insert(to.index(n + 1), c);
                }
            }
            PngOp::Text { at, keyword, text } => {
                let mut data = keyword.clone();
                data.push(0);
                data.extend(text);
                // After IHDR, where decoders read text before the image data.
                let at = 1 + at.index(n);
                list.insert(
                    at.min(list.len()),
                    Chunk {
                        kind: *b"tEXt",
                        data,
                    },
                );
            }
            PngOp::Record(plan) => {
                if let Some((c, at)) = list
                    .iter_mut()
                    .find_map(|c| record_text(c).map(|at| (c, at)))
                {
                    let json = mutate_json(&c.data[at..], plan);
                    c.data.truncate(at);
                    c.data.extend(json);
                }
            }
            PngOp::Length { .. } | PngOp::Crc { .. } => after.push(op),
        }
    }
    let mut out = write(&list);
    for op in after {
        if list.is_empty() {
            break;
        }
        match op {
            PngOp::Length { chunk, value } => {
                let at = chunk_offset(&list, chunk.index(list.len()));
                out[at..at + 4].copy_from_slice(&(value.get() as u32).to_be_bytes());
            }
            PngOp::Crc { chunk } => {
                let n = chunk.index(list.len());
                let at = chunk_offset(&list, n) + 8 + list[n].data.len();
                out[at] ^= 0x5a;
            }
            _ => {}
        }
    }
    out
}

/// Where the text of an uncompressed `diffsr` record starts in `chunk` (tEXt, or iTXt as
/// diffsr writes it), if it is one.
fn record_text(chunk: &Chunk) -> Option<usize> {
    let rest = chunk.data.strip_prefix(b"diffsr\0")?;
    match &chunk.kind {
        b"tEXt" => Some(7),
        // Compression flag 0, method, then a language tag and a translated keyword, each
        // NUL-terminated.
        b"iTXt" if rest.first() == Some(&0) => {
            let lang = rest.get(2..)?.iter().position(|&b| b == 0)?;
            let key = rest.get(3 + lang..)?.iter().position(|&b| b == 0)?;
            Some(7 + 3 + lang + key + 1)
        }
        _ => None,
    }
}

/// Mutations of one of `seeds` (PNG files).
pub fn mutated_png(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (any::<Index>(), vec(png_op(), 1..=4))
        .prop_map(move |(seed, ops)| mutate(&seeds[seed.index(seeds.len())], &ops, &seeds))
        .boxed()
}
