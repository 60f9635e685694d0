//! Choosing the device a run uses (`auto`, `cpu`, `cuda`, `cuda:N`, `metal`), and what it has
//! free. A GPU that cannot be used is a clear error naming why (a library that does not load,
//! no device, a driver that fails to start), and `auto` says why it settled on the CPU; nothing
//! here panics. The CUDA build loads the CUDA libraries at run time (`scripts/build-cuda.sh`,
//! docs/gpu.md), so the same binary starts and runs on the CPU where there is no driver.

#[cfg(feature = "cuda")]
mod cuda;

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{Error, Result};

/// The device asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// CUDA device 0 when it can be used, else Metal, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The CUDA device of this ordinal.
    Cuda(usize),
    Metal,
}

impl DeviceRequest {
    pub const EXPECTED: &'static str = "expected auto, cpu, cuda, cuda:N or metal";
}

impl FromStr for DeviceRequest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => Self::Auto,
            "cpu" => Self::Cpu,
            "cuda" => Self::Cuda(0),
            "metal" => Self::Metal,
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Self::Cuda(i),
                _ => {
                    return Err(Error::option(
                        "device",
                        format!("`{other}`: {}", Self::EXPECTED),
                    ))
                }
            },
        })
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::Metal => f.write_str("metal"),
        }
    }
}

/// The device a request settled on.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    /// `cpu`, `cuda:0`, `metal`.
    pub name: String,
    /// Why [`DeviceRequest::Auto`] did not pick a GPU (`None` when it did, or when the
    /// device was named).
    pub fallback_reason: Option<String>,
}

/// Opens the device `request` names. A named GPU that cannot be used is an
/// [`Error::DeviceUnavailable`] saying why; `Auto` falls back to the CPU and says why in
/// [`SelectedDevice::fallback_reason`].
pub fn select_device(request: DeviceRequest) -> Result<SelectedDevice> {
    let named = |device: Device, name: String| SelectedDevice {
        device,
        name,
        fallback_reason: None,
    };
    match request {
        DeviceRequest::Cpu => Ok(named(Device::Cpu, "cpu".into())),
        DeviceRequest::Cuda(i) => match open_cuda(i) {
            Ok(device) => Ok(named(device, format!("cuda:{i}"))),
            Err(reason) => Err(Error::DeviceUnavailable {
                device: format!("cuda:{i}"),
                reason,
            }),
        },
        DeviceRequest::Metal => match open_metal() {
            Ok(device) => Ok(named(device, "metal".into())),
            Err(reason) => Err(Error::DeviceUnavailable {
                device: "metal".into(),
                reason,
            }),
        },
        DeviceRequest::Auto => {
            let mut reasons = Vec::new();
            match open_cuda(0) {
                Ok(device) => return Ok(named(device, "cuda:0".into())),
                Err(reason) if cfg!(feature = "cuda") => reasons.push(format!("CUDA: {reason}")),
                Err(_) => {}
            }
            match open_metal() {
                Ok(device) => return Ok(named(device, "metal".into())),
                Err(reason) if cfg!(feature = "metal") => reasons.push(format!("Metal: {reason}")),
                Err(_) => {}
            }
            if reasons.is_empty() {
                reasons.push(
                    "this build has no GPU backend (built without `--features cuda` or `metal`)"
                        .into(),
                );
            }
            Ok(SelectedDevice {
                device: Device::Cpu,
                name: "cpu".into(),
                fallback_reason: Some(reasons.join("; ")),
            })
        }
    }
}

fn open_cuda(ordinal: usize) -> std::result::Result<Device, String> {
    #[cfg(feature = "cuda")]
    {
        cuda::open(ordinal)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err("this diffsr was built without CUDA (`--features cuda`; see docs/gpu.md)".into())
    }
}

fn open_metal() -> std::result::Result<Device, String> {
    if !cfg!(feature = "metal") {
        return Err("this diffsr was built without Metal (`--features metal`)".into());
    }
    Device::new_metal(0).map_err(|e| crate::error::without_backtrace(e).to_string())
}

/// Free and total memory of a device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}

/// What the driver says a GPU has free now; `None` on the CPU (see
/// [`crate::memory::available_ram`]) and where the backend cannot tell (Metal).
pub fn device_memory(device: &Device) -> Option<DeviceMemory> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => cuda::memory(d),
        _ => None,
    }
}

/// Waits for the work queued on `device` to finish (a no-op on the CPU): GPU launches return
/// before they run, so a timing must end here.
pub fn synchronize(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print_back() {
        for (text, request) in [
            ("auto", DeviceRequest::Auto),
            ("cpu", DeviceRequest::Cpu),
            ("cuda", DeviceRequest::Cuda(0)),
            ("cuda:3", DeviceRequest::Cuda(3)),
            ("metal", DeviceRequest::Metal),
        ] {
            assert_eq!(text.parse::<DeviceRequest>().unwrap(), request);
        }
        assert_eq!(DeviceRequest::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""] {
            let e = bad.parse::<DeviceRequest>().unwrap_err().to_string();
            assert!(
                e.contains("expected auto, cpu, cuda, cuda:N or metal"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_cpu_is_always_there_and_auto_says_why_it_chose_it() {
        let cpu = select_device(DeviceRequest::Cpu).unwrap();
        assert!(cpu.device.is_cpu() && cpu.fallback_reason.is_none());
        if cfg!(any(feature = "cuda", feature = "metal")) {
            return; // whether a GPU is there depends on the machine
        }
        let auto = select_device(DeviceRequest::Auto).unwrap();
        assert!(auto.device.is_cpu());
        let reason = auto.fallback_reason.unwrap();
        assert!(reason.contains("no GPU backend"), "{reason}");
        let e = select_device(DeviceRequest::Cuda(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cuda:1") && e.contains("built without CUDA"),
            "{e}"
        );
        assert!(device_memory(&Device::Cpu).is_none());
    }
}
