//! The trait contract every solver keeps, checked weight-free for all of them: errors instead
//! of panics on bad calls, noise exactly when asked for, reruns after `reset` reproduce.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use diffsr_schedulers::{
    build_from_config, Scheduler, SchedulerConfig, SchedulerError, SchedulerKind, SolverOptions,
};

fn sample() -> Result<Tensor> {
    Ok(Tensor::arange(0f32, 32.0, &Device::Cpu)?
        .affine(0.1, -1.6)?
        .reshape((1, 2, 4, 4))?)
}

fn build(kind: SchedulerKind, steps: usize) -> Result<Box<dyn Scheduler>> {
    Ok(kind.build(
        &SchedulerConfig::x4_upscaler(),
        steps,
        &SolverOptions::default(),
    )?)
}

/// Runs a whole loop with a simple model and deterministic noise.
fn run(solver: &mut dyn Scheduler) -> Result<Tensor> {
    let mut x = sample()?.affine(solver.init_noise_sigma(), 0.0)?;
    for i in 0..solver.num_inference_steps() {
        let input = solver.scale_model_input(&x, i)?;
        let output = input.affine(0.3, 0.0)?;
        let noise = solver
            .needs_noise(i)
            .then(|| sample().and_then(|s| Ok(s.affine(0.01 * i as f64, 0.0)?.sin()?)))
            .transpose()?;
        x = solver.step(i, &output, &x, noise.as_ref())?.prev_sample;
    }
    Ok(x)
}

#[test]
fn every_solver_runs_and_reruns_identically_after_reset() -> Result<()> {
    for kind in SchedulerKind::ALL {
        let mut solver = build(kind, 12)?;
        assert_eq!(solver.kind(), kind);
        assert_eq!(solver.timesteps().len(), solver.num_inference_steps());
        let first = run(solver.as_mut())?;
        solver.reset();
        let second = run(solver.as_mut())?;
        let diff = (&first - &second)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{kind}: rerun after reset differs");
        let finite = first
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite());
        assert!(finite, "{kind}: non-finite result");
    }
    Ok(())
}

#[test]
fn stochastic_solvers_refuse_to_step_without_noise() -> Result<()> {
    for kind in [
        SchedulerKind::Ddpm,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmPp2mSde,
    ] {
        let mut solver = build(kind, 5)?;
        assert!(
            solver.needs_noise(0),
            "{kind} should ask for noise at step 0"
        );
        let x = sample()?;
        let err = solver.step(0, &x, &x, None).unwrap_err();
        assert!(
            matches!(
                err,
                SchedulerError::InvalidArgument {
                    argument: "noise",
                    ..
                }
            ),
            "{kind}: {err}"
        );
        let wrong = Tensor::zeros((1, 2, 4, 5), DType::F32, &Device::Cpu)?;
        let err = solver.step(0, &x, &x, Some(&wrong)).unwrap_err();
        assert!(err.to_string().contains("shape"), "{kind}: {err}");
    }
    let eta = SchedulerKind::Ddim.build(
        &SchedulerConfig::x4_upscaler(),
        5,
        &SolverOptions { eta: 0.5 },
    )?;
    assert!(eta.needs_noise(0));
    assert!(!build(SchedulerKind::Ddim, 5)?.needs_noise(0));
    Ok(())
}

#[test]
fn bad_calls_are_errors_not_panics() -> Result<()> {
    let x = sample()?;
    let other = Tensor::zeros((1, 2, 4, 5), DType::F32, &Device::Cpu)?;
    for kind in SchedulerKind::ALL {
        let mut solver = build(kind, 3)?;
        assert!(solver.scale_model_input(&x, 3).is_err(), "{kind}");
        assert!(
            solver.step(3, &x, &x, Some(&x)).is_err(),
            "{kind}: step past the end"
        );
        assert!(
            solver.step(0, &other, &x, Some(&x)).is_err(),
            "{kind}: shape mismatch"
        );
        assert!(build(kind, 0).is_err(), "{kind}: zero steps");
        assert!(
            build(kind, 1001).is_err(),
            "{kind}: more steps than training timesteps"
        );
    }
    Ok(())
}

