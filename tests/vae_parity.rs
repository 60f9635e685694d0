//! VAE parity with diffusers' `AutoencoderKL` on the tiny x4 upscaler (fixture:
//! scripts/fixtures/x4_unet_vae.py), the memory-bounded attention against one-shot attention,
//! config refusals and weight-shape errors.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use diffsr::models::layers::{
    plan_chunks, scaled_dot_product_attention, ChunkPlan, DEFAULT_MAX_SCORE_BYTES,
};
use diffsr::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use diffsr::Error;

mod common;
use common::compare;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vae_dir() -> PathBuf {
    root().join("tests/fixtures/tiny-x4-upscaler/vae")
}

fn fixture() -> Result<HashMap<String, Tensor>> {
    let path = root().join("tests/fixtures/x4_unet_vae.safetensors");
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

fn get<'a>(t: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    t.get(name).with_context(|| format!("fixture lacks {name}"))
}

fn config() -> Result<AutoencoderKLConfig> {
    Ok(AutoencoderKLConfig::from_file(
        &vae_dir().join("config.json"),
    )?)
}

fn load_from(weights: PathBuf) -> diffsr::Result<AutoencoderKL> {
    let config = AutoencoderKLConfig::from_file(&vae_dir().join("config.json"))?;
    // SAFETY: the weights file is not modified while the test runs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)? };
    AutoencoderKL::new(&config, vb)
}

fn load() -> Result<AutoencoderKL> {
    Ok(load_from(
        vae_dir().join("diffusion_pytorch_model.safetensors"),
    )?)
}

#[test]
fn decode_matches_diffusers() -> Result<()> {
    let t = fixture()?;
    let vae = load()?;
    let out = vae.decode(get(&t, "vae_dec_latents")?)?;
    ensure!(
        out.dims() == [1, 3, 52, 44],
        "decoded shape {:?}",
        out.dims()
    );
    compare(
        "vae decode 13x11 -> 52x44",
        &out,
        get(&t, "vae_dec_out")?,
        1e-4,
    )
}

#[test]
fn encode_matches_diffusers() -> Result<()> {
    let t = fixture()?;
    let vae = load()?;
    let posterior = vae.encode(get(&t, "vae_enc_image")?)?;
    compare(
        "vae encode mean",
        &posterior.mean,
        get(&t, "vae_enc_mean")?,
        1e-4,
    )?;
    compare(
        "vae encode logvar",
        &posterior.logvar,
        get(&t, "vae_enc_logvar")?,
        1e-4,
    )?;
    compare("vae mode", &posterior.mode(), &posterior.mean, 0.0)?;
    let noise = posterior.mean.ones_like()?;
    let expected = (&posterior.mean + (&posterior.logvar * 0.5)?.exp()?)?;
    compare("vae sample(1)", &posterior.sample(&noise)?, &expected, 1e-6)
}

#[test]
fn decode_with_tiny_attention_budgets_is_unchanged() -> Result<()> {
    let t = fixture()?;
    let latents = get(&t, "vae_dec_latents")?;
    let want = get(&t, "vae_dec_out")?;
    let mut vae = load()?;
    let tokens = 13 * 11;
    // 3 query rows per block, then 16 keys per block (online softmax).
    for (label, budget) in [("query rows", 3 * tokens * 4), ("key blocks", 64)] {
        vae.set_attention_budget(budget);
        compare(
            &format!("vae decode, {label} ({budget} B)"),
            &vae.decode(latents)?,
            want,
            1e-4,
        )?;
    }
    Ok(())
}

