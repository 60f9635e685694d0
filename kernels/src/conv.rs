//! Stride-1, dilation-1, single-group 2-D convolution of a contiguous (B, C_in, H, W) f32
//! input as GEMMs, three routes:
//!
//! - **Wide grid** (large images). The input is padded once to (C, H+2p, W+2p) and the output
//!   is computed on a "wide" grid of H_out × (W+2p) positions: on that grid, the input operand
//!   of kernel tap (dy, dx) is the padded buffer itself, shifted by dy·(W+2p)+dx — a plain
//!   strided (C_in, N) matrix with row stride (H+2p)(W+2p), with no copy. The conv is then
//!   kh·kw accumulating GEMMs `out[C_out, N] += W_tap[C_out, C_in] · X_shift[C_in, N]`, after
//!   which the 2p garbage columns of each wide row are dropped. Output rows are processed in
//!   chunks sized so that the chunk's accumulator and its input panel stay in L2 across the
//!   taps, and the chunks are spread over the threads (one single-threaded GEMM per chunk and
//!   tap). candle 0.11's CPU conv instead gathers a 9·C_in-row im2col tile for every 512
//!   output pixels with scalar, cache-unfriendly stores, and that gather costs more than the
//!   GEMM it feeds.
//! - **im2col** (small images: the UNet's lower levels, where the wide grid's 2p garbage
//!   columns are a large share and the per-tap GEMMs are short): the kh·kw shifted copies of
//!   the image are stacked into one (kh·kw·C_in, H_out·W_out) panel (row copies, zero padding
//!   written once) and the conv is a single GEMM with K = kh·kw·C_in.
//! - **1×1 without padding**: one GEMM per image, straight into the output.
//!
//! Weights ("taps") are laid out (C_out, kh·kw, C_in) contiguous: tap t is the (C_out, C_in)
//! matrix at offset t·C_in with row stride kh·kw·C_in, and the whole is the
//! (C_out, kh·kw·C_in) matrix of the im2col GEMM.

use crate::epilogue::{fill_accumulator, store_row, BiasAlong, Epilogue};
use crate::matmul::{gemm_parallelism, matmul, Strided};
use crate::parallel::{for_each_index, SharedMut};

/// Shape of one stride-1, dilation-1, single-group convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub b: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub pad: usize,
}

impl ConvShape {
    /// Padded height.
    pub fn hp(&self) -> usize {
        self.h + 2 * self.pad
    }
    /// Padded width.
    pub fn wp(&self) -> usize {
        self.w + 2 * self.pad
    }
    /// Output height.
    pub fn ho(&self) -> usize {
        self.hp() + 1 - self.kh
    }
    /// Output width.
    pub fn wo(&self) -> usize {
        self.wp() + 1 - self.kw
    }
}

/// How the work is split ([`Plan::auto`] for the measured choice; the others for tests and the
/// benchmark's comparison of variants).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Output rows per chunk; `None`: the whole image in one chunk (one GEMM per tap);
    /// `Some(0)`: sized so a chunk's accumulator and input panel fit in L2.
    pub rows_per_chunk: Option<usize>,
    /// Threads to use.
    pub threads: usize,
    /// `true`: spread the chunks over the threads, each running single-threaded GEMMs;
    /// `false`: run the chunks in turn, each GEMM parallel over rayon's threads.
    pub spread: bool,
    /// `Some(true)`: the im2col route (one GEMM per image, K = kh·kw·C_in); `Some(false)`:
    /// the wide-grid route; `None`: im2col for small images (see [`Plan::use_im2col`]).
    pub im2col: Option<bool>,
}

/// Largest image (H_out·W_out) the automatic choice sends through im2col, and the largest
/// im2col panel it allows. Measured (`cargo bench -p diffsr-kernels --bench conv_cpu`,
/// 2 threads, batch 2): im2col wins at 8² (11.4 against 13.6 ms, 1024 channels), ties at 16²
/// and loses from 32² up, where building the panel (kh·kw copies of the image, row by row)
/// costs more than the wide grid's wasted columns (38 against 60 ms at 64², 256 channels).
const IM2COL_MAX_PIXELS: usize = 12 * 12;
const IM2COL_MAX_BYTES: usize = 16 << 20;

