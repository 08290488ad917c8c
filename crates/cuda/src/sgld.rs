//! Batched SGLD on the device: all chains of one or several checkpoints advance together, one
//! set of launches per step (minibatch generation, forward, backward, update), with every draw's
//! per-token losses and distance kept in device memory until the end. No host round trip per
//! step; the host synchronises only to report progress.
//!
//! Chain `c` of a checkpoint draws the same minibatches and noise as `stagewise_sampling::sample`
//! on the `Dataset` potential (streams keyed by `(seed, chain, step)`), so a device sweep is the
//! CPU sweep up to float32 rounding of the forward and backward passes.

use std::sync::Arc;

use stagewise_engine::rng::tag;
use stagewise_models::RegressionTransformer;
use stagewise_sampling::chains::{ChainConfig, ChainTrace, EvalMethod};
use stagewise_sampling::sgld::{Method, Sgld};
use stagewise_train::data::SequenceDistribution;

use crate::data::{DeviceData, Pick};
use crate::device::{Arg, Buf, Device, GpuError};
use crate::full_loss::FullLoss;
use crate::model::GpuModel;

mod mala;
use mala::{MalaBuffers, chain_sums, mala_step};

/// Device state of SGNHT: momenta, their squares, per-chain sums and thermostats.
struct SgnhtBuffers {
    mom: Buf<f32>,
    energy: Buf<f32>,
    esum: Buf<f32>,
    thermostat: Buf<f64>,
    diffusion: f64,
    /// Sampled coordinates per weight set (the thermostat's mean runs over these) `[Q]`.
    active: Buf<f64>,
}

/// Captures `body` as a graph, or `None` where the device has no graphs or the capture fails
/// (then the caller issues the work directly; a failure is reported once on stderr).
pub(crate) fn capture(d: &dyn Device, body: impl FnOnce() -> Result<(), GpuError>) -> Option<u64> {
    match d.begin_capture() {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            eprintln!("warning: CUDA graph capture unavailable ({e}); launching step by step");
            return None;
        }
    }
    let ran = body();
    match (ran, d.end_capture()) {
        (Ok(()), Ok(g)) => Some(g),
        (ran, ended) => {
            if let Ok(g) = ended.as_ref() {
                d.drop_graph(*g);
            }
            let e = ran.err().or(ended.err()).expect("one of them failed");
            eprintln!("warning: CUDA graph capture failed ({e}); launching step by step");
            None
        }
    }
}

/// Whether the sampler captures its step as a CUDA graph (where the device supports graphs).
pub static USE_GRAPHS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The LLC data set: `n` sequences of `dist` keyed by `seed`, minibatches of `batch`.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    pub dist: SequenceDistribution,
    pub n: usize,
    pub batch: usize,
    pub seed: u64,
    /// Gradient minibatches are fresh sequences (indices over all 2^32 of the generator's)
    /// rather than picks from the n of the data set (the reference's `grad_batch_origin`).
    pub infinite: bool,
}

impl DatasetSpec {
    /// How many sequences the minibatches of `batch_tag` pick from.
    pub fn population(&self, batch_tag: u32) -> u64 {
        if self.infinite && batch_tag == tag::SGLD_BATCH {
            1 << 32
        } else {
            self.n as u64
        }
    }
}

/// Runs `cfg.chains` chains from each centre in `centres` (each of the model's parameter count)
/// and returns their traces, `[centre][chain]`. `progress(steps done)` is called now and then.
#[allow(clippy::too_many_arguments)] // the chain engine's `sample` plus the model and data
pub fn sample_dataset(
    dev: &Arc<dyn Device>,
    model: &RegressionTransformer,
    data: &DatasetSpec,
    centres: &[Vec<f32>],
    sgld: &Sgld,
    mask: Option<&[bool]>,
    cfg: &ChainConfig,
    progress: &dyn Fn(usize),
) -> Result<Vec<Vec<ChainTrace>>, GpuError> {
    let masks = SetMasks::Shared(mask);
    sample_sets(dev, model, data, centres, sgld, masks, cfg, None, progress)
}

