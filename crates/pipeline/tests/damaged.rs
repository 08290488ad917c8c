//! Every reader of a run folder, fed a truncated and a garbled copy of each file it reads,
//! returns an error naming that file: no panic, no silently wrong result.
//!
//! One small run is made once (train, LLC, essential dynamics, stages, indicators, report);
//! each case copies it, damages one file and calls every stage that reads the file.
//! "Truncated" cuts the file in the middle of a line (a torn write or a half-copied file);
//! "garbled" puts text where a number or a structure belongs (for a checkpoint, into its
//! header: the safetensors format has no checksum, so damage inside the tensor data cannot be
//! told from other weights).

use std::path::{Path, PathBuf};

use anyhow::Result;
use stagewise_pipeline::ed::{EdOptions, ed};
use stagewise_pipeline::indicators::{IndicatorsOptions, indicators};
use stagewise_pipeline::llc::{LlcOptions, SAMPLER_TINY, Sampler, StepSelection, llc};
use stagewise_pipeline::report::{ReportOptions, report};
use stagewise_pipeline::stages::{StagesOptions, stages};
use stagewise_pipeline::train::{TrainOptions, train};
use stagewise_pipeline::{Quiet, RunDir};

const SETS: &[&str] = &[
    "num_steps=200",
    "checkpointer_config.checkpoint_steps.log_space=8",
    "checkpointer_config.checkpoint_steps.linear_space=4",
    "logging_config.logging_steps.log_space=10",
    "logging_config.logging_steps.linear_space=5",
];

/// Keeps the messages a stage sends.
#[derive(Default)]
struct Said(std::sync::Mutex<Vec<String>>);

impl stagewise_pipeline::Observer for Said {
    fn message(&self, msg: &str) {
        self.0.lock().unwrap().push(msg.to_string());
    }
}

fn sampler(name: &str) -> Sampler {
    Sampler::from_text(name, SAMPLER_TINY, "test sampler", &["num_draws=8".into()]).unwrap()
}

fn ed_options() -> EdOptions {
    EdOptions {
        sequences: 64,
        ..EdOptions::default()
    }
}

/// The stages that read run-folder files, by name.
#[derive(Clone, Copy, Debug)]
enum Reader {
    /// `train --resume` on the finished run (reads config, newest checkpoint and optimizer
    /// state, metrics and train tables).
    Resume,
    /// The LLC sweep continued (reads config, `sampler.yaml`, `llc.csv`).
    LlcResume,
    /// A new LLC sweep at the newest checkpoint (reads config and that checkpoint).
    LlcNew,
    Ed,
    Stages,
    Indicators,
    Report,
}

