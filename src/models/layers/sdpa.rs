//! Memory-bounded scaled dot-product attention: the maths of torch's
//! `F.scaled_dot_product_attention` as diffusers' `AttnProcessor2_0` calls it
//! (models/attention_processor.py), computed in pieces so that no score matrix larger than a
//! byte budget ever exists.
//!
//! The VAE's mid-block attention is single-head over every latent pixel: a 512x512 latent has
//! 262,144 tokens and a full score matrix would take 256 GiB. The routine therefore splits the
//! work, from cheapest to most fragmented, as [`plan_chunks`] decides:
//! 1. everything at once when it fits;
//! 2. whole (batch x head) slices, several at a time;
//! 3. rows of queries against all keys (exact softmax per row);
//! 4. when even one query row against all keys is over budget, key blocks combined with an
//!    online (running max / running sum) softmax, as flash attention does.
//!
//! Every path gives the one-shot result up to float rounding. Softmax runs in f32 for half
//! precision inputs; with `upcast` the scores themselves are computed in f32 too (diffusers'
//! `upcast_attention`).
//!
//! The budget bounds each score-shaped tensor (scores, probabilities), counted at the widest
//! dtype they take; at most two of them are alive at once (three for half precision, where the
//! probabilities are cast back for the product with v), so peak transient memory is a small
//! multiple of the budget, independent of the image size.

use candle_core::{DType, Tensor, D};

use super::attention_cpu::attention_f32;
use super::softmax::softmax_last_dim;
use crate::{Error, Result};

/// Default budget for one score matrix: 256 MiB.
pub const DEFAULT_MAX_SCORE_BYTES: usize = 256 << 20;

/// How [`scaled_dot_product_attention`] splits a problem of `n` (batch x head) slices, `lq`
/// queries and `lk` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPlan {
    /// All scores at once: (n, lq, lk).
    OneShot,
    /// `slices` (batch x head) slices at a time: (slices, lq, lk).
    Slices { slices: usize },
    /// `rows` queries of one slice at a time: (1, rows, lk).
    QueryRows { rows: usize },
    /// One query row against `keys` keys at a time, with an online softmax: (1, 1, keys).
    KeyBlocks { keys: usize },
}

impl ChunkPlan {
    /// Number of score elements of the largest block this plan materialises.
    pub fn block_elems(&self, n: usize, lq: usize, lk: usize) -> usize {
        match *self {
            ChunkPlan::OneShot => n * lq * lk,
            ChunkPlan::Slices { slices } => slices * lq * lk,
            ChunkPlan::QueryRows { rows } => rows * lk,
            ChunkPlan::KeyBlocks { keys } => keys,
        }
    }
}

/// Picks the least fragmented split whose score blocks fit in `max_score_bytes`, at
/// `elem_bytes` bytes per score (the widest dtype a score takes on its way through softmax).
/// A budget below one score still computes one score at a time.
pub fn plan_chunks(
    n: usize,
    lq: usize,
    lk: usize,
    elem_bytes: usize,
    max_score_bytes: usize,
) -> ChunkPlan {
    let row_bytes = lk.max(1) * elem_bytes;
    let rows = max_score_bytes / row_bytes;
    if rows >= n * lq {
        ChunkPlan::OneShot
    } else if lq > 0 && rows >= lq {
        ChunkPlan::Slices { slices: rows / lq }
    } else if rows >= 1 {
        ChunkPlan::QueryRows { rows }
    } else {
        ChunkPlan::KeyBlocks {
            keys: (max_score_bytes / elem_bytes).max(1),
        }
    }
}

