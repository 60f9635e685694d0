//! `torch.nn.Linear`, y = x Wᵀ + b, over a (rows, in) input, as one GEMM: the output starts as
//! residual + bias (or is written by the GEMM alone) and the GEMM accumulates onto it, the
//! threads splitting all rows at once; candle's `Linear` runs one matmul per batch entry and
//! adds the bias in a second pass. The activation runs on each band of the output while it is
//! in cache.
//!
//! The weight comes in one of two layouts: Wᵀ (in, out), which the GEMM's packing reads
//! fastest for many rows; or W (out, in) as stored, which the banded few-rows kernel
//! (`few_rows.rs`) reads fastest for the text encoder's and the cross-attention keys' and
//! values' few rows.

use crate::epilogue::{fill_accumulator, BiasAlong, Epilogue};
use crate::few_rows::{few_rows_gemm, FewRows};
use crate::matmul::{matmul_threaded, Strided};
use crate::parallel::SharedMut;

/// Most rows the few-rows kernel takes (its scratch is one band of the output).
const FEW_ROWS_MAX: usize = 512;

/// How the weight is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// Wᵀ, (in, out) row-major.
    InOut,
    /// W, (out, in) row-major, as the hub stores it.
    OutIn,
}

/// Sizes of one linear layer's product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    /// Input rows (every leading dimension of the input, flattened).
    pub rows: usize,
    /// In features.
    pub input: usize,
    /// Out features.
    pub output: usize,
}

/// y (rows, out) = x (rows, in) · Wᵀ, then the epilogue: `bias` per out feature, a (rows, out)
/// `residual`, and the activation (the identity or the erf GELU).
///
/// # Panics
/// When a buffer's length does not match the shape, or on a per-channel rectifier (a
/// convolution's activation).
pub fn linear(
    x: &[f32],
    w: &[f32],
    layout: WeightLayout,
    s: LinearShape,
    epilogue: &Epilogue,
    threads: usize,
) -> Vec<f32> {
    let LinearShape {
        rows,
        input,
        output,
    } = s;
    assert_eq!(x.len(), rows * input);
    assert_eq!(w.len(), input * output);
    if let Some(b) = epilogue.bias {
        assert_eq!(b.len(), output);
    }
    if let Some(r) = epilogue.residual {
        assert_eq!(r.len(), rows * output);
    }
    let post = epilogue.activation.row_post();
    let len = rows * output;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if layout == WeightLayout::OutIn && rows <= FEW_ROWS_MAX {
        let p = FewRows {
            x,
            w,
            bias: epilogue.bias,
            residual: epilogue.residual,
            m: rows,
            k: input,
            n: output,
        };
        // SAFETY: `out`'s capacity holds rows·output slots, used by this call alone.
        unsafe { few_rows_gemm(&p, &SharedMut::spare_capacity(&mut out), threads, post) };
        // SAFETY: few_rows_gemm writes all rows·output values.
        unsafe { out.set_len(len) };
        return out;
    }
    // The GEMM accumulates onto residual + bias, or overwrites: `out` is made in one pass from
    // what it starts as, never zeroed first (64 MB for a UNet feed-forward at 64², 1 % of a
    // step).
    let accumulate = fill_accumulator(
        &mut out.spare_capacity_mut()[..len],
        output,
        epilogue.bias,
        BiasAlong::Cols,
        epilogue.residual,
    );
    // Wᵀ (in × out): held as such, or read from W (out, in).
    let rhs = match layout {
        WeightLayout::InOut => Strided::rows(w.as_ptr(), output),
        WeightLayout::OutIn => Strided::transposed(w.as_ptr(), input),
    };
    if rows > 0 && output > 0 {
        // SAFETY: dst is rows×output (row stride output) inside `out`'s capacity, initialised
        // when `accumulate` (the GEMM reads it) and otherwise only written; lhs is x,
        // rows×input (row stride input, asserted rows·input long); rhs is Wᵀ, input×output
        // inside w (asserted input·output long) in either layout.
        unsafe {
            matmul_threaded(
                (rows, output, input),
                out.spare_capacity_mut().as_mut_ptr().cast(),
                output,
                accumulate,
                Strided::rows(x.as_ptr(), input),
                rhs,
                threads,
                post,
            );
        }
    }
    // SAFETY: all rows·output values are initialised: by fill_accumulator when it wrote
    // (`accumulate`), else by the GEMM (which writes zeros when input is 0); none when len is 0.
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gelu64;
    use crate::Activation;

    /// Both layouts, both kernels (few rows and the one-GEMM path, by the row count), with and
    /// without bias and residual, with the GELU, against the triple loop.
    #[test]
    fn equals_the_triple_loop() {
        for (rows, input, output, threads) in [
            (7usize, 33usize, 200usize, 2usize),
            (154, 64, 130, 3),
            (600, 24, 70, 2),
            (3, 5, 1, 1),
            (2, 0, 4, 1),
        ] {
            let x: Vec<f32> = (0..rows * input)
                .map(|i| ((i * 7) % 13) as f32 * 0.25 - 1.5)
                .collect();
            // W (out, in) and its transpose.
            let w: Vec<f32> = (0..output * input)
                .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
                .collect();
            let mut wt = vec![0f32; w.len()];
            for o in 0..output {
                for i in 0..input {
                    wt[i * output + o] = w[o * input + i];
                }
            }
            let bias: Vec<f32> = (0..output).map(|i| i as f32 * 0.01).collect();
            let residual: Vec<f32> = (0..rows * output).map(|i| (i % 3) as f32).collect();
            let s = LinearShape {
                rows,
                input,
                output,
            };
            for (with_bias, with_res, gelu) in [
                (false, false, false),
                (true, false, false),
                (false, true, false),
                (true, true, true),
            ] {
                let epilogue = Epilogue {
                    bias: with_bias.then_some(&bias[..]),
                    residual: with_res.then_some(&residual[..]),
                    activation: if gelu {
                        Activation::GeluErf
                    } else {
                        Activation::Identity
                    },
                };
                for (layout, weight) in [(WeightLayout::OutIn, &w), (WeightLayout::InOut, &wt)] {
                    let got = linear(&x, weight, layout, s, &epilogue, threads);
                    for r in 0..rows {
                        for o in 0..output {
                            let mut want: f64 = (0..input)
                                .map(|i| x[r * input + i] as f64 * w[o * input + i] as f64)
                                .sum();
                            if with_bias {
                                want += bias[o] as f64;
                            }
                            if with_res {
                                want += residual[r * output + o] as f64;
                            }
                            if gelu {
                                want = gelu64(want);
                            }
                            let g = got[r * output + o] as f64;
                            assert!(
                                (g - want).abs() < 1e-4 * want.abs().max(1.0),
                                "{s:?} {layout:?} ({r}, {o}): {g} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
