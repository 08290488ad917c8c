//! Susceptibility and BIF chains on the device: the chains of every restriction (restriction x
//! chain weight sets) in one set of launches, as `stagewise_sampling::observed::sample_observed`
//! runs them on the CPU. After each draw's update the fixed observed sequences run forward for
//! every weight set; the predictions gather in a window of draws on the device, and the host
//! folds each window into the same streaming moments as the CPU, so memory does not grow with
//! the draws.
//!
//! Chain `c` of every restriction has the noise and minibatches of chain `c` run alone (the
//! weight sets are restriction-major, and a set's chain index is its position within its
//! restriction), so a restriction gives the same result in a batch or by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use stagewise_models::RegressionTransformer;
use stagewise_sampling::chains::ChainConfig;
use stagewise_sampling::moments::Moments;
use stagewise_sampling::observed::{
    ObserveConfig, ObservedChain, ObservedRestriction, grouped_len, push_chain_mean,
};
use stagewise_sampling::regression::Observed;
use stagewise_sampling::sgld::Sgld;

use crate::device::{Arg, Buf, Device, GpuError, Ptr};
use crate::model::GpuModel;
use crate::sgld::{DatasetSpec, SetMasks, sample_sets};

/// Device memory for the window of observed draws, at most (at least one draw); the host folds
/// a window at a time. Process-wide, for tests that make it small.
pub static WINDOW_BYTES: AtomicUsize = AtomicUsize::new(64 << 20);

/// One chunk of the observed sequences: `(first sequence, sequences)` and its tokens for every
/// weight set `[Q, m, 2K, D+1]`.
struct Chunk {
    start: usize,
    len: usize,
    toks: Buf<f32>,
}

/// One chain's host side: its record, scratch, and whether it has stopped.
struct Slot {
    out: ObservedChain,
    raw: Vec<f64>,
    grouped: Vec<f64>,
    fresh: bool,
    failure: Option<String>,
}

/// Runs `cfg`'s chains from `w0` under each restriction of `masks` (`None`: every weight moves)
/// on the device, observing the squared errors of `set` at every draw; the CPU's
/// `sample_observed` with `set` as the observer, up to float32 rounding of the passes.
#[allow(clippy::too_many_arguments)]
pub fn sample_observed(
    dev: &Arc<dyn Device>,
    model: &RegressionTransformer,
    data: &DatasetSpec,
    set: &Observed<'_, f32>,
    w0: &[f32],
    sgld: &Sgld,
    masks: &[Option<Vec<bool>>],
    cfg: &ChainConfig,
    ocfg: &ObserveConfig,
    progress: &dyn Fn(usize),
) -> Result<Vec<ObservedRestriction>, GpuError> {
    let (k, nseq) = (set.k, set.nseq);
    let len = nseq * k;
    let d1 = model.config.token_size();
    if set.toks.len() != nseq * 2 * k * d1 || set.ys.len() != len {
        return Err(GpuError::Shape(format!(
            "observed set of {nseq} sequences of {k} examples: {} token values and {} targets",
            set.toks.len(),
            set.ys.len()
        )));
    }
    let m = grouped_len(len, ocfg);
    let chains = cfg.chains;
    let q = masks.len() * chains;
    let mut slots: Vec<Slot> = (0..q)
        .map(|_| Slot {
            out: ObservedChain::new(m, ocfg),
            raw: vec![0.0; len],
            grouped: vec![0.0; m],
            fresh: false,
            failure: None,
        })
        .collect();
    let mut chain_mean: Vec<Option<Moments>> = masks
        .iter()
        .map(|_| ocfg.chain_mean.then(|| Moments::new(m, ocfg.full)))
        .collect();
    if q == 0 || cfg.draws == 0 || len == 0 {
        return Ok(assemble(slots, chain_mean, masks.len(), chains, None));
    }
    // The observed sequences in chunks of the sampler's batch, each copied for every weight set.
    let per = nseq.min(data.batch.max(1));
    let seq = 2 * k * d1;
    let mut chunks = Vec::new();
    for start in (0..nseq).step_by(per) {
        let n = per.min(nseq - start);
        let one = &set.toks[start * seq..(start + n) * seq];
        let mut all = Vec::with_capacity(q * one.len());
        for _ in 0..q {
            all.extend_from_slice(one);
        }
        chunks.push(Chunk {
            start,
            len: n,
            toks: Buf::from_host(dev, &all)?,
        });
    }
    let mut models: Vec<GpuModel> = Vec::new();
    for c in &chunks {
        if !models.iter().any(|g| g.b == c.len) {
            models.push(GpuModel::new(dev, model, q, c.len, 2 * k)?);
        }
    }
    let window_draws = (WINDOW_BYTES.load(Ordering::Relaxed) / (q * len * 4)).clamp(1, cfg.draws);
    let window = Buf::<f32>::new(dev, window_draws * q * len)?;
    // Folds `draws` draws from `host` `[draws, Q, len]`, the first of them draw `base`.
    let mut fold_window = |host: &[f32], draws: usize, base: usize, slots: &mut [Slot]| {
        for j in 0..draws {
            let at = |qi: usize| &host[(j * q + qi) * len..(j * q + qi + 1) * len];
            slots.par_iter_mut().enumerate().for_each(|(qi, s)| {
                s.fresh = false;
                if s.failure.is_some() {
                    return;
                }
                for ((r, p), y) in s.raw.iter_mut().zip(at(qi)).zip(&set.ys) {
                    *r = (*p as f64 - y).powi(2);
                }
                if s.raw.iter().any(|v| !v.is_finite()) {
                    s.failure = Some(format!(
                        "chain {}: the observables are not finite at draw {}",
                        cfg.first_chain as usize + qi % chains,
                        base + j
                    ));
                    return;
                }
                s.out.fold(ocfg, &s.raw, &mut s.grouped);
                s.fresh = true;
            });
            for (r, acc) in chain_mean.iter_mut().enumerate() {
                let Some(acc) = acc else { continue };
                let fresh = slots[r * chains..(r + 1) * chains]
                    .iter()
                    .filter(|s| s.fresh)
                    .map(|s| (*s.out.driver.last().expect("a fresh draw"), &s.grouped[..]));
                let mut sum = vec![0.0; m];
                push_chain_mean(acc, &mut sum, fresh);
            }
        }
    };
    let mut folded = 0usize;
    let mut hook = |d: &dyn Device, w: Ptr, draw: usize| -> Result<(), GpuError> {
        let slot = draw - folded;
        for c in &chunks {
            let g = models
                .iter()
                .find(|g| g.b == c.len)
                .expect("a model per size");
            g.forward(w, c.toks.ptr, None)?;
            // window[slot, q, start*K ..] = pred[q, ..] for every weight set.
            let width = c.len * k;
            d.launch(
                "copy_rows_f32",
                q * width,
                &[
                    Arg::Ptr(window.at(slot * q * len + c.start * k)),
                    Arg::I64(len as i64),
                    g.pred.arg(),
                    Arg::I64(width as i64),
                    Arg::I64(width as i64),
                    Arg::I64((q * width) as i64),
                ],
            )?;
        }
        if slot + 1 == window_draws || draw + 1 == cfg.draws {
            let host = window.download_range(0, (slot + 1) * q * len)?;
            fold_window(&host, slot + 1, folded, &mut slots);
            folded = draw + 1;
        }
        Ok(())
    };
    let centres = vec![w0.to_vec(); masks.len()];
    let traces = sample_sets(
        dev,
        model,
        data,
        &centres,
        sgld,
        SetMasks::PerCentre(masks),
        cfg,
        Some(&mut hook),
        progress,
    )?;
    Ok(assemble(
        slots,
        chain_mean,
        masks.len(),
        chains,
        Some(traces),
    ))
}

