//! Gaussian-process regression with the reference's kernel `c * RBF(l)` (scikit-learn's
//! `ConstantKernel * RBF`, `alpha = 1e-10` on the diagonal, no normalisation of y), its
//! hyperparameters fitted by maximising the log marginal likelihood within bounds.
//! scikit-learn runs L-BFGS-B from the initial values and 10 random restarts; here a log-spaced
//! grid over the bounds followed by Nelder-Mead from the best grid points (in log space, clamped
//! to the bounds) finds the same maximum without randomness.

/// Bounds and starting point of the two hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpBounds {
    pub amplitude: (f64, f64),
    pub length: (f64, f64),
}

impl GpBounds {
    /// The reference's `ConstantKernel(1.0, (1e-3, 1e3)) * RBF(3, (0.5, 1e3))`.
    pub const REFERENCE: GpBounds = GpBounds {
        amplitude: (1e-3, 1e3),
        length: (0.5, 1e3),
    };

    /// Where each hyperparameter of `gp` sits: -1 at its lower bound, 1 at its upper, 0 inside
    /// (within 0.1 % of the log range). A fit at a bound did not find an optimum: the curve is
    /// too short or too flat for the kernel, and the stages are unreliable.
    pub fn at_bounds(&self, gp: &Gp) -> [i8; 2] {
        let side = |v: f64, (lo, hi): (f64, f64)| {
            let tol = 1e-3 * (hi.ln() - lo.ln());
            if v.ln() <= lo.ln() + tol {
                -1
            } else if v.ln() >= hi.ln() - tol {
                1
            } else {
                0
            }
        };
        [
            side(gp.amplitude, self.amplitude),
            side(gp.length, self.length),
        ]
    }
}

#[derive(Clone, Debug)]
pub struct Gp {
    pub amplitude: f64,
    pub length: f64,
    /// Diagonal jitter (scikit-learn's `alpha`).
    pub alpha: f64,
    pub log_marginal_likelihood: f64,
    x: Vec<f64>,
    /// `K^{-1} y`.
    weights: Vec<f64>,
}

fn kernel(a: f64, b: f64, amplitude: f64, length: f64) -> f64 {
    amplitude * (-0.5 * ((a - b) / length).powi(2)).exp()
}

/// Lower Cholesky factor of the row-major `n x n` matrix `k`, or `None` if not positive definite.
fn cholesky(k: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = k[i * n + j];
            for p in 0..j {
                s -= l[i * n + p] * l[j * n + p];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// `K^{-1} y` from the Cholesky factor.
fn solve(l: &[f64], n: usize, y: &[f64]) -> Vec<f64> {
    let mut z = y.to_vec();
    for i in 0..n {
        for p in 0..i {
            z[i] -= l[i * n + p] * z[p];
        }
        z[i] /= l[i * n + i];
    }
    for i in (0..n).rev() {
        for p in i + 1..n {
            z[i] -= l[p * n + i] * z[p];
        }
        z[i] /= l[i * n + i];
    }
    z
}

/// The log marginal likelihood and `K^{-1} y` for the given hyperparameters (None if the kernel
/// matrix is numerically singular).
fn evaluate(
    x: &[f64],
    y: &[f64],
    amplitude: f64,
    length: f64,
    alpha: f64,
) -> Option<(f64, Vec<f64>)> {
    let n = x.len();
    let mut k = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            k[i * n + j] = kernel(x[i], x[j], amplitude, length);
        }
        k[i * n + i] += alpha;
    }
    let l = cholesky(&k, n)?;
    let w = solve(&l, n, y);
    let fit: f64 = y.iter().zip(&w).map(|(a, b)| a * b).sum();
    let logdet: f64 = (0..n).map(|i| l[i * n + i].ln()).sum();
    let lml = -0.5 * fit - logdet - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
    Some((lml, w))
}

impl Gp {
    /// The GP with fixed hyperparameters.
    pub fn with(x: &[f64], y: &[f64], amplitude: f64, length: f64, alpha: f64) -> Option<Gp> {
        let (lml, weights) = evaluate(x, y, amplitude, length, alpha)?;
        Some(Gp {
            amplitude,
            length,
            alpha,
            log_marginal_likelihood: lml,
            x: x.to_vec(),
            weights,
        })
    }

