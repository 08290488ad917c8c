//! Benchmarks. `stagewise bench train`: training steps per second of the reference's L2H4 model (K = 16 or
//! `--examples`, M = infinity, Adam + OneCycle), for each batch size and thread count, optionally next to the
//! PyTorch script `bench/torch_train.py` run in the same process tree on the same machine.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use stagewise_pipeline::Backend;
use stagewise_train::{TrainConfig, Trainer};

#[derive(Clone, Debug, PartialEq)]
pub struct BenchTrainOptions {
    /// Batch sizes.
    pub batches: Vec<usize>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// In-context examples K (16: the current reference; 8: the paper).
    pub examples: usize,
    /// Timed steps per measurement (after 3 warm-up steps).
    pub steps: usize,
    /// Python interpreter with torch: also run bench/torch_train.py and print the ratio.
    pub torch: Option<PathBuf>,
    /// Path of the PyTorch script.
    pub torch_script: PathBuf,
}

fn ours(k: usize, batch: usize, threads: usize, steps: usize) -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let mut cfg = TrainConfig::l2h4(k, 0);
        cfg.batch_size = batch;
        let mut tr = Trainer::<f32>::new(cfg)?;
        for _ in 0..3 {
            tr.step()?;
        }
        let t0 = Instant::now();
        for _ in 0..steps {
            tr.step()?;
        }
        Ok(steps as f64 / t0.elapsed().as_secs_f64())
    })
}

fn torch(
    python: &PathBuf,
    script: &PathBuf,
    k: usize,
    batch: usize,
    threads: usize,
    steps: usize,
) -> Result<f64> {
    let out = Command::new(python)
        .arg(script)
        .args([
            "--k",
            &k.to_string(),
            "--batch",
            &batch.to_string(),
            "--threads",
            &threads.to_string(),
            "--steps",
            &steps.to_string(),
        ])
        .output()
        .with_context(|| format!("cannot run {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("unexpected output {line:?}"))?;
    v["steps_per_s"].as_f64().context("steps_per_s missing")
}

pub fn train(args: &BenchTrainOptions) -> Result<()> {
    println!(
        "L2H4 (D=4, K={}, C=64, H=4, L=2), Adam + OneCycle, float32; steps/s over {} steps",
        args.examples, args.steps
    );
    match &args.torch {
        Some(_) => {
            println!("| batch | threads | stagewise | PyTorch eager | ratio |");
            println!("|---:|---:|---:|---:|---:|");
        }
        None => {
            println!("| batch | threads | stagewise |");
            println!("|---:|---:|---:|");
        }
    }
    for &b in &args.batches {
        for &t in &args.threads {
            let s = ours(args.examples, b, t, args.steps)?;
            match &args.torch {
                Some(py) => {
                    let p = torch(py, &args.torch_script, args.examples, b, t, args.steps)?;
                    println!("| {b} | {t} | {s:.2} | {p:.2} | {:.2}x |", s / p);
                }
                None => println!("| {b} | {t} | {s:.2} |"),
            }
        }
    }
    Ok(())
}

/// `stagewise bench sgld`: SGLD chain-draws per second of the L2H4 model (all chains of a
/// checkpoint batched in lockstep), optionally next to `bench/torch_sgld.py` (the reference's
/// one-chain-after-another sampler in PyTorch).
#[derive(Clone, Debug, PartialEq)]
pub struct BenchSgldOptions {
    /// Chains.
    pub chains: usize,
    /// Sequences per minibatch.
    pub batch: usize,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Draws per chain timed.
    pub draws: usize,
    /// In-context examples K.
    pub examples: usize,
    /// Python interpreter with torch: also run bench/torch_sgld.py and print the ratio.
    pub torch: Option<PathBuf>,
    pub torch_script: PathBuf,
}

fn ours_sgld(a: &BenchSgldOptions, threads: usize) -> Result<f64> {
    use stagewise_sampling::regression::Dataset;
    use stagewise_sampling::{ChainConfig, Sgld, sample};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let cfg = TrainConfig::l2h4(a.examples, 0);
        let model = stagewise_models::RegressionTransformer::new(cfg.model_config())?;
        let w: Vec<f32> = model.init_params(0);
        let pot = Dataset::<f32>::new(&model, cfg.pretrain_distribution(), 16_384, a.batch, 0);
        let sgld = Sgld::from_scales(0.03, 0.003, 0.001);
        sample(&pot, &w, &sgld, None, &ChainConfig::new(a.chains, 1, 1));
        let t0 = Instant::now();
        sample(
            &pot,
            &w,
            &sgld,
            None,
            &ChainConfig::new(a.chains, a.draws, 2),
        );
        Ok((a.chains * a.draws) as f64 / t0.elapsed().as_secs_f64())
    })
}

