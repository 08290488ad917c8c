//! The reference's `RegressionEvaluator` (4.2): fixed pretrain and "true" (Gaussian-task)
//! evaluation batches, per-token MSE against targets and against the ridge and dMMSE baselines.

use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};

use crate::baselines::{dmmse, ridge};
use crate::data::{Batch, SequenceDistribution, TaskDistribution};
use crate::trainer::{StepEngine, TrainError};

/// One fixed evaluation batch with its baseline predictions.
struct EvalSet<T> {
    name: &'static str,
    batch: Batch<T>,
    ridge: Vec<f64>,
    dmmse: Vec<f64>,
    /// The pretrain set also reports `mse_subseq` (a copy of `mse`, as the reference does).
    with_subseq_copy: bool,
}

pub struct Evaluator<T> {
    sets: Vec<EvalSet<T>>,
    k: usize,
    seed: u64,
}

impl<T: Float> Evaluator<T> {
    /// Draws the two batches of `size` sequences from `(seed, EVAL_PRETRAIN)` and
    /// `(seed, EVAL_TRUE)` and computes their baselines once.
    pub fn new(pretrain: &SequenceDistribution, size: usize, seed: u64) -> Self {
        let d = pretrain.tasks.task_size();
        let truth = SequenceDistribution {
            tasks: TaskDistribution::Gaussian { d },
            ..pretrain.clone()
        };
        let k = pretrain.k;
        let make = |name, dist: &SequenceDistribution, tg, with_subseq_copy| {
            let mut batch = Batch::default();
            dist.sample_into(&mut batch, size, seed, tg, 0);
            let (_, r) = ridge(&batch.xs, &batch.ys, size, k, d, pretrain.noise_variance);
            // For M = infinity the reference uses ridge for both baselines.
            let dm = match pretrain.tasks.tasks() {
                Some(tasks) => {
                    dmmse(
                        &batch.xs,
                        &batch.ys,
                        size,
                        k,
                        d,
                        pretrain.noise_variance,
                        tasks,
                    )
                    .1
                }
                None => r.clone(),
            };
            EvalSet {
                name,
                batch,
                ridge: r,
                dmmse: dm,
                with_subseq_copy,
            }
        };
        let sets = vec![
            make("pretrain", pretrain, tag::EVAL_PRETRAIN, true),
            make("true", &truth, tag::EVAL_TRUE, false),
        ];
        Evaluator { sets, k, seed }
    }

    /// The baselines' own per-token MSE against the targets on each fixed batch:
    /// `("pretrain/ridge", [K])`, `("pretrain/dmmse", [K])`, then the same for `true`.
    pub fn baseline_risks(&self) -> Vec<(String, Vec<f64>)> {
        let k = self.k;
        let mut out = Vec::new();
        for s in &self.sets {
            let n = s.batch.nseq;
            for (name, pred) in [("ridge", &s.ridge), ("dmmse", &s.dmmse)] {
                let mut v = vec![0.0; k];
                for b in 0..n {
                    for e in 0..k {
                        v[e] += (pred[b * k + e] - s.batch.ys[b * k + e]).powi(2) / n as f64;
                    }
                }
                out.push((format!("{}/{name}", s.name), v));
            }
        }
        out
    }

    /// Metric names in the order `evaluate` returns them (2 + 7 (K+1) keys).
    pub fn metric_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for s in &self.sets {
            names.push(format!("{}/mse_subsequence", s.name));
            let groups: &[&str] = if s.with_subseq_copy {
                &["mse_subseq", "mse", "delta_dmmse", "delta_ridge"]
            } else {
                &["mse", "delta_dmmse", "delta_ridge"]
            };
            for g in groups {
                for i in 0..self.k {
                    names.push(format!("{}/{g}/token/{i}", s.name));
                }
                names.push(format!("{}/{g}", s.name));
            }
        }
        names
    }

    /// All metrics at `step` (the step keys the per-sequence subsequence lengths).
    pub fn evaluate(
        &self,
        engine: &mut dyn StepEngine<T>,
        step: u64,
    ) -> Result<Vec<f64>, TrainError> {
        let k = self.k;
        let mut values = Vec::new();
        for s in &self.sets {
            let n = s.batch.nseq;
            let mut pred_t = vec![T::ZERO; n * k];
            engine.predict(&s.batch.toks, n, 2 * k, &mut pred_t)?;
            let pred: Vec<f64> = pred_t.iter().map(|v| v.to_f64()).collect();
            let per_token = |target: &[f64]| -> Vec<f64> {
                let mut v = vec![0.0; k];
                for b in 0..n {
                    for e in 0..k {
                        let diff = pred[b * k + e] - target[b * k + e];
                        v[e] += diff * diff;
                    }
                }
                v.iter().map(|x| x / n as f64).collect()
            };
            // SubsequenceMSELoss: sequence b keeps its first k_b ~ U{1..K} predictions.
            let sub = Stream::new(self.seed, tag::EVAL_SUBSEQUENCE, step as u32, 0);
            let mut subseq = 0.0;
            for b in 0..n {
                let kb = sub.below(b as u32, k as u64) as usize + 1;
                let se: f64 = (0..kb)
                    .map(|e| (pred[b * k + e] - s.batch.ys[b * k + e]).powi(2))
                    .sum();
                subseq += se / kb as f64;
            }
            values.push(subseq / n as f64);
            let mse = per_token(&s.batch.ys);
            let mut groups = vec![];
            if s.with_subseq_copy {
                groups.push(mse.clone());
            }
            groups.push(mse);
            groups.push(per_token(&s.dmmse));
            groups.push(per_token(&s.ridge));
            for g in groups {
                let mean = g.iter().sum::<f64>() / k as f64;
                values.extend(g);
                values.push(mean);
            }
        }
        Ok(values)
    }
}
