//! Writing a result that is never held whole: a PNG encoded row by row as an engine hands the
//! rows on ([`crate::upscaler::Upscaler::upscale_rows`]), through the `png` crate's
//! `StreamWriter`, to the output by [`crate::output_file::write_output_with`] (a temporary
//! file renamed into place at the end; a device, FIFO or stdout written in place). The header
//! (ICC profile, generation parameters) and the quantiser are [`super::save_image`]'s, so a
//! streamed file holds the pixels and text chunks of the held one.
//!
//! Alpha: the held path resamples the input's alpha plane with Lanczos3 to the output size
//! in one piece ([`super::resize_alpha`]), which a streamed output cannot afford. A fully
//! opaque alpha resamples to 1 everywhere, so it is streamed as a constant opaque channel (an
//! RGBA file, like the held one); any other alpha is refused, naming the input.

use std::io::Write;
use std::path::Path;

use super::save::{png_writer, push_samples};
use super::{GenerationInfo, LoadedImage, OutputFormat, SaveOptions, WrittenImage};
use crate::error::{Error, Result};
use crate::output_file::write_output_with;

/// Size of the PNG's IDAT chunks: the encoder buffers one chunk of compressed data.
const CHUNK_BYTES: usize = 256 << 10;

/// Receives the result's rows, top to bottom: `width × 3` RGB values in [0, 1] each.
pub type RowWriter<'a> = &'a mut dyn FnMut(&[f32]) -> Result<()>;

/// Whether `output` (in `format`, `None`: by its extension) can be streamed: PNG only.
pub fn streams_to(output: &Path, format: Option<OutputFormat>) -> bool {
    match format {
        Some(format) => format == OutputFormat::Png,
        None => OutputFormat::from_path(output).is_ok_and(|f| f == OutputFormat::Png),
    }
}

/// Writes a `width` × `height` result for `input` to `output` as a PNG without holding it:
/// `produce` is called once with a row writer, hands it every row in order (e.g. through
/// [`crate::upscaler::Upscaler::upscale_rows`]) and returns the size it made. The input's bit
/// depth (8 or 16) and ICC profile are kept and `metadata` goes into text chunks, as
/// [`super::save_result`] does. An error (the producer's, a short image, a failed write)
/// leaves no file under a new or regular `output`.
///
/// Refused before `produce` runs: a format other than PNG, an input whose alpha channel is
/// not fully opaque (its resample needs the whole output-sized plane; see the module header).
pub fn stream_result(
    output: &Path,
    input: &LoadedImage,
    (width, height): (usize, usize),
    format: Option<OutputFormat>,
    metadata: GenerationInfo,
    produce: &mut dyn FnMut(RowWriter<'_>) -> Result<(usize, usize)>,
) -> Result<WrittenImage> {
    let format = match format {
        Some(f) => f,
        None => OutputFormat::from_path(output)?,
    };
    if format != OutputFormat::Png {
        return Err(Error::option(
            "output",
            format!(
                "{}: a {width}x{height} output too large to hold is streamed to disk in rows, \
                 which only PNG output can be; write a .png (or --format png)",
                output.display()
            ),
        ));
    }
    let opaque = match &input.alpha {
        None => false,
        Some(alpha) if alpha.iter().all(|&a| a == 1.0) => true,
        Some(_) => {
            return Err(Error::option(
                "output",
                format!(
                    "{}: its alpha channel (not fully opaque) cannot be resampled for a \
                     {width}x{height} output streamed to disk in rows; remove the alpha \
                     channel, or give --max-memory enough to hold the output",
                    input.path.display()
                ),
            ))
        }
    };
    let (w, h) = match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
        _ => {
            return Err(Error::option(
                "output",
                format!("{width}x{height} is not a size a PNG can hold"),
            ))
        }
    };
    let options = SaveOptions {
        format: Some(OutputFormat::Png),
        bit_depth: input.bit_depth,
        icc_profile: input.icc_profile.clone(),
        metadata: Some(metadata),
        ..SaveOptions::default()
    };
    let sixteen = input.bit_depth == 16;
    let channels = if opaque { 4 } else { 3 };
    let encode_error = |e: png::EncodingError| match e {
        png::EncodingError::IoError(source) => Error::Io {
            path: output.to_path_buf(),
            source,
        },
        e => Error::Image {
            path: output.to_path_buf(),
            reason: format!("cannot encode: {e}"),
        },
    };
    let io_error = |source| Error::Io {
        path: output.to_path_buf(),
        source,
    };
    let mut write = |out: &mut dyn Write| -> Result<()> {
        let mut writer =
            png_writer(out, w, h, channels, sixteen, &options).map_err(encode_error)?;
        let mut stream = writer
            .stream_writer_with_size(CHUNK_BYTES)
            .map_err(encode_error)?;
        let ones = opaque.then(|| vec![1.0f32; width]);
        let mut samples = Vec::with_capacity(width * channels * if sixteen { 2 } else { 1 });
        let mut rows = 0;
        let made = produce(&mut |row: &[f32]| {
            if row.len() != width * 3 || rows == height {
                return Err(Error::option(
                    "image",
                    format!(
                        "row {rows} of {} values does not fit a {width}x{height} RGB output",
                        row.len()
                    ),
                ));
            }
            samples.clear();
            push_samples(
                row,
                ones.as_deref(),
                sixteen,
                u16::to_be_bytes,
                &mut samples,
            );
            stream.write_all(&samples).map_err(io_error)?;
            rows += 1;
            Ok(())
        })?;
        if made != (width, height) || rows != height {
            return Err(Error::option(
                "image",
                format!(
                    "the upscaler made {}x{} ({rows} rows written), expected {width}x{height}",
                    made.0, made.1
                ),
            ));
        }
        stream.finish().map_err(encode_error)
    };
    // `write_output_with` takes an io::Result: the real error waits here.
    let mut failure = None;
    let written = write_output_with(output, &mut |out| {
        write(out).map_err(|e| {
            let message = e.to_string();
            failure = Some(e);
            std::io::Error::other(message)
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    written?;
    Ok(WrittenImage {
        width,
        height,
        alpha_dropped: false,
    })
}
