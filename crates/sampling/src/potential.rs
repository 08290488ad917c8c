//! What the sampler needs from a model: the mean minibatch loss and its gradient.

use stagewise_engine::Float;

/// Identifies the minibatch of one sampler step: a pure function of `(chain, step)` (or of
/// `step` alone when chains share minibatches), so results do not depend on scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchKey {
    pub chain: u32,
    pub step: u64,
}

/// A model the sampler can explore. Implement this for your own model to estimate its LLC.
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
    /// `L_n(w*)`: the loss the LLC is measured against (by default the loss of batch
    /// `(0, u64::MAX)`, which deterministic potentials ignore).
    fn init_loss(&self, w: &[T]) -> f64 {
        let mut g = vec![T::ZERO; w.len()];
        self.worker().loss_and_grad(
            w,
            BatchKey {
                chain: 0,
                step: u64::MAX,
            },
            &mut g,
        )
    }
}

pub trait PotentialWorker<T> {
    /// Mean loss of minibatch `key` at `w`; its gradient overwrites `grad`.
    fn loss_and_grad(&mut self, w: &[T], key: BatchKey, grad: &mut [T]) -> f64;
}
