//! CPU 2-D convolution: candle 0.11's `conv2d` (tiled im2col gather + GEMM) against this
//! crate's routes (`diffsr_kernels::conv`: padded "wide grid", one GEMM per kernel tap;
//! im2col; `diffsr_kernels::winograd`: F(2×2, 3×3) and F(4×4, 3×3)), on the shapes the models
//! run:
//!
//! ```bash
//! cargo bench -p diffsr-kernels --bench conv_cpu
//! ```
//!
//! 3×3, padding 1, stride 1, batch 1, with bias, f32: C=64 at 128² and 256² (the GAN
//! bodies), 128/256 channels at 64² and 128² and 512 at 64² (the VAE decoder), 320 at 64²
//! (the UNet), plus one 1×1 channel change. Besides the default plan (row chunks sized for L2,
//! spread over the threads; what `diffsr`'s `Conv2d` runs below the Winograd threshold), the
//! variants are timed: the unblocked one (one GEMM per tap over the whole image, each GEMM
//! parallel), row chunks run in turn with parallel GEMMs, im2col and the wide grid forced, and
//! both Winograd tiles (weight transform included, as the layer makes it at each call).
//! Medians of `DIFFSR_BENCH_REPS` runs (default 5) after one warm-up; GFLOP/s counts
//! 2·C_in·C_out·kh·kw multiply-adds per output pixel. `DIFFSR_BENCH_FILTER`: comma-separated
//! substrings of "label c_in->c_out hw" to run only some rows; `DIFFSR_CONV_SWEEP=1` also times
//! rows-per-chunk choices.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Module, Tensor};
use candle_nn::Conv2dConfig;
use diffsr_kernels::conv::{conv2d, ConvShape, Plan};
use diffsr_kernels::winograd::{conv3x3, transform_weights, Tile, WinogradShape};
use diffsr_kernels::Epilogue;

/// As `diffsr::memory::tune_allocator` (which the `diffsr` binary calls), so the figures are
/// what its users get: glibc keeps freed blocks of every size for reuse.
fn tune_allocator() {
    if std::env::var("DIFFSR_MALLOC").is_ok_and(|v| v == "system") {
        return;
    }
    diffsr_kernels::malloc::keep_freed_blocks(512 << 20);
}

fn median_secs(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(t[t.len() / 2])
}

