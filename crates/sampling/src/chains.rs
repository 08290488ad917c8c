//! SGLD chains in lockstep: at every step all live chains evaluate their minibatch loss and
//! gradient (in parallel, one worker each), then update. Chain `c`'s noise and minibatches are
//! pure functions of `(seed, c, step)`, so a chain gives the same trace whether it runs with
//! others or alone, on any number of threads.

use rayon::prelude::*;
use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};

use crate::mala::{MalaPoint, acceptance};
use crate::potential::{BatchKey, Potential, PotentialWorker};
use crate::sgld::{Method, Sgld, StepState};

/// Which loss a draw records (the reference's `eval_method`). Its names are parsed in one
/// place ([`std::str::FromStr`]), which serde uses too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EvalMethod {
    /// The minibatch loss the step's gradient came from, before the update ("grad-minibatch").
    #[default]
    GradMinibatch,
    /// The loss of a fresh minibatch at the updated weights ("new-minibatch").
    NewMinibatch,
    /// The full dataset loss `L_n` at the updated weights ("dataset"; the reference's
    /// "fixed-minibatch" is read as this; costly for large n).
    Dataset,
}

impl EvalMethod {
    pub fn name(self) -> &'static str {
        match self {
            EvalMethod::GradMinibatch => "grad-minibatch",
            EvalMethod::NewMinibatch => "new-minibatch",
            EvalMethod::Dataset => "dataset",
        }
    }
}

impl std::fmt::Display for EvalMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EvalMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grad-minibatch" => Ok(EvalMethod::GradMinibatch),
            "new-minibatch" => Ok(EvalMethod::NewMinibatch),
            "dataset" | "fixed-minibatch" => Ok(EvalMethod::Dataset),
            other => Err(format!(
                "{other:?}: expected \"grad-minibatch\", \"new-minibatch\", \"dataset\" or \"fixed-minibatch\""
            )),
        }
    }
}

