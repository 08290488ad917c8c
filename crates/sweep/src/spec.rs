//! A W&B sweep file (`method`, nested `parameters:` with `value` / `values` / distributions,
//! `command`, `name`, `project`) and its expansion into runs: a grid in the file's key order
//! (last key fastest), or `count` random draws (seeded; a fixed index always gives the same run).

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};
use stagewise_engine::rng::Stream;

/// Top-level keys of a sweep file other than `parameters`.
use stagewise_io::config::SWEEP_KEYS;

/// How runs are chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Grid,
    /// `count` runs, each parameter drawn independently (W&B's `random`).
    Random {
        count: usize,
        seed: u64,
    },
}

/// One swept parameter (a dotted path) and how its value is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Axis {
    /// `values: [...]` (or `distribution: categorical`), with `probabilities` for random.
    Values(Vec<Value>, Option<Vec<f64>>),
    /// A continuous or integer distribution (random search only).
    Dist(Dist),
}

/// W&B's distributions, with their bounds.
#[derive(Clone, Debug, PartialEq)]
pub enum Dist {
    IntUniform {
        min: i64,
        max: i64,
    },
    Uniform {
        min: f64,
        max: f64,
        q: Option<f64>,
    },
    /// `log_uniform`: exp(U(min, max)); `log_uniform_values`: exp(U(ln min, ln max)).
    LogUniform {
        min: f64,
        max: f64,
        q: Option<f64>,
    },
    InvLogUniform {
        min: f64,
        max: f64,
    },
    Normal {
        mu: f64,
        sigma: f64,
        q: Option<f64>,
    },
    LogNormal {
        mu: f64,
        sigma: f64,
        q: Option<f64>,
    },
}

/// A parsed sweep file.
#[derive(Clone, Debug)]
pub struct SweepFile {
    pub name: String,
    pub project: Option<String>,
    pub command: Option<Value>,
    pub method: Method,
    /// The document with every fixed value in place (swept ones hold a placeholder).
    pub template: Value,
    /// Swept parameters in file order.
    pub axes: Vec<(String, Axis)>,
    /// Where it came from (names it in errors).
    pub origin: String,
}