/// Which coordinates of each weight set move.
#[derive(Clone, Copy, Debug)]
pub enum SetMasks<'a> {
    /// One mask for every centre (`None`: every coordinate moves).
    Shared(Option<&'a [bool]>),
    /// One mask per centre (restrictions side by side).
    PerCentre(&'a [Option<Vec<bool>>]),
}

impl SetMasks<'_> {
    fn of(&self, centre: usize) -> Option<&[bool]> {
        match self {
            SetMasks::Shared(m) => *m,
            SetMasks::PerCentre(ms) => ms.get(centre).and_then(|m| m.as_deref()),
        }
    }
}

/// Called after the update of each draw step with the weights `[Q, P]` and the draw's index
/// (on the stream: launches only, or a synchronising read).
pub type DrawHook<'a> = &'a mut dyn FnMut(&dyn Device, crate::Ptr, usize) -> Result<(), GpuError>;

/// The mask buffer `[Q, P]` (`None` where every coordinate of every set moves) and the sampled
/// coordinates of each set.
fn set_masks(
    dev: &Arc<dyn Device>,
    masks: SetMasks,
    centres: usize,
    chains: usize,
    p: usize,
) -> Result<(Option<Buf<u8>>, Vec<f64>), GpuError> {
    if let SetMasks::PerCentre(ms) = masks
        && ms.len() != centres
    {
        return Err(GpuError::Shape(format!(
            "{} masks for {centres} centres",
            ms.len()
        )));
    }
    let mut active = Vec::with_capacity(centres * chains);
    for ci in 0..centres {
        let m = masks.of(ci);
        if let Some(m) = m
            && m.len() != p
        {
            return Err(GpuError::Shape(format!(
                "mask has {} values, the model {p}",
                m.len()
            )));
        }
        let n = m.map_or(p, |m| m.iter().filter(|v| **v).count());
        active.extend(std::iter::repeat_n(n as f64, chains));
    }
    if (0..centres).all(|ci| masks.of(ci).is_none()) {
        return Ok((None, active));
    }
    let mut host = Vec::with_capacity(centres * chains * p);
    for ci in 0..centres {
        let row: Vec<u8> = match masks.of(ci) {
            Some(m) => m.iter().map(|v| *v as u8).collect(),
            None => vec![1; p],
        };
        for _ in 0..chains {
            host.extend_from_slice(&row);
        }
    }
    Ok((Some(Buf::from_host(dev, &host)?), active))
}

