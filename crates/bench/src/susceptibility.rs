//! `stagewise bench susceptibility`: a per-head susceptibility scan of the L2H4 model at one
//! checkpoint (the full chains and the 8 heads' chains, 4 chains each, batched in lockstep,
//! observables folded into streaming moments), optionally next to
//! `bench/torch_susceptibility.py` (devinterp 2.0's way: one sampling run per restriction,
//! chains in sequence, every per-token loss stored, then the estimator).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use stagewise_cuda::{Device, DeviceSpec};
use stagewise_engine::rng::tag;
use stagewise_train::TrainConfig;
use stagewise_train::data::Batch;

#[derive(Clone, Debug, PartialEq)]
pub struct BenchSusceptibilityOptions {
    pub chains: usize,
    pub draws: usize,
    /// Sequences per gradient minibatch.
    pub batch: usize,
    /// Fixed sequences per observable, and observables (the first is the sampling task).
    pub sequences: usize,
    pub observables: usize,
    pub threads: Vec<usize>,
    /// Measurements per row, alternating stagewise and PyTorch; the best is shown.
    pub repeat: usize,
    pub examples: usize,
    pub torch: Option<PathBuf>,
    pub torch_script: PathBuf,
    /// Where stagewise's chains run (on a CUDA device, PyTorch runs on `cuda` too).
    pub device: DeviceSpec,
}

impl Default for BenchSusceptibilityOptions {
    fn default() -> Self {
        BenchSusceptibilityOptions {
            chains: 4,
            draws: 10,
            batch: 256,
            sequences: 96,
            observables: 2,
            threads: vec![1, 2],
            repeat: 2,
            examples: 16,
            torch: None,
            torch_script: "bench/torch_susceptibility.py".into(),
            device: DeviceSpec::Cpu,
        }
    }
}

/// Seconds for the whole scan: initial loss, sampling of every restriction, susceptibilities;
/// on `dev` (a CUDA device) or the CPU.
fn ours(
    a: &BenchSusceptibilityOptions,
    threads: usize,
    dev: Option<&Arc<dyn Device>>,
) -> Result<f64> {
    use stagewise_sampling::influence::susceptibility;
    use stagewise_sampling::mask::build_mask;
    use stagewise_sampling::observed::{ObserveConfig, sample_observed};
    use stagewise_sampling::regression::{Dataset, Observed};
    use stagewise_sampling::{ChainConfig, Potential, Sgld};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let cfg = TrainConfig::l2h4(a.examples, 0);
        let model = stagewise_models::RegressionTransformer::new(cfg.model_config())?;
        let w: Vec<f32> = model.init_params(0);
        let dist = cfg.pretrain_distribution();
        let pot = Dataset::<f32>::new(&model, dist.clone(), 16_384, a.batch, 0);
        let n = a.sequences * a.observables;
        let mut obs = Batch::<f32>::default();
        dist.sample_into(&mut obs, n, 0, tag::OBSERVABLES, 0);
        let set = Observed {
            model: &model,
            toks: obs.toks,
            ys: obs.ys,
            nseq: n,
            k: a.examples,
        };
        let tensors = model.layout.named_sizes();
        let mut masks = vec![None];
        for l in 0..2 {
            for h in 0..4 {
                let glob = stagewise_models::regression::head_glob(l, h, 4);
                masks.push(build_mask(&tensors, &[glob], &[]).map_err(anyhow::Error::msg)?);
            }
        }
        let sgld = Sgld::from_scales(0.03, 0.003, 0.001);
        let ocfg = ObserveConfig::new(0..a.sequences * a.examples);
        let chains = ChainConfig::new(a.chains, a.draws, 1);
        let t0 = Instant::now();
        let (init, res) = match dev {
            None => (
                pot.init_loss(&w),
                sample_observed(&pot, &set, &w, &sgld, &masks, &chains, &ocfg, &|_| {}),
            ),
            Some(d) => {
                let data = stagewise_cuda::sgld::DatasetSpec {
                    dist: dist.clone(),
                    n: 16_384,
                    batch: a.batch,
                    seed: 0,
                    infinite: false,
                };
                let init = stagewise_cuda::full_loss::full_losses(
                    d,
                    &model,
                    &data,
                    std::slice::from_ref(&w),
                    8192,
                )?[0]
                    .0;
                let res = stagewise_cuda::observed::sample_observed(
                    d,
                    &model,
                    &data,
                    &set,
                    &w,
                    &sgld,
                    &masks,
                    &chains,
                    &ocfg,
                    &|_| {},
                )?;
                (init, res)
            }
        };
        let values: usize = res[1..]
            .iter()
            .map(|r| susceptibility(&res[0], r, init).value.len())
            .sum();
        anyhow::ensure!(values > 0, "no susceptibility computed");
        Ok(t0.elapsed().as_secs_f64())
    })
}

fn torch(a: &BenchSusceptibilityOptions, python: &PathBuf, threads: usize) -> Result<f64> {
    let mut args: Vec<String> = [
        ("--chains", a.chains),
        ("--draws", a.draws),
        ("--batch", a.batch),
        ("--sequences", a.sequences),
        ("--observables", a.observables),
        ("--threads", threads),
        ("--k", a.examples),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    if matches!(a.device, DeviceSpec::Cuda(_)) {
        args.extend(["--device".into(), "cuda".into()]);
    }
    crate::machine::torch_json(python, &a.torch_script, &args, "seconds")
}

pub fn susceptibility(a: &BenchSusceptibilityOptions) -> Result<()> {
    let dev = stagewise_cuda::open(a.device, false)?;
    // On a device the host threads only fold the draws: one row.
    let threads = match &dev {
        Some(d) => {
            println!("device: {}", d.name());
            vec![a.threads.iter().copied().max().unwrap_or(1)]
        }
        None => {
            crate::machine::describe(&a.threads)?;
            a.threads.clone()
        }
    };
    // PyTorch has no emulator: it runs beside the CPU and CUDA paths only.
    let torch = a
        .torch
        .as_ref()
        .filter(|_| a.device != DeviceSpec::Emulator);
    let work = (9 * a.chains * a.draws) as f64;
    println!(
        "Per-head susceptibility scan of L2H4 (K={}) at one checkpoint: the full chains and 8 heads', \
         {} chains x {} draws each, gradient batch {}, {} observables x {} sequences observed at every draw; \
         seconds for the whole scan, best of {} runs alternating with PyTorch's (devinterp's way: a \
         sampling run per restriction, chains in sequence, all per-token losses stored)",
        a.examples,
        a.chains,
        a.draws,
        a.batch,
        a.observables,
        a.sequences,
        a.repeat.max(1)
    );
    println!(
        "| {} | stagewise (batched) s | restriction-chain-draws/s | PyTorch (sequential) s | ratio |",
        if dev.is_some() { "device" } else { "threads" }
    );
    println!("|---:|---:|---:|---:|---:|");
    for &t in &threads {
        let (mut s, mut p) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..a.repeat.max(1) {
            s = s.min(ours(a, t, dev.as_ref())?);
            if let Some(py) = torch {
                p = p.min(self::torch(a, py, t)?);
            }
        }
        let on = dev.as_ref().map_or(format!("{t}"), |d| d.name());
        let row = format!("| {on} | {s:.2} | {:.1} |", work / s);
        match torch {
            Some(_) => println!("{row} {p:.2} | {:.2}x |", p / s),
            None => println!("{row} - | - |"),
        }
    }
    Ok(())
}
