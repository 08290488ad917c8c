//! The language-model trainer: batch order, resume bit for bit, and learning a bigram law.

use stagewise_train::lm::{LmTrainConfig, LmTrainer, TransformerConfig};

fn config(steps: u64) -> LmTrainConfig {
    LmTrainConfig {
        num_steps: steps,
        batch_size: 8,
        transformer_config: TransformerConfig {
            n_layers: 2,
            d_model: 32,
            d_head: 8,
            n_heads: 2,
            n_ctx: 16,
            d_vocab: 13,
            ..TransformerConfig::default()
        },
        optimizer_config: stagewise_train::config::OptimizerConfig {
            optimizer_type: "AdamW".into(),
            lr: 1e-2,
            betas: [0.9, 0.999],
            weight_decay: 0.05,
        },
        ..LmTrainConfig::new(TransformerConfig::default(), "train", "test")
    }
}

/// Rows of 16 tokens: BOS (0), then a walk where token `x` is followed by `x*5 % 12 + 1`.
fn bigram_rows(n: usize) -> (Vec<u32>, usize) {
    let mut ids = Vec::new();
    for r in 0..n {
        ids.push(0);
        let mut x = (r % 12 + 1) as u32;
        for _ in 1..16 {
            ids.push(x);
            x = x * 5 % 12 + 1;
        }
    }
    (ids, 16)
}

#[test]
fn batches_follow_the_rows_in_order_epoch_after_epoch() {
    let r = |t| LmTrainer::<f32>::batch_rows(t, 4, 10);
    assert_eq!(
        [r(0), r(1), r(2), r(3), r(5)],
        [0..4, 4..8, 8..10, 0..4, 8..10]
    );
}

#[test]
fn a_restored_state_continues_bit_for_bit() {
    let rows = bigram_rows(20);
    let cfg = config(6);
    let mut a = LmTrainer::<f32>::new(&cfg).unwrap();
    let la: Vec<f64> = (0..6).map(|_| a.step(&rows).unwrap()).collect();
    let mut b = LmTrainer::<f32>::new(&cfg).unwrap();
    for _ in 0..3 {
        b.step(&rows).unwrap();
    }
    let saved = b.state();
    let mut c = LmTrainer::<f32>::new(&cfg).unwrap();
    c.restore(saved).unwrap();
    let lc: Vec<f64> = (0..3).map(|_| c.step(&rows).unwrap()).collect();
    assert_eq!(la[3..], lc[..]);
    assert_eq!(a.state(), c.state());
    assert_eq!(c.steps_done(), 6);
}

#[test]
fn a_deterministic_bigram_law_is_learned() {
    let rows = bigram_rows(64);
    let cfg = config(150);
    let mut tr = LmTrainer::<f32>::new(&cfg).unwrap();
    let first = tr.evaluate(&rows, None, None).unwrap();
    assert!(
        (first - 13f64.ln()).abs() < 0.5,
        "initial loss {first} ~ ln 13"
    );
    for _ in 0..150 {
        tr.step(&rows).unwrap();
    }
    let mut per_token = Vec::new();
    let last = tr.evaluate(&rows, None, Some(&mut per_token)).unwrap();
    assert_eq!(per_token.len(), 64 * 15);
    // Token 1 follows BOS and is unpredictable (12 starts): ln 12 / 15 of the mean at best.
    assert!(last < 0.4, "loss {last} after 150 steps");
    let later: f64 = per_token
        .chunks(15)
        .map(|r| r[1..].iter().sum::<f64>())
        .sum::<f64>()
        / (64.0 * 14.0);
    assert!(later < 0.1, "loss after the first token {later}");
}
