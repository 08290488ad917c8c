//! Training a language-model run: the corpora and tokenizer of its config, the reference's
//! loop (AdamW, batches in order) on its log+linear checkpoint and evaluation schedule, written
//! to a run folder (checkpoints in TransformerLens' names, metrics tables, TensorBoard) and
//! resumable as the regression runs are.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use stagewise_io::config::{parse_yaml, resolve_document, typed_as};
use stagewise_models::language::LanguageModel;
use stagewise_text::{TextTokenizer, TokenRows, read_corpus};
use stagewise_train::lm::{LmEvaluator, LmTrainConfig, LmTrainer, RepeatedRows, RowSource};

use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::{RunDir, check_name};
use crate::train::{mirror_to_tensorboard, open_training_tables, save_checkpoint};

mod ed;
mod indicators;
mod llc;
pub use ed::ed_lm;
pub use indicators::indicators_lm;
pub use llc::llc_lm;
pub(crate) use llc::lm_potential;

/// The built-in quick language-model config (`configs/lm-quick.yaml`).
pub const LM_QUICK_YAML: &str = include_str!("../../../configs/lm-quick.yaml");

/// Training tokens the n-gram tables of the evaluations are counted on (at most).
pub const NGRAM_TOKENS: usize = 2_000_000;
/// Trigrams and skip-trigrams the n-gram scores look at: the most frequent this many.
pub const TOP_NGRAMS: usize = 1000;

/// The tokenizer a run trained for itself, kept in its folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// What to train and where.
#[derive(Clone, Debug, Default)]
pub struct LmTrainOptions {
    /// Config file (plain or W&B sweep YAML); `None`: the built-in quick LM config.
    pub config: Option<PathBuf>,
    /// Field overrides, `key=value`.
    pub sets: Vec<String>,
    /// Run folder (default: `runs/<config name>[-<sweep index>]`).
    pub out: Option<RunDir>,
    /// Continue the run in `out` from its last checkpoint.
    pub resume: bool,
    /// Which run of a sweep grid to train.
    pub sweep_index: Option<usize>,
    /// Stop once this many steps are done, as a pre-empted job would.
    pub stop_after: Option<u64>,
}

/// What a training call did.
#[derive(Clone, Debug)]
pub struct LmTrainResult {
    pub run: RunDir,
    pub config: LmTrainConfig,
    pub resumed_at: Option<u64>,
    pub num_steps: u64,
    /// The last batch loss of this call (NaN when nothing was left to train).
    pub last_loss: f64,
    /// The last test loss evaluated in this call (NaN when none).
    pub last_test_loss: f64,
    pub checkpoints: usize,
    pub train_rows: usize,
    pub test_rows: usize,
}

/// Whether a config document is a language-model config (it has `transformer_config`).
pub fn is_language_config(doc: &serde_json::Value) -> bool {
    let top = doc.get("parameters").unwrap_or(doc);
    top.get("transformer_config").is_some()
}

/// Reads and resolves a language-model config (plain or sweep) from YAML text.
pub fn load_lm_config(
    text: &str,
    origin: &str,
    sets: &[String],
    sweep_index: Option<usize>,
) -> Result<(LmTrainConfig, usize)> {
    let doc = parse_yaml(text).map_err(|e| anyhow::anyhow!("{origin}: invalid YAML: {e}"))?;
    let (doc, _, grid) = resolve_document(doc, origin, sets, sweep_index)?;
    Ok((typed_as(doc, origin, LmTrainConfig::validate)?, grid))
}

/// A trained language-model run: its config and model, and the steps of `select` among its
/// checkpoints (an error when it has none).
pub(crate) fn open_lm_run(
    run: &RunDir,
    select: &crate::llc::StepSelection,
) -> Result<(LmTrainConfig, LanguageModel, Vec<u64>)> {
    let text = run
        .config_text()?
        .with_context(|| format!("cannot read {}", run.config_location()))?;
    let (cfg, _) = load_lm_config(&text, &run.config_location(), &[], None)?;
    let model = LanguageModel::new(cfg.transformer_config.model())?;
    let steps = crate::llc::selected_checkpoints(run, cfg.num_steps, select)?;
    Ok((cfg, model, steps))
}

