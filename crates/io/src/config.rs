//! Reading run configs: plain YAML, or the reference's W&B sweep shape (nested `parameters:`
//! with `value` / `values`, expanded as a grid in key order), plus `--set key=value` overrides.
//! Unknown or invalid fields are errors that name the file and the field.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use stagewise_train::TrainConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid YAML: {msg}")]
    Yaml { path: PathBuf, msg: String },
    #[error("{origin}: field `{field}`: {msg}")]
    Field {
        origin: String,
        field: String,
        msg: String,
    },
    #[error("{origin}: {msg}")]
    Other { origin: String, msg: String },
}

/// A config file read and resolved to one run.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: TrainConfig,
    /// The sweep's `name`, if the file was a sweep.
    pub sweep_name: Option<String>,
    /// Number of runs in the sweep grid (1 for a plain file).
    pub grid_size: usize,
}

/// Top-level keys of a W&B sweep file that describe the sweep rather than the run.
pub const SWEEP_KEYS: &[&str] = &[
    "name",
    "method",
    "command",
    "project",
    "program",
    "entity",
    "description",
    "metric",
    "run_cap",
    "early_terminate",
];

/// The leaves of a document as dotted keys (`task_config.model_seed`) with their values, in
/// document order.
pub fn leaves(v: &Value, prefix: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    fn walk(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(x, &key, out);
                }
            }
            other => out.push((prefix.to_string(), other.clone())),
        }
    }
    walk(v, prefix, &mut out);
    out
}

/// Reads `path`, expands a sweep grid (choosing `sweep_index`), applies `sets`
/// (`dotted.key=yaml-value`), and validates the result.
pub fn load_train_config(
    path: &Path,
    sets: &[String],
    sweep_index: Option<usize>,
) -> Result<LoadedConfig, ConfigLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigLoadError::Io {
        path: path.into(),
        source,
    })?;
    let origin = path.display().to_string();
    let raw = parse_yaml(&text).map_err(|msg| ConfigLoadError::Yaml {
        path: path.into(),
        msg,
    })?;
    resolve(raw, &origin, sets, sweep_index)
}

/// Parses YAML text into a generic document.
pub fn parse_yaml(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Reads a plain (already resolved) config, such as a run folder's `config.yaml`.
pub fn parse_plain(text: &str, path: &Path) -> Result<TrainConfig, ConfigLoadError> {
    let doc = parse_yaml(text).map_err(|msg| ConfigLoadError::Yaml {
        path: path.into(),
        msg,
    })?;
    typed(doc, &path.display().to_string())
}

/// Reads any plain YAML config into `C`, with `--set key=value` overrides; errors name the
/// file and the field.
pub fn load_plain<C: serde::de::DeserializeOwned>(
    path: &Path,
    sets: &[String],
) -> Result<C, ConfigLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigLoadError::Io {
        path: path.into(),
        source,
    })?;
    plain_from_text(&text, &path.display().to_string(), sets)
}

/// As [`load_plain`], from YAML text; `origin` names it in errors (a path, or "built-in ...").
pub fn plain_from_text<C: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    sets: &[String],
) -> Result<C, ConfigLoadError> {
    let origin = origin.to_string();
    let mut doc = parse_yaml(text).map_err(|msg| ConfigLoadError::Yaml {
        path: origin.clone().into(),
        msg,
    })?;
    if !doc.is_object() {
        return Err(ConfigLoadError::Other {
            origin,
            msg: "expected a mapping at the top level".into(),
        });
    }
    for s in sets {
        let (key, val) = s.split_once('=').ok_or_else(|| ConfigLoadError::Other {
            origin: origin.clone(),
            msg: format!("--set {s:?}: expected key=value"),
        })?;
        let v: Value = serde_saphyr::from_str(val).map_err(|e| ConfigLoadError::Other {
            origin: origin.clone(),
            msg: format!("--set {key}: invalid value {val:?}: {e}"),
        })?;
        set_path(&mut doc, key.trim(), v, "--set")?;
    }
    normalize_numbers(&mut doc);
    serde_path_to_error::deserialize(&doc).map_err(|e| {
        let field = e.path().to_string();
        ConfigLoadError::Field {
            origin,
            field,
            msg: e.into_inner().to_string(),
        }
    })
}

