//! The same training and SGLD steps on the CPU and on a device from the same weights and data,
//! with the largest differences (`stagewise check-device`).

use std::sync::Arc;

use stagewise_engine::rng::tag;
use stagewise_models::RegressionTransformer;
use stagewise_models::batch::ChunkedRunner;
use stagewise_sampling::chains::{ChainConfig, EvalMethod, sample};
use stagewise_sampling::mask::build_mask;
use stagewise_sampling::observed::{ObserveConfig, sample_observed};
use stagewise_sampling::regression::{Dataset, Observed};
use stagewise_sampling::sgld::Sgld;
use stagewise_train::TrainConfig;
use stagewise_train::adam::Adam;
use stagewise_train::data::Batch;
use stagewise_train::trainer::StepEngine;

use crate::data::{DeviceData, Pick};
use crate::model::GpuModel;
use crate::sgld::{DatasetSpec, sample_dataset};
use crate::train::{CudaEngine, DeviceAdam};
use crate::{Buf, Device, GpuError};

/// What to compare.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOptions {
    /// In-context examples K of the L2H4 model.
    pub examples: usize,
    /// Sequences per batch.
    pub batch: usize,
    /// SGLD chains.
    pub chains: usize,
    /// The device runs its GEMMs in TF32: GEMM tolerances x30 (inputs rounded to 10 mantissa
    /// bits, 2^-11 relative).
    pub tf32: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            examples: 16,
            batch: 256,
            chains: 4,
            tf32: false,
        }
    }
}

/// One compared quantity.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckRow {
    pub what: String,
    /// `|device - cpu| / |cpu|` over the whole vector.
    pub rel_l2: f64,
    /// The largest elementwise difference relative to the largest CPU value.
    pub max_rel: f64,
    pub tolerance: f64,
}

impl CheckRow {
    pub fn ok(&self) -> bool {
        self.rel_l2.is_finite() && self.rel_l2 <= self.tolerance
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("{0}")]
    Model(String),
}

impl From<stagewise_models::ModelError> for CheckError {
    fn from(e: stagewise_models::ModelError) -> Self {
        CheckError::Model(e.to_string())
    }
}

impl From<stagewise_train::trainer::TrainError> for CheckError {
    fn from(e: stagewise_train::trainer::TrainError) -> Self {
        CheckError::Model(e.to_string())
    }
}

/// `|a - b| / |b|` over whole vectors, and the largest elementwise `|a - b|` relative to the
/// largest `|b|`.
fn diffs(a: &[f32], b: &[f32]) -> (f64, f64) {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    let scale = b
        .iter()
        .map(|v| v.abs())
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE) as f64;
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    ((num / den.max(f64::MIN_POSITIVE)).sqrt(), worst / scale)
}

/// Tolerances for float32 with different summation orders (cuBLAS vs the CPU's blocked GEMMs):
/// sums of n terms carry a relative error up to ~n * 2^-24 in the worst case and ~sqrt(n) * 2^-24
/// typically; n is at most B*T = 8192 rows here, so 1e-4 relative (1700 ulps) is generous for
/// typical error and exceeded by any indexing or formula mistake (errors of order 1).
const TOL: f64 = 1e-4;