/// The batch losses the reference logs (`batch/loss` to W&B): every step below 100, every
/// 10th below 1,000, every 100th after.
pub fn logs_batch_loss(step: u64) -> bool {
    step.is_multiple_of(100) || step < 100 || (step.is_multiple_of(10) && step < 1000)
}

fn settle(opts: &LmTrainOptions) -> Result<(LmTrainConfig, RunDir)> {
    let saved_only = opts.resume && opts.config.is_none() && opts.sets.is_empty();
    let (cfg, name) = if saved_only {
        (None, "lm-quick".to_string())
    } else {
        match &opts.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let (cfg, grid) = load_lm_config(
                    &text,
                    &path.display().to_string(),
                    &opts.sets,
                    opts.sweep_index,
                )?;
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "lm".into());
                let name = match (grid, opts.sweep_index) {
                    (g, Some(i)) if g > 1 => format!("{stem}-{i}"),
                    _ => stem,
                };
                if opts.out.is_none() {
                    check_name(&format!("{}: the run name", path.display()), &name)?;
                }
                (Some(cfg), name)
            }
            None => {
                let (cfg, _) = load_lm_config(
                    LM_QUICK_YAML,
                    "built-in quick LM config",
                    &opts.sets,
                    opts.sweep_index,
                )?;
                (Some(cfg), "lm-quick".to_string())
            }
        }
    };
    let run = opts
        .out
        .clone()
        .unwrap_or_else(|| RunDir::local(PathBuf::from("runs").join(&name)));
    let cfg = if opts.resume {
        let text = run.config_text()?.with_context(|| {
            format!(
                "--resume: cannot read {}; is {} a stagewise run folder?",
                run.config_location(),
                run.display()
            )
        })?;
        let (saved, _) = load_lm_config(&text, &run.config_location(), &[], None)?;
        if cfg.as_ref().is_some_and(|c| *c != saved) {
            bail!(
                "--resume: the config differs from the run's {}; pass the same config and --set values, or neither",
                run.config_location()
            );
        }
        saved
    } else if !run.root().is_empty().unwrap_or(true) {
        bail!(
            "{}: output folder exists and is not empty; pass --resume to continue that run, or choose another --out",
            run.display()
        );
    } else {
        cfg.context("a config is loaded unless resuming from the saved one")?
    };
    Ok((cfg, run))
}

