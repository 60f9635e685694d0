//! The checks every model file (safetensors, `.pth`, ncnn `.param` / `.bin`) passes before its
//! bytes are used: it must be a regular file, checked by its metadata before it is opened (a
//! FIFO with no writer would block `open` forever, a device such as `/dev/zero` never ends);
//! reads are bounded by the size the file had when it was checked; buffers whose size comes
//! from a file are reserved fallibly; and weights must be finite (a NaN or infinity in one
//! tensor turns the whole output black or grey without any other sign).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use candle_core::DType;

use crate::error::{Error, Result};
use crate::input_file::{non_regular_kind, open_regular_file, OpenFailure};

/// What a file is to the reader, for its messages: `weights PATH: no such model file` or
/// `config PATH: no such file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileRole {
    /// Weights: safetensors, `.pth`, ncnn `.param` / `.bin`.
    Model,
    /// A JSON config or index beside the weights.
    Config,
}

impl FileRole {
    fn error(self, path: &Path, message: String) -> Error {
        let path = path.to_path_buf();
        match self {
            Self::Model => Error::Weights { path, message },
            Self::Config => Error::Config { path, message },
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Model => "model file",
            Self::Config => "config file",
        }
    }
}

fn check_regular(path: &Path, meta: &std::fs::Metadata, role: FileRole) -> Result<()> {
    match non_regular_kind(&meta.file_type()) {
        Some(what) => Err(not_regular_error(path, what, role)),
        None => Ok(()),
    }
}

fn not_regular_error(path: &Path, what: &str, role: FileRole) -> Error {
    role.error(
        path,
        format!("is {what}; a {} must be a regular file", role.noun()),
    )
}

/// The size of the regular file at `path` (symlinks followed), or an error naming what it is
/// instead; nothing is opened, so a FIFO cannot block.
pub(crate) fn regular_file_len(path: &Path) -> Result<u64> {
    regular_len(path, FileRole::Model)
}

fn regular_len(path: &Path, role: FileRole) -> Result<u64> {
    // A missing model file is said once, as a fact about the model ("no such model file");
    // other files keep the I/O error, which callers match on.
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound if role == FileRole::Model => {
            role.error(path, format!("no such {}", role.noun()))
        }
        _ => Error::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    check_regular(path, &meta, role)?;
    Ok(meta.len())
}

/// Opens the regular model file at `path` for reading; returns it with its length. The type
/// is checked before opening and again on the opened file, so a file swapped in between is
/// caught too.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64)> {
    open_as(path, FileRole::Model)
}

fn open_as(path: &Path, role: FileRole) -> Result<(File, u64)> {
    open_regular_file(path).map_err(|e| match e {
        // A missing model file is said once, as a fact about the model (see `regular_len`).
        OpenFailure::Io(source)
            if role == FileRole::Model && source.kind() == std::io::ErrorKind::NotFound =>
        {
            role.error(path, format!("no such {}", role.noun()))
        }
        OpenFailure::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        OpenFailure::NotRegular(what) => not_regular_error(path, what, role),
    })
}