fn torch_sgld(a: &BenchSgldOptions, python: &PathBuf, threads: usize) -> Result<f64> {
    let out = Command::new(python)
        .arg(&a.torch_script)
        .args([
            "--chains",
            &a.chains.to_string(),
            "--batch",
            &a.batch.to_string(),
        ])
        .args([
            "--threads",
            &threads.to_string(),
            "--draws",
            &a.draws.to_string(),
            "--k",
            &a.examples.to_string(),
        ])
        .output()
        .with_context(|| {
            format!(
                "cannot run {} {}",
                python.display(),
                a.torch_script.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            a.torch_script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("unexpected output {line:?}"))?;
    v["chain_draws_per_s"]
        .as_f64()
        .context("chain_draws_per_s missing")
}

pub fn sgld(a: &BenchSgldOptions) -> Result<()> {
    println!(
        "SGLD on L2H4 (K={}), {} chains x batch {}, float32; chain-draws/s over {} draws per chain",
        a.examples, a.chains, a.batch, a.draws
    );
    println!("| threads | stagewise (batched chains) | PyTorch (chains in sequence) | ratio |");
    println!("|---:|---:|---:|---:|");
    for &t in &a.threads {
        let s = ours_sgld(a, t)?;
        match &a.torch {
            Some(py) => {
                let p = torch_sgld(a, py, t)?;
                println!("| {t} | {s:.2} | {p:.2} | {:.2}x |", s / p);
            }
            None => println!("| {t} | {s:.2} | - | - |"),
        }
    }
    Ok(())
}

/// `stagewise bench gpu`: the card's two ceilings (a large SGEMM through cuBLAS, a device copy),
/// training steps/s, batched SGLD chain-draws/s, and the same work in PyTorch on the same card.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchGpuOptions {
    /// cuda, cuda:N (or emulator, uselessly slow but runnable).
    pub device: stagewise_cuda::DeviceSpec,
    /// In-context examples K.
    pub examples: usize,
    /// Training batch sizes.
    pub batches: Vec<usize>,
    /// SGLD chain counts (each chain a minibatch of --sgld-batch sequences).
    pub chains: Vec<usize>,
    pub sgld_batch: usize,
    /// Timed training steps per measurement (after 10 warm-up steps).
    pub steps: usize,
    /// Timed SGLD steps per measurement.
    pub draws: usize,
    /// Python interpreter with torch (CUDA): also time bench/torch_train.py (eager and
    /// torch.compile) and bench/torch_sgld.py on the same device.
    pub torch: Option<PathBuf>,
    /// Skip the torch.compile runs (they compile for a minute or more).
    pub no_compile: bool,
    /// Only count each step's launches, GEMM flops and bytes (no device needed).
    pub count_only: bool,
    /// Size of the ceiling measurements: an N^3 SGEMM and a copy of 4 N^2 floats.
    pub ceiling_size: usize,
    /// Let cuBLAS use TF32 tensor cores.
    pub tf32: bool,
}

impl Default for BenchTrainOptions {
    fn default() -> Self {
        BenchTrainOptions {
            batches: vec![256, 1024],
            threads: vec![1, 2],
            examples: 16,
            steps: 30,
            torch: None,
            torch_script: "bench/torch_train.py".into(),
        }
    }
}

impl Default for BenchSgldOptions {
    fn default() -> Self {
        BenchSgldOptions {
            chains: 8,
            batch: 1024,
            threads: vec![1, 2],
            draws: 5,
            examples: 16,
            torch: None,
            torch_script: "bench/torch_sgld.py".into(),
        }
    }
}

impl Default for BenchGpuOptions {
    fn default() -> Self {
        BenchGpuOptions {
            device: stagewise_cuda::DeviceSpec::Cuda(0),
            examples: 16,
            batches: vec![256, 1024],
            chains: vec![1, 2, 4, 8, 10],
            sgld_batch: 1024,
            steps: 300,
            draws: 60,
            torch: None,
            no_compile: false,
            count_only: false,
            ceiling_size: 4096,
            tf32: false,
        }
    }
}

/// Launches, flops and bytes of one training step and one SGLD step, counted without a device.
fn count_steps(
    cfg: &TrainConfig,
    chains: Option<usize>,
    sgld_batch: usize,
) -> Result<stagewise_cuda::meter::Counts> {
    use stagewise_cuda::meter::Meter;
    use std::sync::Arc;
    let meter = Arc::new(Meter::dry());
    let dev: Arc<dyn stagewise_cuda::Device> = meter.clone();
    match chains {
        None => {
            let mut tr = Backend::Device(dev).trainer(cfg)?;
            tr.step()?;
            meter.take();
            tr.step()?;
        }
        Some(c) => {
            let model = stagewise_models::RegressionTransformer::new(cfg.model_config())?;
            let w: Vec<f32> = model.init_params(0);
            let spec = stagewise_cuda::sgld::DatasetSpec {
                dist: cfg.pretrain_distribution(),
                n: 16_384,
                batch: sgld_batch,
                seed: 0,
            };
            let sgld = stagewise_sampling::Sgld::from_scales(0.03, 0.003, 0.001);
            let one = stagewise_sampling::ChainConfig::new(c, 1, 1);
            stagewise_cuda::sgld::sample_dataset(
                &dev,
                &model,
                &spec,
                std::slice::from_ref(&w),
                &sgld,
                None,
                &one,
                &|_| {},
            )?;
        }
    }
    Ok(meter.take())
}

fn print_counts(what: &str, c: &stagewise_cuda::meter::Counts) {
    println!(
        "| {what} | {} ({} GEMMs) | {:.2} | {:.1} | {:.1} | {:.1} |",
        c.launches,
        c.gemms,
        c.gemm_flops / 1e9,
        c.gemm_bytes / 1e6,
        c.kernel_bytes / 1e6,
        c.bytes() / 1e6
    );
}

/// Per-operation times of one profiled step, grouped by label, the slowest first, with the
/// achieved bandwidth (the operation's fewest bytes over its time) against the copy ceiling `bw`.
fn print_profile(title: &str, prof: &[stagewise_cuda::device::Timed], bw: f64) {
    let mut by: std::collections::BTreeMap<&str, (usize, f64, f64, f64)> = Default::default();
    for t in prof {
        let e = by.entry(&t.label).or_default();
        e.0 += 1;
        e.1 += t.seconds;
        e.2 += t.bytes;
        e.3 += t.flops;
    }
    let total: f64 = prof.iter().map(|t| t.seconds).sum();
    let bytes: f64 = prof.iter().map(|t| t.bytes).sum();
    println!(
        "\n{title}: {} operations, {:.1} us on the GPU in all ({:.0} GB/s of fewest bytes, {:.0} % of the copy ceiling)",
        prof.len(),
        total * 1e6,
        bytes / total / 1e9,
        100.0 * bytes / total / bw
    );
    println!("| operation | calls | us | share | GB/s | of copy | TFLOP/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows: Vec<_> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    for (label, (calls, secs, bytes, flops)) in rows.into_iter().take(20) {
        println!(
            "| {label} | {calls} | {:.1} | {:.0} % | {:.0} | {:.0} % | {} |",
            secs * 1e6,
            100.0 * secs / total,
            bytes / secs / 1e9,
            100.0 * bytes / secs / bw,
            if flops > 0.0 {
                format!("{:.1}", flops / secs / 1e12)
            } else {
                "-".into()
            }
        );
    }
}

/// Floating-point operations of one forward + backward pass of `rows` rows (tokens) of the
/// L2H4 model at T tokens per sequence: the linear layers (2 flops per multiply-add; backward
/// twice the forward) and causal attention (scores and weighted values over T(T+1)/2 pairs).
pub fn flops_per_pass(cfg: &stagewise_models::RegressionConfig, rows: usize, t: usize) -> f64 {
    let (c, m, d1) = (
        cfg.embed_size as f64,
        cfg.mlp_size as f64,
        cfg.token_size() as f64,
    );
    let per_row_linear = d1 * c + cfg.num_layers as f64 * (3.0 * c * c + c * c + 2.0 * c * m);
    let pairs_per_row = (t + 1) as f64 / 2.0;
    let per_row_attn = cfg.num_layers as f64 * 2.0 * pairs_per_row * c;
    3.0 * 2.0 * rows as f64 * (per_row_linear + per_row_attn)
}

fn torch_json(python: &PathBuf, script: &str, args: &[String], key: &str) -> Result<f64> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {} {script}", python.display()))?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("unexpected output {text:?}"))?;
    v[key].as_f64().with_context(|| format!("{key} missing"))
}

