//! SGLD chains in lockstep: at every step all live chains evaluate their minibatch loss and
//! gradient (in parallel, one worker each), then update. Chain `c`'s noise and minibatches are
//! pure functions of `(seed, c, step)`, so a chain gives the same trace whether it runs with
//! others or alone, on any number of threads.

use rayon::prelude::*;
use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};

use crate::potential::{BatchKey, Potential, PotentialWorker};
use crate::sgld::Sgld;

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
        }
    }

    fn total_steps(&self) -> usize {
        self.burnin + self.draws * self.steps_between_draws.max(1)
    }

    /// The draw recorded at `step`, if any.
    fn draw_at(&self, step: usize) -> Option<usize> {
        let k = self.steps_between_draws.max(1);
        (step >= self.burnin && (step - self.burnin) % k == 0).then(|| (step - self.burnin) / k)
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
    /// Why the chain stopped early (a non-finite loss or weight), naming chain and draw.
    pub failure: Option<String>,
}

struct ChainState<T, W> {
    index: u32,
    w: Vec<T>,
    grad: Vec<T>,
    xi: Vec<T>,
    z: Vec<f64>,
    precond: Vec<T>,
    worker: W,
    trace: ChainTrace,
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
    let seed = cfg.seed;
    sample_with_noise(potential, w0, sgld, mask, cfg, &|chain, step, z, out| {
        philox_noise(seed, chain, step, z, out)
    })
}

/// As `sample`, with the noise supplied by `noise(chain, step, scratch, out)`.
pub fn sample_with_noise<T: Float, P: Potential<T>>(
    potential: &P,
    w0: &[T],
    sgld: &Sgld,
    mask: Option<&[bool]>,
    cfg: &ChainConfig,
    noise: &(dyn Fn(u32, u64, &mut [f64], &mut [T]) + Sync),
) -> Vec<ChainTrace> {
    let dim = potential.dim();
    assert_eq!(
        w0.len(),
        dim,
        "w0 has {} values, the potential {}",
        w0.len(),
        dim
    );
    let mut states: Vec<ChainState<T, P::Worker<'_>>> = (0..cfg.chains)
        .map(|c| ChainState {
            index: cfg.first_chain + c as u32,
            w: w0.to_vec(),
            grad: vec![T::ZERO; dim],
            xi: vec![T::ZERO; dim],
            z: vec![0.0; dim],
            precond: vec![T::ZERO; dim],
            worker: potential.worker(),
            trace: ChainTrace::default(),
        })
        .collect();
    for step in 0..cfg.total_steps() {
        let draw = cfg.draw_at(step);
        states
            .par_iter_mut()
            .filter(|s| s.trace.failure.is_none())
            .for_each(|s| {
                let key = BatchKey {
                    chain: if cfg.shared_batches { 0 } else { s.index },
                    step: step as u64,
                };
                let loss = s.worker.loss_and_grad(&s.w, key, &mut s.grad);
                if !loss.is_finite() {
                    s.trace.failure = Some(format!(
                        "chain {}: loss is {loss} at step {step}{}",
                        s.index,
                        draw_note(draw)
                    ));
                    return;
                }
                noise(s.index, step as u64, &mut s.z, &mut s.xi);
                sgld.step(&mut s.w, w0, &s.grad, &s.xi, mask, &mut s.precond);
                if let Some(d) = draw {
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
                        return;
                    }
                    s.trace.losses.push(loss);
                    s.trace.distances.push(dist);
                }
            });
    }
    states.into_iter().map(|s| s.trace).collect()
}

fn draw_note(draw: Option<usize>) -> String {
    draw.map(|d| format!(" (draw {d})"))
        .unwrap_or_else(|| " (burn-in)".into())
}
