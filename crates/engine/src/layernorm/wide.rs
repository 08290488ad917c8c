//! LayerNorm for float32 rows of a multiple of 16 on AVX-512, written with intrinsics. A row's
//! statistics end in horizontal reductions whose latency dominates a short row (64 features:
//! four registers), so rows go four at a time, each step over all four before the next, and
//! their dependency chains overlap. Same formulas as the generic kernels.

#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows per group.
const R: usize = 4;
/// Lanes per vector.
const V: usize = 16;

/// As [`super::layernorm_forward`] for `T = f32`, `c % 16 == 0`.
///
/// # Safety
/// The CPU has AVX-512F; the slices hold `n` rows of `c` (and `n` statistics, `c` weights).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(
        c.is_multiple_of(V)
            && out.len() >= n * c
            && x.len() >= n * c
            && mean.len() >= n
            && rstd.len() >= n
            && w.len() >= c
            && b.len() >= c
    );
    let inv_c = 1.0 / c as f32;
    let (xp, op, wp, bp) = (x.as_ptr(), out.as_mut_ptr(), w.as_ptr(), b.as_ptr());
    for i0 in (0..n).step_by(R) {
        let rows = (n - i0).min(R);
        let mut m = [0.0f32; R];
        for r in 0..rows {
            let mut s = _mm512_setzero_ps();
            for j in (0..c).step_by(V) {
                // SAFETY: row i0 + r < n, features j..j+16 <= c.
                s = _mm512_add_ps(s, unsafe { _mm512_loadu_ps(xp.add((i0 + r) * c + j)) });
            }
            m[r] = _mm512_reduce_add_ps(s) * inv_c;
        }
        let mut rs = [0.0f32; R];
        for r in 0..rows {
            let mv = _mm512_set1_ps(m[r]);
            let mut s = _mm512_setzero_ps();
            for j in (0..c).step_by(V) {
                // SAFETY: as above.
                let d = _mm512_sub_ps(unsafe { _mm512_loadu_ps(xp.add((i0 + r) * c + j)) }, mv);
                s = _mm512_fmadd_ps(d, d, s);
            }
            let var = _mm512_reduce_add_ps(s) * inv_c;
            rs[r] = 1.0 / (var + eps).sqrt();
        }
        for r in 0..rows {
            let (mv, rv) = (_mm512_set1_ps(m[r]), _mm512_set1_ps(rs[r]));
            for j in (0..c).step_by(V) {
                let o = (i0 + r) * c + j;
                // SAFETY: as above.
                unsafe {
                    let xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xp.add(o)), mv), rv);
                    let y =
                        _mm512_fmadd_ps(xh, _mm512_loadu_ps(wp.add(j)), _mm512_loadu_ps(bp.add(j)));
                    _mm512_storeu_ps(op.add(o), y);
                }
            }
            mean[i0 + r] = m[r];
            rstd[i0 + r] = rs[r];
        }
    }
}

/// As [`super::layernorm_backward`] for `T = f32`, `c % 16 == 0`.
///
/// # Safety
/// The CPU has AVX-512F; the slices hold `n` rows of `c` (and `n` statistics, `c` weights).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn backward(
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
) {
    assert!(
        c.is_multiple_of(V)
            && dx.len() >= n * c
            && dout.len() >= n * c
            && x.len() >= n * c
            && mean.len() >= n
            && rstd.len() >= n
            && w.len() >= c
            && dw.len() >= c
            && db.len() >= c
    );
    let inv_c = 1.0 / c as f32;
    let (xp, dp, wp) = (x.as_ptr(), dout.as_ptr(), w.as_ptr());
    let (dxp, dwp, dbp) = (dx.as_mut_ptr(), dw.as_mut_ptr(), db.as_mut_ptr());
    for i0 in (0..n).step_by(R) {
        let rows = (n - i0).min(R);
        // mean(dnorm) and mean(dnorm * xhat) per row.
        let (mut s1, mut s2) = ([0.0f32; R], [0.0f32; R]);
        for r in 0..rows {
            let i = i0 + r;
            let (mv, rv) = (_mm512_set1_ps(mean[i]), _mm512_set1_ps(rstd[i]));
            let (mut a1, mut a2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for j in (0..c).step_by(V) {
                // SAFETY: row i < n, features j..j+16 <= c.
                unsafe {
                    let dn = _mm512_mul_ps(
                        _mm512_loadu_ps(dp.add(i * c + j)),
                        _mm512_loadu_ps(wp.add(j)),
                    );
                    let xh =
                        _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i * c + j)), mv), rv);
                    a1 = _mm512_add_ps(a1, dn);
                    a2 = _mm512_fmadd_ps(dn, xh, a2);
                }
            }
            s1[r] = _mm512_reduce_add_ps(a1) * inv_c;
            s2[r] = _mm512_reduce_add_ps(a2) * inv_c;
        }
        for j in (0..c).step_by(V) {
            // SAFETY: features j..j+16 <= c of dw, db and w.
            let (mut gw, mut gb, wv) = unsafe {
                (
                    _mm512_loadu_ps(dwp.add(j)),
                    _mm512_loadu_ps(dbp.add(j)),
                    _mm512_loadu_ps(wp.add(j)),
                )
            };
            for r in 0..rows {
                let i = i0 + r;
                let (mv, rv) = (_mm512_set1_ps(mean[i]), _mm512_set1_ps(rstd[i]));
                // SAFETY: row i < n, features j..j+16 <= c.
                unsafe {
                    let d = _mm512_loadu_ps(dp.add(i * c + j));
                    let xh =
                        _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i * c + j)), mv), rv);
                    gw = _mm512_fmadd_ps(d, xh, gw);
                    gb = _mm512_add_ps(gb, d);
                    let dn = _mm512_mul_ps(d, wv);
                    let g = _mm512_sub_ps(
                        _mm512_sub_ps(dn, _mm512_set1_ps(s1[r])),
                        _mm512_mul_ps(xh, _mm512_set1_ps(s2[r])),
                    );
                    _mm512_storeu_ps(dxp.add(i * c + j), _mm512_mul_ps(g, rv));
                }
            }
            // SAFETY: as above.
            unsafe {
                _mm512_storeu_ps(dwp.add(j), gw);
                _mm512_storeu_ps(dbp.add(j), gb);
            }
        }
    }
}
