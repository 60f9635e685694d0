//! The diffusion path's safetensors reader (positioned reads, one tensor at a time), reached as
//! the pipeline reaches it: a model folder's `var_builder`, then every tensor the header names.

use candle_core::{DType, Device, Tensor};
use diffsr::model_dir::ModelDir;

use super::{check_message, fixture, message, seed_dir};
use crate::fuzz_support::harness::{Memory, Target};
use crate::fuzz_support::safetensors;

/// A small file with every dtype the reader takes, odd shapes and metadata.
fn mixed_dtypes() -> Vec<u8> {
    let dev = Device::Cpu;
    let dir = seed_dir("safetensors_reader");
    let path = dir.join("mixed.safetensors");
    let f32s = Tensor::arange(0f32, 12.0, &dev)
        .unwrap()
        .reshape((3, 4))
        .unwrap();
    let tensors = [
        ("a.f32", f32s.clone()),
        ("b.f16", f32s.to_dtype(DType::F16).unwrap()),
        ("c.bf16", f32s.to_dtype(DType::BF16).unwrap()),
        (
            "d.f64",
            f32s.to_dtype(DType::F64).unwrap().reshape(12).unwrap(),
        ),
        ("e.i64", Tensor::new(&[1i64, -2, 3], &dev).unwrap()),
        ("f.u8", Tensor::new(&[[7u8]], &dev).unwrap()),
        ("g.scalar", Tensor::new(2.5f32, &dev).unwrap()),
    ];
    candle_core::safetensors::save(&tensors.into_iter().collect(), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// The tensor names a header claims, read leniently (the reader judges the rest).
fn names(input: &[u8]) -> Vec<String> {
    let Some(len) = input
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    else {
        return Vec::new();
    };
    let header = usize::try_from(len)
        .ok()
        .and_then(|n| input.get(8..8usize.checked_add(n)?));
    header
        .and_then(|h| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(h).ok())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

pub fn safetensors_reader() -> Target {
    let seeds = vec![
        fixture("gan/srvgg_x2_relu.safetensors"),
        fixture("gan/unknown_arch.safetensors"),
        fixture("gan/rrdb_x4.safetensors"),
        mixed_dtypes(),
    ];
    Target {
        name: "safetensors_reader",
        cases: 1500,
        memory: Memory::Input,
        inputs: safetensors::mutated_safetensors(seeds),
        run: Box::new(|input, dir| {
            std::fs::write(dir.join("model_index.json"), "{}").map_err(message)?;
            std::fs::create_dir(dir.join("unet")).map_err(message)?;
            let file = dir.join("unet/diffusion_pytorch_model.safetensors");
            std::fs::write(&file, input).map_err(message)?;
            let model = ModelDir::open(dir).map_err(message)?;
            let (vb, _) = model
                .var_builder("unet", "diffusion_pytorch_model", DType::F32, &Device::Cpu)
                .map_err(message)?;
            for name in names(input) {
                if name == "__metadata__" {
                    continue;
                }
                match vb.get_unchecked(&name) {
                    Ok(t) => {
                        t.flatten_all().map_err(message)?;
                    }
                    Err(e) => check_message(e),
                }
            }
            Ok(())
        }),
    }
}
