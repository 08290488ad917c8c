//! Progress of a stage as it runs: the library reports, the caller (a terminal, a notebook, a
//! sweep agent) decides what to show.

/// Receives a stage's progress. Every method has a do-nothing default.
pub trait Observer {
    /// A unit of work begins: `total` of `unit` (e.g. "SGLD steps"), `first` already done.
    fn start(&self, _first: u64, _total: u64, _unit: &'static str) {}
    /// `done` of the total are finished; `status` (e.g. the current loss) may be shown.
    fn tick(&self, _done: u64, _status: &dyn Fn() -> String) {}
    /// A short status for the current work (replaced by the next).
    fn note(&self, _msg: &str) {}
    /// A line worth keeping: a result per checkpoint, a warning, what is about to run.
    fn message(&self, _msg: &str) {}
    /// The unit of work begun by `start` is over.
    fn finish(&self) {}
    /// A stage of a pipeline (`reproduce`) finished with this result.
    fn result(&self, _result: StageOutput<'_>) {}
}

/// Shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {}

/// A stage's result as the pipeline produces it (for [`Observer::result`]).
#[derive(Clone, Copy, Debug)]
pub enum StageOutput<'a> {
    Train(&'a crate::train::TrainResult),
    TrainLm(&'a crate::lm::LmTrainResult),
    TrainParity(&'a crate::parity::ParityTrainResult),
    Llc(&'a crate::llc::LlcResult),
    Ed(&'a crate::ed::EdResult),
    Stages(&'a crate::stages::StagesResult),
    Indicators(&'a crate::indicators::IndicatorsResult),
    Report(&'a crate::report::ReportResult),
}
