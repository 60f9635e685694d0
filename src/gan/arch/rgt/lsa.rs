//! RGT's rectangle-window self-attention, the reference's `L_SA` (spandrel 0.4.2
//! `architectures/RGT/__arch/rgt.py`): one qkv projection, its channels split between two
//! [`WindowAttention`] branches (`split[0] × split[1]` windows, and the transpose), both
//! zero-padded to a multiple of the longer window side and, in shifted blocks, rolled by half
//! a window; the outputs concatenated, plus a depthwise 3×3 conv of v (`get_v`, the "locally
//! complementary module"), then `proj`.

use candle_core::Tensor;
use candle_nn::Module;
use rayon::prelude::*;

use super::depthwise::{Depthwise, Epilogue};
use super::detect::pos_dim;
use super::window::{Geometry, WindowAttention};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::cpu_dispatch::on_cpu_f32;
use crate::models::layers::linear::Linear;

pub(super) struct Lsa {
    qkv: Linear,
    proj: Linear,
    get_v: Depthwise,
    attns: [WindowAttention; 2],
    heads: usize,
    shifted: bool,
    dim: usize,
}

impl Lsa {
    /// Block `prefix` (`layers.G.blocks.J.attn`) of `dim` channels and `heads` heads (half
    /// per branch); `shifted` by the reference's rule on the group and block index.
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        dim: usize,
        heads: usize,
        split: [usize; 2],
        qkv_bias: bool,
        shifted: bool,
    ) -> Result<Self> {
        let qkv_bias = if qkv_bias {
            Some(w.get(&format!("{prefix}.qkv.bias"), &[3 * dim])?)
        } else {
            None
        };
        let branch_heads = heads / 2;
        let attn = |i: usize, window: (usize, usize)| {
            WindowAttention::new(
                w,
                &format!("{prefix}.attns.{i}"),
                window,
                dim / 2,
                branch_heads,
                pos_dim(dim),
            )
        };
        Ok(Self {
            qkv: Linear::new(
                w.get(&format!("{prefix}.qkv.weight"), &[3 * dim, dim])?,
                qkv_bias,
            ),
            proj: Linear::new(
                w.get(&format!("{prefix}.proj.weight"), &[dim, dim])?,
                Some(w.get(&format!("{prefix}.proj.bias"), &[dim])?),
            ),
            get_v: Depthwise::same3x3(w, &format!("{prefix}.get_v"), dim)?,
            attns: [
                attn(0, (split[0], split[1]))?,
                attn(1, (split[1], split[0]))?,
            ],
            heads: branch_heads,
            shifted,
            dim,
        })
    }

    /// The branches' geometry for an h × w map.
    fn geometry(&self, h: usize, w: usize) -> [Geometry; 2] {
        let side = self.attns[0].hs.max(self.attns[0].ws);
        let (hp, wp) = (h.next_multiple_of(side), w.next_multiple_of(side));
        self.attns.each_ref().map(|a| {
            let (sh, sw) = if self.shifted {
                (a.hs / 2, a.ws / 2)
            } else {
                (0, 0)
            };
            Geometry {
                hs: a.hs,
                ws: a.ws,
                sh,
                sw,
                h,
                w,
                hp,
                wp,
            }
        })
    }

    /// `proj(attention + get_v(v)) + residual` for the normed tokens x (B, h·w, dim).
    pub(super) fn forward_add(
        &self,
        x: &Tensor,
        (h, w): (usize, usize),
        residual: &Tensor,
    ) -> Result<Tensor> {
        let c = self.dim;
        let qkv = self.qkv.forward(x)?;
        let geo = self.geometry(h, w);
        let o0 = self.attns[0].forward(&qkv, 0, c, &geo[0])?;
        let o1 = self.attns[1].forward(&qkv, c / 2, c, &geo[1])?;
        let lcm = self.get_v.forward(&qkv, 2 * c, (h, w), Epilogue::None)?;
        drop(qkv);
        let mixed = self.merge([&o0, &o1], &geo, &lcm)?;
        drop((o0, o1, lcm));
        Ok(self.proj.forward_add(&mixed, residual)?)
    }

    /// Both branches' outputs (window order, (B · windows · heads, n, d)) back to pixel order
    /// side by side, plus `lcm` (B, h·w, dim): the reference's roll back, crop, concat and
    /// add.
    fn merge(&self, outs: [&Tensor; 2], geo: &[Geometry; 2], lcm: &Tensor) -> Result<Tensor> {
        let (b, l, c) = lcm.dims3()?;
        let half = c / 2;
        let heads = self.heads;
        let d = half / heads;
        let [g0, g1] = *geo;
        let (h, w, n) = (g0.h, g0.w, g0.tokens());
        let fast = on_cpu_f32(
            [outs[0], outs[1], lcm],
            [],
            (b, l, c),
            |[o0, o1, lcm], []| {
                let mut out = lcm.to_vec();
                out.par_chunks_mut(c).enumerate().for_each(|(bp, row)| {
                    let (image, p) = (bp / l, bp % l);
                    let (y, x) = (p / w, p % w);
                    for (i, (o, g)) in [(o0, g0), (o1, g1)].into_iter().enumerate() {
                        let (win, t) = g.dest(y, x);
                        let bw = image * g.windows() + win;
                        for hd in 0..heads {
                            let src = &o[((bw * heads + hd) * n + t) * d..][..d];
                            let dst = &mut row[i * half + hd * d..][..d];
                            for (o, &s) in dst.iter_mut().zip(src) {
                                *o += s;
                            }
                        }
                    }
                });
                out
            },
        )?;
        if let Some(y) = fast {
            return Ok(y);
        }
        let mut halves = Vec::with_capacity(2);
        for (o, g) in outs.into_iter().zip(geo) {
            let windows = b * g.windows();
            let index: Vec<u32> = (0..b * h * w)
                .map(|i| {
                    let (image, p) = (i / l, i % l);
                    let (win, t) = g.dest(p / w, p % w);
                    ((image * g.windows() + win) * n + t) as u32
                })
                .collect();
            let index = Tensor::from_vec(index, b * l, lcm.device())?;
            let rows = o
                .reshape((windows, heads, n, d))?
                .transpose(1, 2)?
                .reshape((windows * n, half))?;
            halves.push(rows.index_select(&index, 0)?.reshape((b, l, half))?);
        }
        Ok((Tensor::cat(&halves, 2)? + lcm)?)
    }
}