/// Bytes of accumulator + input panel a chunk should keep in L2 (half of a 2 MiB L2).
const CHUNK_BYTES: usize = 1 << 20;

impl Plan {
    /// The measured choice on `threads` threads: chunks sized for L2, spread over the threads,
    /// im2col for small images.
    pub fn auto(threads: usize) -> Self {
        Plan {
            rows_per_chunk: Some(0),
            threads: threads.max(1),
            spread: true,
            im2col: None,
        }
    }

    /// Whether this shape takes the im2col route.
    pub fn use_im2col(&self, s: &ConvShape) -> bool {
        self.im2col.unwrap_or_else(|| {
            let pixels = s.ho() * s.wo();
            let panel = s.kh * s.kw * s.ci * pixels * 4;
            pixels <= IM2COL_MAX_PIXELS && panel <= IM2COL_MAX_BYTES
        })
    }

    /// Rows per chunk for this shape (`Some(0)` means "choose").
    fn rows(&self, s: &ConvShape) -> usize {
        let ho = s.ho();
        match self.rows_per_chunk {
            None => ho,
            Some(0) => {
                let per_row = (s.co + s.ci) * s.wp() * 4;
                let r = (CHUNK_BYTES / per_row.max(1)).max(1);
                // Each GEMM reads its C_out×C_in tap too: make the chunk wide enough (N ≥
                // 4·C_out·C_in/(C_out+C_in)) that this stays small beside its input and output.
                let n_min = 4 * s.co * s.ci / (s.co + s.ci).max(1);
                let r = r.max(n_min.div_ceil(s.wp()));
                // Give every thread some chunks to balance the last ones.
                let min_chunks = if self.spread { 2 * self.threads } else { 1 };
                let cap = (s.b * ho).div_ceil(min_chunks).max(1);
                r.min(cap).min(ho)
            }
            Some(r) => r.clamp(1, ho),
        }
    }
}

/// The convolution of a contiguous (B, C_in, H, W) input `x` with `taps` (C_out, kh·kw, C_in),
/// then the epilogue (bias per output channel, a (B, C_out, H_out, W_out) residual, the
/// activation): a contiguous (B, C_out, H_out, W_out) result.
///
/// # Panics
/// When a buffer's length does not match the shape.
pub fn conv2d(x: &[f32], taps: &[f32], epilogue: &Epilogue, s: &ConvShape, plan: Plan) -> Vec<f32> {
    let (b, ci, h, w, co) = (s.b, s.ci, s.h, s.w, s.co);
    let (ho, wo) = (s.ho(), s.wo());
    assert_eq!(x.len(), b * ci * h * w);
    assert_eq!(taps.len(), s.kh * s.kw * co * ci);
    if let Some(bias) = epilogue.bias {
        assert_eq!(bias.len(), co);
    }
    if let Some(residual) = epilogue.residual {
        assert_eq!(residual.len(), b * co * ho * wo);
    }
    let mut out = vec![0f32; b * co * ho * wo];
    if out.is_empty() {
        return out;
    }
    if s.kh == 1 && s.kw == 1 && s.pad == 0 {
        conv_1x1(x, taps, epilogue, s, plan.threads, &mut out);
    } else if plan.use_im2col(s) {
        conv_im2col(x, taps, epilogue, s, plan.threads, &mut out);
    } else {
        conv_wide(x, taps, epilogue, s, plan, &mut out);
    }
    epilogue.activation.apply_planes(&mut out, ho * wo);
    out
}