/// The restrictions' records from the chains' slots (restriction-major) and traces.
fn assemble(
    slots: Vec<Slot>,
    chain_mean: Vec<Option<Moments>>,
    restrictions: usize,
    chains: usize,
    traces: Option<Vec<Vec<stagewise_sampling::chains::ChainTrace>>>,
) -> Vec<ObservedRestriction> {
    let mut out: Vec<ObservedRestriction> = chain_mean
        .into_iter()
        .map(|chain_mean| ObservedRestriction {
            chains: Vec::with_capacity(chains),
            chain_mean,
        })
        .collect();
    debug_assert_eq!(out.len(), restrictions);
    for (qi, mut s) in slots.into_iter().enumerate() {
        let (r, c) = (qi / chains, qi % chains);
        if let Some(t) = traces.as_ref().and_then(|t| t.get(r)?.get(c)) {
            s.out.trace = t.clone();
        }
        if s.out.trace.failure.is_none() {
            s.out.trace.failure = s.failure;
        }
        out[r].chains.push(s.out);
    }
    out
}

/// An error when [`sample_observed`] with these shapes would not fit in the memory `dev` has
/// free (its allocations replayed on a counting device, [`crate::tally`]).
#[allow(clippy::too_many_arguments)]
pub fn check_fits(
    dev: &Arc<dyn Device>,
    model: &RegressionTransformer,
    data: &DatasetSpec,
    set: &Observed<'_, f32>,
    sgld: &Sgld,
    masks: &[Option<Vec<bool>>],
    cfg: &ChainConfig,
) -> Result<(), GpuError> {
    let w0 = vec![0.0f32; model.num_params()];
    // The host's moments do not change the device's memory: the cheapest ones.
    let ocfg = ObserveConfig::new(0..set.nseq * set.k);
    let bytes = crate::tally::peak_bytes(|d| {
        sample_observed(d, model, data, set, &w0, sgld, masks, cfg, &ocfg, &|_| ())
    })?;
    let what = format!(
        "{} restrictions x {} chains (grad_batch_size = {}, {} observed sequences, num_draws = {})",
        masks.len(),
        cfg.chains,
        data.batch,
        set.nseq,
        cfg.draws
    );
    crate::tally::check_fits(dev.as_ref(), &what, bytes)
}
