//! Bayes-optimal baselines (reference 4.1): for each prefix length k the posterior-mean task
//! from examples `0..k` (exclusive), and the prediction `y_hat_k = w_hat_k . x_k`.

use rayon::prelude::*;

/// Ridge (Gaussian prior N(0, I)): `w_k = (X_k^T X_k + sigma^2 I)^-1 X_k^T y_k`, `w_0 = 0`.
/// `xs[nseq, K, D]`, `ys[nseq, K]`; returns `(w_hat[nseq, K, D], y_hat[nseq, K])`.
pub fn ridge(
    xs: &[f64],
    ys: &[f64],
    nseq: usize,
    k: usize,
    d: usize,
    noise_variance: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut w_hat = vec![0.0; nseq * k * d];
    let mut y_hat = vec![0.0; nseq * k];
    w_hat
        .par_chunks_mut(k * d)
        .zip(y_hat.par_chunks_mut(k))
        .enumerate()
        .for_each(|(b, (wb, yb))| {
            let x = &xs[b * k * d..(b + 1) * k * d];
            let y = &ys[b * k..(b + 1) * k];
            let mut a = vec![0.0; d * d];
            let mut rhs = vec![0.0; d];
            for i in 0..d {
                a[i * d + i] = noise_variance;
            }
            for e in 0..k {
                if e > 0 {
                    let w = solve_spd(&a, &rhs, d);
                    wb[e * d..(e + 1) * d].copy_from_slice(&w);
                }
                let xe = &x[e * d..(e + 1) * d];
                yb[e] = xe
                    .iter()
                    .zip(&wb[e * d..(e + 1) * d])
                    .map(|(p, q)| p * q)
                    .sum();
                for i in 0..d {
                    rhs[i] += xe[i] * y[e];
                    for j in 0..d {
                        a[i * d + j] += xe[i] * xe[j];
                    }
                }
            }
        });
    (w_hat, y_hat)
}

/// dMMSE (uniform prior over `tasks[M, D]`): `w_k = sum_m softmax_m(-sum_{j<k} (y_j - t_m.x_j)^2
/// / (2 sigma^2)) t_m`; `w_0` is the mean task. Returns `(w_hat[nseq, K, D], y_hat[nseq, K])`.
pub fn dmmse(
    xs: &[f64],
    ys: &[f64],
    nseq: usize,
    k: usize,
    d: usize,
    noise_variance: f64,
    tasks: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let m = tasks.len() / d;
    let mut w_hat = vec![0.0; nseq * k * d];
    let mut y_hat = vec![0.0; nseq * k];
    w_hat
        .par_chunks_mut(k * d)
        .zip(y_hat.par_chunks_mut(k))
        .enumerate()
        .for_each(|(b, (wb, yb))| {
            let x = &xs[b * k * d..(b + 1) * k * d];
            let y = &ys[b * k..(b + 1) * k];
            let mut logw = vec![0.0; m];
            for e in 0..k {
                let mx = logw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut total = 0.0;
                let w = &mut wb[e * d..(e + 1) * d];
                for (t, lw) in tasks.chunks_exact(d).zip(&logw) {
                    let p = (lw - mx).exp();
                    total += p;
                    for i in 0..d {
                        w[i] += p * t[i];
                    }
                }
                for wi in w.iter_mut() {
                    *wi /= total;
                }
                let xe = &x[e * d..(e + 1) * d];
                yb[e] = xe.iter().zip(w.iter()).map(|(p, q)| p * q).sum();
                for (t, lw) in tasks.chunks_exact(d).zip(logw.iter_mut()) {
                    let r = y[e] - t.iter().zip(xe).map(|(p, q)| p * q).sum::<f64>();
                    *lw -= r * r / (2.0 * noise_variance);
                }
            }
        });
    (w_hat, y_hat)
}

/// Solves `a x = b` for a symmetric positive definite `a[d, d]` by Cholesky.
fn solve_spd(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = a[i * d + j] - (0..j).map(|p| l[i * d + p] * l[j * d + p]).sum::<f64>();
            l[i * d + j] = if i == j { s.sqrt() } else { s / l[j * d + j] };
        }
    }
    let mut z = vec![0.0; d];
    for i in 0..d {
        z[i] = (b[i] - (0..i).map(|p| l[i * d + p] * z[p]).sum::<f64>()) / l[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        x[i] = (z[i] - (i + 1..d).map(|p| l[p * d + i] * x[p]).sum::<f64>()) / l[i * d + i];
    }
    x
}
