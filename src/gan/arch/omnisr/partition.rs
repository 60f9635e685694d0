//! The rearrangements between OmniSR's NCHW feature map and its attention token layouts
//! (spandrel 0.4.2 `architectures/OmniSR/__arch/OSA.py`, einops patterns quoted per function).
//! Each is one strided copy.

use candle_core::Tensor;

use crate::error::Result;

/// Which pixels share a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Contiguous w×w blocks: `b d (x w1) (y w2) -> b x y w1 w2 d`.
    Block,
    /// Every (H/w)-th row and (W/w)-th column: `b d (w1 x) (w2 y) -> b x y w1 w2 d`, the
    /// window's pixels spread over the whole map.
    Grid,
}

/// (B, C, H, W) → (B · X · Y, w², C): the tokens of each window, window-major.
pub(super) fn to_windows(x: &Tensor, w: usize, layout: Layout) -> Result<Tensor> {
    let (b, c, h, wd) = x.dims4()?;
    let (gx, gy) = (h / w, wd / w);
    let t = match layout {
        Layout::Block => x
            .reshape((b, c, gx, w, gy, w))?
            .permute((0, 2, 4, 3, 5, 1))?,
        Layout::Grid => x
            .reshape((b, c, w, gx, w, gy))?
            .permute((0, 3, 5, 2, 4, 1))?,
    };
    Ok(t.contiguous()?.reshape((b * gx * gy, w * w, c))?)
}

/// The inverse of [`to_windows`] for a `b` × C × `h` × `wd` map.
pub(super) fn from_windows(
    t: &Tensor,
    (b, c, h, wd): (usize, usize, usize, usize),
    w: usize,
    layout: Layout,
) -> Result<Tensor> {
    let (gx, gy) = (h / w, wd / w);
    let t = t.reshape((b, gx, gy, w, w, c))?;
    let t = match layout {
        Layout::Block => t.permute((0, 5, 1, 3, 2, 4))?,
        Layout::Grid => t.permute((0, 5, 3, 1, 4, 2))?,
    };
    Ok(t.contiguous()?.reshape((b, c, h, wd))?)
}

/// (B, heads·d, H, W) → the channel attentions' (M, heads, d, L) vectors:
/// - [`Layout::Block`]: `b (head d) (h ph) (w pw) -> b (h w) head d (ph pw)`, one group per
///   window, each vector the window's w² pixels;
/// - [`Layout::Grid`]: `b (head d) (h ph) (w pw) -> b (ph pw) head d (h w)`, one group per
///   position inside the windows, each vector that position in every window.
pub(super) fn to_channel_groups(
    x: &Tensor,
    heads: usize,
    w: usize,
    layout: Layout,
) -> Result<Tensor> {
    let (b, c, h, wd) = x.dims4()?;
    let (gx, gy, d) = (h / w, wd / w, c / heads);
    let t = x.reshape(vec![b, heads, d, gx, w, gy, w])?;
    let (t, groups, len) = match layout {
        Layout::Block => (t.permute([0, 3, 5, 1, 2, 4, 6])?, gx * gy, w * w),
        Layout::Grid => (t.permute([0, 4, 6, 1, 2, 3, 5])?, w * w, gx * gy),
    };
    Ok(t.contiguous()?.reshape((b * groups, heads, d, len))?)
}

/// The inverse of [`to_channel_groups`] for a `b` × `c` × `h` × `wd` map.
pub(super) fn from_channel_groups(
    t: &Tensor,
    (b, c, h, wd): (usize, usize, usize, usize),
    heads: usize,
    w: usize,
    layout: Layout,
) -> Result<Tensor> {
    let (gx, gy, d) = (h / w, wd / w, c / heads);
    let t = match layout {
        Layout::Block => t
            .reshape(vec![b, gx, gy, heads, d, w, w])?
            .permute([0, 3, 4, 1, 5, 2, 6])?,
        Layout::Grid => t
            .reshape(vec![b, w, w, heads, d, gx, gy])?
            .permute([0, 3, 4, 5, 1, 6, 2])?,
    };
    Ok(t.contiguous()?.reshape((b, c, h, wd))?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn layouts_round_trip_and_group_the_right_pixels() -> Result<()> {
        let (b, c, h, w) = (2, 4, 6, 9);
        let x =
            Tensor::arange(0f32, (b * c * h * w) as f32, &Device::Cpu)?.reshape((b, c, h, w))?;
        for layout in [Layout::Block, Layout::Grid] {
            let t = to_windows(&x, 3, layout)?;
            assert_eq!(t.dims(), [2 * 2 * 3, 9, 4]);
            let back = from_windows(&t, (b, c, h, w), 3, layout)?;
            assert_eq!(
                back.flatten_all()?.to_vec1::<f32>()?,
                x.flatten_all()?.to_vec1::<f32>()?
            );
            let g = to_channel_groups(&x, 2, 3, layout)?;
            let back = from_channel_groups(&g, (b, c, h, w), 2, 3, layout)?;
            assert_eq!(
                back.flatten_all()?.to_vec1::<f32>()?,
                x.flatten_all()?.to_vec1::<f32>()?
            );
        }
        // Block window 0 of batch 0 holds pixels (0..3, 0..3); its token 1 is pixel (0, 1).
        let block = to_windows(&x, 3, Layout::Block)?;
        let px = |t: &Tensor, win: usize, tok: usize| -> Result<f32> {
            Ok(t.get(win)?.get(tok)?.get(0)?.to_scalar::<f32>()?)
        };
        assert_eq!(px(&block, 0, 1)?, 1.0);
        assert_eq!(px(&block, 0, 3)?, 9.0);
        // Grid window 0 holds pixels (2i, 3j): its token 1 is pixel (0, 3), token 3 (2, 0).
        let grid = to_windows(&x, 3, Layout::Grid)?;
        assert_eq!(px(&grid, 0, 1)?, 3.0);
        assert_eq!(px(&grid, 0, 3)?, 18.0);
        Ok(())
    }
}
