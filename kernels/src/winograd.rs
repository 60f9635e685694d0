//! 3×3, stride-1, padding-1 convolution by Winograd's minimal filtering (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2015), in two variants: F(2×2, 3×3), each
//! 2×2 output tile from a 4×4 input tile with 16 multiplies per (input, output) channel pair
//! instead of 36 (2.25× fewer), and F(4×4, 3×3), 4×4 output tiles from 6×6 input tiles, 36
//! instead of 144 (4× fewer), whose transformed data is also 2.25 instead of 4 values per
//! output value: less memory traffic, which is what bounds the 64-channel layers of the
//! compact GAN. oneDNN and ncnn use the same F(4×4) matrices in f32.
//!
//! With input tile α = m + 2 for output tile m: per α×α input tile d and 3×3 kernel g,
//! `Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` (matrices and transform loops in `winograd_kernels.rs`).
//! Summed over input channels, the element-wise product becomes α² matrix products
//! `M[ξ] = U[ξ]·V[ξ]`, `U[ξ]` (C_out × C_in) the transformed kernels and `V[ξ]`
//! (C_in × tiles) the transformed input.
//! F(2×2)'s transforms only add, subtract and halve, so it differs from the direct sum by
//! rounding alone; F(4×4)'s multiply by up to 8 and 1/24, which costs one to two decimal
//! digits (error up to ~1e-5 of the output's scale instead of ~3e-7; cuDNN's TF32 default
//! on GPUs is at 1e-3).
//!
//! Work is split in blocks of tile rows sized so that a block's V and M stay in L2, spread over
//! the threads, each block's α² GEMMs single-threaded.

use crate::epilogue::{store_row, Activation, Epilogue};
use crate::fast_math::{affine_silu, axpy};
use crate::matmul::{matmul, Strided};
use crate::parallel::{for_each_index, for_each_span, SharedMut};
use crate::winograd_kernels::{Kernels, F2, F4, G_F2, G_F4};

/// Bytes of V + M one block aims for.
const BLOCK_BYTES: usize = 1 << 20;
/// Fewest tiles a block's GEMMs get (their N), whatever the channel counts.
const MIN_BLOCK_TILES: usize = 64;

/// The Winograd variant: output tiles of 2×2 or 4×4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// F(2×2, 3×3): rounding alone away from the direct sum.
    F2,
    /// F(4×4, 3×3): fewer multiplies and less traffic, one to two digits less precise.
    F4,
}

impl Tile {
    /// Output tile side m.
    pub fn m(self) -> usize {
        match self {
            Self::F2 => 2,
            Self::F4 => 4,
        }
    }

    /// Input tile side α = m + 2.
    pub fn alpha(self) -> usize {
        self.m() + 2
    }

    fn g(self) -> &'static [[f32; 3]] {
        match self {
            Self::F2 => &G_F2,
            Self::F4 => &G_F4,
        }
    }
}

/// `U[ξ][o][c] = (G g Gᵀ)[ξ]` for the (C_out, 9, C_in) taps of a 3×3 kernel: α²·C_out·C_in
/// values. Each `U[ξ][o]` is a combination of the nine (contiguous) tap rows `taps[o][k]`, so
/// the work runs as vector loops over C_in; zero coefficients are skipped.
pub fn transform_weights(
    taps: &[f32],
    co: usize,
    ci: usize,
    tile: Tile,
    threads: usize,
) -> Vec<f32> {
    assert_eq!(taps.len(), co * 9 * ci);
    let (g, a) = (tile.g(), tile.alpha());
    // coef[ξ][k] = G[i][ky]·G[j][kx] for ξ = α·i + j, k = 3·ky + kx.
    let coef: Vec<[f32; 9]> = (0..a * a)
        .map(|xi| {
            let (i, j) = (xi / a, xi % a);
            std::array::from_fn(|k| g[i][k / 3] * g[j][k % 3])
        })
        .collect();
    // Written once, row by row, from a row made in L1: U reaches 75 MB (1024 → 512 channels,
    // F(4×4)), and zeroing it first, for the sums to accumulate into, was 2 % of a UNet step.
    let len = a * a * co * ci;
    let mut u: Vec<f32> = Vec::with_capacity(len);
    let shared = SharedMut::spare_capacity(&mut u);
    // Output channels outer, split over the threads: one channel's nine tap rows stay in L1
    // while its α² rows of U are made.
    let make = |o_range: std::ops::Range<usize>| {
        let mut sum = vec![0f32; ci];
        for o in o_range {
            let rows = &taps[o * 9 * ci..(o + 1) * 9 * ci];
            for (xi, row) in coef.iter().enumerate() {
                let mut terms = row.iter().enumerate().filter(|(_, &c)| c != 0.0);
                match terms.next() {
                    Some((k, &c)) => {
                        affine_silu(&rows[k * ci..(k + 1) * ci], &mut sum, c, 0.0, false)
                    }
                    None => sum.fill(0.0),
                }
                for (k, &c) in terms {
                    axpy(&mut sum, c, &rows[k * ci..(k + 1) * ci]);
                }
                // SAFETY: row (ξ, o), ci values from (ξ·C_out + o)·C_in, lies inside `u`'s
                // capacity of α²·C_out·C_in and belongs to output channel o, which only this
                // span writes; `sum` is a separate buffer of ci values.
                unsafe {
                    std::ptr::copy_nonoverlapping(sum.as_ptr(), shared.ptr((xi * co + o) * ci), ci)
                };
            }
        }
    };
    let threads = threads.clamp(1, co.max(1));
    let per = co.div_ceil(threads).max(1);
    for_each_span(co, per, make);
    // SAFETY: the spans above cover every output channel o < C_out, and each wrote its rows
    // (ξ, o) for every ξ < α²: all `len` values of the capacity are initialised.
    unsafe { u.set_len(len) };
    u
}