/// Median seconds of each contender, running them in turn `reps` times after one warm-up.
fn round_robin(reps: usize, fs: &mut [&mut dyn FnMut() -> Result<()>]) -> Result<Vec<f64>> {
    let mut t = vec![Vec::with_capacity(reps); fs.len()];
    for f in fs.iter_mut() {
        f()?;
    }
    for _ in 0..reps {
        for (f, t) in fs.iter_mut().zip(&mut t) {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64());
        }
    }
    Ok(t.into_iter()
        .map(|mut t| {
            t.sort_by(|a, b| a.partial_cmp(b).unwrap());
            t[t.len() / 2]
        })
        .collect())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn main() -> Result<()> {
    tune_allocator();
    let reps: usize = std::env::var("DIFFSR_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let threads = candle_core::utils::get_num_threads();
    println!("threads: {threads}, reps: {reps}");
    // (label, batch, c_in, c_out, h = w, kernel); the UNet rows are its levels at a 64×64
    // latent, batch 2 as classifier-free guidance runs them.
    let shapes = [
        ("GAN", 1, 64, 64, 128, 3),
        ("GAN", 1, 64, 64, 256, 3),
        ("VAE", 1, 128, 128, 64, 3),
        ("VAE", 1, 128, 128, 128, 3),
        ("VAE", 1, 256, 256, 64, 3),
        ("VAE", 1, 256, 256, 128, 3),
        ("VAE", 1, 512, 512, 64, 3),
        ("UNet", 2, 256, 256, 64, 3),
        ("UNet", 2, 512, 512, 32, 3),
        ("UNet", 2, 512, 512, 16, 3),
        ("UNet", 2, 1024, 1024, 8, 3),
        ("VAE 1x1", 1, 256, 128, 128, 1),
    ];
    println!(
        "{:<8} {:>2} {:>5} {:>5} {:>5} {:>2} | {:>10} {:>10} {:>7} | {:>8} {:>8} | {:>10} {:>10} {:>10} | {:>10} | {:>10} {:>10}",
        "model",
        "b",
        "c_in",
        "c_out",
        "hw",
        "k",
        "candle ms",
        "ours ms",
        "speedup",
        "cand GF/s",
        "ours GF/s",
        "unblk ms",
        "chunk-seq",
        "im2col ms",
        "wide ms",
        "wino F2",
        "wino F4",
    );
    let dev = Device::Cpu;
    for (label, batch, ci, co, hw, k) in shapes {
        let name = format!("{label} {ci}->{co} {hw}");
        if let Ok(f) = std::env::var("DIFFSR_BENCH_FILTER") {
            if !f.split(',').any(|f| name.contains(f)) {
                continue;
            }
        }
        let pad = k / 2;
        let w = (Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev)? * 0.05)?;
        let b = Tensor::randn(0f32, 1.0, co, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (batch, ci, hw, hw), &dev)?;
        let cfg = Conv2dConfig {
            padding: pad,
            ..Default::default()
        };
        let theirs = candle_nn::Conv2d::new(w.clone(), Some(b.clone()), cfg);

        // The kernel's operands: taps (C_out, kh·kw, C_in), as the layer arranges them.
        let taps = w.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?;
        let bias = b.to_vec1::<f32>()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let epilogue = Epilogue {
            bias: Some(&bias),
            ..Default::default()
        };
        let s = ConvShape {
            b: batch,
            ci,
            h: hw,
            w: hw,
            co,
            kh: k,
            kw: k,
            pad,
        };
        let ws = WinogradShape {
            b: batch,
            ci,
            co,
            h: hw,
            w: hw,
        };
        let winograd = |tile: Tile| {
            let u = transform_weights(&taps, co, ci, tile, threads);
            conv3x3(&xs, &u, tile, &epilogue, &ws, threads)
        };

        let want = theirs.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        let got = conv2d(&xs, &taps, &epilogue, &s, Plan::auto(threads));
        let diff = max_diff(&got, &want);
        assert!(diff < 1e-3, "{label}: results differ by {diff}");
        if k == 3 {
            for tile in [Tile::F2, Tile::F4] {
                let diff = max_diff(&winograd(tile), &want);
                assert!(diff < 1e-3, "{label}: Winograd {tile:?} differs by {diff}");
            }
        }

        let run_plan = |plan: Plan| -> Result<()> {
            std::hint::black_box(conv2d(&xs, &taps, &epilogue, &s, plan));
            Ok(())
        };
        let unblocked = Plan {
            rows_per_chunk: None,
            threads,
            spread: false,
            im2col: Some(false),
        };
        let chunk_seq = Plan {
            rows_per_chunk: Some(0),
            threads,
            spread: false,
            im2col: Some(false),
        };
        let im2col = Plan {
            im2col: Some(true),
            ..Plan::auto(threads)
        };
        let wide = Plan {
            im2col: Some(false),
            ..Plan::auto(threads)
        };
        let run_winograd = |tile: Tile| -> Result<()> {
            if k == 3 {
                std::hint::black_box(winograd(tile));
            }
            Ok(())
        };
        // Round robin, so that load changes on a shared machine hit every contender alike.
        let [t_candle, t_ours, t_unblocked, t_seq, t_im2col, t_wide, t_f2, t_f4] = round_robin(
            reps,
            &mut [
                &mut || {
                    theirs.forward(&x)?;
                    Ok(())
                },
                &mut || run_plan(Plan::auto(threads)),
                &mut || run_plan(unblocked),
                &mut || run_plan(chunk_seq),
                &mut || run_plan(im2col),
                &mut || run_plan(wide),
                &mut || run_winograd(Tile::F2),
                &mut || run_winograd(Tile::F4),
            ],
        )?[..] else {
            unreachable!()
        };
        let variant = |plan: Plan| median_secs(reps, || run_plan(plan));
        if std::env::var_os("DIFFSR_CONV_SWEEP").is_some() {
            // Rows per chunk, chunks spread over the threads.
            let mut line = format!("  sweep {label} {ci}->{co} {hw}^2:");
            for r in [1, 2, 4, 8, 16, 32, 64] {
                let t = variant(Plan {
                    rows_per_chunk: Some(r),
                    threads,
                    spread: true,
                    im2col: Some(false),
                })?;
                line += &format!(" r{r}={:.1}", t * 1e3);
            }
            println!("{line}");
        }
        let gflop = 2.0 * (batch * ci * co * k * k * hw * hw) as f64 / 1e9;
        let wino = |t: f64| {
            if k == 3 {
                format!("{:>10.2}", t * 1e3)
            } else {
                format!("{:>10}", "-")
            }
        };
        println!(
            "{:<8} {:>2} {:>5} {:>5} {:>5} {:>2} | {:>10.2} {:>10.2} {:>6.2}x | {:>8.1} {:>8.1} | {:>10.2} {:>10.2} {:>10.2} | {:>10.2} | {} {}",
            label,
            batch,
            ci,
            co,
            hw,
            k,
            t_candle * 1e3,
            t_ours * 1e3,
            t_candle / t_ours,
            gflop / t_candle,
            gflop / t_ours,
            t_unblocked * 1e3,
            t_seq * 1e3,
            t_im2col * 1e3,
            t_wide * 1e3,
            wino(t_f2),
            wino(t_f4),
        );
    }
    Ok(())
}
