//! Attention for float32 heads of 16 on AVX-512 (the regression model's heads), written with
//! intrinsics: one head row is one 512-bit register, so each product is a block of 8 rows (or
//! keys) times 16 lanes held in 8 to 16 registers, enough independent sums to keep both FMA
//! ports busy. (The generic kernels leave this to the compiler, whose vectorisation of larger
//! blocks measured slower, not faster.)
//!
//! Per (sequence, head), Q, K, V and dY are read in place and one of K or V is transposed into
//! zero-padded scratch (by gathers). Forward: S = Q K^T by 16-key vectors straight into the
//! saved softmax rows, the softmax row by row, Y = P V by 8-row blocks. Backward: dP = dY V^T,
//! dS = P (dP - sum P dP) / sqrt(16) row by row, dQ = dS K by 8-row blocks, and dK = dS^T Q with
//! dV = P^T dY together by 8-key blocks. Causal blocks that are all zero are skipped.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::AttnShape;

/// Head size of this kernel.
const H: usize = 16;
/// Rows or keys per register block.
const G: usize = 8;

/// The forward pass (as [`super::lanes::forward`] for `H = 16`, `T = f32`).
///
/// # Safety
/// The CPU has AVX-512F; the slices are the shapes `s` and `stride` give, with
/// `s.c_model / s.heads == 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward(
    out: &mut [f32],
    probs: &mut [f32],
    qkv: &[f32],
    s: AttnShape,
    stride: usize,
) {
    let (t, cm, heads) = (s.t, s.c_model, s.heads);
    let c3 = 3 * cm;
    let (na, tp, t16) = (s.active_rows(stride), s.tp(), t.next_multiple_of(H));
    assert!(
        out.len() >= s.nseq * t * cm
            && qkv.len() >= s.nseq * t * c3
            && probs.len() >= s.probs_len(stride)
            && cm == heads * H,
        "attention forward: buffers too small for {s:?}"
    );
    let mut kt = vec![0.0f32; H * t16];
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        let out_b = &mut out[b * t * cm..(b + 1) * t * cm];
        for h in 0..heads {
            let (oq, ok, ov, oy) = (h * 3 * H, h * 3 * H + H, h * 3 * H + 2 * H, h * H);
            let q = Rows::new(qkv_b, oq, stride * c3, na);
            let v = Rows::new(qkv_b, ov, c3, t);
            // SAFETY: `kt` holds 16 rows of t16; K rows j < t of this head lie in qkv_b.
            unsafe { transpose_rows(&mut kt, qkv_b, ok, c3, t) };
            let p_bh = &mut probs[(b * heads + h) * na * tp..][..na * tp];
            for a0 in (0..na).step_by(G) {
                let nkb = ((a0 + G - 1).min(na - 1) * stride) / H + 1;
                // SAFETY: rows a < na of p_bh, key blocks nkb * 16 <= t16 of kt.
                unsafe { scores_block(p_bh, q, &kt, (t16, tp), a0, nkb) };
                // SAFETY: rows a < na of p_bh hold tp >= a * stride + 1 scores.
                unsafe { softmax_rows(p_bh, tp, a0, (na - a0).min(G), stride, 0.25) };
                // Y = P V over the keys < t of the blocks (P is zero past each row's key).
                let nk = (nkb * H).min(t);
                // SAFETY: rows a < na of p_bh (tp apart, nk <= tp) and of the output.
                unsafe { weighted_rows(out_b, (cm, oy), p_bh, tp, na, v, nk, a0, stride) };
            }
        }
    }
}

