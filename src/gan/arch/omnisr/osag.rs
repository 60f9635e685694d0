//! OmniSR's OSAG, a residual group (spandrel 0.4.2 `architectures/OmniSR/__arch/OSAG.py`):
//! `block_num` OSA blocks and a 1×1 conv, the group's input added back, then the ESA gate
//! (`esa.py`: a strided 3×3 conv, a 7-wide max pool with stride 3, a 3×3 conv, a bilinear
//! upsample back to full size, added to a 1×1 branch and turned into a sigmoid mask).

use candle_core::Tensor;
use candle_nn::Module;

use super::ops::conv;
use super::osa::OsaBlock;
use super::OmniSrParams;
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;

/// `ESA(esa_channels, n_feats)`.
struct Esa {
    conv1: Conv2d,
    conv_f: Conv2d,
    /// 3×3, stride 2, no padding.
    conv2: Conv2d,
    conv3: Conv2d,
    conv4: Conv2d,
}

impl Esa {
    fn new(w: &Weights, prefix: &str, n_feats: usize, f: usize) -> Result<Self> {
        let conv2 = Conv2d::new(
            w.get(&format!("{prefix}.conv2.weight"), &[f, f, 3, 3])?,
            Some(w.get(&format!("{prefix}.conv2.bias"), &[f])?),
            candle_nn::Conv2dConfig {
                stride: 2,
                ..Default::default()
            },
        );
        Ok(Self {
            conv1: conv(w, &format!("{prefix}.conv1"), n_feats, f, 1, true)?,
            conv_f: conv(w, &format!("{prefix}.conv_f"), f, f, 1, true)?,
            conv2,
            conv3: conv(w, &format!("{prefix}.conv3"), f, f, 3, true)?,
            conv4: conv(w, &format!("{prefix}.conv4"), f, n_feats, 1, true)?,
        })
    }

    /// x · sigmoid(mask(x)); x's sides at least 15 (the max pool's window after the stride-2
    /// conv).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let c1_ = self.conv1.forward(x)?;
        let c1 = self.conv2.forward(&c1_)?;
        let pooled = c1.max_pool2d_with_stride(7, 3)?;
        let c3 = self
            .conv3
            .forward(&pooled)?
            .upsample_bilinear2d(h, w, false)?;
        let mask = self.conv4.forward(&(c3 + self.conv_f.forward(&c1_)?)?)?;
        Ok((x * candle_nn::ops::sigmoid(&mask)?)?)
    }
}

/// One OSAG.
pub(super) struct Osag {
    blocks: Vec<OsaBlock>,
    conv: Conv2d,
    esa: Esa,
}

impl Osag {
    /// `prefix` is the group's `residual_layer.N`.
    pub(super) fn new(w: &Weights, prefix: &str, p: &OmniSrParams) -> Result<Self> {
        let c = p.num_feat;
        let blocks = (0..p.block_num)
            .map(|b| {
                let name = format!("{prefix}.residual_layer.{b}.layer");
                OsaBlock::new(w, &name, c, p.window_size, p.pe)
            })
            .collect::<Result<Vec<_>>>()?;
        let conv_name = format!("{prefix}.residual_layer.{}", p.block_num);
        Ok(Self {
            blocks,
            conv: conv(w, &conv_name, c, c, 1, p.bias)?,
            esa: Esa::new(w, &format!("{prefix}.esa"), c, p.esa_channels())?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let h = self.conv.forward_add(&h, x)?;
        self.esa.forward(&h)
    }
}
