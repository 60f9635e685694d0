//! The few numpy routines diffusers' `set_timesteps` leans on, with numpy's exact arithmetic.
//!
//! Timesteps must equal the reference exactly, so `np.linspace`, float `np.arange`, `np.round`
//! (half to even) and `np.interp` are reproduced operation for operation.

/// `np.linspace(start, stop, num)` in f64 (endpoint included).
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// `np.arange(start, stop, step)` with float arguments: the length is
/// `ceil((stop - start) / step)` and element `i` is `start + i * delta`, where numpy's fill
/// routine takes `delta` as the difference of the first two elements.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if !(len.is_finite() && len > 0.0) {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.round`: to nearest, ties to even.
pub fn round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.interp(x, xp, fp)` for increasing `xp`, clamping outside the range.
pub fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let n = xp.len();
    if x <= xp[0] {
        return fp[0];
    }
    if x >= xp[n - 1] {
        return fp[n - 1];
    }
    // First index with xp[j] > x, as numpy's binary search finds it.
    let j = xp.partition_point(|&v| v <= x);
    let i = j - 1;
    if xp[i] == x {
        return fp[i];
    }
    let slope = (fp[j] - fp[i]) / (xp[j] - xp[i]);
    slope * (x - xp[i]) + fp[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_length_and_values_follow_numpy() {
        let v = arange(1000.0, 0.0, -1000.0 / 3.0);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], 1000.0);
        assert_eq!(round(v[2]), 333.0);
    }

    #[test]
    fn round_is_half_to_even() {
        assert_eq!(round(0.5), 0.0);
        assert_eq!(round(1.5), 2.0);
        assert_eq!(round(2.5), 2.0);
    }

    #[test]
    fn interp_matches_linear_pieces() {
        let xp = [0.0, 1.0, 2.0];
        let fp = [0.0, 10.0, 30.0];
        assert_eq!(interp(1.5, &xp, &fp), 20.0);
        assert_eq!(interp(-1.0, &xp, &fp), 0.0);
        assert_eq!(interp(5.0, &xp, &fp), 30.0);
        assert_eq!(interp(1.0, &xp, &fp), 10.0);
    }
}
