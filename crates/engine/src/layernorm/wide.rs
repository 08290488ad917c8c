//! LayerNorm for float32 rows of a multiple of 16 on AVX-512 and AVX2, written with intrinsics
//! over [`V16`]. A row's statistics end in horizontal reductions whose latency dominates a
//! short row (64 features: four vectors), so rows go four at a time, each step over all four
//! before the next, and their dependency chains overlap. Same formulas as the generic kernels.

#![allow(clippy::needless_range_loop)]

use crate::v16::{V16, Y, Z};

/// Rows per group.
const R: usize = 4;
/// Lanes per vector.
const V: usize = 16;

/// The forward pass on AVX-512 (as [`super::layernorm_forward`] for `T = f32`, `c % 16 == 0`).
///
/// # Safety
/// The CPU has AVX-512F; the slices hold `n` rows of `c` (and `n` statistics, `c` weights).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn forward(
    out: &mut [f32],
    stats: (&mut [f32], &mut [f32]),
    x: &[f32],
    (w, b): (&[f32], &[f32]),
    n: usize,
    c: usize,
    eps: f32,
) {
    // SAFETY: the caller's.
    unsafe { forward_in::<Z>(out, stats, x, (w, b), n, c, eps) }
}

/// The forward pass on AVX2 (as [`forward`]).
///
/// # Safety
/// The CPU has AVX2 and FMA; the slices as for [`forward`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn forward_avx2(
    out: &mut [f32],
    stats: (&mut [f32], &mut [f32]),
    x: &[f32],
    (w, b): (&[f32], &[f32]),
    n: usize,
    c: usize,
    eps: f32,
) {
    // SAFETY: the caller's.
    unsafe { forward_in::<Y>(out, stats, x, (w, b), n, c, eps) }
}

/// The backward pass on AVX-512 (as [`super::layernorm_backward`] for `T = f32`,
/// `c % 16 == 0`); `grads` are dx, dw and db; the adds are summed onto dx as it is stored.
///
/// # Safety
/// The CPU has AVX-512F; the slices hold `n` rows of `c` (and `n` statistics, `c` weights).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn backward(
    grads: (&mut [f32], &mut [f32], &mut [f32]),
    dout: &[f32],
    x: &[f32],
    stats: (&[f32], &[f32]),
    w: (&[f32], &[&[f32]]),
    (n, c): (usize, usize),
) {
    // SAFETY: the caller's.
    unsafe { backward_in::<Z>(grads, dout, x, stats, w, (n, c)) }
}

/// The backward pass on AVX2 (as [`backward`]).
///
/// # Safety
/// The CPU has AVX2 and FMA; the slices as for [`backward`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn backward_avx2(
    grads: (&mut [f32], &mut [f32], &mut [f32]),
    dout: &[f32],
    x: &[f32],
    stats: (&[f32], &[f32]),
    w: (&[f32], &[&[f32]]),
    (n, c): (usize, usize),
) {
    // SAFETY: the caller's.
    unsafe { backward_in::<Y>(grads, dout, x, stats, w, (n, c)) }
}

/// The forward pass in `S`.
#[inline(always)]
unsafe fn forward_in<S: V16>(
    out: &mut [f32],
    (mean, rstd): (&mut [f32], &mut [f32]),
    x: &[f32],
    (w, b): (&[f32], &[f32]),
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
        // SAFETY (this block): rows i0 + r < n, features j..j+16 <= c, by the assert above.
        unsafe {
            let mut m = [0.0f32; R];
            for r in 0..rows {
                let mut s = S::zero();
                for j in (0..c).step_by(V) {
                    s = s.add(S::load(xp.add((i0 + r) * c + j)));
                }
                m[r] = s.reduce_add() * inv_c;
            }
            let mut rs = [0.0f32; R];
            for r in 0..rows {
                let mv = S::splat(m[r]);
                let mut s = S::zero();
                for j in (0..c).step_by(V) {
                    let d = S::load(xp.add((i0 + r) * c + j)).sub(mv);
                    s = S::fmadd(d, d, s);
                }
                let var = s.reduce_add() * inv_c;
                rs[r] = 1.0 / (var + eps).sqrt();
            }
            for r in 0..rows {
                let (mv, rv) = (S::splat(m[r]), S::splat(rs[r]));
                for j in (0..c).step_by(V) {
                    let o = (i0 + r) * c + j;
                    let xh = S::load(xp.add(o)).sub(mv).mul(rv);
                    S::fmadd(xh, S::load(wp.add(j)), S::load(bp.add(j))).store(op.add(o));
                }
                mean[i0 + r] = m[r];
                rstd[i0 + r] = rs[r];
            }
        }
    }
}

/// The backward pass in `S`.
#[inline(always)]
unsafe fn backward_in<S: V16>(
    (dx, dw, db): (&mut [f32], &mut [f32], &mut [f32]),
    dout: &[f32],
    x: &[f32],
    (mean, rstd): (&[f32], &[f32]),
    (w, adds): (&[f32], &[&[f32]]),
    (n, c): (usize, usize),
) {
    assert!(
        c.is_multiple_of(V)
            && adds.iter().all(|a| a.len() >= n * c)
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
        // SAFETY (this block): rows i < n, features j..j+16 <= c of every slice, by the assert.
        unsafe {
            // mean(dnorm) and mean(dnorm * xhat) per row.
            let (mut s1, mut s2) = ([0.0f32; R], [0.0f32; R]);
            for r in 0..rows {
                let i = i0 + r;
                let (mv, rv) = (S::splat(mean[i]), S::splat(rstd[i]));
                let (mut a1, mut a2) = (S::zero(), S::zero());
                for j in (0..c).step_by(V) {
                    let dn = S::load(dp.add(i * c + j)).mul(S::load(wp.add(j)));
                    let xh = S::load(xp.add(i * c + j)).sub(mv).mul(rv);
                    a1 = a1.add(dn);
                    a2 = S::fmadd(dn, xh, a2);
                }
                s1[r] = a1.reduce_add() * inv_c;
                s2[r] = a2.reduce_add() * inv_c;
            }
            for j in (0..c).step_by(V) {
                let (mut gw, mut gb) = (S::load(dwp.add(j)), S::load(dbp.add(j)));
                let wv = S::load(wp.add(j));
                for r in 0..rows {
                    let i = i0 + r;
                    let (mv, rv) = (S::splat(mean[i]), S::splat(rstd[i]));
                    let d = S::load(dp.add(i * c + j));
                    let xh = S::load(xp.add(i * c + j)).sub(mv).mul(rv);
                    gw = S::fmadd(d, xh, gw);
                    gb = gb.add(d);
                    let g = d.mul(wv).sub(S::splat(s1[r])).sub(xh.mul(S::splat(s2[r])));
                    let mut g = g.mul(rv);
                    for a in adds {
                        g = g.add(S::load(a.as_ptr().add(i * c + j)));
                    }
                    g.store(dxp.add(i * c + j));
                }
                gw.store(dwp.add(j));
                gb.store(dbp.add(j));
            }
        }
    }
}
