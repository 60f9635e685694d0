//! Borrowing the elements of a contiguous CPU tensor, for the CPU kernels of
//! `diffsr_kernels` (through [`super::cpu_dispatch`], their one caller).

use candle_core::{Layout, Storage, WithDType};

/// The elements of a contiguous CPU tensor's storage of element type `T`, or an error naming
/// what is wrong.
pub(crate) fn cpu_slice<'a, T: WithDType>(
    storage: &'a Storage,
    layout: &Layout,
) -> candle_core::Result<&'a [T]> {
    let Storage::Cpu(cpu) = storage else {
        candle_core::bail!("CPU fast path: tensor is not on the CPU");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("CPU fast path: tensor is not contiguous");
    };
    Ok(&cpu.as_slice::<T>()?[start..end])
}
