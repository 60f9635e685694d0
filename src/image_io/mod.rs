//! Reading inputs and writing results. [`load_image`] decodes PNG, JPEG, WebP, TIFF and BMP
//! (8- or 16-bit, grey, palette, with or without alpha), applies the EXIF orientation and keeps
//! the alpha channel and ICC profile; [`save_image`] writes PNG, JPEG, WebP or TIFF (16-bit
//! where the input was), with the generation parameters in PNG text chunks ([`metadata`]).
//! Results are written to a temporary file in the destination folder and renamed, so a reader
//! never sees a half-written image.

mod alpha;
mod buffers;
mod load;
pub mod metadata;
mod png_palette;
mod result;
mod save;

use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) use alpha::resize_alpha;
pub use buffers::{Rgb8, RgbF32};
pub use load::{load_image, LoadedImage, MAX_DECODED_BYTES, MAX_SIDE};
pub use metadata::{read_png_text, GenerationInfo};
pub use result::{save_result, WrittenImage};
pub use save::{save_image, OutputFormat, SaveOptions};

use crate::error::{Error, Result};

/// Decodes an image file (format from its content, EXIF orientation applied) to 8-bit RGB.
pub fn load_rgb8(path: &Path) -> Result<Rgb8> {
    Ok(load_image(path)?.rgb)
}

/// Writes `image` to `path` atomically as 8-bit RGB, the format chosen by the extension.
pub fn save_rgb8(path: &Path, image: &Rgb8) -> Result<()> {
    let rgb = RgbF32 {
        data: image.data.iter().map(|&v| f32::from(v) / 255.0).collect(),
        width: image.width,
        height: image.height,
    };
    save_image(path, &rgb, None, &SaveOptions::default())
}

/// Writes `bytes` to a hidden temporary file next to `path`, syncs it, and renames it over
/// `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_error = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let dir = output_dir(path);
    if !dir.is_dir() {
        return Err(Error::option(
            "output",
            format!(
                "{}: the folder {} does not exist",
                path.display(),
                dir.display()
            ),
        ));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(bytes).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_error(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The folder `path` is written into (`.` for a bare file name).
fn output_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks, before any work, that `output` can be written: its folder exists and it is not
/// `input` (compared after resolving links, so `./a.png` and `a.png` are the same file).
pub fn check_output_path(input: &Path, output: &Path) -> Result<()> {
    let dir = output_dir(output);
    if !dir.is_dir() {
        return Err(Error::option(
            "output",
            format!(
                "{}: the folder {} does not exist",
                output.display(),
                dir.display()
            ),
        ));
    }
    let same = input == output
        || match (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
    if same {
        return Err(Error::option(
            "output",
            format!("{}: the output would overwrite the input", output.display()),
        ));
    }
    Ok(())
}
