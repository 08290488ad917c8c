//! Streaming moments of what is observed at each SGLD draw (Welford's update; Chan, Golub and
//! LeVeque's merge to pool chains): the means of a scalar driver `p` and of a vector `x`, the
//! co-moments of `p` with each `x_i` and, on request, the full co-moment matrix of `x`. Memory
//! does not grow with the number of draws; results equal the two-pass formulas over stored draws.

/// Running means and co-moments (sums of products of deviations) of `(p, x)` over draws.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// Draws seen.
    pub n: u64,
    pub mean_p: f64,
    pub mean_x: Vec<f64>,
    /// `sum (p - mean_p)^2`.
    pub m2_p: f64,
    /// `sum (p - mean_p)(x_i - mean_x_i)`.
    pub c_px: Vec<f64>,
    /// `sum (x_i - mean_i)(x_j - mean_j)`, row-major `m x m`; only `j >= i` is kept up to date
    /// (read it through [`Moments::cov_xx`], which mirrors it).
    pub c_xx: Option<Vec<f64>>,
    /// Scratch: this draw's deviations from the old means.
    dx: Vec<f64>,
}

impl Moments {
    /// Moments of an `m`-vector; `full` keeps the `m x m` co-moment matrix too.
    pub fn new(m: usize, full: bool) -> Self {
        Moments {
            n: 0,
            mean_p: 0.0,
            mean_x: vec![0.0; m],
            m2_p: 0.0,
            c_px: vec![0.0; m],
            c_xx: full.then(|| vec![0.0; m * m]),
            dx: vec![0.0; m],
        }
    }

    pub fn len(&self) -> usize {
        self.mean_x.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mean_x.is_empty()
    }

    /// Adds one draw.
    pub fn push(&mut self, p: f64, x: &[f64]) {
        assert_eq!(x.len(), self.len(), "observation length");
        self.n += 1;
        let n = self.n as f64;
        let dp = p - self.mean_p;
        self.mean_p += dp / n;
        let dp_new = p - self.mean_p;
        self.m2_p += dp * dp_new;
        for (i, &xi) in x.iter().enumerate() {
            let d = xi - self.mean_x[i];
            self.dx[i] = d;
            self.mean_x[i] += d / n;
            self.c_px[i] += d * dp_new;
        }
        if let Some(c) = &mut self.c_xx {
            // sum (x_i - m_i)(x_j - m_j) grows by (n-1)/n dx_i dx_j (dx: deviations from the
            // old means); the upper triangle only, so the matrix stays exactly symmetric.
            let f = (n - 1.0) / n;
            let m = self.dx.len();
            let dx = &self.dx;
            let rows = c.chunks_mut(m).enumerate();
            if m >= 256 {
                use rayon::prelude::*;
                c.par_chunks_mut(m)
                    .enumerate()
                    .for_each(|(i, row)| rank_one(row, i, f * dx[i], dx));
            } else {
                rows.for_each(|(i, row)| rank_one(row, i, f * dx[i], dx));
            }
        }
    }

    /// Pools `other` (the draws of another chain) into `self`, as if its draws had been pushed.
    pub fn merge(&mut self, other: &Moments) {
        assert_eq!(other.len(), self.len(), "observation length");
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            let dx = std::mem::take(&mut self.dx);
            *self = other.clone();
            self.dx = dx;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let w = na * nb / n;
        let dp = other.mean_p - self.mean_p;
        self.m2_p += other.m2_p + dp * dp * w;
        for i in 0..self.len() {
            let d = other.mean_x[i] - self.mean_x[i];
            self.dx[i] = d;
            self.c_px[i] += other.c_px[i] + dp * d * w;
            self.mean_x[i] += d * nb / n;
        }
        self.mean_p += dp * nb / n;
        match (&mut self.c_xx, &other.c_xx) {
            (Some(c), Some(o)) => {
                let m = self.dx.len();
                for i in 0..m {
                    for j in i..m {
                        c[i * m + j] += o[i * m + j] + self.dx[i] * self.dx[j] * w;
                    }
                }
            }
            (None, None) => {}
            _ => panic!("merging moments with and without the full matrix"),
        }
        self.n += other.n;
    }

