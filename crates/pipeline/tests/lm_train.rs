//! Training a language-model run end to end on a small synthetic corpus: the run folder's
//! files, resuming to the files of an uninterrupted run, and bad input.

use std::path::{Path, PathBuf};

use stagewise_models::language::LanguageModel;
use stagewise_pipeline::lm::{LmTrainOptions, train_lm};
use stagewise_pipeline::{Quiet, RunDir};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stagewise-lm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A corpus of sentences from a small grammar: two training texts and one test text.
fn corpus(dir: &Path) {
    let subj = ["the cat", "a dog", "the old king", "my friend", "the queen"];
    let verb = ["sees", "loves", "follows", "greets", "fears"];
    let obj = [
        "the moon",
        "a bird",
        "the river",
        "her brother",
        "the crown",
    ];
    let text = |salt: usize, n: usize| -> String {
        (0..n)
            .map(|s| {
                let k = s * 7 + salt;
                format!(
                    "{} {} {}.\n",
                    subj[k % 5],
                    verb[(k / 5) % 5],
                    obj[(k / 3) % 5]
                )
            })
            .collect()
    };
    for (sub, name, salt, n) in [
        ("train", "a.txt", 1, 400),
        ("train", "b.txt", 2, 400),
        ("test", "c.txt", 3, 100),
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join(name), text(salt, n)).unwrap();
    }
}

