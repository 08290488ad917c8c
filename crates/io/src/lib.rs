//! The files of a run: atomic writes, safetensors checkpoints with the reference's state-dict
//! keys, YAML configs in plain and W&B-sweep shape, metric tables and TensorBoard event files.

pub mod atomic;
pub mod checkpoint;
pub mod config;
pub mod storage;
pub mod table;
pub mod tensorboard;