    /// Fits the hyperparameters within `bounds` by maximum marginal likelihood.
    pub fn fit(x: &[f64], y: &[f64], bounds: GpBounds) -> Option<Gp> {
        let alpha = 1e-10;
        let (la, lb) = (bounds.amplitude.0.ln(), bounds.amplitude.1.ln());
        let (ma, mb) = (bounds.length.0.ln(), bounds.length.1.ln());
        let clamp = |p: [f64; 2]| [p[0].clamp(la, lb), p[1].clamp(ma, mb)];
        let score = |p: [f64; 2]| {
            let p = clamp(p);
            evaluate(x, y, p[0].exp(), p[1].exp(), alpha).map_or(f64::NEG_INFINITY, |e| e.0)
        };
        let steps = 24;
        let mut grid: Vec<(f64, [f64; 2])> = Vec::new();
        for i in 0..=steps {
            for j in 0..=steps {
                let p = [
                    la + (lb - la) * i as f64 / steps as f64,
                    ma + (mb - ma) * j as f64 / steps as f64,
                ];
                grid.push((score(p), p));
            }
        }
        grid.sort_by(|a, b| b.0.total_cmp(&a.0));
        let cell = [(lb - la) / steps as f64, (mb - ma) / steps as f64];
        let mut best = grid[0];
        for start in grid.iter().take(3) {
            let found = nelder_mead(&score, start.1, cell, 200);
            if found.0 > best.0 {
                best = found;
            }
        }
        if !best.0.is_finite() {
            return None;
        }
        let p = clamp(best.1);
        Gp::with(x, y, p[0].exp(), p[1].exp(), alpha)
    }

    /// The posterior mean at `xs`.
    pub fn predict(&self, xs: &[f64]) -> Vec<f64> {
        xs.iter()
            .map(|&a| {
                self.x
                    .iter()
                    .zip(&self.weights)
                    .map(|(&b, w)| kernel(a, b, self.amplitude, self.length) * w)
                    .sum()
            })
            .collect()
    }
}

/// Maximises `f` over the plane from `start` with initial simplex steps `step`.
fn nelder_mead(
    f: &dyn Fn([f64; 2]) -> f64,
    start: [f64; 2],
    step: [f64; 2],
    iters: usize,
) -> (f64, [f64; 2]) {
    let mut s: Vec<(f64, [f64; 2])> = [
        start,
        [start[0] + step[0], start[1]],
        [start[0], start[1] + step[1]],
    ]
    .iter()
    .map(|p| (f(*p), *p))
    .collect();
    for _ in 0..iters {
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (best, worst) = (s[0], s[2]);
        let c = [(s[0].1[0] + s[1].1[0]) / 2.0, (s[0].1[1] + s[1].1[1]) / 2.0];
        let at = |t: f64| {
            [
                c[0] + t * (worst.1[0] - c[0]),
                c[1] + t * (worst.1[1] - c[1]),
            ]
        };
        let r = at(-1.0);
        let fr = f(r);
        if fr > best.0 {
            let e = at(-2.0);
            let fe = f(e);
            s[2] = if fe > fr { (fe, e) } else { (fr, r) };
        } else if fr > s[1].0 {
            s[2] = (fr, r);
        } else {
            let k = at(0.5);
            let fk = f(k);
            if fk > worst.0 {
                s[2] = (fk, k);
            } else {
                for v in s.iter_mut().skip(1) {
                    let p = [(v.1[0] + best.1[0]) / 2.0, (v.1[1] + best.1[1]) / 2.0];
                    *v = (f(p), p);
                }
            }
        }
        let spread = (s[0].1[0] - s[2].1[0]).abs() + (s[0].1[1] - s[2].1[1]).abs();
        if spread < 1e-9 {
            break;
        }
    }
    s.sort_by(|a, b| b.0.total_cmp(&a.0));
    s[0]
}
