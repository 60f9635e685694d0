//! A drop-in for `candle_nn::Conv2d` with a faster CPU path for the convolutions this project
//! runs most: stride 1, dilation 1, one group (every 3×3 "same" conv and every 1×1 conv of the
//! UNet, the VAE and the GAN networks).
//!
//! candle 0.11's CPU conv gathers a 9·C_in-row im2col tile for every 512 output pixels with
//! scalar, cache-unfriendly stores, and that gather costs more than the GEMM it feeds. Here
//! the input is padded once to (C, H+2p, W+2p) and the output is computed on a "wide" grid of
//! H_out × (W+2p) positions: on that grid, the input operand of kernel tap (dy, dx) is the
//! padded buffer itself, shifted by dy·(W+2p)+dx — a plain strided (C_in, N) matrix with row
//! stride (H+2p)(W+2p), with no copy. The conv is then kh·kw accumulating GEMMs
//! `out[C_out, N] += W_tap[C_out, C_in] · X_shift[C_in, N]`, after which the 2p garbage
//! columns of each wide row are dropped. Output rows are processed in chunks sized so that the
//! chunk's accumulator and its input panel stay in L2 across the taps, and the chunks are
//! spread over the threads (one single-threaded GEMM per chunk and tap).
//!
//! Small images (the UNet's lower levels, where the wide grid's 2p garbage columns are a
//! large share and the per-tap GEMMs are short) take the classic im2col route instead: the
//! kh·kw shifted copies of the image are stacked into one (kh·kw·C_in, H_out·W_out) panel
//! (row copies, zero padding written once) and the conv is a single GEMM with K = kh·kw·C_in.
//!
//! Weights are kept in the layout both routes want, (C_out, kh·kw, C_in) contiguous — tap t
//! is the (C_out, C_in) matrix at offset t·C_in with row stride kh·kw·C_in, and the whole is
//! the (C_out, kh·kw·C_in) matrix of the im2col GEMM — arranged once at construction; [`Conv2d::weight`] is a (C_out, C_in, kh, kw) view of that same
//! storage, so no second copy is held. Everything else — other devices, strides, dilations,
//! groups, integer dtypes — goes through candle's own `conv2d`, so results and feature gates
//! are unchanged there. f16/bf16 inputs run the fast path in f32 and round once at the end.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Conv2dConfig;

use super::activation::ChannelSlopes;
use super::cpu_parallel::{on_threads, SharedMut};
use super::cpu_slice::f32_slice;
use super::epilogue::{rectify_planes, Epilogue};
use super::matmul::{matmul, Strided};
use super::transpose::transpose_last_two;
use super::winograd;
use crate::profile::{self, Stage};

/// A 2-D convolution layer; the same constructor and `forward` as `candle_nn::Conv2d`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// (C_out, C_in / groups, kh, kw); on the fast path a permuted view of `taps`.
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
    /// (C_out, kh·kw, C_in), contiguous: set when the CPU fast path applies to this layer.
    taps: Option<Tensor>,
    /// Whether inputs of at least [`WINOGRAD_MIN_PIXELS`] positions take the Winograd route.
    winograd: bool,
}

