//! The attention backward pass for float32 heads of 16 on AVX-512 (the regression model's
//! heads), written with intrinsics: one head row is one 512-bit register, so each product is
//! a block of 8 rows (or keys) times 16 lanes held in 8 to 16 registers, enough independent
//! sums to keep both FMA ports busy. (The generic kernel in `fixed` leaves this to the
//! compiler, whose vectorisation of larger blocks measured slower, not faster.)
//!
//! Per (sequence, head): V is transposed into zero-padded scratch (Q, K and dY are read in
//! place), then dP = dY V^T by 16-key vectors, dS = P (dP - sum P dP) / sqrt(16) row by
//! row, dQ = dS K by 8-row blocks, and dK = dS^T Q with dV = P^T dY together by 8-key blocks.
//! Causal blocks that are all zero are skipped.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::AttnShape;

/// Head size of this kernel.
const H: usize = 16;
/// Rows or keys per register block.
const G: usize = 8;

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
            unsafe { transpose_v(&mut vt, qkv_b, ov, c3, t) };
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
                    dq_block(dqkv_b, &ds, k, t16, a0, nkb, na, stride, c3, oq);
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

/// `vt[e, j] = v[j, e]` for keys `j < t` (16 at a time, by gathers), V row j at
/// `j * c3 + ov` of `qkv_b`; keys past t are left alone (zeros).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose_v(vt: &mut [f32], qkv_b: &[f32], ov: usize, c3: usize, t: usize) {
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

/// dQ for the 8 rows from `a0`: `sum_j ds[a, j] k[j]` over the keys `j < t` of the blocks `< nkb`, stored at
/// rows `a * stride` (`a < na`) of the head's Q columns `oq` in `dqkv_b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dq_block(
    dqkv_b: &mut [f32],
    ds: &[f32],
    k: Rows<'_>,
    t16: usize,
    a0: usize,
    nkb: usize,
    na: usize,
    stride: usize,
    c3: usize,
    oq: usize,
) {
    assert!(ds.len() >= (a0 + G) * t16 && nkb * H <= t16);
    let dsp = ds.as_ptr();
    let mut acc = [_mm512_setzero_ps(); G];
    // Keys past t have ds = 0 (their probabilities are zero).
    for j in 0..(nkb * H).min(k.n) {
        // SAFETY: in bounds by the assert above and `Rows`.
        unsafe {
            let k = _mm512_loadu_ps(k.ptr(j));
            for (g, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*dsp.add((a0 + g) * t16 + j));
                *acc = _mm512_fmadd_ps(w, k, *acc);
            }
        }
    }
    for (g, acc) in acc.iter().enumerate().take(na.saturating_sub(a0)) {
        let row = &mut dqkv_b[(a0 + g) * stride * c3 + oq..][..H];
        // SAFETY: `row` holds 16 floats.
        unsafe { _mm512_storeu_ps(row.as_mut_ptr(), *acc) };
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