/// Softmax of the score rows `a0..a0 + rows` of `p` (row `a`: keys `0..=a * stride`, scaled by
/// `scale`), zeros after each row's last key; as [`super::softmax::forward_row`], 16 keys per
/// vector, each step over all the rows before the next so that their dependency chains overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::needless_range_loop)]
unsafe fn softmax_rows(
    p: &mut [f32],
    tp: usize,
    a0: usize,
    rows: usize,
    stride: usize,
    scale: f32,
) {
    assert!(rows <= G && p.len() >= (a0 + rows) * tp && (a0 + rows - 1) * stride < tp);
    let base = p.as_mut_ptr();
    // Row g: its start and its number of live keys.
    let row = |g: usize| (unsafe { base.add((a0 + g) * tp) }, (a0 + g) * stride + 1);
    let live = |n: usize, j0: usize| ((1u32 << (n - j0).min(H)) - 1) as __mmask16;
    let kept = |j0: usize| ((1u32 << (tp - j0).min(H)) - 1) as __mmask16;
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut mx = [0.0f32; G];
    for (g, mx) in mx.iter_mut().enumerate().take(rows) {
        let (r, n) = row(g);
        let mut m = ninf;
        for j0 in (0..n).step_by(H) {
            // SAFETY: the mask reads keys j0 + l < n <= tp of the row.
            m = _mm512_max_ps(m, unsafe {
                _mm512_mask_loadu_ps(ninf, live(n, j0), r.add(j0))
            });
        }
        *mx = _mm512_reduce_max_ps(m);
    }
    let scale = _mm512_set1_ps(scale);
    let mut sum = [0.0f32; G];
    for g in 0..rows {
        let ((r, n), m) = (row(g), _mm512_set1_ps(mx[g]));
        let mut acc = _mm512_setzero_ps();
        for j0 in (0..n).step_by(H) {
            // SAFETY: as above; stores keep to keys < tp.
            unsafe {
                let x = _mm512_maskz_loadu_ps(live(n, j0), r.add(j0));
                let e = exp(_mm512_mul_ps(_mm512_sub_ps(x, m), scale));
                let y = _mm512_maskz_mov_ps(live(n, j0), e);
                acc = _mm512_add_ps(acc, y);
                _mm512_mask_storeu_ps(r.add(j0), kept(j0), y);
            }
        }
        sum[g] = _mm512_reduce_add_ps(acc);
    }
    for g in 0..rows {
        let ((r, n), inv) = (row(g), _mm512_set1_ps(1.0 / sum[g]));
        for j0 in (0..n).step_by(H) {
            // SAFETY: as above.
            unsafe {
                let y = _mm512_maskz_loadu_ps(kept(j0), r.add(j0));
                _mm512_mask_storeu_ps(r.add(j0), kept(j0), _mm512_mul_ps(y, inv));
            }
        }
        let z = n.next_multiple_of(H).min(tp);
        // SAFETY: keys z..tp of the row.
        unsafe { std::ptr::write_bytes(r.add(z), 0, tp - z) };
    }
}

/// `exp` of 16 lanes: the engine's Cephes `expf` (`float.rs`), the same operations in the
/// same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn exp(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    let a = _mm512_min_ps(_mm512_max_ps(x, c(-87.3)), c(88.7));
    let u = _mm512_add_ps(_mm512_mul_ps(a, c(std::f32::consts::LOG2_E)), c(0.5));
    let fx = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(u);
    let r = _mm512_fmadd_ps(
        fx,
        c(2.121_944_4e-4),
        _mm512_fmadd_ps(fx, c(-0.693_359_4), a),
    );
    let z = _mm512_mul_ps(r, r);
    let mut y = c(1.987_569_1e-4);
    for k in [
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        5e-1,
    ] {
        y = _mm512_fmadd_ps(y, r, c(k));
    }
    let y = _mm512_fmadd_ps(y, z, _mm512_add_ps(r, c(1.0)));
    let biased = _mm512_sub_epi32(
        _mm512_castps_si512(_mm512_add_ps(_mm512_add_ps(fx, c(127.0)), c(8_388_608.0))),
        _mm512_set1_epi32(0x4B00_0000),
    );
    _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased)))
}

/// `p[a, kb*16 ..] = sum_e q[a, e] kt[e, kb*16 ..]` (raw scores) for the active rows of the
/// 8 from `a0` and key blocks `kb < nkb`, keys past `tp` not stored.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn scores_block(
    p: &mut [f32],
    q: Rows<'_>,
    kt: &[f32],
    (t16, tp): (usize, usize),
    a0: usize,
    nkb: usize,
) {
    let na = q.n;
    assert!(p.len() >= na * tp && kt.len() >= H * t16 && nkb * H <= t16);
    let (pp, ktp) = (p.as_mut_ptr(), kt.as_ptr());
    let qs: [*const f32; G] = std::array::from_fn(|g| q.ptr(a0 + g));
    for kb in 0..nkb {
        let mut acc = [_mm512_setzero_ps(); G];
        for e in 0..H {
            // SAFETY: in bounds by the assert above and `Rows`.
            unsafe {
                let m = _mm512_loadu_ps(ktp.add(e * t16 + kb * H));
                for (g, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*qs[g].add(e)), m, *acc);
                }
            }
        }
        let live = (tp - kb * H).min(H);
        let mask = ((1u32 << live) - 1) as __mmask16;
        for (g, acc) in acc.iter().enumerate().take(na.saturating_sub(a0)) {
            // SAFETY: lanes kb*16 + l < tp of row a0 + g < na.
            unsafe { _mm512_mask_storeu_ps(pp.add((a0 + g) * tp + kb * H), mask, *acc) };
        }
    }
}

