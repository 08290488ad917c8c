//! What a susceptibility or BIF run observes and restricts, as the command line names it:
//! restrictions (`heads`, `layers`, `embeddings`, or `NAME=GLOB[;GLOB...]`) and observables
//! of the regression model (`pretrain`, `true`, `inputs:G`, `tasks:G`), with the fixed
//! sequences each observable evaluates.

use anyhow::{Result, bail};
use stagewise_engine::rng::{Stream, tag};
use stagewise_models::language::RowSource;
use stagewise_models::{LanguageConfig, LanguageModel, RegressionConfig, RegressionTransformer};
use stagewise_sampling::language::LmObserved;
use stagewise_sampling::mask::build_mask;
use stagewise_sampling::regression::Observed;
use stagewise_train::data::{Batch, SequenceDistribution, TaskDistribution, encode_sequence};

/// A weight restriction: its name and the tensors (globs, `[i/n]` parts allowed) that move.
#[derive(Clone, Debug, PartialEq)]
pub struct Restriction {
    pub name: String,
    pub include: Vec<String>,
}

/// The restrictions of `specs` for a regression model: `heads` (each attention head: its
/// rows of the fused per-head QKV weight, `L<l>H<h>`), `layers` (each block, `L<l>`),
/// `embeddings` (token and positional embeddings), or `NAME=GLOB[;GLOB...]` / a bare glob.
pub fn regression_restrictions(
    cfg: &RegressionConfig,
    specs: &[String],
) -> Result<Vec<Restriction>> {
    let prefix = stagewise_models::regression::PREFIX;
    let mut out = Vec::new();
    for spec in specs {
        match spec.as_str() {
            "heads" => {
                for l in 0..cfg.num_layers {
                    for h in 0..cfg.num_heads {
                        out.push(Restriction {
                            name: format!("L{l}H{h}"),
                            include: vec![stagewise_models::regression::head_glob(
                                l,
                                h,
                                cfg.num_heads,
                            )],
                        });
                    }
                }
            }
            "layers" => {
                for l in 0..cfg.num_layers {
                    out.push(Restriction {
                        name: format!("L{l}"),
                        include: vec![format!("{prefix}blocks.{l}.**")],
                    });
                }
            }
            "embeddings" => out.push(Restriction {
                name: "embeddings".into(),
                include: vec![
                    format!("{prefix}token_embedding.*"),
                    format!("{prefix}postn_embedding.*"),
                ],
            }),
            other => out.push(named_globs(other)?),
        }
    }
    check_unique(&out)?;
    Ok(out)
}

/// `NAME=GLOB[;GLOB...]`, or a bare glob named after itself.
pub fn named_globs(spec: &str) -> Result<Restriction> {
    let (name, globs) = match spec.split_once('=') {
        Some((n, g)) => (n.trim().to_string(), g),
        None => (spec.to_string(), spec),
    };
    let include: Vec<String> = globs
        .split(';')
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    if name.is_empty() || include.is_empty() {
        bail!(
            "--restrict {spec:?}: expected heads, layers, embeddings, a glob, or NAME=GLOB[;GLOB...]"
        );
    }
    Ok(Restriction { name, include })
}

fn check_unique(rs: &[Restriction]) -> Result<()> {
    for (i, r) in rs.iter().enumerate() {
        if r.name == "full" {
            bail!("--restrict: the name \"full\" is taken by the unrestricted chains");
        }
        if rs[..i].iter().any(|o| o.name == r.name) {
            bail!("--restrict: the restriction {:?} is given twice", r.name);
        }
    }
    Ok(())
}

/// Each restriction's mask over `tensors`; a restriction that moves nothing is an error.
pub fn masks(tensors: &[(String, usize)], rs: &[Restriction]) -> Result<Vec<Option<Vec<bool>>>> {
    let example = tensors.first().map(|t| t.0.as_str()).unwrap_or("");
    rs.iter()
        .map(|r| {
            build_mask(tensors, &r.include, &[]).map_err(|e| {
                anyhow::anyhow!(
                    "--restrict {}: {e} (the model's tensors are named like {example:?})",
                    r.name
                )
            })
        })
        .collect()
}

