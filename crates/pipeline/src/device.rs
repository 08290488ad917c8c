//! Where the numbers run: the CPU or a CUDA device (a GPU, or the host emulator of its
//! kernels), chosen once and passed to every stage that can use it.

use std::sync::Arc;

use anyhow::{Context, Result};
use stagewise_cuda::train::CudaEngine;
use stagewise_cuda::{Device, DeviceSpec, GpuError};
use stagewise_models::RegressionTransformer;
use stagewise_train::{TrainConfig, Trainer};

/// An opened compute backend.
#[derive(Clone, Default)]
pub enum Backend {
    #[default]
    Cpu,
    Device(Arc<dyn Device>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Cpu => write!(f, "Cpu"),
            Backend::Device(d) => write!(f, "Device({})", d.name()),
        }
    }
}

impl Backend {
    /// Opens `spec` (`tf32`: let cuBLAS use TF32 tensor cores). A missing GPU or driver is an
    /// error that says what is missing.
    pub fn open(spec: DeviceSpec, tf32: bool) -> Result<Self> {
        let dev = stagewise_cuda::open(spec, tf32)
            .with_context(|| format!("--device {}", spec_name(spec)))?;
        Ok(match dev {
            None => Backend::Cpu,
            Some(d) => Backend::Device(d),
        })
    }

    pub fn device(&self) -> Option<&Arc<dyn Device>> {
        match self {
            Backend::Cpu => None,
            Backend::Device(d) => Some(d),
        }
    }

    /// A trainer for `cfg` on this backend.
    pub fn trainer(&self, cfg: &TrainConfig) -> Result<Trainer<f32>> {
        match self {
            Backend::Cpu => Ok(Trainer::<f32>::new(cfg.clone())?),
            Backend::Device(dev) => {
                cfg.validate()?;
                let model = RegressionTransformer::new(cfg.model_config())?;
                let data = cfg.pretrain_distribution();
                let hint = || "lower batch_size or eval_batch_size".to_string();
                let bytes = CudaEngine::peak_bytes(cfg, &model, &data)?;
                let what = format!(
                    "training (batch_size = {}, eval_batch_size = {})",
                    cfg.batch_size, cfg.eval_batch_size
                );
                stagewise_cuda::tally::check_fits(dev.as_ref(), &what, bytes)
                    .map_err(|e| memory_hint(e, hint))?;
                let engine = CudaEngine::new(dev.clone(), cfg, model, data)
                    .map_err(|e| memory_hint(e, hint))?;
                Ok(Trainer::with_engine(cfg.clone(), move |_, _, _| {
                    Box::new(engine)
                })?)
            }
        }
    }
}

/// A device error as the user sees it: when the card is out of memory, with `hint` (what to
/// lower) appended.
pub fn memory_hint(e: GpuError, hint: impl FnOnce() -> String) -> anyhow::Error {
    match e {
        e @ (GpuError::OutOfMemory { .. } | GpuError::TooLarge { .. }) => {
            anyhow::anyhow!("{e}; {}", hint())
        }
        e => e.into(),
    }
}

/// `cpu`, `cuda:N` or `emulator`.
pub fn spec_name(spec: DeviceSpec) -> String {
    match spec {
        DeviceSpec::Cpu => "cpu".into(),
        DeviceSpec::Cuda(n) => format!("cuda:{n}"),
        DeviceSpec::Emulator => "emulator".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_out_of_memory_errors_get_the_hint() {
        let oom = GpuError::OutOfMemory {
            bytes: 3 << 30,
            free: Some(1 << 30),
            total: Some(80 << 30),
        };
        let msg = memory_hint(oom, || "lower --chains-per-launch".into()).to_string();
        assert_eq!(
            msg,
            "the device is out of memory: 3072 MiB more asked for (1024 MiB free of 81920 MiB); \
             lower --chains-per-launch"
        );
        let other = memory_hint(GpuError::Driver("launch failed".into()), || {
            unreachable!("no hint for other errors")
        });
        assert_eq!(other.to_string(), "CUDA driver call failed: launch failed");
    }
}
