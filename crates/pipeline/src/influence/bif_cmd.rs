//! The Bayesian influence function at a run's checkpoints: correlations over the local
//! posterior between the losses of fixed samples (per example, or per sequence: the loss
//! kernel), one Parquet file per checkpoint in `bif/<sampler>/`.

use anyhow::{Result, bail};
use stagewise_sampling::influence::ChainReduce;
use stagewise_sampling::observed::ObserveConfig;
use stagewise_tables::Column;

use super::spec;
use super::{
    Lock, ScanModel, Subject, bif_of, block_mean, claim, combine, done_steps, warn_failures,
    with_model,
};
use crate::device::Backend;
use crate::llc::{Sampler, StepSelection};
use crate::observe::Observer;
use crate::rundir::RunDir;

/// Which losses are correlated (devinterp's `correlation_method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BifLevel {
    /// Every (sequence, example) loss against every other; also written averaged per pair of
    /// sequences (devinterp's `average_tokenwise_bif`).
    #[default]
    Token,
    /// The sequences' mean losses (the loss kernel).
    Sequence,
}

impl std::str::FromStr for BifLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "token" => Ok(BifLevel::Token),
            "sequence" => Ok(BifLevel::Sequence),
            other => Err(format!("{other:?}: expected \"token\" or \"sequence\"")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct BifOptions {
    pub sampler: Sampler,
    pub select: StepSelection,
    /// One restriction spec (`None`: every weight moves).
    pub restrict: Option<String>,
    /// Observable specs whose sequences are the samples.
    pub samples: Vec<String>,
    /// Sequences per observable.
    pub sequences: usize,
    pub level: BifLevel,
    pub reduce: ChainReduce,
    /// The loss covariance instead of the correlation.
    pub covariance: bool,
    /// Where the chains run (regression runs only on a device).
    pub device: Backend,
}

impl Default for BifOptions {
    fn default() -> Self {
        BifOptions {
            sampler: Sampler::tiny(),
            select: StepSelection::default(),
            restrict: None,
            samples: vec!["pretrain".into()],
            sequences: 16,
            level: BifLevel::Token,
            reduce: ChainReduce::Stack,
            covariance: false,
            device: Backend::Cpu,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BifResult {
    pub folder: String,
    pub done_before: usize,
    /// Per checkpoint computed: the matrix side m and the matrix (row-major `m x m`).
    pub steps: Vec<(u64, usize, Vec<f64>)>,
}

/// The BIF at a run's checkpoints.
pub fn bif(run: &RunDir, opts: &BifOptions, obs: &dyn Observer) -> Result<BifResult> {
    let restrict: Vec<String> = opts.restrict.iter().cloned().collect();
    with_model(
        run,
        &opts.device,
        &opts.sampler,
        &opts.select,
        &restrict,
        &opts.samples,
        opts.sequences,
        obs,
        &mut |subject, model| scan_bif(run, opts, obs, subject, model),
    )
}

fn scan_bif(
    run: &RunDir,
    opts: &BifOptions,
    obs: &dyn Observer,
    subject: Subject,
    model: &dyn ScanModel,
) -> Result<BifResult> {
    let (restrictions, observables, k) =
        (&subject.restrictions, &subject.observables, subject.per_seq);
    if restrictions.len() > 1 {
        bail!("--restrict: the BIF takes one restriction (a preset such as heads names several)");
    }
    let mask = match restrictions.first() {
        Some(r) => spec::masks(&subject.tensors, std::slice::from_ref(r))?.remove(0),
        None => None,
    };
    let sampler = &opts.sampler;
    let folder = run.root().sub("bif").sub(&sampler.name);
    let _lock = Lock::take(&folder, "lock", "stagewise bif")?;
    folder.clean_interrupted(false)?;
    let n = opts.sequences;
    let setup = format!(
        "samples: [{}]\nsequences: {n}\nrestriction: {:?}\nlevel: {:?}\nreduce: {:?}\ncovariance: {}\nsampler:\n{}",
        observables
            .iter()
            .map(|o| format!("{o:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        restrictions.first().map(|r| (&r.name, &r.include)),
        opts.level,
        opts.reduce,
        opts.covariance,
        serde_saphyr::to_string(&sampler.config)?
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    claim(&folder, &setup, "bif")?;
    let done = done_steps(&folder)?;
    let todo: Vec<u64> = subject
        .steps
        .iter()
        .copied()
        .filter(|s| !done.contains(s))
        .collect();
    let chains = sampler.config.chains();
    let m_tokens = observables.len() * n * k;
    let group = match opts.level {
        BifLevel::Token => 1,
        BifLevel::Sequence => k,
    };
    let m = m_tokens / group;
    // The chains' co-moment matrices (plus the chain-mean one) in float64.
    let matrices = chains.chains + usize::from(opts.reduce == ChainReduce::Mean);
    crate::memory::check(
        "the BIF's co-moment matrices",
        (8 * m * m * matrices) as u128,
        "--sequences, --samples, --level sequence or the sampler's num_chains",
    )?;
    obs.message(&format!(
        "BIF at {} checkpoints of {} ({} already done): {m} x {m} {} ({} sequences x {k} {} per sample set), {} chains x {} draws",
        todo.len(),
        run.display(),
        done.len(),
        if opts.covariance {
            "covariances"
        } else {
            "correlations"
        },
        n,
        subject.unit,
        chains.chains,
        chains.draws
    ));
    let per_ckpt = chains.total_steps() as u64;
    obs.start(0, per_ckpt * todo.len() as u64, "SGLD steps");
    let mut out = Vec::new();
    for (i, &step) in todo.iter().enumerate() {
        let w = model.weights(step)?;
        let ocfg = ObserveConfig {
            group,
            full: true,
            chain_mean: opts.reduce == ChainReduce::Mean,
            ..ObserveConfig::new(0..n * k)
        };
        let base = per_ckpt * i as u64;
        let tick = |d: usize| obs.tick(base + d as u64, &|| format!("checkpoint {step}"));
        let res = model.sample(&w, sampler, std::slice::from_ref(&mask), &ocfg, &tick)?;
        warn_failures(obs, step, "bif", &res[0]);
        let b = bif_of(&res[0], opts.reduce, opts.covariance).map_err(anyhow::Error::msg)?;
        folder.put(
            &format!("{step}.parquet"),
            &matrix_parquet(step, &b.value, b.se.as_deref(), observables, n, k, group)?,
        )?;
        if opts.level == BifLevel::Token {
            let pairs = block_mean(&b.value, m, k);
            folder.put(
                &format!("{step}.sequences.parquet"),
                &matrix_parquet(step, &pairs, None, observables, n, k, k)?,
            )?;
        }
        combine(&folder, "bif")?;
        let off: Vec<f64> = (0..m)
            .flat_map(|a| (0..m).filter(move |c| *c != a).map(move |c| (a, c)))
            .map(|(a, c)| b.value[a * m + c])
            .filter(|v| v.is_finite())
            .collect();
        let mean_off = off.iter().sum::<f64>() / off.len().max(1) as f64;
        obs.message(&format!(
            "step {step}: {m} x {m}, mean off-diagonal {mean_off:.4} over {} draws",
            b.draws
        ));
        out.push((step, m, b.value));
    }
    obs.finish();
    Ok(BifResult {
        folder: folder.display(),
        done_before: done.len(),
        steps: out,
    })
}

/// Long format: one row per (i, j) with each side's observable, sequence and example
/// (`token` null for sequence-level values).
fn matrix_parquet(
    step: u64,
    values: &[f64],
    se: Option<&[f64]>,
    observables: &[String],
    n: usize,
    k: usize,
    group: usize,
) -> Result<Vec<u8>> {
    let per_obs = n * k / group;
    let m = observables.len() * per_obs;
    let label = |i: usize| {
        let o = observables[i / per_obs].clone();
        let within = i % per_obs;
        let (seq, tok) = if group == 1 {
            (within / k, Some(within % k))
        } else {
            (within, None)
        };
        (o, seq as i64, tok.map(|t| t as i64))
    };
    let labels: Vec<_> = (0..m).map(label).collect();
    let mut cols: Vec<(String, Column)> =
        vec![("step".into(), Column::Int(vec![Some(step as i64); m * m]))];
    for (side, pick) in [("i", 0usize), ("j", 1)] {
        let idx = |r: usize| if pick == 0 { r / m } else { r % m };
        cols.push((
            format!("observable_{side}"),
            Column::Text((0..m * m).map(|r| Some(labels[idx(r)].0.clone())).collect()),
        ));
        cols.push((
            format!("sequence_{side}"),
            Column::Int((0..m * m).map(|r| Some(labels[idx(r)].1)).collect()),
        ));
        cols.push((
            format!("token_{side}"),
            Column::Int((0..m * m).map(|r| labels[idx(r)].2).collect()),
        ));
    }
    cols.push((
        "value".into(),
        Column::Float(values.iter().map(|v| Some(*v)).collect()),
    ));
    cols.push((
        "se".into(),
        Column::Float((0..m * m).map(|r| se.map(|s| s[r])).collect()),
    ));
    Ok(stagewise_tables::columns_parquet_bytes(&cols)?)
}
