//! Step sets for checkpoints and evaluations: the reference's `int_logspace` /
//! `int_linspace` (numpy formulas, truncation to int, duplicates removed), their union and
//! optional subsampling.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// numpy's `linspace(start, stop, num)` (endpoint included, last element forced to `stop`).
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return vec![];
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let step = (stop - start) / div;
    let mut v: Vec<f64> = (0..num).map(|j| j as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// Sorted distinct `int(v)` for `v` in `numpy.logspace(log10 start, log10 stop, num)`.
pub fn int_logspace(start: f64, stop: f64, num: usize) -> Vec<u64> {
    let set: BTreeSet<u64> = np_linspace(start.log10(), stop.log10(), num)
        .into_iter()
        .map(|e| 10f64.powf(e) as u64)
        .collect();
    set.into_iter().collect()
}

/// Sorted distinct `int(v)` for `v` in `numpy.linspace(start, stop, num)`.
pub fn int_linspace(start: f64, stop: f64, num: usize) -> Vec<u64> {
    let set: BTreeSet<u64> = np_linspace(start, stop, num)
        .into_iter()
        .map(|v| v as u64)
        .collect();
    set.into_iter().collect()
}

/// A `log_space`/`linear_space` entry: a count (expanded against `num_steps`) or
/// `[start, stop, num]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SpaceSpec {
    Count(usize),
    Range([f64; 3]),
}

/// The reference's step-set config: either an explicit list of steps or log/linear spaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepsSpec {
    List(Vec<u64>),
    Spaces(Spaces),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spaces {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_space: Option<SpaceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_space: Option<SpaceSpec>,
    /// Keep every n-th element of the sorted log steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_subsample: Option<usize>,
    /// Keep every n-th element of the sorted linear steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_subsample: Option<usize>,
}

impl StepsSpec {
    /// `log_space: a, linear_space: b` (both counts).
    pub fn log_linear(log: usize, linear: usize) -> Self {
        StepsSpec::Spaces(Spaces {
            log_space: Some(SpaceSpec::Count(log)),
            linear_space: Some(SpaceSpec::Count(linear)),
            ..Spaces::default()
        })
    }

    /// The step set for a run of `num_steps` steps (`expand_steps_config_` + `process_steps`).
    pub fn expand(&self, num_steps: u64) -> BTreeSet<u64> {
        match self {
            StepsSpec::List(v) => v.iter().copied().collect(),
            StepsSpec::Spaces(s) => {
                let range = |spec: &SpaceSpec, start: f64| match spec {
                    SpaceSpec::Count(n) => (start, num_steps as f64, *n),
                    SpaceSpec::Range([a, b, n]) => (*a, *b, *n as usize),
                };
                let every = |v: Vec<u64>, n: Option<usize>| match n {
                    Some(n) if n > 1 => v.into_iter().step_by(n).collect(),
                    _ => v,
                };
                let mut out = BTreeSet::new();
                if let Some(spec) = &s.log_space {
                    let (a, b, n) = range(spec, 1.0);
                    out.extend(every(int_logspace(a, b, n), s.log_subsample));
                }
                if let Some(spec) = &s.linear_space {
                    let (a, b, n) = range(spec, 0.0);
                    out.extend(every(int_linspace(a, b, n), s.linear_subsample));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_space_100_has_the_reference_values() {
        let v = int_logspace(1.0, 500_000.0, 100);
        assert_eq!(v.len(), 91);
        assert_eq!(&v[..12], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14]);
        assert_eq!(*v.last().unwrap(), 499_999);
        assert!(v.contains(&984) && v.contains(&40292) && v.contains(&437929));
        let lin = int_linspace(0.0, 500_000.0, 100);
        assert_eq!(&lin[..4], &[0, 5050, 10101, 15151]);
        assert_eq!(*lin.last().unwrap(), 500_000);
    }
}
