//! PyTorch checkpoints (`torch.save`'s zip format: `.pth`, `.pt`, `.ckpt`, diffusers' `.bin`)
//! read without executing pickle code and without trusting a size the file declares.
//!
//! The zip archive holds `<prefix>/data.pkl`, the pickled state dict ([`pickle`] interprets it
//! without running anything), and one stored entry `<prefix>/data/<key>` per tensor storage.
//! Every tensor record ([`records`]) is checked before any data is read: its storage entry must
//! exist, be stored uncompressed and hold exactly the declared element count × dtype bytes;
//! size, stride and offset must stay inside it (checked arithmetic); a view may not be larger
//! than its storage. Buffers are reserved fallibly, reads are positioned and bounded, and float
//! tensors with a NaN or an infinity are refused. Legacy (torch < 1.6) files, a bare pickle
//! stream followed by raw storages, are refused: nothing bounds what they declare.

mod pickle;
mod records;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use crate::error::{Error, Result};
use crate::model_file::{count_non_finite, non_finite_message, open_regular, try_buffer};
use records::TensorRecord;

/// Largest `data.pkl` read: a state dict of thousands of tensors pickles to a few hundred KB.
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Wrapper keys tried in order before the top-level dict itself: Real-ESRGAN / basicsr save
/// `{"params_ema": ...}` or `{"params": ...}` (the EMA weights are the released ones), other
/// trainers `{"state_dict": ...}`.
const WRAPPERS: [&str; 3] = ["params_ema", "params", "state_dict"];

/// Where a storage's bytes lie in the file.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u64,
    len: u64,
}

/// The tensors of one checkpoint, read on demand.
pub struct PthReader {
    path: PathBuf,
    file: Mutex<File>,
    tensors: HashMap<String, (TensorRecord, Entry)>,
}

impl PthReader {
    /// Opens a checkpoint and checks every tensor it declares against the archive (reading
    /// no tensor data). The state dict is the first of `params_ema`, `params`, `state_dict`
    /// that holds tensors, else the top-level dict.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |message: String| Error::Weights {
            path: path.to_path_buf(),
            message,
        };
        let (mut file, file_len) = open_regular(path)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n < 4 || magic != *b"PK\x03\x04" {
            return Err(fail(
                "not a zip-format PyTorch file: legacy (torch < 1.6) or plain-pickle .pth files \
                 are not read (they could run code); re-save it with a current torch.save, or as \
                 safetensors"
                    .into(),
            ));
        }
        file.seek(SeekFrom::Start(0)).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let Archive {
            pickle_name,
            pickle,
            entries,
        } = read_archive(file.try_clone().map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?)
        .map_err(fail)?;
        let top = pickle::unpickle(&pickle).map_err(|e| fail(format!("{pickle_name}: {e}")))?;
        let dict = state_dict(&top).ok_or_else(|| {
            fail(format!(
                "holds no state dict: its pickle is {}; expected a dict of tensors, or one under \
                 `params_ema`, `params` or `state_dict` (a whole pickled model or other object \
                 is not read)",
                top.describe()
            ))
        })?;
        let prefix = pickle_name.strip_suffix("data.pkl").unwrap_or("");
        let mut tensors = HashMap::new();
        let mut declared: u64 = 0;
        for record in records::tensor_records(dict).map_err(fail)? {
            let entry_name = format!("{prefix}data/{}", record.storage);
            let entry = *entries.get(&entry_name).ok_or_else(|| {
                fail(format!(
                    "tensor `{}`: its storage {entry_name} is not in the archive",
                    record.name
                ))
            })?;
            let bytes =
                (record.storage_len as u64).checked_mul(record.dtype.size_in_bytes() as u64);
            if bytes != Some(entry.len) {
                return Err(fail(format!(
                    "tensor `{}`: its storage declares {} {:?} elements ({} bytes) but {entry_name} \
                     holds {} bytes",
                    record.name,
                    record.storage_len,
                    record.dtype,
                    bytes.map_or_else(|| "too many".to_string(), |b| b.to_string()),
                    entry.len
                )));
            }
            declared = declared.saturating_add(
                (record.numel as u64).saturating_mul(record.dtype.size_in_bytes() as u64),
            );
            if let Some(earlier) = tensors.insert(record.name.clone(), (record, entry)) {
                return Err(fail(format!("tensor `{}` is stored twice", earlier.0.name)));
            }
        }
        // Views of shared storages could otherwise ask for many times the file's size.
        let limit = file_len.saturating_mul(4).saturating_add(1 << 20);
        if declared > limit {
            return Err(fail(format!(
                "its tensors declare {declared} bytes, more than 4x the file's {file_len}: \
                 overlapping views of shared storages; re-save them with .contiguous()"
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            tensors,
        })
    }

    /// The tensor names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The dtype of tensor `name`.
    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.tensors.get(name).map(|(r, _)| r.dtype)
    }

    /// Reads tensor `name` onto the CPU in its stored dtype; `None` if there is none.
    pub fn load(&self, name: &str) -> Result<Option<Tensor>> {
        let Some((record, entry)) = self.tensors.get(name) else {
            return Ok(None);
        };
        let fail = |message: String| Error::Weights {
            path: self.path.clone(),
            message: format!("tensor `{name}`: {message}"),
        };
        let es = record.dtype.size_in_bytes();
        // The storage elements the tensor reads, checked against the entry at open.
        let window = (record.end - record.offset) * es;
        let mut bytes: Vec<u8> = try_buffer(window, &self.path)?;
        bytes.resize(window, 0);
        {
            let mut file = self
                .file
                .lock()
                .map_err(|_| fail("reader poisoned".into()))?;
            file.seek(SeekFrom::Start(entry.start + (record.offset * es) as u64))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|e| fail(format!("cannot read its data: {e}")))?;
        }
        let mut bytes = if record.is_contiguous() {
            bytes.truncate(record.numel * es);
            bytes
        } else {
            gather(&bytes, record, &self.path)?
        };
        let bad = count_non_finite(&bytes, record.dtype);
        if bad > 0 {
            return Err(Error::Weights {
                path: self.path.clone(),
                message: non_finite_message(name, bad, record.numel),
            });
        }
        if cfg!(target_endian = "big") {
            bytes.chunks_exact_mut(es).for_each(<[u8]>::reverse);
        }
        let tensor = Tensor::from_raw_buffer(&bytes, record.dtype, &record.size, &Device::Cpu)?;
        Ok(Some(tensor))
    }
}

