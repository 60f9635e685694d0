//! RGT's recursive-generalization self-attention, the reference's `RG_SA` (spandrel 0.4.2
//! `architectures/RGT/__arch/rgt.py`): the map is reduced by a depthwise 4×4, stride-4 conv
//! applied `t` times (the same weights each time; `t` from the map's size, at least 2), mixed
//! by a depthwise 3×3 and a 1×1 conv to `cr` channels, normed and GELU'd; every pixel's query
//! then attends over that small map's keys and values (the values plus a depthwise 3×3
//! positional conv, `cpe`), per head, and `proj` mixes the result.
//!
//! The maps stay in token layout throughout (the 1×1 conv is a linear layer over channels);
//! the attention is the project's memory-bounded one, its score chunks within the same
//! per-pixel allowance as the window attention's.

use candle_core::Tensor;
use candle_nn::Module;

use super::config::SCORE_FLOATS_PER_PIXEL;
use super::depthwise::{Depthwise, Epilogue};
use crate::error::{Error, Result};
use crate::gan::arch::Weights;
use crate::models::layers::geglu::gelu_erf;
use crate::models::layers::layer_norm::layer_norm;
use crate::models::layers::linear::Linear;
use crate::models::layers::sdpa::scaled_dot_product_attention;

/// nn.LayerNorm's default epsilon.
const EPS: f32 = 1e-5;

/// The reference's recursion count at inference: `max(int(log4(h // 16)), int(log4(w // 16)))`,
/// at least 2, with Python's `math.log(x, 4)` (log x / log 4 in f64). `None` below 16, where
/// the reference's logarithm fails.
pub(super) fn recursions(h: usize, w: usize) -> Option<usize> {
    let steps = |n: usize| -> Option<usize> {
        let m = n / 16;
        (m > 0).then(|| ((m as f64).ln() / 4f64.ln()) as usize)
    };
    Some(steps(h)?.max(steps(w)?).max(2))
}

pub(super) struct RgSa {
    reduction1: Depthwise,
    dwconv: Depthwise,
    /// The 1×1 conv to `cr` channels, as a linear layer over the token channels.
    conv: Linear,
    norm: (Tensor, Tensor),
    q: Linear,
    k: Linear,
    v: Linear,
    cpe: Depthwise,
    proj: Linear,
    heads: usize,
    scale: f64,
}

impl RgSa {
    /// Block `prefix` (`layers.G.blocks.J.attn`) of `dim` channels reduced to `cr`, `heads`
    /// heads, `c_ratio` as detected.
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        dim: usize,
        cr: usize,
        heads: usize,
        c_ratio: f64,
        qkv_bias: bool,
    ) -> Result<Self> {
        let get = |name: &str, shape: &[usize]| w.get(&format!("{prefix}.{name}"), shape);
        let linear = |name: &str, o: usize, i: usize| -> Result<Linear> {
            let bias = if qkv_bias {
                Some(get(&format!("{name}.bias"), &[o])?)
            } else {
                None
            };
            Ok(Linear::new(get(&format!("{name}.weight"), &[o, i])?, bias))
        };
        let conv = get("conv.weight", &[cr, dim, 1, 1])?.reshape((cr, dim))?;
        // The reference's `(dim // heads · c_ratio) ** -0.5`.
        let scale = ((dim / heads) as f64 * c_ratio).powf(-0.5);
        Ok(Self {
            reduction1: Depthwise::new(w, &format!("{prefix}.reduction1"), dim, 4, 4, 0)?,
            dwconv: Depthwise::same3x3(w, &format!("{prefix}.dwconv"), dim)?,
            conv: Linear::new(conv, Some(get("conv.bias", &[cr])?)),
            norm: (
                get("norm_act.0.weight", &[cr])?,
                get("norm_act.0.bias", &[cr])?,
            ),
            q: linear("q", cr, dim)?,
            k: linear("k", cr, cr)?,
            v: linear("v", dim, cr)?,
            cpe: Depthwise::same3x3(w, &format!("{prefix}.cpe"), dim)?,
            proj: Linear::new(
                get("proj.weight", &[dim, dim])?,
                Some(get("proj.bias", &[dim])?),
            ),
            heads,
            scale,
        })
    }

    /// `proj(attention) + residual` for the normed tokens x (B, h·w, dim).
    pub(super) fn forward_add(
        &self,
        x: &Tensor,
        (h, w): (usize, usize),
        residual: &Tensor,
    ) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        let times = recursions(h, w).ok_or_else(|| {
            Error::option(
                "image",
                format!("RGT takes sides of at least 16 pixels, not {h}x{w}"),
            )
        })?;
        // The recursive reduction, then the mix to `cr` channels.
        let (mut rh, mut rw) = (h, w);
        let mut reduced = x.clone();
        for _ in 0..times {
            let (Some(nh), Some(nw)) = (self.reduction1.out_side(rh), self.reduction1.out_side(rw))
            else {
                return Err(Error::option(
                    "image",
                    format!(
                        "RGT reduces a {h}x{w} map {times} times by 4 in RG-SA; its shorter side \
                         is too short for that (as in the reference)"
                    ),
                ));
            };
            reduced = self
                .reduction1
                .forward(&reduced, 0, (rh, rw), Epilogue::None)?;
            (rh, rw) = (nh, nw);
        }
        let mixed = self.dwconv.forward(&reduced, 0, (rh, rw), Epilogue::None)?;
        drop(reduced);
        let kv = gelu_erf(&layer_norm(
            &self.conv.forward(&mixed)?,
            &self.norm.0,
            &self.norm.1,
            EPS,
        )?)?;
        drop(mixed);
        let keys = rh * rw;
        let v = self.v.forward(&kv)?;
        let v = self.cpe.forward(&v, 0, (rh, rw), Epilogue::Add(&v))?;
        let k = self.k.forward(&kv)?;
        let q = self.q.forward(x)?;
        // Heads out of the channels: (B · heads, tokens, width / heads).
        let heads = self.heads;
        let split = |t: &Tensor, tokens: usize| -> Result<Tensor> {
            let width = t.dim(2)?;
            Ok(t.reshape((b, tokens, heads, width / heads))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * heads, tokens, width / heads))?)
        };
        let budget = b * l * SCORE_FLOATS_PER_PIXEL * x.dtype().size_in_bytes().max(4);
        let out = scaled_dot_product_attention(
            &split(&q, l)?,
            &split(&k, keys)?,
            &split(&v, keys)?,
            self.scale,
            false,
            budget,
        )?;
        let out = out
            .reshape((b, heads, l, c / heads))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, l, c))?;
        Ok(self.proj.forward_add(&out, residual)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's `max(int(math.log(h // 16, 4)), int(math.log(w // 16, 4)))` floored at 2,
    /// computed with the fixture venv's Python for these sides.
    #[test]
    fn recursions_match_pythons_logarithms() {
        for (h, w, want) in [
            (16, 16, 2),
            (35, 33, 2),
            (1023, 64, 2),
            (1024, 16, 3),
            (16, 4095, 3),
            (4096, 4096, 4),
            (16384, 20, 5),
            (65536, 16, 6),
        ] {
            assert_eq!(recursions(h, w), Some(want), "{h}x{w}");
        }
        assert_eq!(recursions(15, 100), None);
    }
}
