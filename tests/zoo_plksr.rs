//! PLKSR and RealPLKSR against spandrel 0.4.2 (`scripts/fixtures/zoo_plksr.py`: spandrel's
//! own modules with seeded random weights, float64 forward on photo crops): detection of
//! every hyper-parameter spandrel reports, the network's output (tile 0, pre-pad 0), tiled
//! upscaling, and the errors of a file with one tensor missing or mis-shaped.

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::{GanArch, LkType, PlksrParams, RealPlksrParams};
use diffsr::gan::{GanModel, GanNetwork, GanOptions, GanUpscaler, StateDict};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoo/plksr")
}

fn cases() -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(fixtures().join("plksr.json"))?;
    let manifest: Value = serde_json::from_str(&text)?;
    let cases = manifest["cases"].as_array().context("cases")?.clone();
    ensure!(cases.len() >= 9, "expected every case in the fixture");
    Ok(cases)
}

fn tensors() -> Result<std::collections::HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        fixtures().join("plksr.safetensors"),
        &Device::Cpu,
    )?)
}

fn load(case: &Value) -> Result<GanModel> {
    let file = case["file"].as_str().context("file")?;
    Ok(GanModel::load(&fixtures().join(file))?)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v[key].as_str().with_context(|| key.to_string())
}

fn usize_of(v: &Value, key: &str) -> Result<usize> {
    Ok(v[key].as_u64().with_context(|| key.to_string())? as usize)
}

fn bool_of(v: &Value, key: &str) -> Result<bool> {
    v[key].as_bool().with_context(|| key.to_string())
}

fn check_plksr(name: &str, p: &PlksrParams, hp: &Value) -> Result<()> {
    ensure!(p.dim == usize_of(hp, "dim")?, "{name}: dim {}", p.dim);
    ensure!(p.n_blocks == usize_of(hp, "n_blocks")?, "{name}: n_blocks");
    ensure!(
        p.scale == usize_of(hp, "upscaling_factor")?,
        "{name}: scale"
    );
    ensure!(
        p.kernel_size == usize_of(hp, "kernel_size")?,
        "{name}: kernel_size"
    );
    ensure!(
        p.split_ratio() == hp["split_ratio"].as_f64().context("split_ratio")?,
        "{name}: split_ratio {}",
        p.split_ratio()
    );
    ensure!(
        p.ccm_type.name() == str_of(hp, "ccm_type")?,
        "{name}: ccm_type"
    );
    ensure!(
        p.lk_type.name() == str_of(hp, "lk_type")?,
        "{name}: lk_type"
    );
    ensure!(p.use_ea == bool_of(hp, "use_ea")?, "{name}: use_ea");
    // Not in the weights; spandrel builds its defaults, and so does diffsr.
    ensure!(!bool_of(hp, "with_idt")? && !bool_of(hp, "use_max_kernel")?);
    ensure!(hp["sparse_kernels"] == serde_json::json!([5, 5, 5, 5]));
    ensure!(hp["sparse_dilations"] == serde_json::json!([1, 2, 3, 4]));
    Ok(())
}

fn check_real(name: &str, p: &RealPlksrParams, hp: &Value) -> Result<()> {
    ensure!(p.dim == usize_of(hp, "dim")?, "{name}: dim {}", p.dim);
    ensure!(p.n_blocks == usize_of(hp, "n_blocks")?, "{name}: n_blocks");
    ensure!(
        p.scale == usize_of(hp, "upscaling_factor")?,
        "{name}: scale"
    );
    ensure!(
        p.kernel_size == usize_of(hp, "kernel_size")?,
        "{name}: kernel_size"
    );
    ensure!(
        p.split_ratio() == hp["split_ratio"].as_f64().context("split_ratio")?,
        "{name}: split_ratio {}",
        p.split_ratio()
    );
    ensure!(p.use_ea == bool_of(hp, "use_ea")?, "{name}: use_ea");
    ensure!(
        p.layer_norm == bool_of(hp, "layer_norm")?,
        "{name}: layer_norm"
    );
    ensure!(p.dysample == bool_of(hp, "dysample")?, "{name}: dysample");
    ensure!(usize_of(hp, "norm_groups")? == 4, "{name}: norm_groups");
    Ok(())
}

/// The detected architecture and every hyper-parameter equal what spandrel reported.
fn check_arch(case: &Value, arch: &GanArch) -> Result<()> {
    let name = str_of(case, "name")?;
    ensure!(case["arch"] == "PLKSR", "{name}: spandrel's id");
    ensure!(arch.scale() == usize_of(case, "scale")?, "{name}: scale");
    ensure!(
        arch.in_channels() == usize_of(case, "in_ch")?,
        "{name}: in_ch"
    );
    ensure!(
        arch.out_channels() == usize_of(case, "out_ch")?,
        "{name}: out_ch"
    );
    ensure!(
        arch.input_multiple() == usize_of(case, "size_multiple")?,
        "{name}: input multiple"
    );
    let hp = &case["hyperparameters"];
    let half = bool_of(case, "supports_half")?;
    match arch {
        GanArch::Plksr(p) => {
            ensure!(case["cls"] == "PLKSR", "{name}: detected PLKSR");
            ensure!(p.supports_half() == half, "{name}: supports_half");
            check_plksr(name, p, hp)
        }
        GanArch::RealPlksr(p) => {
            ensure!(case["cls"] == "RealPLKSR", "{name}: detected RealPLKSR");
            ensure!(p.supports_half() == half, "{name}: supports_half");
            check_real(name, p, hp)
        }
        other => anyhow::bail!("{name}: detected {}", other.describe()),
    }
}

