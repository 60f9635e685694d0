//! Solver names, the mapping from diffusers' `_class_name`, and the factory that builds a boxed
//! solver from any config (diffusers' `from_config`: keep the training constants, take the
//! target solver's defaults for what the config does not say).

use std::fmt;
use std::str::FromStr;

use crate::config::SchedulerConfig;
use crate::ddim::Ddim;
use crate::ddpm::Ddpm;
use crate::dpm_solver::DpmSolverMultistep;
use crate::error::{Result, SchedulerError};
use crate::euler::EulerDiscrete;
use crate::euler_ancestral::EulerAncestral;
use crate::scheduler::Scheduler;
use crate::unipc::UniPcMultistep;

/// The solvers this crate ships, each equal to the diffusers class named in its docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDIMScheduler`.
    Ddim,
    /// `DDPMScheduler`.
    Ddpm,
    /// `EulerDiscreteScheduler`.
    Euler,
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestral,
    /// `DPMSolverMultistepScheduler`, `algorithm_type` dpmsolver++, order 2.
    DpmPp2m,
    /// The same with `use_karras_sigmas`.
    DpmPp2mKarras,
    /// `DPMSolverMultistepScheduler`, `algorithm_type` sde-dpmsolver++, order 2.
    DpmPp2mSde,
    /// `UniPCMultistepScheduler`, bh2, order 2.
    UniPc,
}

impl SchedulerKind {
    /// Every solver, in the order the CLI lists them.
    pub const ALL: [SchedulerKind; 8] = [
        Self::Ddim,
        Self::Ddpm,
        Self::Euler,
        Self::EulerAncestral,
        Self::DpmPp2m,
        Self::DpmPp2mKarras,
        Self::DpmPp2mSde,
        Self::UniPc,
    ];

    /// The CLI name (`ddim`, `euler-a`, `dpmpp-2m-karras`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Ddpm => "ddpm",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler-a",
            Self::DpmPp2m => "dpmpp-2m",
            Self::DpmPp2mKarras => "dpmpp-2m-karras",
            Self::DpmPp2mSde => "dpmpp-2m-sde",
            Self::UniPc => "unipc",
        }
    }

    /// The diffusers class this solver reproduces.
    pub fn diffusers_class(self) -> &'static str {
        match self {
            Self::Ddim => "DDIMScheduler",
            Self::Ddpm => "DDPMScheduler",
            Self::Euler => "EulerDiscreteScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::DpmPp2m | Self::DpmPp2mKarras | Self::DpmPp2mSde => "DPMSolverMultistepScheduler",
            Self::UniPc => "UniPCMultistepScheduler",
        }
    }

    /// The solver a config's `_class_name` (and, for DPM-Solver, `algorithm_type` and
    /// `use_karras_sigmas`) describes.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let class = config.class_name.as_deref().ok_or_else(|| {
            SchedulerError::config(
                "_class_name",
                "is missing; cannot tell which solver to build",
            )
        })?;
        match class {
            "DDIMScheduler" => Ok(Self::Ddim),
            "DDPMScheduler" => Ok(Self::Ddpm),
            "EulerDiscreteScheduler" => Ok(Self::Euler),
            "EulerAncestralDiscreteScheduler" => Ok(Self::EulerAncestral),
            "UniPCMultistepScheduler" => Ok(Self::UniPc),
            "DPMSolverMultistepScheduler" => {
                match config.algorithm_type.as_deref().unwrap_or("dpmsolver++") {
                    "dpmsolver++" if config.use_karras_sigmas.unwrap_or(false) => {
                        Ok(Self::DpmPp2mKarras)
                    }
                    "dpmsolver++" => Ok(Self::DpmPp2m),
                    "sde-dpmsolver++" => Ok(Self::DpmPp2mSde),
                    other => Err(SchedulerError::config(
                        "algorithm_type",
                        format!(
                            "`{other}` is not supported; expected dpmsolver++ or sde-dpmsolver++"
                        ),
                    )),
                }
            }
            other => Err(SchedulerError::UnknownScheduler {
                name: other.to_string(),
                expected: Self::ALL
                    .iter()
                    .map(|k| k.diffusers_class())
                    .collect::<Vec<_>>()
                    .dedup_join(),
            }),
        }
    }

    /// The config this solver is built from: `base` with the settings the solver's name fixes
    /// (for example `dpmpp-2m-karras` forces dpmsolver++, order 2 and Karras sigmas).
    pub fn specialise(self, base: &SchedulerConfig) -> SchedulerConfig {
        let mut config = base.clone();
        config.class_name = Some(self.diffusers_class().to_string());
        match self {
            Self::DpmPp2m | Self::DpmPp2mKarras | Self::DpmPp2mSde => {
                config.solver_order = Some(2);
                config.algorithm_type = Some(
                    if self == Self::DpmPp2mSde {
                        "sde-dpmsolver++"
                    } else {
                        "dpmsolver++"
                    }
                    .to_string(),
                );
                config.use_karras_sigmas = Some(self == Self::DpmPp2mKarras);
            }
            Self::UniPc => {
                config.solver_order = Some(2);
                config.solver_type = Some("bh2".to_string());
            }
            _ => {}
        }
        config
    }

    /// Builds this solver from `base` (its own or another solver's config) for
    /// `num_inference_steps` steps.
    pub fn build(
        self,
        base: &SchedulerConfig,
        num_inference_steps: usize,
        options: &SolverOptions,
    ) -> Result<Box<dyn Scheduler>> {
        build_exact(self, &self.specialise(base), num_inference_steps, options)
    }
}

/// Builds the solver a config names by `_class_name`, honouring every setting it holds
/// (its own `solver_order`, `use_karras_sigmas`, ...).
pub fn build_from_config(
    config: &SchedulerConfig,
    num_inference_steps: usize,
    options: &SolverOptions,
) -> Result<Box<dyn Scheduler>> {
    let kind = SchedulerKind::from_config(config)?;
    build_exact(kind, config, num_inference_steps, options)
}

fn build_exact(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    steps: usize,
    options: &SolverOptions,
) -> Result<Box<dyn Scheduler>> {
    if options.eta != 0.0 && kind != SchedulerKind::Ddim {
        return Err(SchedulerError::argument(
            "eta",
            format!("only ddim takes eta; {} does not", kind.name()),
        ));
    }
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(Ddim::new(config, steps)?.with_eta(options.eta)?),
        SchedulerKind::Ddpm => Box::new(Ddpm::new(config, steps)?),
        SchedulerKind::Euler => Box::new(EulerDiscrete::new(config, steps)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestral::new(config, steps)?),
        SchedulerKind::DpmPp2m | SchedulerKind::DpmPp2mKarras | SchedulerKind::DpmPp2mSde => {
            Box::new(DpmSolverMultistep::new(config, steps)?)
        }
        SchedulerKind::UniPc => Box::new(UniPcMultistep::new(config, steps)?),
    })
}

/// Per-run solver settings that are not part of diffusers' config (they are `step` arguments
/// there).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SolverOptions {
    /// DDIM's η: 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling.
    pub eta: f64,
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = SchedulerError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| SchedulerError::UnknownScheduler {
                name: s.to_string(),
                expected: Self::ALL
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

trait DedupJoin {
    fn dedup_join(self) -> String;
}

impl DedupJoin for Vec<&str> {
    fn dedup_join(mut self) -> String {
        self.dedup();
        self.join(", ")
    }
}