/// A 1×1 conv without padding: one GEMM per image, straight into the output.
fn conv_1x1(
    x: &[f32],
    taps: &[f32],
    epilogue: &Epilogue,
    s: &ConvShape,
    threads: usize,
    out: &mut [f32],
) {
    let (ci, co) = (s.ci, s.co);
    let n = s.h * s.w;
    let par = gemm_parallelism(threads);
    for bi in 0..s.b {
        let range = bi * co * n..(bi + 1) * co * n;
        let residual = epilogue.residual.map(|r| &r[range.clone()]);
        let dst = &mut out[range];
        let read = fill_accumulator(dst, n, epilogue.bias, BiasAlong::Rows, residual);
        // SAFETY: dst is co×n (row stride n) inside `out`, lhs co×ci (row stride ci) is
        // `taps` (asserted co·ci long for a 1×1 kernel), rhs ci×n (row stride n) is image bi
        // of x (asserted b·ci·n long); dst is a separate buffer.
        unsafe {
            matmul(
                (co, n, ci),
                dst.as_mut_ptr(),
                n,
                read,
                Strided::rows(taps.as_ptr(), ci),
                Strided::rows(x[bi * ci * n..].as_ptr(), n),
                par,
            );
        }
    }
}

/// The wide-grid route (see the module header).
fn conv_wide(
    x: &[f32],
    taps: &[f32],
    epilogue: &Epilogue,
    s: &ConvShape,
    plan: Plan,
    out: &mut [f32],
) {
    let (b, ci, h, w, co) = (s.b, s.ci, s.h, s.w, s.co);
    let (hp, wp, ho, wo) = (s.hp(), s.wp(), s.ho(), s.wo());
    // Pad once; kw - 1 trailing zeros let the last tap's view of the last channel run to the
    // end of its final (garbage) wide row.
    let img = ci * hp * wp;
    let plen = img + s.kw - 1;
    let mut padded = vec![0f32; b * plen];
    for bi in 0..b {
        for c in 0..ci {
            for y in 0..h {
                let src = &x[((bi * ci + c) * h + y) * w..][..w];
                let d = bi * plen + c * hp * wp + (y + s.pad) * wp + s.pad;
                padded[d..d + w].copy_from_slice(src);
            }
        }
    }

    let rows = plan.rows(s);
    let chunks_per_img = ho.div_ceil(rows);
    let n_chunks = b * chunks_per_img;
    let threads = if plan.spread {
        plan.threads.max(1).min(n_chunks)
    } else {
        1
    };
    // One chunk at a time: each GEMM uses the threads itself.
    let par = if threads <= 1 {
        gemm_parallelism(plan.threads)
    } else {
        gemm::Parallelism::None
    };
    let shared = SharedMut::new(out);
    let padded = &padded[..];

    let run_chunk = |acc: &mut Vec<f32>, idx: usize| {
        let bi = idx / chunks_per_img;
        let r0 = (idx % chunks_per_img) * rows;
        let r1 = (r0 + rows).min(ho);
        let n = (r1 - r0) * wp;
        acc.clear();
        acc.resize(co * n, 0.0);
        let mut read = fill_accumulator(acc, n, epilogue.bias, BiasAlong::Rows, None);
        for dy in 0..s.kh {
            for dx in 0..s.kw {
                let t = dy * s.kw + dx;
                let off = bi * plen + (r0 + dy) * wp + dx;
                // SAFETY: the view's last element is (ci-1)·hp·wp + off + n - 1 <
                // bi·plen + plen (see the trailing zeros above); tap t's rows lie in `taps`;
                // acc is co×n and this thread's own.
                unsafe {
                    matmul(
                        (co, n, ci),
                        acc.as_mut_ptr(),
                        n,
                        read,
                        Strided::rows(taps[t * ci..].as_ptr(), s.kh * s.kw * ci),
                        Strided::rows(padded[off..].as_ptr(), hp * wp),
                        par,
                    );
                }
                read = true;
            }
        }
        // Drop the garbage columns: wide row y of channel o → output row r0 + y, adding the
        // residual's row on the way when there is one.
        for o in 0..co {
            for y in 0..r1 - r0 {
                let src = &acc[o * n + y * wp..][..wo];
                let at = ((bi * co + o) * ho + r0 + y) * wo;
                // SAFETY: output rows r0..r1 of image bi, channel o, lie inside `out` and
                // belong to this chunk alone.
                let dst = unsafe { shared.part(at, wo) };
                let res = epilogue.residual.map(|r| &r[at..at + wo]);
                store_row(dst, src, None, res, None);
            }
        }
    };
    for_each_index(threads, n_chunks, Vec::new, run_chunk);
}