/// Fewest output positions (batch × height × width) the Winograd route takes. Its kernels
/// are transformed at each call, at a cost proportional to the weights; the saving grows with
/// the positions. Measured (`cargo bench --bench conv_cpu`, 512 channels, batch 2): at 16²
/// (512 positions) the transform eats the saving, at 32² the route is 1.4–1.9× faster.
const WINOGRAD_MIN_PIXELS: usize = 1024;

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        let fast = weight.device().is_cpu()
            && config.stride == 1
            && config.dilation == 1
            && config.groups == 1
            && matches!(weight.dtype(), DType::F32 | DType::F16 | DType::BF16)
            && weight.rank() == 4;
        if fast {
            if let Ok((weight, taps)) = arrange_taps(&weight) {
                return Self {
                    weight,
                    bias,
                    config,
                    taps: Some(taps),
                    winograd: false,
                };
            }
        }
        Self {
            weight,
            bias,
            config,
            taps: None,
            winograd: false,
        }
    }

    /// Runs this layer, on the CPU and for inputs of at least 1024 positions, by Winograd's
    /// minimal filtering ([`winograd`]: F(4×4, 3×3), 4× fewer multiplies, or F(2×2, 3×3) as
    /// `winograd_tile` picks), the same result up to rounding. Applies
    /// to 3×3, stride-1, padding-1 layers (others are returned unchanged). The transformed
    /// kernels are made at each call (a few % of the call) and dropped after it, so the layer
    /// holds no second copy of its weights.
    pub fn with_winograd(mut self) -> Self {
        let square3 = self.taps.as_ref().and_then(|t| t.dims3().ok()).map(|d| d.1) == Some(9);
        self.winograd = square3 && self.config.padding == 1;
        self
    }

    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// candle's own convolution (what `candle_nn::Conv2d::forward` does).
    fn forward_candle(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let y = x.conv2d_with_algo(
            &self.weight,
            c.padding,
            c.stride,
            c.dilation,
            c.groups,
            c.cudnn_fwd_algo,
        )?;
        match &self.bias {
            None => Ok(y),
            Some(bias) => {
                let b = bias.dims1()?;
                y.broadcast_add(&bias.reshape((1, b, 1, 1))?)
            }
        }
    }

    /// conv(x) + residual, with the add fused into the convolution's output pass on the CPU
    /// fast path in f32 (elsewhere a separate add, as torch does it).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let _scope = profile::scope(Stage::Conv);
        if let Some(taps) = &self.taps {
            if x.dtype() == DType::F32 && residual.dtype() == DType::F32 {
                if let Some(y) = self.forward_fast(x, taps, Some(residual), None)? {
                    return Ok(y);
                }
            }
        }
        self.forward_plain(x)? + residual
    }

    /// slopes(conv(x)): the rectifier fused into the convolution's output pass on the CPU
    /// fast path in f32 (elsewhere applied after, as torch does).
    pub fn forward_rectified(&self, x: &Tensor, slopes: &ChannelSlopes) -> crate::Result<Tensor> {
        let _scope = profile::scope(Stage::Conv);
        if let Some(taps) = &self.taps {
            if x.dtype() == DType::F32 && slopes.host().len() == taps.dim(0)? {
                if let Some(y) = self.forward_fast(x, taps, None, Some(slopes.host()))? {
                    return Ok(y);
                }
            }
        }
        slopes.apply(&self.forward_plain(x)?)
    }

    fn forward_plain(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(taps) = &self.taps {
            if let Some(y) = self.forward_fast(x, taps, None, None)? {
                return Ok(y);
            }
        }
        self.forward_candle(x)
    }

    /// The fast path, or `None` when this input needs candle's. A `residual` must have the
    /// output's shape (else `None`); `slopes`, one per output channel, rectify the result.
    fn forward_fast(
        &self,
        x: &Tensor,
        taps: &Tensor,
        residual: Option<&Tensor>,
        slopes: Option<&[f32]>,
    ) -> candle_core::Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.dtype() != taps.dtype() || x.rank() != 4 {
            return Ok(None);
        }
        let (b, ci, h, w) = x.dims4()?;
        let (co, ntaps, tci) = taps.dims3()?;
        let (_, _, kh, kw) = self.weight.dims4()?;
        let p = self.config.padding;
        if ci != tci || ntaps != kh * kw || h + 2 * p < kh || w + 2 * p < kw {
            return Ok(None);
        }
        if let Some(bias) = &self.bias {
            if bias.dims() != [co] || bias.dtype() != x.dtype() || !bias.device().is_cpu() {
                return Ok(None);
            }
        }
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?.contiguous()?;
        let t32 = taps.to_dtype(DType::F32)?;
        let b32 = match &self.bias {
            Some(bias) => Some(bias.to_dtype(DType::F32)?.contiguous()?),
            None => None,
        };
        let shape = ConvShape {
            b,
            ci,
            h,
            w,
            co,
            kh,
            kw,
            pad: p,
        };
        let residual = match residual {
            Some(r) if r.dims() == [b, co, shape.ho(), shape.wo()] && r.device().is_cpu() => {
                Some(r.to_dtype(DType::F32)?.contiguous()?)
            }
            Some(_) => return Ok(None),
            None => None,
        };
        let out = {
            let (xg, xl) = x32.storage_and_layout();
            let (tg, tl) = t32.storage_and_layout();
            let bg = b32.as_ref().map(|t| t.storage_and_layout());
            let bs = match &bg {
                Some((g, l)) => Some(f32_slice(g, l)?),
                None => None,
            };
            let rg = residual.as_ref().map(|t| t.storage_and_layout());
            let rs = match &rg {
                Some((g, l)) => Some(f32_slice(g, l)?),
                None => None,
            };
            let threads = Plan::auto().threads;
            if self.winograd && b * h * w >= WINOGRAD_MIN_PIXELS && h.min(w) >= 4 {
                let epilogue = Epilogue {
                    bias: bs,
                    residual: rs,
                    negative_slopes: slopes,
                };
                let tile = winograd_tile(h, w);
                winograd::conv3x3(
                    f32_slice(&xg, xl)?,
                    &winograd::transform_weights(f32_slice(&tg, tl)?, co, ci, tile, threads),
                    tile,
                    &epilogue,
                    &winograd::WinogradShape { b, ci, co, h, w },
                    threads,
                )
            } else {
                let mut out = conv2d_f32_add(
                    f32_slice(&xg, xl)?,
                    f32_slice(&tg, tl)?,
                    bs,
                    rs,
                    &shape,
                    Plan::auto(),
                );
                if let Some(slopes) = slopes {
                    rectify_planes(&mut out, shape.ho() * shape.wo(), slopes);
                }
                out
            }
        };
        let y = Tensor::from_vec(out, (b, co, shape.ho(), shape.wo()), &Device::Cpu)?;
        Ok(Some(if dtype == DType::F32 {
            y
        } else {
            y.to_dtype(dtype)?
        }))
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _scope = profile::scope(Stage::Conv);
        self.forward_plain(x)
    }
}

