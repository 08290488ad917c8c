//! In-context linear regression data (reference 1.1-1.5): tasks w, inputs x ~ N(0, I_D),
//! targets y = w.x + N(0, sigma^2), encoded as tokens `[0, x]`, `[y, 0...]`.
//!
//! Sequence `i` of a batch keyed `(seed, tag, a)` draws from its own stream
//! `Stream(seed, tag, a, i)`: normals `[0, D)` for a Gaussian task, `[D, D + K D)` for the inputs
//! and the next K for the noise; a discrete task's index is element `TASK_INDEX_ELEMENT`.

use rayon::prelude::*;
use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};

const TASK_INDEX_ELEMENT: u32 = u32::MAX - 3;

/// Where the task vectors come from.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskDistribution {
    /// Fresh `N(0, I_D)` tasks (M = infinity).
    Gaussian { d: usize },
    /// M tasks drawn once (`tasks[M, D]`), sampled uniformly with replacement.
    Discrete { d: usize, tasks: Vec<f64> },
    /// One fixed task.
    Singleton { task: Vec<f64> },
}

impl TaskDistribution {
    /// `M` tasks `~ N(0, I_D)` drawn from stream `(seed, TASK_TABLE)`.
    pub fn discrete(d: usize, m: usize, seed: u64) -> Self {
        let mut tasks = vec![0.0; m * d];
        Stream::new(seed, tag::TASK_TABLE, 0, 0).fill_normal(&mut tasks);
        TaskDistribution::Discrete { d, tasks }
    }

    pub fn task_size(&self) -> usize {
        match self {
            TaskDistribution::Gaussian { d } | TaskDistribution::Discrete { d, .. } => *d,
            TaskDistribution::Singleton { task } => task.len(),
        }
    }

    /// The task table of a discrete distribution (the dMMSE prior).
    pub fn tasks(&self) -> Option<&[f64]> {
        match self {
            TaskDistribution::Discrete { tasks, .. } => Some(tasks),
            _ => None,
        }
    }
}

/// A batch in float64 plus its token encoding in the model's float type.
#[derive(Clone, Debug, Default)]
pub struct Batch<T> {
    pub nseq: usize,
    pub k: usize,
    /// `ws[nseq, D]`, `xs[nseq, K, D]`, `ys[nseq, K]` in float64.
    pub ws: Vec<f64>,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    /// `toks[nseq, 2K, D+1]` and `ys` in the model's float type.
    pub toks: Vec<T>,
    pub ys_t: Vec<T>,
}

/// The sequence distribution: tasks, K examples each, noise variance sigma^2.
#[derive(Clone, Debug)]
pub struct SequenceDistribution {
    pub tasks: TaskDistribution,
    pub k: usize,
    pub noise_variance: f64,
}

impl SequenceDistribution {
    /// Fills `batch` with `nseq` sequences keyed by `(seed, tag, a)`.
    pub fn sample_into<T: Float>(
        &self,
        batch: &mut Batch<T>,
        nseq: usize,
        seed: u64,
        tag: u32,
        a: u32,
    ) {
        self.sample_indexed_into(batch, nseq, |i| i as u32, seed, tag, a);
    }

    /// Fills `batch` with the sequences `index(0..nseq)` of the set keyed by `(seed, tag, a)`:
    /// sequence `i` of a fixed dataset is the same wherever it appears in a batch.
    pub fn sample_indexed_into<T: Float>(
        &self,
        batch: &mut Batch<T>,
        nseq: usize,
        index: impl Fn(usize) -> u32 + Sync,
        seed: u64,
        tag: u32,
        a: u32,
    ) {
        let (d, k) = (self.tasks.task_size(), self.k);
        let std = self.noise_variance.sqrt();
        batch.nseq = nseq;
        batch.k = k;
        batch.ws.resize(nseq * d, 0.0);
        batch.xs.resize(nseq * k * d, 0.0);
        batch.ys.resize(nseq * k, 0.0);
        batch.toks.resize(nseq * 2 * k * (d + 1), T::ZERO);
        batch.ys_t.resize(nseq * k, T::ZERO);
        let per_seq = d + k * d + k;
        batch
            .ws
            .par_chunks_mut(d)
            .zip(batch.xs.par_chunks_mut(k * d))
            .zip(batch.ys.par_chunks_mut(k))
            .zip(batch.toks.par_chunks_mut(2 * k * (d + 1)))
            .zip(batch.ys_t.par_chunks_mut(k))
            .enumerate()
            .for_each_init(
                || vec![0.0; per_seq],
                |z, (i, ((((w, x), y), tok), yt))| {
                    let s = Stream::new(seed, tag, a, index(i));
                    s.fill_normal(z);
                    match &self.tasks {
                        TaskDistribution::Gaussian { .. } => w.copy_from_slice(&z[..d]),
                        TaskDistribution::Discrete { tasks, .. } => {
                            let m = (tasks.len() / d) as u64;
                            let idx = s.below(TASK_INDEX_ELEMENT, m) as usize;
                            w.copy_from_slice(&tasks[idx * d..(idx + 1) * d]);
                        }
                        TaskDistribution::Singleton { task } => w.copy_from_slice(task),
                    }
                    x.copy_from_slice(&z[d..d + k * d]);
                    for e in 0..k {
                        let xe = &x[e * d..(e + 1) * d];
                        y[e] = xe.iter().zip(w.iter()).map(|(a, b)| a * b).sum::<f64>()
                            + std * z[d + k * d + e];
                    }
                    encode_sequence(tok, yt, x, y, d, k);
                },
            );
    }
}