/// The whole content of the regular file at `path`, which may hold at most `max` bytes.
pub(crate) fn read_regular(path: &Path, max: u64, role: FileRole) -> Result<Vec<u8>> {
    let (file, len) = open_as(path, role)?;
    if len > max {
        return Err(role.error(
            path,
            format!("is {len} bytes; at most {max} are expected of this kind of file"),
        ));
    }
    let mut bytes = try_buffer(len as usize, path)?;
    // Bounded by the size checked above: a file that grows meanwhile is not read further.
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 != len {
        return Err(role.error(
            path,
            format!(
                "changed while it was read: {} bytes instead of {len}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// An empty buffer with room for `bytes` bytes, or an error naming `path` when the memory
/// cannot be had (instead of the allocator's abort).
pub(crate) fn try_buffer<T>(len: usize, path: &Path) -> Result<Vec<T>> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| Error::Weights {
        path: path.to_path_buf(),
        message: format!(
            "cannot allocate {} bytes for its data",
            len.saturating_mul(std::mem::size_of::<T>())
        ),
    })?;
    Ok(buffer)
}

/// How many values of `bytes` (little-endian `dtype` values) are NaN or infinite; 0 for
/// integer dtypes. A float is not finite when its exponent bits are all ones.
///
/// Counted in blocks of 4096 values with 16-bit counters, a form the compiler vectorises: on a
/// 1 MB chunk just read (in cache) it runs at 30 (f32) to 60 (f16) GB/s, so scanning the x4
/// upscaler's 3.5 GB of weights costs ~0.1 s of loading (measured with `rustc -O`, x86-64).
pub(crate) fn count_non_finite(bytes: &[u8], dtype: DType) -> usize {
    match dtype {
        DType::F16 => count_blocks::<2>(bytes, |c| u16::from_le_bytes(c) & 0x7c00 == 0x7c00),
        DType::BF16 => count_blocks::<2>(bytes, |c| u16::from_le_bytes(c) & 0x7f80 == 0x7f80),
        DType::F32 => count_blocks::<4>(bytes, |c| {
            u32::from_le_bytes(c) & 0x7f80_0000 == 0x7f80_0000
        }),
        DType::F64 => count_blocks::<8>(bytes, |c| {
            u64::from_le_bytes(c) & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000
        }),
        _ => 0,
    }
}

/// How many `N`-byte values of `bytes` `bad` says yes to.
fn count_blocks<const N: usize>(bytes: &[u8], bad: impl Fn([u8; N]) -> bool) -> usize {
    bytes
        .chunks(4096 * N)
        .map(|block| {
            let n = block
                .chunks_exact(N)
                .map(|c| u16::from(bad(c.try_into().expect("chunks of N"))))
                .fold(0u16, u16::wrapping_add);
            usize::from(n)
        })
        .sum()
}

/// The message for a tensor with `count` non-finite values out of `total`.
pub(crate) fn non_finite_message(tensor: &str, count: usize, total: usize) -> String {
    format!(
        "tensor `{tensor}` holds {count} NaN or infinite value{} (of {total}): the weights are \
         corrupt or were saved after training diverged",
        if count == 1 { "" } else { "s" }
    )
}

/// Refuses a shape whose non-zero dimensions multiply past `usize`: candle computes a tensor's
/// strides from every dimension, also when another one is 0 (an empty tensor, whose byte
/// count is 0 and passes every size check), and such a shape overflows there. Found by the
/// fuzz targets `safetensors_reader`, `gan_safetensors` and `gan_pth`.
pub(crate) fn check_shape(shape: &[usize]) -> std::result::Result<(), String> {
    match shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))
    {
        Some(_) => Ok(()),
        None => Err(format!(
            "shape {shape:?} has dimensions whose product overflows (no tensor is that large)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le<T: Copy, const N: usize>(values: &[T], to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|&v| to(v)).collect()
    }

    #[test]
    fn counts_nan_and_infinity_in_every_float_dtype() {
        let f = [
            1.0f32,
            f32::NAN,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
        ];
        assert_eq!(count_non_finite(&le(&f, f32::to_le_bytes), DType::F32), 3);
        let d: Vec<f64> = f.iter().map(|&x| x as f64).collect();
        assert_eq!(count_non_finite(&le(&d, f64::to_le_bytes), DType::F64), 3);
        // Half floats by their bits: 1, NaN, -0, +inf, -inf, 65504 (the largest finite).
        let h = [0x3c00u16, 0x7e00, 0x8000, 0x7c00, 0xfc00, 0x7bff];
        assert_eq!(count_non_finite(&le(&h, u16::to_le_bytes), DType::F16), 3);
        // bfloat16 is the top half of an f32.
        let b: Vec<u16> = f.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
        assert_eq!(count_non_finite(&le(&b, u16::to_le_bytes), DType::BF16), 3);
        assert_eq!(count_non_finite(&[0xff; 8], DType::I64), 0);
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_directories_are_not_model_files() {
        let err = read_regular(Path::new("/dev/zero"), 1 << 20, FileRole::Model)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/dev/zero") && err.contains("character device"),
            "{err}"
        );
        let err = open_regular(&std::env::temp_dir()).unwrap_err().to_string();
        assert!(err.contains("a folder"), "{err}");
        let err = regular_file_len(Path::new("/no/such/model.pth"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "weights /no/such/model.pth: no such model file");
        let err = read_regular(Path::new("/no/such/config.json"), 10, FileRole::Config);
        assert!(matches!(err, Err(Error::Io { .. })), "{err:?}");
        let err = read_regular(&std::env::temp_dir(), 10, FileRole::Config)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config ") && err.contains("a config file"),
            "{err}"
        );
    }
}
