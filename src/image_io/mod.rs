//! Reading inputs and writing results. [`load_image`] decodes PNG, JPEG, WebP, TIFF and BMP
//! (8- or 16-bit, grey, palette, with or without alpha), applies the EXIF orientation and keeps
//! the alpha channel and ICC profile; [`save_image`] writes PNG, JPEG, WebP or TIFF (16-bit
//! where the input was), with the generation parameters in PNG text chunks ([`metadata`]).
//! Results are written by [`crate::output_file`]: to a temporary file in the destination folder
//! and renamed, so a reader never sees a half-written image (a device, FIFO or stdout in
//! place, never renamed over).

mod alpha;
mod buffers;
mod load;
pub mod metadata;
mod png_palette;
mod result;
mod save;
mod stream;

use std::path::Path;

pub(crate) use alpha::resize_alpha;
pub use buffers::{Rgb8, RgbF32};
pub use load::{load_image, LoadedImage, MAX_DECODED_BYTES, MAX_SIDE};
pub use metadata::{read_png_text, GenerationInfo};
pub use result::{save_result, WrittenImage};
pub use save::{save_image, OutputFormat, SaveOptions};
pub use stream::{stream_result, streams_to, RowWriter};

use crate::error::{Error, Result};
use crate::output_file::existing_output_dir;

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

/// Writes `bytes` to the output `path` through [`crate::output_file::write_output`]: a new
/// name or a regular file by temporary file and rename, a device, FIFO or `-` (stdout) in place,
/// never renamed over.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::output_file::write_output(path, bytes)
}

/// Checks, before any work, that `output` can be written: its folder exists, it is something
/// diffsr writes ([`crate::output_file::check_destination`]: not a folder, block device or
/// socket), and it is not `input` under any spelling, link or hard link (compared after
/// resolving links, and by device and inode on Unix). `-` is standard output, which must
/// not be a terminal.
pub fn check_output_path(input: &Path, output: &Path) -> Result<()> {
    if crate::output_file::is_stdout(output) {
        return crate::output_file::check_destination(output);
    }
    existing_output_dir(output)?;
    if input == output || same_file(input, output) {
        return Err(Error::option(
            "output",
            format!("{}: the output would overwrite the input", output.display()),
        ));
    }
    crate::output_file::check_destination(output)
}

/// Whether `a` and `b` are one file: the same path once links are resolved, or (Unix) the same
/// device and inode, which also catches a hard link.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        if a == b {
            return true;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (a.dev(), a.ino()) == (b.dev(), b.ino());
        }
    }
    false
}