fn typed(doc: Value, origin: &str) -> Result<TrainConfig, ConfigLoadError> {
    typed_as(doc, origin, TrainConfig::validate)
}

/// A resolved document as config type `C`, checked by `validate`; errors name the field.
pub fn typed_as<C: serde::de::DeserializeOwned>(
    mut doc: Value,
    origin: &str,
    validate: impl Fn(&C) -> Result<(), stagewise_train::ConfigError>,
) -> Result<C, ConfigLoadError> {
    normalize_numbers(&mut doc);
    let config: C = serde_path_to_error::deserialize(&doc).map_err(|e| {
        let field = e.path().to_string();
        ConfigLoadError::Field {
            origin: origin.into(),
            field,
            msg: e.into_inner().to_string(),
        }
    })?;
    validate(&config).map_err(|e| ConfigLoadError::Field {
        origin: origin.into(),
        field: e.field.clone(),
        msg: format!("{} = {}: {}", e.field, e.value, e.expected),
    })?;
    Ok(config)
}

/// Resolves an already parsed document (see `load_train_config`).
pub fn resolve(
    raw: Value,
    origin: &str,
    sets: &[String],
    sweep_index: Option<usize>,
) -> Result<LoadedConfig, ConfigLoadError> {
    let (doc, sweep_name, grid_size) = resolve_document(raw, origin, sets, sweep_index)?;
    let config = typed(doc, origin)?;
    Ok(LoadedConfig {
        config,
        sweep_name,
        grid_size,
    })
}

/// One run's plain document from a parsed config: the sweep grid expanded (choosing
/// `sweep_index`) and `sets` applied. Returns it with the sweep's name and grid size.
pub fn resolve_document(
    raw: Value,
    origin: &str,
    sets: &[String],
    sweep_index: Option<usize>,
) -> Result<(Value, Option<String>, usize), ConfigLoadError> {
    let other = |msg: String| ConfigLoadError::Other {
        origin: origin.into(),
        msg,
    };
    let Value::Object(top) = raw else {
        return Err(other("expected a mapping at the top level".into()));
    };
    let (mut doc, sweep_name, grid_size) = if top.contains_key("parameters") {
        let name = top.get("name").and_then(|v| v.as_str()).map(String::from);
        for k in top.keys() {
            if k != "parameters" && !SWEEP_KEYS.contains(&k.as_str()) {
                return Err(ConfigLoadError::Field {
                    origin: origin.into(),
                    field: k.clone(),
                    msg: format!(
                        "unknown sweep key; expected `parameters` or one of {SWEEP_KEYS:?}"
                    ),
                });
            }
        }
        let mut axes = Vec::new();
        let template = unwrap_sweep(&top["parameters"], "", &mut axes, origin)?;
        // A `--set` of a swept key fixes that axis.
        let set_keys: Vec<&str> = sets
            .iter()
            .filter_map(|s| s.split_once('='))
            .map(|(k, _)| k.trim())
            .collect();
        axes.retain(|(path, _)| !set_keys.contains(&path.as_str()));
        let grid: usize = axes
            .iter()
            .map(|(_, v): &(String, Vec<Value>)| v.len())
            .product();
        let index = match (sweep_index, grid) {
            (Some(i), g) if i < g => i,
            (Some(i), g) => {
                return Err(other(format!(
                    "--sweep-index {i} is out of range: the sweep has {g} runs (0..{g})"
                )));
            }
            (None, 1) => 0,
            (None, g) => {
                let axes: Vec<String> = axes
                    .iter()
                    .map(|(p, v)| format!("{p} ({} values)", v.len()))
                    .collect();
                return Err(other(format!(
                    "the sweep has {g} runs (grid over {}); choose one with --sweep-index 0..{g} or fix the values with --set",
                    axes.join(", ")
                )));
            }
        };
        // Cartesian product in key order: the last axis varies fastest.
        let mut doc = template;
        let mut rem = index;
        let mut chosen = vec![Value::Null; axes.len()];
        for (a, (_, values)) in axes.iter().enumerate().rev() {
            chosen[a] = values[rem % values.len()].clone();
            rem /= values.len();
        }
        for ((path, _), v) in axes.iter().zip(chosen) {
            set_path(&mut doc, path, v, origin)?;
        }
        (doc, name, grid)
    } else {
        (Value::Object(top), None, 1)
    };
    for s in sets {
        let (key, val) = s.split_once('=').ok_or_else(|| {
            other(format!(
                "--set {s:?}: expected key=value, e.g. task_config.model_seed=1"
            ))
        })?;
        let v: Value = serde_saphyr::from_str(val)
            .map_err(|e| other(format!("--set {key}: invalid value {val:?}: {e}")))?;
        set_path(&mut doc, key.trim(), v, "--set")?;
    }
    Ok((doc, sweep_name, grid_size))
}

