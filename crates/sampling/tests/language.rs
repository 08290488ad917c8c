//! The language model as a sampling potential: its data-set loss agrees with the trainer's
//! evaluation, a minibatch gradient is that minibatch loss's gradient, and SGLD at a trained
//! checkpoint gives a finite, positive LLC.

use stagewise_sampling::language::LmDataset;
use stagewise_sampling::{BatchKey, ChainConfig, LlcEstimate, Potential, PotentialWorker, Sgld};
use stagewise_train::lm::{LmTrainConfig, LmTrainer, TransformerConfig};

fn config() -> LmTrainConfig {
    LmTrainConfig {
        num_steps: 200,
        batch_size: 8,
        transformer_config: TransformerConfig {
            n_layers: 2,
            d_model: 16,
            d_head: 8,
            n_heads: 2,
            n_ctx: 12,
            d_vocab: 13,
            ..TransformerConfig::default()
        },
        optimizer_config: stagewise_train::config::OptimizerConfig {
            optimizer_type: "AdamW".into(),
            lr: 1e-2,
            betas: [0.9, 0.999],
            weight_decay: 0.0,
        },
        ..LmTrainConfig::new(TransformerConfig::default(), "x", "x")
    }
}

/// BOS then a walk with a noisy bigram law: x -> x*5 % 12 + 1, or x + 1 every third step.
fn rows(n: usize) -> (Vec<u32>, usize) {
    let mut ids = Vec::new();
    for r in 0..n {
        ids.push(0);
        let mut x = (r % 12 + 1) as u32;
        for j in 1..12 {
            ids.push(x);
            x = if (r + j) % 3 == 0 {
                x % 12 + 1
            } else {
                x * 5 % 12 + 1
            };
        }
    }
    (ids, 12)
}

#[test]
fn the_potential_agrees_with_training_and_its_gradients() {
    let data = rows(48);
    let mut tr = LmTrainer::<f64>::new(&config()).unwrap();
    for _ in 0..30 {
        tr.step(&data).unwrap();
    }
    let w = tr.params().to_vec();
    let model = tr.model.clone();
    let pot = LmDataset::new(&model, &data, 40, 6, 3);
    let (full, parts) = Potential::<f64>::full_loss(&pot, &w);
    let direct = tr.evaluate(&data, Some(40), None).unwrap();
    assert!((full - direct).abs() < 1e-12, "{full} vs {direct}");
    assert_eq!(parts.len(), 11);
    assert!((parts.iter().sum::<f64>() / 11.0 - full).abs() < 1e-12);
    // The minibatch of a key is fixed: its gradient is the derivative of its loss.
    let mut wk = Potential::<f64>::worker(&pot);
    let key = BatchKey::grad(2, 17);
    let mut g = vec![0.0; w.len()];
    wk.loss_and_grad(&w, key, &mut g);
    let mut dir: Vec<f64> = (0..w.len()).map(|i| ((i as f64) * 0.7).sin()).collect();
    let norm = dir.iter().map(|x| x * x).sum::<f64>().sqrt();
    dir.iter_mut().for_each(|x| *x /= norm);
    let h = 1e-5;
    let at = |s: f64, wk: &mut dyn PotentialWorker<f64>| {
        let v: Vec<f64> = w.iter().zip(&dir).map(|(a, d)| a + s * d).collect();
        wk.loss(&v, key)
    };
    let fd = (at(h, &mut wk) - at(-h, &mut wk)) / (2.0 * h);
    let an: f64 = g.iter().zip(&dir).map(|(a, b)| a * b).sum();
    assert!((fd - an).abs() < 1e-6 * (1.0 + an.abs()), "{fd} vs {an}");
}

#[test]
fn sgld_at_a_trained_checkpoint_gives_a_positive_llc() {
    let data = rows(64);
    let mut tr = LmTrainer::<f32>::new(&config()).unwrap();
    for _ in 0..200 {
        tr.step(&data).unwrap();
    }
    let w = tr.params().to_vec();
    let model = tr.model.clone();
    let pot = LmDataset::new(&model, &data, 64, 16, 0);
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 64.0 * 11.0);
    let mut cfg = ChainConfig::new(2, 60, 0);
    cfg.burnin = 20;
    let traces = stagewise_sampling::sample(&pot, &w, &sgld, None, &cfg);
    let (init, parts) = Potential::<f32>::full_loss(&pot, &w);
    let e = LlcEstimate::from_traces(&traces, init, &parts, sgld.nbeta, Some(64.0));
    eprintln!(
        "llc {} +- {} (init loss {init:.4}, nbeta {})",
        e.mean, e.std, sgld.nbeta
    );
    assert!(e.mean.is_finite() && e.mean > 0.0, "{}", e.mean);
    assert!(e.mean < model.num_params() as f64 / 2.0);
}

/// `BatchKey::FULL` is the whole data set in order: its loss is `full_loss`, so a Hessian on
/// the potential sees one fixed batch.
#[test]
fn the_full_batch_key_is_the_whole_data_set() {
    let model = stagewise_models::language::LanguageModel::new(config().transformer_config.model())
        .unwrap();
    let data = rows(24);
    let pot = LmDataset::new(&model, &data, 20, 3, 1);
    let w: Vec<f64> = model.layout.init_params(5);
    let (full, parts) = Potential::<f64>::full_loss(&pot, &w);
    let mut g = vec![0.0; w.len()];
    let mut wk = Potential::<f64>::worker(&pot);
    let keyed = wk.loss_and_grad(&w, BatchKey::FULL, &mut g);
    assert!((full - keyed).abs() < 1e-12 * full, "{full} vs {keyed}");
    assert_eq!(wk.parts().len(), parts.len());
    // A minibatch of 3 rows is not the whole set.
    let mb = wk.loss(&w, BatchKey::grad(0, 0));
    assert!((mb - full).abs() > 1e-9);
}
