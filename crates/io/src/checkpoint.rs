//! Checkpoints as safetensors files.
//!
//! `checkpoints/<step>.safetensors` holds the model's `state_dict()` exactly as the reference
//! names and shapes it (parameters plus the `causal_mask` buffers), so PyTorch loads it with
//! `model.load_state_dict(safetensors.torch.load_file(f), strict=True)`. Metadata: `format`,
//! `step`, `steps_done`, `config` (JSON). `optimizer/<step>.safetensors` holds Adam's
//! `state.<param>.exp_avg` / `.exp_avg_sq`, with the update count in its metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};
use stagewise_models::StateDict;
use stagewise_train::trainer::TrainState;

use crate::atomic::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a readable safetensors file ({reason}); the file may be truncated or corrupt"
    )]
    Format { path: PathBuf, reason: String },
    #[error("{path}: {msg}")]
    Content { path: PathBuf, msg: String },
}

/// Metadata stored in a model checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    /// The reference's checkpoint label (weights after `step + 1` updates).
    pub step: u64,
    pub config_json: String,
}

fn content(path: &Path, msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Content {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The safetensors bytes of named float32 tensors; `path` names the file in errors.
fn tensors_to_bytes(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    meta: HashMap<String, String>,
) -> Result<Vec<u8>, CheckpointError> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("consistent tensor"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| CheckpointError::Format {
        path: path.into(),
        reason: e.to_string(),
    })?;
    Ok(sorted_metadata(bytes))
}

/// The same file with its `__metadata__` entries in key order: safetensors writes them in a
/// hash map's random order, so that two runs' identical checkpoints would differ in bytes.
/// The header keeps its length (the same entries, reordered).
fn sorted_metadata(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = &bytes[8..8 + n];
    let text = String::from_utf8_lossy(header);
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str(text.trim_end()) else {
        return bytes;
    };
    if let Some(serde_json::Value::Object(meta)) = map.get_mut("__metadata__") {
        meta.sort_keys();
    }
    let Ok(json) = serde_json::to_string(&map) else {
        return bytes;
    };
    if json.len() <= n {
        let mut padded = json.into_bytes();
        padded.resize(n, b' ');
        bytes[8..8 + n].copy_from_slice(&padded);
    }
    bytes
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    write_atomic(path, bytes).map_err(|source| CheckpointError::Io {
        path: path.into(),
        source,
    })
}

/// The safetensors bytes of named float32 tensors (`name`, `shape`, values).
pub fn f32_tensors_to_bytes(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    meta: HashMap<String, String>,
) -> Result<Vec<u8>, CheckpointError> {
    let t = tensors
        .iter()
        .map(|(n, s, v)| (n.to_string(), s.clone(), f32_bytes(v)))
        .collect();
    tensors_to_bytes(path, t, meta)
}

/// Writes named float32 tensors (`name`, `shape`, values) to a safetensors file atomically.
pub fn save_f32_tensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    meta: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    write_file(path, &f32_tensors_to_bytes(path, tensors, meta)?)
}

/// Writes the model state dict (float32) atomically.
pub fn save_model(
    path: &Path,
    model: &dyn StateDict,
    params: &[f32],
    meta: &CheckpointMeta,
) -> Result<(), CheckpointError> {
    write_file(path, &model_to_bytes(path, model, params, meta)?)
}

/// The model state dict (float32) as safetensors bytes; `path` names the file in errors.
pub fn model_to_bytes(
    path: &Path,
    model: &dyn StateDict,
    params: &[f32],
    meta: &CheckpointMeta,
) -> Result<Vec<u8>, CheckpointError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .layout()
        .params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.shape.clone(),
                f32_bytes(&params[p.range()]),
            )
        })
        .collect();
    for (name, shape, data) in model.buffers() {
        tensors.push((name, shape, f32_bytes(&data)));
    }
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("step".to_string(), meta.step.to_string()),
        ("steps_done".to_string(), (meta.step + 1).to_string()),
        ("config".to_string(), meta.config_json.clone()),
        (
            "producer".to_string(),
            format!("stagewise {}", env!("CARGO_PKG_VERSION")),
        ),
    ]);
    tensors_to_bytes(path, tensors, meta)
}

fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.into(),
        source,
    })
}

fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(SafeTensors<'a>, HashMap<String, String>), CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Format {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| CheckpointError::Format {
        path: path.into(),
        reason: e.to_string(),
    })?;
    Ok((st, header.metadata().clone().unwrap_or_default()))
}

