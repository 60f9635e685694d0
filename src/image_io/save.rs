//! Encoding a result: PNG (through the `png` crate, for text chunks and iCCP), JPEG (quality),
//! lossless WebP and TIFF, 8- or 16-bit, with the alpha channel and ICC profile where the
//! format holds them.

use std::borrow::Cow;
use std::io::Cursor;
use std::path::Path;
use std::str::FromStr;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::tiff::TiffEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::metadata::GenerationInfo;
use super::write_atomically;
use super::RgbF32;
use crate::error::{Error, Result};

/// The formats diffsr writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    Jpeg,
    WebP,
    Tiff,
}

impl OutputFormat {
    /// The format named by `path`'s extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        if crate::output_file::is_stdout(path) {
            return Err(Error::option(
                "output",
                format!(
                    "{}: standard output has no extension to choose the format by; give \
                     --format",
                    path.display()
                ),
            ));
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        ext.parse().map_err(|_| {
            Error::option(
                "output",
                format!(
                    "{}: unknown image extension (expected .png, .jpg, .jpeg, .webp, .tif or \
                     .tiff, or give --format)",
                    path.display()
                ),
            )
        })
    }

    /// Whether the format stores an alpha channel.
    pub fn has_alpha(self) -> bool {
        !matches!(self, Self::Jpeg)
    }

    /// Whether the format stores 16 bits a channel.
    pub fn has_16_bit(self) -> bool {
        matches!(self, Self::Png | Self::Tiff)
    }
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Ok(Self::Png),
            "jpg" | "jpeg" => Ok(Self::Jpeg),
            "webp" => Ok(Self::WebP),
            "tif" | "tiff" => Ok(Self::Tiff),
            other => Err(format!(
                "unknown format `{other}` (expected png, jpeg, webp or tiff)"
            )),
        }
    }
}

/// How [`save_image`] writes.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// The format; `None` picks it from the extension.
    pub format: Option<OutputFormat>,
    /// JPEG quality, 1..=100.
    pub quality: u8,
    /// 8 or 16 bits a channel (16 falls back to 8 where the format has no 16-bit mode).
    pub bit_depth: u8,
    /// ICC profile to embed.
    pub icc_profile: Option<Vec<u8>>,
    /// Generation parameters, written as PNG text chunks (other formats ignore them).
    pub metadata: Option<GenerationInfo>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            format: None,
            quality: 95,
            bit_depth: 8,
            icc_profile: None,
            metadata: None,
        }
    }
}

/// Writes `rgb` (and `alpha`, one value a pixel in [0, 1], when given and the format holds it)
/// to `path` atomically.
pub fn save_image(
    path: &Path,
    rgb: &RgbF32,
    alpha: Option<&[f32]>,
    options: &SaveOptions,
) -> Result<()> {
    let format = match options.format {
        Some(f) => f,
        None => OutputFormat::from_path(path)?,
    };
    if !(1..=100).contains(&options.quality) {
        return Err(Error::option(
            "quality",
            format!("{} is not in 1..=100", options.quality),
        ));
    }
    let pixels = rgb.width * rgb.height;
    if rgb.data.len() != pixels * 3 || alpha.is_some_and(|a| a.len() != pixels) {
        return Err(Error::option(
            "image",
            format!("pixel buffers do not match {}x{}", rgb.width, rgb.height),
        ));
    }
    let alpha = alpha.filter(|_| format.has_alpha());
    let sixteen = options.bit_depth == 16 && format.has_16_bit();
    let channels = if alpha.is_some() { 4 } else { 3 };
    let encode_error = |e: String| Error::Image {
        path: path.to_path_buf(),
        reason: format!("cannot encode: {e}"),
    };
    let (w, h) = (rgb.width as u32, rgb.height as u32);
    // PNG stores 16-bit samples big-endian; the `image` encoders take them native-endian.
    let order = if format == OutputFormat::Png {
        u16::to_be_bytes
    } else {
        u16::to_ne_bytes
    };
    let buf = quantized_samples(rgb, alpha, sixteen, order).map_err(encode_error)?;
    let bytes = if format == OutputFormat::Png {
        encode_png(&buf, w, h, channels, sixteen, options).map_err(encode_error)?
    } else {
        let mut out = Cursor::new(Vec::new());
        let color = match (channels, sixteen) {
            (3, false) => ExtendedColorType::Rgb8,
            (4, false) => ExtendedColorType::Rgba8,
            (3, true) => ExtendedColorType::Rgb16,
            _ => ExtendedColorType::Rgba16,
        };
        let result = match format {
            OutputFormat::Jpeg => write_with(
                JpegEncoder::new_with_quality(&mut out, options.quality),
                &buf,
                w,
                h,
                color,
                options,
            ),
            OutputFormat::WebP => write_with(
                WebPEncoder::new_lossless(&mut out),
                &buf,
                w,
                h,
                color,
                options,
            ),
            _ => write_with(TiffEncoder::new(&mut out), &buf, w, h, color, options),
        };
        result.map_err(|e| encode_error(e.to_string()))?;
        out.into_inner()
    };
    write_atomically(path, &bytes)
}