/// Tokens of one sequence: `[0, x_e]` at position 2e and `[y_e, 0...]` at 2e+1.
pub fn encode_sequence<T: Float>(
    tok: &mut [T],
    yt: &mut [T],
    x: &[f64],
    y: &[f64],
    d: usize,
    k: usize,
) {
    tok.fill(T::ZERO);
    for e in 0..k {
        let row = 2 * e * (d + 1);
        for j in 0..d {
            tok[row + 1 + j] = T::from_f64(x[e * d + j]);
        }
        tok[row + d + 1] = T::from_f64(y[e]);
        yt[e] = T::from_f64(y[e]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_linear_model_with_the_stated_noise() {
        let dist = SequenceDistribution {
            tasks: TaskDistribution::Gaussian { d: 4 },
            k: 8,
            noise_variance: 0.125,
        };
        let mut b = Batch::<f32>::default();
        dist.sample_into(&mut b, 4096, 5, tag::TRAIN_BATCH, 0);
        let mut resid = Vec::new();
        for i in 0..b.nseq {
            for e in 0..8 {
                let wx: f64 = (0..4)
                    .map(|j| b.ws[i * 4 + j] * b.xs[(i * 8 + e) * 4 + j])
                    .sum();
                resid.push(b.ys[i * 8 + e] - wx);
                // Encoding: x at the even token, y at component 0 of the odd token.
                assert_eq!(b.toks[(i * 16 + 2 * e) * 5], 0.0);
                assert_eq!(
                    b.toks[(i * 16 + 2 * e) * 5 + 1],
                    b.xs[(i * 8 + e) * 4] as f32
                );
                assert_eq!(b.toks[(i * 16 + 2 * e + 1) * 5], b.ys[i * 8 + e] as f32);
            }
        }
        let var = resid.iter().map(|r| r * r).sum::<f64>() / resid.len() as f64;
        assert!((var - 0.125).abs() < 0.005, "noise variance {var}");
        let wvar = b.ws.iter().map(|w| w * w).sum::<f64>() / b.ws.len() as f64;
        assert!((wvar - 1.0).abs() < 0.05, "task variance {wvar}");
    }

    #[test]
    fn discrete_tasks_come_from_the_table_and_batches_are_keyed_by_step() {
        let tasks = TaskDistribution::discrete(3, 5, 9);
        let table = tasks.tasks().unwrap().to_vec();
        let dist = SequenceDistribution {
            tasks,
            k: 4,
            noise_variance: 0.0,
        };
        let mut b = Batch::<f64>::default();
        dist.sample_into(&mut b, 500, 1, tag::TRAIN_BATCH, 7);
        let mut seen = [false; 5];
        for w in b.ws.chunks(3) {
            let m = table
                .chunks(3)
                .position(|t| t == w)
                .expect("task not in table");
            seen[m] = true;
        }
        assert!(seen.iter().all(|s| *s));
        let mut again = Batch::<f64>::default();
        dist.sample_into(&mut again, 500, 1, tag::TRAIN_BATCH, 7);
        assert_eq!(b.ys, again.ys);
        dist.sample_into(&mut again, 500, 1, tag::TRAIN_BATCH, 8);
        assert_ne!(b.ys, again.ys);
    }
}
