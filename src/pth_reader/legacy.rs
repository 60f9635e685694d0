//! Legacy `torch.save` files (torch < 1.6, or `_use_new_zipfile_serialization=False`), as many
//! older ESRGAN-family models are: five pickles in a row (a magic number, the protocol
//! version, the system's type sizes, the object, the storage keys) and then each storage as an
//! int64 element count followed by its raw bytes, in the keys' order (torch/serialization.py,
//! `_legacy_save`). The pickles go through the same non-executing interpreter as the zip
//! format's `data.pkl`; every storage's count is checked against the bytes the file has before
//! any tensor is read, so nothing the file declares is trusted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use candle_core::DType;

use super::pickle::{unpickle_prefix, Value};
use super::{records, Entry, MAX_PICKLE_BYTES};

/// `torch.serialization.MAGIC_NUMBER`, pickled as a 10-byte LONG1.
const MAGIC_NUMBER: u128 = 0x1950a86a20f9469cfc6c;
/// `torch.serialization.PROTOCOL_VERSION`.
const PROTOCOL_VERSION: i64 = 1001;
/// The magic-number pickle's length: PROTO n, LONG1 10 bytes, STOP.
const MAGIC_PICKLE_LEN: usize = 15;
/// The header read first; grown until the pickles fit.
const FIRST_READ: u64 = 1 << 20;

/// The pickled object and where each storage's bytes lie, keyed `data/<key>` as in the zip
/// format.
pub(super) struct Legacy {
    pub(super) top: Value,
    pub(super) entries: HashMap<String, Entry>,
}

/// Whether `head` (the file's first bytes) opens with the legacy magic-number pickle:
/// PROTO n, LONG1 of 10 bytes, STOP.
pub(super) fn is_legacy(head: &[u8]) -> bool {
    let magic = &MAGIC_NUMBER.to_le_bytes()[..10];
    head.len() >= MAGIC_PICKLE_LEN
        && head[0] == 0x80
        && head[2] == 0x8a
        && head[3] == 10
        && &head[4..14] == magic
        && head[14] == b'.'
}

/// Reads the five pickles and locates every storage.
pub(super) fn read(file: &mut File, file_len: u64) -> Result<Legacy, String> {
    let (pickles, data_start) = read_pickles(file, file_len)?;
    let [protocol, sys_info, top, keys] = pickles;
    if protocol.as_int() != Some(PROTOCOL_VERSION) {
        return Err(format!(
            "a legacy torch.save file of protocol {}, expected {PROTOCOL_VERSION}",
            protocol.describe()
        ));
    }
    let little_endian = sys_info.as_dict().and_then(|d| {
        d.iter()
            .find(|(k, _)| k.as_str() == Some("little_endian"))
            .map(|(_, v)| matches!(v, Value::Bool(true)))
    });
    if little_endian == Some(false) {
        return Err("a legacy torch.save file from a big-endian machine is not read".into());
    }
    let types = storage_types(&top)?;
    let keys = keys.as_seq().ok_or_else(|| {
        format!(
            "the legacy storage list is {}, expected a list of keys",
            keys.describe()
        )
    })?;
    let mut entries = HashMap::new();
    let mut at = data_start;
    for key in keys {
        let key = records::storage_key(key)?;
        let dtype = *types.get(&key).ok_or_else(|| {
            format!("storage {key} is listed, but no tensor of the file names its type")
        })?;
        let mut count = [0u8; 8];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut count))
            .map_err(|e| {
                format!("storage {key}: cannot read its element count at byte {at}: {e}")
            })?;
        let count = u64::from_le_bytes(count);
        let start = at + 8;
        let left = file_len.saturating_sub(start);
        let len = count
            .checked_mul(dtype.size_in_bytes() as u64)
            .filter(|&len| len <= left)
            .ok_or_else(|| {
                format!(
                    "storage {key} declares {count} {dtype:?} elements, more than the {left} bytes \
                     left in the file: it is truncated or damaged"
                )
            })?;
        entries.insert(format!("data/{key}"), Entry { start, len });
        at = start + len;
    }
    Ok(Legacy { top, entries })
}

/// The four header pickles after the magic number (checked byte for byte by [`is_legacy`]: its
/// 10-byte integer is wider than the interpreter's) and the offset just after them, reading
/// more of the file until they fit (a state dict's pickles are a few hundred KB at most).
fn read_pickles(file: &mut File, file_len: u64) -> Result<([Value; 4], u64), String> {
    let limit = file_len.min(MAX_PICKLE_BYTES);
    let mut want = FIRST_READ.min(limit);
    loop {
        let mut head = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.by_ref().take(want).read_to_end(&mut head))
            .map_err(|e| format!("cannot read it: {e}"))?;
        match parse_four(&head) {
            Ok(found) => return Ok(found),
            Err(_) if want < limit => want = (want * 4).min(limit),
            Err(e) => return Err(e),
        }
    }
}

fn parse_four(head: &[u8]) -> Result<([Value; 4], u64), String> {
    let mut pos = MAGIC_PICKLE_LEN;
    let mut values = Vec::with_capacity(4);
    for which in ["protocol", "system info", "object", "storage keys"] {
        let rest = head.get(pos..).unwrap_or_default();
        let (value, len) = unpickle_prefix(rest)
            .map_err(|e| format!("legacy torch.save {which} pickle at byte {pos}: {e}"))?;
        values.push(value);
        pos += len;
    }
    let values: [Value; 4] = values
        .try_into()
        .map_err(|_| "four pickles expected".to_string())?;
    Ok((values, pos as u64))
}

/// The dtype of every storage the object refers to, by key.
fn storage_types(top: &Value) -> Result<HashMap<String, DType>, String> {
    let mut types = HashMap::new();
    let mut error = None;
    top.walk(&mut |v| {
        let Some(id) = v.as_persistent_id().and_then(Value::as_seq) else {
            return;
        };
        if error.is_some() || id.first().and_then(Value::as_str) != Some("storage") {
            return;
        }
        // (storage, type, key, location, numel, view_metadata): views of a storage are a
        // torch < 0.4 feature no released model uses.
        if id.get(5).is_some_and(|view| !matches!(view, Value::None)) {
            error = Some("a storage view (view metadata) is not read".to_string());
            return;
        }
        match (id.get(1).and_then(records::storage_class_dtype), id.get(2)) {
            (Some(dtype), Some(key)) => match records::storage_key(key) {
                Ok(key) => {
                    types.insert(key, dtype);
                }
                Err(e) => error = Some(e),
            },
            _ => {
                error = Some(format!(
                    "a storage id {} names no supported storage type",
                    v.describe()
                ))
            }
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(types),
    }
}
