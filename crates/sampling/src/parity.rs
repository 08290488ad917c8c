//! The sparse parity MLP as a [`Potential`]: mean cross-entropy on minibatches of a fixed data
//! set of `n` samples drawn from the run's task mixture (the training distribution). A
//! minibatch of `batch` samples for key `(chain, step)` is drawn uniformly with replacement
//! from the data set, or, with `infinite`, freshly from the distribution.

use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};
use stagewise_models::parity::{ParityMlp, ParityWorkspace};
use stagewise_train::parity::SparseParity;

use crate::chains::{ChainConfig, ChainTrace};
use crate::engine::{ChainEngine, EngineError, cpu_sample};
use crate::potential::{BatchKey, Potential, PotentialWorker};
use crate::sgld::Sgld;

pub struct ParityDataset<'m> {
    pub model: &'m ParityMlp,
    pub data: &'m SparseParity,
    /// The data set: `[n, input_dim]` inputs and their labels.
    x: Vec<f32>,
    y: Vec<u8>,
    pub n: usize,
    pub batch: usize,
    pub seed: u64,
    /// Minibatches drawn fresh from the distribution ("infinite-dataset").
    pub infinite: bool,
}

impl<'m> ParityDataset<'m> {
    /// `n` samples from stream `(LLC_DATASET, 0)` of the run's data.
    pub fn new(
        model: &'m ParityMlp,
        data: &'m SparseParity,
        n: usize,
        batch: usize,
        seed: u64,
    ) -> Self {
        let (x, y) = data.batch::<f32>(n, None, (tag::LLC_DATASET, 0));
        ParityDataset {
            model,
            data,
            x,
            y,
            n,
            batch,
            seed,
            infinite: false,
        }
    }
}

pub struct ParityDatasetWorker<'a, T> {
    set: &'a ParityDataset<'a>,
    ws: ParityWorkspace<T>,
    x: Vec<T>,
    y: Vec<u8>,
}

impl<T: Float> ParityDatasetWorker<'_, T> {
    /// The samples of minibatch `key`; [`BatchKey::FULL`] is the whole data set, in order.
    fn fill(&mut self, key: BatchKey) {
        let s = self.set;
        let d = self.set.model.config.input_dim();
        self.x.clear();
        self.y.clear();
        let rows: Vec<usize> = if key == BatchKey::FULL {
            (0..s.n).collect()
        } else if s.infinite && !key.eval {
            // Fresh samples of the distribution, keyed by (step, chain).
            let stream = (tag::SGLD_BATCH, key.step as u32);
            let mut row = vec![T::ZERO; d];
            for j in 0..s.batch {
                let idx = key.chain as usize * s.batch + j;
                let (_, label) = s.data.sample_into(&mut row, None, stream, idx as u32);
                self.x.extend_from_slice(&row);
                self.y.push(label);
            }
            return;
        } else {
            let tg = if key.eval {
                tag::SGLD_EVAL_BATCH
            } else {
                tag::SGLD_BATCH
            };
            let pick = Stream::new(s.seed, tg, key.step as u32, key.chain);
            (0..s.batch)
                .map(|j| pick.below(j as u32, s.n as u64) as usize)
                .collect()
        };
        for i in rows {
            self.x.extend(
                s.x[i * d..(i + 1) * d]
                    .iter()
                    .map(|v| T::from_f64(*v as f64)),
            );
            self.y.push(s.y[i]);
        }
    }
}

impl<'m, T: Float> Potential<T> for ParityDataset<'m> {
    type Worker<'a>
        = ParityDatasetWorker<'a, T>
    where
        Self: 'a;

    fn dim(&self) -> usize {
        self.model.num_params()
    }

    fn worker(&self) -> ParityDatasetWorker<'_, T> {
        ParityDatasetWorker {
            set: self,
            ws: ParityWorkspace::default(),
            x: Vec::new(),
            y: Vec::new(),
        }
    }

    fn tensors(&self) -> Vec<(String, usize)> {
        self.model.layout.named_sizes()
    }
}

impl<T: Float> PotentialWorker<T> for ParityDatasetWorker<'_, T> {
    fn loss_and_grad(&mut self, w: &[T], key: BatchKey, grad: &mut [T]) -> f64 {
        self.fill(key);
        self.set
            .model
            .loss(w, &self.x, &self.y, &mut self.ws, Some(grad))
    }

    fn loss(&mut self, w: &[T], key: BatchKey) -> f64 {
        self.fill(key);
        self.set.model.loss(w, &self.x, &self.y, &mut self.ws, None)
    }
}

/// The CPU: each centre's chains in lockstep, one centre after another.
impl ChainEngine for ParityDataset<'_> {
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
