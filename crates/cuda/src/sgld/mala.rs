//! The MALA acceptance of the device's SGLD transitions (as `stagewise_sampling::mala`), and the
//! per-chain sums over parameters it and SGNHT need.

use stagewise_sampling::chains::ChainConfig;
use stagewise_sampling::sgld::Sgld;

use crate::device::{Arg, Buf, Device, Gemm, GpuError};

/// Device state of the MALA acceptance: drift and point of this step and of the previous one.
pub(super) struct MalaBuffers {
    pub(super) drift: Buf<f32>,
    pub(super) prev_w: Buf<f32>,
    pub(super) prev_drift: Buf<f32>,
    pub(super) terms: Buf<f32>,
    pub(super) sums: Buf<f32>,
    pub(super) u: Buf<f64>,
    pub(super) prev_u: Buf<f64>,
    /// Acceptance per draw and weight set `[draws, Q]` (float64: it can be tiny).
    pub(super) hist: Buf<f64>,
}

/// Per-chain sums over the `p` parameters: `sums[q, j] = sum_i src[q, i, j]` for `width`
/// values per parameter (a GEMM with a ones vector).
pub(super) fn chain_sums(
    d: &dyn Device,
    sums: crate::Ptr,
    src: crate::Ptr,
    ones: &Buf<f32>,
    q: usize,
    p: usize,
    width: usize,
) -> Result<(), GpuError> {
    d.gemm(&Gemm {
        trans_a: false,
        trans_b: false,
        m: width,
        n: 1,
        k: p,
        alpha: 1.0,
        a: src,
        lda: width,
        stride_a: width * p,
        b: ones.ptr,
        ldb: p,
        stride_b: 0,
        beta: 0.0,
        c: sums,
        ldc: width,
        stride_c: width,
        batch: q,
    })
}

/// The MALA acceptance of the move into this step's point (before its update), recorded at the
/// step's draw; then this point becomes the previous one.
#[allow(clippy::too_many_arguments)]
pub(super) fn mala_step(
    d: &dyn Device,
    mb: &MalaBuffers,
    w: &Buf<f32>,
    w0: &Buf<f32>,
    grad: &Buf<f32>,
    mask: crate::Ptr,
    tok_loss: &Buf<f32>,
    ones: &Buf<f32>,
    counter: &Buf<u32>,
    sgld: &Sgld,
    cfg: &ChainConfig,
    q: usize,
    p: usize,
    k: usize,
) -> Result<(), GpuError> {
    let n = (q * p) as i64;
    d.launch(
        "mala_point",
        q * p,
        &[
            mb.drift.arg(),
            mb.terms.arg(),
            w.arg(),
            w0.arg(),
            grad.arg(),
            Arg::Ptr(mask),
            Arg::I64(p as i64),
            Arg::F64(sgld.nbeta),
            Arg::F64(sgld.gamma),
            Arg::F64(sgld.weight_decay),
            Arg::I64(n),
        ],
    )?;
    chain_sums(d, mb.sums.ptr, mb.terms.ptr, ones, q, p, 2)?;
    d.launch(
        "mala_energy",
        q,
        &[
            mb.u.arg(),
            mb.sums.arg(),
            tok_loss.arg(),
            Arg::I32(k as i32),
            Arg::F64(sgld.nbeta),
            Arg::F64(sgld.gamma),
            Arg::F64(sgld.weight_decay),
            Arg::I64(q as i64),
        ],
    )?;
    d.launch(
        "mala_transition",
        q * p,
        &[
            mb.terms.arg(),
            mb.prev_w.arg(),
            w.arg(),
            mb.prev_drift.arg(),
            mb.drift.arg(),
            Arg::F64(0.5 * sgld.epsilon),
            Arg::I64(n),
        ],
    )?;
    chain_sums(d, mb.sums.ptr, mb.terms.ptr, ones, q, p, 2)?;
    d.launch(
        "mala_accept",
        q,
        &[
            mb.hist.arg(),
            mb.sums.arg(),
            mb.prev_u.arg(),
            mb.u.arg(),
            Arg::F64(2.0 * sgld.epsilon * sgld.noise_level * sgld.noise_level),
            counter.arg(),
            Arg::I32(cfg.burnin as i32),
            Arg::I32(cfg.steps_between_draws.max(1) as i32),
            Arg::I32(cfg.draws as i32),
            Arg::I64(q as i64),
        ],
    )?;
    d.launch("copy_f32", q * p, &[mb.prev_w.arg(), w.arg(), Arg::I64(n)])?;
    d.launch(
        "copy_f32",
        q * p,
        &[mb.prev_drift.arg(), mb.drift.arg(), Arg::I64(n)],
    )?;
    d.launch(
        "copy_f64",
        q,
        &[mb.prev_u.arg(), mb.u.arg(), Arg::I64(q as i64)],
    )
}