/// Turns a sweep `parameters` tree into a plain document, collecting `values` lists as axes.
fn unwrap_sweep(
    node: &Value,
    path: &str,
    axes: &mut Vec<(String, Vec<Value>)>,
    origin: &str,
) -> Result<Value, ConfigLoadError> {
    let err = |msg: String| ConfigLoadError::Field {
        origin: origin.into(),
        field: path.trim_start_matches('.').into(),
        msg,
    };
    let Value::Object(map) = node else {
        return Err(err(
            "expected a mapping with `value`, `values` or `parameters`".into(),
        ));
    };
    let mut out = Map::new();
    for (key, spec) in map {
        let p = format!("{path}.{key}");
        let field = p.trim_start_matches('.').to_string();
        let Value::Object(spec_map) = spec else {
            return Err(ConfigLoadError::Field {
                origin: origin.into(),
                field,
                msg: "expected a mapping with `value`, `values` or `parameters`".into(),
            });
        };
        let keys: Vec<&str> = spec_map.keys().map(String::as_str).collect();
        let value = match keys.as_slice() {
            ["value"] => spec_map["value"].clone(),
            ["values"] => match &spec_map["values"] {
                Value::Array(vs) if !vs.is_empty() => {
                    axes.push((field.clone(), vs.clone()));
                    vs[0].clone()
                }
                _ => {
                    return Err(ConfigLoadError::Field {
                        origin: origin.into(),
                        field,
                        msg: "`values` must be a non-empty list".into(),
                    });
                }
            },
            ["parameters"] => unwrap_sweep(&spec_map["parameters"], &p, axes, origin)?,
            _ => {
                return Err(ConfigLoadError::Field {
                    origin: origin.into(),
                    field,
                    msg: format!(
                        "expected exactly one of `value`, `values`, `parameters`, found {keys:?}"
                    ),
                });
            }
        };
        out.insert(key.clone(), value);
    }
    Ok(Value::Object(out))
}

/// Sets `a.b.c = v`, creating mappings on the way.
fn set_path(doc: &mut Value, path: &str, v: Value, origin: &str) -> Result<(), ConfigLoadError> {
    let mut cur = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(ConfigLoadError::Field {
                origin: origin.into(),
                field: path.into(),
                msg: "empty key segment".into(),
            });
        }
        let Value::Object(map) = cur else {
            return Err(ConfigLoadError::Field {
                origin: origin.into(),
                field: parts[..i].join("."),
                msg: format!("is not a mapping, cannot set `{path}`"),
            });
        };
        if i + 1 == parts.len() {
            map.insert(part.to_string(), v);
            return Ok(());
        }
        cur = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

/// YAML 1.1 (PyYAML, which the reference uses) reads `10_000` as an integer; YAML 1.2 reads a
/// string. Accept the reference's files: digit strings with underscores become integers.
fn normalize_numbers(v: &mut Value) {
    match v {
        Value::Object(m) => m.values_mut().for_each(normalize_numbers),
        Value::Array(a) => a.iter_mut().for_each(normalize_numbers),
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
            if t.contains('_')
                && !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit() || c == '_')
                && digits.starts_with(|c: char| c.is_ascii_digit())
                && let Ok(n) = t.replace('_', "").parse::<i64>()
            {
                *v = Value::from(n);
            }
        }
        _ => {}
    }
}

/// The resolved config as YAML (what a run folder's `config.yaml` holds).
pub fn to_yaml(config: &TrainConfig) -> String {
    serde_saphyr::to_string(config).expect("config serialises")
}
