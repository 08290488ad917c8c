//! The language model's evaluations at each logged step. The reference's code defines only the
//! test loss; the rest follow the paper's text and Olsson et al. (2022), defined here exactly
//! (and in the README):
//!
//! - `test/loss`: mean next-token cross-entropy over the test rows (positions 0..T-2).
//! - `test/loss_no_pos`: the same with `W_pos` set to zero (the positional embedding ablated).
//! - `bigram/score`: mean over test positions i of the cross-entropy between the training
//!   data's empirical bigram distribution `P(. | x_i)` and the model's next-token distribution
//!   at i; `bigram/entropy` is its floor, the mean entropy of `P(. | x_i)`.
//! - `trigram/loss`: mean loss at test tokens that complete one of the `top_k` most frequent
//!   training trigrams `(x_{i-2}, x_{i-1}, x_i)`; `trigram/score` = `test/loss` divided by it.
//!   `skip_trigram/*` likewise for `(x_{i-s}, x_{i-1}, x_i)`, s in 10..20 (the reference's
//!   skip range).
//! - `icl/score`: loss at an early position minus loss at a late one (Olsson et al.'s 50th and
//!   500th tokens, scaled by n_ctx/512 for contexts under 512 tokens).
//! - `heads/prefix/L{l}H{h}`: on sequences BOS + r + r (r uniform random tokens), the mean
//!   attention from each token of the second copy to the token after its first occurrence.
//! - `heads/prev/L{l}H{h}`: on the test rows, the mean attention from position i to i-1.

use std::collections::{HashMap, HashSet};

use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};
use stagewise_models::language::{LanguageModel, LmRunner, LmWorkspace, RowSource};

use crate::trainer::TrainError;

/// Skip distances of the skip-trigrams (the reference's `min_skip`, `max_skip`).
pub const SKIPS: std::ops::Range<usize> = 10..20;
/// Repeated random sequences for the prefix-matching score.
pub const PREFIX_SEQUENCES: usize = 16;

/// Training-data statistics the n-gram evaluations compare against.
pub struct NgramTables {
    /// `P(b | a)` as `(b, p)` lists per `a`, and the entropy of each.
    bigram: HashMap<u32, (Vec<(u32, f64)>, f64)>,
    trigrams: HashSet<(u32, u32, u32)>,
    skip_trigrams: HashSet<(u32, u32, u32)>,
}

fn top_k<K: Copy + Ord + std::hash::Hash>(counts: HashMap<K, u64>, k: usize) -> HashSet<K> {
    let mut v: Vec<(K, u64)> = counts.into_iter().collect();
    // Most frequent first; ties by key, so the set does not depend on hashing.
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(k).map(|(key, _)| key).collect()
}

impl NgramTables {
    /// Counts over the first `max_rows` training rows: every adjacent pair (the bigrams), and
    /// the `top_k` most frequent trigrams and skip-trigrams.
    pub fn count(rows: &dyn RowSource, n_ctx: usize, max_rows: usize, top_k_n: usize) -> Self {
        let mut pairs: HashMap<u32, HashMap<u32, u64>> = HashMap::new();
        let mut tri: HashMap<(u32, u32, u32), u64> = HashMap::new();
        let mut skip: HashMap<(u32, u32, u32), u64> = HashMap::new();
        let mut row = vec![0u32; n_ctx];
        for r in 0..rows.len().min(max_rows) {
            rows.row_into(r, &mut row);
            for i in 1..n_ctx {
                *pairs
                    .entry(row[i - 1])
                    .or_default()
                    .entry(row[i])
                    .or_default() += 1;
                if i >= 2 {
                    *tri.entry((row[i - 2], row[i - 1], row[i])).or_default() += 1;
                }
                for s in SKIPS {
                    if i >= s {
                        *skip.entry((row[i - s], row[i - 1], row[i])).or_default() += 1;
                    }
                }
            }
        }
        let bigram = pairs
            .into_iter()
            .map(|(a, next)| {
                let total: u64 = next.values().sum();
                let mut ps: Vec<(u32, f64)> = next
                    .into_iter()
                    .map(|(b, c)| (b, c as f64 / total as f64))
                    .collect();
                ps.sort_unstable_by_key(|x| x.0);
                let h = -ps.iter().map(|(_, p)| p * p.ln()).sum::<f64>();
                (a, (ps, h))
            })
            .collect();
        NgramTables {
            bigram,
            trigrams: top_k(tri, top_k_n),
            skip_trigrams: top_k(skip, top_k_n),
        }
    }
}

impl NgramTables {
    /// `P(. | a)` as `(b, p)` sorted by `b`, if `a` was seen with a successor.
    pub fn bigram(&self, a: u32) -> Option<&[(u32, f64)]> {
        self.bigram.get(&a).map(|(p, _)| p.as_slice())
    }

