//! The language model's evaluations: n-gram tables by hand, inequalities every model obeys,
//! and induction (prefix matching, in-context learning) appearing in a model trained on text
//! that repeats itself.

use stagewise_train::lm::{LmEvaluator, LmTrainConfig, LmTrainer, NgramTables, TransformerConfig};

fn config(v: usize, n_ctx: usize, d_model: usize) -> LmTrainConfig {
    LmTrainConfig {
        num_steps: 1,
        batch_size: 16,
        transformer_config: TransformerConfig {
            n_layers: 2,
            d_model,
            d_head: 16,
            n_heads: 2,
            n_ctx,
            d_vocab: v,
            ..TransformerConfig::default()
        },
        optimizer_config: stagewise_train::config::OptimizerConfig {
            optimizer_type: "AdamW".into(),
            lr: 3e-3,
            betas: [0.9, 0.999],
            weight_decay: 0.0,
        },
        ..LmTrainConfig::new(TransformerConfig::default(), "x", "x")
    }
}

/// Rows BOS, r, r: `half` tokens drawn from 1..v by a simple generator, repeated.
fn repeated_rows(n: usize, half: usize, v: u32, salt: u64) -> (Vec<u32>, usize) {
    let mut x = salt
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut ids = Vec::new();
    for _ in 0..n {
        let r: Vec<u32> = (0..half)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                1 + ((x >> 33) % (v as u64 - 1)) as u32
            })
            .collect();
        ids.push(0);
        ids.extend(&r);
        ids.extend(&r);
    }
    (ids, 1 + 2 * half)
}

fn metric(names: &[String], values: &[f64], name: &str) -> f64 {
    values[names.iter().position(|n| n == name).unwrap()]
}

#[test]
fn ngram_tables_match_a_hand_count() {
    // Rows 0 1 2 1 2 | 0 1 3 1 2: P(.|1) = {2: 3/4, 3: 1/4}, P(.|0) = {1: 1}. The trigrams
    // 012 121 212 | 013 131 312 occur once each, so the top one is the smallest, (0, 1, 2).
    let rows = (vec![0, 1, 2, 1, 2, 0, 1, 3, 1, 2], 5);
    let t = NgramTables::count(&rows, 5, 100, 1);
    assert_eq!(t.bigram(1).unwrap(), [(2, 0.75), (3, 0.25)]);
    assert_eq!(t.bigram(0).unwrap(), [(1, 1.0)]);
    assert!(t.bigram(9).is_none());
    assert!(t.is_top_trigram((0, 1, 2)) && !t.is_top_trigram((1, 2, 1)));
    let cfg = config(4, 5, 16);
    let mut tr = LmTrainer::<f64>::new(&cfg).unwrap();
    let model = tr.model.clone();
    let names = LmEvaluator::metric_names(&model);
    let ev = LmEvaluator::new(&model, &rows, &rows, None, 100, 10, 16, 0, 0);
    let values = tr.evaluate_all(&ev).unwrap();
    // The floor is the mean entropy of P(.|x_i) over the 8 predicting positions (tokens
    // 0 1 2 1 | 0 1 3 1): four of them are token 1 with entropy h, the rest 0.
    let h = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
    let floor = metric(&names, &values, "bigram/entropy");
    assert!((floor - h / 2.0).abs() < 1e-12, "{floor} vs {}", h / 2.0);
    // Gibbs: the cross-entropy to the bigram law is at least its entropy, for any model.
    assert!(metric(&names, &values, "bigram/score") >= floor);
}

#[test]
fn the_ablated_loss_equals_the_loss_when_the_positional_table_is_zero() {
    let rows = repeated_rows(8, 7, 11, 1);
    let cfg = config(11, 15, 16);
    let mut tr = LmTrainer::<f64>::new(&cfg).unwrap();
    let mut p = tr.params().to_vec();
    let pos = tr.model.w_pos..tr.model.w_pos + 15 * 16;
    p[pos].fill(0.0);
    tr.set_params(p).unwrap();
    let ev = LmEvaluator::new(&tr.model.clone(), &rows, &rows, None, 100, 10, 4, 0, 0);
    let names = LmEvaluator::metric_names(&tr.model);
    let v = tr.evaluate_all(&ev).unwrap();
    let (a, b) = (
        metric(&names, &v, "test/loss"),
        metric(&names, &v, "test/loss_no_pos"),
    );
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    let direct = tr.evaluate(&rows, None, None).unwrap();
    assert!((a - direct).abs() < 1e-12, "{a} vs {direct}");
    // Attention rows are distributions: the previous-token scores lie in [0, 1].
    assert!(
        names
            .iter()
            .zip(&v)
            .filter(|(n, _)| n.starts_with("heads/"))
            .all(|(_, x)| (0.0..=1.0).contains(x))
    );
}

#[test]
fn induction_appears_when_text_repeats() {
    let (v, half) = (24u32, 12);
    let train = repeated_rows(4096, half, v, 7);
    let test = repeated_rows(64, half, v, 99);
    let mut cfg = config(v as usize, 1 + 2 * half, 32);
    cfg.batch_size = 32;
    let mut tr = LmTrainer::<f32>::new(&cfg).unwrap();
    let ev = LmEvaluator::new(&tr.model.clone(), &train, &test, None, 1000, 100, 64, 0, 0);
    let names = LmEvaluator::metric_names(&tr.model);
    let before = tr.evaluate_all(&ev).unwrap();
    for _ in 0..600 {
        tr.step(&train).unwrap();
    }
    let after = tr.evaluate_all(&ev).unwrap();
    let best_prefix = |vals: &[f64]| {
        (0..2)
            .map(|h| metric(&names, vals, &format!("heads/prefix/L1H{h}")))
            .fold(0.0, f64::max)
    };
    let icl = metric(&names, &after, "icl/score");
    eprintln!(
        "prefix L1: {:.3} -> {:.3}; icl {:.3} -> {icl:.3}; loss {:.3} -> {:.3}",
        best_prefix(&before),
        best_prefix(&after),
        metric(&names, &before, "icl/score"),
        metric(&names, &before, "test/loss"),
        metric(&names, &after, "test/loss")
    );
    // A head attends to the token after the earlier occurrence (with the repeat at a fixed
    // offset, a first-layer positional head can do it)...
    let best = |vals: &[f64]| {
        names
            .iter()
            .zip(vals)
            .filter(|(n, _)| n.starts_with("heads/prefix/"))
            .fold(0.0f64, |m, (_, x)| m.max(*x))
    };
    assert!(
        best(&after) > 0.3 && best(&after) > 4.0 * best(&before),
        "{}",
        best(&after)
    );
    // ...and late tokens (in the repeat) are predicted far better than early ones.
    assert!(icl > 1.0, "{icl}");
}
