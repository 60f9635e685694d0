//! `diffsr::models::layers::conv::Conv2d` against candle's own `conv2d` (`candle_nn::Conv2d`):
//! the CPU fast path (stride 1, padded "wide grid" GEMMs) over odd channel counts, non-square
//! and degenerate (1×N, N×1) images, batches, with and without bias, f32 and f16, every
//! work-splitting plan of the kernel behind it (`diffsr_kernels::conv`); and the fallback cases
//! (stride 2, dilation, groups), which must be candle's result exactly.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Conv2dConfig;
use diffsr::models::layers::conv::Conv2d;
use diffsr_kernels::conv::{conv2d, ConvShape, Plan};
use diffsr_kernels::Epilogue;

/// The kernel's plan as the layer chooses it, on candle's thread count.
fn auto_plan() -> Plan {
    Plan::auto(candle_core::utils::get_num_threads())
}

fn randn(shape: &[usize], seed: u64) -> Result<Tensor> {
    // A small deterministic generator, so failures reproduce.
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// max |a - b| / max(1e-3, max |b|).
fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F32)?.flatten_all()?;
    let b = b.to_dtype(DType::F32)?.flatten_all()?;
    let d = (&a - &b)?.abs()?.max(0)?.to_scalar::<f32>()?;
    let m = b.abs()?.max(0)?.to_scalar::<f32>()?;
    Ok(d / m.max(1e-3))
}

#[derive(Clone, Copy)]
struct Case {
    b: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
    pad: usize,
    bias: bool,
}

fn layers(
    c: &Case,
    cfg: Conv2dConfig,
    dtype: DType,
    seed: u64,
) -> Result<(Conv2d, candle_nn::Conv2d, Tensor)> {
    let w = randn(&[c.co, c.ci / cfg.groups, c.k, c.k], seed)?.to_dtype(dtype)?;
    let bias = if c.bias {
        Some(randn(&[c.co], seed + 1)?.to_dtype(dtype)?)
    } else {
        None
    };
    let x = randn(&[c.b, c.ci, c.h, c.w], seed + 2)?.to_dtype(dtype)?;
    let ours = Conv2d::new(w.clone(), bias.clone(), cfg);
    let theirs = candle_nn::Conv2d::new(w, bias, cfg);
    Ok((ours, theirs, x))
}

fn cases() -> Vec<Case> {
    let chans = [
        (3, 4),
        (4, 7),
        (7, 3),
        (64, 64),
        (96, 64),
        (64, 96),
        (3, 96),
    ];
    let sizes = [(5, 9), (1, 17), (17, 1), (8, 8), (13, 6)];
    let kernels = [(3, 1), (1, 0), (3, 0), (1, 1)];
    let mut out = Vec::new();
    let mut i = 0usize;
    for &(ci, co) in &chans {
        for &(h, w) in &sizes {
            for &(k, pad) in &kernels {
                if h + 2 * pad < k || w + 2 * pad < k {
                    continue;
                }
                i += 1;
                out.push(Case {
                    b: if i % 3 == 0 { 3 } else { 1 },
                    ci,
                    co,
                    h,
                    w,
                    k,
                    pad,
                    bias: i % 2 == 0,
                });
            }
        }
    }
    // Every case also runs with the other batch size / bias choice.
    let flipped: Vec<Case> = out
        .iter()
        .map(|c| Case {
            b: if c.b == 1 { 3 } else { 1 },
            bias: !c.bias,
            ..*c
        })
        .collect();
    out.extend(flipped);
    out
}

#[test]
fn fast_path_matches_candle_f32() -> Result<()> {
    for (i, c) in cases().iter().enumerate() {
        let cfg = Conv2dConfig {
            padding: c.pad,
            ..Default::default()
        };
        let (ours, theirs, x) = layers(c, cfg, DType::F32, i as u64 * 7)?;
        let want = theirs.forward(&x)?;
        let got = ours.forward(&x)?;
        let d = rel_diff(&got, &want)?;
        assert!(
            d <= 1e-5,
            "b{} ci{} co{} {}x{} k{} p{} bias {}: rel diff {d}",
            c.b,
            c.ci,
            c.co,
            c.h,
            c.w,
            c.k,
            c.pad,
            c.bias
        );
    }
    Ok(())
}

