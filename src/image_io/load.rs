//! Decoding an input: a regular file only, format from the content, size limits checked before
//! any pixel is decoded (a decompression bomb is refused, not allocated), a truncated file
//! refused in every format, EXIF orientation applied, alpha and ICC profile kept.

mod truncation;
mod webp_header;

use std::io::{BufRead, BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use super::Rgb8;
use crate::error::{Error, Result};
use crate::input_file::open_image;

/// The largest width or height diffsr decodes.
pub const MAX_SIDE: u32 = 16384;
/// The most bytes a decoded image may take (the decoder's own buffers included).
pub const MAX_DECODED_BYTES: u64 = 2 << 30;

/// A decoded input: 8-bit RGB for the pipeline plus what the output should keep.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// The colour channels as 8-bit RGB, orientation applied.
    pub rgb: Rgb8,
    /// The alpha channel, one value in [0, 1] a pixel, when the file has one.
    pub alpha: Option<Vec<f32>>,
    /// The embedded ICC profile, if any.
    pub icc_profile: Option<Vec<u8>>,
    /// Bits per channel of the source: 8 or 16 (16 also for float sources).
    pub bit_depth: u8,
    /// The file's format.
    pub format: ImageFormat,
    /// The EXIF orientation that was applied (`NoTransforms` when none).
    pub orientation: Orientation,
}

impl LoadedImage {
    /// Width and height after orientation.
    pub fn size(&self) -> (usize, usize) {
        (self.rgb.width, self.rgb.height)
    }

    /// Fails with a message naming the file when a side is below `min` pixels.
    pub fn check_min_size(&self, min: usize) -> Result<()> {
        let (w, h) = self.size();
        if w < min || h < min {
            return Err(Error::Image {
                path: self.path.clone(),
                reason: format!("is {w}x{h}: the upscaler needs at least {min}x{min} pixels"),
            });
        }
        Ok(())
    }
}

/// What a truncated image is told.
const TRUNCATED: &str = "cannot decode: the file is truncated (it ends before its image data does)";

/// The largest image file diffsr reads (a file larger than the decoded-size limit cannot hold
/// an image within it in any supported format but an uncompressed one, which is no larger).
pub(crate) const MAX_FILE_BYTES: u64 = MAX_DECODED_BYTES;

/// Decodes `path` (PNG, JPEG, WebP, TIFF or BMP, recognised by content). Only a regular file is
/// read (a FIFO or device is refused before it is opened), and a truncated file is refused in
/// every format.
pub fn load_image(path: &Path) -> Result<LoadedImage> {
    let image_error = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let (file, len) = open_image(path, MAX_FILE_BYTES)?;
    if len == 0 {
        return Err(image_error("is an empty file".into()));
    }
    let mut input = BufReader::new(file);
    // The format comes from the content alone: a text file named `.png` is "not an image".
    let head = input.fill_buf().map_err(io_error)?;
    let head = head[..head.len().min(32)].to_vec();
    let Ok(format) = image::guess_format(&head) else {
        return Err(image_error(
            "is not an image diffsr can read (expected PNG, JPEG, WebP, TIFF or BMP)".into(),
        ));
    };
    let truncated = || image_error(TRUNCATED.into());
    if format == ImageFormat::Jpeg {
        // The decoder reads the whole file anyway; read here (bounded by the size at open),
        // the marker stream can be checked for its end.
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(len as usize)
            .map_err(|_| image_error(format!("cannot allocate {} MiB to read it", len >> 20)))?;
        input.take(len).read_to_end(&mut bytes).map_err(io_error)?;
        if !truncation::jpeg_reaches_end(&bytes) {
            return Err(truncated());
        }
        return decode(
            path,
            ImageReader::with_format(Cursor::new(bytes), format),
            &head,
        );
    }
    if format == ImageFormat::WebP && truncation::riff_is_cut(&head, len) {
        return Err(truncated());
    }
    decode(path, ImageReader::with_format(input, format), &head)
}

