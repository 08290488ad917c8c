//! `stagewise check-device`: the same training and SGLD steps on the CPU and on a device from
//! the same weights and data, with the largest differences.

use anyhow::{Context, Result, bail};
use clap::Args;
use stagewise_cuda::DeviceSpec;
use stagewise_cuda::check::{CheckOptions, check_device};
use stagewise_pipeline::Backend;

#[derive(Args)]
pub struct CheckDeviceArgs {
    /// The device to compare with the CPU: cuda, cuda:N or emulator.
    #[arg(long, default_value = "cuda")]
    device: DeviceSpec,
    /// In-context examples K of the L2H4 model.
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// SGLD chains.
    #[arg(long, default_value_t = 4)]
    chains: usize,
}

pub fn check(a: &CheckDeviceArgs) -> Result<()> {
    let backend = Backend::open(a.device, crate::tf32())?;
    let dev = backend
        .device()
        .context("--device cpu: nothing to compare; use cuda or emulator")?;
    println!("device: {}", dev.name());
    let opts = CheckOptions {
        examples: a.examples,
        batch: a.batch,
        chains: a.chains,
        tf32: crate::tf32(),
    };
    if opts.tf32 {
        println!("--tf32: GEMM tolerances x30 (inputs rounded to 10 mantissa bits)");
    }
    let rows = check_device(dev, &opts)?;
    println!("| quantity | rel. L2 difference | max |diff| / max |cpu| | tolerance |");
    println!("|---|---:|---:|---:|");
    let mut failed = Vec::new();
    for r in &rows {
        println!(
            "| {} | {:.2e} | {:.2e} | {:.0e}{} |",
            r.what,
            r.rel_l2,
            r.max_rel,
            r.tolerance,
            if r.ok() { "" } else { " FAIL" }
        );
        if !r.ok() {
            failed.push(r.what.trim().to_string());
        }
    }
    if !failed.is_empty() {
        bail!(
            "device and CPU disagree beyond tolerance on: {}",
            failed.join(", ")
        );
    }
    println!("device and CPU agree.");
    Ok(())
}

impl crate::Command {
    /// Whether the command runs on a CUDA device (or its emulator), where `--tf32` acts.
    pub(crate) fn on_device(&self) -> bool {
        use crate::{BenchCommand, Command, LlcCommand};
        use stagewise_cuda::DeviceSpec::Cpu;
        match self {
            Command::Train(a) => !matches!(a.device, Cpu),
            Command::Reproduce(a) => !matches!(a.device(), Cpu),
            Command::Llc(a) => match &a.command {
                None => !matches!(a.run.device.device, Cpu),
                Some(LlcCommand::Calibrate(c)) => !matches!(c.device(), Cpu),
                Some(LlcCommand::Check(_)) => false,
            },
            Command::Bench(BenchCommand::Gpu(_)) | Command::CheckDevice(_) => true,
            Command::Run(a) => !matches!(a.device, Cpu),
            Command::Susceptibility(a) => !matches!(a.device, Cpu),
            Command::Bif(a) => !matches!(a.device, Cpu),
            _ => false,
        }
    }
}
