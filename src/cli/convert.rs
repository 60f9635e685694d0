//! `diffsr convert IN OUT.safetensors`: any GAN model file diffsr reads (.pth, ncnn
//! .param/.bin, safetensors in another key layout) written as safetensors under basicsr's
//! tensor names, after detecting its architecture.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::DType;
use clap::ValueEnum;
use diffsr::gan::GanModel;
use diffsr::image_io::check_output_path;
use diffsr::output_file::{is_stdout, remove_stale_temp_files};

use super::upscale::usage;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The model file: .safetensors, .pth (.pt, .ckpt), or either file of an ncnn pair.
    input: PathBuf,
    /// The safetensors file to write (- for standard output). Never the input, under any
    /// spelling or link.
    output: PathBuf,
    /// Tensor dtype of the output (keep: as stored in the input).
    #[arg(long, value_enum, default_value = "keep")]
    dtype: ConvertDtype,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConvertDtype {
    Keep,
    F32,
    F16,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    // Checked before the model is read: a refused output costs nothing and writes nothing.
    if !is_stdout(&args.output)
        && args.output.extension().and_then(|e| e.to_str()) != Some("safetensors")
    {
        return Err(usage(format!(
            "{}: the output must be a .safetensors file (or - for standard output)",
            args.output.display()
        )));
    }
    check_output_path(&args.input, &args.output).map_err(usage)?;
    remove_stale_temp_files([args.output.as_path()]);
    let model = GanModel::load(&args.input)?;
    let dtype = match args.dtype {
        ConvertDtype::Keep => None,
        ConvertDtype::F32 => Some(DType::F32),
        ConvertDtype::F16 => Some(DType::F16),
    };
    model.save_safetensors(&args.output, dtype)?;
    eprintln!(
        "{}: {}, {} parameters -> {}",
        args.input.display(),
        model.arch().describe(),
        model.parameter_count(),
        args.output.display()
    );
    Ok(())
}