impl SweepFile {
    /// Parses sweep YAML text; `name` is used when the file has none. `count` and `seed` are for
    /// `method: random` (`count` defaults to the file's `run_cap`).
    pub fn parse(
        text: &str,
        origin: &str,
        default_name: &str,
        count: Option<usize>,
        seed: u64,
    ) -> Result<Self> {
        let doc = stagewise_io::config::parse_yaml(text)
            .map_err(|e| anyhow::anyhow!("{origin}: invalid YAML: {e}"))?;
        let Value::Object(top) = doc else {
            bail!("{origin}: expected a mapping at the top level");
        };
        let Some(params) = top.get("parameters") else {
            bail!(
                "{origin}: not a sweep file: no `parameters` (a plain config is trained with `stagewise train`)"
            );
        };
        for k in top.keys() {
            if k != "parameters" && !SWEEP_KEYS.contains(&k.as_str()) {
                bail!(
                    "{origin}: unknown sweep key `{k}`; expected `parameters` or one of {SWEEP_KEYS:?}"
                );
            }
        }
        let name = match top.get("name") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => default_name.to_string(),
            Some(v) => bail!("{origin}: `name` must be a string, found {v}"),
        };
        let run_cap =
            match top.get("run_cap") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().filter(|n| *n > 0).with_context(|| {
                    format!("{origin}: `run_cap` {v}: expected a positive integer")
                })? as usize),
            };
        let method = match top.get("method").and_then(Value::as_str) {
            Some("grid") => Method::Grid,
            Some("random") => Method::Random {
                count: count.or(run_cap).with_context(|| {
                    format!("{origin}: `method: random` needs a run count: `run_cap:` in the file or --count N")
                })?,
                seed,
            },
            Some("bayes") => bail!(
                "{origin}: `method: bayes` needs the results of earlier runs to choose the next, which W&B's sweep controller provides: run it with `wandb sweep` and `wandb agent` (see the README's `command:` line), or use grid or random here"
            ),
            Some(m) => bail!("{origin}: `method: {m}`: expected grid or random"),
            None => bail!("{origin}: `method` is missing: expected grid or random"),
        };
        let mut axes = Vec::new();
        let template = unwrap(params, "", &mut axes, origin)?;
        if method == Method::Grid
            && let Some((p, _)) = axes.iter().find(|(_, a)| matches!(a, Axis::Dist(_)))
        {
            bail!(
                "{origin}: parameter `{p}` has a distribution, which a grid cannot enumerate; use `values:` or `method: random`"
            );
        }
        Ok(SweepFile {
            name,
            project: top.get("project").and_then(Value::as_str).map(String::from),
            command: top.get("command").cloned(),
            method,
            template,
            axes,
            origin: origin.into(),
        })
    }

    /// Runs in the sweep.
    pub fn len(&self) -> usize {
        match &self.method {
            Method::Grid => self
                .axes
                .iter()
                .map(|(_, a)| match a {
                    Axis::Values(v, _) => v.len(),
                    Axis::Dist(_) => 1,
                })
                .product(),
            Method::Random { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The swept values of run `index`, in axis order.
    pub fn choice(&self, index: usize) -> Vec<(String, Value)> {
        match &self.method {
            Method::Grid => {
                let mut rem = index;
                let mut chosen = vec![Value::Null; self.axes.len()];
                for (a, (_, axis)) in self.axes.iter().enumerate().rev() {
                    if let Axis::Values(values, _) = axis {
                        chosen[a] = values[rem % values.len()].clone();
                        rem /= values.len();
                    }
                }
                self.axes
                    .iter()
                    .map(|(p, _)| p.clone())
                    .zip(chosen)
                    .collect()
            }
            Method::Random { seed, .. } => self
                .axes
                .iter()
                .enumerate()
                .map(|(a, (p, axis))| {
                    let s = Stream::new(*seed, SWEEP_TAG, index as u32, a as u32);
                    (p.clone(), draw(axis, &s))
                })
                .collect(),
        }
    }

    /// The plain document of run `index`.
    pub fn resolve(&self, index: usize) -> Result<Value> {
        let mut doc = self.template.clone();
        for (path, v) in self.choice(index) {
            set_path(&mut doc, &path, v);
        }
        Ok(doc)
    }
}

/// Random-stream tag of sweep draws (outside the numeric tags of `stagewise_engine::rng::tag`).
const SWEEP_TAG: u32 = 0x5357_4550;

fn unit(s: &Stream, i: u32) -> f64 {
    let w = s.block(i / 4)[(i % 4) as usize];
    (w as f64 + 0.5) / 4_294_967_296.0
}

fn normal(s: &Stream) -> f64 {
    let (u1, u2) = (unit(s, 0), unit(s, 1));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn quantize(x: f64, q: Option<f64>) -> Value {
    match q {
        Some(q) => {
            let r = (x / q).round() * q;
            if q.fract() == 0.0 {
                Value::from(r as i64)
            } else {
                Value::from(r)
            }
        }
        None => Value::from(x),
    }
}

fn draw(axis: &Axis, s: &Stream) -> Value {
    match axis {
        Axis::Values(values, probs) => {
            let u = unit(s, 2);
            let i = match probs {
                Some(p) => {
                    let mut acc = 0.0;
                    p.iter()
                        .position(|w| {
                            acc += w;
                            u < acc
                        })
                        .unwrap_or(values.len() - 1)
                }
                None => ((u * values.len() as f64) as usize).min(values.len() - 1),
            };
            values[i].clone()
        }
        Axis::Dist(d) => match *d {
            Dist::IntUniform { min, max } => {
                let span = (max - min + 1) as f64;
                Value::from(min + ((unit(s, 2) * span) as i64).min(max - min))
            }
            Dist::Uniform { min, max, q } => quantize(min + (max - min) * unit(s, 2), q),
            Dist::LogUniform { min, max, q } => quantize((min + (max - min) * unit(s, 2)).exp(), q),
            Dist::InvLogUniform { min, max } => {
                Value::from((-(min + (max - min) * unit(s, 2))).exp())
            }
            Dist::Normal { mu, sigma, q } => quantize(mu + sigma * normal(s), q),
            Dist::LogNormal { mu, sigma, q } => quantize((mu + sigma * normal(s)).exp(), q),
        },
    }
}

fn num(spec: &Map<String, Value>, key: &str, field: &str, origin: &str) -> Result<f64> {
    match spec.get(key) {
        Some(v) => v.as_f64().filter(|x| x.is_finite()).with_context(|| {
            format!("{origin}: parameter `{field}`: `{key}` {v}: expected a number")
        }),
        None => bail!("{origin}: parameter `{field}`: the distribution needs `{key}`"),
    }
}

fn parse_dist(spec: &Map<String, Value>, field: &str, origin: &str) -> Result<Axis> {
    let name = spec
        .get("distribution")
        .and_then(Value::as_str)
        .unwrap_or("");
    let q = spec.get("q").and_then(Value::as_f64);
    let bounds = |lo: &str, hi: &str| -> Result<(f64, f64)> {
        let (a, b) = (num(spec, lo, field, origin)?, num(spec, hi, field, origin)?);
        if a > b {
            bail!("{origin}: parameter `{field}`: {lo} {a} is above {hi} {b}");
        }
        Ok((a, b))
    };
    let positive = |a: f64, b: f64| -> Result<()> {
        if a <= 0.0 || b <= 0.0 {
            bail!("{origin}: parameter `{field}`: `{name}` needs min and max > 0");
        }
        Ok(())
    };
    let known = [
        "distribution",
        "min",
        "max",
        "mu",
        "sigma",
        "q",
        "values",
        "probabilities",
        "value",
    ];
    if let Some(k) = spec.keys().find(|k| !known.contains(&k.as_str())) {
        bail!("{origin}: parameter `{field}`: unknown key `{k}`");
    }
    Ok(Axis::Dist(match name {
        "int_uniform" => {
            let (a, b) = bounds("min", "max")?;
            if a.fract() != 0.0 || b.fract() != 0.0 {
                bail!("{origin}: parameter `{field}`: int_uniform needs integer min and max");
            }
            Dist::IntUniform {
                min: a as i64,
                max: b as i64,
            }
        }
        "uniform" | "q_uniform" => {
            let (min, max) = bounds("min", "max")?;
            Dist::Uniform {
                min,
                max,
                q: q.or((name == "q_uniform").then_some(1.0)),
            }
        }
        "log_uniform" => {
            let (min, max) = bounds("min", "max")?;
            Dist::LogUniform { min, max, q: None }
        }
        "log_uniform_values" | "q_log_uniform_values" => {
            let (a, b) = bounds("min", "max")?;
            positive(a, b)?;
            Dist::LogUniform {
                min: a.ln(),
                max: b.ln(),
                q: q.or((name == "q_log_uniform_values").then_some(1.0)),
            }
        }
        "q_log_uniform" => {
            let (min, max) = bounds("min", "max")?;
            Dist::LogUniform {
                min,
                max,
                q: Some(q.unwrap_or(1.0)),
            }
        }
        "inv_log_uniform" => {
            let (min, max) = bounds("min", "max")?;
            Dist::InvLogUniform { min, max }
        }
        "inv_log_uniform_values" => {
            let (a, b) = bounds("min", "max")?;
            positive(a, b)?;
            Dist::InvLogUniform {
                min: -(b.ln()),
                max: -(a.ln()),
            }
        }
        "normal" | "q_normal" | "log_normal" | "q_log_normal" => {
            let mu = spec
                .get("mu")
                .map_or(Ok(0.0), |_| num(spec, "mu", field, origin))?;
            let sigma = spec
                .get("sigma")
                .map_or(Ok(1.0), |_| num(spec, "sigma", field, origin))?;
            if sigma < 0.0 {
                bail!("{origin}: parameter `{field}`: sigma {sigma} is negative");
            }
            let q = q.or(name.starts_with("q_").then_some(1.0));
            if name.contains("log") {
                Dist::LogNormal { mu, sigma, q }
            } else {
                Dist::Normal { mu, sigma, q }
            }
        }
        "" => {
            // W&B infers uniform (or int_uniform for integer bounds) from bare min/max.
            let (a, b) = bounds("min", "max")?;
            let ints = spec["min"].is_i64() && spec["max"].is_i64();
            if ints {
                Dist::IntUniform {
                    min: a as i64,
                    max: b as i64,
                }
            } else {
                Dist::Uniform {
                    min: a,
                    max: b,
                    q: None,
                }
            }
        }
        other => bail!(
            "{origin}: parameter `{field}`: unknown distribution `{other}` (expected constant, categorical, int_uniform, uniform, q_uniform, log_uniform, log_uniform_values, q_log_uniform, q_log_uniform_values, inv_log_uniform, inv_log_uniform_values, normal, q_normal, log_normal, q_log_normal)"
        ),
    }))
}

/// Turns a `parameters` tree into a plain document, collecting swept parameters as axes.
fn unwrap(node: &Value, path: &str, axes: &mut Vec<(String, Axis)>, origin: &str) -> Result<Value> {
    let field_of = |k: &str| format!("{path}.{k}").trim_start_matches('.').to_string();
    let Value::Object(map) = node else {
        bail!(
            "{origin}: `{}`: expected a mapping of parameters",
            if path.is_empty() {
                "parameters"
            } else {
                path.trim_start_matches('.')
            }
        );
    };
    let mut out = Map::new();
    for (key, spec) in map {
        let field = field_of(key);
        let Value::Object(spec) = spec else {
            bail!(
                "{origin}: parameter `{field}`: expected a mapping with `value`, `values`, `parameters` or `distribution`"
            );
        };
        let dist = spec.get("distribution").and_then(Value::as_str);
        let value = if let Some(p) = spec.get("parameters") {
            if spec.len() != 1 {
                bail!(
                    "{origin}: parameter `{field}`: `parameters` cannot be combined with other keys"
                );
            }
            unwrap(p, &format!("{path}.{key}"), axes, origin)?
        } else if spec.contains_key("value") && (dist.is_none() || dist == Some("constant")) {
            if let Some(k) = spec
                .keys()
                .find(|k| !["value", "distribution"].contains(&k.as_str()))
            {
                bail!("{origin}: parameter `{field}`: `value` cannot be combined with `{k}`");
            }
            spec["value"].clone()
        } else if spec.contains_key("values") && (dist.is_none() || dist == Some("categorical")) {
            let Some(Value::Array(values)) = spec.get("values") else {
                bail!("{origin}: parameter `{field}`: `values` must be a list");
            };
            if values.is_empty() {
                bail!("{origin}: parameter `{field}`: `values` is empty");
            }
            let probs = match spec.get("probabilities") {
                None => None,
                Some(Value::Array(p)) => {
                    let p: Vec<f64> = p.iter().filter_map(Value::as_f64).collect();
                    if p.len() != values.len()
                        || p.iter().any(|x| *x < 0.0)
                        || (p.iter().sum::<f64>() - 1.0).abs() > 1e-6
                    {
                        bail!(
                            "{origin}: parameter `{field}`: `probabilities` must be {} non-negative numbers summing to 1",
                            values.len()
                        );
                    }
                    Some(p)
                }
                Some(v) => {
                    bail!("{origin}: parameter `{field}`: `probabilities` {v}: expected a list")
                }
            };
            if let Some(k) = spec
                .keys()
                .find(|k| !["values", "distribution", "probabilities"].contains(&k.as_str()))
            {
                bail!("{origin}: parameter `{field}`: `values` cannot be combined with `{k}`");
            }
            axes.push((field.clone(), Axis::Values(values.clone(), probs)));
            values[0].clone()
        } else if dist.is_some() || spec.contains_key("min") {
            axes.push((field.clone(), parse_dist(spec, &field, origin)?));
            Value::Null
        } else {
            let keys: Vec<&String> = spec.keys().collect();
            bail!(
                "{origin}: parameter `{field}`: expected `value`, `values`, `parameters` or a `distribution` with its bounds, found {keys:?}"
            );
        };
        out.insert(key.clone(), value);
    }
    Ok(Value::Object(out))
}

/// Sets `a.b.c = v` in a document whose mappings exist.
pub fn set_path(doc: &mut Value, path: &str, v: Value) {
    let mut cur = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Object(map) = cur else { return };
        if i + 1 == parts.len() {
            map.insert(part.to_string(), v);
            return;
        }
        cur = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}