/// Shape of one convolution on this route.
#[derive(Debug, Clone, Copy)]
pub struct WinogradShape {
    pub b: usize,
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
}

/// out (B, C_out, H, W) = conv3x3(x (B, C_in, H, W), padding 1) with `u` from
/// [`transform_weights`] for the same `tile`, then the epilogue (bias, residual, rectifier) in
/// the output pass.
///
/// # Panics
/// When a buffer's length does not match the shape.
pub fn conv3x3(
    x: &[f32],
    u: &[f32],
    tile: Tile,
    epilogue: &Epilogue,
    s: &WinogradShape,
    threads: usize,
) -> Vec<f32> {
    let WinogradShape { b, ci, co, h, w } = *s;
    assert_eq!(x.len(), b * ci * h * w);
    assert_eq!(u.len(), tile.alpha() * tile.alpha() * co * ci);
    if let Some(bias) = epilogue.bias {
        assert_eq!(bias.len(), co);
    }
    if let Some(residual) = epilogue.residual {
        assert_eq!(residual.len(), b * co * h * w);
    }
    let mut out = vec![0f32; b * co * h * w];
    if out.is_empty() || ci == 0 {
        let plane = h * w;
        for (i, dst) in out.chunks_mut(plane.max(1)).enumerate() {
            let o = i % co;
            let sum = vec![epilogue.bias_of(o); dst.len()];
            let res = epilogue.residual.map(|r| &r[i * plane..(i + 1) * plane]);
            store_row(dst, &sum, None, res, epilogue.slope_of(o));
        }
    } else {
        match tile {
            Tile::F2 => run(&F2, x, u, epilogue, s, threads, &mut out),
            Tile::F4 => run(&F4, x, u, epilogue, s, threads, &mut out),
        }
    }
    // The rectifier is fused into the stores; the GELU is not.
    if let Activation::GeluErf = epilogue.activation {
        epilogue.activation.apply_planes(&mut out, h * w);
    }
    out
}

/// The blocks of tile rows of every image, taken by the threads from a shared counter.
fn run<const A: usize, const M: usize>(
    k: &Kernels<A, M>,
    x: &[f32],
    u: &[f32],
    epilogue: &Epilogue,
    s: &WinogradShape,
    threads: usize,
    out: &mut [f32],
) {
    let WinogradShape { b, ci, co, h, w } = *s;
    let (th, tw) = (h.div_ceil(M), w.div_ceil(M));
    // Tiles read padded rows -1..M·th+1 and columns -1..M·tw+1 of each channel; the padding is
    // never materialised (a padded copy of the input would move it through memory twice more,
    // which at 64 channels costs more than the GEMMs): rows outside the image read zeros, and
    // the padding columns of the transformed rows are zero.
    let wp = M * tw + 2;
    let per_tile = A * A * (ci + co) * 4;
    let rows_per_block = (BLOCK_BYTES / (per_tile * tw).max(1))
        .max(MIN_BLOCK_TILES.div_ceil(tw))
        .clamp(1, th);
    let blocks_per_image = th.div_ceil(rows_per_block);
    let n_blocks = b * blocks_per_image;
    let image_len = co * h * w;
    let shared = SharedMut::new(out);
    let work = |bufs: &mut Buffers, idx: usize| {
        let bi = idx / blocks_per_image;
        let ty0 = (idx % blocks_per_image) * rows_per_block;
        let block = Block {
            input: &x[bi * ci * h * w..(bi + 1) * ci * h * w],
            h,
            w,
            ty0,
            ty1: (ty0 + rows_per_block).min(th),
            tw,
            wp,
        };
        block.transform_input(k, ci, bufs);
        block.multiply::<A>(u, ci, co, bufs);
        // Block idx writes output rows M·ty0..M·ty1 of image bi only.
        let image = Epilogue {
            residual: epilogue
                .residual
                .map(|r| &r[bi * image_len..(bi + 1) * image_len]),
            ..*epilogue
        };
        block.transform_output(k, co, &image, (&shared, bi * image_len), bufs);
    };
    for_each_index(threads, n_blocks, Buffers::default, work);
}

