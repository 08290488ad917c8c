//! The in-context regression transformer as a [`Potential`]: MSE of `y_hat` on minibatches.

use stagewise_engine::Float;
use stagewise_models::RegressionTransformer;
use stagewise_models::batch::ChunkedRunner;

use crate::potential::{BatchKey, Potential, PotentialWorker};

/// The model on one fixed batch of sequences (every key gives the same minibatch).
pub struct FixedBatch<'m, T> {
    pub model: &'m RegressionTransformer,
    /// `toks[nseq, t, D+1]` and `ys[nseq, t/2]`.
    pub toks: Vec<T>,
    pub ys: Vec<T>,
    pub nseq: usize,
    pub t: usize,
}

pub struct FixedBatchWorker<'a, T> {
    batch: &'a FixedBatch<'a, T>,
    runner: ChunkedRunner<T>,
}

impl<'m, T: Float> Potential<T> for FixedBatch<'m, T> {
    type Worker<'a>
        = FixedBatchWorker<'a, T>
    where
        Self: 'a;

    fn dim(&self) -> usize {
        self.model.num_params()
    }

    fn worker(&self) -> FixedBatchWorker<'_, T> {
        FixedBatchWorker {
            batch: self,
            runner: ChunkedRunner::new(ChunkedRunner::<T>::DEFAULT_CHUNK),
        }
    }

    fn tensors(&self) -> Vec<(String, usize)> {
        self.model
            .layout
            .params
            .iter()
            .map(|p| (p.name.clone(), p.len()))
            .collect()
    }
}

impl<T: Float> PotentialWorker<T> for FixedBatchWorker<'_, T> {
    fn loss_and_grad(&mut self, w: &[T], _key: BatchKey, grad: &mut [T]) -> f64 {
        let b = self.batch;
        self.runner
            .loss_and_grad(b.model, w, &b.toks, &b.ys, b.nseq, b.t, grad)
            .unwrap_or(f64::NAN)
    }
}
