//! PCA of model behaviour across checkpoints (essential dynamics): rows are checkpoints, columns
//! are features (e.g. every output of the model on a fixed evaluation set). With far more
//! features than checkpoints, the decomposition goes through the checkpoints' Gram matrix
//! `Xc Xc^T` (rows x rows), built in column blocks in f64, so the features are never copied
//! whole into f64. Conventions follow scikit-learn's `PCA`: columns centred by their mean over
//! rows, `explained_variance = s^2 / (rows - 1)`, each component's largest-magnitude loading
//! positive.

use faer::{Mat, Side};

#[derive(Clone, Debug)]
pub struct Pca {
    pub rows: usize,
    pub cols: usize,
    /// Column means `[cols]`.
    pub mean: Vec<f64>,
    /// `components[k, cols]` (unit rows, the loadings).
    pub components: Vec<f64>,
    /// Variance along each component, and its share of the total variance.
    pub explained_variance: Vec<f64>,
    pub explained_variance_ratio: Vec<f64>,
    /// `scores[rows, k]`: the centred rows projected on the components.
    pub scores: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PcaError {
    #[error("PCA needs at least 2 rows (checkpoints), got {0}")]
    TooFewRows(usize),
    #[error("the data has {len} values, not rows x cols = {rows} x {cols}")]
    Shape {
        len: usize,
        rows: usize,
        cols: usize,
    },
    #[error("the eigendecomposition did not converge")]
    NoConvergence,
}

/// Columns per block when building the Gram matrix.
const BLOCK: usize = 2048;

impl Pca {
    /// The top `k` components of `x[rows, cols]` (`k` is capped at `rows - 1`).
    pub fn fit(x: &[f32], rows: usize, cols: usize, k: usize) -> Result<Pca, PcaError> {
        if rows < 2 {
            return Err(PcaError::TooFewRows(rows));
        }
        if x.len() != rows * cols {
            return Err(PcaError::Shape {
                len: x.len(),
                rows,
                cols,
            });
        }
        let k = k.min(rows - 1).min(cols);
        let mut mean = vec![0.0f64; cols];
        for r in 0..rows {
            for (m, v) in mean.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= rows as f64);
        let centred_block = |c0: usize, c1: usize| {
            Mat::<f64>::from_fn(rows, c1 - c0, |r, j| {
                x[r * cols + c0 + j] as f64 - mean[c0 + j]
            })
        };
        let mut gram = Mat::<f64>::zeros(rows, rows);
        let mut total = 0.0;
        for c0 in (0..cols).step_by(BLOCK) {
            let b = centred_block(c0, (c0 + BLOCK).min(cols));
            gram += &b * b.transpose();
        }
        for r in 0..rows {
            total += gram[(r, r)];
        }
        let eig = gram
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| PcaError::NoConvergence)?;
        let (u, s) = (eig.U(), eig.S().column_vector());
        // Eigenvalues come in increasing order: take the last k, largest first.
        let order: Vec<usize> = (0..rows).rev().take(k).collect();
        let lambda: Vec<f64> = order.iter().map(|&i| s[i].max(0.0)).collect();
        // components = U_k^T Xc / sqrt(lambda), built block by block.
        let mut components = vec![0.0; k * cols];
        let uk = Mat::<f64>::from_fn(rows, k, |r, j| u[(r, order[j])]);
        for c0 in (0..cols).step_by(BLOCK) {
            let c1 = (c0 + BLOCK).min(cols);
            let p = uk.transpose() * centred_block(c0, c1);
            for j in 0..k {
                let norm = lambda[j].sqrt();
                for c in c0..c1 {
                    components[j * cols + c] = if norm > 0.0 {
                        p[(j, c - c0)] / norm
                    } else {
                        0.0
                    };
                }
            }
        }
        let mut scores = vec![0.0; rows * k];
        for j in 0..k {
            let comp = &mut components[j * cols..(j + 1) * cols];
            let big = comp
                .iter()
                .copied()
                .fold(0.0f64, |a, v| if v.abs() > a.abs() { v } else { a });
            let sign = if big < 0.0 { -1.0 } else { 1.0 };
            comp.iter_mut().for_each(|v| *v *= sign);
            for r in 0..rows {
                scores[r * k + j] = sign * uk[(r, j)] * lambda[j].sqrt();
            }
        }
        Ok(Pca {
            rows,
            cols,
            mean,
            components,
            explained_variance: lambda.iter().map(|l| l / (rows - 1) as f64).collect(),
            explained_variance_ratio: lambda
                .iter()
                .map(|l| if total > 0.0 { l / total } else { 0.0 })
                .collect(),
            scores,
        })
    }

