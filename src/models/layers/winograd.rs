//! 3×3, stride-1, padding-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin &
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2015): each 2×2 output tile
//! costs 16 multiplies per (input, output) channel pair instead of 36, 2.25× fewer.
//!
//! Per 4×4 input tile d and 3×3 kernel g, with
//! Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], G = [[1,0,0],[½,½,½],[½,-½,½],[0,0,1]] and
//! Aᵀ = [[1,1,1,0],[0,1,-1,-1]]: Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A. Summed over input channels,
//! the element-wise product becomes 16 matrix products M[ξ] = U[ξ]·V[ξ], U[ξ] (C_out × C_in)
//! the transformed kernels (computed once per layer) and V[ξ] (C_in × tiles) the transformed
//! input. The transforms only add and subtract (and halve, in G), so the result differs from
//! the direct sum by rounding alone; the input and output transforms run along whole rows of
//! tiles as plain vector loops.
//!
//! Work is split in blocks of tile rows sized so that a block's V and M stay in L2, spread over
//! the threads, each block's 16 GEMMs single-threaded.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::cpu_parallel::{on_threads, SharedMut};
use super::fast_math::multiversion;
use super::matmul::{matmul, Strided};

/// Bytes of V + M one block aims for.
const BLOCK_BYTES: usize = 1 << 20;
/// Fewest tiles a block's GEMMs get (their N), whatever the channel counts.
const MIN_BLOCK_TILES: usize = 64;

/// G of F(2×2, 3×3): U = G g Gᵀ.
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// U[ξ][o][c] = (G g Gᵀ)[ξ] for the (C_out, 9, C_in) taps of a 3×3 kernel: 16·C_out·C_in
/// values. Each U[ξ][o] is a combination of the nine (contiguous) tap rows taps[o][k], so the
/// work runs as vector loops over C_in; zero coefficients (G's corners) are skipped.
pub fn transform_weights(taps: &[f32], co: usize, ci: usize, threads: usize) -> Vec<f32> {
    assert_eq!(taps.len(), co * 9 * ci);
    // coef[ξ][k] = G[i][ky]·G[j][kx] for ξ = 4i + j, k = 3·ky + kx.
    let mut coef = [[0f32; 9]; 16];
    for (xi, row) in coef.iter_mut().enumerate() {
        let (i, j) = (xi / 4, xi % 4);
        for (k, v) in row.iter_mut().enumerate() {
            *v = G[i][k / 3] * G[j][k % 3];
        }
    }
    let mut u = vec![0f32; 16 * co * ci];
    let shared = SharedMut::new(&mut u);
    // Output channels outer, split over the threads: one channel's nine tap rows stay in L1
    // while its 16 rows of U are made.
    let make = |o_range: std::ops::Range<usize>| {
        for o in o_range {
            let rows = &taps[o * 9 * ci..(o + 1) * 9 * ci];
            for (xi, row) in coef.iter().enumerate() {
                // SAFETY: row (ξ, o) of U belongs to output channel o, made by one thread.
                let dst = unsafe { shared.part((xi * co + o) * ci, ci) };
                for (k, &a) in row.iter().enumerate() {
                    if a != 0.0 {
                        axpy(dst, a, &rows[k * ci..(k + 1) * ci]);
                    }
                }
            }
        }
    };
    let threads = threads.clamp(1, co.max(1));
    let per = co.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for t in 1..threads {
            let make = &make;
            scope.spawn(move || make(t * per..((t + 1) * per).min(co)));
        }
        make(0..per.min(co));
    });
    u
}