impl TryFrom<String> for EvalMethod {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<EvalMethod> for String {
    fn from(m: EvalMethod) -> String {
        m.name().into()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChainConfig {
    pub chains: usize,
    pub draws: usize,
    /// Steps before the first draw.
    pub burnin: usize,
    /// Steps per draw (thinning); 1 records every step.
    pub steps_between_draws: usize,
    pub seed: u64,
    /// Index of the first chain (a chain run alone with `first_chain = c` reproduces chain `c`).
    pub first_chain: u32,
    /// All chains see the same minibatches; only their noise differs.
    pub shared_batches: bool,
    pub eval: EvalMethod,
}

impl ChainConfig {
    pub fn new(chains: usize, draws: usize, seed: u64) -> Self {
        ChainConfig {
            chains,
            draws,
            burnin: 0,
            steps_between_draws: 1,
            seed,
            first_chain: 0,
            shared_batches: false,
            eval: EvalMethod::GradMinibatch,
        }
    }

    /// SGLD steps per chain, burn-in included.
    pub fn total_steps(&self) -> usize {
        self.burnin + self.draws * self.steps_between_draws.max(1)
    }

    /// The draw recorded at `step`, if any.
    pub fn draw_at(&self, step: usize) -> Option<usize> {
        let k = self.steps_between_draws.max(1);
        (step >= self.burnin && (step - self.burnin).is_multiple_of(k))
            .then(|| (step - self.burnin) / k)
    }
}

/// One chain's record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChainTrace {
    /// Loss of each draw's minibatch, evaluated before that step's update (draw 0 without burn-in
    /// is the loss at w*).
    pub losses: Vec<f64>,
    /// ||w - w*|| after each draw's update.
    pub distances: Vec<f64>,
    /// Parts of each draw's loss (per-token losses; empty vectors if the model has none).
    pub parts: Vec<Vec<f64>>,
    /// MALA acceptance probability of the step that led to each draw's point (plain SGLD
    /// only; NaN for a draw without a previous step, and for other methods).
    pub mala: Vec<f64>,
    /// Why the chain stopped early (a non-finite loss or weight), naming chain and draw.
    pub failure: Option<String>,
}

/// One chain on its way: its point, scratch, worker and record. `mask` freezes coordinates
/// (a restriction); chains of different restrictions can run side by side.
pub(crate) struct ChainState<'m, T, W> {
    pub(crate) index: u32,
    mask: Option<&'m [bool]>,
    pub(crate) w: Vec<T>,
    grad: Vec<T>,
    xi: Vec<T>,
    z: Vec<f64>,
    state: StepState<T>,
    /// The current and the previous point for the MALA acceptance.
    here: MalaPoint<T>,
    before: MalaPoint<T>,
    worker: W,
    pub(crate) trace: ChainTrace,
}

/// Standard normal noise from `(seed, SGLD_NOISE, step, chain)`.
pub fn philox_noise<T: Float>(seed: u64, chain: u32, step: u64, z: &mut [f64], out: &mut [T]) {
    Stream::new(seed, tag::SGLD_NOISE, step as u32, chain).fill_normal(z);
    for (o, v) in out.iter_mut().zip(z.iter()) {
        *o = T::from_f64(*v);
    }
}

/// Runs the chains from `w0` with Philox noise. `mask` (length `dim`) freezes coordinates.
pub fn sample<T: Float, P: Potential<T>>(
    potential: &P,
    w0: &[T],
    sgld: &Sgld,
    mask: Option<&[bool]>,
    cfg: &ChainConfig,
) -> Vec<ChainTrace> {
    sample_with_progress(potential, w0, sgld, mask, cfg, &|_| {})
}

/// As `sample`, calling `progress(steps done)` after every step.
pub fn sample_with_progress<T: Float, P: Potential<T>>(
    potential: &P,
    w0: &[T],
    sgld: &Sgld,
    mask: Option<&[bool]>,
    cfg: &ChainConfig,
    progress: &dyn Fn(usize),
) -> Vec<ChainTrace> {
    let seed = cfg.seed;
    let noise = |chain, step, z: &mut [f64], out: &mut [T]| philox_noise(seed, chain, step, z, out);
    run_chains(potential, w0, sgld, mask, cfg, &noise, progress)
}

/// Fills a chain's noise for one step: `(chain, step, f64 scratch, out)`.
pub type NoiseFn<'a, T> = dyn Fn(u32, u64, &mut [f64], &mut [T]) + Sync + 'a;

/// As `sample`, with the noise supplied by `noise(chain, step, scratch, out)` (SGNHT's initial
/// momentum is the noise of step `u32::MAX`).
pub fn sample_with_noise<T: Float, P: Potential<T>>(
    potential: &P,
    w0: &[T],
    sgld: &Sgld,
    mask: Option<&[bool]>,
    cfg: &ChainConfig,
    noise: &NoiseFn<'_, T>,
) -> Vec<ChainTrace> {
    run_chains(potential, w0, sgld, mask, cfg, noise, &|_| {})
}

fn run_chains<T: Float, P: Potential<T>>(
    potential: &P,
    w0: &[T],
    sgld: &Sgld,
    mask: Option<&[bool]>,
    cfg: &ChainConfig,
    noise: &NoiseFn<'_, T>,
    progress: &dyn Fn(usize),
) -> Vec<ChainTrace> {
    let mut states: Vec<_> = (0..cfg.chains)
        .map(|c| ChainState::new(potential, w0, sgld, mask, cfg.first_chain + c as u32, noise))
        .collect();
    for step in 0..cfg.total_steps() {
        states
            .par_iter_mut()
            .filter(|s| s.trace.failure.is_none())
            .for_each(|s| {
                s.advance(potential, w0, sgld, cfg, noise, step);
            });
        progress(step + 1);
    }
    states.into_iter().map(|s| s.trace).collect()
}

impl<'m, T: Float, W: PotentialWorker<T>> ChainState<'m, T, W> {
    /// Chain `index` at `w0`, frozen where `mask` is false.
    pub(crate) fn new<P: Potential<T, Worker<'m> = W>>(
        potential: &'m P,
        w0: &[T],
        sgld: &Sgld,
        mask: Option<&'m [bool]>,
        index: u32,
        noise: &NoiseFn<'_, T>,
    ) -> Self {
        let dim = potential.dim();
        assert_eq!(
            w0.len(),
            dim,
            "w0 has {} values, the potential {}",
            w0.len(),
            dim
        );
        let (mut z, mut xi) = (vec![0.0; dim], vec![T::ZERO; dim]);
        if matches!(sgld.method, Method::Sgnht { .. }) {
            noise(index, u32::MAX as u64, &mut z, &mut xi);
        }
        ChainState {
            index,
            mask,
            w: w0.to_vec(),
            grad: vec![T::ZERO; dim],
            state: sgld.initial_state(dim, &xi),
            xi,
            z,
            here: MalaPoint::default(),
            before: MalaPoint::default(),
            worker: potential.worker(),
            trace: ChainTrace::default(),
        }
    }