/// The im2col route: the (kh·kw·C_in, B·H_out·W_out) panel of shifted rows of every image
/// side by side, then one GEMM `out[C_out, B·pixels] = taps[C_out, kh·kw·C_in] · panel`.
/// Putting the batch in the GEMM's N reads the weights once, not once per image: at the
/// UNet's 4×4 level (1024 channels, 16 pixels an image) that read is most of the work.
fn conv_im2col(
    x: &[f32],
    taps: &[f32],
    epilogue: &Epilogue,
    s: &ConvShape,
    threads: usize,
    out: &mut [f32],
) {
    let (ci, h, w, co) = (s.ci, s.h, s.w, s.co);
    let (ho, wo) = (s.ho(), s.wo());
    let pixels = ho * wo;
    let n = s.b * pixels;
    let k = s.kh * s.kw * ci;
    // Padding positions are never written: they stay zero.
    let mut panel = vec![0f32; k * n];
    for bi in 0..s.b {
        let img = &x[bi * ci * h * w..(bi + 1) * ci * h * w];
        for dy in 0..s.kh {
            for dx in 0..s.kw {
                // Output columns whose source column x + dx - pad lies inside the image.
                let x0 = s.pad.saturating_sub(dx);
                let x1 = (w + s.pad).saturating_sub(dx).min(wo);
                if x0 >= x1 {
                    continue;
                }
                let src_x0 = x0 + dx - s.pad;
                for c in 0..ci {
                    let row = ((dy * s.kw + dx) * ci + c) * n + bi * pixels;
                    for y in 0..ho {
                        let sy = y + dy;
                        if sy < s.pad || sy - s.pad >= h {
                            continue;
                        }
                        let src = &img[(c * h + sy - s.pad) * w + src_x0..][..x1 - x0];
                        panel[row + y * wo + x0..row + y * wo + x1].copy_from_slice(src);
                    }
                }
            }
        }
    }
    // The GEMM's (C_out, B·pixels) result, image-major for one image (then it is `out`
    // itself), gathered from / scattered to (B, C_out, pixels) otherwise.
    let mut staged = Vec::new();
    let (dst, read): (&mut [f32], bool) = if s.b == 1 {
        let read = fill_accumulator(out, n, epilogue.bias, BiasAlong::Rows, epilogue.residual);
        (&mut *out, read)
    } else {
        staged.resize(co * n, 0f32);
        for bi in 0..s.b {
            for o in 0..co {
                fill_accumulator(
                    &mut staged[o * n + bi * pixels..][..pixels],
                    pixels,
                    epilogue.bias.map(|b| &b[o..o + 1]),
                    BiasAlong::Rows,
                    epilogue
                        .residual
                        .map(|r| &r[(bi * co + o) * pixels..][..pixels]),
                );
            }
        }
        let read = epilogue.bias.is_some() || epilogue.residual.is_some();
        (&mut staged, read)
    };
    // SAFETY: dst is co×n (row stride n), lhs co×k (row stride k) is `taps` (asserted
    // kh·kw·co·ci long), rhs k×n (row stride n) is `panel`; dst is neither.
    unsafe {
        matmul(
            (co, n, k),
            dst.as_mut_ptr(),
            n,
            read,
            Strided::rows(taps.as_ptr(), k),
            Strided::rows(panel.as_ptr(), n),
            gemm_parallelism(threads),
        );
    }
    if s.b > 1 {
        for bi in 0..s.b {
            for o in 0..co {
                out[(bi * co + o) * pixels..][..pixels]
                    .copy_from_slice(&staged[o * n + bi * pixels..][..pixels]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;

    /// The direct sum over input channels and kernel taps, in f64, with bias and residual.
    pub(crate) fn naive(
        x: &[f32],
        taps: &[f32],
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        s: &ConvShape,
    ) -> Vec<f64> {
        let (ho, wo) = (s.ho(), s.wo());
        let mut out = vec![0f64; s.b * s.co * ho * wo];
        for bi in 0..s.b {
            for o in 0..s.co {
                for y in 0..ho {
                    for xx in 0..wo {
                        let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                        for c in 0..s.ci {
                            for ky in 0..s.kh {
                                for kx in 0..s.kw {
                                    let (sy, sx) = (y + ky, xx + kx);
                                    if sy < s.pad || sx < s.pad {
                                        continue;
                                    }
                                    let (sy, sx) = (sy - s.pad, sx - s.pad);
                                    if sy >= s.h || sx >= s.w {
                                        continue;
                                    }
                                    let t = ky * s.kw + kx;
                                    acc += taps[(o * s.kh * s.kw + t) * s.ci + c] as f64
                                        * x[((bi * s.ci + c) * s.h + sy) * s.w + sx] as f64;
                                }
                            }
                        }
                        let at = ((bi * s.co + o) * ho + y) * wo + xx;
                        out[at] = acc + residual.map_or(0.0, |r| r[at] as f64);
                    }
                }
            }
        }
        out
    }

    pub(crate) fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 11) % 101) as f32) * 0.02 - 1.0)
            .collect()
    }

    /// Every route and split against the direct sum: 1×1, im2col (batched and not), the wide
    /// grid in whole-image, sequential and spread chunks; with bias, residual and rectifier.
    #[test]
    fn every_route_equals_the_direct_sum() {
        let plans = [
            Plan::auto(1),
            Plan::auto(3),
            Plan {
                rows_per_chunk: None,
                threads: 2,
                spread: false,
                im2col: Some(false),
            },
            Plan {
                rows_per_chunk: Some(1),
                threads: 3,
                spread: true,
                im2col: Some(false),
            },
            Plan {
                rows_per_chunk: Some(2),
                threads: 2,
                spread: false,
                im2col: Some(false),
            },
            Plan {
                im2col: Some(true),
                ..Plan::auto(2)
            },
        ];
        for (b, ci, co, h, w, k, pad) in [
            (1usize, 3usize, 4usize, 5usize, 7usize, 3usize, 1usize),
            (2, 8, 5, 9, 4, 3, 1),
            (3, 6, 7, 6, 6, 1, 0),
            (2, 5, 3, 7, 9, 3, 0),
            (1, 4, 4, 1, 9, 3, 1),
            (2, 4, 6, 8, 8, 1, 1),
        ] {
            let s = ConvShape {
                b,
                ci,
                h,
                w,
                co,
                kh: k,
                kw: k,
                pad,
            };
            let x = values(b * ci * h * w, 1);
            let taps = values(co * k * k * ci, 2);
            let bias = values(co, 3);
            let residual = values(b * co * s.ho() * s.wo(), 4);
            let slopes: Vec<f32> = (0..co).map(|o| 0.25 * o as f32 - 0.5).collect();
            let want = naive(&x, &taps, Some(&bias), Some(&residual), &s);
            let plain = naive(&x, &taps, None, None, &s);
            let plane = s.ho() * s.wo();
            for plan in plans {
                let got = conv2d(&x, &taps, &Epilogue::default(), &s, plan);
                for (g, e) in got.iter().zip(&plain) {
                    assert!((*g as f64 - e).abs() < 1e-4, "{s:?} {plan:?}: {g} vs {e}");
                }
                let epilogue = Epilogue {
                    bias: Some(&bias),
                    residual: Some(&residual),
                    activation: Activation::Rectify(&slopes),
                };
                let got = conv2d(&x, &taps, &epilogue, &s, plan);
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    let a = slopes[(i / plane) % co] as f64;
                    let e = if *e >= 0.0 { *e } else { a * e };
                    assert!(
                        (*g as f64 - e).abs() < 1e-4,
                        "{s:?} {plan:?} at {i}: {g} vs {e}"
                    );
                }
            }
        }
    }
}
