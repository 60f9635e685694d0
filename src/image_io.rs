//! Reading inputs and writing results: any image the `image` crate decodes becomes 8-bit RGB
//! for the pipeline; results are written to a temporary file in the destination folder and
//! renamed, so a reader never sees a half-written image.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{ImageFormat, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// An 8-bit RGB image, interleaved rows.
#[derive(Debug, Clone)]
pub struct Rgb8 {
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

/// Decodes an image file (format from its content) to 8-bit RGB.
pub fn load_rgb8(path: &Path) -> Result<Rgb8> {
    let image_error = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let reader = ImageReader::open(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|e| image_error(format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(image_error(
            "is not an image diffsr can read (expected PNG, JPEG, WebP, TIFF or BMP)".into(),
        ));
    }
    let decoded = reader
        .decode()
        .map_err(|e| image_error(format!("cannot decode: {e}")))?;
    let rgb = decoded.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width == 0 || height == 0 {
        return Err(image_error(format!("is empty ({width}x{height})")));
    }
    Ok(Rgb8 {
        data: rgb.into_raw(),
        width,
        height,
    })
}

/// Writes `image` to `path` atomically, the format chosen by the extension.
pub fn save_rgb8(path: &Path, image: &Rgb8) -> Result<()> {
    let format = ImageFormat::from_path(path).map_err(|_| {
        Error::option(
            "output",
            format!(
                "{}: unknown image extension (expected .png, .jpg, .webp, .tiff or .bmp)",
                path.display()
            ),
        )
    })?;
    let buffer = RgbImage::from_raw(image.width as u32, image.height as u32, image.data.clone())
        .ok_or_else(|| Error::option("output", "pixel buffer does not match its size"))?;
    let mut encoded = std::io::Cursor::new(Vec::new());
    buffer
        .write_to(&mut encoded, format)
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            reason: format!("cannot encode: {e}"),
        })?;
    write_atomically(path, encoded.get_ref())
}

/// Writes `bytes` to a hidden temporary file next to `path`, syncs it, and renames it over
/// `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_error = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
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
