//! PLKSR's three large-kernel convolutions over the first `pdim` channels (spandrel 0.4.2
//! `architectures/PLKSR/__arch/PLKSR.py`: `PLKConv2d`, `SparsePLKConv2d`,
//! `RectSparsePLKConv2d`, in eval mode with `with_idt` false and no `use_max_kernel`, as
//! spandrel builds them). RealPLKSR uses the first kind only.

use candle_core::Tensor;
use candle_nn::Module;

use super::config::{LkType, PlksrParams, SPARSE_DILATIONS, SPARSE_KERNEL};
use super::layers::{conv, partial, RectConv};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;

pub(super) enum LargeKernel {
    /// `lk.conv`: one k × k convolution.
    Plk(Conv2d),
    /// `lk.convs.0-3`: 5×5 convolutions dilated 1–4, summed.
    Sparse(Vec<Conv2d>),
    /// `lk.mn_conv` + `lk.nm_conv` + `lk.nn_conv`.
    Rect([RectConv; 3]),
}

impl LargeKernel {
    /// The block `prefix`'s (`feats.N`) large kernel of PLKSR `p`.
    pub(super) fn new(w: &Weights, prefix: &str, p: &PlksrParams) -> Result<Self> {
        let (c, k) = (p.pdim, p.kernel_size);
        Ok(match p.lk_type {
            LkType::Plk => Self::plk(w, prefix, c, k)?,
            LkType::SparsePlk => Self::Sparse(
                SPARSE_DILATIONS
                    .iter()
                    .enumerate()
                    .map(|(j, &d)| {
                        conv(w, &format!("{prefix}.lk.convs.{j}"), c, c, SPARSE_KERNEL, d)
                    })
                    .collect::<Result<_>>()?,
            ),
            LkType::RectSparsePlk => {
                let n = k / 3;
                let rect = |name: &str, kh, kw| {
                    RectConv::new(w, &format!("{prefix}.lk.{name}"), c, kh, kw)
                };
                Self::Rect([
                    rect("mn_conv", k, n)?,
                    rect("nm_conv", n, k)?,
                    rect("nn_conv", n, n)?,
                ])
            }
        })
    }

    /// `lk.conv`, pdim → pdim, k × k.
    pub(super) fn plk(w: &Weights, prefix: &str, pdim: usize, k: usize) -> Result<Self> {
        Ok(Self::Plk(conv(
            w,
            &format!("{prefix}.lk.conv"),
            pdim,
            pdim,
            k,
            1,
        )?))
    }

    /// The block's map with its first `pdim` channels convolved.
    pub(super) fn forward(&self, x: &Tensor, pdim: usize) -> Result<Tensor> {
        partial(x, pdim, |head| match self {
            Self::Plk(c) => Ok(c.forward(head)?),
            Self::Sparse(convs) => {
                let mut sum = convs[0].forward(head)?;
                for c in &convs[1..] {
                    sum = (sum + c.forward(head)?)?;
                }
                Ok(sum)
            }
            Self::Rect([mn, nm, nn]) => {
                Ok(((mn.forward(head)? + nm.forward(head)?)? + nn.forward(head)?)?)
            }
        })
    }
}