    pub fn k(&self) -> usize {
        self.explained_variance.len()
    }

    /// Projects rows `y[n, cols]` (e.g. another run's outputs) on the components.
    pub fn transform(&self, y: &[f32], n: usize) -> Vec<f64> {
        let (k, cols) = (self.k(), self.cols);
        let mut out = vec![0.0; n * k];
        for r in 0..n {
            for j in 0..k {
                let comp = &self.components[j * cols..(j + 1) * cols];
                out[r * k + j] = y[r * cols..(r + 1) * cols]
                    .iter()
                    .zip(comp)
                    .zip(&self.mean)
                    .map(|((v, c), m)| (*v as f64 - m) * c)
                    .sum();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rank-2 trajectory `x(t) = m + a(t) p + b(t) q` with orthonormal directions p, q and
    /// centred coefficient series: PCA recovers the directions, the variances and the scores,
    /// and the explained-variance ratios sum to 1.
    #[test]
    fn recovers_a_known_low_rank_trajectory() {
        let (rows, cols) = (50, 3000);
        let p: Vec<f64> = (0..cols).map(|c| ((c as f64) * 0.37).sin()).collect();
        let q0: Vec<f64> = (0..cols).map(|c| ((c as f64) * 0.11).cos()).collect();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let p: Vec<f64> = p.iter().map(|x| x / norm(&p)).collect();
        let dot: f64 = q0.iter().zip(&p).map(|(a, b)| a * b).sum();
        let q: Vec<f64> = q0.iter().zip(&p).map(|(a, b)| a - dot * b).collect();
        let q: Vec<f64> = q.iter().map(|x| x / norm(&q)).collect();
        let t = |r: usize| r as f64 / (rows - 1) as f64;
        let a: Vec<f64> = (0..rows).map(|r| 10.0 * (t(r) - 0.5)).collect();
        let b0: Vec<f64> = (0..rows).map(|r| 3.0 * (6.0 * t(r)).cos()).collect();
        let bm = b0.iter().sum::<f64>() / rows as f64;
        let am = a.iter().sum::<f64>() / rows as f64;
        let (a, b): (Vec<f64>, Vec<f64>) = (
            a.iter().map(|v| v - am).collect(),
            b0.iter().map(|v| v - bm).collect(),
        );
        // Make the two series uncorrelated so they are exactly the principal axes.
        let ab: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>();
        let aa: f64 = a.iter().map(|x| x * x).sum();
        let b: Vec<f64> = b.iter().zip(&a).map(|(y, x)| y - ab / aa * x).collect();
        let x: Vec<f32> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (1.0 + c as f64 * 1e-3, r, c)))
            .map(|(m, r, c)| (m + a[r] * p[c] + b[r] * q[c]) as f32)
            .collect();
        let pca = Pca::fit(&x, rows, cols, 4).unwrap();
        let var = |s: &[f64]| s.iter().map(|v| v * v).sum::<f64>() / (rows - 1) as f64;
        assert!((pca.explained_variance[0] - var(&a)).abs() < 1e-4 * var(&a));
        assert!((pca.explained_variance[1] - var(&b)).abs() < 1e-3 * var(&b));
        assert!(pca.explained_variance[2] < 1e-6 * var(&a));
        let ratio: f64 = pca.explained_variance_ratio.iter().sum();
        assert!((ratio - 1.0).abs() < 1e-6);
        for (j, (dir, series)) in [(&p, &a), (&q, &b)].into_iter().enumerate() {
            let comp = &pca.components[j * cols..(j + 1) * cols];
            let cos: f64 = comp.iter().zip(dir.iter()).map(|(u, v)| u * v).sum();
            assert!(cos.abs() > 1.0 - 1e-6, "component {j}: cos {cos}");
            let sign = cos.signum();
            for r in 0..rows {
                let s = pca.scores[r * pca.k() + j];
                assert!((s - sign * series[r]).abs() < 1e-3, "score {r},{j}");
            }
            // The largest loading is positive.
            let big = comp
                .iter()
                .copied()
                .fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
            assert!(big > 0.0);
        }
        // Projecting the data again gives the scores.
        let again = pca.transform(&x, rows);
        for (u, v) in again.iter().zip(&pca.scores) {
            assert!((u - v).abs() < 1e-3);
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(matches!(
            Pca::fit(&[1.0], 1, 1, 1),
            Err(PcaError::TooFewRows(1))
        ));
        assert!(matches!(
            Pca::fit(&[1.0; 5], 2, 3, 1),
            Err(PcaError::Shape { .. })
        ));
    }
}
