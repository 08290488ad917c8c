//! LayerNorm over the last axis, torch semantics (biased variance, affine weight and bias).
//! Float32 rows of a multiple of 16 on AVX-512 and AVX2 take [`wide`] (four rows at a time,
//! intrinsics).

use crate::reduce::{sum, sum_sq_dev};
use crate::simd::fma;

crate::multiversion! {
/// `out[n,c] = (x - mean) * rstd * w + b` per row; saves `mean[n]`, `rstd[n]` for backward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward<I, T: Float>(
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    x: &[T],
    w: &[T],
    b: &[T],
    n: usize,
    c: usize,
    eps: f64,
) {
    #[cfg(target_arch = "x86_64")]
    if I::AVX && I::FMA && c.is_multiple_of(16) && crate::attention::is_f32::<T>() {
        use crate::attention::{as_f32, as_f32_mut};
        let stats = (as_f32_mut(mean), as_f32_mut(rstd));
        let (out, x, wb) = (as_f32_mut(out), as_f32(x), (as_f32(w), as_f32(b)));
        // SAFETY: `I::WIDE` is the AVX-512 path and `I::AVX && I::FMA` at least the AVX2+FMA
        // one, each run only on CPUs that have it; T is f32.
        unsafe {
            if I::WIDE {
                wide::forward(out, stats, x, wb, n, c, eps as f32)
            } else {
                wide::forward_avx2(out, stats, x, wb, n, c, eps as f32)
            }
        };
        return;
    }
    let inv_c = T::from_f64(1.0 / c as f64);
    let eps = T::from_f64(eps);
    let (w, b) = (&w[..c], &b[..c]);
    for i in 0..n {
        let xr = &x[i * c..(i + 1) * c];
        let m = sum::<I, T>(xr) * inv_c;
        let var = sum_sq_dev::<I, T>(xr, m) * inv_c;
        let r = T::ONE / (var + eps).sqrt();
        mean[i] = m;
        rstd[i] = r;
        let or = &mut out[i * c..(i + 1) * c];
        for j in 0..c {
            or[j] = fma::<I, T>((xr[j] - m) * r, w[j], b[j]);
        }
    }
}
}

crate::multiversion! {
/// Backward of `layernorm_forward` with residual gradients: `dx = LN'(dout) + adds[0] + ...`
/// (each add `[n,c]`, at most two, summed in turn as each row is stored), and accumulates
/// `dw += dout * xhat` and `db += dout`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward_add<I, T: Float>(
    dx: &mut [T],
    dw: &mut [T],
    db: &mut [T],
    dout: &[T],
    x: &[T],
    mean: &[T],
    rstd: &[T],
    w: &[T],
    adds: &[&[T]],
    n: usize,
    c: usize,
) {
    assert!(
        adds.len() <= 2 && adds.iter().all(|a| a.len() >= n * c),
        "layernorm backward: at most two adds of {n} x {c}"
    );
    #[cfg(target_arch = "x86_64")]
    if I::AVX && I::FMA && c.is_multiple_of(16) && crate::attention::is_f32::<T>() {
        use crate::attention::{as_f32, as_f32_mut};
        let grads = (as_f32_mut(dx), as_f32_mut(dw), as_f32_mut(db));
        let (dout, x, stats) = (as_f32(dout), as_f32(x), (as_f32(mean), as_f32(rstd)));
        let mut af: [&[f32]; 2] = [&[], &[]];
        for (f, a) in af.iter_mut().zip(adds) {
            *f = as_f32(a);
        }
        let (w, adds) = ((as_f32(w), &af[..adds.len()]), (n, c));
        // SAFETY: as for the forward pass.
        unsafe {
            if I::WIDE {
                wide::backward(grads, dout, x, stats, w, adds)
            } else {
                wide::backward_avx2(grads, dout, x, stats, w, adds)
            }
        };
        return;
    }
    let inv_c = T::from_f64(1.0 / c as f64);
    let (w, dw, db) = (&w[..c], &mut dw[..c], &mut db[..c]);
    for i in 0..n {
        let xr = &x[i * c..(i + 1) * c];
        let dr = &dout[i * c..(i + 1) * c];
        let (m, r) = (mean[i], rstd[i]);
        // mean(dnorm) and mean(dnorm * xhat), eight lanes at a time.
        let (mut a1, mut a2) = ([T::ZERO; 8], [T::ZERO; 8]);
        let (xc, dc, wc) = (xr.chunks_exact(8), dr.chunks_exact(8), w.chunks_exact(8));
        let (xt, dt, wt) = (xc.remainder(), dc.remainder(), wc.remainder());
        for ((xv, dv), wv) in xc.zip(dc).zip(wc) {
            for l in 0..8 {
                let dnorm = dv[l] * wv[l];
                a1[l] += dnorm;
                a2[l] = fma::<I, T>(dnorm, (xv[l] - m) * r, a2[l]);
            }
        }
        let (mut s1, mut s2) = (sum::<I, T>(&a1), sum::<I, T>(&a2));
        for ((xv, dv), wv) in xt.iter().zip(dt).zip(wt) {
            let dnorm = *dv * *wv;
            s1 += dnorm;
            s2 += dnorm * ((*xv - m) * r);
        }
        let (mean_dnorm, mean_dnorm_norm) = (s1 * inv_c, s2 * inv_c);
        let dxr = &mut dx[i * c..(i + 1) * c];
        for j in 0..c {
            let norm = (xr[j] - m) * r;
            dw[j] = fma::<I, T>(dr[j], norm, dw[j]);
            db[j] += dr[j];
            dxr[j] = (dr[j] * w[j] - mean_dnorm - norm * mean_dnorm_norm) * r;
        }
        for a in adds {
            for (d, v) in dxr.iter_mut().zip(&a[i * c..(i + 1) * c]) {
                *d += *v;
            }
        }
    }
}
}

/// Backward of `layernorm_forward`: overwrites `dx`, accumulates `dw += dout * xhat` and
/// `db += dout`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<T: crate::Float>(
    dx: &mut [T],
    dw: &mut [T],
    db: &mut [T],
    dout: &[T],
    x: &[T],
    mean: &[T],
    rstd: &[T],
    w: &[T],
    n: usize,
    c: usize,
) {
    layernorm_backward_add(dx, dw, db, dout, x, mean, rstd, w, &[], n, c)
}

#[cfg(target_arch = "x86_64")]
mod wide;
