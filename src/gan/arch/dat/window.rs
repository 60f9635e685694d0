//! One window orientation of DAT's spatial attention (spandrel 0.4.2
//! `architectures/DAT/__arch/DAT.py`, `Spatial_Attention`): the map is cut into h_sp × w_sp
//! windows, and within each window every token attends to every token per head, with the
//! dynamic relative position bias and, for shifted windows, the region mask added to the
//! scores.
//!
//! q, k and v are partitioned together by a single permuting copy into (3, windows × heads,
//! N, head_dim); all windows and heads then go through one batched matmul for the scores and
//! one for the output (on the CPU in f32, one per chunk of slices, the chunks spread over the
//! threads: see [`WindowAttention::attend_cpu`]). On the CPU in f32 the bias and the mask are
//! added to the scores in place, the mask only on the windows whose tokens come from
//! different regions (the last window row and column of a shifted map).

use candle_core::{CpuStorage, DType, Layout, Tensor};
use rayon::prelude::*;

use super::mask::{ShiftLabels, MASKED};
use super::pos_bias::window_bias;
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::cpu_dispatch::on_cpu_f32;
use crate::models::layers::softmax::softmax_last_dim;

/// One orientation's windows, heads and position bias.
pub(super) struct WindowAttention {
    /// Window rows and columns.
    h_sp: usize,
    w_sp: usize,
    heads: usize,
    /// (heads, N, N) in the model's dtype and device.
    bias: Tensor,
    /// The same as f32 host values when the model runs on the CPU in f32 (the in-place add).
    bias_host: Option<Vec<f32>>,
}

impl WindowAttention {
    /// The orientation under `prefix` (`…attn.attns.{idx}`): `h_sp` × `w_sp` windows, `heads`
    /// heads, a position-bias MLP `pos_dim` wide.
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        (h_sp, w_sp): (usize, usize),
        heads: usize,
        pos_dim: usize,
    ) -> Result<Self> {
        let bias = window_bias(w, &format!("{prefix}.pos"), (h_sp, w_sp), pos_dim, heads)?;
        let bias_host = (bias.device().is_cpu() && bias.dtype() == DType::F32)
            .then(|| bias.flatten_all()?.to_vec1::<f32>())
            .transpose()?;
        Ok(Self {
            h_sp,
            w_sp,
            heads,
            bias,
            bias_host,
        })
    }

    pub(super) fn window(&self) -> (usize, usize) {
        (self.h_sp, self.w_sp)
    }

    /// Orientation `branch`'s attention output (B, Hp, Wp, C) from qkv (B, Hp, Wp, 3, K, C),
    /// which holds the q (already scaled), k and v of K orientations side by side (Hp, Wp
    /// multiples of the window); `labels` the region labels of a shifted map. Reading the
    /// branch inside the partitioning copy spares a copy of the unshifted q, k, v.
    pub(super) fn forward(
        &self,
        qkv: &Tensor,
        branch: usize,
        labels: Option<&ShiftLabels>,
    ) -> Result<Tensor> {
        let dims = qkv.dims();
        let [b, hp, wp, three, branches, c] = dims else {
            return Err(candle_core::Error::Msg(format!("window attention input {dims:?}")).into());
        };
        let (b, hp, wp, three, branches, c) = (*b, *hp, *wp, *three, *branches, *c);
        let (h_sp, w_sp, heads) = (self.h_sp, self.w_sp, self.heads);
        let (nh, nw) = (hp / h_sp, wp / w_sp);
        let (n, hd) = (h_sp * w_sp, c / heads);
        let windows = nh * nw;
        let groups = b * windows * heads;
        // (B·nh, h_sp, nw, w_sp, 3, K, heads, hd), branch k
        //   → (3, B·nh, nw, heads, h_sp, w_sp, 1, hd)
        let parts = qkv
            .reshape(vec![b * nh, h_sp, nw, w_sp, three, branches, heads, hd])?
            .narrow(5, branch, 1)?
            .permute([4, 0, 2, 6, 1, 3, 5, 7])?
            .contiguous()?
            .reshape((three, groups, n, hd))?;
        let (q, k, v) = (parts.get(0)?, parts.get(1)?, parts.get(2)?);
        let out = match &self.bias_host {
            Some(bias) if q.device().is_cpu() && q.dtype() == DType::F32 => {
                self.attend_cpu(bias, [&q, &k, &v], labels)?
            }
            _ => {
                let scores = q.matmul(&k.t()?)?;
                let scores = self.add_bias_and_mask(scores, labels, (b, windows))?;
                softmax_last_dim(&scores)?.matmul(&v)?
            }
        };
        // (B·nh, nw, heads, h_sp, w_sp, hd) → (B·nh, h_sp, nw, w_sp, heads, hd)
        Ok(out
            .reshape(vec![b * nh, nw, heads, h_sp, w_sp, hd])?
            .permute([0, 3, 1, 4, 2, 5])?
            .contiguous()?
            .reshape((b, hp, wp, c))?)
    }

    /// softmax(q kᵀ + bias + mask) v on the CPU in f32, for q, k, v (windows·heads, N, hd):
    /// candle's batched matmul runs its slices one after another, each too small to spread
    /// over threads, so the slices are cut into a few chunks per thread, each chunk one
    /// batched matmul for the scores, the bias and mask added in place, a single-threaded
    /// softmax and one batched matmul for the output, the chunks spread over the threads. Only
    /// the chunks in flight hold scores, not the whole map's.
    fn attend_cpu(
        &self,
        bias: &[f32],
        [q, k, v]: [&Tensor; 3],
        labels: Option<&ShiftLabels>,
    ) -> Result<Tensor> {
        let n = self.h_sp * self.w_sp;
        let groups = q.dim(0)?;
        let per = groups.div_ceil(4 * rayon::current_num_threads()).max(1);
        let chunks: Vec<Tensor> = (0..groups.div_ceil(per))
            .into_par_iter()
            .map(|c| -> Result<Tensor> {
                let (first, len) = (c * per, per.min(groups - c * per));
                let scores = q
                    .narrow(0, first, len)?
                    .matmul(&k.narrow(0, first, len)?.t()?)?;
                scores.inplace_op1(&AddBiasMask {
                    bias,
                    labels,
                    heads: self.heads,
                    tokens: n,
                    first,
                })?;
                let probs = on_cpu_f32([&scores], [], scores.shape(), |[x], []| {
                    diffsr_kernels::softmax::softmax_last_dim(x, n, 1)
                })?
                .ok_or_else(|| candle_core::Error::Msg("f32 CPU scores expected".into()))?;
                Ok(probs.matmul(&v.narrow(0, first, len)?)?)
            })
            .collect::<Result<_>>()?;
        Ok(Tensor::cat(&chunks, 0)?)
    }

    /// scores (B·windows·heads, N, N) + bias (per head) + mask (per window), in tensor ops
    /// (the path of other devices and dtypes).
    fn add_bias_and_mask(
        &self,
        scores: Tensor,
        labels: Option<&ShiftLabels>,
        (b, windows): (usize, usize),
    ) -> Result<Tensor> {
        let n = self.h_sp * self.w_sp;
        let heads = self.heads;
        let scores = scores
            .reshape((b * windows, heads, n, n))?
            .broadcast_add(&self.bias)?;
        let scores = match labels {
            Some(l) => scores.reshape((b, windows, heads, n, n))?.broadcast_add(
                &l.matrix(scores.dtype(), scores.device())?
                    .reshape((1, windows, 1, n, n))?,
            )?,
            None => scores,
        };
        Ok(scores.reshape((b * windows * heads, n, n))?)
    }
}

