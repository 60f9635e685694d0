//! Opening a CUDA device without a panic. The CUDA build loads libcuda (the driver), cuBLAS and
//! cuRAND at run time, and cudarc panics on the first call into a library it cannot load; so
//! each is loaded here first (`diffsr_kernels::shared_library`), and a missing one is named.
//! Then candle opens the device (cuInit, the context, the cuBLAS and cuRAND handles), whose
//! errors (no device, a driver too old) come back as text.

use candle_core::{CudaDevice, Device};

use super::DeviceMemory;

/// A library candle's CUDA backend loads, the names to try (the dynamic loader searches
/// `LD_LIBRARY_PATH`, the ld.so cache and the default folders for each), and what to do when
/// it is missing.
struct Library {
    what: &'static str,
    names: &'static [&'static str],
    remedy: &'static str,
}

/// In the order they are needed. cuBLAS and cuRAND are the CUDA 13 ones the binary was built
/// against (scripts/build-cuda.sh); libcublas itself loads libcublasLt, whose absence the
/// loader's reason names.
const LIBRARIES: [Library; 3] = [
    Library {
        what: "the NVIDIA driver",
        names: &["libcuda.so.1", "libcuda.so"],
        remedy: "install the NVIDIA driver (580 or newer: CUDA 13)",
    },
    Library {
        what: "cuBLAS",
        names: &["libcublas.so.13", "libcublas.so"],
        remedy: "it comes with the CUDA 13 toolkit (/usr/local/cuda/lib64) or PyTorch's nvidia-cublas wheel (site-packages/nvidia/cu13/lib): add that folder to LD_LIBRARY_PATH",
    },
    Library {
        what: "cuRAND",
        names: &["libcurand.so.10", "libcurand.so"],
        remedy: "it comes with the CUDA 13 toolkit (/usr/local/cuda/lib64) or PyTorch's nvidia-curand wheel (site-packages/nvidia/cu13/lib): add that folder to LD_LIBRARY_PATH",
    },
];

/// The first library that does not load, as one sentence.
fn missing_library() -> Option<String> {
    LIBRARIES.iter().find_map(|lib| {
        let mut first_reason = None;
        for name in lib.names {
            match diffsr_kernels::shared_library::try_open(name) {
                Ok(()) => return None,
                Err(reason) => {
                    first_reason.get_or_insert(reason);
                }
            }
        }
        Some(format!(
            "{} ({}) could not be loaded ({}); {}",
            lib.names[0],
            lib.what,
            first_reason.unwrap_or_default(),
            lib.remedy
        ))
    })
}

/// CUDA device `ordinal`, or why it cannot be used.
pub(super) fn open(ordinal: usize) -> Result<Device, String> {
    if let Some(missing) = missing_library() {
        return Err(missing);
    }
    // A library that loads but lacks a symbol cudarc asks for (a driver older than CUDA 13)
    // panics inside cudarc; that is an unusable device too, not a crash.
    let opened = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    match opened {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(format!(
            "the CUDA driver could not open device {ordinal}: {}",
            crate::error::without_backtrace(e)
        )),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(format!(
                "the CUDA libraries loaded but are not the CUDA 13 ones this build needs: {text}"
            ))
        }
    }
}

/// The driver's free and total memory of the device (`cuMemGetInfo` in its context).
pub(super) fn memory(device: &CudaDevice) -> Option<DeviceMemory> {
    let (free, total) = device.cuda_stream().context().mem_get_info().ok()?;
    Some(DeviceMemory {
        free: free as u64,
        total: total as u64,
    })
}
