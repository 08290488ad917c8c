//! Progress on a terminal (a bar with ETA) or, when stderr is not one, a log line every 30 s;
//! and the printing of each stage's result, shared by the single commands and `reproduce`.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use stagewise_pipeline::{Observer, StageOutput};

/// A progress bar on a terminal; plain log lines every 30 s otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
    first: u64,
    total: u64,
    last_line: std::cell::Cell<Instant>,
    unit: &'static str,
}

impl Progress {
    pub fn new(first: u64, total: u64, unit: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(&format!(
                "{{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}  {{msg}}"
            )) {
                b.set_style(style);
            }
            b.set_position(first);
            b
        });
        Progress {
            bar,
            start: Instant::now(),
            first,
            total,
            last_line: std::cell::Cell::new(Instant::now()),
            unit,
        }
    }

    /// Advances to `done`; `status` (e.g. the current loss) is shown now and then.
    pub fn tick(&self, done: u64, status: impl FnOnce() -> String) {
        match &self.bar {
            Some(b) => {
                b.set_position(done);
                if done.is_multiple_of(10) {
                    b.set_message(status());
                }
            }
            None => {
                if self.last_line.get().elapsed() >= Duration::from_secs(30) || done == self.total {
                    self.last_line.set(Instant::now());
                    let rate = done.saturating_sub(self.first) as f64
                        / self.start.elapsed().as_secs_f64().max(1e-9);
                    let eta = self.total.saturating_sub(done) as f64 / rate.max(1e-9);
                    eprintln!(
                        "{done}/{} {}  {}  {rate:.1}/s  ETA {eta:.0}s",
                        self.total,
                        self.unit,
                        status()
                    );
                }
            }
        }
    }

    pub fn note(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    /// A line above the bar (or on stderr).
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The terminal as an [`Observer`]: progress on stderr, results on stdout.
#[derive(Default)]
pub struct Console {
    progress: RefCell<Option<Progress>>,
}

impl Observer for Console {
    fn start(&self, first: u64, total: u64, unit: &'static str) {
        *self.progress.borrow_mut() = Some(Progress::new(first, total, unit));
    }

    fn tick(&self, done: u64, status: &dyn Fn() -> String) {
        if let Some(p) = self.progress.borrow().as_ref() {
            p.tick(done, status);
        }
    }

    fn note(&self, msg: &str) {
        if let Some(p) = self.progress.borrow().as_ref() {
            p.note(msg);
        }
    }

    fn message(&self, msg: &str) {
        match self.progress.borrow().as_ref() {
            Some(p) => p.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn finish(&self) {
        if let Some(p) = self.progress.borrow_mut().take() {
            p.finish();
        }
    }

    fn result(&self, result: StageOutput<'_>) {
        match result {
            StageOutput::Train(r) => crate::train::print(r),
            StageOutput::TrainLm(r) => crate::lm::print(r),
            StageOutput::TrainParity(r) => crate::parity::print(r),
            StageOutput::Llc(r) => crate::llc::print(r),
            StageOutput::Ed(r) => crate::ed::print(r),
            StageOutput::Stages(r) => crate::stages::print(r),
            StageOutput::Indicators(r) => crate::indicators::print(r),
            StageOutput::Report(r) => crate::report::print(r),
        }
    }
}

/// Checks `STAGEWISE_SIMD` against this CPU and sets up the thread pool.
pub fn setup(threads: Option<usize>) -> anyhow::Result<()> {
    stagewise_engine::simd::from_env().map_err(anyhow::Error::msg)?;
    threads.map_or(Ok(()), set_threads)
}

/// `--threads N`: the global thread pool. More threads than cores only adds overhead; thousands
/// exhaust the machine, so at most max(64, 4 x cores).
fn set_threads(n: usize) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let most = (4 * cores).max(64);
    if n == 0 || n > most {
        anyhow::bail!(
            "--threads {n} (or STAGEWISE_THREADS): expected 1 to {most} (this machine has {cores} cores)"
        );
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("--threads {n}: cannot start the thread pool: {e}"))
}