/// `out[a] = sum_{j < nk} w[a, j] x[j]` for the active rows `a < rows` of the 8 from `a0`
/// (`w` row-major, `ws` apart), stored at rows `a * stride` of the head's columns `off` of
/// `out` (`step` apart): the attention output Y = P V, and dQ = dS K.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn weighted_rows(
    out: &mut [f32],
    (step, off): (usize, usize),
    w: &[f32],
    ws: usize,
    rows: usize,
    x: Rows<'_>,
    nk: usize,
    a0: usize,
    stride: usize,
) {
    let rows = rows.saturating_sub(a0).min(G);
    assert!(rows > 0 && nk <= ws && nk <= x.n && w.len() >= (a0 + rows - 1) * ws + nk);
    // Rows past the last active one read row a0's weights; they are never stored.
    let wr: [*const f32; G] = std::array::from_fn(|g| {
        // SAFETY: row a0 + g (or a0) holds nk weights, by the assert above.
        unsafe { w.as_ptr().add((a0 + if g < rows { g } else { 0 }) * ws) }
    });
    let mut acc = [_mm512_setzero_ps(); G];
    for j in 0..nk {
        // SAFETY: keys j < nk of those rows; row j < x.n of x.
        unsafe {
            let xj = _mm512_loadu_ps(x.ptr(j));
            for (g, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_set1_ps(*wr[g].add(j)), xj, *acc);
            }
        }
    }
    for (g, acc) in acc.iter().enumerate().take(rows) {
        let row = &mut out[(a0 + g) * stride * step + off..][..H];
        // SAFETY: `row` holds 16 floats.
        unsafe { _mm512_storeu_ps(row.as_mut_ptr(), *acc) };
    }
}

/// The backward pass (as [`super::fixed::backward`] for `H = 16`, `T = f32`).
///
/// # Safety
/// The CPU has AVX-512F; the slices are the shapes `s` and `stride` give (as the generic
/// kernel's), with `s.c_model / s.heads == 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    s: AttnShape,
    stride: usize,
) {
    let (t, cm, heads) = (s.t, s.c_model, s.heads);
    let c3 = 3 * cm;
    let (na, tp) = (s.active_rows(stride), s.tp());
    let (t16, na8) = (t.next_multiple_of(H), na.next_multiple_of(G));
    assert!(
        dqkv.len() >= s.nseq * t * c3
            && qkv.len() >= s.nseq * t * c3
            && dout.len() >= s.nseq * t * cm
            && probs.len() >= s.probs_len(stride)
            && cm == heads * H,
        "attention backward: buffers too small for {s:?}"
    );
    // Zero padding (keys past t) is written once and never overwritten.
    let mut vt = vec![0.0f32; H * t16];
    let mut ds = vec![0.0f32; na8 * t16];
    let scale = _mm512_set1_ps(0.25); // 1 / sqrt(16)
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        let dout_b = &dout[b * t * cm..(b + 1) * t * cm];
        let dqkv_b = &mut dqkv[b * t * c3..(b + 1) * t * c3];
        for h in 0..heads {
            let (oq, ok, ov, oy) = (h * 3 * H, h * 3 * H + H, h * 3 * H + 2 * H, h * H);
            // Rows of Q (active), K, V and dY (active) of this head.
            let q = Rows::new(qkv_b, oq, stride * c3, na);
            let k = Rows::new(qkv_b, ok, c3, t);
            let dy = Rows::new(dout_b, oy, stride * cm, na);
            // SAFETY: `vt` holds 16 rows of t16; V rows j < t of this head lie in qkv_b.
            unsafe { transpose_rows(&mut vt, qkv_b, ov, c3, t) };
            let p_bh = &probs[(b * heads + h) * na * tp..][..na * tp];
            for a0 in (0..na).step_by(G) {
                // Keys blocks of 16 up to the block's last query position.
                let nkb = ((a0 + G - 1).min(na - 1) * stride) / H + 1;
                // SAFETY: the scratch holds na8 rows of t16 keys; nkb * 16 <= t16.
                unsafe {
                    dp_block(&mut ds, dy, &vt, t16, a0, nkb);
                    for a in a0..(a0 + G).min(na) {
                        ds_row(&mut ds[a * t16..][..nkb * H], &p_bh[a * tp..][..tp], scale);
                    }
                    // dQ = dS K over the keys < t of the blocks (dS is zero past t).
                    let nk = (nkb * H).min(t);
                    weighted_rows(dqkv_b, (c3, oq), &ds, t16, na, k, nk, a0, stride);
                }
            }
            if stride > 1 {
                for i in (0..t).filter(|i| i % stride != 0) {
                    dqkv_b[i * c3 + oq..][..H].fill(0.0);
                }
            }
            for j0 in (0..t).step_by(G) {
                // SAFETY: rows a < na of ds, qs, dys and p_bh; keys j0..j0+8 <= tp, t16.
                unsafe {
                    dkv_block(
                        dqkv_b,
                        &ds,
                        q,
                        dy,
                        p_bh,
                        (t, t16, tp),
                        j0,
                        stride,
                        (c3, ok, ov),
                    )
                };
            }
        }
    }
}