/// Decodes what `reader` reads (`head`: the file's first bytes), limits checked first.
fn decode<R: BufRead + Seek>(
    path: &Path,
    mut reader: ImageReader<R>,
    head: &[u8],
) -> Result<LoadedImage> {
    let image_error = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let decode_error = |e: ImageError| match e {
        ImageError::Limits(e) => image_error(format!("is too large to decode: {e}")),
        e if truncation::is_truncation(&e) => image_error(format!("{TRUNCATED} ({e})")),
        e => image_error(format!("cannot decode: {e}")),
    };
    let Some(format) = reader.format() else {
        return Err(image_error("has no known image format".into()));
    };
    // png 0.18 panics on a palette that is not whole RGB entries: refuse it first.
    if format == ImageFormat::Png {
        super::png_palette::check_palette(path).map_err(&image_error)?;
    }
    // Limits are checked below with a message of our own; the header is all that is read here.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        if let Some((w, h)) = webp_header::lossless_declared_size(head) {
            return Err(image_error(format!(
                "is {w}x{h}: a lossless WebP this size is beyond its decoder, which reads \
                 sides up to 16383 pixels"
            )));
        }
        return Err(image_error(format!("is empty ({width}x{height})")));
    }
    if width > MAX_SIDE || height > MAX_SIDE || decoder.total_bytes() > MAX_DECODED_BYTES {
        return Err(image_error(format!(
            "is {width}x{height}: decoding it would take {} MiB, over diffsr's limit of \
             {MAX_SIDE}x{MAX_SIDE} pixels and {} MiB (a decompression bomb?)",
            decoder.total_bytes() >> 20,
            MAX_DECODED_BYTES >> 20
        )));
    }
    let icc_profile = if format == ImageFormat::Tiff {
        tiff_icc_profile(path)
    } else {
        decoder.icc_profile().ok().flatten()
    };
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    decoder
        .set_limits(limits)
        .map_err(|e| image_error(format!("is too large to decode: {e}")))?;
    let color = decoder.color_type();
    let bytes_per_channel = color.bytes_per_pixel() / color.channel_count().max(1);
    let bit_depth = if bytes_per_channel > 1 { 16 } else { 8 };
    let has_alpha = color.has_alpha();
    let mut decoded = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    decoded.apply_orientation(orientation);
    let alpha = has_alpha.then(|| alpha_plane(&decoded));
    let rgb = decoded.to_rgb8();
    Ok(LoadedImage {
        path: path.to_path_buf(),
        rgb: Rgb8 {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            data: rgb.into_raw(),
        },
        alpha,
        icc_profile,
        bit_depth,
        format,
        orientation,
    })
}

/// A TIFF's ICC profile, read by a decoder without limits: once `ImageReader` has set limits,
/// image 0.25's TIFF decoder caps tag values at the pixel buffer's size and loses the profile.
fn tiff_icc_profile(path: &Path) -> Option<Vec<u8>> {
    let (file, _) = open_image(path, MAX_FILE_BYTES).ok()?;
    image::codecs::tiff::TiffDecoder::new(BufReader::new(file))
        .ok()?
        .icc_profile()
        .ok()
        .flatten()
}

/// The alpha channel in [0, 1], without converting the whole image to floats.
fn alpha_plane(image: &DynamicImage) -> Vec<f32> {
    match image {
        DynamicImage::ImageLumaA8(i) => i.pixels().map(|p| f32::from(p[1]) / 255.0).collect(),
        DynamicImage::ImageRgba8(i) => i.pixels().map(|p| f32::from(p[3]) / 255.0).collect(),
        DynamicImage::ImageLumaA16(i) => i.pixels().map(|p| f32::from(p[1]) / 65535.0).collect(),
        DynamicImage::ImageRgba16(i) => i.pixels().map(|p| f32::from(p[3]) / 65535.0).collect(),
        DynamicImage::ImageRgba32F(i) => i.pixels().map(|p| p[3]).collect(),
        other => other.to_rgba32f().pixels().map(|p| p[3]).collect(),
    }
}