/// An observable of the regression model: fixed sequences whose per-example errors are observed.
#[derive(Clone, Debug, PartialEq)]
pub enum Observable {
    /// The run's pretraining distribution (the sampling task).
    Pretrain,
    /// Gaussian tasks (the reference's "true" evaluation).
    True,
    /// The pretraining sequences with inputs scaled by g: `x' = g x`, `y' = w.x' + e`.
    Inputs(f64),
    /// The pretraining sequences with tasks scaled by g: `y' = (g w).x + e`.
    Tasks(f64),
}

impl Observable {
    pub fn name(&self) -> String {
        match self {
            Observable::Pretrain => "pretrain".into(),
            Observable::True => "true".into(),
            Observable::Inputs(g) => format!("inputs:{g}"),
            Observable::Tasks(g) => format!("tasks:{g}"),
        }
    }

    /// The reference's evaluations: pretrain, true, and inputs and tasks scaled by 3, 5, 10, 100.
    pub fn reference_set() -> Vec<Observable> {
        let mut v = vec![Observable::Pretrain, Observable::True];
        for g in [3.0, 5.0, 10.0, 100.0] {
            v.extend([Observable::Inputs(g), Observable::Tasks(g)]);
        }
        v
    }
}

/// The observables of `specs` (comma lists allowed; `reference` is the reference's set);
/// `pretrain`, the sampling task that drives the susceptibility, is put first if absent.
pub fn observables(specs: &[String]) -> Result<Vec<Observable>> {
    let mut out = vec![Observable::Pretrain];
    for spec in specs.iter().flat_map(|s| s.split(',')).map(str::trim) {
        let more = match spec.split_once(':') {
            _ if spec == "reference" => Observable::reference_set(),
            _ if spec == "pretrain" => vec![Observable::Pretrain],
            _ if spec == "true" => vec![Observable::True],
            Some((kind @ ("inputs" | "tasks"), g)) => {
                let g: f64 = g.trim().parse().ok().filter(|g: &f64| g.is_finite() && *g > 0.0).ok_or_else(|| {
                    anyhow::anyhow!("--observables {spec:?}: the scale after {kind}: must be a positive number")
                })?;
                vec![if kind == "inputs" {
                    Observable::Inputs(g)
                } else {
                    Observable::Tasks(g)
                }]
            }
            _ => bail!(
                "--observables {spec:?}: expected pretrain, true, inputs:G, tasks:G or reference"
            ),
        };
        for o in more {
            if !out.contains(&o) {
                out.push(o);
            }
        }
    }
    Ok(out)
}

