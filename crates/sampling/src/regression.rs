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
            runner: ChunkedRunner::new(ChunkedRunner::<T>::DEFAULT_CHUNK).recording_relu(),
        }
    }

    fn tensors(&self) -> Vec<(String, usize)> {
        self.model.layout.named_sizes()
    }
}

impl<T: Float> PotentialWorker<T> for FixedBatchWorker<'_, T> {
    fn loss_and_grad(&mut self, w: &[T], _key: BatchKey, grad: &mut [T]) -> f64 {
        let b = self.batch;
        self.runner
            .loss_and_grad(b.model, w, &b.toks, &b.ys, b.nseq, b.t, grad)
            .unwrap_or(f64::NAN)
    }

    fn parts(&self) -> &[f64] {
        self.runner.token_losses()
    }

    fn freeze_activation_pattern(&mut self) {
        self.runner.freeze_relu();
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
    /// Gradient minibatches are fresh sequences (indices over all 2^32 of the generator's)
    /// rather than picks from the n of the data set (the reference's `grad_batch_origin`).
    pub infinite: bool,
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
            infinite: false,
            _t: std::marker::PhantomData,
        }
    }

    /// With `on`, gradient minibatches are fresh sequences ("infinite-dataset").
    pub fn with_infinite_grad_batches(mut self, on: bool) -> Self {
        self.infinite = on;
        self
    }
}

pub struct DatasetWorker<'a, T> {
    data: &'a Dataset<'a, T>,
    runner: ChunkedRunner<T>,
    buf: Batch<T>,
    pred: Vec<T>,
    /// Per-token mean squared errors of the last evaluation.
    parts: Vec<f64>,
}

impl<T: Float> DatasetWorker<'_, T> {
    /// Fills `buf` with `m` dataset sequences, sequence `j` being dataset index `index(j)`.
    fn fill(&mut self, m: usize, index: impl Fn(usize) -> u32 + Sync) {
        let d = self.data;
        d.dist
            .sample_indexed_into(&mut self.buf, m, index, d.seed, tag::LLC_DATASET, 0);
    }

    /// The minibatch of `key`: `batch` indices drawn uniformly with replacement.
    fn fill_minibatch(&mut self, key: BatchKey) {
        let d = self.data;
        let t = if key.eval {
            tag::SGLD_EVAL_BATCH
        } else {
            tag::SGLD_BATCH
        };
        let pick = Stream::new(d.seed, t, key.step as u32, key.chain);
        let n = if d.infinite && !key.eval {
            1 << 32
        } else {
            d.n as u64
        };
        self.fill(d.batch, |j| pick.below(j as u32, n) as u32);
    }

    /// Squared errors of the `m` sequences in `buf`, added per token to `sums`; false if the
    /// forward pass failed.
    fn add_squared_errors(&mut self, w: &[T], m: usize, sums: &mut [f64]) -> bool {
        let d = self.data;
        let k = d.dist.k;
        self.pred.resize(m * k, T::ZERO);
        if self
            .runner
            .predict(d.model, w, &self.buf.toks, m, 2 * k, &mut self.pred)
            .is_err()
        {
            return false;
        }
        for (j, (p, y)) in self.pred.iter().zip(&self.buf.ys).enumerate() {
            sums[j % k] += (p.to_f64() - y).powi(2);
        }
        true
    }
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
            pred: Vec::new(),
            parts: Vec::new(),
        }
    }

    fn tensors(&self) -> Vec<(String, usize)> {
        self.model.layout.named_sizes()
    }

    /// `L_n(w)`: the mean squared error over all `n` sequences, and per token position.
    fn full_loss(&self, w: &[T]) -> (f64, Vec<f64>) {
        let mut wk = self.worker();
        let k = self.dist.k;
        let chunk = 1024.min(self.n);
        let mut sums = vec![0.0; k];
        let mut start = 0;
        while start < self.n {
            let m = chunk.min(self.n - start);
            wk.fill(m, |i| (start + i) as u32);
            if !wk.add_squared_errors(w, m, &mut sums) {
                return (f64::NAN, vec![f64::NAN; k]);
            }
            start += m;
        }
        let parts: Vec<f64> = sums.iter().map(|s| s / self.n as f64).collect();
        (parts.iter().sum::<f64>() / k as f64, parts)
    }
}

impl<T: Float> PotentialWorker<T> for DatasetWorker<'_, T> {
    fn loss_and_grad(&mut self, w: &[T], key: BatchKey, grad: &mut [T]) -> f64 {
        let d = self.data;
        self.fill_minibatch(key);
        let k = d.dist.k;
        let loss = self
            .runner
            .loss_and_grad(
                d.model,
                w,
                &self.buf.toks,
                &self.buf.ys_t,
                d.batch,
                2 * k,
                grad,
            )
            .unwrap_or(f64::NAN);
        self.parts.clear();
        self.parts.extend_from_slice(self.runner.token_losses());
        loss
    }

    fn loss(&mut self, w: &[T], key: BatchKey) -> f64 {
        let d = self.data;
        self.fill_minibatch(key);
        let mut sums = vec![0.0; d.dist.k];
        if !self.add_squared_errors(w, d.batch, &mut sums) {
            return f64::NAN;
        }
        self.parts = sums.iter().map(|s| s / d.batch as f64).collect();
        self.parts.iter().sum::<f64>() / d.dist.k as f64
    }

    fn parts(&self) -> &[f64] {
        &self.parts
    }
}

/// Fixed sequences observed at every draw (for susceptibilities and the BIF): the squared
/// error of each `(sequence, example)`, `[nseq, k]` row-major.
pub struct Observed<'m, T> {
    pub model: &'m RegressionTransformer,
    /// `toks[nseq, 2k, D+1]` and the targets `ys[nseq, k]`.
    pub toks: Vec<T>,
    pub ys: Vec<f64>,
    pub nseq: usize,
    pub k: usize,
}

pub struct ObservedWorker<'a, T> {
    set: &'a Observed<'a, T>,
    runner: ChunkedRunner<T>,
    pred: Vec<T>,
}

impl<T: Float> crate::observed::Observer<T> for Observed<'_, T> {
    type Worker<'a>
        = ObservedWorker<'a, T>
    where
        Self: 'a;

    fn len(&self) -> usize {
        self.nseq * self.k
    }

    fn worker(&self) -> ObservedWorker<'_, T> {
        ObservedWorker {
            set: self,
            runner: ChunkedRunner::new(ChunkedRunner::<T>::DEFAULT_CHUNK),
            pred: vec![T::ZERO; self.nseq * self.k],
        }
    }
}

impl<T: Float> crate::observed::ObserverWorker<T> for ObservedWorker<'_, T> {
    fn observe(&mut self, w: &[T], out: &mut [f64]) -> bool {
        let s = self.set;
        if self
            .runner
            .predict(s.model, w, &s.toks, s.nseq, 2 * s.k, &mut self.pred)
            .is_err()
        {
            return false;
        }
        for ((o, p), y) in out.iter_mut().zip(&self.pred).zip(&s.ys) {
            *o = (p.to_f64() - y).powi(2);
        }
        true
    }
}