    pub fn is_top_trigram(&self, tri: (u32, u32, u32)) -> bool {
        self.trigrams.contains(&tri)
    }
}

/// Sums of one chunk's evaluations.
#[derive(Default)]
struct Sums {
    loss: f64,
    tokens: f64,
    bigram: f64,
    bigram_h: f64,
    bigram_n: f64,
    tri: f64,
    tri_n: f64,
    skip: f64,
    skip_n: f64,
    early: f64,
    late: f64,
    rows: f64,
    prev: Vec<f64>,
}

/// The evaluations of a run: fixed test rows and the tables and sequences they use.
pub struct LmEvaluator {
    n_ctx: usize,
    test: Vec<u32>,
    test_rows: usize,
    tables: NgramTables,
    repeated: Vec<u32>,
    /// Early and late positions of the ICL score.
    pub icl_positions: (usize, usize),
    batch: usize,
}

impl LmEvaluator {
    /// `limit` test rows (all by default); n-gram tables from the first `ngram_rows` training
    /// rows with the `top_k` most frequent trigrams; prefix sequences from `seed`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &LanguageModel,
        train: &dyn RowSource,
        test: &dyn RowSource,
        limit: Option<usize>,
        ngram_rows: usize,
        top_k: usize,
        batch: usize,
        seed: u64,
        bos: u32,
    ) -> Self {
        let n_ctx = model.config.n_ctx;
        let n = limit.map_or(test.len(), |l| l.min(test.len()));
        let mut ids = vec![0u32; n * n_ctx];
        for r in 0..n {
            test.row_into(r, &mut ids[r * n_ctx..(r + 1) * n_ctx]);
        }
        // BOS, r, r with r uniform over the vocabulary without BOS.
        let half = (n_ctx - 1) / 2;
        let v = model.config.d_vocab as u64;
        let mut repeated = Vec::with_capacity(PREFIX_SEQUENCES * (1 + 2 * half));
        for s in 0..PREFIX_SEQUENCES {
            let st = Stream::new(seed, tag::LM_EVAL, s as u32, 0);
            let r: Vec<u32> = (0..half)
                .map(|j| {
                    let x = st.below(j as u32, v - 1) as u32;
                    if x >= bos { x + 1 } else { x }
                })
                .collect();
            repeated.push(bos);
            repeated.extend(&r);
            repeated.extend(&r);
        }
        let scale = |k: usize| {
            if n_ctx >= 512 {
                k
            } else {
                (k * n_ctx / 512).max(1)
            }
        };
        LmEvaluator {
            n_ctx,
            test: ids,
            test_rows: n,
            tables: NgramTables::count(train, n_ctx, ngram_rows, top_k),
            repeated,
            icl_positions: (scale(50), scale(500).min(n_ctx - 2)),
            batch,
        }
    }

    /// Column names, in the order of [`Self::evaluate`]'s values.
    pub fn metric_names(model: &LanguageModel) -> Vec<String> {
        let mut names: Vec<String> = [
            "test/loss",
            "test/loss_no_pos",
            "bigram/score",
            "bigram/entropy",
            "trigram/loss",
            "trigram/score",
            "skip_trigram/loss",
            "skip_trigram/score",
            "icl/score",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for kind in ["prefix", "prev"] {
            for l in 0..model.config.n_layers {
                for h in 0..model.config.n_heads {
                    names.push(format!("heads/{kind}/L{l}H{h}"));
                }
            }
        }
        names
    }

    /// Every evaluation of `p`, in [`Self::metric_names`] order.
    pub fn evaluate<T: Float>(
        &self,
        model: &LanguageModel,
        p: &[T],
        runner: &mut LmRunner<T>,
    ) -> Result<Vec<f64>, TrainError> {
        let (nl, nh, v) = (
            model.config.n_layers,
            model.config.n_heads,
            model.config.d_vocab,
        );
        let t = self.n_ctx;
        let (early, late) = self.icl_positions;
        let tables = &self.tables;
        let visit = |s0: usize, nseq: usize, ws: &LmWorkspace<T>| -> Sums {
            let toks = &self.test[s0 * t..(s0 + nseq) * t];
            let mut sm = Sums {
                prev: vec![0.0; nl * nh],
                ..Sums::default()
            };
            for b in 0..nseq {
                let row = &toks[b * t..(b + 1) * t];
                sm.rows += 1.0;
                for i in 0..t - 1 {
                    let logits = ws.logits_at(b, i, v);
                    let mx = logits
                        .iter()
                        .fold(f64::NEG_INFINITY, |m, x| m.max(x.to_f64()));
                    let lse = mx
                        + logits
                            .iter()
                            .map(|x| (x.to_f64() - mx).exp())
                            .sum::<f64>()
                            .ln();
                    let loss = lse - logits[row[i + 1] as usize].to_f64();
                    sm.loss += loss;
                    sm.tokens += 1.0;
                    if let Some((ps, h)) = tables.bigram.get(&row[i]) {
                        sm.bigram += ps
                            .iter()
                            .map(|(c, pr)| pr * (lse - logits[*c as usize].to_f64()))
                            .sum::<f64>();
                        sm.bigram_h += h;
                        sm.bigram_n += 1.0;
                    }
                    let j = i + 1; // the predicted token's position
                    if j >= 2 && tables.trigrams.contains(&(row[j - 2], row[j - 1], row[j])) {
                        sm.tri += loss;
                        sm.tri_n += 1.0;
                    }
                    if SKIPS.clone().any(|s| {
                        j >= s
                            && tables
                                .skip_trigrams
                                .contains(&(row[j - s], row[j - 1], row[j]))
                    }) {
                        sm.skip += loss;
                        sm.skip_n += 1.0;
                    }
                    if i == early {
                        sm.early += loss;
                    }
                    if i == late {
                        sm.late += loss;
                    }
                }
                for l in 0..nl {
                    for h in 0..nh {
                        let s: f64 = (1..t)
                            .map(|q| ws.attention(l, b, h, q, q - 1).to_f64())
                            .sum();
                        sm.prev[l * nh + h] += s / (t - 1) as f64;
                    }
                }
            }
            sm
        };
        let mut total = Sums {
            prev: vec![0.0; nl * nh],
            ..Sums::default()
        };
        let mut s = 0;
        while s < self.test_rows {
            let e = (s + self.batch).min(self.test_rows);
            let f = |c0: usize, n: usize, ws: &LmWorkspace<T>| visit(s + c0, n, ws);
            for sm in runner.inspect(model, p, &self.test[s * t..e * t], e - s, t, &f)? {
                total.loss += sm.loss;
                total.tokens += sm.tokens;
                total.bigram += sm.bigram;
                total.bigram_h += sm.bigram_h;
                total.bigram_n += sm.bigram_n;
                total.tri += sm.tri;
                total.tri_n += sm.tri_n;
                total.skip += sm.skip;
                total.skip_n += sm.skip_n;
                total.early += sm.early;
                total.late += sm.late;
                total.rows += sm.rows;
                for (a, b) in total.prev.iter_mut().zip(&sm.prev) {
                    *a += *b;
                }
            }
            s = e;
        }
        let test_loss = total.loss / total.tokens;
        // Positional embedding ablated.
        let mut q = p.to_vec();
        let pos = model.w_pos..model.w_pos + model.config.n_ctx * model.config.d_model;
        q[pos].fill(T::ZERO);
        let no_pos = crate::lm::evaluate_rows(
            model,
            &q,
            runner,
            &(self.test.clone(), t),
            None,
            self.batch,
            None,
        )?;
        // Prefix matching on the repeated sequences.
        let half = (t - 1) / 2;
        let len = 1 + 2 * half;
        let prefix_visit = |_: usize, nseq: usize, ws: &LmWorkspace<T>| -> Vec<f64> {
            let mut out = vec![0.0; nl * nh];
            for b in 0..nseq {
                for l in 0..nl {
                    for h in 0..nh {
                        // Token j of the second copy sits at 1 + half + j; the token after its
                        // first occurrence at 2 + j.
                        let s: f64 = (0..half)
                            .map(|j| ws.attention(l, b, h, 1 + half + j, 2 + j).to_f64())
                            .sum();
                        out[l * nh + h] += s / half as f64;
                    }
                }
            }
            out
        };
        let mut prefix = vec![0.0; nl * nh];
        for part in runner.inspect(
            model,
            p,
            &self.repeated,
            PREFIX_SEQUENCES,
            len,
            &prefix_visit,
        )? {
            for (a, b) in prefix.iter_mut().zip(part) {
                *a += b / PREFIX_SEQUENCES as f64;
            }
        }
        let ratio = |num: f64, den: f64| if den > 0.0 { num / den } else { f64::NAN };
        let tri_loss = ratio(total.tri, total.tri_n);
        let skip_loss = ratio(total.skip, total.skip_n);
        let mut out = vec![
            test_loss,
            no_pos,
            ratio(total.bigram, total.bigram_n),
            ratio(total.bigram_h, total.bigram_n),
            tri_loss,
            test_loss / tri_loss,
            skip_loss,
            test_loss / skip_loss,
            ratio(total.early - total.late, total.rows),
        ];
        out.extend(prefix);
        out.extend(total.prev.iter().map(|x| x / total.rows));
        Ok(out)
    }
}
