//! Whole-trajectory parity with diffusers: every solver, on the x4 upscaler's config and
//! Stable Diffusion's, for each prediction type and for 1 to 75 steps, replays the fixed
//! weight-free model of `scripts/fixtures/scheduler_trajectories.py` with the noise diffusers
//! drew, and must land on diffusers' samples at every step.
//!
//! Tolerances: integer timesteps exactly; fractional ones (Karras σ inverted to timesteps)
//! within 1e-4 timestep units; sigmas within 1e-6 relative. Both allow for torch's scalar
//! `exp`/`log`/`sqrt`, which are not correctly rounded and so differ from ours by an ulp for a
//! few arguments (betas themselves match torch bit for bit, see `torch_linspace_f32`). Samples
//! must be within 1e-5 relative to the sample's scale (max |Δ| ≤ 1e-5 · max(1, max |reference|))
//! at every step.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr_schedulers::{
    build_from_config, Scheduler, SchedulerConfig, SchedulerKind, SolverOptions,
};
use serde_json::Value;

const SAMPLE_TOLERANCE: f64 = 1e-5;
const SIGMA_TOLERANCE: f64 = 1e-6;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trajectories")
}

/// The reference's dummy model, in f32: `0.8 * sin(x) + (0.05 * (t / 1000)) * x`.
fn model(x: &Tensor, t: f64) -> Result<Tensor> {
    let coeff = 0.05f32 * (t as f32 / 1000.0);
    Ok((x.sin()?.affine(0.8, 0.0)? + x.affine(coeff as f64, 0.0)?)?)
}

fn max_abs(t: &Tensor) -> Result<f64> {
    Ok(t.abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

fn config_of(value: &Value) -> Result<SchedulerConfig> {
    Ok(SchedulerConfig::from_json_str(&value.to_string())?)
}

fn check_timesteps(ours: &[f64], reference: &[f64]) -> Result<()> {
    ensure!(
        ours.len() == reference.len(),
        "{} timesteps, diffusers has {}: {ours:?} vs {reference:?}",
        ours.len(),
        reference.len()
    );
    for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        let exact = b.fract() == 0.0;
        ensure!(
            if exact { a == b } else { (a - b).abs() <= 1e-4 },
            "timestep {i}: {a} != diffusers {b} (ours {ours:?})"
        );
    }
    Ok(())
}

struct Case<'a> {
    meta: &'a Value,
    tensors: &'a HashMap<String, Tensor>,
}

