//! The training loop's state machine: step `t` draws its batch from `(sampling seed, t)`,
//! computes the MSE loss and gradient, and takes one Adam step at `lr(t)`. Everything a step
//! depends on is in `TrainState`, so a restored state continues bit for bit.

use stagewise_engine::Float;
use stagewise_engine::rng::tag;
use stagewise_models::batch::ChunkedRunner;
use stagewise_models::{ModelError, RegressionTransformer};

use crate::adam::Adam;
use crate::config::{ConfigError, TrainConfig};
use crate::data::{Batch, SequenceDistribution};
use crate::eval::Evaluator;
use crate::schedule::LrSchedule;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("training diverged at step {step}: loss is {loss}")]
    Diverged { step: u64, loss: f64 },
    #[error("state does not fit this model: {0}")]
    State(String),
}

/// Everything that determines the rest of a run: weights, Adam moments, updates taken.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState<T> {
    pub params: Vec<T>,
    pub exp_avg: Vec<T>,
    pub exp_avg_sq: Vec<T>,
    /// Updates taken; the next step to run has this index.
    pub steps_done: u64,
}

impl<T> TrainState<T> {
    /// An error unless weights and both moments have `n` values each.
    pub fn check_fits(&self, n: usize) -> Result<(), TrainError> {
        for (what, len) in [
            ("params", self.params.len()),
            ("exp_avg", self.exp_avg.len()),
            ("exp_avg_sq", self.exp_avg_sq.len()),
        ] {
            if len != n {
                return Err(TrainError::State(format!(
                    "{what} has {len} values, the model has {n}"
                )));
            }
        }
        Ok(())
    }
}

/// The compute a training run needs, behind one interface so that a device backend (the CUDA
/// issue) can keep weights, optimiser state and batches in device memory: the run loop
/// (`Trainer`, the CLI) only talks to this trait. `CpuEngine` is the CPU implementation.
pub trait StepEngine<T>: Send {
    /// Draws batch `t` (a pure function of the sampling seed and `t`), computes the MSE loss
    /// and its gradient, and applies one Adam update at `lr`. Returns the loss before the update.
    fn step(&mut self, t: u64, lr: f64) -> Result<f64, TrainError>;
    /// Predictions `y_hat[nseq, ceil(t/2)]` of the current weights for host tokens.
    fn predict(
        &mut self,
        toks: &[T],
        nseq: usize,
        t: usize,
        out: &mut [T],
    ) -> Result<(), TrainError>;
    /// Runs steps `t0, t0 + 1, ...` at learning rates `lrs` and returns their losses. The
    /// default calls `step` for each; a device engine overrides it to run many steps without a
    /// host round trip. Stops at the first step whose loss is not finite (`Diverged`).
    fn run(&mut self, t0: u64, lrs: &[f64]) -> Result<Vec<f64>, TrainError> {
        lrs.iter()
            .enumerate()
            .map(|(i, lr)| self.step(t0 + i as u64, *lr))
            .collect()
    }
    /// Weights and Adam state, copied to the host (a device engine can fail to read them).
    fn state(&self) -> Result<TrainState<T>, TrainError>;
    fn restore(&mut self, state: TrainState<T>) -> Result<(), TrainError>;
}

/// The CPU engine: batches split into fixed chunks that run on rayon's pool.
pub struct CpuEngine<T> {
    model: RegressionTransformer,
    params: Vec<T>,
    adam: Adam<T>,
    data: SequenceDistribution,
    batch_size: usize,
    sampling_seed: u64,
    runner: ChunkedRunner<T>,
    grad: Vec<T>,
    batch: Batch<T>,
}

impl<T: Float> CpuEngine<T> {
    pub fn new(
        config: &TrainConfig,
        model: RegressionTransformer,
        data: SequenceDistribution,
    ) -> Self {
        let seeds = config.seeds();
        let params = model.init_params(seeds.model);
        let o = &config.optimizer_config;
        CpuEngine {
            adam: Adam::new(params.len(), o.betas[0], o.betas[1], 1e-8, o.weight_decay),
            grad: vec![T::ZERO; params.len()],
            runner: ChunkedRunner::new(ChunkedRunner::<T>::DEFAULT_CHUNK),
            batch: Batch::default(),
            batch_size: config.batch_size,
            sampling_seed: seeds.sampling,
            model,
            params,
            data,
        }
    }
}

