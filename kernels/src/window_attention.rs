//! Shifted-window multi-head self-attention, the core of the Swin Transformer family of
//! super-resolution networks (SwinIR, Swin2SR, HAT, DRCT), as Swin's `WindowAttention` and
//! `SwinTransformerBlock` compute it (spandrel 0.4.2 `architectures/SwinIR/__arch/SwinIR.py`,
//! `architectures/Swin2SR/__arch/Swin2SR.py`): the image is cut into `window × window`
//! windows (after a cyclic shift of `shift` pixels up and left in the odd blocks), every
//! window attends within itself per head, with a relative-position bias and, in shifted
//! windows, a −100 mask between pixels that the shift brought together from different
//! regions of the image.
//!
//! The reference rolls the feature map, copies it into windows, runs batched matmuls over
//! (windows, heads), adds the bias and the mask as broadcast tensors, then copies the windows
//! back and rolls them back: five passes over whole feature maps and score tensors of
//! windows × heads × n² values. Here the roll and the window partition are index arithmetic:
//! each window's q, k, v rows are gathered from the projection's output (image order) into a
//! per-thread scratch, its scores (n × n, one head at a time) get the scale, the bias and the
//! mask added in place before the softmax, and its output rows are written straight to their
//! image positions. Windows are spread over the threads; only one window's scores exist per
//! thread at a time.

use crate::fast_math::softmax_row;
use crate::matmul::{matmul, Strided};
use crate::parallel::{for_each_index, SharedMut};

/// The value the reference's shift mask adds between pixels of different regions.
pub const SHIFT_MASK: f32 = -100.0;

/// The layout of one window-attention call. The projection output `qkv` is
/// (batch, height · width, 3 · heads · head_dim) in image (row-major) order, its columns
/// [q | k | v], each heads × head_dim (the reference's `reshape(B_, N, 3, heads, d)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowShape {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// The window's side; `height` and `width` are multiples of it.
    pub window: usize,
    /// The cyclic shift (0 in the even blocks, `window / 2` in the odd ones), below `window`.
    pub shift: usize,
}

