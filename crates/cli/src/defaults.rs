//! The command line's defaults are the library's: each command parsed with only its required
//! arguments gives the stage's `Default` options (clap's attributes repeat the values for the
//! help text; these tests keep the two in step).

use clap::Parser;
use stagewise_bench::{BenchGpuOptions, BenchSgldOptions, BenchTrainOptions};
use stagewise_pipeline::ed::EdOptions;
use stagewise_pipeline::indicators::IndicatorsOptions;
use stagewise_pipeline::known::KnownOptions;
use stagewise_pipeline::llc::PerLaunch;
use stagewise_pipeline::stages::StagesOptions;

use crate::{BenchCommand, Cli, Command, LlcArgs, LlcCommand};

fn parse(args: &[&str]) -> Command {
    let argv = std::iter::once("stagewise").chain(args.iter().copied());
    Cli::try_parse_from(argv).unwrap().command
}

#[test]
fn analysis_commands_default_to_the_stage_defaults() {
    let Command::Ed(a) = parse(&["ed", "RUN"]) else {
        panic!()
    };
    assert_eq!(
        format!("{:?}", a.options()),
        format!("{:?}", EdOptions::default())
    );
    let Command::Stages(a) = parse(&["stages", "RUN"]) else {
        panic!()
    };
    assert_eq!(a.options(), StagesOptions::default());
    let Command::Indicators(a) = parse(&["indicators", "RUN"]) else {
        panic!()
    };
    assert_eq!(a.options(), IndicatorsOptions::default());
}

#[test]
fn llc_commands_default_to_the_library_defaults() {
    let Command::Llc(a) = parse(&["llc", "check"]) else {
        panic!()
    };
    let LlcArgs {
        command: Some(LlcCommand::Check(c)),
        ..
    } = *a
    else {
        panic!()
    };
    assert_eq!(c.options(), KnownOptions::default());
    let Command::Llc(a) = parse(&["llc", "RUN", "--config", "s.yaml"]) else {
        panic!()
    };
    assert_eq!(a.run.device.per_launch(), PerLaunch::default());
}

#[test]
fn benchmarks_default_to_the_bench_defaults() {
    let Command::Bench(BenchCommand::Train(a)) = parse(&["bench", "train"]) else {
        panic!()
    };
    assert_eq!(a.options(), BenchTrainOptions::default());
    let Command::Bench(BenchCommand::Sgld(a)) = parse(&["bench", "sgld"]) else {
        panic!()
    };
    assert_eq!(a.options(), BenchSgldOptions::default());
    let Command::Bench(BenchCommand::Gpu(a)) = parse(&["bench", "gpu"]) else {
        panic!()
    };
    assert_eq!(a.options(), BenchGpuOptions::default());
}