/// `nseq` fixed sequences of each observable, concatenated in order (`[sets x nseq, k]`):
/// the pretraining ones and their scaled copies from stream `(seed, OBSERVABLES, 0)`, the
/// Gaussian-task ones from `(seed, OBSERVABLES, 1)`.
pub fn observed_set<'m>(
    model: &'m RegressionTransformer,
    pretrain: &SequenceDistribution,
    sets: &[Observable],
    nseq: usize,
    seed: u64,
) -> Observed<'m, f32> {
    let d = pretrain.tasks.task_size();
    let k = pretrain.k;
    let mut base = Batch::<f32>::default();
    pretrain.sample_into(&mut base, nseq, seed, tag::OBSERVABLES, 0);
    let truth = SequenceDistribution {
        tasks: TaskDistribution::Gaussian { d },
        ..pretrain.clone()
    };
    let mut gauss = Batch::<f32>::default();
    truth.sample_into(&mut gauss, nseq, seed, tag::OBSERVABLES, 1);
    let (mut toks, mut ys) = (Vec::new(), Vec::new());
    for o in sets {
        let (src, x_scale, y_scale) = match o {
            Observable::Pretrain => (&base, 1.0, 1.0),
            Observable::True => (&gauss, 1.0, 1.0),
            Observable::Inputs(g) => (&base, *g, *g),
            Observable::Tasks(g) => (&base, 1.0, *g),
        };
        let mut tok = vec![0f32; nseq * 2 * k * (d + 1)];
        let mut yt = vec![0f32; nseq * k];
        let mut x = vec![0.0; k * d];
        let mut y = vec![0.0; k];
        for i in 0..nseq {
            let w = &src.ws[i * d..(i + 1) * d];
            for e in 0..k {
                let xe = &src.xs[(i * k + e) * d..(i * k + e + 1) * d];
                let wx: f64 = xe.iter().zip(w).map(|(a, b)| a * b).sum();
                let noise = src.ys[i * k + e] - wx;
                y[e] = y_scale * wx + noise;
                for j in 0..d {
                    x[e * d + j] = x_scale * xe[j];
                }
            }
            encode_sequence(
                &mut tok[i * 2 * k * (d + 1)..(i + 1) * 2 * k * (d + 1)],
                &mut yt[i * k..(i + 1) * k],
                &x,
                &y,
                d,
                k,
            );
            ys.extend_from_slice(&y);
        }
        toks.extend(tok);
    }
    Observed {
        model,
        toks,
        ys,
        nseq: sets.len() * nseq,
        k,
    }
}

/// The restrictions of `specs` for the language model: `heads` (each head's W_Q, W_K, W_V,
/// W_O and b_Q, b_K, b_V slices, devinterp's per-head restriction, `L<l>H<h>`), `layers`
/// (`L<l>`), `embeddings` (token and positional embeddings), or `NAME=GLOB[;GLOB...]`.
pub fn lm_restrictions(cfg: &LanguageConfig, specs: &[String]) -> Result<Vec<Restriction>> {
    let mut out = Vec::new();
    for spec in specs {
        match spec.as_str() {
            "heads" => {
                for l in 0..cfg.n_layers {
                    for h in 0..cfg.n_heads {
                        let part = format!("[{h}/{}]", cfg.n_heads);
                        out.push(Restriction {
                            name: format!("L{l}H{h}"),
                            include: ["W_?", "b_Q", "b_K", "b_V"]
                                .iter()
                                .map(|t| format!("blocks.{l}.attn.{t}{part}"))
                                .collect(),
                        });
                    }
                }
            }
            "layers" => {
                for l in 0..cfg.n_layers {
                    out.push(Restriction {
                        name: format!("L{l}"),
                        include: vec![format!("blocks.{l}.**")],
                    });
                }
            }
            "embeddings" => out.push(Restriction {
                name: "embeddings".into(),
                include: vec!["embed.*".into(), "pos_embed.*".into()],
            }),
            other => out.push(named_globs(other)?),
        }
    }
    check_unique(&out)?;
    Ok(out)
}

/// The language model's observables: `train` (training rows as trained on; the sampling
/// task, always first), `test` (test rows), `repeated` (BOS then uniform random tokens
/// repeating with period (n_ctx - 1)/2, the prefix-matching evaluation's sequences);
/// `reference` is all three.
pub fn lm_observables(specs: &[String]) -> Result<Vec<String>> {
    let mut out = vec!["train".to_string()];
    for spec in specs.iter().flat_map(|s| s.split(',')).map(str::trim) {
        let more: Vec<&str> = match spec {
            "reference" => vec!["train", "test", "repeated"],
            // `pretrain` names the sampling task for either model.
            "train" | "pretrain" => vec!["train"],
            "test" | "repeated" => vec![spec],
            _ => bail!(
                "--observables {spec:?}: for a language model, expected train, test, repeated or reference"
            ),
        };
        for o in more {
            if !out.iter().any(|x| x == o) {
                out.push(o.to_string());
            }
        }
    }
    Ok(out)
}