/// `n` rows of 16 floats, `step` apart from `off` in `data`; rows past `n` read as zeros.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    off: usize,
    step: usize,
    n: usize,
}

static ZEROS: [f32; H] = [0.0; H];

impl<'a> Rows<'a> {
    fn new(data: &'a [f32], off: usize, step: usize, n: usize) -> Self {
        assert!(n == 0 || data.len() >= off + (n - 1) * step + H);
        Rows { data, off, step, n }
    }

    /// Row `r` (zeros past `n`).
    #[inline(always)]
    fn ptr(&self, r: usize) -> *const f32 {
        if r < self.n {
            // SAFETY: in bounds by the assert in `new`.
            unsafe { self.data.as_ptr().add(self.off + r * self.step) }
        } else {
            ZEROS.as_ptr()
        }
    }
}

/// `vt[e, j] = x[j, e]` for keys `j < t` (16 at a time, by gathers), row j of x at
/// `j * c3 + ov` of `qkv_b`; keys past t are left alone (zeros).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose_rows(vt: &mut [f32], qkv_b: &[f32], ov: usize, c3: usize, t: usize) {
    let t16 = t.next_multiple_of(H);
    assert!(vt.len() >= H * t16 && t > 0 && qkv_b.len() >= (t - 1) * c3 + ov + H);
    assert!(c3 * H < i32::MAX as usize);
    let offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(c3 as i32),
    );
    for j0 in (0..t).step_by(H) {
        let live = (t - j0).min(H);
        let mask = ((1u32 << live) - 1) as __mmask16;
        for e in 0..H {
            // SAFETY: lanes l < live read V rows j0 + l < t, element e: in qkv_b by the assert.
            unsafe {
                let base = qkv_b.as_ptr().add(j0 * c3 + ov + e);
                let x = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, offsets, base);
                _mm512_storeu_ps(vt.as_mut_ptr().add(e * t16 + j0), x);
            }
        }
    }
}

/// `ds[a, kb*16 ..][..16] = sum_e dy[a, e] vt[e, kb*16 ..]` for the 8 rows from `a0` and key
/// blocks `kb < nkb`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dp_block(ds: &mut [f32], dy: Rows<'_>, vt: &[f32], t16: usize, a0: usize, nkb: usize) {
    assert!(ds.len() >= (a0 + G) * t16 && nkb * H <= t16 && vt.len() >= H * t16);
    let (ds, vt) = (ds.as_mut_ptr(), vt.as_ptr());
    let ys: [*const f32; G] = std::array::from_fn(|g| dy.ptr(a0 + g));
    for kb in 0..nkb {
        let mut acc = [_mm512_setzero_ps(); G];
        for e in 0..H {
            // SAFETY: in bounds by the assert above.
            unsafe {
                let m = _mm512_loadu_ps(vt.add(e * t16 + kb * H));
                for (g, acc) in acc.iter_mut().enumerate() {
                    let y = _mm512_set1_ps(*ys[g].add(e));
                    *acc = _mm512_fmadd_ps(y, m, *acc);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            // SAFETY: in bounds by the assert above.
            unsafe { _mm512_storeu_ps(ds.add((a0 + g) * t16 + kb * H), *acc) };
        }
    }
}

/// One row of the softmax backward: `d <- p * (d - sum(p * d)) * scale` over `d`'s key blocks;
/// `p` is the row of `tp` probabilities (zeros past the query), read as zeros past `tp`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn ds_row(d: &mut [f32], p: &[f32], scale: __m512) {
    let p_at = |j0: usize| {
        let live = p.len().saturating_sub(j0).min(H);
        let mask: __mmask16 = ((1u32 << live) - 1) as __mmask16;
        // SAFETY: the mask covers only elements j0 + l < p.len().
        unsafe { _mm512_maskz_loadu_ps(mask, p.as_ptr().add(j0.min(p.len()))) }
    };
    let mut dot = _mm512_setzero_ps();
    for j0 in (0..d.len()).step_by(H) {
        // SAFETY: d.len() is a multiple of 16.
        let x = unsafe { _mm512_loadu_ps(d.as_ptr().add(j0)) };
        dot = _mm512_fmadd_ps(p_at(j0), x, dot);
    }
    let dot = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
    for j0 in (0..d.len()).step_by(H) {
        // SAFETY: as above.
        unsafe {
            let x = _mm512_loadu_ps(d.as_ptr().add(j0));
            let y = _mm512_mul_ps(_mm512_mul_ps(p_at(j0), _mm512_sub_ps(x, dot)), scale);
            _mm512_storeu_ps(d.as_mut_ptr().add(j0), y);
        }
    }
}