fn network(model: &GanModel) -> Result<GanNetwork> {
    Ok(GanNetwork::new(
        model.arch(),
        model.weights(),
        DType::F32,
        &Device::Cpu,
        model.source(),
    )?)
}

#[test]
fn every_case_is_detected_and_matches_spandrel() -> Result<()> {
    let t = tensors()?;
    for case in cases()? {
        let name = str_of(&case, "name")?;
        let model = load(&case)?;
        check_arch(&case, model.arch())?;
        ensure!(
            model.parameter_count() == usize_of(&case, "tensor_elems")?,
            "{name}: {} tensor elements",
            model.parameter_count()
        );
        let input = &t[str_of(&case, "input")?];
        let want = &t[str_of(&case, "output")?];
        let got = network(&model)?.forward(input)?;
        println!("{}", model.arch().describe());
        common::compare(name, &got, want, 1e-4)?;
    }
    Ok(())
}

fn upscale(model: &GanModel, input: &Tensor, tile: usize) -> Result<Tensor> {
    let options = GanOptions {
        tile: Some(tile),
        pre_pad: 0,
        ..GanOptions::default()
    };
    let upscaler = GanUpscaler::new(model, &options)?;
    Ok(upscaler.upscale_tensor(input, &mut |_, _| ControlFlow::Continue(()))?)
}

/// The upscaler run whole (tile 0, pre-pad 0) is the reference, clamped.
#[test]
fn upscaler_untiled_equals_the_clamped_reference() -> Result<()> {
    let t = tensors()?;
    for case in cases()? {
        let name = str_of(&case, "name")?;
        let model = load(&case)?;
        let input = &t[str_of(&case, "input")?];
        let want = t[str_of(&case, "output")?].clamp(0f32, 1f32)?;
        common::compare(name, &upscale(&model, input, 0)?, &want, 1e-4)?;
    }
    Ok(())
}

/// A 144 × 80 photo montage: the three photos side by side, above their upside-down copy.
fn montage() -> Result<Tensor> {
    let photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gan/photos");
    let row = ["astronaut.png", "chelsea.png", "coffee.png"]
        .iter()
        .map(|f| Ok(diffsr::image_io::load_rgb8(&photos.join(f))?.to_tensor(&Device::Cpu)?))
        .collect::<Result<Vec<_>>>()?;
    let row = Tensor::cat(&row, 3)?;
    let flipped = row.flip(&[2])?;
    Ok(Tensor::cat(&[&row, &flipped], 2)?)
}

/// Tiles as small as the overlap allows (2 × overlap), over a montage larger than them,
/// against the same upscaler run whole: within float error where the context covers the
/// receptive field (every tiny case), further for RealPLKSR's GroupNorm, which normalises each
/// tile with its own statistics (as spandrel's does when chaiNNer tiles it).
#[test]
fn tiles_match_the_whole_image() -> Result<()> {
    let input = montage()?;
    let (h, w) = (input.dim(2)?, input.dim(3)?);
    for case in cases()? {
        let name = str_of(&case, "name")?;
        if name.ends_with("_preset") {
            // dim 64 at 144 × 80: seconds in a debug build; the tiny cases cover the code.
            continue;
        }
        let model = load(&case)?;
        let overlap = diffsr::tiling::exact_overlap(model.arch().context_radius());
        let tile = 2 * overlap;
        ensure!(tile < w, "{name}: tile {tile} covers the montage");
        let whole = upscale(&model, &input, 0)?;
        let tiled = upscale(&model, &input, tile)?;
        let group_norm = matches!(model.arch(), GanArch::RealPlksr(p) if !p.layer_norm);
        let label = format!("{name}: tiles of {tile} (overlap {overlap}) on {w}x{h}");
        if group_norm {
            // Measured with these random weights: mean |Δ| 2.2e-2 at tiles of 64 (9.7e-3 at
            // 96, 1.8e-3 at 128), max 1.0 (clamped): the statistics of a 64-pixel tile are
            // not the image's.
            let d = (&tiled - &whole)?.abs()?;
            let mean = d.mean_all()?.to_scalar::<f32>()?;
            let max = d.max_all()?.to_scalar::<f32>()?;
            println!("{label} (GroupNorm): mean |Δ| {mean:.3e}, max |Δ| {max:.3e}");
            ensure!(mean <= 0.03, "{label}: mean |Δ| {mean}");
            continue;
        }
        common::compare(&label, &tiled, &whole, 1e-4)?;
    }
    Ok(())
}

