//! The host emulator: kernels.cu compiled for the CPU by build.rs, launched one thread at a
//! time, and a column-major reference SGEMM with cuBLAS's argument convention. Fresh memory is
//! filled with NaN bytes, so a kernel that reads what nothing wrote shows up in the results.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_void};
use std::sync::Mutex;

use crate::device::{Arg, BLOCK, Device, Gemm, GpuError, Ptr};

type Launcher = unsafe extern "C" fn(u32, u32, *mut *mut c_void);

#[repr(C)]
struct HostKernel {
    name: *const c_char,
    launch: Option<Launcher>,
    signature: Option<unsafe extern "C" fn() -> *const c_char>,
}

/// A compiled kernel and its parameter types, one letter each (i int, u unsigned, l long long,
/// q unsigned long long, f float, d double, p pointer).
#[derive(Clone)]
struct Entry {
    launch: Launcher,
    signature: String,
}

unsafe extern "C" {
    static stagewise_host_kernels: [HostKernel; 0];
}

/// Names of the kernels compiled into the emulator.
pub fn host_kernel_names() -> Vec<String> {
    table().keys().cloned().collect()
}

fn table() -> HashMap<String, Entry> {
    let mut map = HashMap::new();
    // SAFETY: host.cpp ends the table with a null entry; names and signatures are static C
    // strings.
    unsafe {
        let mut p = std::ptr::addr_of!(stagewise_host_kernels) as *const HostKernel;
        while !(*p).name.is_null() {
            let name = CStr::from_ptr((*p).name).to_string_lossy().into_owned();
            let sig = CStr::from_ptr((*p).signature.expect("signature")())
                .to_string_lossy()
                .into_owned();
            let launch = (*p).launch.expect("launcher");
            map.insert(
                name,
                Entry {
                    launch,
                    signature: sig,
                },
            );
            p = p.add(1);
        }
    }
    map
}

fn code(a: &Arg) -> char {
    match a {
        Arg::Ptr(_) => 'p',
        Arg::I32(_) => 'i',
        Arg::U32(_) => 'u',
        Arg::I64(_) => 'l',
        Arg::U64(_) => 'q',
        Arg::F32(_) => 'f',
        Arg::F64(_) => 'd',
    }
}

/// A recorded operation of a captured graph.
#[derive(Clone)]
enum Op {
    Launch(&'static str, usize, Vec<Arg>),
    Gemm(Gemm),
}

/// 256 bytes of device memory, aligned as cuMemAlloc aligns its allocations (so that the
/// kernels' 16-byte vector loads see the alignment they get on a GPU).
#[derive(Clone, Copy)]
#[repr(C, align(256))]
struct Block([u8; 256]);

/// The emulated device.
pub struct HostDevice {
    kernels: HashMap<String, Entry>,
    /// The graph being captured, and the captured graphs (CUDA graph semantics: operations are
    /// recorded, not run, and replays use the recorded arguments).
    capturing: Mutex<Option<Vec<Op>>>,
    /// What broke the capture under way (CUDA invalidates a capture on a synchronising call).
    capture_fault: Mutex<Option<String>>,
    graphs: Mutex<Vec<Option<Vec<Op>>>>,
    /// Host wall-clock times of operations while profiling.
    profile: Mutex<Option<Vec<crate::device::Timed>>>,
    /// Allocations by address: 256-byte aligned blocks (as cuMemAlloc aligns) and the bytes
    /// asked for (rounded up to 8, the extent that bounds checks allow).
    memory: Mutex<HashMap<u64, (Vec<Block>, usize)>>,
    /// The emulated card's memory in bytes (`None`: the host's).
    limit: Option<usize>,
}

impl Default for HostDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl HostDevice {
    pub fn new() -> Self {
        HostDevice {
            kernels: table(),
            memory: Mutex::new(HashMap::new()),
            capturing: Mutex::new(None),
            capture_fault: Mutex::new(None),
            graphs: Mutex::new(Vec::new()),
            profile: Mutex::new(None),
            limit: None,
        }
    }

    /// An emulated card of `bytes` of memory: allocations past it fail as on a full GPU.
    pub fn with_memory_limit(bytes: usize) -> Self {
        HostDevice {
            limit: Some(bytes),
            ..Self::new()
        }
    }