fn write_with(
    mut encoder: impl ImageEncoder,
    buf: &[u8],
    w: u32,
    h: u32,
    color: ExtendedColorType,
    options: &SaveOptions,
) -> image::ImageResult<()> {
    if let Some(icc) = &options.icc_profile {
        // Formats without a place for the profile just go without it.
        let _ = encoder.set_icc_profile(icc.clone());
    }
    encoder.write_image(buf, w, h, color)
}

fn encode_png(
    data: &[u8],
    w: u32,
    h: u32,
    channels: usize,
    sixteen: bool,
    options: &SaveOptions,
) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut writer =
            png_writer(&mut out, w, h, channels, sixteen, options).map_err(|e| e.to_string())?;
        writer.write_image_data(data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A PNG encoder on `out` with its header written: RGB or RGBA (`channels`), 8 or 16 bits,
/// the ICC profile and the generation parameters (iTXt chunks) of `options`. Shared by the
/// whole-image encoder and the streamed one ([`super::stream`]), so both write the same
/// header.
pub(super) fn png_writer<W: std::io::Write>(
    out: W,
    w: u32,
    h: u32,
    channels: usize,
    sixteen: bool,
    options: &SaveOptions,
) -> std::result::Result<png::Writer<W>, png::EncodingError> {
    let mut info = png::Info::with_size(w, h);
    info.color_type = if channels == 4 {
        png::ColorType::Rgba
    } else {
        png::ColorType::Rgb
    };
    info.bit_depth = if sixteen {
        png::BitDepth::Sixteen
    } else {
        png::BitDepth::Eight
    };
    info.icc_profile = options.icc_profile.as_deref().map(Cow::Borrowed);
    if let Some(meta) = &options.metadata {
        for (key, text) in meta.text_chunks() {
            info.utf8_text
                .push(png::text_metadata::ITXtChunk::new(key, text));
        }
    }
    png::Encoder::with_info(out, info)?.write_header()
}

/// The pixels as the encoders take them: R, G, B (and A) interleaved, quantised from [0, 1]
/// to 8 bits or to 16 (each sample's two bytes in `order`). One pass and one buffer, reserved
/// fallibly: for a large result this buffer and the encoded file are the save's whole cost.
fn quantized_samples(
    rgb: &RgbF32,
    alpha: Option<&[f32]>,
    sixteen: bool,
    order: fn(u16) -> [u8; 2],
) -> std::result::Result<Vec<u8>, String> {
    let channels = if alpha.is_some() { 4 } else { 3 };
    let len = (rgb.width * rgb.height)
        .checked_mul(channels * if sixteen { 2 } else { 1 })
        .ok_or("the image is too large to encode")?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| {
        format!(
            "cannot allocate {} MiB for the {}x{} image's samples",
            len >> 20,
            rgb.width,
            rgb.height
        )
    })?;
    push_samples(&rgb.data, alpha, sixteen, order, &mut out);
    Ok(out)
}

/// Appends the quantised samples of the RGB pixels `rgb` (and one alpha value each, when
/// given) to `out`: the one quantiser of whole images and streamed rows.
pub(super) fn push_samples(
    rgb: &[f32],
    alpha: Option<&[f32]>,
    sixteen: bool,
    order: fn(u16) -> [u8; 2],
    out: &mut Vec<u8>,
) {
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        let a = alpha.map(|a| a[i]);
        for &v in px.iter().chain(a.as_ref()) {
            if sixteen {
                out.extend_from_slice(&order(to_u16(v)));
            } else {
                out.push(to_u8(v));
            }
        }
    }
}

/// [0, 1] to 8 bits, rounding as diffusers' `numpy_to_pil`.
fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

fn to_u16(v: f32) -> u16 {
    (v.clamp(0.0, 1.0) * 65535.0).round_ties_even() as u16
}
