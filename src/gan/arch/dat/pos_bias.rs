//! The relative position bias of one window orientation (spandrel 0.4.2
//! `architectures/DAT/__arch/DAT.py`: `DynamicPosBias` with `residual=False`, and the
//! `rpe_biases` / `relative_position_index` tables of `Spatial_Attention`). The bias depends
//! on the weights alone, not on the image, so it is computed once at load: the MLP runs on
//! the host in f64 (as the reference's float64 forward) over the (2H−1)(2W−1) window offsets,
//! and its outputs are gathered into the (heads, N, N) table the scores receive.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::gan::arch::Weights;

/// `rpe_biases` of an `h` × `w` window: every offset (dy, dx), dy in 1−h..h, dx in 1−w..w,
/// row-major, as float pairs.
pub(super) fn offsets_table(h: usize, w: usize) -> Result<Tensor> {
    let mut v = Vec::with_capacity((2 * h - 1) * (2 * w - 1) * 2);
    for dy in 0..2 * h - 1 {
        for dx in 0..2 * w - 1 {
            v.push(dy as f32 - (h - 1) as f32);
            v.push(dx as f32 - (w - 1) as f32);
        }
    }
    let rows = v.len() / 2;
    Ok(Tensor::from_vec(v, (rows, 2), &Device::Cpu)?)
}

/// A linear layer's weight (out, in) and bias (out) as f64 host values.
struct HostLinear {
    weight: Vec<f64>,
    bias: Vec<f64>,
    inp: usize,
    out: usize,
}

/// The values of tensor `name` of `shape`, as f64 on the host.
fn host(w: &Weights, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
    let t = w.get(name, shape)?;
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

impl HostLinear {
    fn new(w: &Weights, prefix: &str, inp: usize, out: usize) -> Result<Self> {
        Ok(Self {
            weight: host(w, &format!("{prefix}.weight"), &[out, inp])?,
            bias: host(w, &format!("{prefix}.bias"), &[out])?,
            inp,
            out,
        })
    }

    fn forward(&self, x: &[f64]) -> Vec<f64> {
        (0..self.out)
            .map(|o| {
                let row = &self.weight[o * self.inp..(o + 1) * self.inp];
                self.bias[o] + row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect()
    }
}

/// `nn.LayerNorm(dim)` (eps 1e-5) then ReLU, as f64 host values.
struct HostNormRelu {
    weight: Vec<f64>,
    bias: Vec<f64>,
}

impl HostNormRelu {
    fn new(w: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: host(w, &format!("{prefix}.weight"), &[dim])?,
            bias: host(w, &format!("{prefix}.bias"), &[dim])?,
        })
    }

    fn forward(&self, x: &[f64]) -> Vec<f64> {
        let n = x.len().max(1) as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let inv = 1.0 / (var + 1e-5).sqrt();
        x.iter()
            .zip(self.weight.iter().zip(&self.bias))
            .map(|(v, (g, b))| ((v - mean) * inv * g + b).max(0.0))
            .collect()
    }
}

/// The (heads, N, N) bias of an `h` × `w` window (N = h·w) from the MLP under `prefix`
/// (`…attns.{idx}.pos`), in `w`'s dtype and device: entry (head, i, j) is the MLP's output
/// for the offset of token i from token j (`relative_position_index`).
pub(super) fn window_bias(
    w: &Weights,
    prefix: &str,
    (h, wd): (usize, usize),
    pos_dim: usize,
    heads: usize,
) -> Result<Tensor> {
    let proj = HostLinear::new(w, &format!("{prefix}.pos_proj"), 2, pos_dim)?;
    let stages = (1..=3)
        .map(|k| {
            let out = if k == 3 { heads } else { pos_dim };
            Ok((
                HostNormRelu::new(w, &format!("{prefix}.pos{k}.0"), pos_dim)?,
                HostLinear::new(w, &format!("{prefix}.pos{k}.2"), pos_dim, out)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    // pos3(pos2(pos1(pos_proj(offset)))) for every offset, row-major over (dy, dx).
    let cols = 2 * wd - 1;
    let mut table = Vec::with_capacity((2 * h - 1) * cols);
    for dy in 0..2 * h - 1 {
        for dx in 0..cols {
            let offset = [dy as f64 - (h - 1) as f64, dx as f64 - (wd - 1) as f64];
            let mut v = proj.forward(&offset);
            for (norm, linear) in &stages {
                v = linear.forward(&norm.forward(&v));
            }
            table.push(v);
        }
    }
    let n = h * wd;
    let mut bias = vec![0f32; heads * n * n];
    for i in 0..n {
        let (yi, xi) = (i / wd, i % wd);
        for j in 0..n {
            let (yj, xj) = (j / wd, j % wd);
            let index = (yi + h - 1 - yj) * cols + (xi + wd - 1 - xj);
            for (head, &value) in table[index].iter().enumerate() {
                bias[(head * n + i) * n + j] = value as f32;
            }
        }
    }
    Ok(Tensor::from_vec(bias, (heads, n, n), &Device::Cpu)?
        .to_dtype(w.dtype)?
        .to_device(w.device)?)
}
