//! The deterministic parameters and inputs of the reference's golden test vectors
//! (`testdata/reference/golden_vectors.json`; reference.md section 13), for checking a model
//! or a backend (CPU, GPU) against the reference in float64.

use crate::regression::RegressionTransformer;

/// Parameter `q` (in `named_parameters()` order), element `j`: `0.1 sin(0.1 (j+1) + q)`, plus
/// 1 for LayerNorm weights.
pub fn golden_params(model: &RegressionTransformer) -> Vec<f64> {
    let mut p = vec![0.0; model.num_params()];
    for (q, info) in model.layout.params.iter().enumerate() {
        let ln_weight = info.is_layer_norm() && info.name.ends_with("weight");
        for (j, v) in p[info.range()].iter_mut().enumerate() {
            *v = 0.1 * (0.1 * (j + 1) as f64 + q as f64).sin() + if ln_weight { 1.0 } else { 0.0 };
        }
    }
    p
}

/// `xs[b, k, d] = sin(1 + b + 0.5 k + 0.25 d)` and `ys[b, k] = cos(0.3 b + 0.7 k)`.
pub fn golden_inputs(b: usize, k: usize, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut xs = vec![0.0; b * k * d];
    let mut ys = vec![0.0; b * k];
    for bi in 0..b {
        for ki in 0..k {
            for di in 0..d {
                xs[(bi * k + ki) * d + di] =
                    (1.0 + bi as f64 + 0.5 * ki as f64 + 0.25 * di as f64).sin();
            }
            ys[bi * k + ki] = (0.3 * bi as f64 + 0.7 * ki as f64).cos();
        }
    }
    (xs, ys)
}
