//! Borrowing the elements of a contiguous f32 CPU tensor, for the hand-written CPU kernels
//! (convolution, linear layers) that hand slices to `gemm`.

use candle_core::{Layout, Storage};

/// The elements of a contiguous f32 CPU tensor's storage, or an error naming what is wrong.
pub(crate) fn f32_slice<'a>(
    storage: &'a Storage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        candle_core::bail!("CPU fast path: tensor is not on the CPU");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("CPU fast path: tensor is not contiguous");
    };
    Ok(&cpu.as_slice::<f32>()?[start..end])
}
