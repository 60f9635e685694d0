//! Diffusion denoising schedulers on Candle tensors, each equal to its diffusers class.
//!
//! Every solver implements one object-safe trait, [`Scheduler`], so a pipeline holds a
//! `Box<dyn Scheduler>` and swaps solvers the way diffusers' `from_config` does: the training
//! constants come from the model's `scheduler_config.json`, everything else from the chosen
//! solver's defaults.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use diffsr_schedulers::{SchedulerConfig, SchedulerKind, SolverOptions};
//!
//! let config = SchedulerConfig::x4_upscaler();
//! let mut solver = SchedulerKind::DpmPp2mKarras.build(&config, 20, &SolverOptions::default())?;
//! let mut x = Tensor::ones((1, 4, 8, 8), candle_core::DType::F32, &Device::Cpu)?
//!     .affine(solver.init_noise_sigma(), 0.0)?;
//! for i in 0..solver.num_inference_steps() {
//!     let input = solver.scale_model_input(&x, i)?;
//!     let model_output = input.affine(0.5, 0.0)?; // a stand-in for the UNet
//!     x = solver.step(i, &model_output, &x, None)?.prev_sample;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
pub mod error;
mod euler;
mod euler_ancestral;
mod kind;
mod multistep_schedule;
pub mod noise_schedule;
pub mod numpy_compat;
mod prediction;
mod scheduler;
pub mod sigmas;
pub mod timesteps;
mod unipc;

pub use config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use dpm_solver::DpmSolverMultistep;
pub use error::{Result, SchedulerError};
pub use euler::EulerDiscrete;
pub use euler_ancestral::EulerAncestral;
pub use kind::{build_from_config, SchedulerKind, SolverOptions};
pub use noise_schedule::NoiseSchedule;
pub use scheduler::{Scheduler, StepOutput};
pub use unipc::UniPcMultistep;
