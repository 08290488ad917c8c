//! Susceptibilities and the BIF on a trained regression run: the tables' shape and internal
//! consistency, a restriction batched with others equal to it run alone, resuming, the BIF's
//! symmetry and averages, and bad input.

use stagewise_cuda::DeviceSpec;
use stagewise_pipeline::influence::{
    BifLevel, BifOptions, SusceptibilityOptions, bif, susceptibility,
};
use stagewise_pipeline::llc::{Sampler, StepSelection};
use stagewise_pipeline::train::{TrainOptions, train};
use stagewise_pipeline::{Backend, Quiet, RunDir};
use stagewise_tables::{Column, read_columns};

const SAMPLER: &str = "num_chains: 2\nnum_draws: 12\ngrad_batch_origin: eval-dataset\ngrad_batch_size: 8\n\
    eval_dataset_size: 64\ngradient_scale: 0.01\nlocalization_scale: 0.001\nnoise_scale: 0.0003\n";

fn trained(name: &str) -> (std::path::PathBuf, RunDir) {
    let dir =
        std::env::temp_dir().join(format!("stagewise-influence-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = RunDir::local(dir.join("run"));
    let opts = TrainOptions {
        out: Some(run.clone()),
        sets: vec![
            "num_steps=40".into(),
            "checkpointer_config.checkpoint_steps.linear_space=3".into(),
        ],
        ..TrainOptions::default()
    };
    train(&opts, &Quiet).unwrap();
    (dir, run)
}

fn sampler(name: &str) -> Sampler {
    Sampler::from_text(name, SAMPLER, "test sampler", &[]).unwrap()
}

fn sus_opts(restrict: &[&str], observables: &[&str]) -> SusceptibilityOptions {
    SusceptibilityOptions {
        sampler: sampler("s"),
        select: StepSelection {
            steps: vec![20],
            ..StepSelection::default()
        },
        restrict: restrict.iter().map(|s| s.to_string()).collect(),
        observables: observables.iter().map(|s| s.to_string()).collect(),
        sequences: 3,
        keep_draws: false,
        ..SusceptibilityOptions::default()
    }
}

fn floats(cols: &[(String, Column)], name: &str) -> Vec<f64> {
    match &cols.iter().find(|c| c.0 == name).unwrap().1 {
        Column::Float(v) => v.iter().map(|x| x.unwrap_or(f64::NAN)).collect(),
        _ => panic!("{name} is not a float column"),
    }
}

fn ints(cols: &[(String, Column)], name: &str) -> Vec<Option<i64>> {
    match &cols.iter().find(|c| c.0 == name).unwrap().1 {
        Column::Int(v) => v.clone(),
        _ => panic!("{name} is not an int column"),
    }
}

fn texts(cols: &[(String, Column)], name: &str) -> Vec<String> {
    match &cols.iter().find(|c| c.0 == name).unwrap().1 {
        Column::Text(v) => v.iter().map(|x| x.clone().unwrap()).collect(),
        _ => panic!("{name} is not a text column"),
    }
}

#[test]
fn susceptibility_tables_are_consistent_and_a_batched_restriction_equals_it_alone() {
    let (dir, run) = trained("sus");
    let k = run.read_config().unwrap().task_config.max_examples;
    let opts = sus_opts(&["heads"], &["true,inputs:3"]);
    let r = susceptibility(&run, &opts, &Quiet).unwrap();
    assert_eq!(r.steps.len(), 1);
    let heads = 8; // the quick config's L2H4
    let folder = dir.join("run/susceptibility/s");
    let summary = read_columns(&folder.join("susceptibility.parquet")).unwrap();
    // pretrain (always observed) + true + inputs:3, each per example and averaged.
    assert_eq!(floats(&summary, "chi").len(), heads * 3 * (k + 1));
    let tokens = read_columns(&folder.join("20.tokens.parquet")).unwrap();
    assert_eq!(floats(&tokens, "chi").len(), heads * 3 * 3 * k);
    let (chi, se) = (floats(&summary, "chi"), floats(&summary, "se"));
    assert!(chi.iter().all(|v| v.is_finite()) && se.iter().all(|v| v.is_finite() && *v >= 0.0));
    // Each summary value is the mean of the per-sequence values it stands for.
    let (rs, os, ts) = (
        texts(&summary, "restriction"),
        texts(&summary, "observable"),
        ints(&summary, "token"),
    );
    let (trs, tos, tts, tchi) = (
        texts(&tokens, "restriction"),
        texts(&tokens, "observable"),
        ints(&tokens, "token"),
        floats(&tokens, "chi"),
    );
    for i in 0..chi.len() {
        let vals: Vec<f64> = (0..tchi.len())
            .filter(|&j| trs[j] == rs[i] && tos[j] == os[i] && (ts[i].is_none() || tts[j] == ts[i]))
            .map(|j| tchi[j])
            .collect();
        assert_eq!(vals.len(), if ts[i].is_some() { 3 } else { 3 * k });
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        assert!(
            (mean - chi[i]).abs() <= 1e-12 * (1.0 + mean.abs()),
            "row {i}: {mean} vs {}",
            chi[i]
        );
    }

    // One head alone, in its own folder (another sampler name): the same values.
    let mut alone = sus_opts(
        &["L1H2=token_sequence_transformer.blocks.1.attention.attention.weight[2/4]"],
        &["true,inputs:3"],
    );
    alone.sampler = sampler("alone");
    alone.keep_draws = true;
    let a = susceptibility(&run, &alone, &Quiet).unwrap();
    // Every draw's losses, on request: full and L1H2, 2 chains x 12 draws, 3 sets x 3 x k.
    let draws = read_columns(&dir.join("run/susceptibility/alone/20.draws.parquet")).unwrap();
    let loss = floats(&draws, "loss");
    assert_eq!(loss.len(), 2 * 2 * 12 * 3 * 3 * k);
    assert!(loss.iter().all(|v| v.is_finite() && *v >= 0.0));
    let names = texts(&draws, "restriction");
    assert_eq!(
        (names[0].as_str(), names[loss.len() - 1].as_str()),
        ("full", "L1H2")
    );
    let batched: Vec<_> = r.steps[0]
        .1
        .iter()
        .filter(|x| x.restriction == "L1H2")
        .collect();
    assert_eq!(batched.len(), a.steps[0].1.len());
    for (b, s) in batched.iter().zip(&a.steps[0].1) {
        assert_eq!(
            (b.chi, b.se, &b.observable, b.token),
            (s.chi, s.se, &s.observable, s.token)
        );
    }

    // The report shows the scan: a heatmap of heads x observables.
    let page = stagewise_pipeline::report::report(&run, &Default::default()).unwrap();
    let html = std::fs::read_to_string(&page.index).unwrap();
    assert!(
        html.contains("Susceptibility at step 20") && html.contains("L1H3"),
        "no heatmap"
    );
    assert!(dir.join("run/report/susceptibility_s_20.png").exists());

    // Resuming does nothing; another setup in the same folder is refused, naming setup.yaml.
    let again = susceptibility(&run, &opts, &Quiet).unwrap();
    assert_eq!((again.done_before, again.steps.len()), (1, 0));
    let other = sus_opts(&["heads"], &["true"]);
    let e = susceptibility(&run, &other, &Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("setup.yaml") && e.contains("another"), "{e}");
    // Bad input.
    for (restrict, observables, want) in [
        (vec!["nothing=no.such.tensor"], vec!["true"], "no parameter"),
        (vec!["heads"], vec!["bogus"], "expected pretrain, true"),
        (vec!["heads"], vec!["inputs:-2"], "positive number"),
        (vec!["heads", "heads"], vec!["true"], "given twice"),
    ] {
        let mut o = sus_opts(&restrict, &observables);
        o.sampler = sampler("bad");
        let e = susceptibility(&run, &o, &Quiet).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    assert!(
        !dir.join("run/susceptibility/bad")
            .join("20.parquet")
            .exists()
    );
}

#[test]
fn the_bif_is_symmetric_with_a_unit_diagonal_and_its_sequence_averages_are_block_means() {
    let (dir, run) = trained("bif");
    let k = run.read_config().unwrap().task_config.max_examples;
    let opts = BifOptions {
        sampler: sampler("s"),
        select: StepSelection {
            steps: vec![20],
            ..StepSelection::default()
        },
        sequences: 2,
        ..BifOptions::default()
    };
    let r = bif(&run, &opts, &Quiet).unwrap();
    let (_, m, v) = &r.steps[0];
    assert_eq!(*m, 2 * k);
    for i in 0..*m {
        assert_eq!(v[i * m + i], 1.0);
        for j in 0..*m {
            assert_eq!(v[i * m + j], v[j * m + i]);
            assert!(v[i * m + j].abs() <= 1.0 + 1e-12);
        }
    }
    let folder = dir.join("run/bif/s");
    let table = read_columns(&folder.join("bif.parquet")).unwrap();
    let values = floats(&table, "value");
    assert_eq!(values, *v);
    let (si, sj) = (ints(&table, "sequence_i"), ints(&table, "sequence_j"));
    assert_eq!((si[k], sj[k]), (Some(0), Some(1)));
    let pairs = read_columns(&folder.join("20.sequences.parquet")).unwrap();
    let pv = floats(&pairs, "value");
    assert_eq!(pv.len(), 4);
    let block = |a: usize, b: usize| {
        (0..k)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .map(|(i, j)| v[(a * k + i) * m + b * k + j])
            .sum::<f64>()
            / (k * k) as f64
    };
    assert!((pv[1] - block(0, 1)).abs() < 1e-12);

    // The loss kernel of the sequences' mean losses.
    let seq = BifOptions {
        sampler: sampler("seq"),
        level: BifLevel::Sequence,
        ..opts.clone()
    };
    let r = bif(&run, &seq, &Quiet).unwrap();
    assert_eq!(r.steps[0].1, 2);
    assert_eq!(r.steps[0].2[0], 1.0);
    let e = bif(
        &run,
        &BifOptions {
            sampler: sampler("h"),
            restrict: Some("heads".into()),
            ..opts
        },
        &Quiet,
    )
    .unwrap_err();
    assert!(e.to_string().contains("one restriction"), "{e}");
}

/// `--device emulator` runs every restriction's chains with the CUDA backend's kernels: the
/// susceptibilities and the BIF follow the CPU's (measured: within 3e-7 of the largest |chi|,
/// and 4e-7 on the BIF's correlations).
#[test]
fn susceptibilities_and_the_bif_on_the_device_follow_the_cpu() {
    let (_dir, run) = trained("device");
    let emulator = Backend::open(DeviceSpec::Emulator, false).unwrap();
    let cpu_opts = sus_opts(&["layers"], &["inputs:3"]);
    let dev_opts = SusceptibilityOptions {
        sampler: sampler("on-device"),
        device: emulator.clone(),
        ..cpu_opts.clone()
    };
    let cpu = susceptibility(&run, &cpu_opts, &Quiet).unwrap();
    let dev = susceptibility(&run, &dev_opts, &Quiet).unwrap();
    let (c, d) = (&cpu.steps[0].1, &dev.steps[0].1);
    assert_eq!(c.len(), d.len());
    let scale = c.iter().map(|r| r.chi.abs()).fold(0.0, f64::max);
    assert!(scale > 0.0);
    for (x, y) in c.iter().zip(d) {
        assert_eq!(
            (&x.restriction, &x.observable, x.token),
            (&y.restriction, &y.observable, y.token)
        );
        assert!(
            (x.chi - y.chi).abs() <= 1e-4 * scale,
            "{} {} {:?}: cpu {} vs device {} (largest |chi| {scale})",
            x.restriction,
            x.observable,
            x.token,
            x.chi,
            y.chi
        );
    }
    let bif_cpu = BifOptions {
        sampler: sampler("s"),
        select: cpu_opts.select.clone(),
        sequences: 2,
        ..BifOptions::default()
    };
    let bif_dev = BifOptions {
        sampler: sampler("on-device"),
        device: emulator,
        ..bif_cpu.clone()
    };
    // Token level with the draws stacked, and the loss kernel of chain-averaged draws.
    let seq = |o: &BifOptions, name: &str| BifOptions {
        sampler: sampler(name),
        level: BifLevel::Sequence,
        reduce: stagewise_sampling::influence::ChainReduce::Mean,
        ..o.clone()
    };
    for (c, d) in [
        (bif_cpu.clone(), bif_dev.clone()),
        (seq(&bif_cpu, "s-seq"), seq(&bif_dev, "on-device-seq")),
    ] {
        let (a, b) = (
            bif(&run, &c, &Quiet).unwrap(),
            bif(&run, &d, &Quiet).unwrap(),
        );
        let (a, b) = (&a.steps[0].2, &b.steps[0].2);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4,
                "BIF {:?}: cpu {x} vs device {y}",
                c.level
            );
        }
    }
}
