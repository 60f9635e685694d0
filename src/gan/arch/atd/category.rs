//! ATD's adaptive category-based attention (spandrel 0.4.2
//! `architectures/ATD/__arch/atd_arch.py`, `AC_MSA`): every token's category is its most
//! similar dictionary entry (argmax of `sim`); the tokens are sorted by category (torch's
//! order, [`super::torch_sort`]), cut into groups of `min(N, category_size)` (the last group
//! filled with the sorted tail flipped), and attend within their group per head with the
//! logits q kᵀ · exp(min(logit_scale, ln 100)); the results go back to image order and
//! through `proj`.
//!
//! The argmax leaves the device (N integers per layer) for the sort; the gathers are
//! `index_select`s on the device.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::Module;

use super::dictionary::linear_opt;
use super::torch_sort::torch_sort_indices;
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::linear::Linear;

#[derive(Debug, Clone)]
pub(super) struct CategoryAttention {
    heads: usize,
    category_size: usize,
    /// exp(min(logit_scale, ln 100)).
    logit_scale: f64,
    proj: Linear,
}

/// The tokens of each group: image-order token indices (over the flattened batch) in sorted
/// order with the flipped tail, and for each token its row among them (the reverse
/// permutation, over the flattened groups).
fn orders(categories: &[Vec<u32>], n: usize, padded: usize) -> (Vec<u32>, Vec<u32>) {
    let b = categories.len();
    let (mut gather, mut scatter) = (Vec::with_capacity(b * padded), vec![0u32; b * n]);
    for (bi, keys) in categories.iter().enumerate() {
        let perm = torch_sort_indices(keys);
        let base = (bi * n) as u32;
        gather.extend(perm.iter().map(|&i| base + i));
        gather.extend(perm[n - (padded - n)..].iter().rev().map(|&i| base + i));
        for (pos, &i) in perm.iter().enumerate() {
            scatter[bi * n + i as usize] = (bi * padded + pos) as u32;
        }
    }
    (gather, scatter)
}

impl CategoryAttention {
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        dim: usize,
        heads: usize,
        category_size: usize,
        bias: bool,
    ) -> Result<Self> {
        let raw = w
            .get(&format!("{prefix}.logit_scale"), &[1, 1])?
            .to_dtype(DType::F64)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        // The reference clamps at torch.log(torch.tensor(100.0)), a float32.
        let max = f64::from(100f32.ln());
        let logit_scale = raw.first().copied().unwrap_or(0.0).min(max).exp();
        Ok(Self {
            heads,
            category_size,
            logit_scale,
            proj: linear_opt(w, &format!("{prefix}.proj"), dim, dim, bias)?,
        })
    }

    /// qkv (B, N, 3C), sim (B, N, m) → (B, N, C).
    pub(super) fn forward(&self, qkv: &Tensor, sim: &Tensor) -> Result<Tensor> {
        let (b, n, c3) = qkv.dims3()?;
        let c = c3 / 3;
        let heads = self.heads;
        let d = c / heads;
        let gs = n.min(self.category_size).max(1);
        let ng = n.div_ceil(gs);
        let padded = ng * gs;
        let categories: Vec<Vec<u32>> = sim
            .argmax(D::Minus1)?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::U32)?
            .to_vec2()?;
        let (gather, scatter) = orders(&categories, n, padded);
        let dev = qkv.device();
        let gather = Tensor::from_vec(gather, b * padded, dev)?;
        let scatter = Tensor::from_vec(scatter, b * n, dev)?;
        let grouped = qkv
            .reshape((b * n, c3))?
            .index_select(&gather, 0)?
            .reshape((b, ng, gs, 3, heads, d))?
            .permute((3, 0, 1, 4, 2, 5))?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(grouped
                .get(i)?
                .contiguous()?
                .reshape((b * ng * heads, gs, d))?)
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = (q.matmul(&k.transpose(1, 2)?.contiguous()?)? * self.logit_scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs
            .matmul(&v)?
            .reshape((b, ng, heads, gs, d))?
            .permute((0, 1, 3, 2, 4))?
            .contiguous()?
            .reshape((b * padded, c))?
            .index_select(&scatter, 0)?
            .reshape((b, n, c))?;
        Ok(self.proj.forward(&y)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_padded_with_the_flipped_tail_and_scattered_back() {
        // Keys already sorted: the permutation is the identity.
        let cats = vec![vec![0u32, 1, 2, 3, 4], vec![0, 1, 2, 3, 4]];
        let (gather, scatter) = orders(&cats, 5, 6);
        assert_eq!(gather, [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 9]);
        assert_eq!(scatter, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
        let cats = vec![vec![2u32, 0, 1]];
        let (gather, scatter) = orders(&cats, 3, 4);
        assert_eq!(gather, [1, 2, 0, 0]);
        assert_eq!(scatter, [2, 0, 1]);
    }
}
