//! GAN model files: safetensors (candle's reader), PyTorch `.pth` (zip + pickle) and ncnn
//! `.param`/`.bin` pairs, each loaded with `GanModel::load` (read, key normalisation,
//! architecture detection), then built into a network and run on a tiny image, so that shapes
//! the detector let through meet the model code.

use std::ops::ControlFlow;
use std::path::Path;

use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use diffsr::image_io::Rgb8;

use super::{fixture, message, unpack_into};
use crate::fuzz_support::harness::{Memory, Target};
use crate::fuzz_support::{ncnn, safetensors, zip};

/// Loads, builds and runs the model at `path`.
fn run_model(path: &Path) -> Result<(), String> {
    let model = GanModel::load(path).map_err(message)?;
    let options = GanOptions {
        tile: Some(0),
        pre_pad: 2,
        max_memory: Some(256 << 20),
        ..GanOptions::default()
    };
    let upscaler = GanUpscaler::new(&model, &options).map_err(message)?;
    let image = Rgb8 {
        width: 6,
        height: 5,
        data: (0..90).map(|i| (i * 7) as u8).collect(),
    };
    let out = upscaler
        .upscale_image(&image, &mut |_| ControlFlow::Continue(()))
        .map_err(message)?;
    let scale = upscaler.arch().scale();
    assert_eq!(
        (out.width, out.height, out.data.len()),
        (6 * scale, 5 * scale, 90 * scale * scale),
        "a x{scale} model's output"
    );
    Ok(())
}

pub fn gan_safetensors() -> Target {
    let seeds: Vec<Vec<u8>> = [
        "gan/srvgg_x2_relu.safetensors",
        "gan/srvgg_x4_leakyrelu.safetensors",
        "gan/rrdb_x4.safetensors",
        "gan/unknown_arch.safetensors",
    ]
    .iter()
    .map(|p| fixture(p))
    .collect();
    Target {
        name: "gan_safetensors",
        cases: 1500,
        memory: Memory::Input,
        inputs: safetensors::mutated_safetensors(seeds),
        run: Box::new(|input, dir| {
            let path = dir.join("model.safetensors");
            std::fs::write(&path, input).map_err(message)?;
            run_model(&path)
        }),
    }
}

pub fn gan_pth() -> Target {
    let seeds: Vec<Vec<u8>> = [
        "gan/srvgg_general.pth",
        "gan/srvgg_x4_prelu.pth",
        "gan/rrdb_x1.pth",
        "gan/rrdb_x4_esrgan_old.pth",
        "gan/not_a_state_dict.pth",
        // Not zip archives: mutated byte by byte.
        "gan/legacy_format.pth",
        "gan/model_wrapper.ckpt",
    ]
    .iter()
    .map(|p| fixture(p))
    .collect();
    Target {
        name: "gan_pth",
        cases: 300,
        memory: Memory::Input,
        inputs: zip::mutated_pth(seeds),
        run: Box::new(|input, dir| {
            let path = dir.join("model.pth");
            std::fs::write(&path, input).map_err(message)?;
            run_model(&path)
        }),
    }
}

pub fn gan_ncnn() -> Target {
    Target {
        name: "gan_ncnn",
        cases: 600,
        memory: Memory::Input,
        inputs: ncnn::mutated_pairs(),
        run: Box::new(|input, dir| {
            let files = unpack_into(input, dir)?;
            let param = files
                .iter()
                .find(|p| p.extension().is_some_and(|e| e == "param"))
                .ok_or("a bundle without a .param")?;
            run_model(param)
        }),
    }
}
