//! `ClipTextModel` against transformers' `CLIPTextModel` on the tiny x4 upscaler's text encoder
//! (tests/fixtures/x4_text_encoder.safetensors, made by scripts/fixtures/x4_text_encoder.py).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use diffsr::models::clip_text::{ClipTextConfig, ClipTextModel};
use diffsr::tokenizer::ClipTokenizer;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn encoder_dir() -> PathBuf {
    fixtures().join("tiny-x4-upscaler/text_encoder")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("x4_text_encoder.safetensors"), &Device::Cpu)
        .unwrap()
}

fn config() -> ClipTextConfig {
    ClipTextConfig::from_file(&encoder_dir().join("config.json")).unwrap()
}

fn load(
    config: &ClipTextConfig,
    weights: &std::path::Path,
    dtype: DType,
) -> diffsr::Result<ClipTextModel> {
    let vb =
        unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[weights], dtype, &Device::Cpu)? };
    ClipTextModel::new(config, vb)
}

/// max|a - b| and the bound 1e-4 · max(1, max|b|) scaled by `rel`.
fn max_diff(got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims());
    let got = got.to_dtype(DType::F32).unwrap();
    let diff = (&got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0);
    (diff, scale)
}

fn assert_close(got: &Tensor, want: &Tensor, rel: f32, what: &str) {
    let (diff, scale) = max_diff(got, want);
    println!("{what}: max|Δ| = {diff:.3e}, max|ref| = {scale:.3}");
    assert!(
        diff <= rel * scale,
        "{what}: max|Δ| {diff:e} > {rel:e} · {scale}"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("text_encoder_parity_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn last_hidden_state_matches_transformers() {
    let r = reference();
    let config = config();
    assert_eq!(
        (config.bos_token_id, config.hidden_act.as_str()),
        (Some(0), "gelu")
    );
    let model = load(
        &config,
        &encoder_dir().join("model.safetensors"),
        DType::F32,
    )
    .unwrap();
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let out = model.forward(&ids).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    assert_close(&out, &r["last_hidden_state"], 1e-4, "batch of 5");

    // Batch rows are independent, and i64 ids are accepted as the reference stores them.
    let one = model
        .forward(&r["input_ids"].narrow(0, 3, 1).unwrap())
        .unwrap();
    assert_close(
        &one,
        &r["last_hidden_state"].narrow(0, 3, 1).unwrap(),
        1e-4,
        "row 3 alone, i64 ids",
    );
}

#[test]
fn tokenizer_and_encoder_together_reproduce_the_reference_ids() {
    let r = reference();
    let tokenizer =
        ClipTokenizer::from_dir(&fixtures().join("tiny-x4-upscaler/tokenizer")).unwrap();
    let want = r["input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    assert_eq!(tokenizer.encode("").unwrap(), want[0]);
    assert_eq!(
        tokenizer
            .encode("low quality, blurry, jpeg artifacts")
            .unwrap(),
        want[4]
    );
}

#[test]
fn other_activations_match_transformers() {
    let r = reference();
    let ids = r["input_ids"].narrow(0, 0, 2).unwrap();
    for act in ["quick_gelu", "gelu_new"] {
        let mut config = config();
        config.hidden_act = act.into();
        let model = load(
            &config,
            &encoder_dir().join("model.safetensors"),
            DType::F32,
        )
        .unwrap();
        let out = model.forward(&ids).unwrap();
        assert_close(&out, &r[&format!("last_hidden_state_{act}")], 1e-4, act);
    }
}

#[test]
fn half_precision_runs_close_to_f32() {
    let r = reference();
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    for (dtype, rel) in [(DType::F16, 1e-2), (DType::BF16, 5e-2)] {
        let model = load(&config(), &encoder_dir().join("model.safetensors"), dtype).unwrap();
        let out = model.forward(&ids).unwrap();
        assert_eq!(out.dtype(), dtype);
        assert_close(&out, &r["last_hidden_state"], rel, &format!("{dtype:?}"));
    }
}

#[test]
fn hub_text_model_prefix_loads() {
    // The hub's model.safetensors names tensors `text_model.…`; transformers 5 saved the fixture
    // without the prefix.
    let r = reference();
    let tensors =
        candle_core::safetensors::load(encoder_dir().join("model.safetensors"), &Device::Cpu)
            .unwrap();
    let prefixed: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (format!("text_model.{k}"), v))
        .collect();
    let path = scratch("prefix").join("model.safetensors");
    candle_core::safetensors::save(&prefixed, &path).unwrap();
    let model = load(&config(), &path, DType::F32).unwrap();
    let out = model
        .forward(&r["input_ids"].to_dtype(DType::U32).unwrap())
        .unwrap();
    assert_close(&out, &r["last_hidden_state"], 1e-4, "text_model. prefix");
}

#[test]
fn unsupported_hidden_act_is_refused() {
    let dir = scratch("act");
    let text = std::fs::read_to_string(encoder_dir().join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["hidden_act"] = "relu".into();
    let path = dir.join("config.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let err = ClipTextConfig::from_file(&path).unwrap_err();
    assert!(
        matches!(&err, diffsr::Error::Config { path: p, .. } if *p == path),
        "{err}"
    );
    assert!(
        err.to_string().contains("hidden_act") && err.to_string().contains("relu"),
        "{err}"
    );

    // A config built in code is checked again by the model.
    let mut config = config();
    config.hidden_act = "swish".into();
    let err = load(
        &config,
        &encoder_dir().join("model.safetensors"),
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("hidden_act"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let mut tensors =
        candle_core::safetensors::load(encoder_dir().join("model.safetensors"), &Device::Cpu)
            .unwrap();
    let name = "encoder.layers.1.mlp.fc2.bias";
    assert!(tensors.remove(name).is_some());
    let path = scratch("missing").join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = load(&config(), &path, DType::F32)
        .err()
        .expect("a missing tensor must be an error");
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn bad_input_ids_are_errors_not_panics() {
    let model = load(
        &config(),
        &encoder_dir().join("model.safetensors"),
        DType::F32,
    )
    .unwrap();
    let too_long = Tensor::zeros((1, 78), DType::U32, &Device::Cpu).unwrap();
    assert!(model.forward(&too_long).is_err());
    let out_of_vocab = Tensor::new(&[[0u32, 49408]], &Device::Cpu).unwrap();
    assert!(model.forward(&out_of_vocab).is_err());
    let floats = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(model.forward(&floats).is_err());
    let rank1 = Tensor::zeros(4, DType::U32, &Device::Cpu).unwrap();
    assert!(model.forward(&rank1).is_err());
}