#[test]
fn config_class_names_pick_the_solver() -> Result<()> {
    let cases = [
        (r#"{"_class_name": "DDIMScheduler"}"#, SchedulerKind::Ddim),
        (
            r#"{"_class_name": "EulerAncestralDiscreteScheduler"}"#,
            SchedulerKind::EulerAncestral,
        ),
        (
            r#"{"_class_name": "DPMSolverMultistepScheduler"}"#,
            SchedulerKind::DpmPp2m,
        ),
        (
            r#"{"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true}"#,
            SchedulerKind::DpmPp2mKarras,
        ),
        (
            r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}"#,
            SchedulerKind::DpmPp2mSde,
        ),
        (
            r#"{"_class_name": "UniPCMultistepScheduler"}"#,
            SchedulerKind::UniPc,
        ),
    ];
    for (json, kind) in cases {
        let config = SchedulerConfig::from_json_str(json)?;
        assert_eq!(SchedulerKind::from_config(&config)?, kind, "{json}");
        let solver = build_from_config(&config, 10, &SolverOptions::default())?;
        assert_eq!(solver.kind(), kind, "{json}");
    }
    let unknown = SchedulerConfig::from_json_str(r#"{"_class_name": "LMSDiscreteScheduler"}"#)?;
    let err = SchedulerKind::from_config(&unknown)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LMSDiscreteScheduler") && err.contains("DDIMScheduler"),
        "{err}"
    );
    let missing = SchedulerConfig::from_json_str("{}")?;
    let err = SchedulerKind::from_config(&missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("_class_name"), "{err}");
    Ok(())
}

#[test]
fn swapping_solvers_keeps_the_training_constants() -> Result<()> {
    // The x4 config says leading spacing with offset 1: every solver swapped in keeps it,
    // as diffusers' `from_config` does.
    let euler = build(SchedulerKind::Euler, 4)?;
    assert_eq!(euler.timesteps(), &[751.0, 501.0, 251.0, 1.0]);
    // Without a spacing in the config, Euler falls back to its own default (linspace).
    let bare = SchedulerConfig::from_json_str(r#"{"_class_name": "DDIMScheduler"}"#)?;
    let euler = SchedulerKind::Euler.build(&bare, 4, &SolverOptions::default())?;
    assert_eq!(euler.timesteps(), &[999.0, 666.0, 333.0, 0.0]);
    Ok(())
}

#[test]
fn unsupported_options_are_refused_by_name() -> Result<()> {
    let cases = [
        (
            r#"{"thresholding": true}"#,
            SchedulerKind::Ddim,
            "thresholding",
        ),
        (
            r#"{"variance_type": "learned_range"}"#,
            SchedulerKind::Ddpm,
            "variance_type",
        ),
        (
            r#"{"use_exponential_sigmas": true}"#,
            SchedulerKind::Euler,
            "use_exponential_sigmas",
        ),
        (
            r#"{"interpolation_type": "log_linear"}"#,
            SchedulerKind::Euler,
            "interpolation_type",
        ),
    ];
    for (json, kind, field) in cases {
        let config = SchedulerConfig::from_json_str(json)?;
        let err = kind
            .build(&config, 10, &SolverOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(field), "{kind} with {json}: {err:?}");
    }
    Ok(())
}

#[test]
fn add_noise_is_the_forward_process() -> Result<()> {
    // DDPM's add_noise is the x4 upscaler's noise augmentation: sqrt(ᾱ) x + sqrt(1-ᾱ) ε.
    let ddpm = SchedulerKind::Ddpm.build(
        &SchedulerConfig::x4_upscaler_low_res(),
        1,
        &SolverOptions::default(),
    )?;
    let x = sample()?;
    let noise = x.sin()?;
    let noised = ddpm.add_noise(&x, &noise, 20.0)?;
    let schedule =
        diffsr_schedulers::NoiseSchedule::from_config(&SchedulerConfig::x4_upscaler_low_res())?;
    let a = schedule.alphas_cumprod[20] as f64;
    let expected = (x.affine(a.sqrt(), 0.0)? + noise.affine((1.0 - a).sqrt(), 0.0)?)?;
    let diff = (&noised - &expected)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(diff < 1e-6, "{diff}");
    assert!(ddpm.add_noise(&x, &noise, 1000.0).is_err());
    assert!(ddpm.add_noise(&x, &noise, 2.5).is_err());
    Ok(())
}
