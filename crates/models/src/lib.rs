//! Models of stagewise (the in-context regression transformer, the language model, the sparse parity MLP), each with an explicit forward and backward pass over a flat parameter
//! vector whose layout (names, shapes, offsets) matches the reference PyTorch `state_dict()`.

pub mod batch;
pub mod golden;
pub mod language;
pub mod layout;
pub mod parity;
pub mod regression;

pub use language::{LanguageConfig, LanguageModel, LmRunner};
pub use layout::{ParamInfo, ParamLayout, StateDict};
pub use parity::{ParityConfig, ParityMlp};
pub use regression::{ModelError, Readout, RegressionConfig, RegressionTransformer, Workspace};