/// Reads one float32 tensor of an expected shape.
fn tensor_f32(
    path: &Path,
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, CheckpointError> {
    let t = st
        .tensor(name)
        .map_err(|_| content(path, format!("missing tensor `{name}`")))?;
    if t.dtype() != Dtype::F32 {
        return Err(content(
            path,
            format!("tensor `{name}` has dtype {:?}, expected F32", t.dtype()),
        ));
    }
    if t.shape() != shape {
        return Err(content(
            path,
            format!(
                "tensor `{name}` has shape {:?}, expected {shape:?} (a checkpoint of another architecture?)",
                t.shape()
            ),
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

/// Reads a model checkpoint written for `model`: every key must be present with the right
/// shape and no other key may appear.
pub fn load_model(
    path: &Path,
    model: &dyn StateDict,
) -> Result<(Vec<f32>, CheckpointMeta), CheckpointError> {
    model_from_bytes(&read(path)?, path, model)
}

/// As [`load_model`], from the file's bytes; `path` names the file in errors.
pub fn model_from_bytes(
    bytes: &[u8],
    path: &Path,
    model: &dyn StateDict,
) -> Result<(Vec<f32>, CheckpointMeta), CheckpointError> {
    let (st, meta) = parse(path, bytes)?;
    let mut params = vec![0.0f32; model.num_params()];
    for p in &model.layout().params {
        let t = tensor_f32(path, &st, &p.name, &p.shape)?;
        // Weights with NaN or infinity give NaN losses and meaningless analyses: refuse them.
        if let Some(i) = t.iter().position(|v| !v.is_finite()) {
            return Err(content(
                path,
                format!(
                    "tensor `{}` holds a non-finite value ({}) at flat index {i}",
                    p.name, t[i]
                ),
            ));
        }
        params[p.range()].copy_from_slice(&t);
    }
    let expected: std::collections::HashSet<String> = model
        .layout()
        .params
        .iter()
        .map(|p| p.name.clone())
        .chain(model.buffers().into_iter().map(|b| b.0))
        .collect();
    if let Some(extra) = st.names().into_iter().find(|n| !expected.contains(*n)) {
        return Err(content(
            path,
            format!("unexpected tensor `{extra}` (a checkpoint of another architecture?)"),
        ));
    }
    let step = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| content(path, "metadata field `step` is missing or not an integer"))?;
    Ok((
        params,
        CheckpointMeta {
            step,
            config_json: meta.get("config").cloned().unwrap_or_default(),
        },
    ))
}

/// Writes Adam's state (moments and update count) atomically.
pub fn save_optimizer(
    path: &Path,
    model: &dyn StateDict,
    state: &TrainState<f32>,
) -> Result<(), CheckpointError> {
    write_file(path, &optimizer_to_bytes(path, model, state)?)
}

/// Adam's state as safetensors bytes; `path` names the file in errors.
pub fn optimizer_to_bytes(
    path: &Path,
    model: &dyn StateDict,
    state: &TrainState<f32>,
) -> Result<Vec<u8>, CheckpointError> {
    let mut tensors = Vec::new();
    for p in &model.layout().params {
        tensors.push((
            format!("state.{}.exp_avg", p.name),
            p.shape.clone(),
            f32_bytes(&state.exp_avg[p.range()]),
        ));
        tensors.push((
            format!("state.{}.exp_avg_sq", p.name),
            p.shape.clone(),
            f32_bytes(&state.exp_avg_sq[p.range()]),
        ));
    }
    let meta = HashMap::from([("steps_done".to_string(), state.steps_done.to_string())]);
    tensors_to_bytes(path, tensors, meta)
}

/// Reads Adam's state; returns `(exp_avg, exp_avg_sq, steps_done)`.
pub fn load_optimizer(
    path: &Path,
    model: &dyn StateDict,
) -> Result<(Vec<f32>, Vec<f32>, u64), CheckpointError> {
    optimizer_from_bytes(&read(path)?, path, model)
}

/// As [`load_optimizer`], from the file's bytes; `path` names the file in errors.
pub fn optimizer_from_bytes(
    bytes: &[u8],
    path: &Path,
    model: &dyn StateDict,
) -> Result<(Vec<f32>, Vec<f32>, u64), CheckpointError> {
    let (st, meta) = parse(path, bytes)?;
    let n = model.num_params();
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    for p in &model.layout().params {
        m[p.range()].copy_from_slice(&tensor_f32(
            path,
            &st,
            &format!("state.{}.exp_avg", p.name),
            &p.shape,
        )?);
        v[p.range()].copy_from_slice(&tensor_f32(
            path,
            &st,
            &format!("state.{}.exp_avg_sq", p.name),
            &p.shape,
        )?);
    }
    let steps = meta
        .get("steps_done")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            content(
                path,
                "metadata field `steps_done` is missing or not an integer",
            )
        })?;
    Ok((m, v, steps))
}

/// Steps with a model checkpoint in `dir` (files named `<step>.safetensors`), sorted.
pub fn list_steps(dir: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".safetensors")?.parse().ok()
        })
        .collect();
    steps.sort_unstable();
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagewise_models::{RegressionConfig, RegressionTransformer};

    #[test]
    fn checkpoints_are_byte_identical_and_round_trip() {
        let model = RegressionTransformer::new(RegressionConfig {
            embed_size: 8,
            mlp_size: 8,
            num_heads: 2,
            num_layers: 1,
            ..RegressionConfig::l2h4(4)
        })
        .unwrap();
        let params: Vec<f32> = model.init_params(1);
        let meta = CheckpointMeta {
            step: 3,
            config_json: "{}".into(),
        };
        let path = Path::new("3.safetensors");
        let first = model_to_bytes(path, &model, &params, &meta).unwrap();
        // Each call's metadata map has its own random hash order.
        for _ in 0..8 {
            assert_eq!(model_to_bytes(path, &model, &params, &meta).unwrap(), first);
        }
        let (back, m) = model_from_bytes(&first, path, &model).unwrap();
        assert_eq!((back, m), (params, meta));
        let e = model_from_bytes(&first[..first.len() / 2], path, &model).unwrap_err();
        assert!(e.to_string().contains("3.safetensors"), "{e}");
    }
}
