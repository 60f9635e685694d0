//! Reflect padding of the last two dimensions, like PyTorch's `F.pad(x, (l, r, t, b),
//! mode="reflect")`, with a fall-back to replicate padding where an axis is too short to mirror.
//!
//! Real-ESRGAN's `tile_process` reflect-pads the image before running the network (`pre_pad`) and
//! again so that its sides are multiples of the pixel-unshuffle factor (`mod_pad`); mirrored
//! content gives the network's border pixels a plausible neighbourhood, where zeros would leave a
//! dark rim after cropping.

use candle_core::{Tensor, D};

use crate::error::{Error, Result};

/// Pads the last two dimensions of `image` (any rank ≥ 2, e.g. `(N, C, H, W)`) by mirroring
/// about the edge pixels, which are not repeated: a row `a b c d` padded by 2 on the left reads
/// `c b a b c d`.
///
/// Mirroring needs each pad on an axis to be shorter than that axis; when either is not (a
/// one-pixel-high image, a pad wider than the image), that axis repeats its edge pixels instead
/// (replicate padding), where PyTorch would fail. With all pads zero the image is returned as is.
pub fn reflect_pad(
    image: &Tensor,
    top: usize,
    bottom: usize,
    left: usize,
    right: usize,
) -> Result<Tensor> {
    let rank = image.rank();
    if rank < 2 {
        return Err(Error::option(
            "image",
            format!(
                "reflect_pad needs at least 2 dimensions, got shape {:?}",
                image.dims()
            ),
        ));
    }
    let height = image.dim(D::Minus2)?;
    let width = image.dim(D::Minus1)?;
    let padded = pad_axis(image, rank - 2, height, top, bottom)?;
    pad_axis(&padded, rank - 1, width, left, right)
}

/// Pads one axis of length `len` by `before` and `after`, gathering source rows with
/// `index_select` so that every backend runs it.
fn pad_axis(image: &Tensor, dim: usize, len: usize, before: usize, after: usize) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(image.clone());
    }
    if len == 0 {
        return Err(Error::option("image", "cannot pad an empty axis"));
    }
    let total = len
        .checked_add(before)
        .and_then(|n| n.checked_add(after))
        .filter(|&n| u32::try_from(n).is_ok())
        .ok_or_else(|| {
            Error::option(
                "pad",
                format!("padding {len} by {before}+{after} is too large"),
            )
        })?;
    let reflect = before < len && after < len;
    let last = len - 1;
    let index: Vec<u32> = (0..total)
        .map(|i| {
            let source = if i < before {
                // Mirror position `before - i` before the first pixel.
                if reflect {
                    before - i
                } else {
                    0
                }
            } else if i - before > last {
                // Mirror position `i - before - last` past the last pixel.
                if reflect {
                    2 * last + before - i
                } else {
                    last
                }
            } else {
                i - before
            };
            source as u32
        })
        .collect();
    let index = Tensor::from_vec(index, total, image.device())?;
    Ok(image.index_select(&index, dim)?)
}