    /// CUDA refuses allocation, copies and synchronisation on a thread that is capturing a
    /// graph (thread-local mode) and invalidates the capture; so does the emulator, so that such
    /// a call inside a captured step fails the tests here rather than on the GPU.
    fn refuse_in_capture(&self, what: &str) -> Result<(), GpuError> {
        if self.capturing.lock().unwrap().is_none() {
            return Ok(());
        }
        let msg = format!("{what} during a graph capture (CUDA refuses it and ends the capture)");
        self.capture_fault
            .lock()
            .unwrap()
            .get_or_insert_with(|| msg.clone());
        Err(GpuError::Unsupported(msg))
    }

    fn check(&self, ptr: Ptr, bytes: usize) -> Result<(), GpuError> {
        let mem = self.memory.lock().unwrap();
        let ok = mem
            .iter()
            .any(|(base, (_, len))| ptr.0 >= *base && ptr.0 + bytes as u64 <= *base + *len as u64);
        if ok {
            Ok(())
        } else {
            Err(GpuError::Shape(format!(
                "{bytes} bytes at {:#x} are outside every allocation",
                ptr.0
            )))
        }
    }
}

impl Device for HostDevice {
    fn name(&self) -> String {
        "host emulator".into()
    }

    fn alloc(&self, bytes: usize) -> Result<Ptr, GpuError> {
        self.refuse_in_capture("cuMemAlloc")?;
        let blocks = bytes.div_ceil(256).max(1);
        let mut mem = self.memory.lock().unwrap();
        if let Some(limit) = self.limit {
            let used: usize = mem.values().map(|(v, _)| 256 * v.len()).sum();
            if used + 256 * blocks > limit {
                return Err(GpuError::OutOfMemory {
                    bytes,
                    free: Some(limit.saturating_sub(used)),
                    total: Some(limit),
                });
            }
        }
        let v = vec![Block([0xFF; 256]); blocks];
        let addr = v.as_ptr() as u64;
        mem.insert(addr, (v, 8 * bytes.div_ceil(8).max(1)));
        Ok(Ptr(addr))
    }

    fn memory(&self) -> Option<(usize, usize)> {
        let limit = self.limit?;
        let mem = self.memory.lock().unwrap();
        let used: usize = mem.values().map(|(v, _)| 256 * v.len()).sum();
        Some((limit.saturating_sub(used), limit))
    }

    fn free(&self, ptr: Ptr) {
        // The GPU's free waits for the stream, which a capture forbids; the buffer is freed
        // anyway, the capture fails at its end.
        let _ = self.refuse_in_capture("cuMemFree");
        self.memory.lock().unwrap().remove(&ptr.0);
    }

