//! `stagewise bench parity`: multitask sparse parity runs of the same shapes trained together
//! (one step of all runs at a time) against the same runs trained one by one, and optionally
//! against `bench/torch_parity.py` (the runs one after another in PyTorch, as the reference
//! trains a sweep), on the same machine; throughput in run-steps per second.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use stagewise_train::parity::{ParityRuns, ParityTrainConfig};

#[derive(Clone, Debug, PartialEq)]
pub struct BenchParityOptions {
    /// Runs (8 tasks, 16 features, 3 bits, hidden 50, batch 1,024; alpha cycling through the
    /// reference sweep's values, seed = run index).
    pub runs: usize,
    /// Timed steps per run.
    pub steps: usize,
    pub threads: Vec<usize>,
    /// Measurements per cell; the best is shown.
    pub repeat: usize,
    /// Python interpreter with torch: also run the PyTorch script and print the ratio.
    pub torch: Option<PathBuf>,
    pub torch_script: PathBuf,
}

impl Default for BenchParityOptions {
    fn default() -> Self {
        BenchParityOptions {
            runs: 16,
            steps: 200,
            threads: vec![1, 2],
            repeat: 2,
            torch: None,
            torch_script: "bench/torch_parity.py".into(),
        }
    }
}

const ALPHAS: [f64; 6] = [0.5, 0.8, 1.0, 2.0, 3.0, 4.0];

fn configs(o: &BenchParityOptions) -> Vec<ParityTrainConfig> {
    (0..o.runs)
        .map(|r| ParityTrainConfig {
            num_steps: o.steps as u64 + 10,
            alpha: ALPHAS[r % ALPHAS.len()],
            seed: r as u64,
            ..ParityTrainConfig::default()
        })
        .collect()
}

/// Run-steps per second of the runs trained together (`together`) or one by one.
fn ours(o: &BenchParityOptions, threads: usize, together: bool) -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let cfgs = configs(o);
        let groups: Vec<Vec<ParityTrainConfig>> = if together {
            vec![cfgs]
        } else {
            cfgs.into_iter().map(|c| vec![c]).collect()
        };
        let mut elapsed = 0.0;
        for g in groups {
            let mut runs = ParityRuns::<f32>::new(&g)?;
            runs.train_step();
            let t0 = Instant::now();
            for _ in 0..o.steps {
                runs.train_step();
            }
            elapsed += t0.elapsed().as_secs_f64();
        }
        Ok((o.runs * o.steps) as f64 / elapsed)
    })
}

fn torch(o: &BenchParityOptions, python: &PathBuf, threads: usize) -> Result<f64> {
    let args: Vec<String> = [
        ("--runs", o.runs),
        ("--steps", o.steps),
        ("--threads", threads),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    crate::machine::torch_json(python, &o.torch_script, &args, "run_steps_per_s")
}

pub fn parity(o: &BenchParityOptions) -> Result<()> {
    if o.runs == 0 || o.steps == 0 {
        bail!("--runs and --steps must be at least 1");
    }
    crate::machine::describe(&o.threads)?;
    println!(
        "multitask sparse parity: {} runs (8 tasks, 16 features, 3 task bits, hidden 50, 1,352 parameters; batch 1,024; Adam), \
         {} timed steps each, batches generated in the timing; run-steps/s, best of {}",
        o.runs,
        o.steps,
        o.repeat.max(1)
    );
    let with_torch = o.torch.is_some();
    println!(
        "| threads | together (run-steps/s) | one by one | together / one by one |{}",
        if with_torch {
            " PyTorch, one by one | together / PyTorch |"
        } else {
            ""
        }
    );
    println!(
        "|---:|---:|---:|---:|{}",
        if with_torch { "---:|---:|" } else { "" }
    );
    for &th in &o.threads {
        let (mut tog, mut one, mut py) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..o.repeat.max(1) {
            tog = tog.max(ours(o, th, true)?);
            one = one.max(ours(o, th, false)?);
            if let Some(p) = &o.torch {
                py = py.max(torch(o, p, th)?);
            }
        }
        let tail = if with_torch {
            format!(" {py:.0} | {:.2}x |", tog / py)
        } else {
            String::new()
        };
        println!("| {th} | {tog:.0} | {one:.0} | {:.2}x |{tail}", tog / one);
    }
    Ok(())
}
