//! Models with a known learning coefficient, to check the estimator end to end.

use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};

use crate::potential::{BatchKey, Potential, PotentialWorker};

/// Normal-crossing regression `f_w(x) = x * prod_i w_i^{p_i}` on `n` samples `x ~ N(0, 1)`,
/// `y = f_{w0}(x) + N(0, sigma^2)` with the true parameter `w0 = 0`. The population loss is
/// `K(w) = prod_i w_i^{2 p_i}` (times `E x^2 = 1`), whose learning coefficient at the origin is
/// `min_i 1/(2 p_i)` (devinterp's sampler-accuracy potentials).
#[derive(Clone, Debug)]
pub struct Polynomial {
    pub powers: Vec<u32>,
    xs: Vec<f64>,
    ys: Vec<f64>,
    /// Minibatch size (`None`: full batch).
    pub batch: Option<usize>,
    seed: u64,
}

impl Polynomial {
    pub fn new(powers: Vec<u32>, n: usize, sigma: f64, batch: Option<usize>, seed: u64) -> Self {
        assert!(
            powers.iter().any(|p| *p >= 1),
            "at least one power must be positive"
        );
        let mut xs = vec![0.0; n];
        let mut noise = vec![0.0; n];
        Stream::new(seed, tag::TOY_DATA, 0, 0).fill_normal(&mut xs);
        Stream::new(seed, tag::TOY_DATA, 1, 0).fill_normal(&mut noise);
        let ys = noise.iter().map(|e| sigma * e).collect();
        Polynomial {
            powers,
            xs,
            ys,
            batch,
            seed,
        }
    }

    /// `min_i 1/(2 p_i)` over the positive powers (a zero power is a flat direction:
    /// `w^0 = 1`).
    pub fn learning_coefficient(&self) -> f64 {
        self.powers
            .iter()
            .filter(|p| **p > 0)
            .map(|p| 1.0 / (2.0 * *p as f64))
            .fold(f64::INFINITY, f64::min)
    }

    pub fn n(&self) -> usize {
        self.xs.len()
    }

    /// Sufficient statistics `(sum y^2, sum x y, sum x^2, count)` of a minibatch.
    fn stats(&self, key: BatchKey) -> (f64, f64, f64, f64) {
        let n = self.xs.len();
        let mut s = (0.0, 0.0, 0.0, 0.0);
        let mut add = |i: usize| {
            let (x, y) = (self.xs[i], self.ys[i]);
            s.0 += y * y;
            s.1 += x * y;
            s.2 += x * x;
            s.3 += 1.0;
        };
        match self.batch {
            Some(b) if b < n && key.step != u64::MAX => {
                let t = if key.eval {
                    tag::SGLD_EVAL_BATCH
                } else {
                    tag::SGLD_BATCH
                };
                let st = Stream::new(self.seed, t, key.step as u32, key.chain);
                for j in 0..b {
                    add(st.below(j as u32, n as u64) as usize);
                }
            }
            _ => (0..n).for_each(&mut add),
        }
        s
    }
}

pub struct PolynomialWorker<'a> {
    model: &'a Polynomial,
    full: (f64, f64, f64, f64),
}

impl<T: Float> Potential<T> for Polynomial {
    type Worker<'a> = PolynomialWorker<'a>;
    fn dim(&self) -> usize {
        self.powers.len()
    }
    fn worker(&self) -> PolynomialWorker<'_> {
        let full = self.stats(BatchKey::FULL);
        PolynomialWorker { model: self, full }
    }
}

impl<T: Float> PotentialWorker<T> for PolynomialWorker<'_> {
    fn loss_and_grad(&mut self, w: &[T], key: BatchKey, grad: &mut [T]) -> f64 {
        let m = self.model;
        let (syy, sxy, sxx, b) = match m.batch {
            Some(bs) if bs < m.n() && key.step != u64::MAX => m.stats(key),
            _ => self.full,
        };
        let w: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
        let f: f64 = w
            .iter()
            .zip(&m.powers)
            .map(|(wi, p)| wi.powi(*p as i32))
            .product();
        // L = mean (y - x f)^2 = (syy - 2 f sxy + f^2 sxx) / b ; dL/df = (2 f sxx - 2 sxy) / b
        let loss = (syy - 2.0 * f * sxy + f * f * sxx) / b;
        let dl_df = (2.0 * f * sxx - 2.0 * sxy) / b;
        for (k, g) in grad.iter_mut().enumerate() {
            if m.powers[k] == 0 {
                // A flat direction (and w^-1 at w = 0 would be infinite).
                *g = T::ZERO;
                continue;
            }
            let df: f64 = m.powers[k] as f64
                * w.iter()
                    .zip(&m.powers)
                    .enumerate()
                    .map(|(i, (wi, p))| {
                        if i == k {
                            wi.powi(*p as i32 - 1)
                        } else {
                            wi.powi(*p as i32)
                        }
                    })
                    .product::<f64>();
            *g = T::from_f64(dl_df * df);
        }
        loss
    }
}

