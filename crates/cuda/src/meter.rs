//! A device that counts: launches, GEMM flops, and the fewest bytes each launch must move through
//! device memory (every input read once, every output written once). Wrapped around a device it
//! forwards everything; without one ("dry") it runs nothing and hands out fake addresses, so a
//! step's work can be counted on any machine. Flops over the card's GEMM rate and bytes over its
//! bandwidth give the step's floor.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::device::{Arg, Device, Gemm, GpuError, Ptr};

#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub launches: u64,
    pub gemms: u64,
    pub gemm_flops: f64,
    pub gemm_bytes: f64,
    pub kernel_bytes: f64,
    /// Calls and bytes per kernel name ("gemm" for cuBLAS).
    pub per_kernel: BTreeMap<String, (u64, f64)>,
}

impl Counts {
    pub fn bytes(&self) -> f64 {
        self.gemm_bytes + self.kernel_bytes
    }
}

pub struct Meter {
    inner: Option<Arc<dyn Device>>,
    counts: Mutex<Counts>,
    next: Mutex<u64>,
}

impl Meter {
    pub fn wrap(inner: Arc<dyn Device>) -> Self {
        Meter {
            inner: Some(inner),
            counts: Mutex::default(),
            next: Mutex::new(1 << 40),
        }
    }

    /// Counts without computing anything.
    pub fn dry() -> Self {
        Meter {
            inner: None,
            counts: Mutex::default(),
            next: Mutex::new(1 << 40),
        }
    }

    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

fn int(a: &Arg) -> f64 {
    match a {
        Arg::I32(v) => *v as f64,
        Arg::U32(v) => *v as f64,
        Arg::I64(v) => *v as f64,
        Arg::U64(v) => *v as f64,
        _ => 0.0,
    }
}

/// A GEMM's flops and fewest bytes: A and B once per batch entry (once in all with stride 0), C
/// written (and read when beta != 0).
pub fn gemm_work(g: &Gemm) -> (f64, f64) {
    let b = g.batch as f64;
    let flops = 2.0 * (g.m * g.n * g.k) as f64 * b;
    let once = |stride: usize, len: usize| {
        if stride == 0 {
            len as f64
        } else {
            len as f64 * b
        }
    };
    let c_passes = if g.beta == 0.0 { 1.0 } else { 2.0 };
    let bytes = 4.0
        * (once(g.stride_a, g.m * g.k)
            + once(g.stride_b, g.k * g.n)
            + c_passes * (g.m * g.n) as f64 * b);
    (flops, bytes)
}

/// threads x head size, for an attention kernel named `..._hs<HS>`.
fn n_hs(name: &str, threads: f64) -> f64 {
    let hs: f64 = name
        .rsplit("_hs")
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    threads * hs
}

/// The fewest bytes kernel `name` moves for `threads` threads with these arguments.
pub fn kernel_bytes(name: &str, threads: usize, args: &[Arg]) -> f64 {
    let n = threads as f64;
    let f = 4.0;
    let at = |i: usize| args.get(i).map(int).unwrap_or(0.0);
    match name {
        "fill_f32" => f * n,
        // writes every full row, reads the active ones (about half).
        "scatter_rows" => 1.5 * f * n,
        "copy_f32" | "broadcast_f32" | "add_positions" | "readout_backward"
        | "positions_backward" => 2.0 * f * n,
        "bias_relu" => 2.0 * f * n,
        "add_f32" | "relu_backward" => 3.0 * f * n,
        "attention_residual" | "residual_backward" => 4.0 * f * n,
        // rows x C: read x, write out.
        "layernorm_forward" => 2.0 * f * n * at(8),
        // read dy and x, write dx and dy*xhat; mode 1 also reads dx, mode 2 reads dxn and
        // writes dattn.
        "layernorm_backward" => {
            let passes = match at(10) as i64 {
                0 => 4.0,
                1 => 5.0,
                _ => 6.0,
            };
            passes * f * n * at(9)
        }
        // threads = rows x heads, hs = C / heads: read q, k, v (3 hs); write out (hs) and lse.
        _ if name.starts_with("attention_forward") => f * n_hs(name, n) * 4.0 + f * n,
        // read q, k, v, dout, out (5 hs) and lse; write dq (hs) and D.
        _ if name.starts_with("attention_backward_q") => f * n_hs(name, n) * 6.0 + 2.0 * f * n,
        // read q, k, v, dout (4 hs), lse and D; write dk, dv (2 hs).
        _ if name.starts_with("attention_backward_kv") => f * n_hs(name, n) * 6.0 + 2.0 * f * n,
        // read a row of lnf (C) and y; write y_hat, the squared error and dpred.
        "readout_loss" => f * n * (at(10) + 4.0),
        // one example per thread: write its two token rows 2(D+1) and its target.
        "gen_regression" => f * n * (2.0 * (at(5) + 1.0) + 1.0),
        // params, m, v read and written, grad read.
        "adam_step" => 7.0 * f * n,
        "record_draw" | "record_window" => 2.0 * f * n,
        // four coordinates: w and m read and written, w0 and grad read, energy and dist2 written.
        "sgnht_step" => 4.0 * 8.0 * f * n,
        "sgnht_init" => 4.0 * f * n,
        "sgnht_thermostat" => 20.0 * n,
        // drift written; w, w0, grad read; two terms written.
        "mala_point" => 6.0 * f * n,
        // w and drift of both points read, two terms written.
        "mala_transition" => 6.0 * f * n,
        "mala_energy" | "mala_accept" => 8.0 * 4.0 * n,
        "copy_f64" => 16.0 * n,
        "copy_rows_f32" => 2.0 * f * n,
        "advance_counter" => 8.0,
        // four coordinates: w read and written, w0 and grad read, dist2 written (and RMSprop's
        // second moment read and written).
        "sgld_step" => {
            let rms = matches!(args.get(19), Some(Arg::Ptr(p)) if p.0 != 0);
            4.0 * (if rms { 7.0 } else { 5.0 }) * f * n
        }
        _ => 0.0,
    }
}

impl Device for Meter {
    fn name(&self) -> String {
        match &self.inner {
            Some(d) => format!("{} (metered)", d.name()),
            None => "dry meter".into(),
        }
    }