fn random(shape: (usize, usize, usize), seed: u64) -> Result<Tensor> {
    // A small LCG keeps the inputs reproducible without a RNG dependency.
    let n = shape.0 * shape.1 * shape.2;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

#[test]
fn chunked_attention_equals_one_shot() -> Result<()> {
    let (n, lq, lk, d, dv) = (3, 37, 41, 16, 8);
    let q = random((n, lq, d), 1)?;
    let k = random((n, lk, d), 2)?;
    let v = random((n, lk, dv), 3)?;
    let scale = 1.0 / (d as f64).sqrt();
    let reference = scaled_dot_product_attention(&q, &k, &v, scale, false, usize::MAX)?;

    // Plain softmax(q kᵀ) v, written out, as an independent check of the one-shot path.
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let naive = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
    compare("one-shot vs naive", &reference, &naive, 1e-6)?;

    let f32_bytes = 4;
    let cases = [
        (2 * lq * lk * f32_bytes, ChunkPlan::Slices { slices: 2 }),
        (5 * lk * f32_bytes, ChunkPlan::QueryRows { rows: 5 }),
        (7 * f32_bytes, ChunkPlan::KeyBlocks { keys: 7 }),
        (f32_bytes, ChunkPlan::KeyBlocks { keys: 1 }),
    ];
    for (budget, expected) in cases {
        let plan = plan_chunks(n, lq, lk, f32_bytes, budget);
        ensure!(
            plan == expected,
            "budget {budget}: plan {plan:?}, expected {expected:?}"
        );
        ensure!(
            plan.block_elems(n, lq, lk) * f32_bytes <= budget,
            "{plan:?} over budget"
        );
        let out = scaled_dot_product_attention(&q, &k, &v, scale, false, budget)?;
        compare(&format!("{plan:?}"), &out, &reference, 1e-6)?;
    }

    // Half precision: softmax in f32 on every path; an upcast run computes scores in f32.
    let (qh, kh, vh) = (
        q.to_dtype(DType::F16)?,
        k.to_dtype(DType::F16)?,
        v.to_dtype(DType::F16)?,
    );
    for (budget, upcast) in [(usize::MAX, false), (5 * lk * 4, false), (28, true)] {
        let out = scaled_dot_product_attention(&qh, &kh, &vh, scale, upcast, budget)?;
        ensure!(
            out.dtype() == DType::F16,
            "half output came back {:?}",
            out.dtype()
        );
        compare(
            &format!("f16, budget {budget}, upcast {upcast}"),
            &out,
            &reference,
            5e-3,
        )?;
    }
    Ok(())
}

#[test]
fn large_vae_attention_stays_within_budget() {
    // A 512x512 latent: 262,144 single-head tokens, 256 GiB of f32 scores in one piece.
    let tokens = 512 * 512;
    let plan = plan_chunks(1, tokens, tokens, 4, DEFAULT_MAX_SCORE_BYTES);
    assert_eq!(plan, ChunkPlan::QueryRows { rows: 256 });
    assert!(plan.block_elems(1, tokens, tokens) * 4 <= DEFAULT_MAX_SCORE_BYTES);
    // Beyond 64M keys a single query row is over budget: key blocks with an online softmax.
    let huge = 100_000_000;
    let plan = plan_chunks(1, huge, huge, 4, DEFAULT_MAX_SCORE_BYTES);
    assert_eq!(
        plan,
        ChunkPlan::KeyBlocks {
            keys: DEFAULT_MAX_SCORE_BYTES / 4
        }
    );
    // The UNet's guided cross-attention at a 64x64 latent fits in one piece.
    assert_eq!(
        plan_chunks(16, 32 * 32, 77, 4, DEFAULT_MAX_SCORE_BYTES),
        ChunkPlan::OneShot
    );
}

#[test]
fn wrong_weight_shape_names_tensor_and_shapes() -> Result<()> {
    let original = vae_dir().join("diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&original, &Device::Cpu)?;
    let name = "decoder.mid_block.attentions.0.to_q.weight";
    ensure!(tensors.contains_key(name), "fixture lacks {name}");
    tensors.insert(
        name.to_string(),
        Tensor::zeros((32, 16), DType::F32, &Device::Cpu)?,
    );
    let path =
        std::env::temp_dir().join(format!("diffsr-vae-{}-bad.safetensors", std::process::id()));
    candle_core::safetensors::save(&tensors, &path)?;
    let result = load_from(path.clone());
    std::fs::remove_file(&path).ok();
    let err = result.err().context("a (32, 16) to_q must not load")?;
    let msg = err.to_string();
    println!("{msg}");
    ensure!(msg.contains(name), "tensor not named: {msg}");
    ensure!(
        msg.contains("[32, 32]") && msg.contains("[32, 16]"),
        "shapes not given: {msg}"
    );
    Ok(())
}

#[test]
fn unsupported_config_fields_are_refused_by_name() -> Result<()> {
    let mut c = config()?;
    c.act_fn = "gelu".into();
    ensure!(matches!(c.validate(), Err(Error::Unsupported { field, .. }) if field == "act_fn"));

    let mut c = config()?;
    c.down_block_types[1] = "AttnDownEncoderBlock2D".into();
    ensure!(
        matches!(c.validate(), Err(Error::Unsupported { field, .. }) if field == "down_block_types")
    );

    let mut c = config()?;
    c.up_block_types.pop();
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    ensure!(
        matches!(AutoencoderKL::new(&c, vb), Err(Error::Unsupported { field, .. }) if field == "up_block_types")
    );
    Ok(())
}

#[test]
fn wrong_input_is_refused_not_panicking() -> Result<()> {
    let vae = load()?;
    let bad = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu)?;
    ensure!(
        matches!(vae.decode(&bad), Err(Error::InvalidOption { option, .. }) if option == "latents")
    );
    let half = Tensor::zeros((1, 4, 8, 8), DType::F16, &Device::Cpu)?;
    ensure!(matches!(
        vae.decode(&half),
        Err(Error::InvalidOption { .. })
    ));
    Ok(())
}

#[test]
fn half_precision_runs_close_to_f32() -> Result<()> {
    // diffusers keeps this VAE in f32 (force_upcast), but the code is dtype-agnostic.
    let t = fixture()?;
    let weights = vae_dir().join("diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture file is not modified while the test runs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F16, &Device::Cpu)? };
    let vae = AutoencoderKL::new(&config()?, vb)?;
    let decoded = vae.decode(&get(&t, "vae_dec_latents")?.to_dtype(DType::F16)?)?;
    ensure!(
        decoded.dtype() == DType::F16,
        "decoded {:?}",
        decoded.dtype()
    );
    compare("vae decode in f16", &decoded, get(&t, "vae_dec_out")?, 2e-2)?;
    let posterior = vae.encode(&get(&t, "vae_enc_image")?.to_dtype(DType::F16)?)?;
    compare(
        "vae encode mean in f16",
        &posterior.mean,
        get(&t, "vae_enc_mean")?,
        2e-2,
    )?;
    compare(
        "vae encode logvar in f16",
        &posterior.logvar,
        get(&t, "vae_enc_logvar")?,
        2e-2,
    )
}