/// softmax(q kᵀ · scale) v for q (n, lq, d), k (n, lk, d), v (n, lk, dv) -> (n, lq, dv) in q's
/// dtype, never materialising more than `max_score_bytes` of scores at once.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
    max_score_bytes: usize,
) -> Result<Tensor> {
    let (n, lq, d) = q.dims3()?;
    let (nk, lk, dk) = k.dims3()?;
    let (nv, lv, _) = v.dims3()?;
    if nk != n || nv != n || dk != d || lv != lk {
        return Err(Error::Tensor(candle_core::Error::Msg(format!(
            "attention shapes disagree: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        ))));
    }
    let out_dtype = q.dtype();
    // Softmax always runs in `wide` (f32 for half precision): f16 sums of thousands of
    // exponentials lose precision. `upcast` also takes the dot products to f32, where large
    // ones cannot overflow.
    let wide = match out_dtype {
        DType::F64 => DType::F64,
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    };
    let (q, k) = if upcast {
        (q.to_dtype(wide)?, k.to_dtype(wide)?)
    } else {
        (q.clone(), k.clone())
    };
    // Scaling q (n·lq·d values) is cheaper than scaling the scores (n·lq·lk).
    let q = q.affine(scale, 0.0)?;
    let elem_bytes = q.dtype().size_in_bytes().max(wide.size_in_bytes());
    let ctx = Ctx {
        wide,
        out_dtype,
        v_dtype: v.dtype(),
    };

    match plan_chunks(n, lq, lk, elem_bytes, max_score_bytes) {
        ChunkPlan::OneShot => ctx.exact(&q, &k, v),
        ChunkPlan::Slices { slices } => {
            let mut outs = Vec::with_capacity(n.div_ceil(slices));
            for start in (0..n).step_by(slices) {
                let len = slices.min(n - start);
                outs.push(ctx.exact(
                    &q.narrow(0, start, len)?,
                    &k.narrow(0, start, len)?,
                    &v.narrow(0, start, len)?,
                )?);
            }
            Ok(Tensor::cat(&outs, 0)?)
        }
        ChunkPlan::QueryRows { rows } => ctx.per_slice(n, &q, &k, v, |q, k, v| {
            let mut outs = Vec::with_capacity(lq.div_ceil(rows));
            for start in (0..lq).step_by(rows) {
                let len = rows.min(lq - start);
                outs.push(ctx.exact(&q.narrow(1, start, len)?, k, v)?);
            }
            Ok(Tensor::cat(&outs, 1)?)
        }),
        ChunkPlan::KeyBlocks { keys } => ctx.per_slice(n, &q, &k, v, |q, k, v| {
            let mut outs = Vec::with_capacity(lq);
            for row in 0..lq {
                outs.push(ctx.online(&q.narrow(1, row, 1)?, k, v, keys)?);
            }
            Ok(Tensor::cat(&outs, 1)?)
        }),
    }
}

/// Dtypes shared by the pieces of one attention call.
struct Ctx {
    /// Softmax dtype (f32, or f64 for f64 inputs).
    wide: DType,
    out_dtype: DType,
    v_dtype: DType,
}

impl Ctx {
    /// Exact attention of a block whose scores fit the budget.
    fn exact(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        if let Some(out) = attention_f32(q, k, v, false)? {
            return Ok(out.to_dtype(self.out_dtype)?);
        }
        let scores = q.matmul(&k.t()?)?.to_dtype(self.wide)?;
        let probs = softmax_last_dim(&scores)?;
        drop(scores);
        Ok(probs
            .to_dtype(self.v_dtype)?
            .matmul(v)?
            .to_dtype(self.out_dtype)?)
    }

    /// Runs `f` on each (1, ·, ·) slice and stacks the results.
    fn per_slice(
        &self,
        n: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut outs = Vec::with_capacity(n);
        for i in 0..n {
            outs.push(f(
                &q.narrow(0, i, 1)?,
                &k.narrow(0, i, 1)?,
                &v.narrow(0, i, 1)?,
            )?);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// Attention of q (1, rows, d) over all keys, `keys` at a time, with a running max `m`,
    /// running denominator `l` and running numerator `acc` (rescaled whenever `m` grows).
    fn online(&self, q: &Tensor, k: &Tensor, v: &Tensor, keys: usize) -> Result<Tensor> {
        let lk = k.dim(1)?;
        let mut state: Option<(Tensor, Tensor, Tensor)> = None;
        for start in (0..lk).step_by(keys) {
            let len = keys.min(lk - start);
            let kb = k.narrow(1, start, len)?;
            let vb = v.narrow(1, start, len)?;
            let scores = q.matmul(&kb.t()?)?.to_dtype(self.wide)?;
            let block_max = scores.max_keepdim(D::Minus1)?;
            let m_new = match &state {
                None => block_max,
                Some((m, _, _)) => m.maximum(&block_max)?,
            };
            let p = scores.broadcast_sub(&m_new)?.exp()?;
            let p_sum = p.sum_keepdim(D::Minus1)?;
            let pv = p.to_dtype(self.v_dtype)?.matmul(&vb)?.to_dtype(self.wide)?;
            state = Some(match state {
                None => (m_new, p_sum, pv),
                Some((m, l, acc)) => {
                    let correction = (m - &m_new)?.exp()?;
                    let l = (l * &correction)?.add(&p_sum)?;
                    let acc = acc.broadcast_mul(&correction)?.add(&pv)?;
                    (m_new, l, acc)
                }
            });
        }
        match state {
            Some((_, l, acc)) => Ok(acc.broadcast_div(&l)?.to_dtype(self.out_dtype)?),
            None => Err(Error::Tensor(candle_core::Error::Msg(
                "attention over zero keys".into(),
            ))),
        }
    }
}