/// scores += bias[head] (+ −100 between tokens of different regions), in place, for
/// contiguous f32 scores on the CPU: (count, N, N) blocks of slices `first`, `first + 1`, …
/// of (B·windows·heads) (slice g is head g mod heads of window (g / heads) mod windows).
struct AddBiasMask<'a> {
    bias: &'a [f32],
    labels: Option<&'a ShiftLabels>,
    heads: usize,
    tokens: usize,
    first: usize,
}

impl candle_core::InplaceOp1 for AddBiasMask<'_> {
    fn name(&self) -> &'static str {
        "dat-window-bias-mask"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{}: f32 scores expected", self.name());
        };
        let nn = self.tokens * self.tokens;
        let len = layout.shape().elem_count();
        let (start, end) = match layout.contiguous_offsets() {
            Some(range) if range.1 - range.0 == len => range,
            _ => candle_core::bail!("{}: contiguous scores expected", self.name()),
        };
        if nn == 0 || len % nn != 0 || self.bias.len() != self.heads * nn {
            candle_core::bail!("{}: scores do not match the bias", self.name());
        }
        let n = self.tokens;
        data[start..end]
            .chunks_exact_mut(nn)
            .zip(self.first..)
            .for_each(|(block, g)| {
                let head = g % self.heads;
                for (s, b) in block.iter_mut().zip(&self.bias[head * nn..][..nn]) {
                    *s += b;
                }
                let Some(l) = self.labels else { return };
                let window = (g / self.heads) % l.windows;
                if !l.mixed[window] {
                    return;
                }
                let labels = &l.labels[window * n..][..n];
                for (row, &li) in block.chunks_exact_mut(n).zip(labels) {
                    for (s, &lj) in row.iter_mut().zip(labels) {
                        if lj != li {
                            *s += MASKED;
                        }
                    }
                }
            });
        Ok(())
    }
}
