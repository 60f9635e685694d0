//! Output flags shared by commands that write images: `--format` and `--quality`. The write
//! itself is the library's [`diffsr::image_io::save_result`] (alpha re-attached, ICC profile
//! and bit depth of the input kept, generation parameters in PNG text chunks, temporary file
//! and rename), which the batch runner calls for every job.

use diffsr::image_io::OutputFormat;

#[derive(clap::Args, Clone)]
pub struct OutputArgs {
    /// Output format: png, jpeg, webp (lossless) or tiff (default: from the output's extension).
    #[arg(long, value_parser = parse_format)]
    pub format: Option<OutputFormat>,
    /// JPEG quality, 1..=100.
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    s.parse()
}