/// dst += a·src, vectorised for the CPU running it (the multiversion of `fast_math`).
fn axpy(dst: &mut [f32], a: f32, src: &[f32]) {
    super::fast_math::axpy(dst, a, src);
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

/// out (B, C_out, H, W) = conv3x3(x (B, C_in, H, W), padding 1) + bias + residual, with
/// `u` from [`transform_weights`].
pub fn conv3x3(
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    s: &WinogradShape,
    threads: usize,
) -> Vec<f32> {
    let WinogradShape { b, ci, co, h, w } = *s;
    assert_eq!(x.len(), b * ci * h * w);
    assert_eq!(u.len(), 16 * co * ci);
    let mut out = vec![0f32; b * co * h * w];
    if out.is_empty() || ci == 0 {
        if let Some(bias) = bias {
            for plane in out.chunks_mut(h * w).enumerate() {
                plane.1.fill(bias[plane.0 % co]);
            }
        }
        if let Some(r) = residual {
            out.iter_mut().zip(r).for_each(|(o, r)| *o += r);
        }
        return out;
    }
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    // Tiles read padded rows -1..2·th+1 and columns -1..2·tw+1 of each channel; the padding is
    // made row by row as the tiles need it (a padded copy of the whole input would move it
    // through memory twice more, which at 64 channels costs more than the GEMMs).
    let wp = 2 * tw + 2;
    let per_tile = 16 * (ci + co) * 4;
    let rows_per_block = (BLOCK_BYTES / (per_tile * tw).max(1))
        .max(MIN_BLOCK_TILES.div_ceil(tw))
        .clamp(1, th);
    let blocks_per_image = th.div_ceil(rows_per_block);
    let n_blocks = b * blocks_per_image;
    let next = AtomicUsize::new(0);
    let shared = SharedMut::new(&mut out);
    let work = || {
        let mut bufs = Buffers::default();
        loop {
            let idx = next.fetch_add(1, Ordering::Relaxed);
            if idx >= n_blocks {
                break;
            }
            let bi = idx / blocks_per_image;
            let ty0 = (idx % blocks_per_image) * rows_per_block;
            let ty1 = (ty0 + rows_per_block).min(th);
            let block = Block {
                input: &x[bi * ci * h * w..(bi + 1) * ci * h * w],
                h,
                w,
                ty0,
                ty1,
                tw,
                wp,
            };
            block.transform_input(ci, &mut bufs);
            block.multiply(u, ci, co, &mut bufs);
            // Block idx writes output rows 2·ty0..2·ty1 of image bi only.
            let res = residual.map(|r| &r[bi * co * h * w..(bi + 1) * co * h * w]);
            block.transform_output(co, h, w, bias, res, (&shared, bi * co * h * w), &bufs);
        }
    };
    on_threads(threads.clamp(1, n_blocks), work);
    out
}

/// Per-thread scratch: V (16 × C_in × T), M (16 × C_out × T) and row temporaries.
#[derive(Default)]
struct Buffers {
    v: Vec<f32>,
    m: Vec<f32>,
    padded: Vec<f32>,
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
    /// Padded row length, 2·tw + 2.
    wp: usize,
}

impl Block<'_> {
    fn tiles(&self) -> usize {
        (self.ty1 - self.ty0) * self.tw
    }

    /// V[ξ = 4i + j][c][t] = (Bᵀ d B)[i][j] of tile t, channel c.
    fn transform_input(&self, ci: usize, bufs: &mut Buffers) {
        let (tw, wp, nt) = (self.tw, self.wp, self.tiles());
        // Every value is written below: grow, never clear.
        grow(&mut bufs.v, 16 * ci * nt);
        let (h, w) = (self.h, self.w);
        // Four padded input rows (zero borders written once: only 1..=w is ever copied in),
        // then the four transformed rows.
        bufs.padded.clear();
        bufs.padded.resize(4 * wp, 0.0);
        bufs.rows.clear();
        bufs.rows.resize(4 * wp, 0.0);
        for c in 0..ci {
            let plane = &self.input[c * h * w..(c + 1) * h * w];
            for ty in self.ty0..self.ty1 {
                for (k, row) in bufs.padded.chunks_exact_mut(wp).enumerate() {
                    // Padded row 2·ty + k is image row 2·ty + k - 1.
                    match (2 * ty + k).checked_sub(1).filter(|&y| y < h) {
                        Some(y) => row[1..=w].copy_from_slice(&plane[y * w..(y + 1) * w]),
                        None => row[1..=w].fill(0.0),
                    }
                }
                let (x0, rest) = bufs.padded.split_at(wp);
                let (x1, rest) = rest.split_at(wp);
                let (x2, x3) = rest.split_at(wp);
                // Bᵀ d: the four row combinations, along the whole padded row.
                let (d0, rest) = bufs.rows.split_at_mut(wp);
                let (d1, rest) = rest.split_at_mut(wp);
                let (d2, d3) = rest.split_at_mut(wp);
                input_rows([x0, x1, x2, x3], [d0, d1, d2, d3]);
                // (Bᵀ d) B: the same combinations across columns 2t..2t+4 of each row.
                let t0 = (ty - self.ty0) * tw;
                for (i, d) in [&*d0, &*d1, &*d2, &*d3].into_iter().enumerate() {
                    let at = |j: usize| ((4 * i + j) * ci + c) * nt + t0;
                    let [v0, v1, v2, v3] = four_rows(&mut bufs.v, [at(0), at(1), at(2), at(3)], tw);
                    input_cols(d, v0, v1, v2, v3);
                }
            }
        }
    }

    /// M[ξ] (C_out × T) = U[ξ] (C_out × C_in) · V[ξ] (C_in × T), for the 16 ξ.
    fn multiply(&self, u: &[f32], ci: usize, co: usize, bufs: &mut Buffers) {
        let nt = self.tiles();
        // The GEMMs overwrite M (they do not read it): grow, never clear.
        grow(&mut bufs.m, 16 * co * nt);
        for xi in 0..16 {
            // SAFETY: M[ξ] is co×nt (row stride nt), U[ξ] co×ci (row stride ci), V[ξ] ci×nt
            // (row stride nt), all inside their buffers.
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

    /// Y = Aᵀ M A per tile, plus bias and residual, into output rows 2·ty0..2·ty1.
    #[allow(clippy::too_many_arguments)]
    fn transform_output(
        &self,
        co: usize,
        h: usize,
        w: usize,
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        (out, image_start): (&SharedMut, usize),
        bufs: &Buffers,
    ) {
        let (tw, nt) = (self.tw, self.tiles());
        let mut s = vec![0f32; 8 * tw];
        let mut y = vec![0f32; 2 * w + 2];
        for o in 0..co {
            let b = bias.map_or(0.0, |b| b[o]);
            let m = |xi: usize| &bufs.m[(xi * co + o) * nt..(xi * co + o + 1) * nt];
            for ty in self.ty0..self.ty1 {
                let t0 = (ty - self.ty0) * tw;
                // Aᵀ M: S[a][j] for a = 0, 1 and j = 0..4, along the tile row.
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (
                        &m(j)[t0..t0 + tw],
                        &m(4 + j)[t0..t0 + tw],
                        &m(8 + j)[t0..t0 + tw],
                        &m(12 + j)[t0..t0 + tw],
                    );
                    let (s0, s1) = s.split_at_mut(4 * tw);
                    output_rows(
                        [m0, m1, m2, m3],
                        &mut s0[j * tw..(j + 1) * tw],
                        &mut s1[j * tw..(j + 1) * tw],
                    );
                }
                // (Aᵀ M) A: the two output columns of each tile, interleaved into a row.
                for a in 0..2 {
                    let oy = 2 * ty + a;
                    if oy >= h {
                        break;
                    }
                    let sa = &s[a * 4 * tw..(a + 1) * 4 * tw];
                    let (q0, rest) = sa.split_at(tw);
                    let (q1, rest) = rest.split_at(tw);
                    let (q2, q3) = rest.split_at(tw);
                    output_cols([q0, q1, q2, q3], b, &mut y[..2 * tw]);
                    // SAFETY: output row oy of channel o of this image lies in its own buffer and
                    // belongs to this block alone (tile rows ty0..ty1).
                    let row = unsafe { out.part(image_start + (o * h + oy) * w, w) };
                    match residual {
                        Some(r) => {
                            let rr = &r[(o * h + oy) * w..(o * h + oy + 1) * w];
                            for ((d, &v), &r) in row.iter_mut().zip(&y[..w]).zip(rr) {
                                *d = v + r;
                            }
                        }
                        None => row.copy_from_slice(&y[..w]),
                    }
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

/// Four disjoint `len`-long rows of `buf` starting at `at` (increasing).
fn four_rows(buf: &mut [f32], at: [usize; 4], len: usize) -> [&mut [f32]; 4] {
    let (_, rest) = buf.split_at_mut(at[0]);
    let (r0, rest) = rest.split_at_mut(at[1] - at[0]);
    let (r1, rest) = rest.split_at_mut(at[2] - at[1]);
    let (r2, r3) = rest.split_at_mut(at[3] - at[2]);
    [
        &mut r0[..len],
        &mut r1[..len],
        &mut r2[..len],
        &mut r3[..len],
    ]
}

// The transforms' loops, compiled for the CPU running them (AVX-512 where there is one).
multiversion! {
    /// Bᵀ d along whole rows: d0 = x0 - x2, d1 = x1 + x2, d2 = x2 - x1, d3 = x1 - x3.
    pub fn input_rows(x: [&[f32]; 4], d: [&mut [f32]; 4]) {
        let [x0, x1, x2, x3] = x;
        let [d0, d1, d2, d3] = d;
        let n = d0.len();
        let (x0, x1, x2, x3) = (&x0[..n], &x1[..n], &x2[..n], &x3[..n]);
        let (d1, d2, d3) = (&mut d1[..n], &mut d2[..n], &mut d3[..n]);
        for i in 0..n {
            d0[i] = x0[i] - x2[i];
            d1[i] = x1[i] + x2[i];
            d2[i] = x2[i] - x1[i];
            d3[i] = x1[i] - x3[i];
        }
    }
}

multiversion! {
    /// (Bᵀ d) B for one transformed row d and every tile t (columns 2t..2t+4).
    pub fn input_cols(d: &[f32], w0: &mut [f32], w1: &mut [f32], w2: &mut [f32], w3: &mut [f32]) {
        let tw = w0.len();
        let (w1, w2, w3) = (&mut w1[..tw], &mut w2[..tw], &mut w3[..tw]);
        let here = &d[..2 * tw];
        let next = &d[2..2 * tw + 2];
        for t in 0..tw {
            let (e, o, e1, o1) = (here[2 * t], here[2 * t + 1], next[2 * t], next[2 * t + 1]);
            w0[t] = e - e1;
            w1[t] = o + e1;
            w2[t] = e1 - o;
            w3[t] = o - o1;
        }
    }
}

multiversion! {
    /// Aᵀ M along a tile row: s0 = m0 + m1 + m2, s1 = m1 - m2 - m3.
    pub fn output_rows(m: [&[f32]; 4], s0: &mut [f32], s1: &mut [f32]) {
        let n = s0.len();
        let [m0, m1, m2, m3] = m;
        let (m0, m1, m2, m3, s1) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &mut s1[..n]);
        for t in 0..n {
            s0[t] = m0[t] + m1[t] + m2[t];
            s1[t] = m1[t] - m2[t] - m3[t];
        }
    }
}

multiversion! {
    /// (Aᵀ M) A for one output row: the two columns of each tile, interleaved, plus the bias.
    pub fn output_cols(q: [&[f32]; 4], bias: f32, y: &mut [f32]) {
        let [q0, q1, q2, q3] = q;
        let tw = y.len() / 2;
        let (q0, q1, q2, q3) = (&q0[..tw], &q1[..tw], &q2[..tw], &q3[..tw]);
        for t in 0..tw {
            y[2 * t] = q0[t] + q1[t] + q2[t] + bias;
            y[2 * t + 1] = q1[t] - q2[t] - q3[t] + bias;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn equals_the_direct_convolution() {
        for (b, ci, co, h, w, threads) in [
            (1usize, 3usize, 4usize, 5usize, 7usize, 1usize),
            (2, 8, 5, 9, 4, 2),
            (1, 16, 16, 33, 31, 3),
            (1, 1, 1, 1, 1, 1),
        ] {
            let s = WinogradShape { b, ci, co, h, w };
            let x: Vec<f32> = (0..b * ci * h * w)
                .map(|i| ((i * 37 % 101) as f32) * 0.02 - 1.0)
                .collect();
            let taps: Vec<f32> = (0..co * 9 * ci)
                .map(|i| ((i * 13 % 29) as f32) * 0.05 - 0.7)
                .collect();
            let bias: Vec<f32> = (0..co).map(|o| o as f32 * 0.1 - 0.2).collect();
            let residual: Vec<f32> = (0..b * co * h * w).map(|i| (i % 5) as f32 * 0.3).collect();
            let u = transform_weights(&taps, co, ci, threads);
            let want = direct(&x, &taps, &bias, &s);
            let got = conv3x3(&x, &u, Some(&bias), None, &s, threads);
            let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    ((g as f64) - e).abs() <= 2e-6 * scale,
                    "{s:?} at {i}: {g} vs {e}"
                );
            }
            let got = conv3x3(&x, &u, Some(&bias), Some(&residual), &s, threads);
            for ((&g, &e), &r) in got.iter().zip(&want).zip(&residual) {
                assert!(((g as f64) - e - r as f64).abs() <= 2e-6 * scale.max(2.0));
            }
        }
    }
}
