//! Safetensors weights read tensor by tensor with positioned file reads, as a
//! `candle_nn::VarBuilder` backend: the format of huggingface/safetensors (an 8-byte
//! little-endian header length, a JSON header of `{name: {dtype, shape, data_offsets}}`, then
//! the data), read the way candle's `MmapedSafetensors` hands it out.
//!
//! Why not the memory map candle offers: every page of a mapped file that loading touches
//! stays in the process's resident set until the map is dropped, on top of the tensors made
//! from it (and the models rearrange many weights once more at load). Loading the x4
//! upscaler's 1.9 GB UNet that way held the file and its tensors at once: the whole upscale's
//! peak resident memory was 4.88 GiB against diffusers' 4.58. Read this way, only one
//! tensor's bytes are in flight beside the model; the file data goes through the page cache,
//! which the kernel can drop, and the extra copy costs ~0.1 s per GB.
//!
//! Every header entry is checked against the file before any data is read (see
//! [`parse_header`]), and every float tensor is scanned for NaN and infinity as it is read
//! (a vectorised pass over each chunk just read, while it is in cache: ~0.03 s per GB).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model_file::{count_non_finite, non_finite_message, open_regular, try_buffer};

/// Bytes of a tensor read (and scanned for NaN) at a time (a multiple of every dtype's size).
const READ_CHUNK: usize = 1 << 20;

/// Largest header accepted (the format's own reference implementation caps it at 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor's entry in a header.
#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Where one tensor lies.
#[derive(Debug, Clone)]
struct Located {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte offset in the file and length.
    start: u64,
    len: usize,
}

/// One tensor a header describes.
struct HeaderEntry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte offset in the file and length.
    start: u64,
    len: usize,
}

/// The tensors a header describes: name, dtype, shape, and their byte range relative to the
/// file's start. Every entry is checked against the format and against the `file_len` bytes
/// the file has, before any data is read: a known dtype, a byte length equal to dtype × shape
/// (in checked arithmetic), offsets inside the data and no two tensors overlapping. Errors
/// name the tensor.
fn parse_header(header: &[u8], file_len: u64) -> std::result::Result<Vec<HeaderEntry>, String> {
    let data_start = 8 + header.len() as u64;
    let data_len = file_len.saturating_sub(data_start);
    // In name order, so that a header with several bad entries always names the same one.
    let entries: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header)
            .map_err(|e| format!("header is not the expected JSON object: {e}"))?;
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let entry: Entry = serde_json::from_value(value)
            .map_err(|e| format!("tensor `{name}`: bad header entry: {e}"))?;
        let dtype = parse_dtype(&entry.dtype).ok_or_else(|| {
            format!(
                "tensor `{name}`: dtype {} is not supported (expected F64, F32, F16, BF16, I64, \
                 I32, I16, U32 or U8)",
                entry.dtype
            )
        })?;
        crate::model_file::check_shape(&entry.shape)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        let want = entry
            .shape
            .iter()
            .try_fold(dtype.size_in_bytes(), |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                format!(
                    "tensor `{name}`: a {dtype:?} tensor of shape {:?} needs more bytes than any \
                     file holds",
                    entry.shape
                )
            })?;
        if want as u64 > data_len {
            return Err(format!(
                "tensor `{name}`: a {dtype:?} tensor of shape {:?} needs {want} bytes but the \
                 file has only {data_len} bytes of data",
                entry.shape
            ));
        }
        let (begin, end) = entry.data_offsets;
        if end < begin || end - begin != want as u64 || end > data_len {
            return Err(format!(
                "tensor `{name}`: data offsets {begin}..{end} do not hold a {dtype:?} {:?} \
                 ({want} bytes) inside the file's {data_len} bytes of data",
                entry.shape
            ));
        }
        tensors.push(HeaderEntry {
            name,
            dtype,
            shape: entry.shape,
            start: data_start + begin,
            len: want,
        });
    }
    // Two tensors sharing bytes is no file a writer makes.
    let mut ranges: Vec<(u64, u64, &str)> = tensors
        .iter()
        .filter(|t| t.len > 0)
        .map(|t| (t.start, t.start + t.len as u64, t.name.as_str()))
        .collect();
    ranges.sort_unstable();
    if let Some(w) = ranges.windows(2).find(|w| w[1].0 < w[0].1) {
        return Err(format!(
            "tensors `{}` and `{}` overlap (bytes {}..{} and {}..{}): not a safetensors file a \
             writer makes",
            w[0].2,
            w[1].2,
            w[0].0 - data_start,
            w[0].1 - data_start,
            w[1].0 - data_start,
            w[1].1 - data_start
        ));
    }
    Ok(tensors)
}

