//! `F.grid_sample(input, grid, mode="bilinear", padding_mode="border", align_corners=False)`,
//! the sampling DySample ends with (spandrel 0.4.2 `architectures/__arch_helpers/dysample.py`),
//! following PyTorch's `grid_sampler_2d`: the normalised grid is unnormalised to pixel
//! coordinates ((g + 1)·size − 1) / 2, clamped to [0, size − 1] (border padding), and the four
//! neighbours are blended bilinearly; a neighbour past the last pixel (only when the
//! coordinate sits exactly on it) has weight 0.
//!
//! Two routes: one pass over f32 slices on the CPU (safe Rust on the rayon pool; the four
//! taps read straight from each channel plane), and candle ops elsewhere (CUDA, Metal, f64):
//! flat u32 indices into a channels-last copy of the input, four `index_select`s and their
//! weighted sum.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::models::layers::cpu_dispatch::on_cpu_f32;

/// Output elements below which the CPU pass stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// torch's grid_sample (bilinear, border, align_corners=False) of `input` (N, C, H, W) at
/// `grid` (N, Ho, Wo, 2), its last axis (x, y) in [−1, 1] across the input's width / height.
pub fn grid_sample_border(input: &Tensor, grid: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = input.dims4()?;
    let (n, ho, wo, two) = grid.dims4()?;
    if two != 2 {
        return Err(shape_error(format!(
            "grid_sample: grid of shape {:?}, expected (N, Ho, Wo, 2)",
            grid.dims()
        )));
    }
    let unnormalise = |axis: usize, size: usize| -> Result<Tensor> {
        let g = grid.narrow(3, axis, 1)?.reshape((n, ho, wo))?;
        // ((g + 1)·size − 1) / 2
        Ok(g.affine(size as f64 / 2.0, (size as f64 - 1.0) / 2.0)?)
    };
    sample_bilinear_border(input, &unnormalise(0, w)?, &unnormalise(1, h)?)
}

/// Samples `input` (N, C, H, W) bilinearly at pixel coordinates `ix`, `iy` (N, Ho, Wo; pixel
/// centres at integers, as grid_sample's unnormalised coordinates), each clamped to the
/// image (border padding): (N, C, Ho, Wo), in the input's dtype (f16 / bf16 computed in f32).
pub fn sample_bilinear_border(input: &Tensor, ix: &Tensor, iy: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = input.dims4()?;
    let (nx, ho, wo) = ix.dims3()?;
    if nx != n || iy.dims() != ix.dims() || h == 0 || w == 0 {
        return Err(shape_error(format!(
            "grid sampling of an input {:?} at coordinates {:?} and {:?}",
            input.dims(),
            ix.dims(),
            iy.dims()
        )));
    }
    let dtype = input.dtype();
    let work = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let (x, ix, iy) = (
        input.to_dtype(work)?,
        ix.to_dtype(work)?,
        iy.to_dtype(work)?,
    );
    let shape = Shape4 {
        c,
        h,
        w,
        p: ho * wo,
    };
    let fast = on_cpu_f32([&x, &ix, &iy], [], (n, c, ho, wo), |[x, ix, iy], []| {
        sample_cpu(x, ix, iy, &shape)
    })?;
    let out = match fast {
        Some(out) => out,
        None => sample_ops(&x, &ix, &iy, &shape)?.reshape((n, c, ho, wo))?,
    };
    Ok(out.to_dtype(dtype)?)
}

fn shape_error(message: String) -> Error {
    Error::Tensor(candle_core::Error::Msg(message))
}

/// Channels, input sides and output positions per image.
struct Shape4 {
    c: usize,
    h: usize,
    w: usize,
    p: usize,
}

/// The clamped coordinate's lower neighbour, upper neighbour (the last pixel repeated: its
/// weight is then 0) and the upper one's weight.
fn taps(v: f32, size: usize) -> (usize, usize, f32) {
    let v = v.clamp(0.0, (size - 1) as f32);
    let lo = v.floor();
    // `as` saturates: a NaN coordinate reads pixel 0 (and yields NaN, as torch does).
    let i0 = (lo as usize).min(size - 1);
    (i0, (i0 + 1).min(size - 1), v - lo)
}

/// The CPU pass: one task per output channel plane.
fn sample_cpu(x: &[f32], ix: &[f32], iy: &[f32], s: &Shape4) -> Vec<f32> {
    let (c, h, w, p) = (s.c, s.h, s.w, s.p);
    let mut out = vec![0f32; x.len() / (h * w) * p];
    if p == 0 {
        return out;
    }
    let plane = |i: usize, o: &mut [f32]| {
        let img = i / c;
        let src = &x[i * h * w..][..h * w];
        let (xs, ys) = (&ix[img * p..][..p], &iy[img * p..][..p]);
        for ((o, &u), &v) in o.iter_mut().zip(xs).zip(ys) {
            let (x0, x1, fx) = taps(u, w);
            let (y0, y1, fy) = taps(v, h);
            let (r0, r1) = (&src[y0 * w..][..w], &src[y1 * w..][..w]);
            let top = r0[x0] * (1.0 - fx) + r0[x1] * fx;
            let bottom = r1[x0] * (1.0 - fx) + r1[x1] * fx;
            *o = top * (1.0 - fy) + bottom * fy;
        }
    };
    if out.len() < PARALLEL_MIN {
        out.chunks_mut(p).enumerate().for_each(|(i, o)| plane(i, o));
    } else {
        out.par_chunks_mut(p)
            .enumerate()
            .for_each(|(i, o)| plane(i, o));
    }
    out
}

