//! OmniSR against spandrel 0.4.2 (random weights, float64 forward;
//! `scripts/fixtures/zoo_omnisr.py`): detection of every hyper-parameter spandrel reports, the
//! network's output within 1e-4 relative (the published nf-64 x4 preset, a window-4 net with
//! two groups of two blocks, a net without position bias or with thop counters in a `.pth`, and
//! an input under spandrel's 16-pixel minimum), the upscaler untiled and tiled, and the errors of
//! a missing or mis-shaped tensor.

mod common;
#[path = "support/zoo_omnisr_gen.rs"]
mod zoo;

use anyhow::{ensure, Context, Result};
use diffsr::gan::arch::GanArch;
use diffsr::gan::GanModel;
use serde_json::Value;

const FIXTURE: &str = "omnisr";

/// Every hyper-parameter equals spandrel's.
fn check_arch(model: &GanModel, case: &Value) -> Result<()> {
    let name = case["name"].as_str().context("name")?;
    zoo::check_common(model, case)?;
    ensure!(case["id"] == "OmniSR", "{name}: spandrel id {}", case["id"]);
    let GanArch::OmniSr(p) = model.arch() else {
        anyhow::bail!("{name}: detected as {}", model.arch().describe());
    };
    let hp = &case["hyperparameters"];
    let int = |k: &str| hp[k].as_u64().map(|v| v as usize);
    ensure!(
        Some(p.num_feat) == int("num_feat"),
        "{name}: num_feat {}",
        p.num_feat
    );
    ensure!(
        Some(p.block_num) == int("block_num"),
        "{name}: block_num {}",
        p.block_num
    );
    ensure!(
        Some(p.res_num) == int("res_num"),
        "{name}: res_num {}",
        p.res_num
    );
    ensure!(
        Some(p.window_size) == int("window_size"),
        "{name}: window_size {}",
        p.window_size
    );
    ensure!(
        Some(p.up_scale) == int("up_scale"),
        "{name}: up_scale {}",
        p.up_scale
    );
    ensure!(Some(p.in_channels) == int("num_in_ch"), "{name}: num_in_ch");
    ensure!(
        Some(p.out_channels) == int("num_out_ch"),
        "{name}: num_out_ch"
    );
    ensure!(hp["pe"] == p.pe, "{name}: pe {}", p.pe);
    ensure!(hp["bias"] == p.bias, "{name}: bias {}", p.bias);
    let size = model.arch().input_size();
    ensure!(size.multiple == p.window_size, "{name}: input multiple");
    ensure!(
        model.arch().min_input_side() as u64
            == case["size_requirements"]["minimum"]
                .as_u64()
                .context("minimum")?,
        "{name}: minimum side"
    );
    Ok(())
}

#[test]
fn every_case_matches_spandrel() -> Result<()> {
    let t = zoo::tensors(FIXTURE)?;
    let cases = zoo::cases(FIXTURE)?;
    ensure!(cases.len() >= 4, "every case in the fixture");
    for case in &cases {
        let name = case["name"].as_str().context("name")?;
        let model = zoo::load_case(FIXTURE, case)?;
        check_arch(&model, case)?;
        let input = &t[case["input"].as_str().context("input")?];
        let want = &t[case["output"].as_str().context("output")?];
        common::compare(name, &zoo::forward(&model, input)?, want, 1e-4)?;
    }
    Ok(())
}

#[test]
fn the_upscaler_untiled_is_the_clamped_reference() -> Result<()> {
    let t = zoo::tensors(FIXTURE)?;
    for case in zoo::cases(FIXTURE)? {
        let name = case["name"].as_str().context("name")?;
        let model = zoo::load_case(FIXTURE, &case)?;
        let input = &t[case["input"].as_str().context("input")?];
        let want = &t[case["output"].as_str().context("output")?];
        let (got, tiles) = zoo::upscale(&model, input, 0)?;
        ensure!(tiles == 1, "{name}: {tiles} tiles");
        common::compare(
            name,
            &got,
            &want.clamp(0f32, 1f32)?,
            zoo::clamped_rel(want)?,
        )?;
    }
    Ok(())
}

/// OmniSR has no finite receptive field: its grid channel attention normalises and mixes
/// every window of the image, so a tile's output differs from the whole image's wherever the
/// tile's statistics differ — the reference itself does (see the comparison of a crop below).
/// With random weights, whose outputs swing over ±15 before the clamp, that difference is large;
/// the check is that tiling adds nothing beyond it, not that it is small.
#[test]
fn tiles_differ_no_more_than_the_reference_on_a_crop() -> Result<()> {
    let case = zoo::cases(FIXTURE)?
        .into_iter()
        .find(|c| c["name"] == "tiny_w4_x2")
        .context("case")?;
    let model = zoo::load_case(FIXTURE, &case)?;
    let image = zoo::astronaut()?;
    let (whole, _) = zoo::upscale(&model, &image, 0)?;
    // The network on a 96² crop against the whole image, over the crop's centre.
    let (c0, c, s) = (16, 96, 2);
    let crop = image.narrow(2, c0, c)?.narrow(3, c0, c)?;
    let (cropped, _) = zoo::upscale(&model, &crop, 0)?;
    let centre = |t: &candle_core::Tensor, at: usize| -> Result<candle_core::Tensor> {
        Ok(t.narrow(2, at * s, 64 * s)?.narrow(3, at * s, 64 * s)?)
    };
    let inherent = zoo::mean_diff(&centre(&cropped, 16)?, &centre(&whole, c0 + 16)?)?;
    println!("reference on a 96² crop vs the whole 128² image: mean |Δ| {inherent:.3e}");
    for tile in [96, 112] {
        let (tiled, count) = zoo::upscale(&model, &image, tile)?;
        let (max, mean) = (
            zoo::max_diff(&tiled, &whole)?,
            zoo::mean_diff(&tiled, &whole)?,
        );
        println!("tile {tile}: {count} tiles, |tiled - whole| max {max:.3e} mean {mean:.3e}");
        ensure!(count > 1, "tile {tile}: one tile");
        ensure!(tiled.dims() == whole.dims(), "tile {tile}: shape");
        ensure!(
            mean <= 1.5 * inherent,
            "tile {tile}: mean |Δ| {mean} against {inherent} for a plain crop"
        );
    }
    Ok(())
}

#[test]
fn a_missing_or_misshaped_tensor_is_named() -> Result<()> {
    let dict = zoo::raw_dict(FIXTURE, "tiny_w4_x2.safetensors")?;
    zoo::check_bad_tensor(
        &dict,
        "residual_layer.1.residual_layer.1.layer.11.fn.temperature",
        &[4, 2, 1],
    )?;
    zoo::check_bad_tensor(&dict, "residual_layer.0.esa.conv2.weight", &[16, 16, 1, 1])?;
    zoo::check_bad_tensor(
        &dict,
        "residual_layer.0.residual_layer.1.layer.8.fn.rel_pos_bias.weight",
        &[25, 4],
    )?;
    Ok(())
}

/// spandrel runs OmniSR in half precision (`supports_half`); so may diffsr, its reductions
/// (norms, means, the channel attentions' L2 normalisation and d×d scores) in f32 as torch
/// accumulates them. Random weights make the nets chaotic (outputs of ±15): about 1.5e-2.
#[test]
fn f16_stays_close() -> Result<()> {
    zoo::check_f16(FIXTURE, 3e-2, |case| zoo::load_case(FIXTURE, case))
}