/// [`sample_dataset`] with a mask per centre and a hook at every draw.
#[allow(clippy::too_many_arguments)]
pub fn sample_sets(
    dev: &Arc<dyn Device>,
    model: &RegressionTransformer,
    data: &DatasetSpec,
    centres: &[Vec<f32>],
    sgld: &Sgld,
    masks: SetMasks,
    cfg: &ChainConfig,
    mut hook: Option<DrawHook>,
    progress: &dyn Fn(usize),
) -> Result<Vec<Vec<ChainTrace>>, GpuError> {
    let p = model.num_params();
    if let Some(c) = centres.iter().find(|c| c.len() != p) {
        return Err(GpuError::Shape(format!(
            "a centre has {} values, the model {p}",
            c.len()
        )));
    }
    let chains = cfg.chains;
    let q = centres.len() * chains;
    if q == 0 || cfg.draws == 0 {
        return Ok(centres
            .iter()
            .map(|_| vec![ChainTrace::default(); chains])
            .collect());
    }
    let k = data.dist.k;
    let b = data.batch;
    let gpu = GpuModel::new(dev, model, q, b, 2 * k)?;
    let device_data = DeviceData::new(dev, &data.dist)?;
    let d1 = model.config.token_size();
    let mut w0_host = Vec::with_capacity(q * p);
    for c in centres {
        for _ in 0..chains {
            w0_host.extend_from_slice(c);
        }
    }
    let w0 = Buf::from_host(dev, &w0_host)?;
    let w = Buf::from_host(dev, &w0_host)?;
    drop(w0_host);
    let grad = Buf::<f32>::new(dev, q * p)?;
    let dist2 = Buf::<f32>::new(dev, q * p)?;
    let toks = Buf::<f32>::new(dev, q * b * 2 * k * d1)?;
    let ys = Buf::<f32>::new(dev, q * b * k)?;
    let (mask_buf, active) = set_masks(dev, masks, centres.len(), chains, p)?;
    let hist_loss = Buf::<f32>::new(dev, cfg.draws * q * k)?;
    let hist_dist = Buf::<f32>::new(dev, cfg.draws * q)?;
    let ones = Buf::from_host(dev, &vec![1.0f32; p])?;
    let (rms_v, alpha, rms_eps) = match sgld.method {
        Method::RmsPropSgld { alpha, eps } => {
            (Some(Buf::from_host(dev, &vec![0.0f32; q * p])?), alpha, eps)
        }
        _ => (None, 0.0, 0.0),
    };
    let dist_sum = Buf::<f32>::new(dev, q)?;
    // SGNHT: momenta (initial: sqrt(eps) times the noise of step 0xFFFFFFFF) and thermostats.
    let sgnht = match sgld.method {
        Method::Sgnht { diffusion_factor } => {
            let mom = Buf::<f32>::new(dev, q * p)?;
            dev.launch(
                "sgnht_init",
                q * p.div_ceil(4),
                &[
                    mom.arg(),
                    Arg::I64(p as i64),
                    Arg::U64(cfg.seed),
                    Arg::U32(tag::SGLD_NOISE),
                    Arg::U32(cfg.first_chain),
                    Arg::I32(chains as i32),
                    Arg::F32(sgld.epsilon.sqrt() as f32),
                    Arg::I64((q * p.div_ceil(4)) as i64),
                ],
            )?;
            Some(SgnhtBuffers {
                mom,
                energy: Buf::new(dev, q * p)?,
                esum: Buf::new(dev, q)?,
                thermostat: Buf::from_host(dev, &vec![diffusion_factor; q])?,
                diffusion: diffusion_factor,
                active: Buf::from_host(dev, &active)?,
            })
        }
        _ => None,
    };
    // MALA bookkeeping (plain SGLD only, as on the CPU): this step's point and the previous one.
    let mala = if sgld.method == Method::Sgld {
        Some(MalaBuffers {
            drift: Buf::new(dev, q * p)?,
            prev_w: Buf::new(dev, q * p)?,
            prev_drift: Buf::new(dev, q * p)?,
            terms: Buf::new(dev, 2 * q * p)?,
            sums: Buf::new(dev, 2 * q)?,
            u: Buf::new(dev, q)?,
            prev_u: Buf::new(dev, q)?,
            hist: Buf::new(dev, cfg.draws * q)?,
        })
    } else {
        None
    };
    let counter = Buf::from_host(dev, &[0u32])?;
    // eval_method dataset: L_n at the updated weights of each draw step, per token `[Q, K]`.
    let full = match cfg.eval {
        EvalMethod::Dataset => Some((
            FullLoss::new(
                dev,
                model,
                data,
                &device_data,
                q,
                b,
                Some((&gpu, toks.ptr, ys.ptr)),
            )?,
            Buf::<f32>::new(dev, q * k)?,
        )),
        _ => None,
    };
    let recorded_loss = full.as_ref().map_or(gpu.tok_loss.ptr, |(_, acc)| acc.ptr);
    let d = dev.as_ref();
    let total = cfg.total_steps();
    let report_every = (total / 100).max(1);
    let mask_ptr = mask_buf.as_ref().map(|m| m.ptr).unwrap_or(crate::Ptr::NULL);
    // One sampler step; everything that changes from step to step is read from `counter`.
    // The minibatch of this step (stream SGLD_BATCH) or its fresh evaluation batch
    // (SGLD_EVAL_BATCH), as the CPU's `BatchKey::grad` and `BatchKey::eval`.
    let minibatch = |batch_tag: u32| {
        device_data.generate(
            d,
            toks.ptr,
            ys.ptr,
            q,
            b,
            data.seed,
            tag::LLC_DATASET,
            0,
            Pick::Minibatch {
                seed: data.seed,
                tag: batch_tag,
                a: 0,
                chain0: cfg.first_chain,
                chains,
                shared: cfg.shared_batches,
                n: data.population(batch_tag),
            },
            counter.ptr,
        )
    };
    // One step; `evaluate` adds the data-set loss after the update (dataset draws only).
    let step = |evaluate: bool| -> Result<(), GpuError> {
        minibatch(tag::SGLD_BATCH)?;
        gpu.forward(w.ptr, toks.ptr, Some(ys.ptr))?;
        gpu.backward(w.ptr, toks.ptr, grad.ptr)?;
        if let Some(mb) = &mala {
            mala_step(
                d,
                mb,
                &w,
                &w0,
                &grad,
                mask_ptr,
                &gpu.tok_loss,
                &ones,
                &counter,
                sgld,
                cfg,
                q,
                p,
                k,
            )?;
        }
        if let Some(sg) = &sgnht {
            d.launch(
                "sgnht_step",
                q * p.div_ceil(4),
                &[
                    w.arg(),
                    w0.arg(),
                    grad.arg(),
                    Arg::Ptr(mask_ptr),
                    dist2.arg(),
                    sg.mom.arg(),
                    sg.energy.arg(),
                    sg.thermostat.arg(),
                    Arg::I64(p as i64),
                    Arg::U64(cfg.seed),
                    Arg::U32(tag::SGLD_NOISE),
                    Arg::U32(0),
                    counter.arg(),
                    Arg::U32(cfg.first_chain),
                    Arg::I32(chains as i32),
                    Arg::F32(sgld.epsilon as f32),
                    Arg::F32((2.0 * sgld.epsilon * sg.diffusion).sqrt() as f32),
                    Arg::F32(sgld.nbeta as f32),
                    Arg::F32(sgld.gamma as f32),
                    Arg::F32(sgld.weight_decay as f32),
                    Arg::F32(sgld.bounding_box.unwrap_or(0.0) as f32),
                    Arg::I32(sgld.bounding_box.is_some() as i32),
                    Arg::I64((q * p.div_ceil(4)) as i64),
                ],
            )?;
            // esum[q] = sum_i energy[q, i]; the thermostat moves by its mean minus eps.
            chain_sums(d, sg.esum.ptr, sg.energy.ptr, &ones, q, p, 1)?;
            d.launch(
                "sgnht_thermostat",
                q,
                &[
                    sg.thermostat.arg(),
                    sg.esum.arg(),
                    sg.active.arg(),
                    Arg::F64(sgld.epsilon),
                    Arg::I64(q as i64),
                ],
            )?;
        } else {
            d.launch(
                "sgld_step",
                q * p.div_ceil(4),
                &[
                    w.arg(),
                    w0.arg(),
                    grad.arg(),
                    Arg::Ptr(mask_ptr),
                    dist2.arg(),
                    Arg::I64(p as i64),
                    Arg::U64(cfg.seed),
                    Arg::U32(tag::SGLD_NOISE),
                    Arg::U32(0),
                    counter.arg(),
                    Arg::U32(cfg.first_chain),
                    Arg::I32(chains as i32),
                    Arg::F32((0.5 * sgld.epsilon) as f32),
                    Arg::F32((sgld.epsilon.sqrt() * sgld.noise_level) as f32),
                    Arg::F32(sgld.nbeta as f32),
                    Arg::F32(sgld.gamma as f32),
                    Arg::F32(sgld.weight_decay as f32),
                    Arg::F32(sgld.bounding_box.unwrap_or(0.0) as f32),
                    Arg::I32(sgld.bounding_box.is_some() as i32),
                    Arg::Ptr(rms_v.as_ref().map(|b| b.ptr).unwrap_or(crate::Ptr::NULL)),
                    Arg::F64(alpha),
                    Arg::F64(1.0 - alpha),
                    Arg::F64(rms_eps),
                    Arg::F64(0.5 * sgld.epsilon),
                    Arg::F64(sgld.epsilon.sqrt() * sgld.noise_level),
                    Arg::I64((q * p.div_ceil(4)) as i64),
                ],
            )?;
        }
        if cfg.eval == EvalMethod::NewMinibatch {
            // The draw's loss: a fresh minibatch at the updated weights (forward only).
            minibatch(tag::SGLD_EVAL_BATCH)?;
            gpu.forward(w.ptr, toks.ptr, Some(ys.ptr))?;
        }
        if let (true, Some((fl, acc))) = (evaluate, &full) {
            fl.launch(d, w.ptr, acc.ptr)?;
        }
        // dist_sum[q] = sum_i dist2[q, i]
        chain_sums(d, dist_sum.ptr, dist2.ptr, &ones, q, p, 1)?;
        d.launch(
            "record_draw",
            q * k + q,
            &[
                hist_loss.arg(),
                hist_dist.arg(),
                Arg::Ptr(recorded_loss),
                dist_sum.arg(),
                Arg::I64((q * k) as i64),
                Arg::I64(q as i64),
                counter.arg(),
                Arg::I32(cfg.burnin as i32),
                Arg::I32(cfg.steps_between_draws.max(1) as i32),
                Arg::I32(cfg.draws as i32),
            ],
        )?;
        d.launch("advance_counter", 1, &[counter.arg(), Arg::I64(1)])
    };
    // Captured once as a CUDA graph and replayed (one launch per step) where the device can;
    // with `eval_method: dataset`, a second graph for the draw steps adds the data-set pass.
    let graphs = if USE_GRAPHS.load(std::sync::atomic::Ordering::Relaxed) {
        capture(d, || step(false)).map(|plain| {
            let with_eval = full.as_ref().and_then(|_| capture(d, || step(true)));
            (plain, with_eval)
        })
    } else {
        None
    };
    for s in 0..total {
        let evaluate = full.is_some() && cfg.draw_at(s).is_some();
        let graph = match graphs {
            Some((_, with_eval)) if evaluate => with_eval,
            Some((plain, _)) => Some(plain),
            None => None,
        };
        match graph {
            Some(g) => d.replay(g)?,
            None => step(evaluate)?,
        }
        if let (Some(h), Some(di)) = (hook.as_mut(), cfg.draw_at(s)) {
            h(d, w.ptr, di)?;
        }
        if (s + 1) % report_every == 0 || s + 1 == total {
            d.synchronize()?;
            progress(s + 1);
        }
    }
    if let Some((plain, with_eval)) = graphs {
        d.drop_graph(plain);
        if let Some(g) = with_eval {
            d.drop_graph(g);
        }
    }
    let losses = hist_loss.download()?;
    let dists = hist_dist.download()?;
    let accepts = match &mala {
        Some(mb) => mb.hist.download()?,
        None => vec![f64::NAN; cfg.draws * q],
    };
    let mut out = Vec::with_capacity(centres.len());
    for ci in 0..centres.len() {
        let mut traces = Vec::with_capacity(chains);
        for c in 0..chains {
            let qi = ci * chains + c;
            let index = cfg.first_chain + c as u32;
            let mut tr = ChainTrace::default();
            for di in 0..cfg.draws {
                let parts: Vec<f64> = losses[(di * q + qi) * k..(di * q + qi + 1) * k]
                    .iter()
                    .map(|v| *v as f64)
                    .collect();
                let loss = parts.iter().sum::<f64>() / k as f64;
                let dist = (dists[di * q + qi] as f64).sqrt();
                if !loss.is_finite() {
                    tr.failure = Some(format!(
                        "chain {index}: loss is {loss} at draw {di} (on the device, at or before \
                         this draw)"
                    ));
                    break;
                }
                if !dist.is_finite() {
                    tr.failure = Some(format!(
                        "chain {index}: weights are not finite after draw {di}"
                    ));
                    break;
                }
                tr.losses.push(loss);
                tr.distances.push(dist);
                tr.parts.push(parts);
                tr.mala.push(accepts[di * q + qi]);
            }
            traces.push(tr);
        }
        out.push(traces);
    }
    Ok(out)
}
