//! What the CUDA backend needs from a device: memory, kernel launches by name, and cuBLAS's
//! strided batched SGEMM. Two implementations: [`crate::driver::CudaDevice`] (the GPU, through
//! the driver, NVRTC and cuBLAS loaded at run time) and [`crate::host::HostDevice`] (the same
//! kernels compiled for the CPU, run one thread at a time: the tests' stand-in for a GPU).

use std::sync::Arc;

/// Errors of device setup and execution.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no usable CUDA device: {0}")]
    NoDevice(String),
    #[error("CUDA driver call failed: {0}")]
    Driver(String),
    #[error("compiling the kernels with NVRTC failed: {0}")]
    Compile(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Shape(String),
    /// An allocation the device could not satisfy (free and total as the driver reported them).
    #[error("{}", out_of_memory(*bytes, *free, *total))]
    OutOfMemory {
        bytes: usize,
        free: Option<usize>,
        total: Option<usize>,
    },
    /// A computation whose buffers would not fit in the memory the device has free (found
    /// before anything is allocated; see [`crate::tally`]).
    #[error("{}", too_large(what, *bytes, *free, *total))]
    TooLarge {
        what: String,
        bytes: usize,
        free: usize,
        total: usize,
    },
}

/// Bytes in MiB (in KiB below one MiB, where a card of the tests' size would read "0 MiB").
fn mib(b: usize) -> String {
    if b < 1 << 20 {
        format!("{:.0} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

fn too_large(what: &str, bytes: usize, free: usize, total: usize) -> String {
    format!(
        "{what} needs {} of device memory, and the device has {} free of {}",
        mib(bytes),
        mib(free),
        mib(total)
    )
}

fn out_of_memory(bytes: usize, free: Option<usize>, total: Option<usize>) -> String {
    let left = match (free, total) {
        (Some(f), Some(t)) => format!(" ({} free of {})", mib(f), mib(t)),
        _ => String::new(),
    };
    format!(
        "the device is out of memory: {} more asked for{left}",
        mib(bytes)
    )
}

/// A device address: a GPU pointer, or a host pointer in the emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ptr(pub u64);

impl Ptr {
    pub const NULL: Ptr = Ptr(0);

    /// The address `elems` elements of `T` further on.
    pub fn add<T>(self, elems: usize) -> Ptr {
        Ptr(self.0 + (elems * std::mem::size_of::<T>()) as u64)
    }
}

/// A kernel argument, passed by value as `cuLaunchKernel` expects.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(Ptr),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
}

impl Arg {
    /// Address of the value, for the launch's array of argument pointers.
    pub(crate) fn as_void_ptr(&mut self) -> *mut std::ffi::c_void {
        match self {
            Arg::Ptr(p) => &mut p.0 as *mut u64 as *mut _,
            Arg::I32(v) => v as *mut i32 as *mut _,
            Arg::U32(v) => v as *mut u32 as *mut _,
            Arg::I64(v) => v as *mut i64 as *mut _,
            Arg::U64(v) => v as *mut u64 as *mut _,
            Arg::F32(v) => v as *mut f32 as *mut _,
            Arg::F64(v) => v as *mut f64 as *mut _,
        }
    }
}

/// `C[i] = alpha op(A[i]) op(B[i]) + beta C[i]` for `i < batch`, column-major, as
/// `cublasSgemmStridedBatched` (strides in elements; C is not read when beta is 0).
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: Ptr,
    pub lda: usize,
    pub stride_a: usize,
    pub b: Ptr,
    pub ldb: usize,
    pub stride_b: usize,
    pub beta: f32,
    pub c: Ptr,
    pub ldc: usize,
    pub stride_c: usize,
    pub batch: usize,
}

/// Threads per block of every launch.
pub const BLOCK: usize = 256;

pub trait Device: Send + Sync {
    /// The device's name (for example "NVIDIA H100 80GB HBM3", or "host emulator").
    fn name(&self) -> String;
    fn alloc(&self, bytes: usize) -> Result<Ptr, GpuError>;
    fn free(&self, ptr: Ptr);
    /// Free and total memory in bytes, where the device can say.
    fn memory(&self) -> Option<(usize, usize)> {
        None
    }
    /// Copies host bytes to the device (waits for earlier work).
    fn upload(&self, dst: Ptr, src: &[u8]) -> Result<(), GpuError>;
    /// Copies device bytes to the host (waits for earlier work).
    fn download(&self, src: Ptr, dst: &mut [u8]) -> Result<(), GpuError>;
    /// Runs kernel `name` over `threads` threads (blocks of [`BLOCK`]).
    fn launch(&self, name: &'static str, threads: usize, args: &[Arg]) -> Result<(), GpuError>;
    fn gemm(&self, g: &Gemm) -> Result<(), GpuError>;
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<(), GpuError>;
    /// Starts recording launches and GEMMs into a graph instead of running them (CUDA stream
    /// capture; arguments are taken by value, so what changes between replays must be read
    /// from device memory). False where graphs are not supported: then work runs as issued.
    fn begin_capture(&self) -> Result<bool, GpuError> {
        Ok(false)
    }
    /// Ends a capture; the graph's handle.
    fn end_capture(&self) -> Result<u64, GpuError> {
        Err(GpuError::Unsupported(
            "graphs are not supported on this device".into(),
        ))
    }
    /// Runs a captured graph once.
    fn replay(&self, _graph: u64) -> Result<(), GpuError> {
        Err(GpuError::Unsupported(
            "graphs are not supported on this device".into(),
        ))
    }
    fn drop_graph(&self, _graph: u64) {}
    /// Starts or stops timing every launch and GEMM (events around each on a GPU); false where
    /// unsupported.
    fn set_profiling(&self, _on: bool) -> bool {
        false
    }
    /// The timed operations since profiling started, in order: a label (kernel name, or the
    /// GEMM's shape), seconds, and the fewest bytes it moves (see [`crate::meter`]).
    fn take_profile(&self) -> Result<Vec<Timed>, GpuError> {
        Ok(Vec::new())
    }
}

/// One profiled operation.
#[derive(Clone, Debug)]
pub struct Timed {
    pub label: String,
    pub seconds: f64,
    pub bytes: f64,
    pub flops: f64,
}

/// The label a profile gives a GEMM: its shape, so skinny products show separately.
pub fn gemm_label(g: &Gemm) -> String {
    format!(
        "gemm {}{} m={} n={} k={} x{}",
        if g.trans_a { 'T' } else { 'N' },
        if g.trans_b { 'T' } else { 'N' },
        g.m,
        g.n,
        g.k,
        g.batch
    )
}

/// Plain values that travel between host and device as bytes.
pub trait Elem: Copy + Default + Send + Sync + 'static {}
impl Elem for f32 {}
impl Elem for f64 {}
impl Elem for u8 {}
impl Elem for u32 {}

/// A typed device buffer, freed on drop.
pub struct Buf<T: Elem> {
    dev: Arc<dyn Device>,
    pub ptr: Ptr,
    pub len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Elem> Buf<T> {
    pub fn new(dev: &Arc<dyn Device>, len: usize) -> Result<Self, GpuError> {
        let ptr = dev.alloc(len.max(1) * std::mem::size_of::<T>())?;
        Ok(Buf {
            dev: dev.clone(),
            ptr,
            len,
            _t: std::marker::PhantomData,
        })
    }

    pub fn from_host(dev: &Arc<dyn Device>, data: &[T]) -> Result<Self, GpuError> {
        let b = Self::new(dev, data.len())?;
        b.upload(data)?;
        Ok(b)
    }

    pub fn upload(&self, data: &[T]) -> Result<(), GpuError> {
        self.upload_at(0, data)
    }

    /// Writes `data` at element `at`.
    pub fn upload_at(&self, at: usize, data: &[T]) -> Result<(), GpuError> {
        if at + data.len() > self.len {
            return Err(GpuError::Shape(format!(
                "upload of {} values at {at} into a buffer of {}",
                data.len(),
                self.len
            )));
        }
        // SAFETY: T is a plain value type (Elem); the byte view covers exactly `data`.
        let bytes = unsafe {
            std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data))
        };
        self.dev.upload(self.ptr.add::<T>(at), bytes)
    }

    pub fn download(&self) -> Result<Vec<T>, GpuError> {
        self.download_range(0, self.len)
    }

    pub fn download_range(&self, at: usize, len: usize) -> Result<Vec<T>, GpuError> {
        if at + len > self.len {
            return Err(GpuError::Shape(format!(
                "download of {len} values at {at} from a buffer of {}",
                self.len
            )));
        }
        let mut out = vec![T::default(); len];
        // SAFETY: as in upload_at; every byte pattern the device writes is read as plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, len * size_of::<T>())
        };
        self.dev.download(self.ptr.add::<T>(at), bytes)?;
        Ok(out)
    }

    /// The address of element `i`.
    pub fn at(&self, i: usize) -> Ptr {
        self.ptr.add::<T>(i)
    }

    pub fn arg(&self) -> Arg {
        Arg::Ptr(self.ptr)
    }
}

impl<T: Elem> Drop for Buf<T> {
    fn drop(&mut self) {
        self.dev.free(self.ptr);
    }
}