/// `nseq` rows of each language-model observable, concatenated: rows of `train` and `test`
/// drawn uniformly (with replacement) by stream `(seed, OBSERVABLES, 2 or 3)`, repeated random
/// tokens from `(seed, OBSERVABLES, 4)`. An error if a set has no rows.
pub fn lm_observed_set<'m>(
    model: &'m LanguageModel,
    train: &dyn RowSource,
    test: &dyn RowSource,
    names: &[String],
    nseq: usize,
    seed: u64,
) -> Result<LmObserved<'m>> {
    let t = model.config.n_ctx;
    let mut tokens = vec![0u32; names.len() * nseq * t];
    let bos = {
        let mut row = vec![0u32; t];
        if !test.is_empty() {
            test.row_into(0, &mut row);
        } else if !train.is_empty() {
            train.row_into(0, &mut row);
        }
        row[0]
    };
    for (oi, name) in names.iter().enumerate() {
        let rows = &mut tokens[oi * nseq * t..(oi + 1) * nseq * t];
        let (src, a): (Option<&dyn RowSource>, u32) = match name.as_str() {
            "train" => (Some(train), 2),
            "test" => (Some(test), 3),
            _ => (None, 4),
        };
        match src {
            Some(src) => {
                if src.is_empty() {
                    bail!("the {name} rows are empty: nothing to observe");
                }
                let pick = Stream::new(seed, tag::OBSERVABLES, a, 0);
                for (s, row) in rows.chunks_mut(t).enumerate() {
                    src.row_into(pick.below(s as u32, src.len() as u64) as usize, row);
                }
            }
            None => {
                let period = ((t - 1) / 2).max(1);
                let v = model.config.d_vocab as u64;
                for (s, row) in rows.chunks_mut(t).enumerate() {
                    let st = Stream::new(seed, tag::OBSERVABLES, a, s as u32);
                    let r: Vec<u32> = (0..period)
                        .map(|j| {
                            let x = st.below(j as u32, v - 1) as u32;
                            if x >= bos { x + 1 } else { x }
                        })
                        .collect();
                    row[0] = bos;
                    for (j, tok) in row[1..].iter_mut().enumerate() {
                        *tok = r[j % period];
                    }
                }
            }
        }
    }
    Ok(LmObserved {
        model,
        tokens,
        nseq: names.len() * nseq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_observables_are_the_pretraining_sequences_scaled() {
        let model = RegressionTransformer::new(RegressionConfig::l2h4(4)).unwrap();
        let dist = SequenceDistribution {
            tasks: TaskDistribution::Gaussian { d: 4 },
            k: 4,
            noise_variance: 0.125,
        };
        let sets = [
            Observable::Pretrain,
            Observable::Inputs(3.0),
            Observable::Tasks(3.0),
            Observable::Inputs(1.0),
            Observable::True,
        ];
        let (n, k, d1) = (5, 4, 5);
        let o = observed_set(&model, &dist, &sets, n, 7);
        assert_eq!((o.nseq, o.k, o.ys.len()), (5 * n, k, 5 * n * k));
        let per = n * 2 * k * d1;
        let toks = |s: usize| &o.toks[s * per..(s + 1) * per];
        let ys = |s: usize| &o.ys[s * n * k..(s + 1) * n * k];
        // Scaling inputs by 1 changes nothing; inputs and tasks scaled by g share targets.
        assert_eq!(toks(3), toks(0));
        assert_eq!(ys(1), ys(2));
        for (i, (a, b)) in toks(0).iter().zip(toks(1)).enumerate() {
            let (row, col) = (i / d1, i % d1);
            if row % 2 == 0 && col > 0 {
                assert!((b - 3.0 * a).abs() <= 1e-5 * (1.0 + a.abs()), "x at {i}");
            }
        }
        // Targets: y' - e = g (y - e), so y'_g - y = (g - 1) w.x, and tasks keep x.
        let x_of = |t: &[f32]| -> Vec<f32> { t.to_vec() };
        for (i, (a, b)) in x_of(toks(0)).iter().zip(x_of(toks(2))).enumerate() {
            if (i / d1) % 2 == 0 {
                assert_eq!(*a, b, "tasks:g keeps the inputs");
            }
        }
        assert_ne!(ys(0), ys(2));
        assert_ne!(
            toks(4),
            toks(0),
            "true draws Gaussian tasks from its own stream"
        );
    }

    #[test]
    fn observable_and_restriction_specs() {
        let o = observables(&["true, tasks:5".into(), "pretrain".into()]).unwrap();
        assert_eq!(
            o,
            vec![
                Observable::Pretrain,
                Observable::True,
                Observable::Tasks(5.0)
            ]
        );
        assert_eq!(observables(&["reference".into()]).unwrap().len(), 10);
        assert!(observables(&["inputs:x".into()]).is_err());
        let cfg = RegressionConfig::l2h4(8);
        let r = regression_restrictions(
            &cfg,
            &[
                "heads".into(),
                "layers".into(),
                "embeddings".into(),
                "qk=a.*;b.*".into(),
            ],
        )
        .unwrap();
        assert_eq!(r.len(), 8 + 2 + 2);
        assert_eq!(r[5].name, "L1H1");
        assert_eq!(
            r.last().unwrap().include,
            vec!["a.*".to_string(), "b.*".to_string()]
        );
        let m = masks(
            &RegressionTransformer::new(cfg)
                .unwrap()
                .layout
                .named_sizes(),
            &r[..10],
        )
        .unwrap();
        // Heads of a layer split its QKV weight; the layer covers all of them.
        for l in 0..2 {
            let layer = m[8 + l].as_ref().unwrap();
            for h in 0..4 {
                let head = m[l * 4 + h].as_ref().unwrap();
                assert!(head.iter().zip(layer).all(|(a, b)| !*a || *b));
                assert_eq!(head.iter().filter(|v| **v).count(), 3 * 64 * 64 / 4);
            }
        }
    }

    #[test]
    fn a_language_head_is_its_slices_of_the_attention_tensors() {
        let cfg = LanguageConfig {
            n_layers: 2,
            d_model: 16,
            d_head: 8,
            n_heads: 2,
            n_ctx: 12,
            d_vocab: 50,
        };
        let model = LanguageModel::new(cfg.clone()).unwrap();
        let r = lm_restrictions(&cfg, &["heads".into(), "layers".into()]).unwrap();
        let m = masks(&model.layout.named_sizes(), &r).unwrap();
        // W_Q, W_K, W_V, W_O of one head (d_model x d_head each) and its b_Q, b_K, b_V.
        for head in &m[..4] {
            assert_eq!(
                head.as_ref().unwrap().iter().filter(|v| **v).count(),
                4 * 16 * 8 + 3 * 8
            );
        }
        let overlap = m[0]
            .as_ref()
            .unwrap()
            .iter()
            .zip(m[1].as_ref().unwrap())
            .filter(|(a, b)| **a && **b)
            .count();
        assert_eq!(overlap, 0, "two heads share no weight");
        assert_eq!(
            lm_observables(&["pretrain,repeated".into()]).unwrap(),
            vec!["train", "repeated"]
        );
        let rows = (vec![7u32; 12 * 3], 12usize);
        let set = lm_observed_set(
            &model,
            &rows,
            &rows,
            &["train".into(), "repeated".into()],
            2,
            1,
        )
        .unwrap();
        let rep = &set.tokens[2 * 12..3 * 12];
        assert_eq!(rep[0], 7, "BOS first");
        assert!(rep[1..].iter().all(|t| *t != 7 && *t < 50));
        assert_eq!(&rep[1..6], &rep[6..11], "period (n_ctx - 1) / 2 = 5");
    }
}
