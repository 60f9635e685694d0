//! Tests of the shared tiling routine (`diffsr::tiling`): the tile plan, the reflect padding and
//! the blend. The key property, after Real-ESRGAN's `tile_process` and stable-diffusion.cpp's
//! `sd_tiling` with MultiDiffusion-style weights: for a local operator of radius `r`, tiling with
//! an overlap of `exact_overlap(r)` gives the untiled result, and less overlap does not.

use std::ops::ControlFlow;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use diffsr::tiling::{exact_overlap, plan_tiles, reflect_pad, run_tiled, TileOptions};
use diffsr::Error;

/// Tile options in field order: tile, overlap, scale, align, pad, batch.
fn opts(
    tile: usize,
    overlap: usize,
    scale: usize,
    align: usize,
    pad: usize,
    batch: usize,
) -> TileOptions {
    TileOptions {
        tile,
        overlap,
        scale,
        align,
        pad,
        batch,
    }
}

/// Deterministic values in [-1, 1) from a 64-bit LCG, so tests need no RNG crate.
fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn image(channels: usize, height: usize, width: usize, seed: u64) -> Result<Tensor> {
    let shape = (1, channels, height, width);
    Ok(Tensor::from_vec(
        noise(channels * height * width, seed),
        shape,
        &Device::Cpu,
    )?)
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn nearest(x: &Tensor, scale: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    x.upsample_nearest2d(h * scale, w * scale)
}

/// A fixed random stack of three 3x3 convolutions (zero padding, tanh between): radius 3.
struct ConvStack(Vec<Tensor>);

impl ConvStack {
    fn new() -> Result<Self> {
        let sizes = [(8, 3), (8, 8), (3, 8)];
        let weights = sizes.iter().enumerate().map(|(i, &(o, c))| {
            let w = Tensor::from_vec(noise(o * c * 9, 100 + i as u64), (o, c, 3, 3), &Device::Cpu)?;
            w.affine(0.4, 0.0)
        });
        Ok(Self(weights.collect::<candle_core::Result<_>>()?))
    }

    /// The stack, then nearest upsampling by `scale`.
    fn run(&self, x: &Tensor, scale: usize) -> diffsr::Result<Tensor> {
        let mut x = x.clone();
        for (i, w) in self.0.iter().enumerate() {
            x = x.conv2d(w, 1, 1, 1, 1)?;
            if i + 1 < self.0.len() {
                x = x.tanh()?;
            }
        }
        Ok(nearest(&x, scale)?)
    }
}

fn tiled(
    x: &Tensor,
    o: &TileOptions,
    f: &mut dyn FnMut(&Tensor) -> diffsr::Result<Tensor>,
) -> diffsr::Result<Tensor> {
    run_tiled(x, o, f, &mut |_, _| ControlFlow::Continue(()))
}

#[test]
fn plan_covers_with_equal_aligned_tiles() -> Result<()> {
    for &(w, h, tile, overlap, align, pad) in &[
        (37, 29, 16, 4, 1, 0),
        (37, 29, 16, 8, 4, 0),
        (100, 7, 12, 3, 2, 5),
        (64, 64, 16, 0, 1, 0),
        (17, 65, 20, 9, 1, 2),
    ] {
        let o = opts(tile, overlap, 1, align, pad, 1);
        let plan = plan_tiles(w, h, &o)?;
        let (pw, ph) = plan.padded_size();
        let (tw, th) = plan.tile_size();
        assert!(pw >= w + 2 * pad && pw % align == 0 && ph >= h + 2 * pad && ph % align == 0);
        assert_eq!(
            (tw, th),
            (
                (tile.min(pw)) / align * align,
                (tile.min(ph)) / align * align
            )
        );
        let mut covered = vec![0u32; pw * ph];
        for t in plan.tiles() {
            assert_eq!((t.width, t.height), (tw, th));
            assert!(t.x % align == 0 && t.y % align == 0);
            assert!(t.x + t.width <= pw && t.y + t.height <= ph);
            for y in t.y..t.y + t.height {
                for x in t.x..t.x + t.width {
                    covered[y * pw + x] += 1;
                }
            }
        }
        assert!(covered.iter().all(|&c| c > 0), "{w}x{h} tile {tile}");
        // Neighbours overlap by at least the option.
        for pair in plan.tiles().windows(2).filter(|p| p[0].y == p[1].y) {
            assert!(pair[0].x + tw >= pair[1].x + overlap, "{pair:?}");
        }
        assert_eq!(plan.batches(), plan.len());
    }
    Ok(())
}

#[test]
fn plan_edge_cases() -> Result<()> {
    // Image smaller than the tile, and tile 0: one tile over the (aligned) image.
    let plan = plan_tiles(10, 7, &opts(64, 8, 4, 1, 0, 1))?;
    assert_eq!(
        (plan.len(), plan.tile_size(), plan.output_size()),
        (1, (10, 7), (40, 28))
    );
    let plan = plan_tiles(10, 7, &opts(0, 0, 1, 4, 0, 1))?;
    assert_eq!(
        (plan.len(), plan.tile_size(), plan.padding()),
        (1, (12, 8), (0, 1, 0, 2))
    );
    // Align not dividing the sides: padded up, tiles still aligned.
    let plan = plan_tiles(37, 30, &opts(16, 4, 1, 4, 0, 1))?;
    assert_eq!(plan.padded_size(), (40, 32));
    let o = opts(16, 4, 1, 1, 0, 3);
    assert_eq!(
        plan_tiles(37, 30, &o)?.batches(),
        plan_tiles(37, 30, &o)?.len().div_ceil(3)
    );
    // Bad options are errors, never panics: overlap = tile, overlap > tile, scale 0, align 0,
    // tile < align, no aligned step left, batch 0, empty image (twice), padding overflow.
    let bad = [
        (37, 30, opts(16, 16, 1, 1, 0, 1)),
        (37, 30, opts(16, 20, 1, 1, 0, 1)),
        (37, 30, opts(16, 4, 0, 1, 0, 1)),
        (37, 30, opts(16, 4, 1, 0, 0, 1)),
        (37, 30, opts(2, 1, 1, 4, 0, 1)),
        (37, 30, opts(8, 6, 1, 4, 0, 1)),
        (37, 30, opts(16, 4, 1, 1, 0, 0)),
        (0, 30, opts(16, 4, 1, 1, 0, 1)),
        (37, 0, opts(0, 0, 1, 1, 0, 1)),
        (37, 30, opts(16, 4, 1, 1, usize::MAX, 1)),
    ];
    for (w, h, o) in bad {
        assert!(
            matches!(plan_tiles(w, h, &o), Err(Error::InvalidOption { .. })),
            "{o:?}"
        );
    }
    assert_eq!(exact_overlap(3), 8);
    Ok(())
}

#[test]
fn reflect_pad_matches_hand_computed() -> Result<()> {
    let x = Tensor::arange(0f32, 12., &Device::Cpu)?.reshape((1, 1, 3, 4))?;
    let got = reflect_pad(&x, 2, 1, 1, 3)?
        .squeeze(0)?
        .squeeze(0)?
        .to_vec2::<f32>()?;
    // Rows mirror as 2 1 | 0 1 2 | 1, columns as 1 | 0 1 2 3 | 2 1 0.
    let row = |r: f32| {
        [1., 0., 1., 2., 3., 2., 1., 0.]
            .map(|c| 4. * r + c)
            .to_vec()
    };
    assert_eq!(got, [2., 1., 0., 1., 2., 1.].map(row).to_vec());
    // A one-row image cannot mirror vertically: replicate instead.
    let x = Tensor::new(&[[1f32, 2., 3.]], &Device::Cpu)?;
    let got = reflect_pad(&x, 2, 1, 2, 0)?.to_vec2::<f32>()?;
    assert_eq!(got, vec![vec![3., 2., 1., 2., 3.]; 4]);
    assert!(reflect_pad(&Tensor::zeros(3, DType::F32, &Device::Cpu)?, 1, 1, 1, 1).is_err());
    Ok(())
}

#[test]
fn identity_like_tiling_is_exact() -> Result<()> {
    for &(h, w, tile, overlap, scale, batch) in &[
        (29, 37, 16, 4, 1, 1),
        (29, 37, 16, 4, 4, 3),
        (31, 13, 9, 3, 2, 2),
        (17, 23, 8, 7, 3, 5),
        (40, 40, 11, 0, 2, 4),
    ] {
        let x = image(3, h, w, 7)?;
        let o = opts(tile, overlap, scale, 1, 0, batch);
        let got = tiled(&x, &o, &mut |t| Ok(nearest(t, scale)?))?;
        let want = nearest(&x, scale)?;
        // Weights that sum to 1 in f32 leave a few ulps where tiles cross-fade.
        assert!(max_diff(&got, &want)? <= 1e-6, "{o:?}");
    }
    Ok(())
}

#[test]
fn conv_stack_tiling_equals_untiled() -> Result<()> {
    let net = ConvStack::new()?;
    let x = image(3, 37, 29, 11)?;
    let want = net.run(&x, 2)?;
    let overlap = exact_overlap(3);
    for &(tile, overlap, batch) in &[
        (16, overlap, 1),
        (16, overlap, 3),
        (12, overlap + 1, 3),
        (20, 11, 2),
    ] {
        let o = opts(tile, overlap, 2, 1, 0, batch);
        let got = tiled(&x, &o, &mut |t| net.run(t, 2))?;
        assert!(plan_tiles(29, 37, &o)?.len() > 4);
        let diff = max_diff(&got, &want)?;
        assert!(diff < 1e-5, "{o:?}: {diff}");
    }
    // One pixel less overlap (margin 2 < radius 3): border pixels without context leak in.
    let o = opts(12, overlap - 1, 2, 1, 0, 3);
    let diff = max_diff(&tiled(&x, &o, &mut |t| net.run(t, 2))?, &want)?;
    assert!(diff > 1e-3, "too little overlap still exact: {diff}");
    Ok(())
}

#[test]
fn single_tile_is_f_itself() -> Result<()> {
    let net = ConvStack::new()?;
    let x = image(3, 21, 19, 3)?;
    let mut calls = 0;
    let got = tiled(&x, &opts(0, 0, 2, 1, 0, 1), &mut |t| {
        calls += 1;
        net.run(t, 2)
    })?;
    assert_eq!((calls, max_diff(&got, &net.run(&x, 2)?)?), (1, 0.0));
    // An f16 result is cast to f32.
    let got = tiled(&x, &opts(64, 8, 1, 1, 0, 1), &mut |t| {
        Ok(t.to_dtype(DType::F16)?)
    })?;
    assert_eq!(got.dtype(), DType::F32);
    Ok(())
}

#[test]
fn padding_equals_f_on_padded_image() -> Result<()> {
    let net = ConvStack::new()?;
    let x = image(3, 26, 23, 5)?;
    for &(tile, align) in &[(0, 1), (16, 1), (16, 4), (0, 4)] {
        let o = opts(tile, 8, 2, align, 5, 2);
        let got = tiled(&x, &o, &mut |t| net.run(t, 2))?;
        // Pre-pad on all sides, then the alignment padding at the bottom and right.
        let p = reflect_pad(&x, 5, 5, 5, 5)?;
        let (eh, ew) = (
            (36usize).next_multiple_of(align) - 36,
            (33usize).next_multiple_of(align) - 33,
        );
        let p = reflect_pad(&p, 0, eh, 0, ew)?;
        let want = net.run(&p, 2)?.narrow(2, 10, 52)?.narrow(3, 10, 46)?;
        assert!(max_diff(&got, &want)? < 1e-5, "{o:?}");
    }
    Ok(())
}

#[test]
fn cancel_and_bad_f_are_errors() -> Result<()> {
    let x = image(1, 30, 30, 1)?;
    let o = opts(12, 4, 1, 1, 0, 1);
    let mut seen = Vec::new();
    let result = run_tiled(&x, &o, &mut |t| Ok(t.clone()), &mut |done, total| {
        seen.push((done, total));
        ControlFlow::Break(())
    });
    assert!(matches!(result, Err(Error::Cancelled)));
    assert_eq!(seen, [(1, plan_tiles(30, 30, &o)?.len())]);
    // Wrong output shapes, a batched image and a 3-D image are errors too.
    assert!(tiled(&x, &o, &mut |t| Ok(nearest(t, 2)?)).is_err());
    assert!(tiled(&x, &opts(0, 0, 1, 1, 0, 1), &mut |t| Ok(t.narrow(2, 0, 5)?)).is_err());
    assert!(tiled(&Tensor::cat(&[&x, &x], 0)?, &o, &mut |t| Ok(t.clone())).is_err());
    assert!(tiled(&x.squeeze(0)?, &o, &mut |t| Ok(t.clone())).is_err());
    Ok(())
}
