//! Decoding an input: format from the content, size limits checked before any pixel is
//! decoded (a decompression bomb is refused, not allocated), EXIF orientation applied, alpha
//! and ICC profile kept.

use std::path::{Path, PathBuf};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use super::Rgb8;
use crate::error::{Error, Result};

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

/// Decodes `path` (PNG, JPEG, WebP, TIFF or BMP, recognised by content).
pub fn load_image(path: &Path) -> Result<LoadedImage> {
    let image_error = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    // The format comes from the content alone: a text file named `.png` is "not an image".
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| image_error(format!("cannot read: {e}")))?;
    let Some(format) = reader.format() else {
        return Err(image_error(
            "is not an image diffsr can read (expected PNG, JPEG, WebP, TIFF or BMP)".into(),
        ));
    };
    // png 0.18 panics on a palette that is not whole RGB entries: refuse it first.
    if format == ImageFormat::Png {
        super::png_palette::check_palette(path).map_err(&image_error)?;
    }
    // Limits are checked below with a message of our own; the header is all that is read here.
    reader.no_limits();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| image_error(format!("cannot decode: {e}")))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
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
    let mut decoded = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        ImageError::Limits(e) => image_error(format!("is too large to decode: {e}")),
        e => image_error(format!("cannot decode: {e}")),
    })?;
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
    let file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    image::codecs::tiff::TiffDecoder::new(file)
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
