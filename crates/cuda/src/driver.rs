//! The GPU: CUDA driver, NVRTC and cuBLAS, all loaded at run time by cudarc, so the binary
//! builds and runs without a CUDA toolkit and only needs a driver (and the NVRTC and cuBLAS
//! libraries of CUDA 12 or 13) where `--device cuda` is asked for.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::sync::Mutex;

use cudarc::cublas::result as cublas;
use cudarc::cublas::sys::{cublasHandle_t, cublasOperation_t};
use cudarc::driver::result as drv;
use cudarc::driver::sys::{
    CUcontext, CUdevice_attribute, CUevent, CUevent_flags, CUfunction, CUmodule, CUstream,
};

use crate::device::{Arg, BLOCK, Device, Gemm, GpuError, Ptr};
use crate::kernels::KERNEL_NAMES;

/// One CUDA device with its primary context, a stream, the compiled kernels and a cuBLAS handle.
pub struct CudaDevice {
    name: String,
    ctx: CUcontext,
    stream: CUstream,
    _module: CUmodule,
    functions: HashMap<&'static str, CUfunction>,
    blas: cublasHandle_t,
    /// Instantiated graphs by handle (None once dropped).
    graphs: Mutex<Vec<Option<usize>>>,
    /// While profiling: each operation's label, bytes, flops and its start and end events.
    profile: Mutex<Option<Vec<(String, f64, f64, CUevent, CUevent)>>>,
    /// Serialises use of the context from several threads.
    lock: Mutex<()>,
}

// SAFETY: the raw handles are used under `lock` with the context made current on every call.
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

fn drv_err(what: &str) -> impl Fn(drv::DriverError) -> GpuError + '_ {
    move |e| GpuError::Driver(format!("{what}: {e:?}"))
}

