//! The in-context regression transformer as a [`Potential`]: MSE of `y_hat` on minibatches.

use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};
use stagewise_models::RegressionTransformer;
use stagewise_models::batch::ChunkedRunner;
use stagewise_train::data::{Batch, SequenceDistribution};

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

/// The model on a fixed dataset of `n` sequences of its pretraining distribution (sequence `i`
/// is a pure function of `(seed, i)`, generated when needed, never stored). A minibatch of
/// `batch` sequences for key `(chain, step)` is drawn uniformly with replacement from `[0, n)`.
pub struct Dataset<'m, T> {
    pub model: &'m RegressionTransformer,
    pub params_len: usize,
    pub dist: SequenceDistribution,
    pub n: usize,
    pub batch: usize,
    pub seed: u64,
    _t: std::marker::PhantomData<T>,
}

impl<'m, T: Float> Dataset<'m, T> {
    pub fn new(
        model: &'m RegressionTransformer,
        dist: SequenceDistribution,
        n: usize,
        batch: usize,
        seed: u64,
    ) -> Self {
        Dataset {
            params_len: model.num_params(),
            model,
            dist,
            n,
            batch,
            seed,
            _t: std::marker::PhantomData,
        }
    }
}

pub struct DatasetWorker<'a, T> {
    data: &'a Dataset<'a, T>,
    runner: ChunkedRunner<T>,
    buf: Batch<T>,
}

impl<'m, T: Float> Potential<T> for Dataset<'m, T> {
    type Worker<'a>
        = DatasetWorker<'a, T>
    where
        Self: 'a;

    fn dim(&self) -> usize {
        self.params_len
    }

    fn worker(&self) -> DatasetWorker<'_, T> {
        DatasetWorker {
            data: self,
            runner: ChunkedRunner::new(ChunkedRunner::<T>::DEFAULT_CHUNK),
            buf: Batch::default(),
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

    /// `L_n(w*)`: the mean squared error over all `n` sequences.
    fn init_loss(&self, w: &[T]) -> f64 {
        let mut wk = self.worker();
        let k = self.dist.k;
        let chunk = 1024.min(self.n);
        let mut pred = vec![T::ZERO; chunk * k];
        let mut total = 0.0;
        let mut start = 0;
        while start < self.n {
            let m = chunk.min(self.n - start);
            self.dist.sample_indexed_into(
                &mut wk.buf,
                m,
                |i| (start + i) as u32,
                self.seed,
                tag::LLC_DATASET,
                0,
            );
            if wk
                .runner
                .predict(self.model, w, &wk.buf.toks, m, 2 * k, &mut pred[..m * k])
                .is_err()
            {
                return f64::NAN;
            }
            total += pred[..m * k]
                .iter()
                .zip(&wk.buf.ys)
                .map(|(p, y)| (p.to_f64() - y).powi(2))
                .sum::<f64>();
            start += m;
        }
        total / (self.n * k) as f64
    }
}

impl<T: Float> PotentialWorker<T> for DatasetWorker<'_, T> {
    fn loss_and_grad(&mut self, w: &[T], key: BatchKey, grad: &mut [T]) -> f64 {
        let d = self.data;
        let pick = Stream::new(d.seed, tag::SGLD_BATCH, key.step as u32, key.chain);
        let n = d.n as u64;
        d.dist.sample_indexed_into(
            &mut self.buf,
            d.batch,
            |j| pick.below(j as u32, n) as u32,
            d.seed,
            tag::LLC_DATASET,
            0,
        );
        let k = d.dist.k;
        self.runner
            .loss_and_grad(
                d.model,
                w,
                &self.buf.toks,
                &self.buf.ys_t,
                d.batch,
                2 * k,
                grad,
            )
            .unwrap_or(f64::NAN)
    }
}