fn config(dir: &Path) -> PathBuf {
    let yaml = format!(
        "num_steps: 40
batch_size: 6
transformer_config: {{n_layers: 2, d_model: 16, d_head: 8, n_heads: 2, n_ctx: 24, d_vocab: 300, seed: 3}}
optimizer_config: {{optimizer_type: AdamW, lr: 0.003, weight_decay: 0.05}}
checkpointer_config: {{checkpoint_steps: {{log_space: 5, linear_space: 4}}}}
logger_config: {{logging_steps: {{linear_space: 5}}}}
trainset: {}
testset: {}
num_test_rows: 10
",
        dir.join("train").display(),
        dir.join("test").display()
    );
    let p = dir.join("lm.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

fn opts(cfg: &Path, run: &RunDir, stop_after: Option<u64>, resume: bool) -> LmTrainOptions {
    LmTrainOptions {
        config: (!resume).then(|| cfg.to_path_buf()),
        out: Some(run.clone()),
        resume,
        stop_after,
        ..LmTrainOptions::default()
    }
}

#[test]
fn a_language_run_trains_writes_its_files_and_resumes_exactly() {
    let dir = scratch("train");
    corpus(&dir);
    let cfg = config(&dir);
    let whole = RunDir::local(dir.join("whole"));
    let r = train_lm(&opts(&cfg, &whole, None, false), &Quiet).unwrap();
    assert!(whole.is_complete() && whole.is_language_run());
    assert!(r.last_test_loss < (300f64).ln(), "{}", r.last_test_loss);
    let root = dir.join("whole");
    for f in [
        "config.yaml",
        "schedule.json",
        "tokenizer.json",
        "metrics.csv",
        "train.csv",
    ] {
        assert!(root.join(f).exists(), "{f}");
    }
    let metrics = std::fs::read_to_string(root.join("metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    assert!(
        header.starts_with("step,test/loss,test/loss_no_pos,bigram/score,")
            && header.ends_with(",heads/prev/L1H1,weight/norm"),
        "{header}"
    );
    // linspace(0, 40, 5) below 40: steps 0, 10, 20, 30.
    assert_eq!(metrics.lines().count(), 1 + 4, "{metrics}");
    // log_space 5 + linear_space 4 over 40 steps, below 40.
    let steps = whole.checkpoint_steps().unwrap();
    assert_eq!(steps, [0, 1, 2, 6, 13, 15, 26]);
    let model = LanguageModel::new(r.config.transformer_config.model()).unwrap();
    let w = whole.weights(&model, 26).unwrap();
    assert_eq!(w.len(), model.num_params());

    // Stopped at step 17, then resumed: the same checkpoints and tables.
    let sliced = RunDir::local(dir.join("sliced"));
    train_lm(&opts(&cfg, &sliced, Some(17), false), &Quiet).unwrap();
    assert!(!sliced.is_complete());
    let again = train_lm(&opts(&cfg, &sliced, None, true), &Quiet).unwrap();
    assert!(again.resumed_at.is_some_and(|s| s < 17));
    assert!(sliced.is_complete());
    assert_eq!(sliced.weights(&model, 26).unwrap(), w);
    assert_eq!(sliced.checkpoint_steps().unwrap(), steps);
    for f in ["metrics.csv", "train.csv", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(dir.join("sliced").join(f)).unwrap(),
            std::fs::read(root.join(f)).unwrap(),
            "{f}"
        );
    }

    // The LLC at every checkpoint, through the common sweep (table, traces, resume).
    let sampler = stagewise_pipeline::llc::Sampler::from_text(
        "lm-tiny",
        "num_chains: 2\nnum_draws: 6\ngrad_batch_size: 4\neval_dataset_size: 32\n\
         gradient_scale: 0.015\nlocalization_scale: 0.1\nnoise_scale: 0.001\nper_token: true\n",
        "test sampler",
        &[],
    )
    .unwrap();
    let opts = stagewise_pipeline::llc::LlcOptions {
        sampler,
        ..Default::default()
    };
    let r = stagewise_pipeline::llc::llc(&whole, &opts, &Quiet).unwrap();
    assert_eq!(r.estimates.len(), steps.len());
    assert!(r.estimates.iter().all(|(_, e)| e.mean.is_finite()));
    let table = std::fs::read_to_string(root.join("llc/lm-tiny/llc.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + steps.len());
    // Per-token LLCs: one column per predicting position (n_ctx - 1 = 23).
    let header = table.lines().next().unwrap();
    assert!(
        header.contains(",llc/mean/22,") && !header.contains("llc/mean/23"),
        "{header}"
    );
    let again = stagewise_pipeline::llc::llc(&whole, &opts, &Quiet).unwrap();
    assert!(again.estimates.is_empty() && again.done_before == steps.len());

    // Essential dynamics on the per-token losses of 4 test rows (4 x 23 features).
    let ed_opts = stagewise_pipeline::ed::EdOptions {
        sequences: 4,
        components: 3,
        ..Default::default()
    };
    let e = stagewise_pipeline::ed::ed(&whole, &ed_opts, &Quiet).unwrap();
    assert_eq!(e.steps, steps);
    let ratio: f64 = e.explained_variance_ratio.iter().sum();
    assert!(
        e.explained_variance_ratio[0] > 0.5 && ratio <= 1.0 + 1e-9,
        "{ratio}"
    );
    let scores = std::fs::read_to_string(root.join("ed/tokens/scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 1 + steps.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_language_inputs_are_errors_that_name_the_problem() {
    let dir = scratch("bad");
    corpus(&dir);
    let cfg = config(&dir);
    let run = |sets: &[&str], name: &str| {
        let o = LmTrainOptions {
            config: Some(cfg.clone()),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            out: Some(RunDir::local(dir.join(name))),
            ..LmTrainOptions::default()
        };
        format!("{:#}", train_lm(&o, &Quiet).unwrap_err())
    };
    let e = run(&["trainset=nowhere/at/all"], "r1");
    assert!(e.contains("trainset nowhere/at/all: no such file"), "{e}");
    // The grammar corpus cannot fill 5,000 BPE ids.
    let e = run(&["transformer_config.d_vocab=5000"], "r2");
    assert!(
        e.contains("d_vocab = 5000") && e.contains("lower d_vocab"),
        "{e}"
    );
    let e = run(
        &["transformer_config.positional_embedding_type=rotary"],
        "r3",
    );
    assert!(
        e.contains("positional_embedding_type") && e.contains("shortformer"),
        "{e}"
    );
    let e = run(&["repeat_fraction=1.5"], "r5");
    assert!(e.contains("repeat_fraction") && e.contains("[0, 1]"), "{e}");
    assert!(
        !dir.join("r5/config.yaml").exists(),
        "a rejected config was written"
    );
    std::fs::write(dir.join("tok.json"), "{}").unwrap();
    let tok = format!("tokenizer={}", dir.join("tok.json").display());
    let e = run(&[tok.as_str()], "r4");
    assert!(
        e.contains("tok.json") && e.contains("not a tokenizer.json"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `reproduce` on a language-model config: train, LLC, ED, stages, indicators and the report
/// with its language-model sections.
#[test]
fn the_whole_pipeline_runs_on_a_language_model_config() {
    use stagewise_pipeline::reproduce::{ReproduceOptions, reproduce};
    let dir = scratch("reproduce");
    corpus(&dir);
    let cfg = config(&dir);
    let sampler = dir.join("lm-tiny.yaml");
    std::fs::write(
        &sampler,
        "num_chains: 2\nnum_draws: 5\ngrad_batch_size: 4\neval_dataset_size: 32\n\
         gradient_scale: 0.015\nlocalization_scale: 0.1\nnoise_scale: 0.001\n",
    )
    .unwrap();
    let run = RunDir::local(dir.join("run"));
    let opts = ReproduceOptions {
        config: Some(cfg),
        sampler: Some(sampler),
        out: Some(run.clone()),
        hessian: true,
        ..ReproduceOptions::default()
    };
    reproduce(&opts, &Quiet).unwrap();
    let root = dir.join("run");
    let steps = run.checkpoint_steps().unwrap();
    let lines = |f: &str| {
        std::fs::read_to_string(root.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(lines("llc/lm-tiny/llc.csv").len(), 1 + steps.len());
    assert_eq!(lines("ed/tokens/scores.csv").len(), 1 + steps.len());
    // The indicators read TransformerLens' names: both blocks' ln1 and ln_final, W_E's spectrum.
    let ind = lines("indicators.csv");
    assert_eq!(ind.len(), 1 + steps.len());
    for col in [
        "weight/norm",
        "ln/blocks.0.ln1/weight/collapsed",
        "ln/blocks.1.ln1/bias/norm",
        "ln/ln_final/weight/mean",
        "embed/S/15",
        "postn/S/15",
        "hessian/trace",
        "hessian/evals/2",
    ] {
        assert!(ind[0].split(',').any(|c| c == col), "{col}: {}", ind[0]);
    }
    // The Hessian of the last checkpoint: eigenvalues in decreasing order, the largest above
    // the mean eigenvalue (trace / d) and every value finite.
    let header: Vec<&str> = ind[0].split(',').collect();
    let last: Vec<f64> = ind[ind.len() - 1]
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let at = |c: &str| last[header.iter().position(|h| *h == c).unwrap()];
    // Parameters: W_E 4,800 + W_pos 384 + 2 blocks x 1,120 + ln_final 32 + W_U 4,800 + b_U 300.
    let d = 12_556.0;
    assert!(last.iter().all(|v| v.is_finite()));
    assert!(
        at("hessian/evals/0") >= at("hessian/evals/1")
            && at("hessian/evals/1") >= at("hessian/evals/2")
    );
    assert!(at("hessian/evals/0") > at("hessian/trace") / d, "{last:?}");
    assert!(root.join("stages/lm-tiny/stages.csv").exists());
    let page = std::fs::read_to_string(root.join("report/index.html")).unwrap();
    for part in [
        "Test loss and n-gram losses",
        "In-context learning score",
        "Previous-token score per head",
        "Prefix-matching score per head",
        "L1H1",
        "Local learning coefficient (lm-tiny)",
        "Essential dynamics: PC scores over training",
        "LayerNorm collapse",
    ] {
        assert!(page.contains(part), "report lacks {part:?}");
    }
    assert!(!page.contains("No LLC sweep yet") && !page.contains("No essential dynamics yet"));
    for png in [
        "loss",
        "icl",
        "heads_prev",
        "heads_prefix",
        "llc",
        "ed_scores",
    ] {
        assert!(root.join(format!("report/{png}.png")).exists(), "{png}.png");
    }
    // Run again: everything is found done and the report is the same.
    let before = std::fs::read(root.join("report/index.html")).unwrap();
    reproduce(&opts, &Quiet).unwrap();
    assert_eq!(
        std::fs::read(root.join("report/index.html")).unwrap(),
        before
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The shipped induction config is the quick config with only the fields its comment names
/// changed.
#[test]
fn the_induction_config_is_the_quick_one_shorter_longer_and_with_repeated_rows() {
    use stagewise_pipeline::lm::{LM_QUICK_YAML, load_lm_config};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/lm-induction.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let (ind, _) = load_lm_config(&text, path, &[], None).unwrap();
    let (mut quick, _) = load_lm_config(LM_QUICK_YAML, "lm-quick.yaml", &[], None).unwrap();
    assert_eq!(quick.repeat_fraction, 0.0);
    quick.run_name = Some("lm-induction".into());
    quick.num_steps = 16_000;
    quick.optimizer_config.lr = 3e-3;
    quick.repeat_fraction = 0.5;
    quick.transformer_config.n_ctx = 64;
    quick.transformer_config.d_vocab = 1024;
    assert_eq!(ind, quick);
}

#[test]
fn susceptibilities_and_the_bif_run_on_a_language_model() {
    use stagewise_pipeline::influence::{
        BifLevel, BifOptions, SusceptibilityOptions, bif, susceptibility,
    };
    use stagewise_pipeline::llc::{Sampler, StepSelection};
    let dir = scratch("influence");
    corpus(&dir);
    let run = RunDir::local(dir.join("run"));
    train_lm(&opts(&config(&dir), &run, None, false), &Quiet).unwrap();
    let sampler = Sampler::from_text(
        "s",
        "num_chains: 2\nnum_draws: 6\ngrad_batch_size: 4\neval_dataset_size: 16\n\
         gradient_scale: 0.0015\nlocalization_scale: 0.01\nnoise_scale: 0.0001\n",
        "test sampler",
        &[],
    )
    .unwrap();
    let step = run.checkpoint_steps().unwrap()[2];
    let select = StepSelection {
        steps: vec![step],
        ..StepSelection::default()
    };
    let opts = SusceptibilityOptions {
        sampler: sampler.clone(),
        select: select.clone(),
        restrict: vec!["heads".into()],
        observables: vec!["reference".into()],
        sequences: 2,
        keep_draws: false,
        ..SusceptibilityOptions::default()
    };
    let r = susceptibility(&run, &opts, &Quiet).unwrap();
    let rows = &r.steps[0].1;
    // 2 layers x 2 heads, train/test/repeated, each of the 23 next tokens and their mean.
    assert_eq!(rows.len(), 4 * 3 * 24);
    assert!(rows.iter().all(|x| x.chi.is_finite() && x.se.is_finite()));
    assert_eq!(rows[0].restriction, "L0H0");
    assert_eq!(
        rows.iter()
            .map(|x| x.observable.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["repeated", "test", "train"].into_iter().collect()
    );
    let e = susceptibility(
        &run,
        &SusceptibilityOptions {
            observables: vec!["inputs:3".into()],
            ..opts.clone()
        },
        &Quiet,
    )
    .unwrap_err();
    assert!(e.to_string().contains("for a language model"), "{e}");
    // The CUDA backend has no language model: a device is refused, naming the CPU.
    let e = susceptibility(
        &run,
        &SusceptibilityOptions {
            device: stagewise_pipeline::Backend::open(stagewise_cuda::DeviceSpec::Emulator, false)
                .unwrap(),
            ..opts.clone()
        },
        &Quiet,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("no language model yet") && e.to_string().contains("--device cpu"),
        "{e}"
    );

    let b = bif(
        &run,
        &BifOptions {
            sampler,
            select,
            sequences: 3,
            level: BifLevel::Sequence,
            samples: vec!["test,repeated".into()],
            restrict: Some("heads1=blocks.1.attn.*".into()),
            ..BifOptions::default()
        },
        &Quiet,
    )
    .unwrap();
    let (_, m, v) = &b.steps[0];
    assert_eq!(*m, 3 * 3); // train (the sampling task), test, repeated x 3 sequences
    for i in 0..*m {
        assert_eq!(v[i * m + i], 1.0);
        for j in 0..*m {
            assert_eq!(v[i * m + j], v[j * m + i]);
        }
    }
}