/// Per-thread scratch: V (α² × C_in × T), M (α² × C_out × T), a zero image row and the
/// transformed rows.
#[derive(Default)]
struct Buffers {
    v: Vec<f32>,
    m: Vec<f32>,
    zero_row: Vec<f32>,
    rows: Vec<f32>,
}

/// A block of tile rows ty0..ty1 of one image.
struct Block<'a> {
    /// The image's channels, (C_in, h, w).
    input: &'a [f32],
    h: usize,
    w: usize,
    ty0: usize,
    ty1: usize,
    tw: usize,
    /// Padded row length, m·tw + 2.
    wp: usize,
}

impl Block<'_> {
    fn tiles(&self) -> usize {
        (self.ty1 - self.ty0) * self.tw
    }

    /// V[ξ = α·i + j][c][t] = (Bᵀ d B)[i][j] of tile t, channel c.
    fn transform_input<const A: usize, const M: usize>(
        &self,
        k: &Kernels<A, M>,
        ci: usize,
        bufs: &mut Buffers,
    ) {
        let (tw, wp, nt) = (self.tw, self.wp, self.tiles());
        // Every value is written below: grow, never clear.
        grow(&mut bufs.v, A * A * ci * nt);
        let (h, w) = (self.h, self.w);
        // The α transformed rows, padded: Bᵀ is linear, so the padding columns (0 and w+1..)
        // of a transformed row are zero; they are written once here and the transform only
        // ever writes columns 1..=w. Rows above and below the image read a zero row.
        bufs.rows.clear();
        bufs.rows.resize(A * wp, 0.0);
        bufs.zero_row.clear();
        bufs.zero_row.resize(w, 0.0);
        let zero_row = &bufs.zero_row[..];
        for c in 0..ci {
            let plane = &self.input[c * h * w..(c + 1) * h * w];
            for ty in self.ty0..self.ty1 {
                // Bᵀ d: the row combinations of image rows M·ty - 1 + r, read in place.
                let x: [&[f32]; A] =
                    std::array::from_fn(|r| match (M * ty + r).checked_sub(1).filter(|&y| y < h) {
                        Some(y) => &plane[y * w..(y + 1) * w],
                        None => zero_row,
                    });
                (k.input_rows)(x, split_rows(&mut bufs.rows, 1, wp, w));
                // (Bᵀ d) B: the same combinations across each tile's columns of each row.
                let t0 = (ty - self.ty0) * tw;
                for (i, d) in bufs.rows.chunks_exact(wp).enumerate() {
                    let first = (A * i * ci + c) * nt + t0;
                    (k.input_cols)(d, split_rows(&mut bufs.v, first, ci * nt, tw));
                }
            }
        }
    }

    /// M[ξ] (C_out × T) = U[ξ] (C_out × C_in) · V[ξ] (C_in × T), for the α² ξ.
    fn multiply<const A: usize>(&self, u: &[f32], ci: usize, co: usize, bufs: &mut Buffers) {
        let nt = self.tiles();
        // The GEMMs overwrite M (they do not read it): grow, never clear.
        grow(&mut bufs.m, A * A * co * nt);
        for xi in 0..A * A {
            // SAFETY: M[ξ] is co×nt (row stride nt) inside `m` (grown to α²·co·nt above),
            // U[ξ] co×ci (row stride ci) inside `u` (asserted α²·co·ci long), V[ξ] ci×nt (row
            // stride nt) inside `v` (grown to α²·ci·nt by transform_input); m is this
            // thread's own and overlaps neither.
            unsafe {
                matmul(
                    (co, nt, ci),
                    bufs.m.as_mut_ptr().add(xi * co * nt),
                    nt,
                    false,
                    Strided::rows(u.as_ptr().add(xi * co * ci), ci),
                    Strided::rows(bufs.v.as_ptr().add(xi * ci * nt), nt),
                    gemm::Parallelism::None,
                );
            }
        }
    }

    /// Y = Aᵀ M A per tile, then the epilogue (its residual is this image's), into output
    /// rows M·ty0..M·ty1.
    fn transform_output<const A: usize, const M: usize>(
        &self,
        k: &Kernels<A, M>,
        co: usize,
        epilogue: &Epilogue,
        (out, image_start): (&SharedMut, usize),
        bufs: &Buffers,
    ) {
        let (tw, nt, h, w) = (self.tw, self.tiles(), self.h, self.w);
        // S[r][j] (nt each: every tile of the block) for r < M, j < A, then one interleaved
        // output row at a time.
        let mut s = vec![0f32; M * A * nt];
        let mut y = vec![0f32; M * tw];
        for o in 0..co {
            let (b, slope) = (epilogue.bias_of(o), epilogue.slope_of(o));
            // Aᵀ M: S[r][j] for r < M, over all the block's tiles at once (long vector loops),
            // one column index j at a time.
            for j in 0..A {
                let m: [&[f32]; A] = std::array::from_fn(|i| {
                    let row = ((A * i + j) * co + o) * nt;
                    &bufs.m[row..row + nt]
                });
                (k.output_rows)(m, split_rows(&mut s, j * nt, A * nt, nt));
            }
            for ty in self.ty0..self.ty1 {
                let t0 = (ty - self.ty0) * tw;
                // (Aᵀ M) A: the M output columns of each tile, interleaved into a row.
                for r in 0..M {
                    let oy = M * ty + r;
                    if oy >= h {
                        break;
                    }
                    let sr = &s[r * A * nt..(r + 1) * A * nt];
                    let q: [&[f32]; A] =
                        std::array::from_fn(|j| &sr[j * nt + t0..j * nt + t0 + tw]);
                    (k.output_cols)(q, b, &mut y);
                    // SAFETY: output row oy < h of channel o of this image lies inside the
                    // output (image_start + image length ≤ its length) and belongs to this
                    // block alone (tile rows ty0..ty1).
                    let row = unsafe { out.part(image_start + (o * h + oy) * w, w) };
                    let res = epilogue
                        .residual
                        .map(|r| &r[(o * h + oy) * w..(o * h + oy + 1) * w]);
                    store_row(row, &y[..w], None, res, slope);
                }
            }
        }
    }
}

