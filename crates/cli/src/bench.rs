//! `stagewise bench train|sgld|gpu`: the arguments of the benchmarks in `stagewise-bench`.

use std::path::PathBuf;

use clap::Args;
use stagewise_bench::{BenchGpuOptions, BenchSgldOptions, BenchTrainOptions};

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    batches: Vec<usize>,
    /// Thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// In-context examples K (16: the current reference; 8: the paper).
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// Timed steps per measurement (after 3 warm-up steps).
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Measurements per cell, alternating stagewise and PyTorch; the best is shown.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Python interpreter with torch: also run bench/torch_train.py and print the ratio.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Path of the PyTorch script.
    #[arg(long, default_value = "bench/torch_train.py")]
    torch_script: PathBuf,
    /// Then time a whole `stagewise train` of --whole-config for this many steps next to the
    /// bare step rate (0: skip).
    #[arg(long, default_value_t = 3000)]
    whole: u64,
    #[arg(long, default_value = "configs/l2h4-paper-k8.yaml")]
    whole_config: PathBuf,
}

impl BenchTrainArgs {
    pub fn options(&self) -> BenchTrainOptions {
        BenchTrainOptions {
            batches: self.batches.clone(),
            threads: self.threads.clone(),
            examples: self.examples,
            steps: self.steps,
            repeat: self.repeat,
            torch: self.torch.clone(),
            torch_script: self.torch_script.clone(),
            whole_steps: self.whole,
            whole_config: self.whole_config.clone(),
        }
    }
}

#[derive(Args)]
pub struct BenchSgldArgs {
    /// Chains.
    #[arg(long, default_value_t = 8)]
    chains: usize,
    /// Sequences per minibatch.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Draws per chain timed.
    #[arg(long, default_value_t = 5)]
    draws: usize,
    /// Measurements per row, alternating stagewise and PyTorch; the best is shown.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// In-context examples K.
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// Python interpreter with torch: also run bench/torch_sgld.py and print the ratio.
    #[arg(long)]
    torch: Option<PathBuf>,
    #[arg(long, default_value = "bench/torch_sgld.py")]
    torch_script: PathBuf,
}

impl BenchSgldArgs {
    pub fn options(&self) -> BenchSgldOptions {
        BenchSgldOptions {
            chains: self.chains,
            batch: self.batch,
            threads: self.threads.clone(),
            draws: self.draws,
            repeat: self.repeat,
            examples: self.examples,
            torch: self.torch.clone(),
            torch_script: self.torch_script.clone(),
        }
    }
}

#[derive(Args)]
pub struct BenchGpuArgs {
    /// cuda, cuda:N (or emulator, uselessly slow but runnable).
    #[arg(long, default_value = "cuda")]
    device: stagewise_cuda::DeviceSpec,
    /// In-context examples K.
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// Training batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    batches: Vec<usize>,
    /// SGLD chain counts (each chain a minibatch of --sgld-batch sequences).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,10")]
    chains: Vec<usize>,
    #[arg(long, default_value_t = 1024)]
    sgld_batch: usize,
    /// Timed training steps per measurement (after 10 warm-up steps).
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Timed SGLD steps per measurement.
    #[arg(long, default_value_t = 60)]
    draws: usize,
    /// Python interpreter with torch (CUDA): also time bench/torch_train.py (eager and
    /// torch.compile) and bench/torch_sgld.py on the same device.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Skip the torch.compile runs (they compile for a minute or more).
    #[arg(long)]
    no_compile: bool,
    /// Only count each step's launches, GEMM flops and bytes (no device needed).
    #[arg(long)]
    count_only: bool,
    /// Size of the ceiling measurements: an N^3 SGEMM and a copy of 4 N^2 floats.
    #[arg(long, default_value_t = 4096)]
    ceiling_size: usize,
}

impl BenchGpuArgs {
    pub fn options(&self) -> BenchGpuOptions {
        BenchGpuOptions {
            device: self.device,
            examples: self.examples,
            batches: self.batches.clone(),
            chains: self.chains.clone(),
            sgld_batch: self.sgld_batch,
            steps: self.steps,
            draws: self.draws,
            torch: self.torch.clone(),
            no_compile: self.no_compile,
            count_only: self.count_only,
            ceiling_size: self.ceiling_size,
            tf32: crate::tf32(),
        }
    }
}

#[derive(Args)]
pub struct BenchLmArgs {
    /// Model size: reference (2 layers, d_model 256, 8 x 32 heads, n_ctx 1024, vocabulary
    /// 5,000) or quick (configs/lm-quick.yaml's sizes).
    #[arg(long, default_value = "reference")]
    model: String,
    /// Sequences per batch (default: 4 for reference, 16 for quick).
    #[arg(long)]
    batch: Option<usize>,
    /// Thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Timed steps per measurement (after 2 warm-up steps).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Measurements per cell, alternating stagewise and PyTorch; the best is shown.
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// Python interpreter with torch: also run bench/torch_lm.py and print the ratio.
    #[arg(long)]
    torch: Option<PathBuf>,
    #[arg(long, default_value = "bench/torch_lm.py")]
    torch_script: PathBuf,
}

impl BenchLmArgs {
    pub fn options(&self) -> stagewise_bench::BenchLmOptions {
        stagewise_bench::BenchLmOptions {
            model: self.model.clone(),
            batch: self.batch,
            threads: self.threads.clone(),
            steps: self.steps,
            repeat: self.repeat,
            torch: self.torch.clone(),
            torch_script: self.torch_script.clone(),
        }
    }
}