fn read(reader: Reader, run: &RunDir, newest: u64) -> Result<()> {
    match reader {
        Reader::Resume => {
            let opts = TrainOptions {
                out: Some(run.clone()),
                resume: true,
                ..TrainOptions::default()
            };
            train(&opts, &Quiet).map(drop)
        }
        Reader::LlcResume => {
            let opts = LlcOptions {
                sampler: sampler("sampler-tiny"),
                ..LlcOptions::default()
            };
            llc(run, &opts, &Quiet).map(drop)
        }
        Reader::LlcNew => {
            let opts = LlcOptions {
                sampler: sampler("probe"),
                select: StepSelection {
                    steps: vec![newest],
                    ..StepSelection::default()
                },
                ..LlcOptions::default()
            };
            llc(run, &opts, &Quiet).map(drop)
        }
        Reader::Ed => ed(run, &ed_options(), &Quiet).map(drop),
        Reader::Stages => stages(run, &StagesOptions::default()).map(drop),
        Reader::Indicators => indicators(run, &IndicatorsOptions::default(), &Quiet).map(drop),
        Reader::Report => report(run, &ReportOptions::default()).map(drop),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Cut in the middle of a line: half way, moved off any line end.
fn truncate(bytes: &[u8]) -> Vec<u8> {
    let mut cut = bytes.len() / 2;
    while cut > 1 && (bytes[cut - 1] == b'\n' || bytes[cut] == b'\n') {
        cut -= 1;
    }
    bytes[..cut].to_vec()
}

/// Text where a value belongs: for a safetensors file inside its JSON header, for a table the
/// middle row's last cell, for YAML a line that is not YAML.
fn garble(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if name.ends_with(".safetensors") {
        out[10..18].copy_from_slice(b"#garble#");
        return out;
    }
    let text = String::from_utf8(out).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mid = lines.len() / 2;
    if name.ends_with(".csv") {
        let l = &mut lines[mid.max(1)];
        let cut = l.rfind(',').unwrap();
        l.truncate(cut + 1);
        l.push_str("0.5x");
    } else {
        lines.insert(mid, "task_config: [unclosed, {".into());
    }
    (lines.join("\n") + "\n").into_bytes()
}

#[test]
fn every_reader_rejects_truncated_and_garbled_files() {
    let root = std::env::temp_dir().join(format!("stagewise-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let good = root.join("good");
    let run = RunDir::local(&good);
    let sets: Vec<String> = SETS.iter().map(|s| s.to_string()).collect();
    train(
        &TrainOptions {
            out: Some(run.clone()),
            sets,
            ..TrainOptions::default()
        },
        &Quiet,
    )
    .unwrap();
    // As a run killed after its last checkpoint: resuming then reads everything (a complete
    // run has nothing to resume and reads nothing).
    std::fs::remove_file(good.join("complete.json")).unwrap();
    let steps = run.checkpoint_steps().unwrap();
    let newest = *steps.last().unwrap();
    let opts = LlcOptions {
        sampler: sampler("sampler-tiny"),
        ..LlcOptions::default()
    };
    llc(&run, &opts, &Quiet).unwrap();
    ed(&run, &ed_options(), &Quiet).unwrap();
    stages(&run, &StagesOptions::default()).unwrap();
    indicators(&run, &IndicatorsOptions::default(), &Quiet).unwrap();
    report(&run, &ReportOptions::default()).unwrap();
    // The undamaged run passes every reader.
    use Reader::*;
    let all = [Resume, LlcResume, LlcNew, Ed, Stages, Indicators, Report];
    let scratch = root.join("scratch");
    for r in all {
        let _ = std::fs::remove_dir_all(&scratch);
        copy_dir(&good, &scratch);
        read(r, &RunDir::local(&scratch), newest)
            .unwrap_or_else(|e| panic!("{r:?} on the undamaged run: {e:#}"));
    }

    let ckpt = format!("checkpoints/{newest}.safetensors");
    let optimizer: Vec<PathBuf> = std::fs::read_dir(good.join("optimizer"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_stem()
                .is_some_and(|s| s == newest.to_string().as_str())
        })
        .collect();
    assert_eq!(optimizer.len(), 1, "{optimizer:?}");
    let opt = format!(
        "optimizer/{}",
        optimizer[0].file_name().unwrap().to_string_lossy()
    );
    let cases: Vec<(&str, Vec<Reader>)> = vec![
        (
            "config.yaml",
            vec![Resume, LlcResume, LlcNew, Ed, Indicators, Report],
        ),
        (&ckpt, vec![Resume, LlcNew, Ed, Indicators]),
        (&opt, vec![Resume]),
        ("metrics.csv", vec![Resume, Stages, Report]),
        ("train.csv", vec![Resume]),
        ("llc/sampler-tiny/llc.csv", vec![Stages, Report]),
        ("llc/sampler-tiny/sampler.yaml", vec![LlcResume]),
        ("ed/full/scores.csv", vec![Report]),
        ("ed/full/explained_variance.csv", vec![Report]),
        ("stages/sampler-tiny/stages.csv", vec![Report]),
        ("stages/sampler-tiny/gp.csv", vec![Report]),
        ("stages/sampler-tiny/gp_fit.csv", vec![Report]),
        ("indicators.csv", vec![Report]),
    ];
    for (file, readers) in &cases {
        let bytes = std::fs::read(good.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (how, damaged) in [
            ("truncated", truncate(&bytes)),
            ("garbled", garble(file, &bytes)),
        ] {
            for r in readers {
                let _ = std::fs::remove_dir_all(&scratch);
                copy_dir(&good, &scratch);
                std::fs::write(scratch.join(file), &damaged).unwrap();
                let name = Path::new(file).file_name().unwrap().to_string_lossy();
                match read(*r, &RunDir::local(&scratch), newest) {
                    Ok(()) => panic!("{r:?} accepted a {how} {file}"),
                    Err(e) => {
                        let msg = format!("{e:#}");
                        assert!(msg.contains(&*name), "{r:?}, {how} {file}: {msg}");
                    }
                }
            }
        }
    }
    // The cases known to panic before: a metrics table with only its header (a run killed
    // before its first evaluation) and an edited score table without its PC columns.
    let header_only = |file: &str| {
        let bytes = std::fs::read(good.join(file)).unwrap();
        let end = bytes.iter().position(|b| *b == b'\n').unwrap();
        bytes[..=end].to_vec()
    };
    let edited = String::from_utf8(std::fs::read(good.join("ed/full/scores.csv")).unwrap())
        .unwrap()
        .replacen("pc1", "pc_one", 1);
    // A NaN in a checkpoint's weights (a well-formed file: the damage is in the data).
    let nan_weight = {
        let mut bytes = std::fs::read(good.join(&ckpt)).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        let (_, first) = header
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| *k != "__metadata__")
            .unwrap();
        let start = first["data_offsets"][0].as_u64().unwrap() as usize + 8 + header_len;
        bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        bytes
    };
    // A row repeated: a step twice.
    let duplicated = |file: &str| {
        let text = String::from_utf8(std::fs::read(good.join(file)).unwrap()).unwrap();
        let row = text.lines().nth(2).unwrap().to_string();
        format!("{text}{row}\n").into_bytes()
    };
    for (file, damaged, readers) in [
        (
            "metrics.csv",
            duplicated("metrics.csv"),
            vec![Resume, Stages, Report],
        ),
        (
            "llc/sampler-tiny/llc.csv",
            duplicated("llc/sampler-tiny/llc.csv"),
            vec![Stages, Report],
        ),
        (
            "metrics.csv",
            header_only("metrics.csv"),
            vec![Resume, Report],
        ),
        ("ed/full/scores.csv", edited.into_bytes(), vec![Report]),
        (
            ckpt.as_str(),
            nan_weight,
            vec![Resume, LlcNew, Ed, Indicators],
        ),
    ] {
        for r in readers {
            let _ = std::fs::remove_dir_all(&scratch);
            copy_dir(&good, &scratch);
            std::fs::write(scratch.join(file), &damaged).unwrap();
            let name = Path::new(file).file_name().unwrap().to_string_lossy();
            let msg = format!(
                "{:#}",
                read(r, &RunDir::local(&scratch), newest).unwrap_err()
            );
            assert!(msg.contains(&*name), "{r:?}, {file}: {msg}");
        }
    }
    // A torn last line of the LLC table is what a kill leaves: the continued sweep drops it,
    // estimates that checkpoint again and leaves a whole table.
    let _ = std::fs::remove_dir_all(&scratch);
    copy_dir(&good, &scratch);
    let table = "llc/sampler-tiny/llc.csv";
    let bytes = std::fs::read(good.join(table)).unwrap();
    std::fs::write(scratch.join(table), &bytes[..bytes.len() - 5]).unwrap();
    let said = Said::default();
    llc(
        &RunDir::local(&scratch),
        &LlcOptions {
            sampler: sampler("sampler-tiny"),
            ..LlcOptions::default()
        },
        &said,
    )
    .unwrap();
    let lines = said.0.lock().unwrap().join("\n");
    assert!(lines.contains("dropped the torn last line"), "{lines}");
    let rows = |dir: &Path| {
        let mut t = RunDir::local(dir)
            .llc("sampler-tiny")
            .table()
            .unwrap()
            .unwrap()
            .rows;
        t.sort_by(|a, b| a[0].total_cmp(&b[0]));
        t
    };
    assert_eq!(rows(&scratch), rows(&good));
    // Without the newest optimizer state, resuming points at the checkpoint that has one; with
    // none left, it says that the run cannot resume.
    let states: Vec<PathBuf> = std::fs::read_dir(scratch.join("optimizer"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(states.len(), 2, "{states:?}");
    let mut by_step: Vec<(u64, PathBuf)> = states
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem.parse::<u64>().unwrap(), p)
        })
        .collect();
    by_step.sort();
    let (previous, newest_state) = (by_step[0].0, by_step[1].1.clone());
    let moved = root.join("moved-state");
    std::fs::rename(&newest_state, &moved).unwrap();
    let e = format!(
        "{:#}",
        read(Resume, &RunDir::local(&scratch), newest).unwrap_err()
    );
    assert!(
        e.contains(&format!("to resume from checkpoint {previous}")),
        "{e}"
    );
    std::fs::remove_file(&by_step[0].1).unwrap();
    let e = format!(
        "{:#}",
        read(Resume, &RunDir::local(&scratch), newest).unwrap_err()
    );
    assert!(e.contains("this run cannot resume"), "{e}");
    std::fs::rename(&moved, &newest_state).unwrap();
    // What a SIGKILL mid-write leaves (a temporary of a process that is gone) is removed by
    // the next command that writes there.
    if std::path::Path::new("/proc/self").exists() {
        let stale = [
            "report/.index.html.tmp-4294967",
            ".metrics.parquet.tmp-4294967",
            "checkpoints/.5.safetensors.tmp-4294967",
        ];
        for f in stale {
            std::fs::write(scratch.join(f), b"half").unwrap();
        }
        read(Report, &RunDir::local(&scratch), newest).unwrap();
        read(Resume, &RunDir::local(&scratch), newest).unwrap();
        for f in stale {
            assert!(!scratch.join(f).exists(), "{f} left behind");
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}
