//! The language model as a [`Potential`]: mean next-token cross-entropy on minibatches of token
//! rows. The data set is the first `n` rows of the run's training rows; a minibatch of `batch`
//! rows for key `(chain, step)` is drawn uniformly with replacement from them (or, with
//! `infinite`, from all training rows), by the same random streams as the regression data set.

use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};
use stagewise_models::language::{LanguageModel, LmRunner, RowSource};

use crate::chains::{ChainConfig, ChainTrace};
use crate::engine::{ChainEngine, EngineError, cpu_sample};
use crate::potential::{BatchKey, Potential, PotentialWorker};
use crate::sgld::Sgld;

pub struct LmDataset<'m> {
    pub model: &'m LanguageModel,
    pub rows: &'m dyn RowSource,
    /// Rows in the data set (the first `n` of `rows`).
    pub n: usize,
    pub batch: usize,
    pub seed: u64,
    /// Gradient minibatches from all of `rows` ("infinite-dataset").
    pub infinite: bool,
}

impl<'m> LmDataset<'m> {
    /// At most `n` rows: fewer when `rows` has fewer.
    pub fn new(
        model: &'m LanguageModel,
        rows: &'m dyn RowSource,
        n: usize,
        batch: usize,
        seed: u64,
    ) -> Self {
        LmDataset {
            model,
            rows,
            n: n.min(rows.len()),
            batch,
            seed,
            infinite: false,
        }
    }
}

pub struct LmDatasetWorker<'a, T> {
    data: &'a LmDataset<'a>,
    runner: LmRunner<T>,
    tokens: Vec<u32>,
    /// Mean loss per position of the last evaluation.
    parts: Vec<f64>,
}

impl<T: Float> LmDatasetWorker<'_, T> {
    fn fill_rows(&mut self, idx: impl Iterator<Item = usize>) -> usize {
        let t = self.data.model.config.n_ctx;
        self.tokens.clear();
        let mut m = 0;
        for i in idx {
            self.tokens.resize((m + 1) * t, 0);
            self.data
                .rows
                .row_into(i, &mut self.tokens[m * t..(m + 1) * t]);
            m += 1;
        }
        m
    }

    /// The rows of minibatch `key`; [`BatchKey::FULL`] is the whole data set, in order.
    fn fill_minibatch(&mut self, key: BatchKey) -> usize {
        let d = self.data;
        if key == BatchKey::FULL {
            return self.fill_rows(0..d.n);
        }
        let tg = if key.eval {
            tag::SGLD_EVAL_BATCH
        } else {
            tag::SGLD_BATCH
        };
        let pick = Stream::new(d.seed, tg, key.step as u32, key.chain);
        let n = if d.infinite && !key.eval {
            d.rows.len()
        } else {
            d.n
        } as u64;
        self.fill_rows((0..d.batch).map(|j| pick.below(j as u32, n) as usize))
    }

    fn run(&mut self, w: &[T], m: usize, grad: Option<&mut [T]>) -> f64 {
        let (model, t) = (self.data.model, self.data.model.config.n_ctx);
        let loss = self
            .runner
            .run(model, w, &self.tokens, m, t, grad)
            .unwrap_or(f64::NAN);
        self.parts.clear();
        self.parts.extend_from_slice(self.runner.position_losses());
        loss
    }
}

impl<'m, T: Float> Potential<T> for LmDataset<'m> {
    type Worker<'a>
        = LmDatasetWorker<'a, T>
    where
        Self: 'a;

    fn dim(&self) -> usize {
        self.model.num_params()
    }

    fn worker(&self) -> LmDatasetWorker<'_, T> {
        LmDatasetWorker {
            data: self,
            runner: LmRunner::new(),
            tokens: Vec::new(),
            parts: Vec::new(),
        }
    }

    fn tensors(&self) -> Vec<(String, usize)> {
        self.model.layout.named_sizes()
    }

    /// `L_n(w)`: the mean loss over the `n` rows, and per position.
    fn full_loss(&self, w: &[T]) -> (f64, Vec<f64>) {
        let mut wk = self.worker();
        let t = self.model.config.n_ctx;
        let chunk = 64;
        let (mut total, mut parts) = (0.0, vec![0.0; t - 1]);
        let mut start = 0;
        while start < self.n {
            let m = wk.fill_rows(start..(start + chunk).min(self.n));
            let loss = wk.run(w, m, None);
            total += loss * m as f64;
            for (p, x) in parts.iter_mut().zip(&wk.parts) {
                *p += x * m as f64;
            }
            start += m;
        }
        let n = self.n.max(1) as f64;
        (total / n, parts.iter().map(|p| p / n).collect())
    }
}

impl<T: Float> PotentialWorker<T> for LmDatasetWorker<'_, T> {
    fn loss_and_grad(&mut self, w: &[T], key: BatchKey, grad: &mut [T]) -> f64 {
        let m = self.fill_minibatch(key);
        self.run(w, m, Some(grad))
    }

    fn loss(&mut self, w: &[T], key: BatchKey) -> f64 {
        let m = self.fill_minibatch(key);
        self.run(w, m, None)
    }

    fn parts(&self) -> &[f64] {
        &self.parts
    }
}

/// The CPU: each centre's chains in lockstep, one centre after another.
impl ChainEngine for LmDataset<'_> {
    fn full_losses(&self, centres: &[Vec<f32>]) -> Result<Vec<(f64, Vec<f64>)>, EngineError> {
        Ok(centres
            .iter()
            .map(|w| Potential::<f32>::full_loss(self, w))
            .collect())
    }

    fn sample(
        &self,
        centres: &[Vec<f32>],
        sgld: &Sgld,
        mask: Option<&[bool]>,
        cfg: &ChainConfig,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<Vec<ChainTrace>>, EngineError> {
        Ok(cpu_sample(self, centres, sgld, mask, cfg, progress))
    }
}

/// Fixed token rows observed at every draw (for susceptibilities and the BIF): each next-token
/// loss, `[nseq, n_ctx - 1]` row-major.
pub struct LmObserved<'m> {
    pub model: &'m LanguageModel,
    /// `tokens[nseq, n_ctx]`.
    pub tokens: Vec<u32>,
    pub nseq: usize,
}

pub struct LmObservedWorker<'a, T> {
    set: &'a LmObserved<'a>,
    runner: LmRunner<T>,
}

impl<T: Float> crate::observed::Observer<T> for LmObserved<'_> {
    type Worker<'a>
        = LmObservedWorker<'a, T>
    where
        Self: 'a;

    fn len(&self) -> usize {
        self.nseq * (self.model.config.n_ctx - 1)
    }

    fn worker(&self) -> LmObservedWorker<'_, T> {
        LmObservedWorker {
            set: self,
            runner: LmRunner::new(),
        }
    }
}

impl<T: Float> crate::observed::ObserverWorker<T> for LmObservedWorker<'_, T> {
    fn observe(&mut self, w: &[T], out: &mut [f64]) -> bool {
        let s = self.set;
        let t = s.model.config.n_ctx;
        if self
            .runner
            .run(s.model, w, &s.tokens, s.nseq, t, None)
            .is_err()
        {
            return false;
        }
        let losses = self.runner.token_losses();
        if losses.len() != out.len() {
            return false;
        }
        out.copy_from_slice(losses);
        true
    }
}
