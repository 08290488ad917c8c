//! What the binary's tests share: the binary, scratch folders, a small config, a browser check.

#![allow(unused_imports)]

pub use stagewise_io::checkpoint::{list_steps, load_model};
pub use stagewise_io::config::parse_plain;
pub use stagewise_models::RegressionTransformer;
pub use std::path::{Path, PathBuf};
pub use std::process::{Command, Stdio};
pub use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stagewise");

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stagewise-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small run: 2-layer model of width 32, K = 4, 3000 steps, checkpoints on a log+linear grid.
pub fn write_config(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.yaml");
    std::fs::write(
        &p,
        "task_config:\n  task_size: 3\n  max_examples: 4\n  num_tasks: inf\n  noise_variance: 0.125\n  \
         embed_size: 32\n  mlp_size: 32\n  num_heads: 2\n  num_layers: 2\n  model_seed: 5\n  \
         pretrain_seed: null\n  true_seed: null\n  sampling_seed: null\n  include_output: true\n\
         num_steps: 3000\nbatch_size: 32\neval_batch_size: 64\noptimizer_config:\n  lr: 0.003\n\
         checkpointer_config:\n  checkpoint_steps:\n    log_space: 40\n    linear_space: 31\n\
         logging_config:\n  logging_steps:\n    log_space: 30\n    linear_space: 16\n",
    )
    .unwrap();
    p
}

/// A small sampler config `dir/name` (2 chains of `draws` draws, minibatches of 8 from the 64
/// sequences of the data set, the paper's step).
pub fn write_sampler(dir: &Path, name: &str, draws: usize) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "num_chains: 2\nnum_draws: {draws}\ngrad_batch_origin: eval-dataset\ngrad_batch_size: 8\neval_dataset_size: 64\n\
             gradient_scale: 0.01\nlocalization_scale: 0.001\nnoise_scale: 0.0003\n"
        ),
    )
    .unwrap();
    p
}

/// Writes the small config into `dir` and trains it for `steps` steps into `dir/run`:
/// (config, run folder).
pub fn train_tiny(dir: &Path, steps: u32) -> (PathBuf, PathBuf) {
    let cfg = write_config(dir);
    let run = dir.join("run");
    let steps = format!("num_steps={steps}");
    let out = stagewise(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--set",
        &steps,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cfg, run)
}

pub fn stagewise(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("STAGEWISE_THREADS", "2")
        .output()
        .unwrap()
}

pub fn model_of(run: &Path) -> RegressionTransformer {
    let text = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    let cfg = parse_plain(&text, &run.join("config.yaml")).unwrap();
    RegressionTransformer::new(cfg.model_config()).unwrap()
}

/// Renders `page` in headless Chromium (Debian's `chromium`, or `$CHROMIUM`): no console
/// messages, and a screenshot with more than one colour in it. Skipped (with a note) when no
/// Chromium is installed; `.ci/run` installs it.
pub fn check_in_browser(page: &Path) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    if Command::new(&chromium).arg("--version").output().is_err() {
        eprintln!("note: {chromium} not found; the browser check of the report is skipped");
        return;
    }
    let shot = page.with_file_name("screenshot.png");
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,2400",
            "--enable-logging=stderr",
            "--log-level=0",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..info.buffer_size()];
    let px = info.color_type.samples();
    let first = &pixels[..px];
    let differ = pixels.chunks(px).filter(|p| p != &first).count();
    assert!(
        differ > pixels.len() / px / 20,
        "the screenshot is (nearly) blank: {differ} pixels differ from the first"
    );
}