/// Runs the comparison on `dev` and returns one row per quantity.
pub fn check_device(dev: &Arc<dyn Device>, a: &CheckOptions) -> Result<Vec<CheckRow>, CheckError> {
    let cfg = TrainConfig::l2h4(a.examples, 0);
    let model = RegressionTransformer::new(cfg.model_config())?;
    let dist = cfg.pretrain_distribution();
    let (b, k) = (a.batch, a.examples);
    let p = model.num_params();
    let mut rows: Vec<(String, f64, f64, f64)> = Vec::new();

    // 1. Data: the training batch of step 7 generated on the device vs the CPU.
    let data = DeviceData::new(dev, &dist)?;
    let toks = Buf::<f32>::new(dev, b * 2 * k * 5)?;
    let ys = Buf::<f32>::new(dev, b * k)?;
    let seed = cfg.seeds().sampling;
    data.generate(
        dev.as_ref(),
        toks.ptr,
        ys.ptr,
        1,
        b,
        seed,
        tag::TRAIN_BATCH,
        7,
        Pick::Range { base: 0 },
        crate::Ptr::NULL,
    )?;
    let mut batch = Batch::<f32>::default();
    dist.sample_into(&mut batch, b, seed, tag::TRAIN_BATCH, 7);
    let (e, m) = diffs(&toks.download()?, &batch.toks);
    rows.push(("data: tokens".into(), e, m, 1e-6));
    let (e, m) = diffs(&ys.download()?, &batch.ys_t);
    rows.push(("data: targets".into(), e, m, 1e-6));

    // 2. Loss and gradient from the same weights and batch.
    let w: Vec<f32> = model.init_params(3);
    let gpu = GpuModel::new(dev, &model, 1, b, 2 * k)?;
    let wb = Buf::from_host(dev, &w)?;
    let tb = Buf::from_host(dev, &batch.toks)?;
    let yb = Buf::from_host(dev, &batch.ys_t)?;
    let gb = Buf::<f32>::new(dev, p)?;
    gpu.forward(wb.ptr, tb.ptr, Some(yb.ptr))?;
    gpu.backward(wb.ptr, tb.ptr, gb.ptr)?;
    let (loss_g, parts_g) = gpu.losses()?.remove(0);
    let mut runner = ChunkedRunner::<f32>::new(ChunkedRunner::<f32>::DEFAULT_CHUNK);
    let mut grad_c = vec![0.0f32; p];
    let loss_c =
        runner.loss_and_grad(&model, &w, &batch.toks, &batch.ys_t, b, 2 * k, &mut grad_c)?;
    rows.push((
        "loss".into(),
        (loss_g - loss_c).abs() / loss_c,
        (loss_g - loss_c).abs() / loss_c,
        TOL,
    ));
    let pc: Vec<f32> = runner.token_losses().iter().map(|v| *v as f32).collect();
    let pg: Vec<f32> = parts_g.iter().map(|v| *v as f32).collect();
    let (e, m) = diffs(&pg, &pc);
    rows.push(("per-token losses".into(), e, m, TOL));
    let grad_g = gb.download()?;
    let (e, m) = diffs(&grad_g, &grad_c);
    rows.push(("gradient".into(), e, m, 1e-3));
    for info in &model.layout.params {
        let r = info.range();
        let (e, m) = diffs(&grad_g[r.clone()], &grad_c[r]);
        rows.push((
            format!(
                "  {}",
                info.name
                    .trim_start_matches(stagewise_models::regression::PREFIX)
            ),
            e,
            m,
            1e-3,
        ));
    }

    // 3. Adam on the same gradient: must be bitwise the CPU's.
    let mut cpu_adam = Adam::<f32>::new(p, 0.9, 0.999, 1e-8, 0.0);
    let mut dev_adam = DeviceAdam::new(dev, p, [0.9, 0.999], 0.0)?;
    let gc = Buf::from_host(dev, &grad_c)?;
    let mut w_cpu = w.clone();
    for s in 0..3 {
        cpu_adam.step(&mut w_cpu, &grad_c, 1e-3 * (s + 1) as f64);
        dev_adam.step(dev.as_ref(), &wb, &gc, 1e-3 * (s + 1) as f64)?;
    }
    let (e, m) = diffs(&wb.download()?, &w_cpu);
    rows.push(("Adam x3, same gradient (exact)".into(), e, m, 0.0));

    // 4. SGLD: chains from the same centre on a data set of n = 4096, 3 draws.
    let sgld = Sgld::from_scales(0.03, 0.003, 0.001);
    let mut chains = ChainConfig::new(a.chains, 3, 5);
    chains.burnin = 1;
    let spec = DatasetSpec {
        dist: dist.clone(),
        n: 4096,
        batch: b,
        seed: 9,
        infinite: false,
    };
    // The device's chains from the centre w (each launch of them as one batch).
    let on_device = |c: &ChainConfig| {
        sample_dataset(
            dev,
            &model,
            &spec,
            std::slice::from_ref(&w),
            &sgld,
            None,
            c,
            &|_| {},
        )
    };
    let got = on_device(&chains)?;
    let pot = Dataset::<f32>::new(&model, dist.clone(), 4096, b, 9);
    let want = sample(&pot, &w, &sgld, None, &chains);
    let flat = |t: &[stagewise_sampling::ChainTrace],
                f: fn(&stagewise_sampling::ChainTrace) -> &Vec<f64>| {
        t.iter()
            .flat_map(|c| f(c).iter().map(|v| *v as f32))
            .collect::<Vec<f32>>()
    };
    let (e, m) = diffs(&flat(&got[0], |c| &c.losses), &flat(&want, |c| &c.losses));
    rows.push((
        format!("SGLD {} chains x 3 draws: losses", a.chains),
        e,
        m,
        1e-3,
    ));
    let (e, m) = diffs(
        &flat(&got[0], |c| &c.distances),
        &flat(&want, |c| &c.distances),
    );
    rows.push(("SGLD: distance from the centre".into(), e, m, 1e-2));
    // The other draw evaluations: a fresh minibatch, and the whole data set (in chunks).
    for (eval, what) in [
        (EvalMethod::NewMinibatch, "new-minibatch"),
        (EvalMethod::Dataset, "dataset"),
    ] {
        let mut c = chains.clone();
        c.eval = eval;
        let got = on_device(&c)?;
        let want = sample(&pot, &w, &sgld, None, &c);
        let (e, m) = diffs(&flat(&got[0], |c| &c.losses), &flat(&want, |c| &c.losses));
        rows.push((format!("SGLD, eval_method {what}: losses"), e, m, 1e-3));
    }

    // The susceptibility scan's batch: the full chains and two heads' side by side (a mask per
    // weight set), 32 fixed sequences observed at every draw.
    let mut masks = vec![None];
    for (l, h) in [(0, 0), (1, 3)] {
        let glob = stagewise_models::regression::head_glob(l, h, 4);
        let tensors = model.layout.named_sizes();
        masks.push(build_mask(&tensors, &[glob], &[]).map_err(CheckError::Model)?);
    }
    let mut obs = Batch::<f32>::default();
    dist.sample_into(&mut obs, 32, 3, tag::OBSERVABLES, 0);
    let set = Observed {
        model: &model,
        toks: obs.toks,
        ys: obs.ys,
        nseq: 32,
        k: a.examples,
    };
    let ocfg = ObserveConfig {
        store_draws: true,
        ..ObserveConfig::new(0..32 * a.examples)
    };
    let got_obs = crate::observed::sample_observed(
        dev,
        &model,
        &spec,
        &set,
        &w,
        &sgld,
        &masks,
        &chains,
        &ocfg,
        &|_| {},
    )?;
    let want_obs = sample_observed(&pot, &set, &w, &sgld, &masks, &chains, &ocfg, &|_| {});
    let draws = |r: &[stagewise_sampling::observed::ObservedRestriction]| -> Vec<f32> {
        r.iter()
            .flat_map(|x| &x.chains)
            .flat_map(|c| c.draws.iter().flatten().map(|v| *v as f32))
            .collect()
    };
    let (e, m) = diffs(&draws(&got_obs), &draws(&want_obs));
    rows.push((
        "susceptibility batch (full + 2 heads): observed losses".into(),
        e,
        m,
        1e-3,
    ));

    // TF32 GEMMs round their inputs to 10 mantissa bits (2^-11 relative): ~30x the float32 slack.
    if a.tf32 {
        for r in rows.iter_mut().filter(|r| r.3 > 1e-6) {
            r.3 *= 30.0;
        }
    }
    // 5. Graphs: steps replayed from a captured graph against the same steps launched one by
    // one (same kernels and arguments: equal up to cuBLAS choosing other algorithms).
    let make = || {
        CudaEngine::new(
            dev.clone(),
            &cfg,
            model.clone(),
            cfg.pretrain_distribution(),
        )
    };
    let (mut replayed, mut launched) = (make()?, make()?);
    let lrs = [1e-3, 2e-3, 3e-3];
    let lr: Vec<f32> = replayed.run(0, &lrs)?.iter().map(|v| *v as f32).collect();
    let ll: Vec<f32> = lrs
        .iter()
        .enumerate()
        .map(|(t, lr)| launched.step(t as u64, *lr).map(|v| v as f32))
        .collect::<Result<_, _>>()?;
    let (e, m) = diffs(&lr, &ll);
    rows.push(("training x3, graph vs launches: losses".into(), e, m, 1e-5));
    let (e, m) = diffs(&replayed.state()?.params, &launched.state()?.params);
    rows.push(("training x3, graph vs launches: weights".into(), e, m, 1e-5));
    crate::sgld::USE_GRAPHS.store(false, std::sync::atomic::Ordering::Relaxed);
    let eager = on_device(&chains);
    crate::sgld::USE_GRAPHS.store(true, std::sync::atomic::Ordering::Relaxed);
    let (e, m) = diffs(
        &flat(&eager?[0], |c| &c.losses),
        &flat(&got[0], |c| &c.losses),
    );
    rows.push(("SGLD, graph vs launches: losses".into(), e, m, 1e-5));

    Ok(rows
        .into_iter()
        .map(|(what, rel_l2, max_rel, tolerance)| CheckRow {
            what,
            rel_l2,
            max_rel,
            tolerance,
        })
        .collect())
}