/// A copy of `case`'s weights with `edit` applied, identified again.
fn reload(case: &Value, edit: impl FnOnce(&mut StateDict)) -> Result<String> {
    let model = load(case)?;
    let mut dict = model.weights().clone();
    edit(&mut dict);
    let path = Path::new("edited.safetensors");
    let built = GanModel::from_state_dict(dict, path)
        .and_then(|m| GanNetwork::new(m.arch(), m.weights(), DType::F32, &Device::Cpu, path));
    let Err(err) = built else {
        anyhow::bail!("{}: the edited weights were accepted", case["name"]);
    };
    let err = err.to_string();
    ensure!(err.contains("edited.safetensors"), "{err}");
    Ok(err)
}

fn case(name: &str) -> Result<Value> {
    cases()?
        .into_iter()
        .find(|c| c["name"] == name)
        .with_context(|| name.to_string())
}

#[test]
fn a_missing_tensor_is_named() -> Result<()> {
    for (case_name, tensor) in [
        ("plksr_iccm_rect_x2", "feats.2.lk.nm_conv.bias"),
        ("plksr_ccm_sparse_x3", "feats.1.lk.convs.3.weight"),
        ("realplksr_x4_preset", "feats.1.norm.weight"),
        ("realplksr_dysample_ln_x2", "feats.2.layer_norm.weight"),
        ("realplksr_dysample_x4", "to_img.end_conv.weight"),
        ("realplksr_dysample_x3", "to_img.init_pos"),
        ("realplksr_dysample_ln_x2", "feats.1.layer_norm.bias"),
        ("plksr_iccm_rect_x2", "feats.1.attn.f.0.weight"),
        ("realplksr_dysample_ln_x2", "feats.4.weight"),
    ] {
        let c = case(case_name)?;
        let err = reload(&c, |d| {
            d.remove(tensor);
        })?;
        println!("{case_name} without {tensor}: {err}");
        ensure!(
            err.contains(&format!("missing tensor `{tensor}`")),
            "{case_name}: {err}"
        );
    }
    Ok(())
}

#[test]
fn a_misshaped_tensor_is_named_with_both_shapes() -> Result<()> {
    for (case_name, tensor, shape, want) in [
        (
            "plksr_tiny_x4_preset",
            "feats.1.channe_mixer.2.bias",
            vec![63],
            vec![64],
        ),
        (
            "plksr_iccm_rect_x2",
            "feats.2.lk.mn_conv.weight",
            vec![4, 4, 9, 5],
            vec![4, 4, 9, 3],
        ),
        (
            "realplksr_dysample_ln_x2",
            "feats.2.attn.f.0.weight",
            vec![16, 16, 1, 1],
            vec![16, 16, 3, 3],
        ),
        (
            "realplksr_dysample_x4",
            "to_img.offset.weight",
            vec![96, 48, 1, 1],
            vec![128, 48, 1, 1],
        ),
        (
            "realplksr_ln_x4",
            "feats.4.weight",
            vec![50, 8, 3, 3],
            vec![48, 8, 3, 3],
        ),
    ] {
        let c = case(case_name)?;
        let err = reload(&c, |d| {
            let t = Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu).unwrap();
            d.insert(tensor.to_string(), t);
        })?;
        println!("{case_name} with {tensor} {shape:?}: {err}");
        ensure!(
            err.contains(&format!("`{tensor}`"))
                && err.contains(&format!("{shape:?}"))
                && err.contains(&format!("{want:?}")),
            "{case_name}: {err}"
        );
    }
    Ok(())
}

/// Half precision where spandrel allows it (`supports_half`: PLKSR, RealPLKSR with layer
/// norm; bf16 everywhere): the network runs in f16 / bf16 and stays near the reference.
#[test]
fn half_precision_runs_where_spandrel_allows_it() -> Result<()> {
    let t = tensors()?;
    for case in cases()? {
        let name = str_of(&case, "name")?;
        let model = load(&case)?;
        let input = &t[str_of(&case, "input")?];
        let want = &t[str_of(&case, "output")?];
        // candle's CPU matmul has no bf16, which its dilated convolutions (SparsePLK) need.
        let mut dtypes = vec![];
        if !matches!(model.arch(), GanArch::Plksr(p) if p.lk_type == LkType::SparsePlk) {
            dtypes.push(DType::BF16);
        }
        if bool_of(&case, "supports_half")? {
            dtypes.push(DType::F16);
        }
        for dtype in dtypes {
            let net = GanNetwork::new(
                model.arch(),
                model.weights(),
                dtype,
                &Device::Cpu,
                model.source(),
            )?;
            let got = net.forward(&input.to_dtype(dtype)?)?;
            let tol = if dtype == DType::F16 { 1e-2 } else { 5e-2 };
            common::compare(&format!("{name} {dtype:?}"), &got, want, tol)?;
        }
    }
    Ok(())
}