    /// Population (ddof 0) variance of `p`, as the means over draws in devinterp's estimators.
    pub fn var_p(&self) -> f64 {
        self.m2_p / self.n as f64
    }

    /// Population covariance of `p` with `x_i`.
    pub fn cov_px(&self, i: usize) -> f64 {
        self.c_px[i] / self.n as f64
    }

    /// `E[p x_i]` over the draws.
    pub fn mean_px(&self, i: usize) -> f64 {
        self.cov_px(i) + self.mean_p * self.mean_x[i]
    }

    /// `E[p^2]` over the draws.
    pub fn mean_pp(&self) -> f64 {
        self.var_p() + self.mean_p * self.mean_p
    }

    /// Population covariance of `x_i` and `x_j` (needs the full matrix).
    pub fn cov_xx(&self, i: usize, j: usize) -> f64 {
        let c = self
            .c_xx
            .as_ref()
            .expect("moments kept without the full matrix");
        let m = self.len();
        let (a, b) = if i <= j { (i, j) } else { (j, i) };
        c[a * m + b] / self.n as f64
    }

    /// The `m x m` correlation matrix of `x` (row-major; exactly symmetric, NaN where a value
    /// did not vary), or its covariance with `covariance`.
    pub fn correlation(&self, covariance: bool) -> Vec<f64> {
        let m = self.len();
        let sd: Vec<f64> = (0..m).map(|i| self.cov_xx(i, i).sqrt()).collect();
        let mut out = vec![0.0; m * m];
        for i in 0..m {
            for j in i..m {
                let c = self.cov_xx(i, j);
                let v = if covariance {
                    c
                } else if i == j && sd[i] > 0.0 {
                    1.0
                } else {
                    c / (sd[i] * sd[j])
                };
                out[i * m + j] = v;
                out[j * m + i] = v;
            }
        }
        out
    }
}

/// `row[j] += a dx[j]` for `j >= i`.
fn rank_one(row: &mut [f64], i: usize, a: f64, dx: &[f64]) {
    for (r, d) in row[i..].iter_mut().zip(&dx[i..]) {
        *r += a * d;
    }
}