pub fn gpu(a: &BenchGpuOptions) -> Result<()> {
    use stagewise_cuda::sgld::{DatasetSpec, sample_dataset};
    use stagewise_cuda::{Arg, Buf, Gemm};
    use stagewise_sampling::{ChainConfig, Sgld};
    let k = a.examples;
    let mut cfg = TrainConfig::l2h4(k, 0);
    println!(
        "Work per step (L2H4, K={k}): launches, GEMM flops, and the fewest bytes moved (each \
         input read once, each output written once)"
    );
    println!("| step | launches | GEMM GFLOP | GEMM MB | other kernels MB | total MB |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut counted = Vec::new();
    for &b in &a.batches {
        cfg.batch_size = b;
        let c = count_steps(&cfg, None, a.sgld_batch)?;
        print_counts(&format!("training, batch {b}"), &c);
        counted.push(c);
    }
    for &ch in &a.chains {
        let c = count_steps(&cfg, Some(ch), a.sgld_batch)?;
        print_counts(&format!("SGLD, {ch} chains x {}", a.sgld_batch), &c);
        counted.push(c);
    }
    if a.count_only {
        if let Some(c) = counted.last() {
            println!("\nby kernel (last step above): calls, MB");
            let mut v: Vec<_> = c.per_kernel.iter().collect();
            v.sort_by(|x, y| y.1.1.total_cmp(&x.1.1));
            for (name, (calls, bytes)) in v {
                println!("| {name} | {calls} | {:.1} |", bytes / 1e6);
            }
        }
        return Ok(());
    }
    let backend = Backend::open(a.device, a.tf32)?;
    let dev = backend
        .device()
        .cloned()
        .context("bench gpu needs --device cuda[:N]")?;
    println!("device: {}", dev.name());
    // Ceilings: SGEMM N^3 (N = 4096: float32, or TF32 with --tf32) and a copy of 4 N^2 floats
    // (256 MiB).
    let n = a.ceiling_size;
    let mat = Buf::from_host(&dev, &vec![1.0f32 / n as f32; n * n])?;
    let out = Buf::<f32>::new(&dev, n * n)?;
    let g = Gemm {
        trans_a: false,
        trans_b: false,
        m: n,
        n,
        k: n,
        alpha: 1.0,
        a: mat.ptr,
        lda: n,
        stride_a: 0,
        b: mat.ptr,
        ldb: n,
        stride_b: 0,
        beta: 0.0,
        c: out.ptr,
        ldc: n,
        stride_c: 0,
        batch: 1,
    };
    dev.gemm(&g)?;
    dev.synchronize()?;
    let t0 = Instant::now();
    for _ in 0..10 {
        dev.gemm(&g)?;
    }
    dev.synchronize()?;
    let sgemm = 10.0 * 2.0 * (n as f64).powi(3) / t0.elapsed().as_secs_f64();
    let len = 4 * n * n;
    let src = Buf::<f32>::new(&dev, len)?;
    let dst = Buf::<f32>::new(&dev, len)?;
    let copy = || {
        dev.launch(
            "copy_f32",
            len,
            &[dst.arg(), src.arg(), Arg::I64(len as i64)],
        )
    };
    copy()?;
    dev.synchronize()?;
    let t0 = Instant::now();
    for _ in 0..10 {
        copy()?;
    }
    dev.synchronize()?;
    let bw = 10.0 * 8.0 * len as f64 / t0.elapsed().as_secs_f64();
    drop((mat, out, src, dst));
    println!(
        "ceilings: SGEMM {n}^3 {:.1} TFLOP/s, copy {:.2} TB/s (read + write)",
        sgemm / 1e12,
        bw / 1e12
    );
    let mcfg = cfg.model_config();
    let floor = |c: &stagewise_cuda::meter::Counts| (c.gemm_flops / sgemm).max(c.bytes() / bw);
    let mut counted = counted.into_iter();
    println!(
        "\nL2H4 (D=4, K={k}, C=64, H=4, L=2), float32. Training: steps/s (Adam + OneCycle, batch \
         generated on the device)"
    );
    println!(
        "| batch | GFLOP/step | stagewise | at | floor (steps/s) | of floor | PyTorch eager | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // (batch, our steps/s, torch.compile arguments): torch.compile runs last, as it compiles for
    // a minute or more per batch size.
    let mut trained = Vec::new();
    let mut train_256 = None;
    for &b in &a.batches {
        cfg.batch_size = b;
        let mut tr = Backend::Device(dev.clone()).trainer(&cfg)?;
        tr.run_to(10)?;
        let t0 = Instant::now();
        tr.run_to(10 + a.steps as u64)?;
        let ours = a.steps as f64 / t0.elapsed().as_secs_f64();
        if b == 256 {
            train_256 = Some(ours);
        }
        let fl = flops_per_pass(&mcfg, b * 2 * k, 2 * k);
        let fs = 1.0 / floor(&counted.next().expect("counted"));
        let args = |compile: bool| {
            let mut v: Vec<String> = [
                "--k",
                &k.to_string(),
                "--batch",
                &b.to_string(),
                "--steps",
                &a.steps.to_string(),
                "--device",
                "cuda",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if compile {
                v.push("--compile".into());
            }
            v
        };
        let eager = match &a.torch {
            Some(py) => Some(torch_json(
                py,
                "bench/torch_train.py",
                &args(false),
                "steps_per_s",
            )?),
            None => None,
        };
        trained.push((b, ours, args(true)));
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let ratio = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}x", ours / v));
        println!(
            "| {b} | {:.2} | {ours:.0} | {:.2} TFLOP/s | {fs:.0} | {:.0} % | {} | {} |",
            fl / 1e9,
            fl * ours / 1e12,
            100.0 * ours / fs,
            cell(eager),
            ratio(eager),
        );
    }
    println!(
        "\nSGLD (plain, grad-minibatch), batch {} per chain: chain-draws/s; PyTorch runs the \
         reference's chains one after another",
        a.sgld_batch
    );
    println!(
        "| chains | GFLOP/step | stagewise (batched, graph) | without graph | at | floor (chain-draws/s) | of floor | PyTorch | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let model = stagewise_models::RegressionTransformer::new(mcfg.clone())?;
    let w: Vec<f32> = model.init_params(0);
    let spec = DatasetSpec {
        dist: cfg.pretrain_distribution(),
        n: 16_384,
        batch: a.sgld_batch,
        seed: 0,
    };
    let sgld = Sgld::from_scales(0.03, 0.003, 0.001);
    let mut sgld_10 = None;
    for &c in &a.chains {
        // Two runs of different length: their difference excludes set-up and read-back.
        let time = |draws: usize| -> Result<f64> {
            let t0 = Instant::now();
            sample_dataset(
                &dev,
                &model,
                &spec,
                std::slice::from_ref(&w),
                &sgld,
                None,
                &ChainConfig::new(c, draws, 1),
                &|_| {},
            )?;
            Ok(t0.elapsed().as_secs_f64())
        };
        let rate = |graphs: bool| -> Result<f64> {
            stagewise_cuda::sgld::USE_GRAPHS.store(graphs, std::sync::atomic::Ordering::Relaxed);
            time(2)?;
            let (short, long) = (time(a.draws / 4)?, time(a.draws)?);
            let steps = (a.draws - a.draws / 4) as f64;
            Ok(c as f64 * steps / (long - short).max(1e-9))
        };
        let eager = rate(false)?;
        let ours = rate(true)?;
        if c == 10 {
            sgld_10 = Some(ours);
        }
        let fl = flops_per_pass(&mcfg, c * a.sgld_batch * 2 * k, 2 * k);
        let fs = c as f64 / floor(&counted.next().expect("counted"));
        let theirs = match &a.torch {
            Some(py) => {
                let args: Vec<String> = [
                    "--chains",
                    &c.to_string(),
                    "--batch",
                    &a.sgld_batch.to_string(),
                    "--draws",
                    &(a.draws / 4).max(5).to_string(),
                    "--k",
                    &k.to_string(),
                    "--device",
                    "cuda",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                Some(torch_json(
                    py,
                    "bench/torch_sgld.py",
                    &args,
                    "chain_draws_per_s",
                )?)
            }
            None => None,
        };
        println!(
            "| {c} | {:.1} | {ours:.0} | {eager:.0} | {:.2} TFLOP/s | {fs:.0} | {:.0} % | {} | {} |",
            fl / 1e9,
            fl * ours / c as f64 / 1e12,
            100.0 * ours / fs,
            theirs.map_or("-".into(), |v| format!("{v:.0}")),
            theirs.map_or("-".into(), |v| format!("{:.1}x", ours / v))
        );
    }
    // Where the time goes: one step of each, every operation between two events.
    cfg.batch_size = *a.batches.first().unwrap_or(&256);
    let mut tr = Backend::Device(dev.clone()).trainer(&cfg)?;
    tr.step()?;
    if dev.set_profiling(true) {
        tr.step()?;
        let prof = dev.take_profile()?;
        print_profile(
            &format!("training step, batch {}", cfg.batch_size),
            &prof,
            bw,
        );
        if let Some(&c) = a.chains.last() {
            stagewise_cuda::sgld::USE_GRAPHS.store(false, std::sync::atomic::Ordering::Relaxed);
            dev.set_profiling(false);
            let one = ChainConfig::new(c, 1, 1);
            let run = || {
                sample_dataset(
                    &dev,
                    &model,
                    &spec,
                    std::slice::from_ref(&w),
                    &sgld,
                    None,
                    &one,
                    &|_| {},
                )
            };
            run()?;
            dev.set_profiling(true);
            run()?;
            let prof = dev.take_profile()?;
            print_profile(
                &format!("SGLD step, {c} chains x {}", a.sgld_batch),
                &prof,
                bw,
            );
            stagewise_cuda::sgld::USE_GRAPHS.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        dev.set_profiling(false);
    }
    if let (Some(py), false) = (&a.torch, a.no_compile) {
        println!("\ntorch.compile (mode reduce-overhead) of the same training step, same card");
        println!("| batch | stagewise | torch.compile | ratio |");
        println!("|---:|---:|---:|---:|");
        for (b, ours, args) in &trained {
            let c = torch_json(py, "bench/torch_train.py", args, "steps_per_s")?;
            println!("| {b} | {ours:.0} | {c:.0} | {:.2}x |", ours / c);
        }
    }
    if let (Some(tr), Some(sg)) = (train_256, sgld_10) {
        let (train_s, sgld_s) = (500_000.0 / tr, 190.0 * 10.0 * 5000.0 / sg);
        println!(
            "\npaper scale, one seed, K = {k}{}: 500k training steps (batch 256) {:.1} min + 190 \
             checkpoints x 10 chains x 5000 draws {:.1} min = {:.1} min",
            if k == 8 {
                " (the paper's)"
            } else {
                " (the paper's K is 8: --examples 8)"
            },
            train_s / 60.0,
            sgld_s / 60.0,
            (train_s + sgld_s) / 60.0
        );
    }
    Ok(())
}