impl<T: Float> StepEngine<T> for CpuEngine<T> {
    fn step(&mut self, t: u64, lr: f64) -> Result<f64, TrainError> {
        let (b, k) = (self.batch_size, self.data.k);
        self.data.sample_into(
            &mut self.batch,
            b,
            self.sampling_seed,
            tag::TRAIN_BATCH,
            t as u32,
        );
        let loss = self.runner.loss_and_grad(
            &self.model,
            &self.params,
            &self.batch.toks,
            &self.batch.ys_t,
            b,
            2 * k,
            &mut self.grad,
        )?;
        if !loss.is_finite() {
            return Err(TrainError::Diverged { step: t, loss });
        }
        self.adam.step(&mut self.params, &self.grad, lr);
        Ok(loss)
    }

    fn predict(
        &mut self,
        toks: &[T],
        nseq: usize,
        t: usize,
        out: &mut [T],
    ) -> Result<(), TrainError> {
        Ok(self
            .runner
            .predict(&self.model, &self.params, toks, nseq, t, out)?)
    }

    fn state(&self) -> Result<TrainState<T>, TrainError> {
        Ok(TrainState {
            params: self.params.clone(),
            exp_avg: self.adam.m.clone(),
            exp_avg_sq: self.adam.v.clone(),
            steps_done: self.adam.steps,
        })
    }

    fn restore(&mut self, s: TrainState<T>) -> Result<(), TrainError> {
        s.check_fits(self.params.len())?;
        self.params = s.params;
        self.adam.m = s.exp_avg;
        self.adam.v = s.exp_avg_sq;
        self.adam.steps = s.steps_done;
        Ok(())
    }
}

/// A training run in memory: config, schedule and an engine; step `t` uses `lr(t)`.
pub struct Trainer<T> {
    pub config: TrainConfig,
    pub model: RegressionTransformer,
    pub schedule: LrSchedule,
    pub data: SequenceDistribution,
    engine: Box<dyn StepEngine<T>>,
    steps_done: u64,
}

impl<T: Float> Trainer<T> {
    /// A fresh run on the CPU: validated config, initialised weights, zero Adam state.
    pub fn new(config: TrainConfig) -> Result<Self, TrainError> {
        Self::with_engine(config, |cfg, model, data| {
            Box::new(CpuEngine::new(cfg, model, data))
        })
    }

    /// A fresh run on an engine built by `make` from the validated config, model and data.
    pub fn with_engine(
        config: TrainConfig,
        make: impl FnOnce(
            &TrainConfig,
            RegressionTransformer,
            SequenceDistribution,
        ) -> Box<dyn StepEngine<T>>,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        let model = RegressionTransformer::new(config.model_config())?;
        let data = config.pretrain_distribution();
        let engine = make(&config, model.clone(), data.clone());
        Ok(Trainer {
            schedule: config.lr_schedule(),
            config,
            model,
            data,
            engine,
            steps_done: 0,
        })
    }

    /// Updates taken so far (= the index of the next step).
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    /// Runs step `t = steps_done()` and returns its batch loss (before the update).
    pub fn step(&mut self) -> Result<f64, TrainError> {
        let t = self.steps_done;
        let loss = self.engine.step(t, self.schedule.lr(t))?;
        self.steps_done += 1;
        Ok(loss)
    }

    /// Runs steps `steps_done() .. end` and returns their batch losses.
    pub fn run_to(&mut self, end: u64) -> Result<Vec<f64>, TrainError> {
        let t0 = self.steps_done;
        let lrs: Vec<f64> = (t0..end).map(|t| self.schedule.lr(t)).collect();
        let losses = self.engine.run(t0, &lrs)?;
        self.steps_done = end.max(t0);
        Ok(losses)
    }

    /// The evaluator of this run (fixed batches from the eval seed).
    pub fn evaluator(&self) -> Evaluator<T> {
        Evaluator::new(
            &self.data,
            self.config.eval_batch_size,
            self.config.seeds().eval,
        )
    }

    /// Runs the evaluator on the current weights.
    pub fn evaluate(&mut self, ev: &Evaluator<T>, step: u64) -> Result<Vec<f64>, TrainError> {
        ev.evaluate(self.engine.as_mut(), step)
    }

    pub fn state(&self) -> Result<TrainState<T>, TrainError> {
        self.engine.state()
    }

    pub fn restore(&mut self, s: TrainState<T>) -> Result<(), TrainError> {
        let steps = s.steps_done;
        self.engine.restore(s)?;
        self.steps_done = steps;
        Ok(())
    }

    /// Global L2 norm of the weights.
    pub fn weight_norm(&self) -> Result<f64, TrainError> {
        Ok(self
            .state()?
            .params
            .iter()
            .map(|v| v.to_f64() * v.to_f64())
            .sum::<f64>()
            .sqrt())
    }
}