impl CudaDevice {
    /// Opens device `ordinal`: loads the driver, NVRTC and cuBLAS, compiles the kernels for the
    /// device's architecture. Any missing piece is a `NoDevice` error that names it. With `tf32`
    /// cuBLAS may round GEMM inputs to TF32 on the tensor cores (about 1e-3 relative error, many
    /// times the float32 rate); otherwise GEMMs are full float32, as PyTorch's default.
    pub fn open(ordinal: usize, tf32: bool) -> Result<Self, GpuError> {
        // SAFETY: only probes whether the libraries can be loaded.
        let (has_cuda, has_nvrtc, has_blas) = unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::nvrtc::sys::is_culib_present(),
                cudarc::cublas::sys::is_culib_present(),
            )
        };
        if !has_cuda {
            return Err(GpuError::NoDevice(
                "the NVIDIA driver library (libcuda.so) was not found; is an NVIDIA GPU and its \
                 driver installed?"
                    .into(),
            ));
        }
        drv::init().map_err(|e| GpuError::NoDevice(format!("cuInit failed: {e:?}")))?;
        let count = drv::device::get_count().map_err(drv_err("cuDeviceGetCount"))? as usize;
        if ordinal >= count {
            return Err(GpuError::NoDevice(format!(
                "device cuda:{ordinal} asked for, the driver sees {count} device(s)"
            )));
        }
        for (present, lib) in [
            (has_nvrtc, "NVRTC (libnvrtc.so)"),
            (has_blas, "cuBLAS (libcublas.so)"),
        ] {
            if !present {
                return Err(GpuError::NoDevice(format!(
                    "{lib} was not found: install the CUDA 12/13 runtime libraries or add their \
                     folder to LD_LIBRARY_PATH"
                )));
            }
        }
        let dev = drv::device::get(ordinal as i32).map_err(drv_err("cuDeviceGet"))?;
        let name = drv::device::get_name(dev).map_err(drv_err("cuDeviceGetName"))?;
        // SAFETY: `dev` comes from cuDeviceGet; the context is retained for the process.
        let (ctx, major, minor) = unsafe {
            let ctx = drv::primary_ctx::retain(dev).map_err(drv_err("cuDevicePrimaryCtxRetain"))?;
            drv::ctx::set_current(ctx).map_err(drv_err("cuCtxSetCurrent"))?;
            (
                ctx,
                drv::device::get_attribute(
                    dev,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                )
                .map_err(drv_err("compute capability"))?,
                drv::device::get_attribute(
                    dev,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                )
                .map_err(drv_err("compute capability"))?,
            )
        };
        let (ptx, _) = crate::kernels::compile(&format!("compute_{major}{minor}"), &[])?;
        let image = CString::new(ptx).map_err(|e| GpuError::Compile(e.to_string()))?;
        // SAFETY: the PTX image is a NUL-terminated string that lives through the call.
        let module = unsafe { drv::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(drv_err("cuModuleLoadData"))?;
        let mut functions = HashMap::new();
        for name in KERNEL_NAMES {
            // SAFETY: `module` was just loaded.
            let f = unsafe { drv::module::get_function(module, CString::new(*name).unwrap()) }
                .map_err(|e| GpuError::Driver(format!("kernel {name}: {e:?}")))?;
            functions.insert(*name, f);
        }
        let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking)
            .map_err(drv_err("cuStreamCreate"))?;
        let blas = cublas::create_handle()
            .map_err(|e| GpuError::Driver(format!("cublasCreate: {e:?}")))?;
        // SAFETY: both handles are valid.
        unsafe { cublas::set_stream(blas, stream as *mut _) }
            .map_err(|e| GpuError::Driver(format!("cublasSetStream: {e:?}")))?;
        // A fixed cuBLAS workspace, so that captured graphs never ask cuBLAS to allocate.
        const WORKSPACE: usize = 32 << 20;
        // SAFETY: plain device allocation, kept for the process; the handle is valid.
        unsafe {
            let ws =
                drv::malloc_sync(WORKSPACE).map_err(drv_err("cuMemAlloc (cuBLAS workspace)"))?;
            cudarc::cublas::sys::cublasSetWorkspace_v2(blas, ws as *mut c_void, WORKSPACE)
                .result()
                .map_err(|e| GpuError::Driver(format!("cublasSetWorkspace: {e:?}")))?;
        }
        let mode = if tf32 {
            cudarc::cublas::sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: the handle is valid.
        unsafe { cudarc::cublas::sys::cublasSetMathMode(blas, mode) }
            .result()
            .map_err(|e| GpuError::Driver(format!("cublasSetMathMode: {e:?}")))?;
        Ok(CudaDevice {
            ctx,
            name: format!(
                "{name} (sm_{major}{minor}, GEMMs in {})",
                if tf32 { "TF32" } else { "float32" }
            ),
            stream,
            _module: module,
            functions,
            blas,
            graphs: Mutex::new(Vec::new()),
            profile: Mutex::new(None),
            lock: Mutex::new(()),
        })
    }
}

impl CudaDevice {
    /// While profiling, runs `op` between two recorded events.
    fn timed(
        &self,
        label: impl FnOnce() -> (String, f64, f64),
        op: impl FnOnce() -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        let mut prof = self.profile.lock().unwrap();
        let Some(list) = prof.as_mut() else {
            drop(prof);
            return op();
        };
        let ev = || {
            drv::event::create(CUevent_flags::CU_EVENT_DEFAULT).map_err(drv_err("cuEventCreate"))
        };
        let (start, end) = (ev()?, ev()?);
        // SAFETY: fresh events on the device's stream.
        unsafe { drv::event::record(start, self.stream) }.map_err(drv_err("cuEventRecord"))?;
        op()?;
        // SAFETY: as above.
        unsafe { drv::event::record(end, self.stream) }.map_err(drv_err("cuEventRecord"))?;
        let (name, bytes, flops) = label();
        list.push((name, bytes, flops, start, end));
        Ok(())
    }

