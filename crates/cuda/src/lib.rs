//! CUDA backend of stagewise: the regression transformer's forward and backward, Adam, and
//! batched SGLD chains with on-device data and noise, on one NVIDIA GPU. The same kernels run
//! on the host emulator, which is how the CPU-only tests check them against the CPU engine.

pub mod chains;
pub mod check;
pub mod data;
pub mod device;
pub mod driver;
pub mod full_loss;
pub mod host;
pub mod kernels;
pub mod meter;
pub mod model;
pub mod observed;
pub mod sgld;
pub mod tally;
pub mod train;

use std::sync::Arc;

pub use device::{Arg, Buf, Device, Gemm, GpuError, Ptr};

/// Where to compute, as given to `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    /// The host emulator of the CUDA kernels (slow; for tests and checks without a GPU).
    Emulator,
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "emulator" => Ok(DeviceSpec::Emulator),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "device '{s}': expected cpu, cuda, cuda:N (N = 0, 1, ...) or emulator"
                )),
            },
        }
    }
}

/// Opens the device a spec names (`None` for the CPU); `tf32` lets cuBLAS use TF32 tensor cores.
pub fn open(spec: DeviceSpec, tf32: bool) -> Result<Option<Arc<dyn Device>>, GpuError> {
    Ok(match spec {
        DeviceSpec::Cpu => None,
        DeviceSpec::Cuda(n) => Some(Arc::new(driver::CudaDevice::open(n, tf32)?)),
        DeviceSpec::Emulator => Some(Arc::new(host::HostDevice::new())),
    })
}