/// Deep linear network `f(x) = W_L ... W_1 x` with layer widths `[H_0, ..., H_L]` (`W_l` is
/// `H_l x H_{l-1}`, row-major, concatenated in order) and a true map of rank `r`, on `n` inputs
/// `x ~ N(0, I)` with noise-free targets. The loss is `L(w) = mean_x |(W - W0) x|^2`, minimal at
/// the truth; its learning coefficient is Aoyagi's formula ([`dln_learning_coefficient`]).
/// Two layers are reduced-rank regression ([`Dln::rrr`], Aoyagi and Watanabe's formula).
#[derive(Clone, Debug)]
pub struct Dln {
    pub widths: Vec<usize>,
    pub rank: usize,
    /// Input second moment `(1/n) sum x x^T` (`H_0 x H_0`).
    sigma: Vec<f64>,
    w0: Vec<f64>,
    truth_map: Vec<f64>,
}

/// `a[r x k] b[k x c]`.
fn mat(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for p in 0..k {
            let aip = a[i * k + p];
            for j in 0..c {
                out[i * c + j] += aip * b[p * c + j];
            }
        }
    }
    out
}

fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = a[i * c + j];
        }
    }
    out
}

fn identity(n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        out[i * n + i] = 1.0;
    }
    out
}

impl Dln {
    pub fn new(widths: Vec<usize>, rank: usize, n: usize, seed: u64) -> Self {
        assert!(
            widths.len() >= 3 && widths.iter().all(|w| *w > 0),
            "a deep linear network needs at least two layers of positive width"
        );
        assert!(
            rank <= *widths.iter().min().unwrap(),
            "rank must not exceed the smallest width"
        );
        let h0 = widths[0];
        let mut xs = vec![0.0; n * h0];
        Stream::new(seed, tag::TOY_DATA, 2, 0).fill_normal(&mut xs);
        let mut sigma = vec![0.0; h0 * h0];
        for x in xs.chunks_exact(h0) {
            for i in 0..h0 {
                for j in 0..h0 {
                    sigma[i * h0 + j] += x[i] * x[j] / n as f64;
                }
            }
        }
        // True factors: the first r units of every layer carry the map (random Gaussian blocks),
        // everything else is zero, so the product has rank r (almost surely).
        let layers = widths.len() - 1;
        let dim: usize = widths.windows(2).map(|p| p[0] * p[1]).sum();
        let mut z = vec![0.0; dim];
        Stream::new(seed, tag::TOY_DATA, 3, 0).fill_normal(&mut z);
        let mut w0 = vec![0.0; dim];
        let mut off = 0;
        for l in 0..layers {
            let (cols, rows) = (widths[l], widths[l + 1]);
            for i in 0..rows {
                for j in 0..cols {
                    let row_ok = l == layers - 1 || i < rank;
                    let col_ok = l == 0 || j < rank;
                    if row_ok && col_ok {
                        w0[off + i * cols + j] = z[off + i * cols + j];
                    }
                }
            }
            off += rows * cols;
        }
        let mut dln = Dln {
            widths,
            rank,
            sigma,
            w0,
            truth_map: vec![],
        };
        dln.truth_map = dln.prefixes(&dln.w0.clone()).pop().unwrap();
        dln
    }

    /// Reduced-rank regression `B A x` with input `m`, hidden `h`, output `n_out`.
    pub fn rrr(m: usize, h: usize, n_out: usize, rank: usize, n: usize, seed: u64) -> Self {
        Dln::new(vec![m, h, n_out], rank, n, seed)
    }

    /// `w*`: the true factors.
    pub fn truth(&self) -> Vec<f64> {
        self.w0.clone()
    }

    pub fn learning_coefficient(&self) -> f64 {
        dln_learning_coefficient(&self.widths, self.rank)
    }

