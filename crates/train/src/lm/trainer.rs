//! The language model's training loop state: weights, AdamW, updates taken. Step `t`'s batch
//! is a pure function of `t` and the training rows, so a restored state continues bit for bit.

use stagewise_engine::Float;
use stagewise_models::language::{LanguageModel, LmRunner, RowSource};

use super::LmTrainConfig;
use crate::adam::Adam;
use crate::trainer::{TrainError, TrainState};

/// Weights, AdamW moments and updates taken (the regression trainer's state type).
pub type LmState<T> = TrainState<T>;

pub struct LmTrainer<T> {
    pub model: LanguageModel,
    pub config: LmTrainConfig,
    params: Vec<T>,
    adam: Adam<T>,
    runner: LmRunner<T>,
    grad: Vec<T>,
    tokens: Vec<u32>,
}

impl<T: Float> LmTrainer<T> {
    pub fn new(config: &LmTrainConfig) -> Result<Self, TrainError> {
        config.validate()?;
        let model = LanguageModel::new(config.transformer_config.model())?;
        let params = model.init_params(config.transformer_config.seed);
        let o = &config.optimizer_config;
        let n = params.len();
        let adam = if o.optimizer_type == "AdamW" {
            Adam::adamw(n, o.betas[0], o.betas[1], 1e-8, o.weight_decay)
        } else {
            Adam::new(n, o.betas[0], o.betas[1], 1e-8, o.weight_decay)
        };
        Ok(LmTrainer {
            model,
            config: config.clone(),
            params,
            adam,
            runner: LmRunner::new(),
            grad: vec![T::ZERO; n],
            tokens: Vec::new(),
        })
    }

    pub fn steps_done(&self) -> u64 {
        self.adam.steps
    }

    pub fn params(&self) -> &[T] {
        &self.params
    }

    /// The rows of step `t`'s batch: `DataLoader(batch_size, shuffle=False)` over the rows,
    /// epoch after epoch; an epoch's last batch holds the remainder.
    pub fn batch_rows(t: u64, batch: usize, rows: usize) -> std::ops::Range<usize> {
        let per_epoch = rows.div_ceil(batch) as u64;
        let b = (t % per_epoch) as usize;
        b * batch..((b + 1) * batch).min(rows)
    }

    /// Runs the next step on `rows` (its index is `steps_done()`) and returns its batch loss.
    pub fn step(&mut self, rows: &dyn RowSource) -> Result<f64, TrainError> {
        let t = self.adam.steps;
        let n_ctx = self.model.config.n_ctx;
        let range = Self::batch_rows(t, self.config.batch_size, rows.len());
        let nseq = range.len();
        self.tokens.resize(nseq * n_ctx, 0);
        for (k, i) in range.enumerate() {
            rows.row_into(i, &mut self.tokens[k * n_ctx..(k + 1) * n_ctx]);
        }
        let loss = self.runner.run(
            &self.model,
            &self.params,
            &self.tokens,
            nseq,
            n_ctx,
            Some(&mut self.grad),
        )?;
        if !loss.is_finite() {
            return Err(TrainError::Diverged { step: t, loss });
        }
        self.adam.step(
            &mut self.params,
            &self.grad,
            self.config.optimizer_config.lr,
        );
        Ok(loss)
    }

    /// Mean next-token loss over the first `limit` rows (all by default), in batches of
    /// `batch_size`, and the per-token losses `[rows, n_ctx-1]` when `keep` is given.
    pub fn evaluate(
        &mut self,
        rows: &dyn RowSource,
        limit: Option<usize>,
        mut keep: Option<&mut Vec<f64>>,
    ) -> Result<f64, TrainError> {
        evaluate_rows(
            &self.model,
            &self.params,
            &mut self.runner,
            rows,
            limit,
            self.config.batch_size,
            keep.as_deref_mut(),
        )
    }

    /// Every evaluation of `ev` on the current weights.
    pub fn evaluate_all(&mut self, ev: &super::LmEvaluator) -> Result<Vec<f64>, TrainError> {
        ev.evaluate(&self.model, &self.params, &mut self.runner)
    }

    /// Replaces the weights (keeping AdamW's state); for tests and conversions.
    pub fn set_params(&mut self, params: Vec<T>) -> Result<(), TrainError> {
        if params.len() != self.params.len() {
            return Err(TrainError::State(format!(
                "{} parameters for a model of {}",
                params.len(),
                self.params.len()
            )));
        }
        self.params = params;
        Ok(())
    }

    pub fn state(&self) -> LmState<T> {
        TrainState {
            params: self.params.clone(),
            exp_avg: self.adam.m.clone(),
            exp_avg_sq: self.adam.v.clone(),
            steps_done: self.adam.steps,
        }
    }

    pub fn restore(&mut self, state: LmState<T>) -> Result<(), TrainError> {
        state.check_fits(self.params.len())?;
        self.params = state.params;
        self.adam.m = state.exp_avg;
        self.adam.v = state.exp_avg_sq;
        self.adam.steps = state.steps_done;
        Ok(())
    }
}

/// Mean next-token loss of `p` over the first `limit` rows of `rows` (all by default), run in
/// batches of `batch` rows; the per-token losses `[rows, n_ctx-1]` go to `keep` when given.
pub fn evaluate_rows<T: Float>(
    model: &LanguageModel,
    p: &[T],
    runner: &mut LmRunner<T>,
    rows: &dyn RowSource,
    limit: Option<usize>,
    batch: usize,
    mut keep: Option<&mut Vec<f64>>,
) -> Result<f64, TrainError> {
    let n_ctx = model.config.n_ctx;
    let n = limit.map_or(rows.len(), |l| l.min(rows.len()));
    let mut tokens = vec![0u32; batch.min(n.max(1)) * n_ctx];
    let mut total = 0.0;
    if let Some(k) = keep.as_deref_mut() {
        k.clear();
    }
    let mut s = 0;
    while s < n {
        let e = (s + batch).min(n);
        for i in s..e {
            rows.row_into(i, &mut tokens[(i - s) * n_ctx..(i - s + 1) * n_ctx]);
        }
        let loss = runner.run(model, p, &tokens[..(e - s) * n_ctx], e - s, n_ctx, None)?;
        total += loss * (e - s) as f64;
        if let Some(k) = keep.as_deref_mut() {
            k.extend_from_slice(runner.token_losses());
        }
        s = e;
    }
    Ok(total / n.max(1) as f64)
}