/// The header length the first 8 bytes of a `file_len`-byte file declare, checked to fit.
fn header_len(len_bytes: [u8; 8], file_len: u64) -> std::result::Result<usize, String> {
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
        return Err(format!(
            "header length {header_len} does not fit the file ({file_len} bytes, headers are at \
             most {MAX_HEADER_BYTES}): not a safetensors file?"
        ));
    }
    Ok(header_len as usize)
}

/// A tensor of `dtype` and `shape` from its little-endian bytes, refused when any value is not
/// finite; `what` names it in errors.
fn tensor_from_bytes(
    bytes: &[u8],
    dtype: DType,
    shape: &[usize],
    name: &str,
) -> std::result::Result<Tensor, String> {
    let bad = count_non_finite(bytes, dtype);
    if bad > 0 {
        return Err(non_finite_message(
            name,
            bad,
            bytes.len() / dtype.size_in_bytes(),
        ));
    }
    Tensor::from_raw_buffer(bytes, dtype, shape, &Device::Cpu).map_err(|e| e.to_string())
}

/// Every tensor of safetensors data held in memory (the embedded GAN model), with the same
/// checks as files; `path` names it in errors.
pub(crate) fn tensors_from_bytes(bytes: &[u8], path: &Path) -> Result<Vec<(String, Tensor)>> {
    let fail = |message: String| Error::Weights {
        path: path.to_path_buf(),
        message,
    };
    let file_len = bytes.len() as u64;
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| fail("shorter than a safetensors header (8 bytes)".into()))?;
    let header_len = header_len(len_bytes, file_len).map_err(fail)?;
    let entries = parse_header(&bytes[8..8 + header_len], file_len).map_err(fail)?;
    entries
        .into_iter()
        .map(|e| {
            let data = &bytes[e.start as usize..e.start as usize + e.len];
            let tensor = tensor_from_bytes(data, e.dtype, &e.shape, &e.name).map_err(fail)?;
            Ok((e.name, tensor))
        })
        .collect()
}

/// A set of safetensors files (one model, possibly sharded), indexed by tensor name.
pub struct SafetensorsReader {
    paths: Vec<PathBuf>,
    files: Vec<Mutex<File>>,
    tensors: HashMap<String, Located>,
}

impl SafetensorsReader {
    /// Reads the headers of `paths` (not the data). Errors name the file, the tensor and what
    /// is wrong. Each file must be a regular file; its size bounds every read.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let fail = |message: String| Error::Weights {
                path: path.clone(),
                message,
            };
            let (mut file, file_len) = open_regular(path)?;
            let mut len_bytes = [0u8; 8];
            file.read_exact(&mut len_bytes)
                .map_err(|_| fail("shorter than a safetensors header (8 bytes)".into()))?;
            let header_len = header_len(len_bytes, file_len).map_err(fail)?;
            let mut header = try_buffer(header_len, path)?;
            header.resize(header_len, 0);
            file.read_exact(&mut header)
                .map_err(|e| fail(format!("cannot read the header: {e}")))?;
            for e in parse_header(&header, file_len).map_err(fail)? {
                let at = Located {
                    file: index,
                    dtype: e.dtype,
                    shape: e.shape,
                    start: e.start,
                    len: e.len,
                };
                let name = e.name;
                if let Some(earlier) = tensors.insert(name.clone(), at) {
                    return Err(fail(format!(
                        "tensor `{name}` is also in {}: a sharded model holds each tensor once",
                        paths[earlier.file].display()
                    )));
                }
            }
            files.push(Mutex::new(file));
        }
        Ok(Self {
            paths: paths.to_vec(),
            files,
            tensors,
        })
    }

    /// The tensor names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor called `name`, read from its file onto `device` in its stored dtype. Refused
    /// when it holds a NaN or an infinity.
    pub fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let at = self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })?;
        let path = &self.paths[at.file];
        let fail = |what: String| candle_core::Error::Msg(format!("{}: {what}", path.display()));
        let read_error = |e: std::io::Error| fail(format!("reading tensor `{name}`: {e}"));
        let no_memory = || {
            fail(format!(
                "cannot allocate {} bytes for tensor `{name}`",
                at.len
            ))
        };
        let mut file = self.files[at.file]
            .lock()
            .map_err(|_| fail("reader poisoned".into()))?;
        file.seek(SeekFrom::Start(at.start)).map_err(read_error)?;
        let tensor = if at.dtype == DType::F32 {
            // Straight into the tensor's own buffer through a small reused chunk: no zeroed
            // full-size byte buffer and no second full-size copy.
            let mut values: Vec<f32> = Vec::new();
            values
                .try_reserve_exact(at.len / 4)
                .map_err(|_| no_memory())?;
            let mut chunk = vec![0u8; READ_CHUNK.min(at.len)];
            let mut left = at.len;
            let mut bad = 0;
            while left > 0 {
                let n = left.min(chunk.len());
                file.read_exact(&mut chunk[..n]).map_err(read_error)?;
                bad += count_non_finite(&chunk[..n], DType::F32);
                values.extend(
                    chunk[..n]
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                left -= n;
            }
            if bad > 0 {
                return Err(fail(non_finite_message(name, bad, at.len / 4)));
            }
            Tensor::from_vec(values, at.shape.as_slice(), &Device::Cpu)?
        } else {
            let mut bytes: Vec<u8> = Vec::new();
            bytes.try_reserve_exact(at.len).map_err(|_| no_memory())?;
            bytes.resize(at.len, 0);
            // Scanned chunk by chunk as it is read, while the chunk is in cache.
            let mut bad = 0;
            for chunk in bytes.chunks_mut(READ_CHUNK) {
                file.read_exact(chunk).map_err(read_error)?;
                bad += count_non_finite(chunk, at.dtype);
            }
            if bad > 0 {
                let total = at.len / at.dtype.size_in_bytes();
                return Err(fail(non_finite_message(name, bad, total)));
            }
            Tensor::from_raw_buffer(&bytes, at.dtype, &at.shape, &Device::Cpu)?
        };
        drop(file);
        tensor.to_device(device)
    }
}

