//! `stagewise bench gpu`: the work of a step counted (launches, GEMM flops, fewest bytes), the
//! card's ceilings, training steps/s and batched SGLD chain-draws/s on a CUDA device next to their
//! floors and to PyTorch on the same card, and where a step's time goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use stagewise_cuda::Device;
use stagewise_cuda::meter::Counts;
use stagewise_pipeline::Backend;
use stagewise_train::TrainConfig;

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
                infinite: false,
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

fn torch_json(python: &PathBuf, script: &str, args: &[String], key: &str) -> Result<f64> {
    crate::machine::torch_json(python, std::path::Path::new(script), args, key)
}

/// Runs the benchmark; see the module documentation.
pub fn gpu(a: &BenchGpuOptions) -> Result<()> {
    let mut cfg = TrainConfig::l2h4(a.examples, 0);
    let counted = count_table(a, &mut cfg)?;
    if a.count_only {
        if let Some(c) = counted.last() {
            print_kernels(c);
        }
        return Ok(());
    }
    let backend = Backend::open(a.device, a.tf32)?;
    let dev = backend
        .device()
        .cloned()
        .context("bench gpu needs --device cuda[:N]")?;
    println!("device: {}", dev.name());
    let ceil = Ceilings::measure(&dev, a.ceiling_size)?;
    let mut counted = counted.into_iter();
    let (trained, train_256) = training_table(a, &dev, &mut cfg, &ceil, &mut counted)?;
    let setup = SgldSetup::new(&cfg, a.sgld_batch)?;
    let sgld_10 = sgld_table(a, &dev, &setup, &ceil, &mut counted)?;
    profiles(a, &dev, &mut cfg, &setup, ceil.bw)?;
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
        let k = a.examples;
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

/// The work of each training and SGLD step of the options, counted without a device, as a table.
fn count_table(a: &BenchGpuOptions, cfg: &mut TrainConfig) -> Result<Vec<Counts>> {
    println!(
        "Work per step (L2H4, K={}): launches, GEMM flops, and the fewest bytes moved (each \
         input read once, each output written once)",
        a.examples
    );
    println!("| step | launches | GEMM GFLOP | GEMM MB | other kernels MB | total MB |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut counted = Vec::new();
    for &b in &a.batches {
        cfg.batch_size = b;
        let c = count_steps(cfg, None, a.sgld_batch)?;
        print_counts(&format!("training, batch {b}"), &c);
        counted.push(c);
    }
    for &ch in &a.chains {
        let c = count_steps(cfg, Some(ch), a.sgld_batch)?;
        print_counts(&format!("SGLD, {ch} chains x {}", a.sgld_batch), &c);
        counted.push(c);
    }
    Ok(counted)
}

/// Calls and bytes by kernel of one counted step, largest first.
fn print_kernels(c: &Counts) {
    println!("\nby kernel (last step above): calls, MB");
    let mut v: Vec<_> = c.per_kernel.iter().collect();
    v.sort_by(|x, y| y.1.1.total_cmp(&x.1.1));
    for (name, (calls, bytes)) in v {
        println!("| {name} | {calls} | {:.1} |", bytes / 1e6);
    }
}

/// The card's ceilings: SGEMM flop/s and copy bytes/s (read + write).
struct Ceilings {
    sgemm: f64,
    bw: f64,
}

impl Ceilings {
    /// An n^3 SGEMM (float32, or TF32 with --tf32) and a copy of 4 n^2 floats, 10 of each.
    fn measure(dev: &Arc<dyn Device>, n: usize) -> Result<Self> {
        use stagewise_cuda::{Arg, Buf, Gemm};
        let mat = Buf::from_host(dev, &vec![1.0f32 / n as f32; n * n])?;
        let out = Buf::<f32>::new(dev, n * n)?;
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
        let src = Buf::<f32>::new(dev, len)?;
        let dst = Buf::<f32>::new(dev, len)?;
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
        println!(
            "ceilings: SGEMM {n}^3 {:.1} TFLOP/s, copy {:.2} TB/s (read + write)",
            sgemm / 1e12,
            bw / 1e12
        );
        Ok(Ceilings { sgemm, bw })
    }

    /// The least time a counted step can take: its GEMMs at the SGEMM ceiling or its bytes at
    /// the copy ceiling.
    fn floor(&self, c: &Counts) -> f64 {
        (c.gemm_flops / self.sgemm).max(c.bytes() / self.bw)
    }
}

/// Training steps/s per batch size (and PyTorch eager's); returns each batch's rate with the
/// torch.compile arguments to run later, and the rate at batch 256.
#[allow(clippy::type_complexity)]
fn training_table(
    a: &BenchGpuOptions,
    dev: &Arc<dyn Device>,
    cfg: &mut TrainConfig,
    ceil: &Ceilings,
    counted: &mut impl Iterator<Item = Counts>,
) -> Result<(Vec<(usize, f64, Vec<String>)>, Option<f64>)> {
    let k = a.examples;
    let mcfg = cfg.model_config();
    println!(
        "\nL2H4 (D=4, K={k}, C=64, H=4, L=2), float32. Training: steps/s (Adam + OneCycle, batch \
         generated on the device)"
    );
    println!(
        "| batch | GFLOP/step | stagewise | at | floor (steps/s) | of floor | PyTorch eager | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // torch.compile runs last, as it compiles for a minute or more per batch size.
    let mut trained = Vec::new();
    let mut train_256 = None;
    for &b in &a.batches {
        cfg.batch_size = b;
        let mut tr = Backend::Device(dev.clone()).trainer(cfg)?;
        tr.run_to(10)?;
        let t0 = Instant::now();
        tr.run_to(10 + a.steps as u64)?;
        let ours = a.steps as f64 / t0.elapsed().as_secs_f64();
        if b == 256 {
            train_256 = Some(ours);
        }
        let fl = crate::flops_per_pass(&mcfg, b * 2 * k, 2 * k);
        let fs = 1.0 / ceil.floor(&counted.next().context("a counted step per batch")?);
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
    Ok((trained, train_256))
}

/// The SGLD benchmark's model, weights, data set (n = 16,384) and step.
struct SgldSetup {
    model: stagewise_models::RegressionTransformer,
    w: Vec<f32>,
    spec: stagewise_cuda::sgld::DatasetSpec,
    sgld: stagewise_sampling::Sgld,
}

impl SgldSetup {
    fn new(cfg: &TrainConfig, batch: usize) -> Result<Self> {
        let model = stagewise_models::RegressionTransformer::new(cfg.model_config())?;
        Ok(SgldSetup {
            w: model.init_params(0),
            model,
            spec: stagewise_cuda::sgld::DatasetSpec {
                dist: cfg.pretrain_distribution(),
                n: 16_384,
                batch,
                seed: 0,
                infinite: false,
            },
            sgld: stagewise_sampling::Sgld::from_scales(0.03, 0.003, 0.001),
        })
    }

    /// `chains` chains of `draws` draws (burn-in 1) from the weights.
    fn run(&self, dev: &Arc<dyn Device>, chains: usize, draws: usize) -> Result<()> {
        stagewise_cuda::sgld::sample_dataset(
            dev,
            &self.model,
            &self.spec,
            std::slice::from_ref(&self.w),
            &self.sgld,
            None,
            &stagewise_sampling::ChainConfig::new(chains, draws, 1),
            &|_| {},
        )?;
        Ok(())
    }
}

/// Chain-draws/s per chain count, with and without graphs (and PyTorch's); returns the rate at
/// 10 chains.
fn sgld_table(
    a: &BenchGpuOptions,
    dev: &Arc<dyn Device>,
    setup: &SgldSetup,
    ceil: &Ceilings,
    counted: &mut impl Iterator<Item = Counts>,
) -> Result<Option<f64>> {
    let k = a.examples;
    println!(
        "\nSGLD (plain, grad-minibatch), batch {} per chain: chain-draws/s; PyTorch runs the \
         reference's chains one after another",
        a.sgld_batch
    );
    println!(
        "| chains | GFLOP/step | stagewise (batched, graph) | without graph | at | floor (chain-draws/s) | of floor | PyTorch | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut sgld_10 = None;
    for &c in &a.chains {
        // Two runs of different length: their difference excludes set-up and read-back.
        let time = |draws: usize| -> Result<f64> {
            let t0 = Instant::now();
            setup.run(dev, c, draws)?;
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
        let fl = crate::flops_per_pass(&setup.model.config, c * a.sgld_batch * 2 * k, 2 * k);
        let fs = c as f64 / ceil.floor(&counted.next().context("a counted step per chain count")?);
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
    Ok(sgld_10)
}

/// Where the time goes: one training step and one SGLD step (the last chain count), every
/// operation timed between two events, when the device can profile.
fn profiles(
    a: &BenchGpuOptions,
    dev: &Arc<dyn Device>,
    cfg: &mut TrainConfig,
    setup: &SgldSetup,
    bw: f64,
) -> Result<()> {
    cfg.batch_size = *a.batches.first().unwrap_or(&256);
    let mut tr = Backend::Device(dev.clone()).trainer(cfg)?;
    tr.step()?;
    if !dev.set_profiling(true) {
        return Ok(());
    }
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
        setup.run(dev, c, 1)?;
        dev.set_profiling(true);
        setup.run(dev, c, 1)?;
        let prof = dev.take_profile()?;
        print_profile(
            &format!("SGLD step, {c} chains x {}", a.sgld_batch),
            &prof,
            bw,
        );
        stagewise_cuda::sgld::USE_GRAPHS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    dev.set_profiling(false);
    Ok(())
}