#[test]
fn fast_path_matches_candle_f16() -> Result<()> {
    for (i, c) in cases().iter().enumerate().step_by(3) {
        let cfg = Conv2dConfig {
            padding: c.pad,
            ..Default::default()
        };
        let (ours, theirs, x) = layers(c, cfg, DType::F16, i as u64 * 11)?;
        let got = ours.forward(&x)?;
        assert_eq!(got.dtype(), DType::F16);
        // Against the exact conv of the same (f16) numbers: one f16 rounding apart.
        let exact = candle_nn::Conv2d::new(
            theirs.weight().to_dtype(DType::F32)?,
            theirs.bias().map(|b| b.to_dtype(DType::F32)).transpose()?,
            cfg,
        )
        .forward(&x.to_dtype(DType::F32)?)?;
        let d = rel_diff(&got, &exact)?;
        assert!(d <= 1e-3, "f16 vs exact, case {i}: rel diff {d}");
        // And against candle's own f16 conv (which rounds its GEMM and its bias add).
        let want = theirs.forward(&x)?;
        let d = rel_diff(&got, &want)?;
        assert!(d <= 4e-3, "f16 vs candle f16, case {i}: rel diff {d}");
    }
    Ok(())
}

#[test]
fn every_plan_matches_candle() -> Result<()> {
    let shapes = [
        (1, 64, 64, 19, 23, 3, 1),
        (3, 7, 5, 11, 4, 3, 1),
        (2, 96, 64, 9, 1, 3, 1),
        (2, 4, 7, 1, 9, 3, 1),
        (1, 3, 4, 6, 6, 3, 0),
        (2, 8, 16, 5, 7, 1, 0),
    ];
    let plans = [
        auto_plan(),
        Plan {
            rows_per_chunk: None,
            threads: 1,
            spread: false,
            im2col: Some(false),
        },
        Plan {
            rows_per_chunk: None,
            threads: 2,
            spread: false,
            im2col: Some(false),
        },
        Plan {
            rows_per_chunk: Some(0),
            threads: 2,
            spread: false,
            im2col: Some(false),
        },
        Plan {
            rows_per_chunk: Some(1),
            threads: 1,
            spread: true,
            im2col: Some(false),
        },
        Plan {
            rows_per_chunk: Some(1),
            threads: 3,
            spread: true,
            im2col: Some(false),
        },
        Plan {
            rows_per_chunk: Some(4),
            threads: 2,
            spread: true,
            im2col: Some(false),
        },
        Plan {
            im2col: Some(true),
            threads: 1,
            ..auto_plan()
        },
        Plan {
            im2col: Some(true),
            threads: 2,
            ..auto_plan()
        },
    ];
    for (i, &(b, ci, co, h, w, k, pad)) in shapes.iter().enumerate() {
        let c = Case {
            b,
            ci,
            co,
            h,
            w,
            k,
            pad,
            bias: i % 2 == 0,
        };
        let cfg = Conv2dConfig {
            padding: pad,
            ..Default::default()
        };
        let (_, theirs, x) = layers(&c, cfg, DType::F32, 100 + i as u64)?;
        let want = theirs.forward(&x)?;
        let taps = theirs
            .weight()
            .permute((0, 2, 3, 1))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = theirs.bias().map(|b| b.to_vec1::<f32>()).transpose()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
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
        let residual = randn(want.dims(), 300 + i as u64)?;
        let want_add = (&want + &residual)?;
        let res = residual.flatten_all()?.to_vec1::<f32>()?;
        for plan in plans {
            let plain = Epilogue {
                bias: bias.as_deref(),
                ..Default::default()
            };
            let got = conv2d(&xs, &taps, &plain, &s, plan);
            let got = Tensor::from_vec(got, want.dims(), &Device::Cpu)?;
            let d = rel_diff(&got, &want)?;
            assert!(d <= 1e-5, "shape {i}, plan {plan:?}: rel diff {d}");
            // The same with a residual added in the output pass.
            let with_residual = Epilogue {
                residual: Some(&res),
                ..plain
            };
            let got = conv2d(&xs, &taps, &with_residual, &s, plan);
            let got = Tensor::from_vec(got, want.dims(), &Device::Cpu)?;
            let d = rel_diff(&got, &want_add)?;
            assert!(
                d <= 1e-5,
                "shape {i}, plan {plan:?}, residual: rel diff {d}"
            );
        }
    }
    Ok(())
}

