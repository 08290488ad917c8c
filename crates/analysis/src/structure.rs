//! Structural indicators of a checkpoint, read off its weights (the paper notebook's figures):
//! weight norm, LayerNorm statistics and collapse, singular values of the token and positional
//! embeddings, and how much of each token-embedding direction lies in the positional table's
//! span.

use crate::{DecompositionError, check_finite};
use faer::Mat;
use stagewise_models::ParamLayout;

/// Named scalar indicators of one checkpoint, in a stable order. Weights with a NaN or an
/// infinity are an error naming the tensor (the spectra are not defined).
pub fn indicators(
    params: &[f32],
    layout: &ParamLayout,
) -> Result<Vec<(String, f64)>, DecompositionError> {
    for p in &layout.params {
        check_finite(&p.name, &params[p.offset..p.offset + p.len()])?;
    }
    let mut out = Vec::new();
    let norm = params
        .iter()
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    out.push(("weight/norm".to_string(), norm));
    let tensor = |name: &str| {
        layout
            .params
            .iter()
            .find(|p| p.name.ends_with(name))
            .map(|p| (p.shape.clone(), &params[p.offset..p.offset + p.len()]))
    };
    // LayerNorms: 1-D weights named layer_norms / unembedding.0 `*.weight` (the regression
    // transformer) or `*ln*.w` (TransformerLens: blocks.L.ln1.w, ln_final.w), with their biases.
    for p in &layout.params {
        let (base, bias) = if let Some(b) = p.name.strip_suffix(".weight")
            && (p.name.contains("layer_norms") || p.name.ends_with("unembedding.0.weight"))
        {
            (b, ".bias")
        } else if let Some(b) = p.name.strip_suffix(".w")
            && b.rsplit('.')
                .next()
                .is_some_and(|last| last.starts_with("ln"))
        {
            (b, ".b")
        } else {
            continue;
        };
        if p.shape.len() != 1 {
            continue;
        }
        let short = base.trim_start_matches("token_sequence_transformer.");
        let weight = &params[p.offset..p.offset + p.len()];
        for (kind, values) in [
            ("weight", Some(weight)),
            ("bias", tensor(&format!("{base}{bias}")).map(|t| t.1)),
        ] {
            let Some(v) = values else { continue };
            for (stat, x) in ln_stats(v) {
                out.push((format!("ln/{short}/{kind}/{stat}"), x));
            }
        }
    }
    // TransformerLens' embeddings are [d_vocab, d_model] and [n_ctx, d_model]: their spectra
    // (the per-token span fractions would be one column per vocabulary entry: left out).
    for (name, short) in [("embed.W_E", "embed"), ("pos_embed.W_pos", "postn")] {
        if let Some(p) = layout.params.iter().find(|p| p.name == name)
            && p.shape.len() == 2
        {
            let m = to_mat(
                &params[p.offset..p.offset + p.len()],
                p.shape[0],
                p.shape[1],
            );
            push_spectrum(&mut out, short, &singular_values(&m, name)?);
        }
    }
    if let Some((shape, w)) = tensor("token_embedding.weight") {
        let (c, d1) = (shape[0], shape[1]);
        let emb = to_mat(w, c, d1);
        let s = singular_values(&emb, "token embedding")?;
        push_spectrum(&mut out, "embed", &s);
        if let Some((pshape, pw)) = tensor("postn_embedding.weight") {
            let pos = to_mat(pw, pshape[0], pshape[1]);
            let ps = singular_values(&pos, "positional embedding")?;
            push_spectrum(&mut out, "postn", &ps);
            // Fraction of each token-embedding column in the span of the positional table.
            let svd = pos
                .thin_svd()
                .map_err(|_| DecompositionError::NoConvergence {
                    what: "SVD of the positional embedding".into(),
                })?;
            let u = svd.U();
            let rank = ps.iter().filter(|x| **x > 1e-9).count();
            for i in 0..d1 {
                let col: Vec<f64> = (0..c).map(|r| emb[(r, i)]).collect();
                let total = col.iter().map(|x| x * x).sum::<f64>().sqrt();
                let mut inside = 0.0;
                for k in 0..rank {
                    let dot: f64 = (0..c).map(|r| u[(r, k)] * col[r]).sum();
                    inside += dot * dot;
                }
                let frac = if total > 0.0 {
                    inside.sqrt() / total
                } else {
                    0.0
                };
                out.push((format!("embed/in_postn_span/{i}"), frac));
            }
        }
    }
    Ok(out)
}

