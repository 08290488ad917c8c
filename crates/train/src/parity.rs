//! Multitask sparse parity (reference `icl.other.parity`, after Michaud et al. 2023): the data,
//! the config with the reference's fields and defaults, and a trainer that steps many runs of
//! the same shapes together (each run's numbers are those of the run trained alone).
//!
//! Data as the reference defines it, on our own random streams: `num_tasks` tasks, each a
//! random `num_task_bits`-subset of the `num_features` bits; task `t` (0-based) drawn with
//! probability proportional to `(t + 1)^-alpha`; input = one-hot control bits of the task, then
//! `num_features` uniform random bits; label = parity of the task's bits.

use serde::{Deserialize, Serialize};
use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag, unit};

use crate::config::{ConfigError, invalid};

mod trainer;
pub use trainer::{ParityEval, ParityRun, ParityRuns};

/// The reference's `train(config)` fields and defaults (`sweeps/parity/parity.yaml` keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParityTrainConfig {
    #[serde(default = "d_eval_batch_size")]
    pub eval_batch_size: usize,
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    #[serde(default = "d_num_steps")]
    pub num_steps: u64,
    #[serde(default = "d_num_tasks")]
    pub num_tasks: usize,
    #[serde(default = "d_num_features")]
    pub num_features: usize,
    #[serde(default = "d_num_task_bits")]
    pub num_task_bits: usize,
    #[serde(default = "d_hidden_dim")]
    pub hidden_dim: usize,
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Default `min(2500, num_steps)`.
    #[serde(default)]
    pub num_checkpoints: Option<usize>,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default)]
    pub seed: u64,
    /// Essential dynamics: PCA components and the smoothing's first and last sigma.
    #[serde(default = "d_num_components")]
    pub num_components: usize,
    #[serde(default = "d_init_smoothing")]
    pub init_smoothing: f64,
    #[serde(default = "d_final_smoothing")]
    pub final_smoothing: f64,
    /// Read and kept for the sweep files; stagewise always writes its tables. (In the
    /// reference, `log_wandb: false` also skips every evaluation and checkpoint.)
    #[serde(default = "d_true")]
    pub log_wandb: bool,
}

fn d_eval_batch_size() -> usize {
    256
}
fn d_batch_size() -> usize {
    1024
}
fn d_num_steps() -> u64 {
    1000
}
fn d_num_tasks() -> usize {
    8
}
fn d_num_features() -> usize {
    16
}
fn d_num_task_bits() -> usize {
    3
}
fn d_hidden_dim() -> usize {
    50
}
fn d_alpha() -> f64 {
    0.5
}
fn d_lr() -> f64 {
    0.003
}
fn d_num_components() -> usize {
    5
}
fn d_init_smoothing() -> f64 {
    0.1
}
fn d_final_smoothing() -> f64 {
    40.0
}
fn d_true() -> bool {
    true
}

impl Default for ParityTrainConfig {
    /// The reference's `train()` defaults.
    fn default() -> Self {
        ParityTrainConfig {
            eval_batch_size: d_eval_batch_size(),
            batch_size: d_batch_size(),
            num_steps: d_num_steps(),
            num_tasks: d_num_tasks(),
            num_features: d_num_features(),
            num_task_bits: d_num_task_bits(),
            hidden_dim: d_hidden_dim(),
            alpha: d_alpha(),
            num_checkpoints: None,
            lr: d_lr(),
            seed: 0,
            num_components: d_num_components(),
            init_smoothing: d_init_smoothing(),
            final_smoothing: d_final_smoothing(),
            log_wandb: true,
        }
    }
}

impl ParityTrainConfig {
    pub fn num_checkpoints(&self) -> usize {
        self.num_checkpoints
            .unwrap_or(2500.min(self.num_steps as usize))
    }

    /// The steps evaluated and checkpointed: `np.linspace(0, num_steps, num_checkpoints)
    /// .astype(int)`, distinct, sorted (the weights after that step's update).
    pub fn checkpoint_steps(&self) -> Vec<u64> {
        crate::steps::int_linspace(0.0, self.num_steps as f64, self.num_checkpoints())
    }

    /// The MLP's shapes.
    pub fn model(&self) -> stagewise_models::ParityConfig {
        stagewise_models::ParityConfig {
            num_tasks: self.num_tasks,
            num_features: self.num_features,
            hidden_dim: self.hidden_dim,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("eval_batch_size", self.eval_batch_size),
            ("batch_size", self.batch_size),
            ("num_tasks", self.num_tasks),
            ("num_features", self.num_features),
            ("num_task_bits", self.num_task_bits),
            ("hidden_dim", self.hidden_dim),
            ("num_checkpoints", self.num_checkpoints()),
            ("num_components", self.num_components),
        ] {
            if v == 0 {
                return Err(invalid(field, 0, "expected a positive integer"));
            }
        }
        if self.num_task_bits > self.num_features {
            return Err(invalid(
                "num_task_bits",
                self.num_task_bits,
                format!(
                    "at most num_features = {} (a task is a subset of the feature bits)",
                    self.num_features
                ),
            ));
        }
        if self.num_steps == 0 || self.num_steps > u32::MAX as u64 {
            return Err(invalid(
                "num_steps",
                self.num_steps,
                "expected 1..=4294967295",
            ));
        }
        for (field, v) in [
            ("alpha", self.alpha),
            ("init_smoothing", self.init_smoothing),
            ("final_smoothing", self.final_smoothing),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(field, v, "expected a finite number >= 0"));
            }
        }
        if !self.lr.is_finite() || self.lr <= 0.0 {
            return Err(invalid("lr", self.lr, "expected a finite number > 0"));
        }
        Ok(())
    }
}