/// The safetensors dtype names candle can hold.
fn parse_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

impl SimpleBackend for SafetensorsReader {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        // Checked before reading: a wrong file fails without moving its data.
        if let Some(at) = self.tensors.get(name) {
            if at.shape.as_slice() != s.dims() {
                return Err(candle_core::Error::UnexpectedShape {
                    msg: format!("shape mismatch for {name}"),
                    expected: s,
                    got: at.shape.clone().into(),
                }
                .bt());
            }
        }
        self.load(name, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// A `VarBuilder` over `paths` read by [`SafetensorsReader`].
pub fn var_builder(
    paths: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<candle_nn::VarBuilder<'static>> {
    let reader = SafetensorsReader::open(paths)?;
    Ok(candle_nn::VarBuilder::from_backend(
        Box::new(reader),
        dtype,
        device.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Init;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("diffsr-st-reader-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn save(path: &std::path::Path, tensors: &[(&str, &Tensor)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), (*t).clone()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    #[test]
    fn reads_what_candle_wrote_across_shards() -> Result<()> {
        let dir = TempDir::new("shards");
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (3, 5), &dev)?;
        let b = Tensor::randn(0f32, 1.0, (7,), &dev)?.to_dtype(DType::F16)?;
        let c = Tensor::new(&[1i64, -2, 3], &dev)?;
        let (p1, p2) = (dir.0.join("one.safetensors"), dir.0.join("two.safetensors"));
        save(&p1, &[("a", &a), ("b", &b)]);
        save(&p2, &[("c", &c)]);
        let reader = SafetensorsReader::open(&[p1, p2])?;
        assert!(reader.contains_tensor("a") && reader.contains_tensor("c"));
        assert!(!reader.contains_tensor("d"));
        assert_eq!(
            reader.load("a", &dev)?.to_vec2::<f32>()?,
            a.to_vec2::<f32>()?
        );
        let b_read = reader.load("b", &dev)?;
        assert_eq!(b_read.dtype(), DType::F16);
        assert_eq!(
            b_read.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            b.to_dtype(DType::F32)?.to_vec1::<f32>()?
        );
        assert_eq!(reader.load("c", &dev)?.to_vec1::<i64>()?, [1, -2, 3]);
        // Through the backend: dtype conversion, and the shape checked before reading.
        let got = reader.get((3, 5).into(), "a", Init::Const(0.0), DType::F64, &dev)?;
        assert_eq!(got.dtype(), DType::F64);
        let err = reader
            .get((5, 3).into(), "a", Init::Const(0.0), DType::F32, &dev)
            .unwrap_err();
        assert!(err.to_string().contains("shape mismatch for a"), "{err}");
        let err = reader.load("missing", &dev).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        Ok(())
    }

    /// What opening `path` alone fails with.
    fn open_error(path: &std::path::Path) -> String {
        match SafetensorsReader::open(&[path.to_path_buf()]) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_files_are_named() {
        let dir = TempDir::new("bad");
        let not_st = dir.0.join("text.safetensors");
        std::fs::write(&not_st, b"hello, this is not a weights file").unwrap();
        let err = open_error(&not_st);
        assert!(
            err.contains("text.safetensors") && err.contains("header length"),
            "{err}"
        );

        // A valid file cut short: the last tensor's data no longer fits.
        let good = dir.0.join("cut.safetensors");
        let t = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        save(&good, &[("w", &t)]);
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(&good, &bytes[..bytes.len() - 4]).unwrap();
        let err = open_error(&good);
        assert!(
            err.contains("cut.safetensors") && err.contains("`w`"),
            "{err}"
        );

        let missing = dir.0.join("absent.safetensors");
        let err = open_error(&missing);
        assert!(
            err.contains("absent.safetensors") && err.contains("no such model file"),
            "{err}"
        );
    }
}
