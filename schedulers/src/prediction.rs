//! Conversions between what a model predicts (ε, v or x₀) and the clean-sample / noise
//! estimates, for the ᾱ-parameterised solvers (DDIM, DDPM), with the reference's operation
//! order so that f32 results round the same way.
//!
//! The reference computes these coefficients on 0-d f32 tensors. Near t = 0, 1 - ᾱ is tiny and
//! the f32 cancellation is part of the result, so the coefficients are computed in f32 too.

use candle_core::Tensor;

use crate::config::PredictionType;
use crate::error::Result;

/// `(x₀, ε)` estimated from `model_output` at a timestep with cumulative alpha `alpha_prod`.
pub fn x0_and_eps(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod: f32,
) -> Result<(Tensor, Tensor)> {
    let sqrt_a = alpha_prod.sqrt() as f64;
    let sqrt_b = (1.0 - alpha_prod).sqrt() as f64;
    Ok(match prediction {
        PredictionType::Epsilon => {
            let x0 = (sample - model_output.affine(sqrt_b, 0.0)?)?.affine(1.0 / sqrt_a, 0.0)?;
            (x0, model_output.clone())
        }
        PredictionType::Sample => {
            let eps = (sample - model_output.affine(sqrt_a, 0.0)?)?.affine(1.0 / sqrt_b, 0.0)?;
            (model_output.clone(), eps)
        }
        PredictionType::VPrediction => {
            let x0 = (sample.affine(sqrt_a, 0.0)? - model_output.affine(sqrt_b, 0.0)?)?;
            let eps = (model_output.affine(sqrt_a, 0.0)? + sample.affine(sqrt_b, 0.0)?)?;
            (x0, eps)
        }
    })
}