#[test]
fn non_contiguous_input_and_accessors() -> Result<()> {
    let c = Case {
        b: 2,
        ci: 5,
        co: 6,
        h: 7,
        w: 9,
        k: 3,
        pad: 1,
        bias: true,
    };
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let (ours, theirs, x) = layers(&c, cfg, DType::F32, 5)?;
    // A (B, C, H, W) view whose H and W are swapped in memory.
    let xt = x.transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
    assert!(!xt.is_contiguous());
    let d = rel_diff(&ours.forward(&xt)?, &theirs.forward(&x)?)?;
    assert!(d <= 1e-5, "rel diff {d}");
    // The accessors give back the constructor's weight and bias.
    assert_eq!(ours.weight().dims(), theirs.weight().dims());
    assert_eq!(
        ours.weight().flatten_all()?.to_vec1::<f32>()?,
        theirs.weight().flatten_all()?.to_vec1::<f32>()?
    );
    assert_eq!(
        ours.bias().unwrap().to_vec1::<f32>()?,
        theirs.bias().unwrap().to_vec1::<f32>()?
    );
    Ok(())
}

#[test]
fn fallback_cases_equal_candle() -> Result<()> {
    let cfgs = [
        (
            Conv2dConfig {
                padding: 1,
                stride: 2,
                ..Default::default()
            },
            1,
        ),
        (
            Conv2dConfig {
                padding: 0,
                stride: 2,
                ..Default::default()
            },
            1,
        ),
        (
            Conv2dConfig {
                padding: 2,
                dilation: 2,
                ..Default::default()
            },
            1,
        ),
        (
            Conv2dConfig {
                padding: 1,
                groups: 2,
                ..Default::default()
            },
            2,
        ),
    ];
    for (i, (cfg, _)) in cfgs.iter().enumerate() {
        for (j, &(b, ci, co, h, w)) in [(1, 4, 6, 9, 13), (3, 64, 64, 16, 11), (2, 8, 4, 1, 17)]
            .iter()
            .enumerate()
        {
            let k = 3;
            let span = cfg.dilation * (k - 1) + 1;
            if h + 2 * cfg.padding < span || w + 2 * cfg.padding < span {
                continue;
            }
            let c = Case {
                b,
                ci,
                co,
                h,
                w,
                k,
                pad: cfg.padding,
                bias: j % 2 == 0,
            };
            for dtype in [DType::F32, DType::F16] {
                let (ours, theirs, x) = layers(&c, *cfg, dtype, (i * 10 + j) as u64)?;
                let got = ours.forward(&x)?;
                let want = theirs.forward(&x)?;
                let d = rel_diff(&got, &want)?;
                assert!(d == 0.0, "cfg {i} shape {j} {dtype:?}: rel diff {d}");
            }
        }
    }
    Ok(())
}

