//! `scheduler_config.json` as the hub writes it, following diffusers' `ConfigMixin`.
//!
//! Every field is optional: a field that is absent (or `null`) takes the default of the solver
//! that is built, exactly as diffusers' `from_config` keeps the keys a class accepts and falls
//! back to that class's defaults for the rest. That is what lets any solver be built from
//! another solver's config while keeping the training constants. Unknown keys are ignored.
//!
//! After parsing, [`SchedulerConfig::validate`] checks the values a solver sizes or divides
//! by against sane ranges (a `num_train_timesteps` of 1e9 would otherwise allocate gigabytes
//! of betas), naming the field and the range.

use serde::{Deserialize, Deserializer};

use crate::error::{Result, SchedulerError};

/// The most training timesteps a config may declare (diffusers' models use 1000): the noise
/// schedule holds a few floats per timestep, so this bounds what a config can allocate.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// How the training betas are laid out over `num_train_timesteps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// How inference timesteps are picked from the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// The union of the diffusers scheduler config fields this crate reads. `None` means "absent".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    #[serde(rename = "_diffusers_version")]
    pub diffusers_version: Option<String>,

    // Training constants, shared by every solver.
    pub num_train_timesteps: Option<usize>,
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_start: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<BetaSchedule>,
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub prediction_type: Option<PredictionType>,

    // Timestep selection.
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: Option<usize>,

    // DDIM / DDPM.
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub variance_type: Option<String>,

    // Sigma-based solvers.
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_dynamic_shifting: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub sigma_min: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub sigma_max: Option<f64>,
    pub interpolation_type: Option<String>,
    pub timestep_type: Option<String>,
    pub final_sigmas_type: Option<String>,

    // Multistep solvers (DPM-Solver, UniPC).
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub lambda_min_clipped: Option<f64>,
    pub predict_x0: Option<bool>,
    pub disable_corrector: Option<Vec<usize>>,
    /// UniPC's pluggable predictor solver; any value other than null is refused.
    pub solver_p: Option<serde_json::Value>,
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json` text. Python's `json` writes `Infinity`, `-Infinity` and
    /// `NaN` (diffusers' `lambda_min_clipped` defaults to `-inf`), which strict JSON rejects, so
    /// those bare tokens are accepted too.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let text = quote_non_finite_tokens(text);
        let de = &mut serde_json::Deserializer::from_str(&text);
        let config: Self =
            serde_path_to_error::deserialize(de).map_err(|e| SchedulerError::MalformedConfig {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values every solver relies on against sane ranges: `num_train_timesteps` in
    /// 2..=[`MAX_TRAIN_TIMESTEPS`] (and `trained_betas` as long), betas finite in (0, 1) with
    /// `beta_start` ≤ `beta_end`, `steps_offset` below the training length, positive finite
    /// `clip_sample_range`, positive `sigma_min` < `sigma_max`, and no NaN `lambda_min_clipped`.
    /// Absent fields are not checked (each solver's default applies). Solver-specific rules
    /// are checked when a solver is built.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| Err(SchedulerError::config(field, reason));
        if let Some(n) = self.num_train_timesteps {
            if !(2..=MAX_TRAIN_TIMESTEPS).contains(&n) {
                return bad(
                    "num_train_timesteps",
                    format!("is {n}; expected 2..={MAX_TRAIN_TIMESTEPS}"),
                );
            }
        }
        if let Some(betas) = &self.trained_betas {
            if !(2..=MAX_TRAIN_TIMESTEPS).contains(&betas.len()) {
                return bad(
                    "trained_betas",
                    format!(
                        "has {} values; expected 2..={MAX_TRAIN_TIMESTEPS}",
                        betas.len()
                    ),
                );
            }
            if let Some((i, b)) = betas
                .iter()
                .enumerate()
                .find(|(_, b)| !(b.is_finite() && (0.0..1.0).contains(*b)))
            {
                return bad(
                    "trained_betas",
                    format!("value {i} is {b}; every beta must be in [0, 1)"),
                );
            }
        }
        for (field, value) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
            if let Some(v) = value {
                if !(v.is_finite() && v > 0.0 && v < 1.0) {
                    return bad(
                        field,
                        format!("is {v}; expected a number above 0 and below 1"),
                    );
                }
            }
        }
        let uses_betas = self.trained_betas.is_none()
            && self.beta_schedule != Some(BetaSchedule::SquaredcosCapV2);
        let (start, end) = (
            self.beta_start.unwrap_or(0.0001),
            self.beta_end.unwrap_or(0.02),
        );
        if uses_betas && start > end {
            return bad(
                "beta_start",
                format!("{start} is above beta_end {end}; expected beta_start <= beta_end"),
            );
        }
        let train = self
            .trained_betas
            .as_ref()
            .map_or(self.num_train_timesteps.unwrap_or(1000), Vec::len);
        if let Some(offset) = self.steps_offset {
            if offset >= train {
                return bad(
                    "steps_offset",
                    format!("is {offset}; expected less than the {train} training timesteps"),
                );
            }
        }
        if let Some(range) = self.clip_sample_range {
            if !(range.is_finite() && range > 0.0) {
                return bad(
                    "clip_sample_range",
                    format!("is {range}; expected a finite number above 0"),
                );
            }
        }
        for (field, value) in [("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max)] {
            if let Some(v) = value {
                if !(v.is_finite() && v > 0.0) {
                    return bad(field, format!("is {v}; expected a finite number above 0"));
                }
            }
        }
        if let (Some(min), Some(max)) = (self.sigma_min, self.sigma_max) {
            if min >= max {
                return bad("sigma_min", format!("{min} is not below sigma_max {max}"));
            }
        }
        if self.lambda_min_clipped.is_some_and(f64::is_nan) {
            return bad(
                "lambda_min_clipped",
                "is NaN; expected a number or -Infinity".into(),
            );
        }
        Ok(())
    }

    /// Reads and parses a `scheduler_config.json` file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| SchedulerError::MalformedConfig {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::from_json_str(&text).map_err(|e| match e {
            SchedulerError::MalformedConfig { path: p, message } => {
                SchedulerError::MalformedConfig {
                    path: p,
                    message: format!("{message} (in {})", path.display()),
                }
            }
            SchedulerError::InvalidConfig { field, reason } => SchedulerError::InvalidConfig {
                field,
                reason: format!("{reason} (in {})", path.display()),
            },
            other => other,
        })
    }

    /// The config of `stabilityai/stable-diffusion-x4-upscaler`'s `scheduler/`: DDIM,
    /// v-prediction, scaled_linear 1e-4..0.02, `steps_offset` 1, leading spacing,
    /// `set_alpha_to_one` false.
    pub fn x4_upscaler() -> Self {
        Self {
            class_name: Some("DDIMScheduler".into()),
            num_train_timesteps: Some(1000),
            beta_start: Some(0.0001),
            beta_end: Some(0.02),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            prediction_type: Some(PredictionType::VPrediction),
            timestep_spacing: Some(TimestepSpacing::Leading),
            steps_offset: Some(1),
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            ..Self::default()
        }
    }

    /// The `low_res_scheduler/` config of the x4 upscaler: DDPM, scaled_linear 1e-4..0.02.
    pub fn x4_upscaler_low_res() -> Self {
        Self {
            class_name: Some("DDPMScheduler".into()),
            num_train_timesteps: Some(1000),
            beta_start: Some(0.0001),
            beta_end: Some(0.02),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            clip_sample: Some(false),
            ..Self::default()
        }
    }
}

/// Wraps the bare tokens `NaN`, `Infinity` and `-Infinity` that Python's `json` emits in quotes,
/// leaving string contents alone, so that serde_json can read them and [`lenient_f64`] map them.
fn quote_non_finite_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(token) = token {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Reads a float written as a JSON number, or as one of Python's non-finite spellings.
fn lenient_f64<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrWord {
        Number(f64),
        Word(String),
    }
    match Option::<NumberOrWord>::deserialize(de)? {
        None => Ok(None),
        Some(NumberOrWord::Number(x)) => Ok(Some(x)),
        Some(NumberOrWord::Word(w)) => match w.as_str() {
            "Infinity" | "inf" => Ok(Some(f64::INFINITY)),
            "-Infinity" | "-inf" => Ok(Some(f64::NEG_INFINITY)),
            "NaN" | "nan" => Ok(Some(f64::NAN)),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, found the string {other:?}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_non_finite_floats_parse() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
                "note": "a string with -Infinity inside"}"#,
        )
        .unwrap();
        assert_eq!(cfg.lambda_min_clipped, Some(f64::NEG_INFINITY));
    }

    #[test]
    fn malformed_field_is_named() {
        let err = SchedulerConfig::from_json_str(r#"{"num_train_timesteps": "many"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("num_train_timesteps"), "{err}");
        let err = SchedulerConfig::from_json_str(r#"{"beta_schedule": "cubic"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("beta_schedule") && err.contains("cubic"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_nulls_are_tolerated() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DDIMScheduler", "trained_betas": null, "skip_prk_steps": true}"#,
        )
        .unwrap();
        assert_eq!(cfg.class_name.as_deref(), Some("DDIMScheduler"));
        assert!(cfg.trained_betas.is_none());
    }
}