/// The tensor-op route: (N, C, Ho·Wo).
fn sample_ops(x: &Tensor, ix: &Tensor, iy: &Tensor, s: &Shape4) -> Result<Tensor> {
    let (c, h, w, p) = (s.c, s.h, s.w, s.p);
    let n = x.dim(0)?;
    let dev = x.device();
    // (lower index, upper index, lower weight, upper weight) along one axis, (N, P).
    let axis = |v: &Tensor, size: usize| -> Result<[Tensor; 4]> {
        let v = v.reshape((n, p))?.clamp(0f64, (size - 1) as f64)?;
        let lo = v.floor()?;
        let frac = (&v - &lo)?;
        let hi = (&lo + 1.0)?.minimum((size - 1) as f64)?;
        Ok([
            lo.to_dtype(DType::U32)?,
            hi.to_dtype(DType::U32)?,
            frac.affine(-1.0, 1.0)?,
            frac,
        ])
    };
    let [x0, x1, wx0, wx1] = axis(ix, w)?;
    let [y0, y1, wy0, wy1] = axis(iy, h)?;
    // Flat row starts in the channels-last copy: image·H·W + y·W.
    let image = Tensor::arange(0u32, n as u32, dev)?
        .broadcast_mul(&Tensor::new((h * w) as u32, dev)?)?
        .reshape((n, 1))?;
    let width = Tensor::new(w as u32, dev)?;
    let row =
        |y: &Tensor| -> Result<Tensor> { Ok(y.broadcast_mul(&width)?.broadcast_add(&image)?) };
    let (r0, r1) = (row(&y0)?, row(&y1)?);
    let pixels = x.permute((0, 2, 3, 1))?.reshape((n * h * w, c))?;
    let tap = |r: &Tensor, col: &Tensor, wy: &Tensor, wx: &Tensor| -> Result<Tensor> {
        let index = (r + col)?.flatten_all()?;
        let weight = (wy * wx)?.reshape((n * p, 1))?;
        Ok(pixels.index_select(&index, 0)?.broadcast_mul(&weight)?)
    };
    let mut sum = tap(&r0, &x0, &wy0, &wx0)?;
    sum = (sum + tap(&r0, &x1, &wy0, &wx1)?)?;
    sum = (sum + tap(&r1, &x0, &wy1, &wx0)?)?;
    sum = (sum + tap(&r1, &x1, &wy1, &wx1)?)?;
    // (N·P, C) → (N, C, P)
    Ok(sum.reshape((n, p, c))?.transpose(1, 2)?.contiguous()?)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use candle_core::Device;

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?;
        Ok(d.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
    }

    /// torch's own grid_sample output (`scripts/fixtures/zoo_plksr.py`), coordinates reaching
    /// past every border, on both routes.
    #[test]
    fn equals_torch_grid_sample() -> Result<()> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/zoo/plksr/plksr.safetensors");
        let t = candle_core::safetensors::load(path, &Device::Cpu)?;
        let (input, grid, want) = (
            &t["grid_sample.input"],
            &t["grid_sample.grid"],
            &t["grid_sample.output"],
        );
        let fast = grid_sample_border(input, grid)?;
        assert_eq!(fast.dims(), want.dims());
        assert!(max_diff(&fast, want)? < 1e-6, "{}", max_diff(&fast, want)?);
        let f64_ = |t: &Tensor| t.to_dtype(DType::F64);
        let ops = grid_sample_border(&f64_(input)?, &f64_(grid)?)?;
        assert!(max_diff(&ops, want)? < 1e-6, "{}", max_diff(&ops, want)?);
        Ok(())
    }

    #[test]
    fn integer_coordinates_read_pixels_and_clamp_at_the_border() -> Result<()> {
        let dev = Device::Cpu;
        // One 2 × 3 plane: [0 1 2; 3 4 5].
        let x = Tensor::arange(0f32, 6.0, &dev)?.reshape((1, 1, 2, 3))?;
        let ix = Tensor::new(&[[[0f32, 2.0, 5.0, -3.0, 0.5, 2.0]]], &dev)?;
        let iy = Tensor::new(&[[[0f32, 1.0, 0.0, 1.0, 0.5, 7.0]]], &dev)?;
        let want = [0f32, 5.0, 2.0, 3.0, 2.0, 5.0];
        for x in [x.clone(), x.to_dtype(DType::F64)?] {
            let got = sample_bilinear_border(&x, &ix, &iy)?;
            let got = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(got, want);
        }
        Ok(())
    }

    #[test]
    fn both_routes_agree_on_large_inputs() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 17, 19), &dev)?;
        let ix = Tensor::rand(-3f32, 22.0, (3, 40, 41), &dev)?;
        let iy = Tensor::rand(-3f32, 20.0, (3, 40, 41), &dev)?;
        let fast = sample_bilinear_border(&x, &ix, &iy)?;
        let f64_ = |t: &Tensor| t.to_dtype(DType::F64);
        let ops = sample_bilinear_border(&f64_(&x)?, &f64_(&ix)?, &f64_(&iy)?)?;
        assert!(max_diff(&fast, &ops)? < 1e-5);
        Ok(())
    }
}