/// Makes `buf` at least `len` long, leaving what it holds (the callers overwrite it).
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// N disjoint `len`-long rows of `buf`, the first at `first`, `stride` ≥ `len` apart.
fn split_rows<const N: usize>(
    buf: &mut [f32],
    first: usize,
    stride: usize,
    len: usize,
) -> [&mut [f32]; N] {
    assert!(stride >= len && first + (N - 1) * stride + len <= buf.len());
    let mut rest = &mut buf[first..];
    std::array::from_fn(|i| {
        let take = if i + 1 < N { stride } else { len };
        let (row, tail) = std::mem::take(&mut rest).split_at_mut(take);
        rest = tail;
        &mut row[..len]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A convolution's input, 3×3 taps (co, 3, 3, ci), bias and residual: fixed patterns that
    /// cover both signs without repeating along a row.
    struct Operands {
        x: Vec<f32>,
        taps: Vec<f32>,
        bias: Vec<f32>,
        residual: Vec<f32>,
    }

    fn operands(s: &WinogradShape) -> Operands {
        let WinogradShape { b, ci, co, h, w } = *s;
        Operands {
            x: (0..b * ci * h * w)
                .map(|i| ((i * 37 % 101) as f32) * 0.02 - 1.0)
                .collect(),
            taps: (0..co * 9 * ci)
                .map(|i| ((i * 13 % 29) as f32) * 0.05 - 0.7)
                .collect(),
            bias: (0..co).map(|o| o as f32 * 0.1 - 0.2).collect(),
            residual: (0..b * co * h * w).map(|i| (i % 5) as f32 * 0.3).collect(),
        }
    }

    /// Direct 3×3 convolution with padding 1, in f64.
    fn direct(x: &[f32], taps: &[f32], bias: &[f32], s: &WinogradShape) -> Vec<f64> {
        let WinogradShape { b, ci, co, h, w } = *s;
        let mut out = vec![0f64; b * co * h * w];
        for bi in 0..b {
            for o in 0..co {
                for y in 0..h {
                    for xx in 0..w {
                        let mut acc = bias[o] as f64;
                        for c in 0..ci {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (sy, sx) = (y + ky, xx + kx);
                                    if sy < 1 || sx < 1 || sy > h || sx > w {
                                        continue;
                                    }
                                    acc += taps[(o * 9 + ky * 3 + kx) * ci + c] as f64
                                        * x[((bi * ci + c) * h + sy - 1) * w + sx - 1] as f64;
                                }
                            }
                        }
                        out[((bi * co + o) * h + y) * w + xx] = acc;
                    }
                }
            }
        }
        out
    }

    /// Both variants against the direct sum in f64, on sizes that are and are not multiples
    /// of the tile, with the bias, a residual and a rectifier. F(2×2) is held to 2e-6 of the
    /// output's scale, F(4×4) to 4e-5 (its transforms scale by up to 8 and 1/24; measured
    /// worst 7e-6 at 16 input channels, against 2.5e-7 for F(2×2)).
    #[test]
    fn equals_the_direct_convolution() {
        for (tile, tol) in [(Tile::F2, 2e-6), (Tile::F4, 4e-5)] {
            check_tile(tile, tol);
        }
    }

    /// Both tiles against the GEMM routes of [`crate::conv`] (which sum directly), on the
    /// same f32 inputs, with every part of the epilogue.
    #[test]
    fn equals_the_gemm_routes() {
        use crate::conv::{conv2d, ConvShape, Plan};
        let (b, ci, co, h, w) = (2usize, 24usize, 16usize, 19usize, 26usize);
        let Operands {
            x,
            taps,
            bias,
            residual,
        } = operands(&WinogradShape { b, ci, co, h, w });
        let slopes: Vec<f32> = (0..co).map(|o| 0.1 * o as f32).collect();
        let epilogue = Epilogue {
            bias: Some(&bias),
            residual: Some(&residual),
            activation: Activation::Rectify(&slopes),
        };
        let shape = ConvShape {
            b,
            ci,
            h,
            w,
            co,
            kh: 3,
            kw: 3,
            pad: 1,
        };
        let direct = conv2d(&x, &taps, &epilogue, &shape, Plan::auto(2));
        let scale = direct.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (tile, tol) in [(Tile::F2, 2e-6), (Tile::F4, 4e-5)] {
            let u = transform_weights(&taps, co, ci, tile, 2);
            let s = WinogradShape { b, ci, co, h, w };
            let got = conv3x3(&x, &u, tile, &epilogue, &s, 2);
            for (i, (g, d)) in got.iter().zip(&direct).enumerate() {
                assert!((g - d).abs() <= tol * scale, "{tile:?} at {i}: {g} vs {d}");
            }
        }
    }

    fn check_tile(tile: Tile, tol: f64) {
        for (b, ci, co, h, w, threads) in [
            (1usize, 3usize, 4usize, 5usize, 7usize, 1usize),
            (2, 8, 5, 9, 4, 2),
            (1, 16, 16, 33, 31, 3),
            (1, 64, 8, 12, 16, 2),
            (1, 1, 1, 1, 1, 1),
        ] {
            let s = WinogradShape { b, ci, co, h, w };
            let Operands {
                x,
                taps,
                bias,
                residual,
            } = operands(&s);
            let u = transform_weights(&taps, co, ci, tile, threads);
            let want = direct(&x, &taps, &bias, &s);
            let plain = Epilogue {
                bias: Some(&bias),
                ..Default::default()
            };
            let got = conv3x3(&x, &u, tile, &plain, &s, threads);
            let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    ((g as f64) - e).abs() <= tol * scale,
                    "{tile:?} {s:?} at {i}: {g} vs {e}"
                );
            }
            let with_residual = Epilogue {
                residual: Some(&residual),
                ..plain
            };
            let got = conv3x3(&x, &u, tile, &with_residual, &s, threads);
            for ((&g, &e), &r) in got.iter().zip(&want).zip(&residual) {
                assert!(((g as f64) - e - r as f64).abs() <= tol * scale.max(2.0));
            }
            // The rectifier comes after the residual, per output channel.
            let slopes: Vec<f32> = (0..co).map(|o| 0.25 * o as f32 - 0.5).collect();
            let rectified = Epilogue {
                activation: Activation::Rectify(&slopes),
                ..with_residual
            };
            let got = conv3x3(&x, &u, tile, &rectified, &s, threads);
            for (i, ((&g, &e), &r)) in got.iter().zip(&want).zip(&residual).enumerate() {
                let v = e + r as f64;
                let a = slopes[(i / (h * w)) % co] as f64;
                let v = if v >= 0.0 { v } else { a * v };
                assert!(
                    ((g as f64) - v).abs() <= tol * scale.max(2.0),
                    "{tile:?} {s:?} at {i}"
                );
            }
        }
    }
}
