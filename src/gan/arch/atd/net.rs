//! ATD's network (spandrel 0.4.2 `architectures/ATD/__arch/atd_arch.py` `ATD.forward`): the
//! input mirror-padded to a multiple of the window (flip and concatenate: the edge row is
//! repeated, unlike reflect padding), less the DIV2K mean times `img_range` (unless the
//! `no_norm` buffer), a 3×3 conv, (a LayerNorm,) the residual groups, a LayerNorm, the body's
//! residual conv plus the first conv's output, the tail; divided back, the mean added and the
//! padding cropped off.

use candle_core::Tensor;
use candle_nn::Module;

use super::detect::tail_dims;
use super::layer::AtdGroup;
use super::AtdParams;
use crate::error::Result;
use crate::gan::arch::swin::layers::{image_mean, to_image, to_tokens, LayerNorm};
use crate::gan::arch::swin::{ResiConv, Tail};
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;

pub struct Atd {
    window: usize,
    scale: usize,
    /// None for the `no_norm` models.
    mean: Option<Tensor>,
    img_range: f64,
    conv_first: Conv2d,
    patch_norm: Option<LayerNorm>,
    layers: Vec<AtdGroup>,
    norm: LayerNorm,
    conv_after_body: ResiConv,
    tail: Tail,
}

/// The row indices of `torch.cat([x, torch.flip(x, [d])], d)[:len + pad]` along an axis of
/// `len`, continued by folding again should the padding exceed the axis (where the reference
/// would fail; [`super::AtdParams`]'s minimum side keeps inputs clear of that).
fn mirror_index(len: usize, pad: usize) -> Vec<u32> {
    let period = 2 * len.max(1);
    (0..len + pad)
        .map(|i| {
            let r = i % period;
            (if r < len { r } else { period - 1 - r }) as u32
        })
        .collect()
}

fn mirror_pad(x: &Tensor, window: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (ph, pw) = (
        h.next_multiple_of(window) - h,
        w.next_multiple_of(window) - w,
    );
    let mut x = x.clone();
    for (dim, len, pad) in [(2, h, ph), (3, w, pw)] {
        if pad > 0 {
            let index = Tensor::from_vec(mirror_index(len, pad), len + pad, x.device())?;
            x = x.index_select(&index, dim)?;
        }
    }
    Ok(x)
}

impl Atd {
    pub(crate) fn new(p: &AtdParams, w: &Weights) -> Result<Self> {
        let c = p.embed_dim;
        Ok(Self {
            window: p.window_size.max(1),
            scale: p.upscale,
            mean: if p.norm {
                Some(image_mean(p.in_channels, w.dtype, w.device)?)
            } else {
                None
            },
            img_range: p.img_range,
            conv_first: w.conv3x3("conv_first", p.in_channels, c)?,
            patch_norm: if p.patch_norm {
                Some(LayerNorm::new(w, "patch_embed.norm", c)?)
            } else {
                None
            },
            layers: (0..p.depths.len())
                .map(|i| AtdGroup::new(w, p, i))
                .collect::<Result<_>>()?,
            norm: LayerNorm::new(w, "norm", c)?,
            conv_after_body: ResiConv::new(w, "conv_after_body", p.resi_connection, c)?,
            tail: Tail::new(w, p.upsampler, &tail_dims(p))?,
        })
    }
}

impl SrNet for Atd {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h0, w0) = x.dims4()?;
        let mut x = mirror_pad(x, self.window)?;
        if let Some(mean) = &self.mean {
            x = x.broadcast_sub(mean)?;
            if self.img_range != 1.0 {
                x = x.affine(self.img_range, 0.0)?;
            }
        }
        let (_, _, h, w) = x.dims4()?;
        let first = self.conv_first.forward(&x)?;
        let mut tokens = to_tokens(&first)?;
        if let Some(norm) = &self.patch_norm {
            tokens = norm.forward(&tokens)?;
        }
        for layer in &self.layers {
            tokens = layer.forward(&tokens, h, w)?;
        }
        let features = to_image(&self.norm.forward(&tokens)?, h, w)?;
        let body = self.conv_after_body.forward_add(&features, &first)?;
        let mut out = self.tail.forward(&body, &x)?;
        if let Some(mean) = &self.mean {
            if self.img_range != 1.0 {
                out = out.affine(1.0 / self.img_range, 0.0)?;
            }
            out = out.broadcast_add(mean)?;
        }
        let s = self.scale;
        Ok(out.narrow(2, 0, h0 * s)?.narrow(3, 0, w0 * s)?)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::{DType, Device};

    use super::*;
    use crate::gan::arch::atd::{synthetic_atd, tiny_params};
    use crate::gan::arch::swin::{ResiConnection, Upsampler};
    use crate::gan::arch::GanNetwork;
    use crate::gan::StateDict;

    #[test]
    fn mirror_index_repeats_the_edge() {
        assert_eq!(mirror_index(3, 2), [0, 1, 2, 2, 1]);
        assert_eq!(mirror_index(2, 5), [0, 1, 1, 0, 0, 1, 1]);
    }

    /// Every variant runs and makes the reference's output size, on odd inputs too.
    #[test]
    fn every_variant_runs_at_its_scale() -> Result<()> {
        for p in [
            tiny_params(Upsampler::PixelShuffle, ResiConnection::ThreeConv, 3),
            tiny_params(Upsampler::None, ResiConnection::OneConv, 1),
            tiny_params(Upsampler::NearestConv, ResiConnection::OneConv, 4),
        ] {
            let dict: StateDict = synthetic_atd(&p)
                .into_iter()
                .map(|(k, t)| {
                    let t = match t.dtype() {
                        DType::F32 => Tensor::randn(0f32, 0.2, t.dims(), &Device::Cpu)?,
                        _ => t,
                    };
                    Ok((k, t))
                })
                .collect::<Result<_>>()?;
            let arch = crate::gan::arch::GanArch::from(p.clone());
            let net = GanNetwork::new(&arch, &dict, DType::F32, &Device::Cpu, Path::new("m"))?;
            let x = Tensor::rand(0f32, 1.0, (1, 3, 13, 10), &Device::Cpu)?;
            let y = net.forward(&x)?;
            let s = p.upscale;
            assert_eq!(y.dims(), [1, 3, 13 * s, 10 * s], "{p:?}");
            // A batch is its images run one by one (each sorts its own tokens). In f64: with
            // these untrained weights two categories can be near-tied, and f32 roundings that
            // differ between batched and single matmuls may flip such an argmax (the fixtures
            // compare the f32 and f64 paths against the reference).
            let net64 = GanNetwork::new(&arch, &dict, DType::F64, &Device::Cpu, Path::new("m"))?;
            let x = x.to_dtype(DType::F64)?;
            let x2 = Tensor::rand(0f64, 1.0, (1, 3, 13, 10), &Device::Cpu)?;
            let both = net64.forward(&Tensor::cat(&[&x, &x2], 0)?)?;
            for (i, one) in [&x, &x2].into_iter().enumerate() {
                let one = net64.forward(one)?;
                let d = (both.get(i)? - one.get(0)?)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f64>()?;
                assert!(d < 1e-9, "{p:?} batch item {i}: {d}");
            }
        }
        Ok(())
    }
}