/// The corpora of a config, tokenised to rows of `n_ctx`: the run's tokenizer (loaded, or
/// trained on the training corpus and saved in the run folder the first time), then the
/// training and test rows, every id checked against the vocabulary.
pub fn lm_data(
    cfg: &LmTrainConfig,
    run: &RunDir,
    obs: &dyn Observer,
) -> Result<(Option<TextTokenizer>, TokenRows, TokenRows)> {
    let t = &cfg.transformer_config;
    let field = cfg.text_field.as_deref();
    let open = |p: &str, what: &str| -> Result<stagewise_text::Corpus> {
        let path = Path::new(p);
        if !path.exists() {
            let hint = if p.contains("shakespeare") {
                " (fetch it with scripts/fetch-shakespeare.sh)"
            } else {
                ""
            };
            bail!("{what} {p}: no such file or folder{hint}");
        }
        Ok(read_corpus(path, field)?)
    };
    let train = open(&cfg.trainset, "trainset")?;
    let test = open(&cfg.testset, "testset")?;
    let needs_tokenizer =
        |c: &stagewise_text::Corpus| !matches!(c, stagewise_text::Corpus::TokenRows { .. });
    let tok = if !needs_tokenizer(&train) && !needs_tokenizer(&test) {
        None
    } else if cfg.tokenizer == "train" {
        let saved = run.root().text(TOKENIZER_FILE)?;
        let tok = match saved {
            Some(json) => TextTokenizer::from_json(
                json.as_bytes(),
                Path::new(&run.root().describe(TOKENIZER_FILE)),
            )?,
            None => {
                let stagewise_text::Corpus::Documents(docs) = &train else {
                    bail!(
                        "tokenizer: train needs a text training corpus; {} is pre-tokenised",
                        cfg.trainset
                    );
                };
                obs.message(&format!(
                    "training a byte-level BPE tokenizer of {} ids on {} ({} documents)",
                    t.d_vocab,
                    cfg.trainset,
                    docs.len()
                ));
                let tok = TextTokenizer::train_bpe(docs.iter(), t.d_vocab)?;
                run.root().put(TOKENIZER_FILE, tok.to_json()?.as_bytes())?;
                tok
            }
        };
        Some(tok)
    } else {
        Some(TextTokenizer::load(Path::new(&cfg.tokenizer))?)
    };
    if let Some(tok) = &tok
        && tok.vocab_size() != t.d_vocab
    {
        bail!(
            "tokenizer {}: {} ids, but transformer_config.d_vocab = {}; they must be equal{}",
            cfg.tokenizer,
            tok.vocab_size(),
            t.d_vocab,
            if cfg.tokenizer == "train" {
                " (the training corpus is too small for that many BPE merges: lower d_vocab)"
            } else {
                ""
            }
        );
    }
    let rows = |c, p: &str| -> Result<TokenRows> {
        let path = Path::new(p);
        let r = TokenRows::from_corpus(c, tok.as_ref(), None, t.n_ctx, path)?;
        r.check_ids(t.d_vocab, path)?;
        Ok(r)
    };
    let train_rows = rows(train, &cfg.trainset)?;
    let test_rows = rows(test, &cfg.testset)?;
    Ok((tok, train_rows, test_rows))
}

/// The rows a run trains on: its training corpus, with `repeat_fraction` of the rows
/// repeating their first half (none by default, as in the reference).
pub fn training_rows<'a>(cfg: &LmTrainConfig, rows: &'a TokenRows) -> RepeatedRows<'a> {
    let t = &cfg.transformer_config;
    RepeatedRows::new(rows, t.n_ctx, cfg.repeat_fraction, t.seed)
}

fn steps_reached(spec: &stagewise_train::steps::StepsSpec, n: u64) -> BTreeSet<u64> {
    spec.expand(n).into_iter().filter(|s| *s < n).collect()
}

