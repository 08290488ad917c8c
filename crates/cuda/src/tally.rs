//! Device memory a computation needs, found by running it on a device that only counts: its
//! allocations are tallied (rounded as the emulator and `cuMemAlloc` round them), its launches,
//! GEMMs and copies do nothing, and downloads read zeros. The count is exact by construction,
//! since the code that allocates on the GPU is the code that runs here, and it costs host time
//! for the launch calls only.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::device::{Arg, Device, Gemm, GpuError, Ptr};

/// Allocation granularity: `cuMemAlloc` aligns every allocation to at least 256 bytes.
const GRANULE: usize = 256;

/// A device that records how much memory is live and the most that ever was.
#[derive(Default)]
pub struct Tally {
    /// Live allocations (address, rounded size) and the peak of their sum.
    live: Mutex<(Vec<(u64, usize)>, usize)>,
    next: AtomicU64,
}

impl Tally {
    /// The most bytes live at once so far.
    pub fn peak(&self) -> usize {
        self.live.lock().unwrap().1
    }
}

/// The peak device memory of `work` (run on a counting device; its results are meaningless).
pub fn peak_bytes<T>(
    work: impl FnOnce(&Arc<dyn Device>) -> Result<T, GpuError>,
) -> Result<usize, GpuError> {
    let tally = Arc::new(Tally::default());
    let dev: Arc<dyn Device> = tally.clone();
    work(&dev)?;
    Ok(tally.peak())
}

/// An error when `bytes` for `what` exceed what `dev` reports free (nothing where the device
/// cannot say).
pub fn check_fits(dev: &dyn Device, what: &str, bytes: usize) -> Result<(), GpuError> {
    match dev.memory() {
        Some((free, total)) if bytes > free => Err(GpuError::TooLarge {
            what: what.to_string(),
            bytes,
            free,
            total,
        }),
        _ => Ok(()),
    }
}

impl Device for Tally {
    fn name(&self) -> String {
        "memory tally".into()
    }

    fn alloc(&self, bytes: usize) -> Result<Ptr, GpuError> {
        let size = bytes.div_ceil(GRANULE).max(1) * GRANULE;
        // Distinct, aligned, never-dereferenced addresses.
        let addr = GRANULE as u64 + self.next.fetch_add(size as u64, Ordering::Relaxed);
        let mut live = self.live.lock().unwrap();
        live.0.push((addr, size));
        let now: usize = live.0.iter().map(|(_, s)| s).sum();
        live.1 = live.1.max(now);
        Ok(Ptr(addr))
    }

    fn free(&self, ptr: Ptr) {
        self.live.lock().unwrap().0.retain(|(a, _)| *a != ptr.0);
    }

    fn upload(&self, _dst: Ptr, _src: &[u8]) -> Result<(), GpuError> {
        Ok(())
    }

    fn download(&self, _src: Ptr, dst: &mut [u8]) -> Result<(), GpuError> {
        dst.fill(0);
        Ok(())
    }

    fn launch(&self, _name: &'static str, _threads: usize, _args: &[Arg]) -> Result<(), GpuError> {
        Ok(())
    }

    fn gemm(&self, _g: &Gemm) -> Result<(), GpuError> {
        Ok(())
    }

    fn synchronize(&self) -> Result<(), GpuError> {
        Ok(())
    }
}
