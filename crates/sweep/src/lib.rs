//! Sweeps as the reference writes them (W&B sweep YAML), run without a sweep service: a file
//! expands to a fixed list of tasks; `task(i)` is the same on every machine, so a scheduler's
//! array index (Slurm, Kubernetes Indexed Jobs) picks the work, and each task writes only its
//! own run or sampler folder.

pub mod collect;
pub mod exec;
pub mod launch;
pub mod naming;
pub mod pool;
pub mod spec;
pub mod task;
pub mod wandb;

pub use exec::{Outcome, Root, RunOptions, State, run_task, state};
pub use spec::SweepFile;
pub use task::{Kind, Sweep, Task};