/// Effective sample size of one chain's series (Geyer's initial monotone sequence estimator on
/// the autocorrelations, as Stan and ArviZ for a single chain); `n` for an uncorrelated series,
/// NaN for fewer than 4 draws or a constant series.
pub fn ess(series: &[f64]) -> f64 {
    let n = series.len();
    if n < 4 {
        return f64::NAN;
    }
    let mean = series.iter().sum::<f64>() / n as f64;
    let dev: Vec<f64> = series.iter().map(|v| v - mean).collect();
    let acov = |lag: usize| -> f64 {
        dev[..n - lag]
            .iter()
            .zip(&dev[lag..])
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / n as f64
    };
    let c0 = acov(0);
    if c0 <= 0.0 {
        return f64::NAN;
    }
    // Sum of Gamma_k = rho_2k + rho_2k+1 while positive, each at most the one before.
    let mut sum = 0.0;
    let mut prev = f64::INFINITY;
    let mut k = 0;
    while 2 * k + 1 < n {
        let g = (acov(2 * k) + acov(2 * k + 1)) / c0;
        if g <= 0.0 {
            break;
        }
        let g = g.min(prev);
        sum += g;
        prev = g;
        k += 1;
    }
    // tau = -1 + 2 sum Gamma_k.
    let tau = (2.0 * sum - 1.0).max(1.0 / (n as f64).log10().max(1.0));
    n as f64 / tau
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic but irregular series of (p, x) draws.
    fn draws(n: usize, m: usize, seed: u64) -> Vec<(f64, Vec<f64>)> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        (0..n)
            .map(|_| {
                let p = 3.0 + next();
                let x = (0..m).map(|i| i as f64 + 0.5 * p + next()).collect();
                (p, x)
            })
            .collect()
    }

    /// Two-pass covariance of stored columns.
    fn cov(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - ma) * (y - mb))
            .sum::<f64>()
            / n
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn streaming_moments_equal_the_two_pass_formulas() {
        let (n, m) = (37, 5);
        let d = draws(n, m, 1);
        let mut mo = Moments::new(m, true);
        for (p, x) in &d {
            mo.push(*p, x);
        }
        let p: Vec<f64> = d.iter().map(|v| v.0).collect();
        let col = |i: usize| -> Vec<f64> { d.iter().map(|v| v.1[i]).collect() };
        assert!(close(mo.mean_p, p.iter().sum::<f64>() / n as f64));
        assert!(close(mo.var_p(), cov(&p, &p)));
        for i in 0..m {
            assert!(close(mo.mean_x[i], col(i).iter().sum::<f64>() / n as f64));
            assert!(close(mo.cov_px(i), cov(&p, &col(i))), "cov p x{i}");
            let e_px = p.iter().zip(col(i)).map(|(a, b)| a * b).sum::<f64>() / n as f64;
            assert!(close(mo.mean_px(i), e_px));
            for j in 0..m {
                assert!(
                    close(mo.cov_xx(i, j), cov(&col(i), &col(j))),
                    "cov x{i} x{j}"
                );
            }
        }
        let r = mo.correlation(false);
        for i in 0..m {
            assert_eq!(r[i * m + i], 1.0);
            for j in 0..m {
                assert_eq!(r[i * m + j], r[j * m + i]);
                let want =
                    cov(&col(i), &col(j)) / (cov(&col(i), &col(i)) * cov(&col(j), &col(j))).sqrt();
                assert!(close(r[i * m + j], want));
            }
        }
    }

    #[test]
    fn merged_chains_equal_one_stream_of_all_their_draws() {
        let m = 300; // the parallel rank-one update
        let (a, b) = (draws(20, m, 2), draws(13, m, 3));
        let (mut ma, mut mb, mut all) = (
            Moments::new(m, true),
            Moments::new(m, true),
            Moments::new(m, true),
        );
        for (p, x) in &a {
            ma.push(*p, x);
            all.push(*p, x);
        }
        for (p, x) in &b {
            mb.push(*p, x);
            all.push(*p, x);
        }
        let mut empty = Moments::new(m, true);
        empty.merge(&ma);
        assert_eq!(empty.mean_x, ma.mean_x);
        ma.merge(&mb);
        assert_eq!(ma.n, all.n);
        assert!(close(ma.mean_p, all.mean_p) && close(ma.m2_p, all.m2_p));
        for i in (0..m).step_by(7) {
            assert!(close(ma.mean_x[i], all.mean_x[i]));
            assert!(close(ma.c_px[i], all.c_px[i]));
            for j in (0..m).step_by(11) {
                assert!(close(ma.cov_xx(i, j), all.cov_xx(i, j)), "{i} {j}");
            }
        }
    }

    #[test]
    fn ess_of_white_noise_is_about_n_and_of_a_slow_chain_far_less() {
        let white: Vec<f64> = draws(4000, 1, 7).iter().map(|v| v.0).collect();
        let e = ess(&white);
        assert!((3000.0..5000.0).contains(&e), "white noise ESS {e}");
        // AR(1) with phi = 0.9: tau = (1 + phi)/(1 - phi) = 19.
        let mut ar = vec![0.0; 4000];
        for t in 1..ar.len() {
            ar[t] = 0.9 * ar[t - 1] + white[t];
        }
        let e = ess(&ar);
        assert!(
            (4000.0 / 19.0 * 0.6..4000.0 / 19.0 * 1.6).contains(&e),
            "AR(1) ESS {e}"
        );
        assert!(ess(&[1.0; 10]).is_nan() && ess(&[1.0, 2.0]).is_nan());
    }
}
