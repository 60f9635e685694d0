//! The fixed index tables of Swin's window attention (spandrel 0.4.2
//! `architectures/SwinIR/__arch/SwinIR.py`: `WindowAttention.relative_position_index`,
//! `SwinTransformerBlock.calculate_mask`, and the block constructor's shift rule), computed
//! here rather than read from the buffers a checkpoint may carry.

/// The value the reference's shift mask adds between pixels of different regions.
pub use diffsr_kernels::window_attention::SHIFT_MASK;

/// For every pair (p, q) of a window's n = window² tokens (row-major), the row of the
/// relative-position table that holds their bias: (Δy + w − 1) · (2w − 1) + (Δx + w − 1) with
/// Δ = p − q, as the reference's `relative_position_index` (n, n).
pub fn relative_position_index(window: usize) -> Vec<u32> {
    let n = window * window;
    let span = 2 * window - 1;
    let mut index = Vec::with_capacity(n * n);
    for p in 0..n {
        let (py, px) = (p / window, p % window);
        for q in 0..n {
            let (qy, qx) = (q / window, q % window);
            let dy = py + window - 1 - qy;
            let dx = px + window - 1 - qx;
            index.push((dy * span + dx) as u32);
        }
    }
    index
}

/// The cyclic shift of block `block` of a stage: half a window in the odd blocks, none in the
/// even ones, and none at all when the training resolution `img_size` is not larger than the
/// window (the reference's constructor then turns the shift off).
pub fn block_shift(block: usize, window: usize, img_size: usize) -> usize {
    if block % 2 == 1 && img_size > window {
        window / 2
    } else {
        0
    }
}

/// The region (0, 1 or 2) of shifted coordinate `c` on an axis of `len`, as
/// `calculate_mask` slices it: `[0, len − window)`, `[len − window, len − shift)`,
/// `[len − shift, len)`.
fn region(c: usize, len: usize, window: usize, shift: usize) -> usize {
    if c + window < len {
        0
    } else if c + shift < len {
        1
    } else {
        2
    }
}

/// The reference's `calculate_mask((height, width))`: (windows, n, n) values, 0 between tokens
/// of the same region of the shifted image and [`SHIFT_MASK`] between others, windows in
/// row-major order. For the tensor-op path; the CPU kernel derives the same from coordinates.
pub fn shift_mask(height: usize, width: usize, window: usize, shift: usize) -> Vec<f32> {
    let n = window * window;
    let (down, across) = (height / window, width / window);
    let mut mask = Vec::with_capacity(down * across * n * n);
    let mut labels = vec![0usize; n];
    for wy in 0..down {
        for wx in 0..across {
            for (t, label) in labels.iter_mut().enumerate() {
                let (y, x) = (wy * window + t / window, wx * window + t % window);
                *label = 3 * region(y, height, window, shift) + region(x, width, window, shift);
            }
            for &lp in &labels {
                mask.extend(
                    labels
                        .iter()
                        .map(|&lq| if lq == lp { 0.0 } else { SHIFT_MASK }),
                );
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_position_index_matches_the_reference() {
        // torch: window 2 gives [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]].
        assert_eq!(
            relative_position_index(2),
            [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
        let index = relative_position_index(8);
        assert_eq!(index.len(), 64 * 64);
        assert_eq!(index.iter().max(), Some(&(15 * 15 - 1)));
        // The diagonal is Δ = 0, the table's centre.
        assert!((0..64).all(|p| index[p * 64 + p] == 7 * 15 + 7));
    }

    #[test]
    fn shift_mask_separates_the_wrapped_regions() {
        // 8 × 8 with window 4, shift 2: the first window is one region, the last holds four.
        let mask = shift_mask(8, 8, 4, 2);
        assert_eq!(mask.len(), 4 * 16 * 16);
        assert!(mask[..256].iter().all(|&v| v == 0.0));
        let last = &mask[3 * 256..];
        // Tokens 0 (region 1,1) and 3 (region 1,2) differ; 0 and 1 share a region.
        assert_eq!((last[1], last[3]), (0.0, SHIFT_MASK));
        assert_eq!(block_shift(1, 8, 64), 4);
        assert_eq!((block_shift(0, 8, 64), block_shift(1, 8, 8)), (0, 0));
    }
}