    /// Layer `l`'s weights within `w`.
    fn layer<'w>(&self, w: &'w [f64], l: usize) -> &'w [f64] {
        let off: usize = self.widths[..l + 1].windows(2).map(|p| p[0] * p[1]).sum();
        &w[off..off + self.widths[l] * self.widths[l + 1]]
    }

    /// `P_l = W_l ... W_1` for `l = 0..=L` (`P_0 = I`, `H_l x H_0`).
    fn prefixes(&self, w: &[f64]) -> Vec<Vec<f64>> {
        let h = &self.widths;
        let mut out = vec![identity(h[0])];
        for l in 0..h.len() - 1 {
            let next = mat(self.layer(w, l), out.last().unwrap(), h[l + 1], h[l], h[0]);
            out.push(next);
        }
        out
    }
}

/// Aoyagi and Watanabe (2005), "Stochastic complexities of reduced rank regression in Bayesian
/// estimation": the learning coefficient of `B A` with input dimension `M`, hidden `H`, output
/// `N` and true rank `r`.
pub fn rrr_learning_coefficient(m: usize, h: usize, n: usize, r: usize) -> f64 {
    let (m, h, n, r) = (m as i64, h as i64, n as i64, r as i64);
    if m + h < n + r {
        (h * m - h * r + n * r) as f64 / 2.0
    } else if n + h < m + r {
        (h * n - h * r + m * r) as f64 / 2.0
    } else if m + n < h + r {
        (m * n) as f64 / 2.0
    } else {
        let base = 2 * (h + r) * (m + n) - (m - n) * (m - n) - (h + r) * (h + r);
        let odd = (m + h + n + r) % 2 != 0;
        (base + if odd { 1 } else { 0 }) as f64 / 8.0
    }
}

/// Aoyagi (2024), "Consideration on the learning efficiency of multiple-layered neural networks
/// with linear units" (Neural Networks 172): the learning coefficient of a deep linear network
/// with widths `[H_0, ..., H_L]` at a true map of rank `r`. With `M_j = H_j - r`, take the
/// smallest `l + 1` of the `M_j` (in increasing order) such that their sum `S` satisfies
/// `S >= l max` and, when any remain, `max < min(rest)` and `S < l min(rest)`; then with
/// `a = S - (ceil(S/l) - 1) l`:
/// `lambda = (-r^2 + r (H_0 + H_L))/2 + a (l - a)/(4 l) - l (l - 1)/4 (S/l)^2 + 1/2 sum_{i<j} M_i M_j`
/// over the chosen `M`s. For two layers it equals [`rrr_learning_coefficient`].
pub fn dln_learning_coefficient(widths: &[usize], r: usize) -> f64 {
    let (chosen, a) = aoyagi_subset(widths, r);
    let size = chosen.len();
    let (lf, sf) = ((size - 1) as f64, chosen.iter().sum::<i64>() as f64);
    let mut pairs = 0.0;
    for i in 0..size {
        for j in i + 1..size {
            pairs += (chosen[i] * chosen[j]) as f64;
        }
    }
    let (r, h0, hl) = (r as f64, widths[0] as f64, *widths.last().unwrap() as f64);
    (-r * r + r * (h0 + hl)) / 2.0 + a * (lf - a) / (4.0 * lf)
        - lf * (lf - 1.0) / 4.0 * (sf / lf).powi(2)
        + pairs / 2.0
}

/// The multiplicity `m = a (l - a) + 1` of the learning coefficient (Aoyagi 2024). With `m > 1`
/// the free energy has a `(m - 1) log log n` term, and finite-`nbeta` estimates approach the
/// learning coefficient from below, slowly.
pub fn dln_multiplicity(widths: &[usize], r: usize) -> u32 {
    let (chosen, a) = aoyagi_subset(widths, r);
    let l = (chosen.len() - 1) as f64;
    (a * (l - a)) as u32 + 1
}

