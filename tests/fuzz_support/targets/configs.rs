//! Every `config.json` diffsr reads, through the same calls the pipeline makes: the UNet, VAE
//! and text-encoder configs (read and checked, then the model built over the tiny test
//! model's real weights), the scheduler config (read, then every solver built and stepped),
//! `model_index.json`, and the tokenizer folder (its JSON files, vocab and merges).

use candle_core::{DType, Device, Tensor};
use diffsr::model_dir::{with_weights, ModelDir};
use diffsr::models::clip_text::{ClipTextConfig, ClipTextModel};
use diffsr::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use diffsr::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use diffsr::schedulers::{
    build_from_config, NoiseSchedule, Scheduler, SchedulerConfig, SchedulerKind, SolverOptions,
};
use diffsr::tokenizer::ClipTokenizer;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

use super::{check_message, fixture, fixture_path, message, unpack_into};
use crate::fuzz_support::bundle;
use crate::fuzz_support::harness::{Memory, Target};
use crate::fuzz_support::json::{json_plan, mutate_json, mutated_json, JsonPlan};
use crate::fuzz_support::mutate::{apply_all, byte_ops, ByteOp};
use crate::fuzz_support::seeds;

const TINY: &str = "tiny-x4-upscaler";

/// A target over one config file of the tiny model: `build` gets the mutated file's path and
/// the tiny model folder (for its weights).
fn model_config(
    name: &'static str,
    cases: u32,
    component: &str,
    build: fn(&std::path::Path, &ModelDir) -> diffsr::Result<()>,
) -> Target {
    let seed = fixture(&format!("{TINY}/{component}/config.json"));
    Target {
        name,
        cases,
        memory: Memory::Input,
        inputs: mutated_json(vec![seed]),
        run: Box::new(move |input, dir| {
            let path = dir.join("config.json");
            std::fs::write(&path, input).map_err(message)?;
            let model = ModelDir::open(&fixture_path(TINY)).map_err(message)?;
            build(&path, &model).map_err(message)
        }),
    }
}

pub fn unet_config() -> Target {
    model_config("unet_config", 150, "unet", |path, model| {
        let config = UNet2DConditionConfig::from_file(path)?;
        let _ = (config.time_embed_dim(), config.blocks_time_embed_dim());
        config.levels()?;
        let (vb, files) =
            model.var_builder("unet", "diffusion_pytorch_model", DType::F32, &Device::Cpu)?;
        with_weights(&files, || UNet2DConditionModel::new(&config, vb)).map(|_| ())
    })
}

pub fn vae_config() -> Target {
    model_config("vae_config", 300, "vae", |path, model| {
        let config = AutoencoderKLConfig::from_file(path)?;
        let _ = config.downsampling_factor();
        let (vb, files) =
            model.var_builder("vae", "diffusion_pytorch_model", DType::F32, &Device::Cpu)?;
        with_weights(&files, || AutoencoderKL::new(&config, vb)).map(|_| ())
    })
}

pub fn clip_text_config() -> Target {
    model_config("clip_text_config", 100, "text_encoder", |path, model| {
        let config = ClipTextConfig::from_file(path)?;
        let _ = (config.activation()?, config.head_dim());
        let (vb, files) = model.var_builder("text_encoder", "model", DType::F32, &Device::Cpu)?;
        with_weights(&files, || ClipTextModel::new(&config, vb)).map(|_| ())
    })
}