/// The Winograd variant for an h × w input: F(4×4, 3×3) (faster on every shape of
/// `cargo bench --bench conv_cpu`: 1.05–1.3×) unless the image is so narrow that its 4-wide
/// tiles would mostly compute padding, or `DIFFSR_WINOGRAD_F2=1` asks for F(2×2)'s extra
/// precision (see [`winograd`]).
fn winograd_tile(h: usize, w: usize) -> winograd::Tile {
    static FORCE_F2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let force_f2 = *FORCE_F2.get_or_init(|| {
        std::env::var_os("DIFFSR_WINOGRAD_F2").is_some_and(|v| !v.is_empty() && v != "0")
    });
    if force_f2 || h.min(w) < 8 {
        winograd::Tile::F2
    } else {
        winograd::Tile::F4
    }
}

/// (C_out, C_in, kh, kw) → (a (C_out, C_in, kh, kw) view of `taps`, taps (C_out, kh·kw, C_in)).
fn arrange_taps(weight: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (co, ci, kh, kw) = weight.dims4()?;
    // (co, ci, kh·kw) → (co, kh·kw, ci)
    let taps = transpose_last_two(&weight.reshape((co, ci, kh * kw))?)?;
    // (co, ci, kh, kw), sharing the storage
    let view = taps.reshape((co, kh, kw, ci))?.permute((0, 3, 1, 2))?;
    Ok((view, taps))
}

/// Shape of one stride-1, dilation-1, single-group convolution.
#[doc(hidden)]
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
    pub fn hp(&self) -> usize {
        self.h + 2 * self.pad
    }
    pub fn wp(&self) -> usize {
        self.w + 2 * self.pad
    }
    pub fn ho(&self) -> usize {
        self.hp() + 1 - self.kh
    }
    pub fn wo(&self) -> usize {
        self.wp() + 1 - self.kw
    }
}

