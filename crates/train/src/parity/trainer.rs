//! Training sparse parity runs: one run alone, or many runs of the same shapes stepped
//! together, one run per rayon task (a run's numbers do not depend on which runs it shares a
//! step with, or on the thread count).

use rayon::prelude::*;
use stagewise_engine::Float;
use stagewise_models::parity::{ParityMlp, ParityWorkspace};

use super::{ParityTrainConfig, SparseParity};
use crate::adam::Adam;
use crate::config::{ConfigError, invalid};
use crate::trainer::{TrainError, TrainState};

/// One run: its config, data, weights and Adam state, and its fixed evaluation sets.
pub struct ParityRun<T> {
    pub config: ParityTrainConfig,
    pub data: SparseParity,
    pub params: Vec<T>,
    pub adam: Adam<T>,
    /// Steps taken (the next step's index).
    pub step: u64,
    /// Per task: `eval_batch_size` samples of that task.
    eval_sets: Vec<(Vec<T>, Vec<u8>)>,
    ws: ParityWorkspace<T>,
    grad: Vec<T>,
}

/// Evaluation of one run on its per-task sets, with the reference's metric names.
#[derive(Clone, Debug, PartialEq)]
pub struct ParityEval {
    /// `sum_t p_t Loss_t` and `sum_t p_t Accuracy_t`.
    pub loss: f64,
    pub accuracy: f64,
    pub task_loss: Vec<f64>,
    pub task_accuracy: Vec<f64>,
}

impl ParityEval {
    /// `Loss`, `Accuracy`, then `Loss/t` and `Accuracy/t` per task (the reference's W&B keys).
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut m = vec![
            ("Loss".to_string(), self.loss),
            ("Accuracy".to_string(), self.accuracy),
        ];
        for (t, (l, a)) in self.task_loss.iter().zip(&self.task_accuracy).enumerate() {
            m.push((format!("Loss/{t}"), *l));
            m.push((format!("Accuracy/{t}"), *a));
        }
        m
    }
}

impl<T: Float> ParityRun<T> {
    /// A fresh run: weights from `(seed, MODEL_INIT)`, Adam as `torch.optim.Adam(lr)`.
    pub fn new(config: &ParityTrainConfig, model: &ParityMlp) -> Result<Self, ConfigError> {
        config.validate()?;
        if config.model() != model.config {
            return Err(invalid(
                "num_tasks/num_features/hidden_dim",
                format!("{:?}", config.model()),
                format!("the shapes of the runs trained with it: {:?}", model.config),
            ));
        }
        let data = SparseParity::from_config(config);
        let eval_sets = (0..config.num_tasks)
            .map(|t| data.eval_set(config.eval_batch_size, t))
            .collect();
        let n = model.num_params();
        Ok(ParityRun {
            config: config.clone(),
            data,
            params: model.init_params(config.seed),
            adam: Adam::new(n, 0.9, 0.999, 1e-8, 0.0),
            step: 0,
            eval_sets,
            ws: ParityWorkspace::default(),
            grad: vec![T::ZERO; n],
        })
    }

    /// Weights and Adam moments (the state a checkpoint keeps).
    pub fn state(&self) -> TrainState<T> {
        TrainState {
            params: self.params.clone(),
            exp_avg: self.adam.m.clone(),
            exp_avg_sq: self.adam.v.clone(),
            steps_done: self.adam.steps,
        }
    }

    /// Continues from a saved state: the next step is `state.steps_done` (the data of a step
    /// depends only on its index, so nothing else is needed).
    pub fn restore(&mut self, state: TrainState<T>) -> Result<(), TrainError> {
        state.check_fits(self.params.len())?;
        self.params = state.params;
        self.adam.m = state.exp_avg;
        self.adam.v = state.exp_avg_sq;
        self.adam.steps = state.steps_done;
        self.step = state.steps_done;
        Ok(())
    }

    /// One update on the batch of step `self.step`; returns the batch loss.
    pub fn train_step(&mut self, model: &ParityMlp) -> f64 {
        let (x, y) = self
            .data
            .train_batch::<T>(self.config.batch_size, self.step);
        let loss = model.loss(&self.params, &x, &y, &mut self.ws, Some(&mut self.grad));
        self.adam.step(&mut self.params, &self.grad, self.config.lr);
        self.step += 1;
        loss
    }

    /// Loss and accuracy per task at parameters `p` (default: the run's own).
    pub fn evaluate(&mut self, model: &ParityMlp, p: Option<&[T]>) -> ParityEval {
        let p = p.unwrap_or(&self.params).to_vec();
        let (mut task_loss, mut task_accuracy) = (vec![], vec![]);
        for (x, y) in &self.eval_sets {
            task_loss.push(model.loss(&p, x, y, &mut self.ws, None));
            let right = self
                .ws
                .predictions
                .iter()
                .zip(y)
                .filter(|(a, b)| a == b)
                .count();
            task_accuracy.push(right as f64 / y.len().max(1) as f64);
        }
        let f = &self.data.frequencies;
        let dot = |v: &[f64]| v.iter().zip(f).map(|(a, b)| a * b).sum::<f64>();
        ParityEval {
            loss: dot(&task_loss),
            accuracy: dot(&task_accuracy),
            task_loss,
            task_accuracy,
        }
    }

    /// Per-sample losses on the concatenated evaluation sets (task 0's samples first): the
    /// features of essential dynamics.
    pub fn sample_losses(&mut self, model: &ParityMlp, p: &[T]) -> Vec<f64> {
        let mut out = Vec::new();
        for (x, y) in &self.eval_sets {
            model.loss(p, x, y, &mut self.ws, None);
            out.extend_from_slice(&self.ws.losses);
        }
        out
    }
}

/// Runs of the same shapes and batch size, stepped together.
pub struct ParityRuns<T> {
    pub model: ParityMlp,
    pub runs: Vec<ParityRun<T>>,
}

impl<T: Float> ParityRuns<T> {
    /// One run per config; all must share `num_tasks`, `num_features` and `hidden_dim`.
    pub fn new(configs: &[ParityTrainConfig]) -> Result<Self, ConfigError> {
        let first = configs
            .first()
            .ok_or_else(|| invalid("runs", 0, "at least one config"))?;
        first.validate()?;
        let model = ParityMlp::new(first.model())
            .map_err(|e| invalid("model", format!("{:?}", first.model()), e.to_string()))?;
        let runs = configs
            .iter()
            .map(|c| ParityRun::new(c, &model))
            .collect::<Result<_, _>>()?;
        Ok(ParityRuns { model, runs })
    }

    /// One update of the runs marked in `active` (in parallel); the batch loss of each (NaN for
    /// a run left out).
    pub fn train_step_where(&mut self, active: &[bool]) -> Vec<f64> {
        assert_eq!(active.len(), self.runs.len(), "one flag per run");
        let model = &self.model;
        self.runs
            .par_iter_mut()
            .zip(active)
            .map(|(r, a)| if *a { r.train_step(model) } else { f64::NAN })
            .collect()
    }

    /// One update of every run that has steps left (step <= its num_steps: the reference
    /// trains steps 0..=num_steps); returns each run's batch loss (NaN for a finished run).
    pub fn train_step(&mut self) -> Vec<f64> {
        let model = &self.model;
        self.runs
            .par_iter_mut()
            .map(|r| {
                if r.step > r.config.num_steps {
                    f64::NAN
                } else {
                    r.train_step(model)
                }
            })
            .collect()
    }
}