/// The chosen `M_j` (increasing) and `a` of Aoyagi's formula.
fn aoyagi_subset(widths: &[usize], r: usize) -> (Vec<i64>, f64) {
    let mut m: Vec<i64> = widths.iter().map(|h| *h as i64 - r as i64).collect();
    m.sort_unstable();
    for size in 2..=m.len() {
        let (chosen, rest) = m.split_at(size);
        let l = (size - 1) as i64;
        let sum: i64 = chosen.iter().sum();
        let max = chosen[size - 1];
        if sum >= l * max && rest.first().is_none_or(|&c| max < c && sum < l * c) {
            let a = sum - (sum.div_euclid(l) + i64::from(sum % l != 0) - 1) * l;
            return (chosen.to_vec(), a as f64);
        }
    }
    unreachable!(
        "the full set always qualifies: S >= l max holds for l + 1 >= 2 non-negative values"
    )
}

pub struct DlnWorker<'a> {
    model: &'a Dln,
}

impl<T: Float> Potential<T> for Dln {
    type Worker<'a> = DlnWorker<'a>;
    fn dim(&self) -> usize {
        self.w0.len()
    }
    fn worker(&self) -> DlnWorker<'_> {
        DlnWorker { model: self }
    }
    fn tensors(&self) -> Vec<(String, usize)> {
        self.widths
            .windows(2)
            .enumerate()
            .map(|(l, p)| (format!("w{}", l + 1), p[0] * p[1]))
            .collect()
    }
}

