//! PLKSR's network (spandrel 0.4.2 `architectures/PLKSR/__arch/PLKSR.py`, eval mode):
//! `feats` = a 3×3 head conv, `n_blocks` PLK blocks and a 3×3 tail conv to 3·s² channels; the
//! input, each channel repeated s² times, is added before the pixel shuffle (one fused pass
//! with the shuffle on the CPU: it is the shuffled input's nearest-neighbour upsampling).

use candle_core::Tensor;
use candle_nn::Module;

use super::config::PlksrParams;
use super::large_kernel::LargeKernel;
use super::layers::{conv, Ea};
use crate::error::Result;
use crate::gan::arch::srvgg::pixel_shuffle_add_nearest;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;
use crate::models::layers::geglu::gelu_erf;

/// `PLKBlock`: mixer (conv, GELU, conv), large kernel, EA, 1×1 refine, plus the input.
struct PlkBlock {
    mixer: [Conv2d; 2],
    lk: LargeKernel,
    attn: Option<Ea>,
    refine: Conv2d,
    pdim: usize,
}

impl PlkBlock {
    fn new(w: &Weights, prefix: &str, p: &PlksrParams) -> Result<Self> {
        let dim = p.dim;
        let (k0, k1) = p.ccm_type.kernels();
        let m =
            |i, c_in, c_out, k| conv(w, &format!("{prefix}.channe_mixer.{i}"), c_in, c_out, k, 1);
        Ok(Self {
            mixer: [m(0, dim, 2 * dim, k0)?, m(2, 2 * dim, dim, k1)?],
            lk: LargeKernel::new(w, prefix, p)?,
            attn: p
                .use_ea
                .then(|| Ea::new(w, &format!("{prefix}.attn"), dim))
                .transpose()?,
            refine: conv(w, &format!("{prefix}.refine"), dim, dim, 1, 1)?,
            pdim: p.pdim,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [c0, c2] = &self.mixer;
        let mixed = c2.forward(&gelu_erf(&c0.forward(x)?)?)?;
        let mut h = self.lk.forward(&mixed, self.pdim)?;
        drop(mixed);
        if let Some(attn) = &self.attn {
            h = attn.forward(&h)?;
        }
        Ok(self.refine.forward_add(&h, x)?)
    }
}

pub struct Plksr {
    head: Conv2d,
    blocks: Vec<PlkBlock>,
    tail: Conv2d,
    scale: usize,
}

impl Plksr {
    pub(crate) fn new(p: &PlksrParams, w: &Weights) -> Result<Self> {
        let blocks = (1..=p.n_blocks)
            .map(|i| PlkBlock::new(w, &format!("feats.{i}"), p))
            .collect::<Result<_>>()?;
        let s2 = p.scale * p.scale;
        Ok(Self {
            head: conv(w, "feats.0", 3, p.dim, 3, 1)?,
            blocks,
            tail: conv(w, &format!("feats.{}", p.n_blocks + 1), p.dim, 3 * s2, 3, 1)?,
            scale: p.scale,
        })
    }
}

impl SrNet for Plksr {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.head.forward(x)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let out = self.tail.forward(&h)?;
        drop(h);
        // feats(x) + repeat_interleave(x, s²), pixel-shuffled.
        pixel_shuffle_add_nearest(&out, x, self.scale)
    }
}
