//! UNet parity with diffusers' `UNet2DConditionModel` on the tiny random-weight x4 upscaler
//! (fixture: scripts/fixtures/x4_unet_vae.py), plus config refusals and weight-shape errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use diffsr::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use diffsr::Error;

mod common;
use common::compare;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unet_dir() -> PathBuf {
    root().join("tests/fixtures/tiny-x4-upscaler/unet")
}

fn fixture() -> Result<HashMap<String, Tensor>> {
    let path = root().join("tests/fixtures/x4_unet_vae.safetensors");
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

fn get<'a>(t: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    t.get(name).with_context(|| format!("fixture lacks {name}"))
}

fn weights(dtype: DType) -> Result<VarBuilder<'static>> {
    let path = unet_dir().join("diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture file is not modified while the test runs.
    Ok(unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, &Device::Cpu)? })
}

fn load(dtype: DType) -> Result<UNet2DConditionModel> {
    let config = UNet2DConditionConfig::from_file(&unet_dir().join("config.json"))?;
    Ok(UNet2DConditionModel::new(&config, weights(dtype)?)?)
}

fn run_case(
    unet: &UNet2DConditionModel,
    t: &HashMap<String, Tensor>,
    case: &str,
    dtype: DType,
) -> Result<Tensor> {
    let sample = match case {
        "c" => get(t, "unet_c_sample")?,
        _ => get(t, "unet_sample")?,
    };
    let timestep = get(t, &format!("unet_{case}_timestep"))?.to_vec1::<f64>()?[0];
    let labels = get(t, &format!("unet_{case}_labels"))?.to_dtype(DType::U32)?;
    let ehs = get(t, "unet_ehs")?.to_dtype(dtype)?;
    Ok(unet.forward(&sample.to_dtype(dtype)?, timestep, &ehs, &labels)?)
}

#[test]
fn odd_latent_guided_batch_matches_diffusers() -> Result<()> {
    let t = fixture()?;
    let unet = load(DType::F32)?;
    // 13x11 is not a multiple of 8: the up path resizes to the skip sizes.
    compare(
        "unet a (t=751, labels [20,20])",
        &run_case(&unet, &t, "a", DType::F32)?,
        get(&t, "unet_a_out")?,
        1e-4,
    )?;
    compare(
        "unet b (t=3, labels [0,350])",
        &run_case(&unet, &t, "b", DType::F32)?,
        get(&t, "unet_b_out")?,
        1e-4,
    )?;
    Ok(())
}

#[test]
fn even_latent_float_timestep_matches_diffusers() -> Result<()> {
    let t = fixture()?;
    let unet = load(DType::F32)?;
    compare(
        "unet c (16x16, t=500.5)",
        &run_case(&unet, &t, "c", DType::F32)?,
        get(&t, "unet_c_out")?,
        1e-4,
    )
}

#[test]
fn tiny_attention_budget_gives_the_same_output() -> Result<()> {
    let t = fixture()?;
    let mut unet = load(DType::F32)?;
    // 64 bytes: 16 f32 scores per block, so every attention is split into key blocks.
    unet.set_attention_budget(64);
    compare(
        "unet a, 64-byte budget",
        &run_case(&unet, &t, "a", DType::F32)?,
        get(&t, "unet_a_out")?,
        1e-4,
    )
}

#[test]
fn half_precision_runs_close_to_f32() -> Result<()> {
    let t = fixture()?;
    let unet = load(DType::F16)?;
    let out = run_case(&unet, &t, "a", DType::F16)?;
    ensure!(out.dtype() == DType::F16, "output dtype {:?}", out.dtype());
    // f16 weights and activations: agreement to a few parts in a thousand.
    compare("unet a in f16", &out, get(&t, "unet_a_out")?, 2e-2)
}

#[test]
fn class_labels_out_of_range_are_refused() -> Result<()> {
    let t = fixture()?;
    let unet = load(DType::F32)?;
    let labels = Tensor::new(&[20u32, 1000], &Device::Cpu)?;
    let err = unet
        .forward(
            get(&t, "unet_sample")?,
            751.0,
            get(&t, "unet_ehs")?,
            &labels,
        )
        .expect_err("label 1000 must be refused");
    ensure!(
        matches!(&err, Error::InvalidOption { option, .. } if option == "class_labels"),
        "unexpected error: {err}"
    );
    Ok(())
}

fn base_config_json() -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(unet_dir().join("config.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn write_temp(name: &str, value: &serde_json::Value) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("diffsr-unet-{}-{name}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(value)?)?;
    Ok(path)
}

fn expect_unsupported(result: diffsr::Result<impl Sized>, field: &str) -> Result<()> {
    match result {
        Err(Error::Unsupported { field: f, reason }) => {
            ensure!(f == field, "refused {f:?} ({reason}) instead of {field:?}");
            let msg = Error::Unsupported { field: f, reason }.to_string();
            ensure!(msg.contains(field), "message {msg:?} does not name {field}");
            Ok(())
        }
        // `from_file` names the file as well.
        Err(Error::Config { message, .. }) => {
            ensure!(
                message.starts_with(&format!("`{field}`")),
                "refused {message:?} instead of {field:?}"
            );
            Ok(())
        }
        Err(other) => anyhow::bail!("{field}: wrong error {other}"),
        Ok(_) => anyhow::bail!("{field}: accepted"),
    }
}

