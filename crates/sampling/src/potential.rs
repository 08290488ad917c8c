//! What the sampler needs from a model: the mean minibatch loss and its gradient.

use stagewise_engine::Float;

/// Identifies the minibatch of one sampler step: a pure function of `(chain, step)` (or of
/// `step` alone when chains share minibatches), so results do not depend on scheduling.
/// `eval` batches (the "new-minibatch" evaluation) come from a stream of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchKey {
    pub chain: u32,
    pub step: u64,
    pub eval: bool,
}

impl BatchKey {
    /// The minibatch whose gradient drives step `step` of chain `chain`.
    pub fn grad(chain: u32, step: u64) -> Self {
        BatchKey {
            chain,
            step,
            eval: false,
        }
    }

    /// A fresh minibatch to evaluate the loss on after step `step`.
    pub fn eval(chain: u32, step: u64) -> Self {
        BatchKey {
            chain,
            step,
            eval: true,
        }
    }

    /// The key deterministic potentials use for their full dataset.
    pub const FULL: BatchKey = BatchKey {
        chain: 0,
        step: u64::MAX,
        eval: false,
    };
}

/// A model the sampler can explore. Implement this for your own model to estimate its LLC.
///
/// ```
/// use stagewise_sampling::{
///     BatchKey, ChainConfig, LlcEstimate, Potential, PotentialWorker, Sgld, sample,
/// };
///
/// /// `L(w) = w^2`: a regular model in one dimension, learning coefficient 1/2.
/// struct Square;
/// struct SquareWorker;
/// impl Potential<f64> for Square {
///     type Worker<'a> = SquareWorker;
///     fn dim(&self) -> usize {
///         1
///     }
///     fn worker(&self) -> SquareWorker {
///         SquareWorker
///     }
/// }
/// impl PotentialWorker<f64> for SquareWorker {
///     fn loss_and_grad(&mut self, w: &[f64], _key: BatchKey, grad: &mut [f64]) -> f64 {
///         grad[0] = 2.0 * w[0];
///         w[0] * w[0]
///     }
/// }
///
/// let sgld = Sgld { nbeta: 1000.0, ..Sgld::from_temperature(1e-4, 1.0, 1.0, 1.0) };
/// let mut cfg = ChainConfig::new(4, 20_000, 0);
/// cfg.burnin = 1_000;
/// let w_star = [0.0];
/// let traces = sample(&Square, &w_star, &sgld, None, &cfg);
/// let e = LlcEstimate::from_traces(&traces, Square.init_loss(&w_star), &[], sgld.nbeta, None);
/// assert!((e.mean - 0.5).abs() < 0.05, "{}", e.mean);
/// ```
pub trait Potential<T: Float>: Sync {
    /// Per-chain evaluator (holds scratch such as activation buffers).
    type Worker<'a>: PotentialWorker<T> + Send
    where
        Self: 'a;
    /// Number of parameters.
    fn dim(&self) -> usize;
    fn worker(&self) -> Self::Worker<'_>;
    /// Names and lengths of the parameter tensors in order (for masks by name).
    fn tensors(&self) -> Vec<(String, usize)> {
        vec![("w".into(), self.dim())]
    }
    /// `L_n(w)` on the whole dataset, and its parts (see [`PotentialWorker::parts`]); by default
    /// the loss of batch [`BatchKey::FULL`], which deterministic potentials treat as the dataset.
    fn full_loss(&self, w: &[T]) -> (f64, Vec<f64>) {
        let mut g = vec![T::ZERO; w.len()];
        let mut worker = self.worker();
        let loss = worker.loss_and_grad(w, BatchKey::FULL, &mut g);
        (loss, worker.parts().to_vec())
    }
    /// `L_n(w*)`: the loss the LLC is measured against.
    fn init_loss(&self, w: &[T]) -> f64 {
        self.full_loss(w).0
    }
}

pub trait PotentialWorker<T: Float> {
    /// Mean loss of minibatch `key` at `w`; its gradient overwrites `grad`.
    fn loss_and_grad(&mut self, w: &[T], key: BatchKey, grad: &mut [T]) -> f64;
    /// Mean loss of minibatch `key` at `w` without the gradient.
    fn loss(&mut self, w: &[T], key: BatchKey) -> f64 {
        let mut g = vec![T::ZERO; w.len()];
        self.loss_and_grad(w, key, &mut g)
    }
    /// For piecewise-smooth models (ReLU): keep the activation pattern of the last evaluation
    /// for the following ones, so that finite differences of gradients see one smooth piece
    /// (the Hessian autograd reports). Default: nothing to freeze.
    fn freeze_activation_pattern(&mut self) {}

    /// Parts of the last loss evaluated, if the model splits it (the regression transformer: the
    /// mean loss of each token position, whose mean is the loss); empty otherwise.
    fn parts(&self) -> &[f64] {
        &[]
    }
}