/// One config per solver family, as diffusers writes them.
fn scheduler_seeds() -> Vec<Vec<u8>> {
    let mut out = vec![
        fixture(&format!("{TINY}/scheduler/scheduler_config.json")),
        fixture(&format!("{TINY}/low_res_scheduler/scheduler_config.json")),
    ];
    let common = json!({
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
        "timestep_spacing": "linspace", "steps_offset": 1
    });
    for extra in [
        json!({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true, "interpolation_type": "linear"}),
        json!({"_class_name": "EulerAncestralDiscreteScheduler"}),
        json!({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++", "solver_order": 2, "lower_order_final": true, "lambda_min_clipped": "-inf"}),
        json!({"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true, "final_sigmas_type": "zero"}),
        json!({"_class_name": "UniPCMultistepScheduler", "solver_type": "bh2", "disable_corrector": [0], "trained_betas": [0.001, 0.002, 0.003, 0.004]}),
        json!({"_class_name": "DDPMScheduler", "variance_type": "fixed_small", "beta_schedule": "squaredcos_cap_v2", "clip_sample": true}),
    ] {
        let mut config = common.clone();
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        out.push(config.to_string().into_bytes());
    }
    out
}

/// Builds and steps a solver twice on a tiny sample.
fn exercise(mut solver: Box<dyn Scheduler>) -> Result<(), String> {
    let dev = Device::Cpu;
    let sample = Tensor::ones((1, 1, 2, 2), DType::F32, &dev).map_err(message)?;
    let steps = solver.timesteps().len().min(2);
    for i in 0..steps {
        let noise = solver.needs_noise(i).then(|| sample.clone());
        let input = solver.scale_model_input(&sample, i).map_err(message)?;
        solver
            .step(i, &input, &sample, noise.as_ref())
            .map_err(message)?;
    }
    Ok(())
}

pub fn scheduler_config() -> Target {
    Target {
        name: "scheduler_config",
        cases: 800,
        memory: Memory::Input,
        inputs: mutated_json(scheduler_seeds()),
        run: Box::new(|input, dir| {
            let path = dir.join("scheduler_config.json");
            std::fs::write(&path, input).map_err(message)?;
            let config = SchedulerConfig::from_file(&path).map_err(message)?;
            NoiseSchedule::from_config(&config).map_err(message)?;
            let options = SolverOptions::default();
            // Every solver over this config, as `--scheduler NAME` builds them.
            for kind in SchedulerKind::ALL {
                match kind.build(&config, 3, &options) {
                    Ok(solver) => {
                        if let Err(e) = exercise(solver) {
                            check_message(e);
                        }
                    }
                    Err(e) => check_message(e),
                }
            }
            let solver = build_from_config(&config, 4, &options).map_err(message)?;
            exercise(solver)
        }),
    }
}

pub fn model_index() -> Target {
    Target {
        name: "model_index",
        cases: 1500,
        memory: Memory::Input,
        inputs: mutated_json(vec![fixture(&format!("{TINY}/model_index.json"))]),
        run: Box::new(|input, dir| {
            std::fs::write(dir.join("model_index.json"), input).map_err(message)?;
            let model = ModelDir::open(dir).map_err(message)?;
            let _ = model.index().max_noise_level;
            Ok(())
        }),
    }
}

/// One mutation of a tokenizer folder (a bundle): a file's JSON or bytes, or its removal.
#[derive(Debug, Clone)]
enum FolderOp {
    Json { file: Index, plan: JsonPlan },
    Bytes { file: Index, ops: Vec<ByteOp> },
    Remove { file: Index },
}

fn folder_op() -> impl Strategy<Value = FolderOp> {
    prop_oneof![
        5 => (any::<Index>(), json_plan()).prop_map(|(file, plan)| FolderOp::Json { file, plan }),
        2 => (any::<Index>(), byte_ops(3)).prop_map(|(file, ops)| FolderOp::Bytes { file, ops }),
        1 => any::<Index>().prop_map(|file| FolderOp::Remove { file }),
    ]
}

fn mutate_folder(folder: &[u8], ops: &[FolderOp]) -> Vec<u8> {
    let Some(mut files) = bundle::unpack(folder) else {
        return folder.to_vec();
    };
    for op in ops {
        let n = files.len();
        match op {
            _ if n == 0 => {}
            FolderOp::Json { file, plan } => {
                let data = &mut files[file.index(n)].1;
                *data = mutate_json(data, plan);
            }
            FolderOp::Bytes { file, ops } => apply_all(&mut files[file.index(n)].1, ops, &[]),
            FolderOp::Remove { file } => {
                files.remove(file.index(n));
            }
        }
    }
    bundle::pack(&files)
}

pub fn tokenizer() -> Target {
    let seeds = seeds::tokenizer_folders();
    let inputs = (
        any::<Index>(),
        proptest::collection::vec(folder_op(), 1..=2),
    )
        .prop_map(move |(seed, ops)| mutate_folder(&seeds[seed.index(seeds.len())], &ops))
        .boxed();
    Target {
        name: "tokenizer",
        cases: 800,
        memory: Memory::Input,
        inputs,
        run: Box::new(|input, dir| {
            unpack_into(input, dir)?;
            let tokenizer = ClipTokenizer::from_dir(dir).map_err(message)?;
            let ids = tokenizer
                .encode("a photo of the thing, \u{1b}[2J ünïcode")
                .map_err(message)?;
            assert_eq!(ids.len(), tokenizer.max_length());
            Ok(())
        }),
    }
}

/// Prompts (a flag, or a manifest's `prompt`), encoded by the tiny model's tokenizer: any
/// text, long words, special-token lookalikes, control and combining characters.
pub fn prompt() -> Target {
    let piece = prop_oneof![
        "\\PC{0,12}",
        ".{0,6}",
        Just("<|endoftext|>".to_string()),
        Just("<|startoftext|>".to_string()),
        Just("\u{1b}[2J\r\u{0}".to_string()),
        Just("e\u{301}\u{301}\u{301}".to_string()),
        Just("🦀👩‍👩‍👧".to_string()),
        (1usize..5000).prop_map(|n| "ab".repeat(n)),
        (1usize..500).prop_map(|n| "a ".repeat(n)),
    ];
    let inputs = proptest::collection::vec(piece, 0..6)
        .prop_map(|pieces| pieces.concat().into_bytes())
        .boxed();
    let tokenizer = ClipTokenizer::from_dir(&fixture_path(&format!("{TINY}/tokenizer")))
        .expect("the fixture tokenizer loads");
    Target {
        name: "prompt",
        cases: 300,
        memory: Memory::Input,
        inputs,
        run: Box::new(move |input, _dir| {
            let text = String::from_utf8_lossy(input);
            let ids = tokenizer.encode(&text).map_err(message)?;
            assert_eq!(ids.len(), tokenizer.max_length());
            Ok(())
        }),
    }
}
