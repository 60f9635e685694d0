//! SRResNet (SRGAN's generator, BasicSR's MSRResNet) against its PyTorch reference (random
//! weights, float64 forward; `scripts/fixtures/zoo_srresnet.py`, the network written from
//! BasicSR since spandrel 0.4.2 has none): detection of every hyper-parameter from the weights
//! (the published nf-64 16-block x4 preset and tiny x2 / x3 / x4 nets in .safetensors, a
//! `params`-wrapped and a bare .pth), the output within 1e-4 relative, the upscaler untiled and
//! tiled (exact: the tiny nets' receptive radius is within the tile context), no confusion with
//! RRDBNet, and the errors of a missing or mis-shaped tensor.

mod common;
#[path = "support/zoo_omnisr_gen.rs"]
mod zoo;

use anyhow::{ensure, Context, Result};
use diffsr::gan::arch::GanArch;
use diffsr::gan::GanModel;
use serde_json::Value;

const FIXTURE: &str = "srresnet";

fn check_arch(model: &GanModel, case: &Value) -> Result<()> {
    let name = case["name"].as_str().context("name")?;
    zoo::check_common(model, case)?;
    let GanArch::SrResNet(p) = model.arch() else {
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
        Some(p.num_block) == int("num_block"),
        "{name}: num_block {}",
        p.num_block
    );
    ensure!(
        Some(p.upscale) == int("upscale"),
        "{name}: upscale {}",
        p.upscale
    );
    Ok(())
}

#[test]
fn every_case_matches_basicsr() -> Result<()> {
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
        // The upscaler without tiles or pre-padding is the clamped network output.
        let (got, _) = zoo::upscale(&model, input, 0)?;
        common::compare(
            name,
            &got,
            &want.clamp(0f32, 1f32)?,
            zoo::clamped_rel(want)?,
        )?;
    }
    Ok(())
}

/// The tiny nets' exact receptive radius is within their tile context, so tiles blend to the
/// whole-image result.
#[test]
fn tiles_equal_the_whole_image() -> Result<()> {
    let image = zoo::astronaut()?.narrow(2, 10, 70)?.narrow(3, 20, 90)?;
    for case in zoo::cases(FIXTURE)? {
        let name = case["name"].as_str().context("name")?;
        if case["file"].is_null() {
            continue;
        }
        let model = zoo::load_case(FIXTURE, &case)?;
        let radius = model.arch().context_radius();
        let (whole, _) = zoo::upscale(&model, &image, 0)?;
        let tile = 2 * (radius * 8).div_ceil(3);
        let (tiled, count) = zoo::upscale(&model, &image, tile)?;
        let diff = zoo::max_diff(&tiled, &whole)?;
        println!("{name}: radius {radius}, tile {tile}: {count} tiles, max |Δ| {diff:.3e}");
        ensure!(count > 1, "{name}: one tile");
        ensure!(diff < 1e-5, "{name}: tiles differ by {diff}");
    }
    Ok(())
}

#[test]
fn a_missing_or_misshaped_tensor_is_named() -> Result<()> {
    let dict = zoo::raw_dict(FIXTURE, "tiny_x2.safetensors")?;
    zoo::check_bad_tensor(&dict, "body.1.conv2.weight", &[8, 8, 1, 1])?;
    zoo::check_bad_tensor(&dict, "conv_hr.bias", &[7])?;
    Ok(())
}

/// Plain convolutions: f16 stays within about 3e-3 of the float64 reference.
#[test]
fn f16_stays_close() -> Result<()> {
    zoo::check_f16(FIXTURE, 1e-2, |case| zoo::load_case(FIXTURE, case))
}