    fn upload(&self, dst: Ptr, src: &[u8]) -> Result<(), GpuError> {
        self.refuse_in_capture("a copy to the device")?;
        self.check(dst, src.len())?;
        // SAFETY: checked to lie inside one live allocation.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.0 as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&self, src: Ptr, dst: &mut [u8]) -> Result<(), GpuError> {
        self.refuse_in_capture("a copy from the device")?;
        self.check(src, dst.len())?;
        // SAFETY: as in upload.
        unsafe { std::ptr::copy_nonoverlapping(src.0 as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn launch(&self, name: &'static str, threads: usize, args: &[Arg]) -> Result<(), GpuError> {
        if let Some(ops) = self.capturing.lock().unwrap().as_mut() {
            ops.push(Op::Launch(name, threads, args.to_vec()));
            return Ok(());
        }
        let entry = self
            .kernels
            .get(name)
            .ok_or_else(|| GpuError::Unsupported(format!("no kernel named {name}")))?;
        let given: String = args.iter().map(code).collect();
        if given != entry.signature {
            return Err(GpuError::Shape(format!(
                "{name}: arguments {given} do not match the parameters {}",
                entry.signature
            )));
        }
        let f = entry.launch;
        let t0 = std::time::Instant::now();
        let mut args = args.to_vec();
        let mut ptrs: Vec<*mut c_void> = args.iter_mut().map(|a| a.as_void_ptr()).collect();
        let grid = threads.div_ceil(BLOCK) as u32;
        // SAFETY: the argument list matches the kernel's signature (the caller's contract, as
        // with cuLaunchKernel); pointers address live allocations.
        unsafe { f(grid, BLOCK as u32, ptrs.as_mut_ptr()) };
        if let Some(p) = self.profile.lock().unwrap().as_mut() {
            p.push(crate::device::Timed {
                label: name.to_string(),
                seconds: t0.elapsed().as_secs_f64(),
                bytes: crate::meter::kernel_bytes(name, threads, &args),
                flops: 0.0,
            });
        }
        Ok(())
    }

    fn gemm(&self, g: &Gemm) -> Result<(), GpuError> {
        if let Some(ops) = self.capturing.lock().unwrap().as_mut() {
            ops.push(Op::Gemm(*g));
            return Ok(());
        }
        let t0 = std::time::Instant::now();
        let (ra, ca) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (rb, cb) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        for (what, ld, rows) in [("lda", g.lda, ra), ("ldb", g.ldb, rb), ("ldc", g.ldc, g.m)] {
            if ld < rows.max(1) {
                return Err(GpuError::Shape(format!("{what} = {ld} < {rows} rows")));
            }
        }
        for i in 0..g.batch {
            let a = g.a.add::<f32>(i * g.stride_a).0 as *const f32;
            let b = g.b.add::<f32>(i * g.stride_b).0 as *const f32;
            let c = g.c.add::<f32>(i * g.stride_c).0 as *mut f32;
            self.check(Ptr(a as u64), 4 * ((ca.max(1) - 1) * g.lda + ra))?;
            self.check(Ptr(b as u64), 4 * ((cb.max(1) - 1) * g.ldb + rb))?;
            self.check(Ptr(c as u64), 4 * ((g.n.max(1) - 1) * g.ldc + g.m))?;
            for col in 0..g.n {
                for row in 0..g.m {
                    let mut acc = 0.0f64;
                    for l in 0..g.k {
                        // SAFETY: indices inside the ranges checked above.
                        let (av, bv) = unsafe {
                            let av = if g.trans_a {
                                *a.add(l + row * g.lda)
                            } else {
                                *a.add(row + l * g.lda)
                            };
                            let bv = if g.trans_b {
                                *b.add(col + l * g.ldb)
                            } else {
                                *b.add(l + col * g.ldb)
                            };
                            (av, bv)
                        };
                        acc += av as f64 * bv as f64;
                    }
                    // SAFETY: as above.
                    unsafe {
                        let dst = c.add(row + col * g.ldc);
                        let old = if g.beta == 0.0 {
                            0.0
                        } else {
                            g.beta as f64 * *dst as f64
                        };
                        *dst = (g.alpha as f64 * acc + old) as f32;
                    }
                }
            }
        }
        if let Some(p) = self.profile.lock().unwrap().as_mut() {
            let (flops, bytes) = crate::meter::gemm_work(g);
            p.push(crate::device::Timed {
                label: crate::device::gemm_label(g),
                seconds: t0.elapsed().as_secs_f64(),
                bytes,
                flops,
            });
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<(), GpuError> {
        self.refuse_in_capture("cuStreamSynchronize")
    }

    fn begin_capture(&self) -> Result<bool, GpuError> {
        let mut c = self.capturing.lock().unwrap();
        if c.is_some() {
            return Err(GpuError::Unsupported(
                "a capture is already under way".into(),
            ));
        }
        *c = Some(Vec::new());
        *self.capture_fault.lock().unwrap() = None;
        Ok(true)
    }

    fn end_capture(&self) -> Result<u64, GpuError> {
        let ops = self
            .capturing
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| GpuError::Unsupported("no capture under way".into()))?;
        if let Some(fault) = self.capture_fault.lock().unwrap().take() {
            return Err(GpuError::Unsupported(fault));
        }
        let mut g = self.graphs.lock().unwrap();
        g.push(Some(ops));
        Ok((g.len() - 1) as u64)
    }

    fn replay(&self, graph: u64) -> Result<(), GpuError> {
        let ops = self
            .graphs
            .lock()
            .unwrap()
            .get(graph as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| GpuError::Unsupported(format!("no graph {graph}")))?;
        for op in &ops {
            match op {
                Op::Launch(name, threads, args) => self.launch(name, *threads, args)?,
                Op::Gemm(g) => self.gemm(g)?,
            }
        }
        Ok(())
    }

    fn drop_graph(&self, graph: u64) {
        if let Some(g) = self.graphs.lock().unwrap().get_mut(graph as usize) {
            *g = None;
        }
    }

    fn set_profiling(&self, on: bool) -> bool {
        *self.profile.lock().unwrap() = on.then(Vec::new);
        true
    }

    fn take_profile(&self) -> Result<Vec<crate::device::Timed>, GpuError> {
        Ok(self
            .profile
            .lock()
            .unwrap()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default())
    }
}
