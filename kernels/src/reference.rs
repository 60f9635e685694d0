//! f64 references the kernels' unit tests compare against (tests only).

/// erf(x) = 2/√π ∫₀ˣ e^{-t²} dt by composite Simpson with 4000 panels (Abramowitz–Stegun's
/// closed forms are too coarse for a reference).
pub(crate) fn erf64(x: f64) -> f64 {
    let n = 4000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(i as f64 * h);
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

/// The erf form of GELU, x·Φ(x), in f64.
pub(crate) fn gelu64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf64(x / 2f64.sqrt()))
}
