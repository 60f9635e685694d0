//! Reading a tensor's values on the host without copying what is already there: a contiguous
//! f32 tensor on the CPU lends its storage; anything else (another dtype, a strided view, a GPU
//! tensor) is copied once. Image-sized results go through here so that turning a tensor
//! into an image buffer costs one image-sized allocation, not three.

use candle_core::{DType, Storage, Tensor};

use crate::error::Result;

/// Calls `read` with the values of `tensor` in row-major order, as f32.
pub(crate) fn with_f32_values<R>(tensor: &Tensor, read: impl FnOnce(&[f32]) -> R) -> Result<R> {
    // Both are free when the tensor already is contiguous f32.
    let tensor = tensor.to_dtype(DType::F32)?.contiguous()?;
    if tensor.device().is_cpu() {
        let (storage, layout) = tensor.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            return Ok(read(&cpu.as_slice::<f32>()?[start..end]));
        }
    }
    let values = tensor.flatten_all()?.to_vec1::<f32>()?;
    Ok(read(&values))
}

/// A zeroed `len`-element f32 buffer, or an error naming `what` when the allocator cannot
/// give it (instead of aborting the process).
pub(crate) fn zeroed_f32(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut data = Vec::new();
    data.try_reserve_exact(len).map_err(|_| {
        crate::error::Error::option(
            "max-memory",
            format!(
                "cannot allocate {} MiB for {what}: the system has not that much memory free",
                (len as u64 * 4) >> 20
            ),
        )
    })?;
    data.resize(len, 0.0);
    Ok(data)
}