    /// Step `step` of the chain: its minibatch gradient, the update and, at a draw, the record.
    /// `Some(draw)` when the step recorded a draw (the chain's point is then `self.w`); a
    /// non-finite loss or weight sets `trace.failure` instead.
    pub(crate) fn advance<P: Potential<T>>(
        &mut self,
        potential: &P,
        w0: &[T],
        sgld: &Sgld,
        cfg: &ChainConfig,
        noise: &NoiseFn<'_, T>,
        step: usize,
    ) -> Option<usize> {
        let s = self;
        let mask = s.mask;
        let draw = cfg.draw_at(step);
        let batch_chain = if cfg.shared_batches { 0 } else { s.index };
        let key = BatchKey::grad(batch_chain, step as u64);
        let loss = s.worker.loss_and_grad(&s.w, key, &mut s.grad);
        if !loss.is_finite() {
            s.trace.failure = Some(format!(
                "chain {}: loss is {loss} at step {step}{}",
                s.index,
                draw_note(draw)
            ));
            return None;
        }
        let mut accept = f64::NAN;
        if sgld.method == Method::Sgld {
            std::mem::swap(&mut s.here, &mut s.before);
            s.here.set(sgld, &s.w, w0, loss, &s.grad, mask);
            if step > 0 {
                accept = acceptance(&s.before, &s.here, sgld.epsilon, sgld.noise_level);
            }
        }
        let grad_parts = match (draw, cfg.eval) {
            (Some(_), EvalMethod::GradMinibatch) => s.worker.parts().to_vec(),
            _ => Vec::new(),
        };
        noise(s.index, step as u64, &mut s.z, &mut s.xi);
        sgld.step(&mut s.w, w0, &s.grad, &s.xi, mask, &mut s.state);
        let d = draw?;
        let dist =
            s.w.iter()
                .zip(w0)
                .map(|(a, b)| (*a - *b).to_f64().powi(2))
                .sum::<f64>()
                .sqrt();
        if !dist.is_finite() {
            s.trace.failure = Some(format!(
                "chain {}: weights are not finite after draw {d}",
                s.index
            ));
            return None;
        }
        let (recorded, parts) = match cfg.eval {
            EvalMethod::GradMinibatch => (loss, grad_parts),
            EvalMethod::NewMinibatch => {
                let l = s
                    .worker
                    .loss(&s.w, BatchKey::eval(batch_chain, step as u64));
                (l, s.worker.parts().to_vec())
            }
            EvalMethod::Dataset => potential.full_loss(&s.w),
        };
        if !recorded.is_finite() {
            s.trace.failure = Some(format!(
                "chain {}: evaluation loss is {recorded} at draw {d}",
                s.index
            ));
            return None;
        }
        s.trace.losses.push(recorded);
        s.trace.distances.push(dist);
        s.trace.parts.push(parts);
        s.trace.mala.push(accept);
        Some(d)
    }
}

fn draw_note(draw: Option<usize>) -> String {
    draw.map(|d| format!(" (draw {d})"))
        .unwrap_or_else(|| " (burn-in)".into())
}
