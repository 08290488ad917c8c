//! The training loop's state machine: step `t` draws its batch from `(sampling seed, t)`,
//! computes the MSE loss and gradient, and takes one Adam step at `lr(t)`. Everything a step
//! depends on is in `TrainState`, so a restored state continues bit for bit.

use stagewise_engine::Float;
use stagewise_engine::rng::tag;
use stagewise_models::batch::ChunkedRunner;
use stagewise_models::{ModelError, RegressionTransformer};

use crate::adam::Adam;
use crate::config::{ConfigError, NumTasks, TrainConfig};
use crate::data::{Batch, SequenceDistribution, TaskDistribution};
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

pub struct Trainer<T> {
    pub config: TrainConfig,
    pub model: RegressionTransformer,
    pub params: Vec<T>,
    pub adam: Adam<T>,
    pub schedule: LrSchedule,
    pub data: SequenceDistribution,
    runner: ChunkedRunner<T>,
    grad: Vec<T>,
    batch: Batch<T>,
    sampling_seed: u64,
}

impl<T: Float> Trainer<T> {
    /// A fresh run: validated config, initialised weights, zero Adam state.
    pub fn new(config: TrainConfig) -> Result<Self, TrainError> {
        config.validate()?;
        let model = RegressionTransformer::new(config.model_config())?;
        let seeds = config.seeds();
        let t = &config.task_config;
        let tasks = match t.num_tasks {
            NumTasks::Infinite => TaskDistribution::Gaussian { d: t.task_size },
            NumTasks::Finite(m) => {
                TaskDistribution::discrete(t.task_size, m as usize, seeds.pretrain)
            }
        };
        let data = SequenceDistribution {
            tasks,
            k: t.max_examples,
            noise_variance: t.noise_variance,
        };
        let params = model.init_params(seeds.model);
        let o = &config.optimizer_config;
        let adam = Adam::new(params.len(), o.betas[0], o.betas[1], 1e-8, o.weight_decay);
        Ok(Trainer {
            schedule: config.lr_schedule(),
            grad: vec![T::ZERO; params.len()],
            runner: ChunkedRunner::new(ChunkedRunner::<T>::DEFAULT_CHUNK),
            batch: Batch::default(),
            sampling_seed: seeds.sampling,
            config,
            model,
            params,
            adam,
            data,
        })
    }

    /// Updates taken so far (= the index of the next step).
    pub fn steps_done(&self) -> u64 {
        self.adam.steps
    }

    /// Runs step `t = steps_done()` and returns its batch loss (before the update).
    pub fn step(&mut self) -> Result<f64, TrainError> {
        let t = self.adam.steps;
        let (b, k) = (self.config.batch_size, self.data.k);
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
        self.adam
            .step(&mut self.params, &self.grad, self.schedule.lr(t));
        Ok(loss)
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
        Ok(ev.evaluate(&self.model, &self.params, &mut self.runner, step)?)
    }

    pub fn state(&self) -> TrainState<T> {
        TrainState {
            params: self.params.clone(),
            exp_avg: self.adam.m.clone(),
            exp_avg_sq: self.adam.v.clone(),
            steps_done: self.adam.steps,
        }
    }

    pub fn restore(&mut self, s: TrainState<T>) -> Result<(), TrainError> {
        let n = self.params.len();
        for (what, len) in [
            ("params", s.params.len()),
            ("exp_avg", s.exp_avg.len()),
            ("exp_avg_sq", s.exp_avg_sq.len()),
        ] {
            if len != n {
                return Err(TrainError::State(format!(
                    "{what} has {len} values, the model has {n}"
                )));
            }
        }
        self.params = s.params;
        self.adam.m = s.exp_avg;
        self.adam.v = s.exp_avg_sq;
        self.adam.steps = s.steps_done;
        Ok(())
    }

    /// Global L2 norm of the weights.
    pub fn weight_norm(&self) -> f64 {
        self.params
            .iter()
            .map(|v| v.to_f64() * v.to_f64())
            .sum::<f64>()
            .sqrt()
    }
}
