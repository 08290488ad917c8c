//! The stagewise pipeline as a library. Each stage is a function with an options struct (its
//! `Default` holds the command line's defaults), a typed result and an [`Observer`] for
//! progress; every file of a run goes through [`RunDir`].
//!
//! ```no_run
//! use stagewise_pipeline::{RunDir, Quiet, train, llc, stages};
//!
//! let run = RunDir::local("runs/quick");
//! let opts = train::TrainOptions { out: Some(run.clone()), ..Default::default() };
//! train::train(&opts, &Quiet)?;
//! llc::llc(&run, &llc::LlcOptions::default(), &Quiet)?;
//! let found = stages::stages(&run, &stages::StagesOptions::default())?;
//! println!("{} stages", found.stages.len());
//! # anyhow::Ok(())
//! ```

pub mod calibrate;
pub mod device;
pub mod ed;
pub mod indicators;
pub mod influence;
pub mod known;
pub mod llc;
pub mod lm;
pub mod lock;
pub mod memory;
pub mod observe;
pub mod parity;
pub mod report;
pub mod reproduce;
pub mod rundir;
pub mod stages;
pub mod train;

pub use device::Backend;
pub use observe::{Observer, Quiet, StageOutput};
pub use rundir::{Folder, LlcDir, RunDir};