/// `norm, norm_std (std of |x|), std, mean, max, min, collapsed (fraction of |x| < 0.1)`.
fn ln_stats(v: &[f32]) -> Vec<(&'static str, f64)> {
    let x: Vec<f64> = v.iter().map(|a| *a as f64).collect();
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let std = (x.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    let abs: Vec<f64> = x.iter().map(|a| a.abs()).collect();
    let am = abs.iter().sum::<f64>() / n;
    let astd = (abs.iter().map(|a| (a - am).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    vec![
        ("norm", x.iter().map(|a| a * a).sum::<f64>().sqrt()),
        ("norm_std", astd),
        ("std", std),
        ("mean", mean),
        ("max", x.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        ("min", x.iter().copied().fold(f64::INFINITY, f64::min)),
        (
            "collapsed",
            abs.iter().filter(|a| **a < 0.1).count() as f64 / n,
        ),
    ]
}

fn to_mat(w: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |r, c| w[r * cols + c] as f64)
}

/// Singular values of `m` (named `what` in errors), largest first.
pub fn singular_values(m: &Mat<f64>, what: &str) -> Result<Vec<f64>, DecompositionError> {
    let mut s: Vec<f64> = m
        .singular_values()
        .map_err(|_| DecompositionError::NoConvergence {
            what: format!("singular values of the {what}"),
        })?
        .into_iter()
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    Ok(s)
}

fn push_spectrum(out: &mut Vec<(String, f64)>, name: &str, s: &[f64]) {
    let total: f64 = s.iter().map(|x| x * x).sum();
    for (i, v) in s.iter().enumerate() {
        out.push((format!("{name}/S/{i}"), *v));
    }
    for (i, v) in s.iter().enumerate() {
        out.push((format!("{name}/S_normed/{i}"), v * v / total));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagewise_models::{RegressionConfig, RegressionTransformer};

    #[test]
    fn indicators_of_a_constructed_model() {
        let model = RegressionTransformer::new(RegressionConfig::l2h4(4)).unwrap();
        let mut p: Vec<f32> = model.init_params(1);
        let layout = &model.layout;
        let info = |n: &str| {
            layout
                .params
                .iter()
                .find(|q| q.name.ends_with(n))
                .unwrap()
                .clone()
        };
        // Token embedding (64 x 5): columns 0 and 1 are 3 e_0 and 2 e_1; the rest zero.
        let te = info("token_embedding.weight");
        p[te.offset..te.offset + te.len()].fill(0.0);
        p[te.offset] = 3.0;
        p[te.offset + 5 + 1] = 2.0;
        // Positional table (64 x 8): only row 0 is non-zero, so its span is e_0.
        let pe = info("postn_embedding.weight");
        p[pe.offset..pe.offset + pe.len()].fill(0.0);
        for j in 0..8 {
            p[pe.offset + j] = 1.0;
        }
        // One LayerNorm collapses half its weights.
        let ln = info("blocks.0.layer_norms.0.weight");
        for i in 0..32 {
            p[ln.offset + i] = 0.01;
        }
        let ind: std::collections::HashMap<String, f64> =
            indicators(&p, layout).unwrap().into_iter().collect();
        let norm = p.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((ind["weight/norm"] - norm).abs() < 1e-9 * norm);
        assert!((ind["embed/S/0"] - 3.0).abs() < 1e-12 && (ind["embed/S/1"] - 2.0).abs() < 1e-12);
        assert!(ind["embed/S/2"].abs() < 1e-12);
        assert!((ind["embed/S_normed/0"] - 9.0 / 13.0).abs() < 1e-12);
        assert!((ind["postn/S/0"] - 8f64.sqrt()).abs() < 1e-12);
        assert!((ind["embed/in_postn_span/0"] - 1.0).abs() < 1e-12);
        assert!(ind["embed/in_postn_span/1"].abs() < 1e-12);
        assert_eq!(ind["ln/blocks.0.layer_norms.0/weight/collapsed"], 0.5);
        assert_eq!(ind["ln/blocks.0.layer_norms.1/weight/collapsed"], 0.0);
        assert_eq!(ind["ln/unembedding.0/weight/mean"], 1.0);
        assert!(ind.contains_key("ln/unembedding.0/bias/norm"));
        // A NaN weight is an error naming its tensor, not a panic in the SVD.
        p[pe.offset + 3] = f32::NAN;
        let err = indicators(&p, layout).unwrap_err().to_string();
        assert!(
            err.contains("postn_embedding.weight") && err.contains("index 3"),
            "{err}"
        );
    }

    #[test]
    fn indicators_of_a_transformer_lens_model() {
        use stagewise_models::language::{LanguageConfig, LanguageModel};
        let model = LanguageModel::new(LanguageConfig {
            n_layers: 2,
            d_model: 8,
            n_heads: 2,
            d_head: 4,
            n_ctx: 6,
            d_vocab: 10,
        })
        .unwrap();
        let layout = &model.layout;
        let mut p: Vec<f32> = layout.init_params(2);
        let info = |n: &str| layout.params.iter().find(|q| q.name == n).unwrap().clone();
        // W_E (10 x 8) = diag(4, 3) in its top-left corner: singular values 4, 3, 0...
        let we = info("embed.W_E");
        p[we.offset..we.offset + we.len()].fill(0.0);
        p[we.offset] = 4.0;
        p[we.offset + 8 + 1] = 3.0;
        let ln = info("blocks.1.ln1.w");
        for i in 0..2 {
            p[ln.offset + i] = 0.05;
        }
        let ind: std::collections::HashMap<String, f64> =
            indicators(&p, layout).unwrap().into_iter().collect();
        assert!((ind["embed/S/0"] - 4.0).abs() < 1e-12 && (ind["embed/S/1"] - 3.0).abs() < 1e-12);
        assert!((ind["embed/S_normed/1"] - 9.0 / 25.0).abs() < 1e-12);
        assert_eq!(ind.keys().filter(|k| k.starts_with("postn/S/")).count(), 6);
        assert_eq!(ind["ln/blocks.1.ln1/weight/collapsed"], 0.25);
        assert_eq!(ind["ln/blocks.0.ln1/weight/collapsed"], 0.0);
        assert_eq!(ind["ln/ln_final/weight/mean"], 1.0);
        assert_eq!(ind["ln/ln_final/bias/norm"], 0.0);
        assert!(!ind.keys().any(|k| k.contains("in_postn_span")));
    }
}