impl WindowShape {
    /// Channels of the output (heads · head_dim).
    pub fn channels(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Tokens per window.
    pub fn tokens(&self) -> usize {
        self.window * self.window
    }

    /// Windows over the whole batch.
    pub fn windows(&self) -> usize {
        self.batch * (self.height / self.window) * (self.width / self.window)
    }
}

/// How the scores are made from q and k.
#[derive(Debug, Clone, Copy)]
pub enum Logits<'a> {
    /// scale · q kᵀ (SwinIR, HAT: head_dim^-0.5).
    Scaled(f32),
    /// Swin V2's cosine attention (Swin2SR): q and k rows normalised (`F.normalize`, norms
    /// floored at 1e-12), then q kᵀ times one scale per head (the exponentiated, clamped
    /// `logit_scale`).
    Cosine(&'a [f32]),
}

/// The region (0, 1 or 2) of shifted coordinate `c` along an axis of `len`, as the reference's
/// `calculate_mask` slices it: `[0, len − window)`, `[len − window, len − shift)`,
/// `[len − shift, len)`.
fn region(c: usize, len: usize, window: usize, shift: usize) -> u8 {
    if c + window < len {
        0
    } else if c + shift < len {
        1
    } else {
        2
    }
}

/// Window-attention output (batch, height · width, heads · head_dim) in image order, before
/// the output projection: per window and head softmax(logits(q, k) + bias[h] + mask) v.
/// `bias` is (heads, n, n) for the window's n = window² tokens in row-major order; the mask
/// applies when `shift` > 0.
///
/// # Panics
/// When the sizes are not multiples of the window, the shift is not below it, or a buffer's
/// length does not match the shape.
pub fn window_attention(
    qkv: &[f32],
    s: &WindowShape,
    logits: Logits<'_>,
    bias: &[f32],
    threads: usize,
) -> Vec<f32> {
    let &WindowShape {
        batch,
        height,
        width,
        heads,
        head_dim: d,
        window,
        shift,
    } = s;
    assert!(window > 0 && height % window == 0 && width % window == 0);
    assert!(
        shift < window,
        "shift {shift} not below the window {window}"
    );
    let (c, n) = (s.channels(), s.tokens());
    let pixels = height * width;
    assert_eq!(qkv.len(), batch * pixels * 3 * c);
    assert_eq!(bias.len(), heads * n * n);
    if let Logits::Cosine(scales) = logits {
        assert_eq!(scales.len(), heads);
    }
    let mut out = vec![0f32; batch * pixels * c];
    let windows = s.windows();
    if windows == 0 || c == 0 {
        return out;
    }
    let shared = SharedMut::new(&mut out);
    let (across, down) = (width / window, height / window);
    let c3 = 3 * c;
    struct Scratch {
        /// The window's q, k, v rows (n × 3c).
        qkv: Vec<f32>,
        /// One head's scores (n × n).
        scores: Vec<f32>,
        /// The window's output rows (n × c).
        out: Vec<f32>,
        /// Each token's image row index (batch · pixels + y · width + x).
        rows: Vec<usize>,
        /// Each token's region label (3 · vertical + horizontal) when shifted.
        labels: Vec<u8>,
    }
    let scratch = || Scratch {
        qkv: vec![0f32; n * c3],
        scores: vec![0f32; n * n],
        out: vec![0f32; n * c],
        rows: vec![0; n],
        labels: vec![0; n],
    };
    let work = |sc: &mut Scratch, w: usize| {
        let (b, wy, wx) = (w / (down * across), (w / across) % down, w % across);
        for i in 0..window {
            // Shifted coordinates (the window grid) and where they come from in the image:
            // `torch.roll(x, -shift)` puts image pixel (y + shift) mod H at y.
            let ys = wy * window + i;
            let y = (ys + shift) % height;
            for j in 0..window {
                let xs = wx * window + j;
                let x = (xs + shift) % width;
                let t = i * window + j;
                sc.rows[t] = b * pixels + y * width + x;
                sc.labels[t] =
                    3 * region(ys, height, window, shift) + region(xs, width, window, shift);
            }
        }
        for (t, &row) in sc.rows.iter().enumerate() {
            sc.qkv[t * c3..(t + 1) * c3].copy_from_slice(&qkv[row * c3..(row + 1) * c3]);
        }
        if let Logits::Cosine(_) = logits {
            for row in sc.qkv.chunks_exact_mut(c3) {
                // q and k of every head: the first 2c columns, head_dim at a time.
                for part in row[..2 * c].chunks_exact_mut(d.max(1)) {
                    let norm = part.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    part.iter_mut().for_each(|v| *v /= norm);
                }
            }
        }
        let masked = shift > 0 && sc.labels.iter().any(|&l| l != sc.labels[0]);
        for h in 0..heads {
            let base = sc.qkv.as_ptr();
            // SAFETY: q (n × d from column h·d) and kᵀ (d × n from column c + h·d), rows c3
            // apart, lie inside the n × c3 scratch; `scores` is this thread's n × n buffer.
            unsafe {
                matmul(
                    (n, n, d),
                    sc.scores.as_mut_ptr(),
                    n,
                    false,
                    Strided::rows(base.add(h * d), c3),
                    Strided::transposed(base.add(c + h * d), c3),
                    gemm::Parallelism::None,
                )
            };
            let factor = match logits {
                Logits::Scaled(scale) => scale,
                Logits::Cosine(scales) => scales[h],
            };
            let head_bias = &bias[h * n * n..(h + 1) * n * n];
            for (r, (row, brow)) in sc
                .scores
                .chunks_exact_mut(n)
                .zip(head_bias.chunks_exact(n))
                .enumerate()
            {
                for (v, &bv) in row.iter_mut().zip(brow) {
                    *v = *v * factor + bv;
                }
                if masked {
                    let lr = sc.labels[r];
                    for (v, &l) in row.iter_mut().zip(&sc.labels) {
                        if l != lr {
                            *v += SHIFT_MASK;
                        }
                    }
                }
                softmax_row(row);
            }
            // SAFETY: out (n × d from column h·d, rows c apart) lies inside this thread's
            // n × c buffer; the scores are n × n; v (n × d from column 2c + h·d, rows c3
            // apart) inside the scratch.
            unsafe {
                matmul(
                    (n, d, n),
                    sc.out.as_mut_ptr().add(h * d),
                    c,
                    false,
                    Strided::rows(sc.scores.as_ptr(), n),
                    Strided::rows(base.add(2 * c + h * d), c3),
                    gemm::Parallelism::None,
                )
            };
        }
        for (t, &row) in sc.rows.iter().enumerate() {
            // SAFETY: `row` < batch · pixels, so its c values lie inside `out`; the windows
            // (with their shift) cover every image position exactly once, so no other thread
            // writes this row.
            let dst = unsafe { shared.part(row * c, c) };
            dst.copy_from_slice(&sc.out[t * c..(t + 1) * c]);
        }
    };
    for_each_index(threads.clamp(1, windows), windows, scratch, work);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's steps in f64 on whole tensors: roll, partition, per-window attention
    /// with the `calculate_mask` mask, reverse, roll back.
    fn naive(qkv: &[f32], s: &WindowShape, logits: Logits<'_>, bias: &[f32]) -> Vec<f64> {
        let &WindowShape {
            batch,
            height: hh,
            width: ww,
            heads,
            head_dim: d,
            window: ws,
            shift,
        } = s;
        let (c, n) = (s.channels(), s.tokens());
        // Rolled image: rolled[y][x] = image[(y + shift) % H][(x + shift) % W].
        let at = |b: usize, y: usize, x: usize, col: usize| -> f64 {
            let (y, x) = ((y + shift) % hh, (x + shift) % ww);
            qkv[((b * hh + y) * ww + x) * 3 * c + col] as f64
        };
        // calculate_mask: labels on the shifted grid by slices.
        let mut img_mask = vec![0usize; hh * ww];
        if shift > 0 {
            let hs = [(0, hh - ws), (hh - ws, hh - shift), (hh - shift, hh)];
            let wsl = [(0, ww - ws), (ww - ws, ww - shift), (ww - shift, ww)];
            let mut cnt = 0;
            for &(h0, h1) in &hs {
                for &(w0, w1) in &wsl {
                    for y in h0..h1 {
                        for x in w0..w1 {
                            img_mask[y * ww + x] = cnt;
                        }
                    }
                    cnt += 1;
                }
            }
        }
        let mut rolled_out = vec![0f64; batch * hh * ww * c];
        for b in 0..batch {
            for wy in 0..hh / ws {
                for wx in 0..ww / ws {
                    let pos = |t: usize| (wy * ws + t / ws, wx * ws + t % ws);
                    for h in 0..heads {
                        let vec_of = |t: usize, off: usize| -> Vec<f64> {
                            let (y, x) = pos(t);
                            (0..d).map(|k| at(b, y, x, off + h * d + k)).collect()
                        };
                        let normalise = |v: Vec<f64>| -> Vec<f64> {
                            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
                            v.into_iter().map(|a| a / norm).collect()
                        };
                        for p in 0..n {
                            let mut scores: Vec<f64> = (0..n)
                                .map(|q| {
                                    let (qv, kv) = (vec_of(p, 0), vec_of(q, c));
                                    let (qv, kv, f) = match logits {
                                        Logits::Scaled(sc) => (qv, kv, sc as f64),
                                        Logits::Cosine(sc) => {
                                            (normalise(qv), normalise(kv), sc[h] as f64)
                                        }
                                    };
                                    let dot: f64 = qv.iter().zip(&kv).map(|(a, b)| a * b).sum();
                                    let (py, px) = pos(p);
                                    let (qy, qx) = pos(q);
                                    let m = if img_mask[py * ww + px] != img_mask[qy * ww + qx] {
                                        SHIFT_MASK as f64
                                    } else {
                                        0.0
                                    };
                                    dot * f + bias[(h * n + p) * n + q] as f64 + m
                                })
                                .collect();
                            let mx = scores.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                            scores.iter_mut().for_each(|v| *v = (*v - mx).exp());
                            let z: f64 = scores.iter().sum();
                            let (py, px) = pos(p);
                            // Roll back: shifted (py, px) is image ((py + s) % H, (px + s) % W).
                            let (y, x) = ((py + shift) % hh, (px + shift) % ww);
                            for k in 0..d {
                                let v: f64 =
                                    (0..n).map(|q| scores[q] / z * vec_of(q, 2 * c)[k]).sum();
                                rolled_out[((b * hh + y) * ww + x) * c + h * d + k] = v;
                            }
                        }
                    }
                }
            }
        }
        rolled_out
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((((i * 31 + seed * 17) % 97) as f32) * 0.021 - 1.0) * 1.3)
            .collect()
    }

    #[test]
    fn matches_roll_partition_attend_reverse() {
        let scales = [3.0f32, 7.5];
        for (batch, height, width, heads, head_dim, window, shift, cosine, threads) in [
            (
                1usize, 8usize, 8usize, 2usize, 3usize, 4usize, 0usize, false, 2usize,
            ),
            (2, 8, 12, 2, 4, 4, 2, false, 3),
            (1, 12, 8, 2, 3, 4, 2, true, 1),
            // One window: the shift wraps within it.
            (1, 4, 4, 1, 5, 4, 2, false, 2),
            (1, 6, 6, 2, 2, 3, 1, true, 4),
        ] {
            let s = WindowShape {
                batch,
                height,
                width,
                heads,
                head_dim,
                window,
                shift,
            };
            let n = s.tokens();
            let qkv = values(batch * height * width * 3 * s.channels(), 1);
            let bias = values(heads * n * n, 2);
            let logits = if cosine {
                Logits::Cosine(&scales[..heads])
            } else {
                Logits::Scaled(0.4)
            };
            let got = window_attention(&qkv, &s, logits, &bias, threads);
            let want = naive(&qkv, &s, logits, &bias);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 2e-5, "{s:?} at {i}: {g} vs {w}");
            }
        }
    }
}
