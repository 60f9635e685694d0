//! The one way a layer calls a CPU kernel of `diffsr_kernels`: [`on_cpu_f32`] (or [`on_cpu`]
//! for kernels with other element types) borrows the contiguous storage of the layer's
//! tensors as slices, runs the kernel on them and wraps its output in a CPU tensor; when a
//! tensor is on another device or of another dtype it runs nothing and returns `None`, and the
//! layer runs candle's own op instead (CUDA, Metal, the dtypes a kernel lacks).

use candle_core::{Device, Shape, Tensor, WithDType};

use super::cpu_slice::cpu_slice;

/// Threads the CPU kernels split their work into: those of the rayon pool the caller runs in
/// (an engine's own pool under `ThreadPool::install`, see [`crate::threads`], else rayon's
/// global pool), so `--threads` bounds the kernels without an environment variable.
pub(crate) fn cpu_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// `kernel(inputs, optional)` on the elements of the given tensors (each made contiguous
/// first: a no-op for the outputs of the ops that normally feed a layer), its output a CPU
/// tensor of `shape`; `None` when any given tensor is not a CPU tensor of element type `T`.
pub(crate) fn on_cpu<T: WithDType, const N: usize, const M: usize>(
    inputs: [&Tensor; N],
    optional: [Option<&Tensor>; M],
    shape: impl Into<Shape>,
    kernel: impl FnOnce([&[T]; N], [Option<&[T]>; M]) -> Vec<T>,
) -> candle_core::Result<Option<Tensor>> {
    let fits = |t: &&Tensor| t.device().is_cpu() && t.dtype() == T::DTYPE;
    if !inputs.iter().all(fits) || !optional.iter().flatten().all(fits) {
        return Ok(None);
    }
    // Arrays throughout: no heap allocation besides the output (a layer may be called
    // thousands of times per image).
    let inputs = all_ok(inputs.map(|t| t.contiguous()))?;
    let optional = all_ok(optional.map(|t| t.map(|t| t.contiguous()).transpose()))?;
    let out = {
        let guards = inputs.each_ref().map(|t| t.storage_and_layout());
        let optional_guards = optional
            .each_ref()
            .map(|t| t.as_ref().map(|t| t.storage_and_layout()));
        let slices = all_ok(guards.each_ref().map(|(s, l)| cpu_slice::<T>(s, l)))?;
        let optional_slices = all_ok(
            optional_guards
                .each_ref()
                .map(|g| g.as_ref().map(|(s, l)| cpu_slice::<T>(s, l)).transpose()),
        )?;
        kernel(slices, optional_slices)
    };
    Ok(Some(Tensor::from_vec(out, shape, &Device::Cpu)?))
}

/// The values of `results`, or the first error among them.
fn all_ok<V, const N: usize>(results: [candle_core::Result<V>; N]) -> candle_core::Result<[V; N]> {
    let mut first_err = None;
    let values = results.map(|r| match r {
        Ok(v) => Some(v),
        Err(e) => {
            first_err.get_or_insert(e);
            None
        }
    });
    match first_err {
        Some(e) => Err(e),
        None => Ok(values.map(|v| v.expect("no error: checked above"))),
    }
}

/// [`on_cpu`] for f32, the element type of nearly every kernel.
pub(crate) fn on_cpu_f32<const N: usize, const M: usize>(
    inputs: [&Tensor; N],
    optional: [Option<&Tensor>; M],
    shape: impl Into<Shape>,
    kernel: impl FnOnce([&[f32]; N], [Option<&[f32]>; M]) -> Vec<f32>,
) -> candle_core::Result<Option<Tensor>> {
    on_cpu(inputs, optional, shape, kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn runs_on_cpu_tensors_of_the_element_type_only() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 6.0, &dev)?.reshape((2, 3))?;
        // A transposed view: made contiguous first.
        let b = Tensor::arange(0f32, 6.0, &dev)?.reshape((3, 2))?.t()?;
        let sum = on_cpu_f32([&a, &b], [None], (2, 3), |[a, b], [none]| {
            assert!(none.is_none());
            a.iter().zip(b).map(|(x, y)| x + y).collect()
        })?
        .expect("f32 on the CPU");
        assert_eq!(sum.to_vec2::<f32>()?, [[0.0, 3.0, 6.0], [4.0, 7.0, 10.0]]);
        let a64 = a.to_dtype(DType::F64)?;
        let ran = on_cpu_f32([&a64], [], 6, |_, _| unreachable!())?;
        assert!(ran.is_none());
        let ran = on_cpu_f32([&a], [Some(&a64)], 6, |_, _| unreachable!())?;
        assert!(ran.is_none());
        let doubled =
            on_cpu::<f64, 1, 0>([&a64], [], 6, |[x], []| x.iter().map(|v| 2.0 * v).collect())?
                .expect("f64 on the CPU");
        assert_eq!(doubled.to_vec1::<f64>()?[5], 10.0);
        Ok(())
    }
}
