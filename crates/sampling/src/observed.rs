//! SGLD chains that observe: at every draw each chain evaluates fixed observables (per-token
//! losses of fixed samples) and folds them into streaming [`Moments`], for susceptibilities and
//! Bayesian influence functions. Several weight restrictions run side by side in one lockstep
//! batch (restriction x chain); chain `c` of every restriction has the noise and minibatches of
//! chain `c` run alone, so a restriction gives the same result in a batch or by itself.

use std::ops::Range;

use rayon::prelude::*;
use stagewise_engine::Float;

use crate::chains::{ChainConfig, ChainState, ChainTrace, philox_noise};
use crate::moments::Moments;
use crate::potential::Potential;
use crate::sgld::Sgld;

/// Values observed at each draw: a model's losses on fixed data, evaluated at the draw's
/// weights (the same data at every draw, so that draws can be correlated).
pub trait Observer<T: Float>: Sync {
    /// Per-chain evaluator (holds scratch such as activation buffers).
    type Worker<'a>: ObserverWorker<T> + Send
    where
        Self: 'a;
    /// Values per draw.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn worker(&self) -> Self::Worker<'_>;
}

pub trait ObserverWorker<T: Float> {
    /// Fills `out` (length [`Observer::len`]) with the values at `w`; false if the model could
    /// not be evaluated there.
    fn observe(&mut self, w: &[T], out: &mut [f64]) -> bool;
}

/// What the chains record besides their traces.
#[derive(Clone, Debug, PartialEq)]
pub struct ObserveConfig {
    /// The values whose mean is the driver `P(s)`: the sampling task's observed losses.
    pub driver: Range<usize>,
    /// Average each run of `group` consecutive values before the moments (1: every token;
    /// the tokens of a sample: one value per sample). The driver is taken before grouping.
    pub group: usize,
    /// Keep each chain's full co-moment matrix of the (grouped) values (for the BIF).
    pub full: bool,
    /// Also per restriction the moments of the chain-averaged draws (devinterp's "mean"
    /// reduction of the chain dimension; needs `full` for a BIF).
    pub chain_mean: bool,
    /// Keep every draw's (grouped) values too; memory then grows with the draws.
    pub store_draws: bool,
}

impl ObserveConfig {
    /// Per-token moments with the driver over `driver`, nothing else kept.
    pub fn new(driver: Range<usize>) -> Self {
        ObserveConfig {
            driver,
            group: 1,
            full: false,
            chain_mean: false,
            store_draws: false,
        }
    }

    /// Values after grouping.
    pub fn grouped_len(&self, len: usize) -> usize {
        len / self.group.max(1)
    }
}

/// One chain's observations.
#[derive(Clone, Debug)]
pub struct ObservedChain {
    pub moments: Moments,
    /// The driver `P(s)` of each draw (for the effective sample size).
    pub driver: Vec<f64>,
    /// Each draw's grouped values, with [`ObserveConfig::store_draws`].
    pub draws: Vec<Vec<f64>>,
    pub trace: ChainTrace,
}

impl ObservedChain {
    /// A chain with nothing recorded yet, for `m` grouped values.
    pub fn new(m: usize, ocfg: &ObserveConfig) -> Self {
        ObservedChain {
            moments: Moments::new(m, ocfg.full),
            driver: Vec::new(),
            draws: Vec::new(),
            trace: ChainTrace::default(),
        }
    }

    /// True if the chain ran to the end and recorded draws.
    pub fn finished(&self) -> bool {
        self.trace.failure.is_none() && self.moments.n > 0
    }

    /// Folds one draw's observed values `raw` in: the driver, the grouped values (into
    /// `grouped`, of the grouped length), the moments and, if asked, the stored draw.
    pub fn fold(&mut self, ocfg: &ObserveConfig, raw: &[f64], grouped: &mut [f64]) {
        let group = ocfg.group.max(1);
        let p = raw[ocfg.driver.clone()].iter().sum::<f64>() / ocfg.driver.len() as f64;
        for (g, chunk) in grouped.iter_mut().zip(raw.chunks(group)) {
            *g = chunk.iter().sum::<f64>() / group as f64;
        }
        self.moments.push(p, grouped);
        self.driver.push(p);
        if ocfg.store_draws {
            self.draws.push(grouped.to_vec());
        }
    }
}

/// Adds to `acc` the mean over chains of one draw: `fresh` yields each chain observed at this
/// draw as (its driver, its grouped values); `sum` is scratch of the grouped length.
pub fn push_chain_mean<'a>(
    acc: &mut Moments,
    sum: &mut [f64],
    fresh: impl Iterator<Item = (f64, &'a [f64])>,
) {
    sum.fill(0.0);
    let (mut k, mut p) = (0usize, 0.0);
    for (driver, grouped) in fresh {
        k += 1;
        p += driver;
        sum.iter_mut().zip(grouped).for_each(|(a, b)| *a += b);
    }
    if k > 0 {
        sum.iter_mut().for_each(|v| *v /= k as f64);
        acc.push(p / k as f64, sum);
    }
}