#[test]
fn unsupported_config_fields_are_refused_by_name() -> Result<()> {
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("resnet_time_scale_shift", "scale_shift".into()),
        ("class_embed_type", "timestep".into()),
        ("addition_embed_type", "text_time".into()),
        ("time_cond_proj_dim", 256.into()),
        ("dual_cross_attention", true.into()),
        ("attention_type", "gated".into()),
        ("time_embedding_type", "fourier".into()),
        ("encoder_hid_dim", 64.into()),
        ("num_attention_heads", 8.into()),
        ("conv_in_kernel", 4.into()),
        ("act_fn", "mish".into()),
        (
            "transformer_layers_per_block",
            serde_json::json!([[1, 1], [1, 1], [1, 1], [1, 1]]),
        ),
        (
            "down_block_types",
            serde_json::json!([
                "DownBlock2D",
                "SimpleCrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D"
            ]),
        ),
        ("only_cross_attention", serde_json::json!([true, false])),
        ("attention_head_dim", 3.into()),
    ];
    for (field, value) in cases {
        let mut json = base_config_json()?;
        json[field] = value;
        let path = write_temp(field, &json)?;
        let result = UNet2DConditionConfig::from_file(&path);
        std::fs::remove_file(&path).ok();
        expect_unsupported(result, field)?;
    }
    // `new` checks too, for configs built in code.
    let mut config = UNet2DConditionConfig::from_file(&unet_dir().join("config.json"))?;
    config.resnet_time_scale_shift = "scale_shift".into();
    expect_unsupported(
        UNet2DConditionModel::new(&config, weights(DType::F32)?),
        "resnet_time_scale_shift",
    )
}

#[test]
fn malformed_config_is_a_config_error() -> Result<()> {
    let path = write_temp(
        "malformed",
        &serde_json::json!({"block_out_channels": "wide"}),
    )?;
    let result = UNet2DConditionConfig::from_file(&path);
    std::fs::remove_file(&path).ok();
    match result {
        Err(Error::Config { path: p, .. }) => ensure!(p == path, "path {p:?}"),
        other => anyhow::bail!("expected a config error, got {:?}", other.err()),
    }
    let missing = UNet2DConditionConfig::from_file(Path::new("/nonexistent/config.json"));
    ensure!(
        matches!(missing, Err(Error::Io { .. })),
        "missing file not an Io error"
    );
    Ok(())
}

#[test]
fn wrong_weight_shape_names_tensor_and_shapes() -> Result<()> {
    let mut config = UNet2DConditionConfig::from_file(&unet_dir().join("config.json"))?;
    // attn1 of the only-cross-attention levels projects the text: its to_k is (16, cross_dim).
    config.cross_attention_dim = diffsr::models::unet::PerBlock::One(40);
    let err = UNet2DConditionModel::new(&config, weights(DType::F32)?)
        .expect_err("a 40-wide cross attention cannot load 32-wide weights");
    let msg = err.to_string();
    println!("{msg}");
    ensure!(matches!(err, Error::Tensor(_)), "not a tensor error: {msg}");
    ensure!(
        msg.contains("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight"),
        "tensor not named: {msg}"
    );
    ensure!(
        msg.contains("[16, 40]") && msg.contains("[16, 32]"),
        "shapes not given: {msg}"
    );
    Ok(())
}

#[test]
fn conv_projections_and_upcast_match_linear_projections() -> Result<()> {
    // A 1x1 conv with the linear weight reshaped to (C, C, 1, 1) is the same map, so the
    // `use_linear_projection: false` path must reproduce diffusers' output; `upcast_attention`
    // changes nothing in f32 but runs the upcast code.
    let t = fixture()?;
    let original = unet_dir().join("diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&original, &Device::Cpu)?;
    let mut reshaped = 0;
    for (name, tensor) in tensors.iter_mut() {
        let is_proj = name.ends_with("proj_in.weight") || name.ends_with("proj_out.weight");
        if is_proj && name.contains("attentions") {
            let (o, i) = tensor.dims2()?;
            *tensor = tensor.reshape((o, i, 1, 1))?;
            reshaped += 1;
        }
    }
    // 3x2 down + 1 mid + 3x3 up transformers, proj_in and proj_out each.
    ensure!(
        reshaped == 2 * (6 + 1 + 9),
        "reshaped {reshaped} projections"
    );
    let path = std::env::temp_dir().join(format!(
        "diffsr-unet-{}-conv.safetensors",
        std::process::id()
    ));
    candle_core::safetensors::save(&tensors, &path)?;
    let mut config = UNet2DConditionConfig::from_file(&unet_dir().join("config.json"))?;
    config.use_linear_projection = false;
    config.upcast_attention = true;
    // SAFETY: the temporary file is not modified while the model holds it.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu)? };
    let unet = UNet2DConditionModel::new(&config, vb);
    std::fs::remove_file(&path).ok();
    let unet = unet?;
    compare(
        "unet a, conv projections + upcast",
        &run_case(&unet, &t, "a", DType::F32)?,
        get(&t, "unet_a_out")?,
        1e-4,
    )
}
