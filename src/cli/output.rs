//! Output flags shared by commands that write images (`--format`, `--quality`) and the
//! write itself: alpha re-attached, ICC profile and bit depth of the input kept, generation
//! parameters in PNG text chunks.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Tensor;
use diffsr::image_io::{
    resize_alpha, save_image, GenerationInfo, LoadedImage, OutputFormat, RgbF32, SaveOptions,
};

#[derive(clap::Args, Clone)]
pub struct OutputArgs {
    /// Output format: png, jpeg, webp (lossless) or tiff (default: from the output's extension).
    #[arg(long, value_parser = parse_format)]
    format: Option<OutputFormat>,
    /// JPEG quality, 1..=100.
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    s.parse()
}

impl OutputArgs {
    /// Fails early (before any model loads) when `output`'s format cannot be told.
    pub fn check(&self, output: &Path) -> Result<()> {
        if self.format.is_none() {
            OutputFormat::from_path(output)?;
        }
        Ok(())
    }

    /// Writes the pipeline's `result` for `input` to `output`; returns its width and height.
    pub fn write(
        &self,
        output: &Path,
        input: &LoadedImage,
        result: &Tensor,
        metadata: GenerationInfo,
    ) -> Result<(usize, usize)> {
        let rgb = RgbF32::from_tensor(result)?;
        let (w, h) = input.size();
        let alpha = match &input.alpha {
            Some(a) => {
                Some(resize_alpha(a, w, h, rgb.width, rgb.height).context("upscaling the alpha")?)
            }
            None => None,
        };
        let format = match self.format {
            Some(f) => f,
            None => OutputFormat::from_path(output)?,
        };
        if alpha.is_some() && !format.has_alpha() {
            eprintln!(
                "note: {} has an alpha channel, which {format:?} cannot hold; it is dropped",
                input.path.display()
            );
        }
        let options = SaveOptions {
            format: Some(format),
            quality: self.quality,
            bit_depth: input.bit_depth,
            icc_profile: input.icc_profile.clone(),
            metadata: Some(metadata),
        };
        save_image(output, &rgb, alpha.as_deref(), &options)?;
        Ok((rgb.width, rgb.height))
    }
}
