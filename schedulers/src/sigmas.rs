//! σ schedules, kept apart from the samplers that walk them (as stable-diffusion.cpp does):
//! the training σ table, Karras' ρ-schedule, and the σ → timestep inversion diffusers uses.

/// Karras et al. (2022) eq. 5 with ρ = 7: `n` sigmas from `sigma_max` down to `sigma_min`
/// (diffusers' `_convert_to_karras`, in f64).
pub fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / RHO);
    let max_inv_rho = sigma_max.powf(1.0 / RHO);
    crate::numpy_compat::linspace(0.0, 1.0, n)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose log-σ interpolates to
/// `sigma`. `log_sigmas` are the f32 logs of the training σ table, in timestep order.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // Index of the last log-σ not above log σ, clipped so that a right neighbour exists.
    let count = log_sigmas
        .iter()
        .filter(|&&l| log_sigma - l as f64 >= 0.0)
        .count();
    let low_idx = count.saturating_sub(1).min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx] as f64;
    let high = log_sigmas[high_idx] as f64;
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// The f32 natural logs of a σ table (`np.log` on an f32 array).
pub fn log_f32(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| (v as f64).ln() as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_spans_the_range() {
        let s = karras(0.03, 14.6, 10);
        assert!((s[0] - 14.6).abs() < 1e-12);
        assert!((s[9] - 0.03).abs() < 1e-12);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let sigmas: Vec<f32> = (0..10).map(|i| 0.1 * (i + 1) as f32).collect();
        let logs = log_f32(&sigmas);
        assert!((sigma_to_t(sigmas[3] as f64, &logs) - 3.0).abs() < 1e-6);
        assert_eq!(sigma_to_t(100.0, &logs), 9.0);
        assert_eq!(sigma_to_t(0.0, &logs), 0.0);
    }
}
