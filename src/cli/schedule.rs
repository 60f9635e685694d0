//! `diffsr schedulers` and `diffsr schedule`: the solvers and their timesteps.

use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;
use diffsr::schedule_report::{base_config, report};
use diffsr::schedulers::{PredictionType, SchedulerKind, SolverOptions};

use super::parse_kind;
use super::upscale::usage;

#[derive(clap::Args)]
pub struct ScheduleArgs {
    /// Solver name (see `diffsr schedulers`).
    #[arg(long, default_value = "ddim", value_parser = parse_kind)]
    scheduler: SchedulerKind,
    /// Number of denoising steps.
    #[arg(long, default_value_t = 75)]
    steps: usize,
    /// A `scheduler_config.json` to take the training constants from (default: the x4
    /// upscaler's).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the config's prediction type.
    #[arg(long, value_enum)]
    prediction_type: Option<PredictionArg>,
    /// DDIM's eta.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PredictionArg {
    Epsilon,
    VPrediction,
    Sample,
}

impl From<PredictionArg> for PredictionType {
    fn from(p: PredictionArg) -> Self {
        match p {
            PredictionArg::Epsilon => PredictionType::Epsilon,
            PredictionArg::VPrediction => PredictionType::VPrediction,
            PredictionArg::Sample => PredictionType::Sample,
        }
    }
}

/// Lists every solver with the diffusers class it reproduces.
pub fn list() {
    for kind in SchedulerKind::ALL {
        println!("{:<16} {}", kind.name(), kind.diffusers_class());
    }
}

pub fn run(args: ScheduleArgs) -> Result<()> {
    // Everything here comes from the arguments (a config file, a step count, η): a failure is
    // an argument error, exit code 2 as `upscale`'s.
    let config = base_config(args.config.as_deref()).map_err(usage)?;
    let options = SolverOptions { eta: args.eta };
    let r = report(
        args.scheduler,
        &config,
        args.prediction_type.map(Into::into),
        args.steps,
        &options,
    )
    .map_err(|e| {
        usage(format!(
            "building {} for {} steps: {e}",
            args.scheduler, args.steps
        ))
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("scheduler         {} ({})", r.scheduler, r.diffusers_class);
    println!("steps             {}", r.num_inference_steps);
    println!("order             {}", r.order);
    println!("init_noise_sigma  {}", r.init_noise_sigma);
    println!("timesteps         {:?}", r.timesteps);
    if let Some(sigmas) = &r.sigmas {
        println!("sigmas            {sigmas:?}");
    }
    Ok(())
}