/// dK and dV of the 8 keys from `j0`: `sum_a ds[a, j] q[a]` and `sum_a p[a, j] dy[a]` over the
/// rows that see them (`a * stride >= j`), stored at rows `j < t`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dkv_block(
    dqkv_b: &mut [f32],
    ds: &[f32],
    q: Rows<'_>,
    dy: Rows<'_>,
    p: &[f32],
    (t, t16, tp): (usize, usize, usize),
    j0: usize,
    stride: usize,
    (c3, ok, ov): (usize, usize, usize),
) {
    let na = q.n;
    assert!(ds.len() >= na * t16 && dy.n == na && p.len() >= na * tp && j0 + G <= tp.min(t16));
    let (dsp, pp) = (ds.as_ptr(), p.as_ptr());
    let mut dk = [_mm512_setzero_ps(); G];
    let mut dv = [_mm512_setzero_ps(); G];
    for a in j0.div_ceil(stride)..na {
        // SAFETY: in bounds by the assert above.
        unsafe {
            let (q, y) = (_mm512_loadu_ps(q.ptr(a)), _mm512_loadu_ps(dy.ptr(a)));
            for g in 0..G {
                let w = _mm512_set1_ps(*dsp.add(a * t16 + j0 + g));
                dk[g] = _mm512_fmadd_ps(w, q, dk[g]);
                let pw = _mm512_set1_ps(*pp.add(a * tp + j0 + g));
                dv[g] = _mm512_fmadd_ps(pw, y, dv[g]);
            }
        }
    }
    for g in 0..G.min(t - j0) {
        let row = &mut dqkv_b[(j0 + g) * c3..][..c3];
        // SAFETY: the key and value columns of the row hold 16 floats each.
        unsafe {
            _mm512_storeu_ps(row[ok..][..H].as_mut_ptr(), dk[g]);
            _mm512_storeu_ps(row[ov..][..H].as_mut_ptr(), dv[g]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Float;
    use crate::simd::{Avx512, Level, supported};

    /// The intrinsics `exp` is the engine's `expf`, bit for bit, over its whole clamped range.
    #[test]
    fn exp_is_the_engines_expf_bit_for_bit() {
        if !supported().contains(&Level::Avx512) {
            eprintln!("no AVX-512 on this CPU: skipped");
            return;
        }
        let xs: Vec<f32> = (0..200_000)
            .map(|i| -100.0 + i as f32 * 1e-3 + (i % 7) as f32 * 1.3e-7)
            .collect();
        let mut want = xs.clone();
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn engine(x: &mut [f32]) {
            f32::exp_in_place::<Avx512>(x)
        }
        // SAFETY: the CPU has AVX-512 (checked above).
        unsafe { engine(&mut want) };
        for (c, w) in xs.chunks_exact(H).zip(want.chunks_exact(H)) {
            let mut got = [0.0f32; H];
            // SAFETY: as above; `c` holds 16 floats.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp(_mm512_loadu_ps(c.as_ptr()))) };
            for l in 0..H {
                assert_eq!(got[l].to_bits(), w[l].to_bits(), "exp({})", c[l]);
            }
        }
    }
}