    /// Takes the device lock with the context current on this thread.
    fn enter(&self) -> Result<std::sync::MutexGuard<'_, ()>, GpuError> {
        let g = self.lock.lock().unwrap();
        // SAFETY: the context was retained in `open` and is never released.
        unsafe { drv::ctx::set_current(self.ctx) }.map_err(drv_err("cuCtxSetCurrent"))?;
        Ok(g)
    }
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn alloc(&self, bytes: usize) -> Result<Ptr, GpuError> {
        let _g = self.enter()?;
        // SAFETY: plain device allocation (no managed memory).
        unsafe { drv::malloc_sync(bytes.max(1)) }
            .map(Ptr)
            .map_err(|e| {
                if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                    let info = drv::mem_get_info().ok();
                    GpuError::OutOfMemory {
                        bytes,
                        free: info.map(|i| i.0),
                        total: info.map(|i| i.1),
                    }
                } else {
                    drv_err("cuMemAlloc")(e)
                }
            })
    }

    fn memory(&self) -> Option<(usize, usize)> {
        let _g = self.enter().ok()?;
        drv::mem_get_info().ok()
    }

    fn free(&self, ptr: Ptr) {
        let Ok(_g) = self.enter() else { return };
        // SAFETY: `ptr` came from alloc; wait for queued work that may still use it.
        unsafe {
            let _ = drv::stream::synchronize(self.stream);
            let _ = drv::free_sync(ptr.0);
        }
    }

    fn upload(&self, dst: Ptr, src: &[u8]) -> Result<(), GpuError> {
        let _g = self.enter()?;
        // SAFETY: the caller (Buf) checked the range; synchronous after queued work.
        unsafe {
            drv::stream::synchronize(self.stream).map_err(drv_err("cuStreamSynchronize"))?;
            drv::memcpy_htod_sync(dst.0, src).map_err(drv_err("cuMemcpyHtoD"))
        }
    }

    fn download(&self, src: Ptr, dst: &mut [u8]) -> Result<(), GpuError> {
        let _g = self.enter()?;
        // SAFETY: as in upload.
        unsafe {
            drv::stream::synchronize(self.stream).map_err(drv_err("cuStreamSynchronize"))?;
            drv::memcpy_dtoh_sync(dst, src.0).map_err(drv_err("cuMemcpyDtoH"))
        }
    }

    fn launch(&self, name: &'static str, threads: usize, args: &[Arg]) -> Result<(), GpuError> {
        if threads == 0 {
            return Ok(());
        }
        let f = *self
            .functions
            .get(name)
            .ok_or_else(|| GpuError::Unsupported(format!("no kernel named {name}")))?;
        let mut owned = args.to_vec();
        let mut ptrs: Vec<*mut c_void> = owned.iter_mut().map(|a| a.as_void_ptr()).collect();
        let grid = threads.div_ceil(BLOCK) as u32;
        let _g = self.enter()?;
        let label = || {
            let bytes = crate::meter::kernel_bytes(name, threads, args);
            (name.to_string(), bytes, 0.0)
        };
        self.timed(label, || {
            // SAFETY: the argument list matches the kernel's signature; pointers are device
            // memory.
            unsafe {
                drv::launch_kernel(
                    f,
                    (grid, 1, 1),
                    (BLOCK as u32, 1, 1),
                    0,
                    self.stream,
                    &mut ptrs,
                )
            }
            .map_err(|e| GpuError::Driver(format!("launching {name}: {e:?}")))
        })
    }

    fn gemm(&self, g: &Gemm) -> Result<(), GpuError> {
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let _guard = self.enter()?;
        let label = || {
            let (flops, bytes) = crate::meter::gemm_work(g);
            (crate::device::gemm_label(g), bytes, flops)
        };
        self.timed(label, || {
            // SAFETY: pointers and leading dimensions describe device buffers the caller sized.
            unsafe {
                cublas::sgemm_strided_batched(
                    self.blas,
                    op(g.trans_a),
                    op(g.trans_b),
                    g.m as i32,
                    g.n as i32,
                    g.k as i32,
                    &g.alpha,
                    g.a.0 as *const f32,
                    g.lda as i32,
                    g.stride_a as i64,
                    g.b.0 as *const f32,
                    g.ldb as i32,
                    g.stride_b as i64,
                    &g.beta,
                    g.c.0 as *mut f32,
                    g.ldc as i32,
                    g.stride_c as i64,
                    g.batch as i32,
                )
            }
            .map_err(|e| GpuError::Driver(format!("cublasSgemmStridedBatched: {e:?}")))
        })
    }

    fn synchronize(&self) -> Result<(), GpuError> {
        let _g = self.enter()?;
        // SAFETY: the stream is valid.
        unsafe { drv::stream::synchronize(self.stream) }.map_err(drv_err("cuStreamSynchronize"))
    }

    fn begin_capture(&self) -> Result<bool, GpuError> {
        let _g = self.enter()?;
        // SAFETY: the stream is valid; nothing synchronises with it until end_capture.
        unsafe {
            drv::stream::begin_capture(
                self.stream,
                cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        }
        .map_err(drv_err("cuStreamBeginCapture"))?;
        Ok(true)
    }

    fn end_capture(&self) -> Result<u64, GpuError> {
        let _g = self.enter()?;
        // SAFETY: a capture on this stream is under way; the graph is owned here.
        let exec = unsafe {
            let graph =
                drv::stream::end_capture(self.stream).map_err(drv_err("cuStreamEndCapture"))?;
            let exec =
                drv::graph::instantiate(graph, cudarc::driver::sys::CUgraphInstantiate_flags(0))
                    .map_err(drv_err("cuGraphInstantiate"))?;
            let _ = drv::graph::destroy(graph);
            exec
        };
        let mut g = self.graphs.lock().unwrap();
        g.push(Some(exec as usize));
        Ok((g.len() - 1) as u64)
    }

    fn replay(&self, graph: u64) -> Result<(), GpuError> {
        let exec = self
            .graphs
            .lock()
            .unwrap()
            .get(graph as usize)
            .copied()
            .flatten()
            .ok_or_else(|| GpuError::Unsupported(format!("no graph {graph}")))?;
        let _g = self.enter()?;
        // SAFETY: `exec` is a live instantiated graph.
        unsafe { drv::graph::launch(exec as cudarc::driver::sys::CUgraphExec, self.stream) }
            .map_err(drv_err("cuGraphLaunch"))
    }

    fn set_profiling(&self, on: bool) -> bool {
        let _ = self.take_profile();
        *self.profile.lock().unwrap() = on.then(Vec::new);
        true
    }

    fn take_profile(&self) -> Result<Vec<crate::device::Timed>, GpuError> {
        let list = match self.profile.lock().unwrap().as_mut() {
            Some(l) => std::mem::take(l),
            None => return Ok(Vec::new()),
        };
        self.synchronize()?;
        let _g = self.enter()?;
        let mut out = Vec::with_capacity(list.len());
        for (label, bytes, flops, start, end) in list {
            // SAFETY: both events were recorded and the stream has finished.
            let ms = unsafe { drv::event::elapsed(start, end) }
                .map_err(drv_err("cuEventElapsedTime"))?;
            // SAFETY: the events are not used again.
            unsafe {
                let _ = drv::event::destroy(start);
                let _ = drv::event::destroy(end);
            }
            out.push(crate::device::Timed {
                label,
                seconds: ms as f64 / 1e3,
                bytes,
                flops,
            });
        }
        Ok(out)
    }

    fn drop_graph(&self, graph: u64) {
        let exec = self
            .graphs
            .lock()
            .unwrap()
            .get_mut(graph as usize)
            .and_then(Option::take);
        if let (Some(exec), Ok(_g)) = (exec, self.enter()) {
            // SAFETY: the graph is no longer referenced; wait for its last replay first.
            unsafe {
                let _ = drv::stream::synchronize(self.stream);
                let _ = drv::graph::exec_destroy(exec as cudarc::driver::sys::CUgraphExec);
            }
        }
    }
}