/// `forward_add` = `forward` + residual on every route: wide grid, im2col (small images,
/// batched), 1×1, and candle's fallback (stride 2) where the add is a separate op.
#[test]
fn forward_add_fuses_the_residual_on_every_route() -> Result<()> {
    let routes = [
        (
            Case {
                b: 2,
                ci: 16,
                co: 24,
                h: 40,
                w: 37,
                k: 3,
                pad: 1,
                bias: true,
            },
            1,
        ),
        (
            Case {
                b: 2,
                ci: 32,
                co: 16,
                h: 4,
                w: 4,
                k: 3,
                pad: 1,
                bias: true,
            },
            1,
        ),
        (
            Case {
                b: 1,
                ci: 8,
                co: 8,
                h: 6,
                w: 5,
                k: 3,
                pad: 1,
                bias: false,
            },
            1,
        ),
        (
            Case {
                b: 3,
                ci: 12,
                co: 20,
                h: 9,
                w: 9,
                k: 1,
                pad: 0,
                bias: true,
            },
            1,
        ),
        (
            Case {
                b: 2,
                ci: 8,
                co: 8,
                h: 9,
                w: 9,
                k: 3,
                pad: 1,
                bias: true,
            },
            2,
        ),
    ];
    for (i, &(c, stride)) in routes.iter().enumerate() {
        let cfg = Conv2dConfig {
            padding: c.pad,
            stride,
            ..Default::default()
        };
        let (ours, theirs, x) = layers(&c, cfg, DType::F32, 500 + i as u64)?;
        let plain = theirs.forward(&x)?;
        let residual = randn(plain.dims(), 600 + i as u64)?;
        let want = (&plain + &residual)?;
        let got = ours.forward_add(&x, &residual)?;
        let d = rel_diff(&got, &want)?;
        assert!(d <= 1e-5, "route {i}: rel diff {d}");
    }
    Ok(())
}

/// The Winograd route (3×3, padding 1, at least 1024 output positions) against candle's conv:
/// odd sizes (partial 2×2 tiles on both edges), batches, channel counts that are not powers of
/// two, with and without bias and residual, f32 and f16 weights; and a small input, which
/// takes the GEMM routes instead.
#[test]
fn winograd_route_matches_candle() -> Result<()> {
    let cases = [
        Case {
            b: 1,
            ci: 16,
            co: 24,
            h: 33,
            w: 35,
            k: 3,
            pad: 1,
            bias: true,
        },
        Case {
            b: 2,
            ci: 7,
            co: 5,
            h: 32,
            w: 17,
            k: 3,
            pad: 1,
            bias: false,
        },
        Case {
            b: 1,
            ci: 64,
            co: 64,
            h: 40,
            w: 64,
            k: 3,
            pad: 1,
            bias: true,
        },
        Case {
            b: 1,
            ci: 8,
            co: 8,
            h: 9,
            w: 9,
            k: 3,
            pad: 1,
            bias: true,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        for dtype in [DType::F32, DType::F16] {
            let (ours, theirs, x) = layers(c, cfg, dtype, 700 + i as u64)?;
            let wino = ours.with_winograd();
            let want = theirs.forward(&x.to_dtype(DType::F32)?.to_dtype(dtype)?)?;
            let exact = candle_nn::Conv2d::new(
                theirs.weight().to_dtype(DType::F32)?,
                theirs.bias().map(|b| b.to_dtype(DType::F32)).transpose()?,
                cfg,
            )
            .forward(&x.to_dtype(DType::F32)?)?;
            let got = wino.forward(&x)?;
            let (d, tol) = if dtype == DType::F32 {
                (rel_diff(&got, &want)?, 2e-5)
            } else {
                (rel_diff(&got, &exact)?, 1e-3)
            };
            assert!(d <= tol, "case {i} {dtype:?}: rel diff {d}");
            let residual = randn(want.dims(), 800 + i as u64)?.to_dtype(dtype)?;
            if dtype == DType::F32 {
                let got = wino.forward_add(&x, &residual)?;
                let d = rel_diff(&got, &(&want + &residual)?)?;
                assert!(d <= 2e-5, "case {i} residual: rel diff {d}");
            }
        }
    }
    Ok(())
}