impl<T: Float> PotentialWorker<T> for DlnWorker<'_> {
    /// `L = tr(D Sigma D^T)` with `D = P_L - W0`; with `G = dL/dP_L = 2 D Sigma` and suffix
    /// products `S_l = W_L ... W_{l+1}`, `dL/dW_l = S_l^T G P_{l-1}^T`.
    fn loss_and_grad(&mut self, w: &[T], _key: BatchKey, grad: &mut [T]) -> f64 {
        let d = self.model;
        let h = &d.widths;
        let layers = h.len() - 1;
        let (h0, hl) = (h[0], h[layers]);
        let w: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
        let prefixes = d.prefixes(&w);
        let mut diff = prefixes[layers].clone();
        for (x, t) in diff.iter_mut().zip(&d.truth_map) {
            *x -= t;
        }
        let ds = mat(&diff, &d.sigma, hl, h0, h0);
        let loss: f64 = diff.iter().zip(&ds).map(|(a, b)| a * b).sum();
        let g: Vec<f64> = ds.iter().map(|v| 2.0 * v).collect();
        // Walk down from the top layer, carrying S_l^T G (H_l x H_0).
        let mut carried = g;
        let mut off = w.len();
        for l in (0..layers).rev() {
            let (cols, rows) = (h[l], h[l + 1]);
            off -= rows * cols;
            let pt = transpose(&prefixes[l], cols, h0);
            let gl = mat(&carried, &pt, rows, h0, cols);
            for (o, v) in grad[off..off + rows * cols].iter_mut().zip(&gl) {
                *o = T::from_f64(*v);
            }
            let wt = transpose(d.layer(&w, l), rows, cols);
            carried = mat(&wt, &carried, cols, rows, h0);
        }
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zero power is a flat direction (`w^0 = 1`): the loss is the polynomial's without that
    /// coordinate, its gradient there is zero (also at w = 0), and the learning coefficient
    /// ignores it.
    #[test]
    fn zero_powers_are_flat_directions() {
        let flat = Polynomial::new(vec![0, 2], 200, 0.3, None, 1);
        let plain = Polynomial::new(vec![2], 200, 0.3, None, 1);
        assert_eq!(flat.learning_coefficient(), 0.25);
        for (w0, w1) in [(0.0, 0.0), (0.7, -0.4), (-1.3, 0.9)] {
            let mut g = [0.0f64; 2];
            let mut g1 = [0.0f64; 1];
            let l =
                Potential::<f64>::worker(&flat).loss_and_grad(&[w0, w1], BatchKey::FULL, &mut g);
            let l1 = Potential::<f64>::worker(&plain).loss_and_grad(&[w1], BatchKey::FULL, &mut g1);
            assert_eq!((l, g), (l1, [0.0, g1[0]]));
        }
    }

    #[test]
    fn rrr_formula_covers_its_cases() {
        // Regular when H = min(M, N) and full rank: M H + N H - H^2 parameters, halved.
        assert_eq!(rrr_learning_coefficient(3, 3, 3, 3), 4.5);
        // Rank 0 of a 5-3-5 map (case 1, M+H+N+r = 13 odd): (2*3*10 - 0 - 9 + 1)/8 = 6.5.
        assert_eq!(rrr_learning_coefficient(5, 3, 5, 0), 6.5);
        // Rank 1 of a 4-2-4 map (case 1, 11 odd): (2*3*8 - 0 - 9 + 1)/8 = 5.
        assert_eq!(rrr_learning_coefficient(4, 2, 4, 1), 5.0);
        // Odd total: M=4, H=2, N=3, r=0 -> (2*2*7 - 1 - 4 + 1)/8 = 24/8.
        assert_eq!(rrr_learning_coefficient(4, 2, 3, 0), 3.0);
        // Wide hidden layer (M + N < H + r): MN/2.
        assert_eq!(rrr_learning_coefficient(2, 5, 2, 1), 2.0);
        // M + H < N + r: (HM - Hr + Nr)/2.
        assert_eq!(rrr_learning_coefficient(1, 1, 5, 1), 2.5);
    }

    #[test]
    fn dln_formula_is_the_rrr_formula_for_two_layers() {
        for m in 1..=7 {
            for h in 1..=7 {
                for n in 1..=7 {
                    for r in 0..=m.min(h).min(n) {
                        assert_eq!(
                            dln_learning_coefficient(&[m, h, n], r),
                            rrr_learning_coefficient(m, h, n, r),
                            "{m}-{h}-{n} rank {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dln_formula_known_cases() {
        // Full rank with no bottleneck is regular: half the dimension of the end-to-end map's
        // manifold. Widths 3-3-3-3 rank 3: the product is any 3x3 matrix: 9/2.
        assert_eq!(dln_learning_coefficient(&[3, 3, 3, 3], 3), 4.5);
        // Rank 0, widths 2-2-2-2: M = (2, 2, 2, 2), l = 3, S = 8, a = 8 - 2*3 = 2:
        // 0 + 2*1/12 - 6/4*(8/3)^2 + 1/2 * 6 * 4 = 1/6 - 32/3 + 12 = 1.5.
        assert!((dln_learning_coefficient(&[2, 2, 2, 2], 0) - 1.5).abs() < 1e-12);
        // A narrow layer dominates: 5-1-5-5 rank 0 keeps M = (1, 5): 1/2 * 5 = 2.5 (the
        // rank-1 map through a width-1 layer).
        assert_eq!(dln_learning_coefficient(&[5, 1, 5, 5], 0), 2.5);
        assert_eq!(dln_multiplicity(&[2, 2, 2, 2], 0), 3);
        assert_eq!(dln_multiplicity(&[4, 3, 5, 2], 1), 1);
        assert_eq!(dln_multiplicity(&[3, 3, 3], 3), 1);
        // Never more than half the parameter count.
        for w in [[4usize, 3, 5, 2], [2, 6, 3, 4], [5, 5, 1, 5]] {
            for r in 0..=*w.iter().min().unwrap() {
                let params: usize = w.windows(2).map(|p| p[0] * p[1]).sum();
                assert!(dln_learning_coefficient(&w, r) <= params as f64 / 2.0);
            }
        }
    }

    #[test]
    fn dln_gradient_matches_finite_differences() {
        for (widths, rank) in [
            (vec![3, 2, 4], 1),
            (vec![3, 4, 2, 3], 1),
            (vec![2, 3, 3, 2, 2], 2),
        ] {
            let d = Dln::new(widths.clone(), rank, 200, 1);
            let mut w = d.truth();
            for (i, v) in w.iter_mut().enumerate() {
                *v += 0.1 * ((i * 37 % 11) as f64 - 5.0) / 5.0;
            }
            let key = BatchKey::grad(0, 0);
            let mut wk = Potential::<f64>::worker(&d);
            let mut g = vec![0.0; w.len()];
            wk.loss_and_grad(&w, key, &mut g);
            let mut scratch = vec![0.0; w.len()];
            for i in 0..w.len() {
                let mut p = w.clone();
                p[i] += 1e-6;
                let lp = wk.loss_and_grad(&p, key, &mut scratch);
                p[i] -= 2e-6;
                let lm = wk.loss_and_grad(&p, key, &mut scratch);
                assert!(
                    ((lp - lm) / 2e-6 - g[i]).abs() < 1e-6,
                    "{widths:?} param {i}"
                );
            }
            assert!(wk.loss_and_grad(&d.truth(), key, &mut scratch).abs() < 1e-24);
            // The true map has the requested rank: its loss rises away from w* in a direction
            // that changes the product.
            assert!(Potential::<f64>::init_loss(&d, &w) > 1e-4);
        }
    }
}