/// The tasks and their frequencies of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseParity {
    pub num_features: usize,
    /// Each task's bits (indices into the feature bits), in draw order.
    pub tasks: Vec<Vec<usize>>,
    /// `p_t` proportional to `(t + 1)^-alpha`, summing to 1.
    pub frequencies: Vec<f64>,
    /// Cumulative frequencies, for drawing a task from a uniform number.
    cumulative: Vec<f64>,
    seed: u64,
}

impl SparseParity {
    /// Tasks from `(seed, PARITY_TASKS, t)`: the first `k` of a uniform random permutation of
    /// the `n` bits (Fisher-Yates), as `torch.randperm(n)[:k]`.
    pub fn new(n: usize, k: usize, num_tasks: usize, alpha: f64, seed: u64) -> Self {
        let tasks = (0..num_tasks)
            .map(|t| {
                let st = Stream::new(seed, tag::PARITY_TASKS, t as u32, 0);
                let mut perm: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    let j = st.below((n - 1 - i) as u32, i as u64 + 1) as usize;
                    perm.swap(i, j);
                }
                perm.truncate(k);
                perm
            })
            .collect();
        let weights: Vec<f64> = (1..=num_tasks).map(|i| (i as f64).powf(-alpha)).collect();
        let total: f64 = weights.iter().sum();
        let frequencies: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let cumulative = frequencies
            .iter()
            .scan(0.0, |c, p| {
                *c += p;
                Some(*c)
            })
            .collect();
        SparseParity {
            num_features: n,
            tasks,
            frequencies,
            cumulative,
            seed,
        }
    }

    pub fn from_config(c: &ParityTrainConfig) -> Self {
        Self::new(
            c.num_features,
            c.num_task_bits,
            c.num_tasks,
            c.alpha,
            c.seed,
        )
    }

    pub fn num_tasks(&self) -> usize {
        self.tasks.len()
    }

    pub fn input_dim(&self) -> usize {
        self.num_tasks() + self.num_features
    }

    /// Parity of task `t`'s bits in `bits` (0/1 values).
    pub fn label(&self, t: usize, bits: &[u8]) -> u8 {
        self.tasks[t].iter().map(|&i| bits[i]).sum::<u8>() % 2
    }

    /// Writes sample `j` of stream `(tag, a)` into `x` (`input_dim` values) and returns its task
    /// and label. Word 0 of the sample's stream picks the task (unless `task` is given), the
    /// following words give the bits, 32 per word.
    pub fn sample_into<T: Float>(
        &self,
        x: &mut [T],
        task: Option<usize>,
        stream: (u32, u32),
        j: u32,
    ) -> (usize, u8) {
        let st = Stream::new(self.seed, stream.0, stream.1, j);
        // Words 0 (the task) and 1.. (the bits, 32 per word), four per Philox block.
        let nwords = 1 + self.num_features.div_ceil(32);
        let mut words = [0u32; 8];
        let mut heap = Vec::new();
        let words: &mut [u32] = if nwords <= 8 {
            &mut words[..nwords]
        } else {
            heap.resize(nwords, 0);
            &mut heap
        };
        for (b, chunk) in words.chunks_mut(4).enumerate() {
            let blk = st.block(b as u32);
            chunk.copy_from_slice(&blk[..chunk.len()]);
        }
        let t = task.unwrap_or_else(|| {
            let u = unit(words[0]);
            self.cumulative
                .iter()
                .position(|c| u < *c)
                .unwrap_or(self.num_tasks() - 1)
        });
        let nt = self.num_tasks();
        x[..nt].fill(T::ZERO);
        x[t] = T::ONE;
        let bit = |i: usize| ((words[1 + i / 32] >> (i % 32)) & 1) as u8;
        for i in 0..self.num_features {
            x[nt + i] = if bit(i) == 1 { T::ONE } else { T::ZERO };
        }
        let label = self.tasks[t].iter().map(|&i| bit(i)).sum::<u8>() % 2;
        (t, label)
    }

    /// `count` samples of stream `(tag, a)` (task drawn, or fixed): inputs `[count, input_dim]`
    /// and labels.
    pub fn batch<T: Float>(
        &self,
        count: usize,
        task: Option<usize>,
        stream: (u32, u32),
    ) -> (Vec<T>, Vec<u8>) {
        let d = self.input_dim();
        let mut x = vec![T::ZERO; count * d];
        let labels = (0..count)
            .map(|j| {
                self.sample_into(&mut x[j * d..(j + 1) * d], task, stream, j as u32)
                    .1
            })
            .collect();
        (x, labels)
    }

    /// The training batch of `step`.
    pub fn train_batch<T: Float>(&self, count: usize, step: u64) -> (Vec<T>, Vec<u8>) {
        self.batch(count, None, (tag::PARITY_TRAIN, step as u32))
    }

    /// The fixed evaluation set of task `t` (`count` samples of that task).
    pub fn eval_set<T: Float>(&self, count: usize, t: usize) -> (Vec<T>, Vec<u8>) {
        self.batch(count, Some(t), (tag::PARITY_EVAL, t as u32))
    }
}
