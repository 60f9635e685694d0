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
//! Weights are kept in the layout the GEMMs want, (kh·kw, C_out, C_in) contiguous, arranged
//! once at construction; [`Conv2d::weight`] is a (C_out, C_in, kh, kw) view of that same
//! storage, so no second copy is held. Everything else — other devices, strides, dilations,
//! groups, integer dtypes — goes through candle's own `conv2d`, so results and feature gates
//! are unchanged there. f16/bf16 inputs run the fast path in f32 and round once at the end.

use candle_core::{DType, Device, Module, Storage, Tensor};
use candle_nn::Conv2dConfig;

/// A 2-D convolution layer; the same constructor and `forward` as `candle_nn::Conv2d`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// (C_out, C_in / groups, kh, kw); on the fast path a permuted view of `taps`.
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
    /// (kh·kw, C_out, C_in), contiguous: set when the CPU fast path applies to this layer.
    taps: Option<Tensor>,
}

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
                };
            }
        }
        Self {
            weight,
            bias,
            config,
            taps: None,
        }
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

    /// The fast path, or `None` when this input needs candle's.
    fn forward_fast(&self, x: &Tensor, taps: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.dtype() != taps.dtype() || x.rank() != 4 {
            return Ok(None);
        }
        let (b, ci, h, w) = x.dims4()?;
        let (ntaps, co, tci) = taps.dims3()?;
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
        let out = {
            let (xg, xl) = x32.storage_and_layout();
            let (tg, tl) = t32.storage_and_layout();
            let bg = b32.as_ref().map(|t| t.storage_and_layout());
            let bs = match &bg {
                Some((g, l)) => Some(cpu_f32(g, l)?),
                None => None,
            };
            conv2d_f32(
                cpu_f32(&xg, xl)?,
                cpu_f32(&tg, tl)?,
                bs,
                &shape,
                Plan::auto(),
            )
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
        if let Some(taps) = &self.taps {
            if let Some(y) = self.forward_fast(x, taps)? {
                return Ok(y);
            }
        }
        self.forward_candle(x)
    }
}

/// (C_out, C_in, kh, kw) → (a (C_out, C_in, kh, kw) view of `taps`, taps (kh·kw, C_out, C_in)).
fn arrange_taps(weight: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (co, ci, kh, kw) = weight.dims4()?;
    let taps = weight.permute((2, 3, 0, 1))?.contiguous()?; // (kh, kw, co, ci)
    let view = taps.permute((2, 3, 0, 1))?; // (co, ci, kh, kw), sharing the storage
    Ok((view, taps.reshape((kh * kw, co, ci))?))
}

/// The elements of a contiguous f32 CPU tensor's storage.
fn cpu_f32<'a>(
    storage: &'a Storage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        candle_core::bail!("conv2d fast path: tensor is not on the CPU");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("conv2d fast path: tensor is not contiguous");
    };
    Ok(&cpu.as_slice::<f32>()?[start..end])
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
}

/// Bytes of accumulator + input panel a chunk should keep in L2 (half of a 2 MiB L2).
const CHUNK_BYTES: usize = 1 << 20;

impl Plan {
    pub fn auto() -> Self {
        Plan {
            rows_per_chunk: Some(0),
            threads: candle_core::utils::get_num_threads().max(1),
            spread: true,
        }
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

struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Through a method, so closures capture the (Sync) wrapper and not its raw field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// The convolution of a contiguous (B, C_in, H, W) f32 input with taps (kh·kw, C_out, C_in),
/// plus an optional bias: a contiguous (B, C_out, H_out, W_out) result.
#[doc(hidden)]
pub fn conv2d_f32(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
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
    let mut out = vec![0f32; b * co * ho * wo];
    if out.is_empty() {
        return out;
    }

    // A 1×1 conv without padding is one GEMM per image, straight into the output.
    if s.kh == 1 && s.kw == 1 && s.pad == 0 {
        let n = h * w;
        let par = gemm_parallelism(plan.threads);
        for bi in 0..b {
            let dst = &mut out[bi * co * n..(bi + 1) * co * n];
            fill_bias(dst, bias, n);
            // SAFETY: dst is co×n (row stride n), lhs co×ci (row stride ci), rhs ci×n (row
            // stride n), all in bounds.
            unsafe {
                gemm::gemm(
                    co,
                    n,
                    ci,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    bias.is_some(),
                    taps.as_ptr(),
                    1,
                    ci as isize,
                    x[bi * ci * n..].as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
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
    let out_ptr = SendPtr(out.as_mut_ptr());
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
                    gemm::gemm(
                        co,
                        n,
                        ci,
                        acc.as_mut_ptr(),
                        1,
                        n as isize,
                        read,
                        taps[t * co * ci..].as_ptr(),
                        1,
                        ci as isize,
                        padded[off..].as_ptr(),
                        1,
                        (hp * wp) as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    );
                }
                read = true;
            }
        }
        // Drop the garbage columns: wide row y of channel o → output row r0 + y.
        let base = out_ptr.get();
        for o in 0..co {
            for y in 0..r1 - r0 {
                let src = &acc[o * n + y * wp..][..wo];
                // SAFETY: rows r0..r1 of image bi belong to this chunk alone.
                unsafe {
                    let d = base.add(((bi * co + o) * ho + r0 + y) * wo);
                    std::ptr::copy_nonoverlapping(src.as_ptr(), d, wo);
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
        std::thread::scope(|sc| {
            for _ in 1..threads {
                sc.spawn(work);
            }
            work();
        });
    }
    out
}

fn gemm_parallelism(threads: usize) -> gemm::Parallelism {
    if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
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
/// (C_out) read through `vb` with the same names and init hints.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: candle_nn::VarBuilder,
) -> candle_core::Result<Conv2d> {
    let c = candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vb)?;
    Ok(Conv2d::new(c.weight().clone(), c.bias().cloned(), cfg))
}
