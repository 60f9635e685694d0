//! The compact GAN's output stage, `pixel_shuffle(last, r) + interpolate(x, scale=r,
//! mode='nearest')` (Real-ESRGAN's `srvgg_arch.py`), as one pass: the three tensor ops it
//! replaces (a permuting copy, an upsampling copy, an add) each move the whole r²-times-larger
//! output through memory.

/// Sizes of [`pixel_shuffle_add_nearest`]'s operands: `last` is (batch, channels·r², height,
/// width), `x` is (batch, channels, height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuffleShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub r: usize,
}

/// out[b, c, r·y + i, r·x + j] = last[b, r²·c + r·i + j, y, x] + x[b, c, y, x]; the output is
/// (batch, channels, r·height, r·width).
pub fn pixel_shuffle_add_nearest(last: &[f32], x: &[f32], s: &ShuffleShape) -> Vec<f32> {
    let (h, w, r) = (s.height, s.width, s.r);
    let (ow, plane) = (w * r, h * w);
    assert_eq!(
        last.len(),
        s.batch * s.channels * r * r * plane,
        "last's size"
    );
    assert_eq!(x.len(), s.batch * s.channels * plane, "x's size");
    let mut out = vec![0f32; s.batch * s.channels * plane * r * r];
    if ow == 0 {
        return out;
    }
    // One output row (b, c, r·y + i) per chunk: its r sub-pixel planes j interleave.
    for (row_idx, row) in out.chunks_exact_mut(ow).enumerate() {
        let (bc, oy) = (row_idx / (h * r), row_idx % (h * r));
        let (y, i) = (oy / r, oy % r);
        let base = &x[bc * plane + y * w..bc * plane + (y + 1) * w];
        for j in 0..r {
            let sub = (bc * r * r + r * i + j) * plane + y * w;
            let src = &last[sub..sub + w];
            for (xx, (&l, &v)) in src.iter().zip(base).enumerate() {
                row[r * xx + j] = l + v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, index by index.
    fn naive(last: &[f32], x: &[f32], s: &ShuffleShape) -> Vec<f32> {
        let (c, h, w, r) = (s.channels, s.height, s.width, s.r);
        let mut out = vec![0f32; s.batch * c * h * r * w * r];
        for b in 0..s.batch {
            for ch in 0..c {
                for oy in 0..h * r {
                    for ox in 0..w * r {
                        let (y, i, xx, j) = (oy / r, oy % r, ox / r, ox % r);
                        let l = last[((b * c * r * r + ch * r * r + r * i + j) * h + y) * w + xx];
                        let v = x[((b * c + ch) * h + y) * w + xx];
                        out[((b * c + ch) * h * r + oy) * w * r + ox] = l + v;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn equals_the_definition() {
        for (batch, channels, height, width, r) in
            [(1, 3, 5, 7, 4), (2, 1, 3, 2, 2), (1, 4, 1, 1, 3)]
        {
            let s = ShuffleShape {
                batch,
                channels,
                height,
                width,
                r,
            };
            let n = batch * channels * height * width;
            let last: Vec<f32> = (0..n * r * r).map(|i| (i as f32 * 0.37).sin()).collect();
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            assert_eq!(
                pixel_shuffle_add_nearest(&last, &x, &s),
                naive(&last, &x, &s)
            );
        }
    }
}