    fn alloc(&self, bytes: usize) -> Result<Ptr, GpuError> {
        match &self.inner {
            Some(d) => d.alloc(bytes),
            None => {
                let mut next = self.next.lock().unwrap();
                let p = *next;
                *next += bytes.next_multiple_of(256) as u64;
                Ok(Ptr(p))
            }
        }
    }

    fn free(&self, ptr: Ptr) {
        if let Some(d) = &self.inner {
            d.free(ptr)
        }
    }

    fn upload(&self, dst: Ptr, src: &[u8]) -> Result<(), GpuError> {
        match &self.inner {
            Some(d) => d.upload(dst, src),
            None => Ok(()),
        }
    }

    fn download(&self, src: Ptr, dst: &mut [u8]) -> Result<(), GpuError> {
        match &self.inner {
            Some(d) => d.download(src, dst),
            None => {
                dst.fill(0);
                Ok(())
            }
        }
    }

    fn launch(&self, name: &'static str, threads: usize, args: &[Arg]) -> Result<(), GpuError> {
        let bytes = kernel_bytes(name, threads, args);
        {
            let mut c = self.counts.lock().unwrap();
            c.launches += 1;
            c.kernel_bytes += bytes;
            let e = c.per_kernel.entry(name.to_string()).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
        match &self.inner {
            Some(d) => d.launch(name, threads, args),
            None => Ok(()),
        }
    }

    fn gemm(&self, g: &Gemm) -> Result<(), GpuError> {
        let (flops, bytes) = gemm_work(g);
        {
            let mut c = self.counts.lock().unwrap();
            c.launches += 1;
            c.gemms += 1;
            c.gemm_flops += flops;
            c.gemm_bytes += bytes;
            let e = c.per_kernel.entry("gemm".into()).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
        match &self.inner {
            Some(d) => d.gemm(g),
            None => Ok(()),
        }
    }

    fn synchronize(&self) -> Result<(), GpuError> {
        match &self.inner {
            Some(d) => d.synchronize(),
            None => Ok(()),
        }
    }
    // No graphs: a metered run issues (and counts) every launch of every step.
}