/// How the work is split (exposed for the benchmark's comparison of variants).
#[doc(hidden)]
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
/// im2col panel it allows. Measured (`cargo bench --bench conv_cpu`, 2 threads, batch 2):
/// im2col wins at 8² (11.4 against 13.6 ms, 1024 channels), ties at 16² and loses from 32²
/// up, where building the panel (kh·kw copies of the image, row by row) costs more than the
/// wide grid's wasted columns (38 against 60 ms at 64², 256 channels).
const IM2COL_MAX_PIXELS: usize = 12 * 12;
const IM2COL_MAX_BYTES: usize = 16 << 20;

/// Bytes of accumulator + input panel a chunk should keep in L2 (half of a 2 MiB L2).
const CHUNK_BYTES: usize = 1 << 20;

impl Plan {
    pub fn auto() -> Self {
        Plan {
            rows_per_chunk: Some(0),
            threads: candle_core::utils::get_num_threads().max(1),
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

/// The convolution of a contiguous (B, C_in, H, W) f32 input with taps (C_out, kh·kw, C_in),
/// plus an optional bias: a contiguous (B, C_out, H_out, W_out) result.
#[doc(hidden)]
pub fn conv2d_f32(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    plan: Plan,
) -> Vec<f32> {
    conv2d_f32_add(x, taps, bias, None, s, plan)
}

/// [`conv2d_f32`] plus a (B, C_out, H_out, W_out) `residual` added to the result in the same
/// pass (a ResNet block's skip connection), instead of in a second pass over the output.
#[doc(hidden)]
pub fn conv2d_f32_add(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    s: &ConvShape,
    plan: Plan,
) -> Vec<f32> {
    let (b, ci, h, w, co) = (s.b, s.ci, s.h, s.w, s.co);
    let (hp, wp, ho, wo) = (s.hp(), s.wp(), s.ho(), s.wo());
    assert_eq!(x.len(), b * ci * h * w);
    assert_eq!(taps.len(), s.kh * s.kw * co * ci);
    if let Some(bias) = bias {
        assert_eq!(bias.len(), co);
    }
    if let Some(residual) = residual {
        assert_eq!(residual.len(), b * co * ho * wo);
    }
    let mut out = vec![0f32; b * co * ho * wo];
    if out.is_empty() {
        return out;
    }

    // A 1×1 conv without padding is one GEMM per image, straight into the output.
    if s.kh == 1 && s.kw == 1 && s.pad == 0 {
        let n = h * w;
        let par = gemm_parallelism(plan.threads);
        for bi in 0..b {
            let range = bi * co * n..(bi + 1) * co * n;
            let dst = &mut out[range.clone()];
            let read = fill_start(dst, bias, residual.map(|r| &r[range]), n);
            // SAFETY: dst is co×n (row stride n), lhs co×ci (row stride ci), rhs ci×n (row
            // stride n), all in bounds.
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
        return out;
    }

    if plan.use_im2col(s) {
        conv_im2col(x, taps, bias, residual, s, plan.threads, &mut out);
        return out;
    }

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
    let shared = SharedMut::new(&mut out);
    let padded = &padded[..];

    let run_chunk = |idx: usize, acc: &mut Vec<f32>, par: gemm::Parallelism| {
        let bi = idx / chunks_per_img;
        let r0 = (idx % chunks_per_img) * rows;
        let r1 = (r0 + rows).min(ho);
        let n = (r1 - r0) * wp;
        acc.clear();
        acc.resize(co * n, 0.0);
        fill_bias(acc, bias, n);
        let mut read = bias.is_some();
        for dy in 0..s.kh {
            for dx in 0..s.kw {
                let t = dy * s.kw + dx;
                let off = bi * plen + (r0 + dy) * wp + dx;
                // SAFETY: the view's last element is (ci-1)·hp·wp + off + n - 1 <
                // bi·plen + plen (see the trailing zeros above); acc is co×n.
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
                // SAFETY: rows r0..r1 of image bi belong to this chunk alone.
                let dst = unsafe { shared.part(at, wo) };
                match residual {
                    Some(r) => {
                        for ((d, &a), &r) in dst.iter_mut().zip(src).zip(&r[at..at + wo]) {
                            *d = a + r;
                        }
                    }
                    None => dst.copy_from_slice(src),
                }
            }
        }
    };

    if threads <= 1 {
        let par = gemm_parallelism(plan.threads);
        let mut acc = Vec::new();
        for idx in 0..n_chunks {
            run_chunk(idx, &mut acc, par);
        }
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            let mut acc = Vec::new();
            loop {
                let idx = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if idx >= n_chunks {
                    break;
                }
                run_chunk(idx, &mut acc, gemm::Parallelism::None);
            }
        };
        on_threads(threads, work);
    }
    out
}

/// The im2col route: the (kh·kw·C_in, B·H_out·W_out) panel of shifted rows of every image
/// side by side, then one GEMM `out[C_out, B·pixels] = taps[C_out, kh·kw·C_in] · panel`.
/// Putting the batch in the GEMM's N reads the weights once, not once per image: at the
/// UNet's 4×4 level (1024 channels, 16 pixels an image) that read is most of the work.
fn conv_im2col(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
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
    let dst: &mut [f32] = if s.b == 1 {
        out
    } else {
        staged.resize(co * n, 0f32);
        if let Some(r) = residual {
            for bi in 0..s.b {
                for o in 0..co {
                    staged[o * n + bi * pixels..][..pixels]
                        .copy_from_slice(&r[(bi * co + o) * pixels..][..pixels]);
                }
            }
        }
        &mut staged
    };
    let read = if s.b == 1 {
        fill_start(dst, bias, residual, n)
    } else {
        if let Some(bias) = bias {
            for (row, &v) in dst.chunks_exact_mut(n).zip(bias) {
                if residual.is_some() {
                    row.iter_mut().for_each(|d| *d += v);
                } else {
                    row.fill(v);
                }
            }
        }
        bias.is_some() || residual.is_some()
    };
    // SAFETY: dst is co×n (row stride n), lhs co×k (row stride k), rhs k×n (row stride n),
    // all in bounds.
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

fn gemm_parallelism(threads: usize) -> gemm::Parallelism {
    if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// A (C_out, n) GEMM destination set to what the GEMM accumulates onto: the residual, plus
/// each row's bias. Returns whether it holds anything (the GEMM's `read_dst`).
fn fill_start(dst: &mut [f32], bias: Option<&[f32]>, residual: Option<&[f32]>, n: usize) -> bool {
    match residual {
        Some(r) => {
            dst.copy_from_slice(r);
            if let Some(bias) = bias {
                for (row, &v) in dst.chunks_exact_mut(n).zip(bias) {
                    row.iter_mut().for_each(|d| *d += v);
                }
            }
            true
        }
        None => {
            fill_bias(dst, bias, n);
            bias.is_some()
        }
    }
}

/// Each row of a (C_out, n) block set to its channel's bias (left alone without one).
fn fill_bias(dst: &mut [f32], bias: Option<&[f32]>, n: usize) {
    if let Some(bias) = bias {
        for (row, &v) in dst.chunks_exact_mut(n).zip(bias) {
            row.fill(v);
        }
    }
}

/// `candle_nn::conv2d` for this layer: `weight` (C_out, C_in / groups, k, k) and `bias`
/// (C_out) read through `vb` with the same names and init hints; 3×3 "same" layers take the
/// Winograd route (see [`Conv2d::with_winograd`]).
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: candle_nn::VarBuilder,
) -> candle_core::Result<Conv2d> {
    let c = candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vb)?;
    Ok(Conv2d::new(c.weight().clone(), c.bias().cloned(), cfg).with_winograd())
}