impl Case<'_> {
    fn tensor(&self, name: &str) -> Result<&Tensor> {
        let key = format!("{}/{name}", self.meta["key"].as_str().unwrap_or_default());
        self.tensors
            .get(&key)
            .with_context(|| format!("fixture tensor {key} missing"))
    }

    fn label(&self) -> String {
        format!("{}:{}", self.meta["variant"], self.meta["key"])
    }

    fn build(&self) -> Result<Box<dyn Scheduler>> {
        let steps = self.meta["steps"].as_u64().context("steps")? as usize;
        let options = SolverOptions {
            eta: self.meta["eta"].as_f64().unwrap_or(0.0),
        };
        let exact = build_from_config(&config_of(&self.meta["config"])?, steps, &options)?;
        let Some(kind) = self.meta["kind"].as_str() else {
            return Ok(exact);
        };
        // The CLI path: the named solver built from the base config plus the prediction type.
        let kind: SchedulerKind = kind.parse()?;
        let mut base = config_of(&self.meta["base_config"])?;
        base.prediction_type = config_of(&self.meta["config"])?.prediction_type;
        let named = kind.build(&base, steps, &options)?;
        ensure!(named.kind() == kind, "built {} for {kind}", named.kind());
        ensure!(
            named.timesteps() == exact.timesteps(),
            "named and from-config timesteps differ"
        );
        Ok(named)
    }

    fn check(&self) -> Result<()> {
        let mut solver = self.build()?;
        let timesteps = self.tensor("timesteps")?.to_vec1::<f64>()?;
        check_timesteps(solver.timesteps(), &timesteps)?;
        if let Ok(sigmas) = self.tensor("sigmas") {
            let sigmas = sigmas.to_vec1::<f64>()?;
            let ours = solver.sigmas().context("solver exposes no sigmas")?;
            ensure!(
                ours.len() == sigmas.len(),
                "{} sigmas, diffusers has {}",
                ours.len(),
                sigmas.len()
            );
            for (i, (a, b)) in ours.iter().zip(&sigmas).enumerate() {
                ensure!(
                    (a - b).abs() <= SIGMA_TOLERANCE * b.abs(),
                    "sigma {i}: {a} != diffusers {b}"
                );
            }
        }
        let init = self.tensor("init_noise_sigma")?.to_vec1::<f64>()?[0];
        ensure!(
            (solver.init_noise_sigma() - init).abs() <= 1e-6 * init.abs(),
            "init_noise_sigma {} != diffusers {init}",
            solver.init_noise_sigma()
        );

        let trajectory = self.tensor("trajectory")?;
        let drawn = self.tensor("noise_drawn")?.to_vec1::<u8>()?;
        let noise = self.tensor("noise").ok();
        let mut sample = self
            .tensor("start")?
            .affine(solver.init_noise_sigma(), 0.0)?;
        for (i, &t) in timesteps.iter().enumerate() {
            ensure!(
                solver.needs_noise(i) == (drawn[i] == 1),
                "step {i}: needs_noise {} but diffusers drew noise: {}",
                solver.needs_noise(i),
                drawn[i] == 1
            );
            let step_noise = match (drawn[i], noise) {
                (1, Some(noise)) => Some(noise.get(i)?),
                _ => None,
            };
            let input = solver.scale_model_input(&sample, i)?;
            let output = model(&input, t)?;
            sample = solver
                .step(i, &output, &sample, step_noise.as_ref())?
                .prev_sample;
            let reference = trajectory.get(i)?;
            let scale = max_abs(&reference)?.max(1.0);
            let diff = max_abs(&(&sample - &reference)?)?;
            if diff.is_nan() || diff > SAMPLE_TOLERANCE * scale {
                bail!(
                    "step {i} (t = {t}): max |Δ| {diff:e} exceeds {SAMPLE_TOLERANCE:e} × {scale}"
                );
            }
        }
        Ok(())
    }
}

/// Replays every fixture case of `variant`; reports all failing cases at once.
fn check_variant(variant: &str) -> Result<()> {
    let dir = fixture_dir();
    let index: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
    let tensors =
        candle_core::safetensors::load(dir.join(format!("{variant}.safetensors")), &Device::Cpu)?;
    let cases: Vec<&Value> = index["cases"]
        .as_array()
        .context("cases")?
        .iter()
        .filter(|c| c["variant"] == variant)
        .collect();
    ensure!(!cases.is_empty(), "no fixture cases for {variant}");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|meta| {
            let case = Case {
                meta,
                tensors: &tensors,
            };
            case.check()
                .err()
                .map(|e| format!("{}: {e:#}", case.label()))
        })
        .collect();
    ensure!(
        failures.is_empty(),
        "{} of {} cases differ from diffusers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

macro_rules! parity_tests {
    ($($name:ident => $variant:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() -> Result<()> {
                check_variant($variant)
            }
        )*
    };
}

parity_tests! {
    ddim => "ddim",
    ddim_with_eta => "ddim-eta",
    ddpm => "ddpm",
    euler => "euler",
    euler_karras => "euler-karras",
    euler_ancestral => "euler-a",
    dpmpp_2m => "dpmpp-2m",
    dpmpp_2m_karras => "dpmpp-2m-karras",
    dpmpp_2m_sde => "dpmpp-2m-sde",
    dpmpp_3m => "dpmpp-3m",
    unipc => "unipc",
    unipc_bh1_order3 => "unipc-bh1-3",
}