/// The tensor's elements in row-major order, from the storage window starting at its offset.
fn gather(window: &[u8], record: &TensorRecord, path: &Path) -> Result<Vec<u8>> {
    let es = record.dtype.size_in_bytes();
    let mut out: Vec<u8> = try_buffer(record.numel * es, path)?;
    let rank = record.size.len();
    let mut index = vec![0usize; rank];
    for _ in 0..record.numel {
        // In bounds: the record's `end` covers the largest index.
        let at: usize = index.iter().zip(&record.stride).map(|(i, s)| i * s).sum();
        out.extend_from_slice(&window[at * es..(at + 1) * es]);
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < record.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The dict holding the tensors: under a wrapper key, else the top-level dict. `None` when no
/// dict holds a tensor.
fn state_dict(top: &pickle::Value) -> Option<&[(pickle::Value, pickle::Value)]> {
    let dict = top.as_dict()?;
    for key in WRAPPERS {
        let inner = dict
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| v.as_dict());
        if let Some(inner) = inner.filter(|d| records::count_tensors(d) > 0) {
            return Some(inner);
        }
    }
    (records::count_tensors(dict) > 0).then_some(dict)
}

/// What a checkpoint's zip archive holds.
struct Archive {
    /// The name of its `data.pkl` entry (`archive/data.pkl`: the prefix names the storages).
    pickle_name: String,
    pickle: Vec<u8>,
    /// Where each stored entry's data lies, by entry name.
    entries: HashMap<String, Entry>,
}

/// The archive's `data.pkl` and where each stored entry's data lies.
fn read_archive(file: File) -> std::result::Result<Archive, String> {
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot read its size: {e}"))?
        .len();
    // torch.save writes the archive at offset 0. zip 9.4's default offset detection trusts the
    // start implied by the central directory's size, which lands on the second header when the
    // first one (46 bytes + `NAME/data.pkl`, i.e. a 21-character file stem) is exactly as long
    // as the zip64 end records torch writes after the directory (76 bytes): such files failed
    // with "Invalid Central Directory header".
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let mut zip = zip::ZipArchive::with_config(config, BufReader::new(file))
        .map_err(|e| format!("not a readable zip archive: {e}"))?;
    let mut entries = HashMap::new();
    let mut pickle_index = None;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| format!("zip entry {i} is unreadable: {e}"))?;
        let name = entry
            .name()
            .map_err(|e| format!("zip entry {i}: {e}"))?
            .into_owned();
        let (len, stored) = (
            entry.size(),
            entry.compression() == zip::CompressionMethod::Stored,
        );
        let start = entry.data_start().unwrap_or(u64::MAX);
        if start
            .checked_add(entry.compressed_size())
            .is_none_or(|end| end > file_len)
        {
            return Err(format!("zip entry {name} lies beyond the end of the file"));
        }
        if name.ends_with("data.pkl") && pickle_index.is_none() {
            pickle_index = Some((i, name.clone(), len));
        }
        if !stored || entry.compressed_size() != len {
            // Tensor data is read in place; torch.save never compresses.
            if name.contains("/data/") {
                return Err(format!(
                    "zip entry {name} is compressed ({:?}); torch.save stores tensor data \
                     uncompressed",
                    entry.compression()
                ));
            }
            continue;
        }
        entries.insert(name, Entry { start, len });
    }
    let (index, name, len) = pickle_index.ok_or("the archive has no data.pkl")?;
    if len > MAX_PICKLE_BYTES.min(file_len) {
        return Err(format!(
            "{name} declares {len} bytes, more than the file or the {MAX_PICKLE_BYTES} read"
        ));
    }
    let mut pickle = Vec::new();
    pickle
        .try_reserve_exact(len as usize)
        .map_err(|_| format!("cannot allocate {len} bytes for {name}"))?;
    zip.by_index(index)
        .map_err(|e| format!("{name}: {e}"))?
        .take(len)
        .read_to_end(&mut pickle)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Archive {
        pickle_name: name,
        pickle,
        entries,
    })
}

impl SimpleBackend for PthReader {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some((record, _)) = self.tensors.get(name) {
            if record.size.as_slice() != s.dims() {
                return Err(candle_core::Error::UnexpectedShape {
                    msg: format!("shape mismatch for {name}"),
                    expected: s,
                    got: record.size.clone().into(),
                });
            }
        }
        self.get_unchecked(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = self
            .load(name)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            })?;
        tensor.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// A `VarBuilder` over the checkpoint at `path`, read by [`PthReader`].
pub fn var_builder(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<candle_nn::VarBuilder<'static>> {
    let reader = PthReader::open(path)?;
    Ok(candle_nn::VarBuilder::from_backend(
        Box::new(reader),
        dtype,
        device.clone(),
    ))
}