/// Trains (or resumes) a language-model run.
pub fn train_lm(opts: &LmTrainOptions, obs: &dyn Observer) -> Result<LmTrainResult> {
    let (cfg, run) = settle(opts)?;
    let _lock = Lock::take(run.root(), "lock", "stagewise train")?;
    run.clean_interrupted_training()?;
    let mut trainer = LmTrainer::<f32>::new(&cfg)?;
    let model = trainer.model.clone();
    let checkpoint_steps = steps_reached(&cfg.checkpointer_config.checkpoint_steps, cfg.num_steps);
    let logging_steps = steps_reached(&cfg.logger_config.logging_steps, cfg.num_steps);
    if opts.resume && run.is_complete() {
        obs.message(&format!(
            "{}: training is complete; nothing to resume",
            run.display()
        ));
        return Ok(LmTrainResult {
            checkpoints: run.checkpoint_steps()?.len(),
            run,
            num_steps: cfg.num_steps,
            config: cfg,
            resumed_at: None,
            last_loss: f64::NAN,
            last_test_loss: f64::NAN,
            train_rows: 0,
            test_rows: 0,
        });
    }
    // The data first: a missing or bad corpus leaves no config behind that would make the
    // next call a resume.
    let (_tok, train_tokens, test_rows) = lm_data(&cfg, &run, obs)?;
    let train_rows = training_rows(&cfg, &train_tokens);
    if !opts.resume {
        let yaml = serde_saphyr::to_string(&cfg).context("serialising the config")?;
        run.write_config_text(&yaml)?;
        let c: Vec<u64> = checkpoint_steps.iter().copied().collect();
        let l: Vec<u64> = logging_steps.iter().copied().collect();
        run.write_schedule(&c, &l)?;
    }
    obs.message(&format!(
        "{} training rows and {} test rows of {} tokens",
        train_rows.len(),
        test_rows.len(),
        cfg.transformer_config.n_ctx
    ));
    let resumed_at = if opts.resume {
        restore_newest(&run, &mut trainer, obs)?
    } else {
        None
    };
    let mut bos = [0u32; 1];
    if let Some(first) = (!test_rows.is_empty()).then(|| {
        let mut row = vec![0u32; cfg.transformer_config.n_ctx];
        test_rows.row_into(0, &mut row);
        row[0]
    }) {
        bos[0] = first;
    }
    obs.note("counting the training data's n-grams");
    let evaluator = LmEvaluator::new(
        &model,
        &train_rows,
        &test_rows,
        cfg.num_test_rows,
        (NGRAM_TOKENS / cfg.transformer_config.n_ctx).max(1),
        TOP_NGRAMS,
        cfg.batch_size,
        cfg.transformer_config.seed,
        bos[0],
    );
    let mut metric_names = LmEvaluator::metric_names(&model);
    metric_names.push("weight/norm".to_string());
    let train_names = vec!["batch/loss".to_string()];
    let (mut metrics, mut train_table) =
        open_training_tables(&run, &metric_names, &train_names, resumed_at, obs)?;
    let mut tb = mirror_to_tensorboard(&run, &metric_names, &train_names)?;
    let total = cfg.num_steps;
    let start = trainer.steps_done();
    let end = opts.stop_after.map_or(total, |s| s.min(total));
    obs.start(start, total, "steps");
    let (mut last_loss, mut last_test) = (f64::NAN, f64::NAN);
    for t in start..end {
        let loss = trainer
            .step(&train_rows)
            .with_context(|| format!("training {}", run.display()))?;
        last_loss = loss;
        if logs_batch_loss(t) {
            train_table.append(t, &[loss])?;
            tb.scalars(t, &[("batch/loss", loss as f32)])?;
        }
        if logging_steps.contains(&t) {
            let mut values = trainer.evaluate_all(&evaluator)?;
            let test = values[0];
            last_test = test;
            let norm = trainer
                .params()
                .iter()
                .map(|x| (*x as f64) * (*x as f64))
                .sum::<f64>()
                .sqrt();
            values.push(norm);
            metrics.append(t, &values)?;
            let tags: Vec<(&str, f32)> = metric_names
                .iter()
                .map(String::as_str)
                .zip(values.iter().map(|v| *v as f32))
                .collect();
            tb.scalars(t, &tags)?;
            obs.note(&format!("eval step {t}: test/loss {test:.4}"));
        }
        if checkpoint_steps.contains(&t) {
            tb.sync()?;
            metrics.sync()?;
            train_table.sync()?;
            let state = trainer.state();
            save_checkpoint(&run, &model, t, &state, serde_json::to_string(&cfg)?)?;
            run.export_training_tables()?;
        }
        obs.tick(t + 1, &|| format!("loss {loss:.4}"));
    }
    tb.sync()?;
    run.export_training_tables()?;
    if end == total {
        run.mark_complete(total)?;
    }
    obs.finish();
    Ok(LmTrainResult {
        checkpoints: run.checkpoint_steps()?.len(),
        run,
        config: cfg,
        resumed_at,
        num_steps: total,
        last_loss,
        last_test_loss: last_test,
        train_rows: train_rows.len(),
        test_rows: test_rows.len(),
    })
}

fn restore_newest(
    run: &RunDir,
    trainer: &mut LmTrainer<f32>,
    obs: &dyn Observer,
) -> Result<Option<u64>> {
    let model = trainer.model.clone();
    let Some((step, state)) = crate::train::newest_state(run, &model, obs)? else {
        return Ok(None);
    };
    trainer.restore(state)?;
    Ok(Some(step))
}