/// Checks an observer's length against `ocfg`; the grouped length.
pub fn grouped_len(len: usize, ocfg: &ObserveConfig) -> usize {
    let group = ocfg.group.max(1);
    assert!(
        len.is_multiple_of(group) && ocfg.driver.end <= len && !ocfg.driver.is_empty(),
        "observer of {len} values: group {group} and driver {:?}",
        ocfg.driver
    );
    len / group
}

/// One restriction's chains.
#[derive(Clone, Debug)]
pub struct ObservedRestriction {
    pub chains: Vec<ObservedChain>,
    /// Moments of the draws averaged over the chains alive at each draw.
    pub chain_mean: Option<Moments>,
}

impl ObservedRestriction {
    /// The finished chains' moments pooled (devinterp's "stack" of chain and draw).
    pub fn pooled(&self) -> Moments {
        let m = self.chains.first().map(|c| c.moments.len()).unwrap_or(0);
        let full = self.chains.iter().any(|c| c.moments.c_xx.is_some());
        let mut all = Moments::new(m, full);
        for c in self.chains.iter().filter(|c| c.finished()) {
            all.merge(&c.moments);
        }
        all
    }

    /// Failure messages of chains that stopped early.
    pub fn failures(&self) -> Vec<String> {
        self.chains
            .iter()
            .filter_map(|c| c.trace.failure.clone())
            .collect()
    }
}

struct Slot<W> {
    restriction: usize,
    worker: W,
    raw: Vec<f64>,
    grouped: Vec<f64>,
    /// The draw just observed (for the chain mean).
    fresh: bool,
    out: ObservedChain,
}

/// Runs `cfg`'s chains from `w0` under each restriction of `masks` (`None`: every weight moves)
/// in one lockstep batch, observing `observer` at every draw. `progress(steps done)` after each
/// step. Results in the order of `masks`.
#[allow(clippy::too_many_arguments)]
pub fn sample_observed<T: Float, P: Potential<T>, O: Observer<T>>(
    potential: &P,
    observer: &O,
    w0: &[T],
    sgld: &Sgld,
    masks: &[Option<Vec<bool>>],
    cfg: &ChainConfig,
    ocfg: &ObserveConfig,
    progress: &dyn Fn(usize),
) -> Vec<ObservedRestriction> {
    let len = observer.len();
    let m = grouped_len(len, ocfg);
    let seed = cfg.seed;
    let noise = |chain, step, z: &mut [f64], out: &mut [T]| philox_noise(seed, chain, step, z, out);
    let mut states: Vec<_> = masks
        .iter()
        .enumerate()
        .flat_map(|(r, mask)| (0..cfg.chains).map(move |c| (r, mask, c)))
        .map(|(r, mask, c)| {
            let index = cfg.first_chain + c as u32;
            let chain = ChainState::new(potential, w0, sgld, mask.as_deref(), index, &noise);
            let slot = Slot {
                restriction: r,
                worker: observer.worker(),
                raw: vec![0.0; len],
                grouped: vec![0.0; m],
                fresh: false,
                out: ObservedChain::new(m, ocfg),
            };
            (chain, slot)
        })
        .collect();
    let mut chain_mean: Vec<Option<Moments>> = masks
        .iter()
        .map(|_| ocfg.chain_mean.then(|| Moments::new(m, ocfg.full)))
        .collect();
    let mut sum = vec![0.0; m];
    for step in 0..cfg.total_steps() {
        states
            .par_iter_mut()
            .filter(|(s, _)| s.trace.failure.is_none())
            .for_each(|(s, o)| {
                o.fresh = false;
                let Some(d) = s.advance(potential, w0, sgld, cfg, &noise, step) else {
                    return;
                };
                if !o.worker.observe(&s.w, &mut o.raw) || o.raw.iter().any(|v| !v.is_finite()) {
                    s.trace.failure = Some(format!(
                        "chain {}: the observables are not finite at draw {d}",
                        s.index
                    ));
                    return;
                }
                o.out.fold(ocfg, &o.raw, &mut o.grouped);
                o.fresh = true;
            });
        if cfg.draw_at(step).is_some() {
            for (r, acc) in chain_mean.iter_mut().enumerate() {
                let Some(acc) = acc else { continue };
                let fresh = states
                    .iter()
                    .filter(|(_, o)| o.restriction == r && o.fresh)
                    .map(|(_, o)| {
                        (
                            o.out.driver.last().copied().unwrap_or(f64::NAN),
                            &o.grouped[..],
                        )
                    });
                push_chain_mean(acc, &mut sum, fresh);
            }
        }
        progress(step + 1);
    }
    let mut out: Vec<ObservedRestriction> = chain_mean
        .into_iter()
        .map(|chain_mean| ObservedRestriction {
            chains: Vec::new(),
            chain_mean,
        })
        .collect();
    for (s, mut o) in states {
        o.out.trace = s.trace;
        out[o.restriction].chains.push(o.out);
    }
    out
}
