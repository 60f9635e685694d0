//! `diffsr models inspect FILE`: what a GAN-family model file is, read from its weights alone
//! (the registry's detection, as `upscale` does): architecture, scale, channels, the input
//! sizes it takes, hyper-parameters, parameter count, stored dtypes, and the tile overlap and
//! per-pixel memory the planner will use. Also `diffsr models architectures`, the registry.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use candle_core::DType;
use diffsr::gan::arch::InputPadding;
use diffsr::gan::GanModel;
use diffsr::text_escape;
use diffsr::tiling::exact_overlap;
use serde_json::json;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A model file: .safetensors, .pth/.pt/.ckpt, or an ncnn .param/.bin pair (either named).
    file: PathBuf,
    /// One JSON object instead of lines of text.
    #[arg(long)]
    json: bool,
}

/// `diffsr models architectures`: the registry, in detection order.
pub fn architectures() {
    for spec in diffsr::gan::arch::REGISTRY {
        println!("{}: {}", spec.name(), spec.description());
        println!("    recognised by {}", spec.expected_keys());
    }
}

pub fn run(args: InspectArgs) -> Result<()> {
    let model = GanModel::load(&args.file)?;
    let arch = model.arch();
    let spec = arch.spec();
    let parameters: usize = model.weights().values().map(|t| t.elem_count()).sum();
    let dtypes: BTreeSet<String> = model
        .weights()
        .values()
        .map(|t| format!("{:?}", t.dtype()).to_lowercase())
        .collect();
    let dtypes: Vec<String> = dtypes.into_iter().collect();
    let size = arch.input_size();
    let padding = match size.padding {
        InputPadding::Reflect => "reflect",
        InputPadding::Replicate => "replicate",
        InputPadding::Zero => "zero",
        InputPadding::Inside => "by the network itself",
    };
    let radius = arch.context_radius();
    let overlap = exact_overlap(radius);
    let per_pixel = |dtype| arch.bytes_per_input_pixel(dtype);
    let hyperparameters = format!("{:?}", arch.config());
    if args.json {
        let object = json!({
            "file": args.file.to_string_lossy(),
            "architecture": spec.name(),
            "family": spec.description(),
            "model": arch.describe(),
            "scale": arch.scale(),
            "in_channels": arch.in_channels(),
            "out_channels": arch.out_channels(),
            "input_multiple": size.multiple,
            "input_padding": padding,
            "parameters": parameters,
            "tensors": model.weights().len(),
            "stored_dtypes": dtypes,
            "context_radius": radius,
            "tile_overlap": overlap,
            "bytes_per_input_pixel": { "f32": per_pixel(DType::F32), "f16": per_pixel(DType::F16) },
            "hyperparameters": hyperparameters,
        });
        println!("{object}");
        return Ok(());
    }
    let lines = [
        ("file", text_escape::path(&args.file).to_string()),
        (
            "architecture",
            format!("{} ({})", spec.name(), spec.description()),
        ),
        ("model", arch.describe()),
        ("scale", format!("{}x", arch.scale())),
        (
            "channels",
            format!("{} in, {} out", arch.in_channels(), arch.out_channels()),
        ),
        (
            "input sides",
            if size.multiple <= 1 {
                "any".to_string()
            } else {
                format!("multiples of {} ({padding}-padded to one)", size.multiple)
            },
        ),
        (
            "parameters",
            format!(
                "{} ({:.2} M) in {} tensors, stored as {}",
                parameters,
                parameters as f64 / 1e6,
                model.weights().len(),
                dtypes.join(", ")
            ),
        ),
        (
            "tiles",
            format!("overlap {overlap} input pixels (receptive context {radius})"),
        ),
        (
            "memory",
            format!(
                "about {} KiB of activations per input pixel in f32, {} KiB in f16",
                per_pixel(DType::F32).div_ceil(1024),
                per_pixel(DType::F16).div_ceil(1024)
            ),
        ),
        ("hyper-parameters", hyperparameters),
    ];
    for (label, value) in lines {
        println!("{label:>16}: {value}");
    }
    Ok(())
}
