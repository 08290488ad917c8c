//! LayerNorm over the last axis, torch semantics (biased variance, affine weight and bias).

use crate::Float;
use crate::reduce::{sum, sum_sq_dev};

/// `out[n,c] = (x - mean) * rstd * w + b` per row; saves `mean[n]`, `rstd[n]` for backward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward<T: Float>(
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
    let inv_c = T::from_f64(1.0 / c as f64);
    let eps = T::from_f64(eps);
    for i in 0..n {
        let xr = &x[i * c..(i + 1) * c];
        let m = sum(xr) * inv_c;
        let var = sum_sq_dev(xr, m) * inv_c;
        let r = T::ONE / (var + eps).sqrt();
        mean[i] = m;
        rstd[i] = r;
        let or = &mut out[i * c..(i + 1) * c];
        for (((o, xv), wv), bv) in or.iter_mut().zip(xr).zip(&w[..c]).zip(&b[..c]) {
            *o = ((*xv - m) * r).mul_add(*wv, *bv);
        }
    }
}

/// Backward of `layernorm_forward`: `dx += ...`, `dw += dout * xhat`, `db += dout`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<T: Float>(
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
    let inv_c = T::from_f64(1.0 / c as f64);
    for i in 0..n {
        let xr = &x[i * c..(i + 1) * c];
        let dr = &dout[i * c..(i + 1) * c];
        let (m, r) = (mean[i], rstd[i]);
        // Two reductions over the row: mean(dnorm) and mean(dnorm * norm), 8 lanes at a time.
        let (mut a1, mut a2) = ([T::ZERO; 8], [T::ZERO; 8]);
        let mut j = 0;
        while j + 8 <= c {
            for l in 0..8 {
                let norm = (xr[j + l] - m) * r;
                let dnorm = dr[j + l] * w[j + l];
                a1[l] += dnorm;
                a2[l] = dnorm.mul_add(norm, a2[l]);
            }
            j += 8;
        }
        let (mut dnorm_mean, mut dnorm_norm_mean) = (sum(&a1), sum(&a2));
        for j in j..c {
            let norm = (xr[j] - m) * r;
            let dnorm = dr[j] * w[j];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean *= inv_c;
        dnorm_norm_mean *= inv_c;
        let dxr = &mut dx[i * c..(i + 1) * c];
        for j in 0..c {
            let norm = (xr[j] - m) * r;
            let dnorm = dr[j] * w[j];
            dw[j] = dr[j].mul_add(norm, dw[j]);
            db[j] += dr[j];
            dxr[j] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r;
        }
    }
}
