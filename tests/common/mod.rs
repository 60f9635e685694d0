//! Helpers shared by the component parity tests.

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};

/// Checks max|Δ| ≤ rel·max(1, max|ref|) between `got` and the reference `want`, and prints both.
pub fn compare(name: &str, got: &Tensor, want: &Tensor, rel: f64) -> Result<()> {
    ensure!(
        got.dims() == want.dims(),
        "{name}: shape {:?} vs {:?}",
        got.dims(),
        want.dims()
    );
    let got = got.to_dtype(DType::F32)?;
    let want = want.to_dtype(DType::F32)?;
    let diff = (&got - &want)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()? as f64;
    let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
    let bound = rel * scale.max(1.0);
    println!("{name}: max|Δ| = {diff:.3e}, max|ref| = {scale:.4}, bound {bound:.1e}");
    ensure!(diff <= bound, "{name}: max|Δ| {diff:e} exceeds {bound:e}");
    Ok(())
}
