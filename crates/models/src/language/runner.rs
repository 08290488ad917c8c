//! Data-parallel evaluation of a language-model batch: the sequences are cut into chunks (at
//! most [`LmRunner::CHUNK_TOKENS`] tokens, and small enough that every group gets one when the
//! batch has enough sequences) and the chunks into at most [`LmRunner::GROUPS`]
//! contiguous groups. Groups run on rayon's pool, each accumulating into its own gradient, and
//! are reduced in group order; the grouping depends only on the batch shape, so results are
//! bitwise identical for any thread count.

use rayon::prelude::*;
use stagewise_engine::Float;

use super::{LanguageModel, LmWorkspace, PackedGrad};
use crate::ModelError;

struct Group<T> {
    ws: LmWorkspace<T>,
    grad: Vec<T>,
    pg: Option<PackedGrad<T>>,
}

/// Runs the language model over batches of token sequences.
pub struct LmRunner<T> {
    groups: Vec<Group<T>>,
    /// Per-token losses `[B, T-1]` of the last call (token i+1 predicted from tokens up to i).
    losses: Vec<f64>,
    /// Mean loss per position `[T-1]` of the last call.
    position_losses: Vec<f64>,
}

impl<T: Float> Default for LmRunner<T> {
    fn default() -> Self {
        LmRunner {
            groups: Vec::new(),
            losses: Vec::new(),
            position_losses: Vec::new(),
        }
    }
}

impl<T: Float> LmRunner<T> {
    /// Tokens per chunk: a chunk's attention patterns and logits stay in the tens of megabytes.
    pub const CHUNK_TOKENS: usize = 2048;
    /// The most groups (gradient buffers) a batch is split into.
    pub const GROUPS: usize = 8;

    pub fn new() -> Self {
        Self::default()
    }

    /// Per-token losses `[B, T-1]` of the last call.
    pub fn token_losses(&self) -> &[f64] {
        &self.losses
    }

    /// Mean loss at each position `[T-1]` of the last call; their mean is the loss.
    pub fn position_losses(&self) -> &[f64] {
        &self.position_losses
    }

    /// Forward passes only, for evaluations: runs each chunk of `tokens[B, T]` and calls
    /// `visit(first_sequence, sequences, workspace)` with its logits `[n, V]` and attention
    /// patterns in the workspace (before any loss), in parallel; results in chunk order.
    pub fn inspect<R: Send>(
        &mut self,
        model: &LanguageModel,
        p: &[T],
        tokens: &[u32],
        nseq: usize,
        t: usize,
        visit: &(dyn Fn(usize, usize, &LmWorkspace<T>) -> R + Sync),
    ) -> Result<Vec<R>, ModelError> {
        model.check_tokens(tokens, nseq, t)?;
        let packed = model.pack(p);
        let chunk = (Self::CHUNK_TOKENS / t)
            .min(nseq.div_ceil(Self::GROUPS))
            .max(1);
        let nchunks = nseq.div_ceil(chunk);
        let ngroups = nchunks.min(Self::GROUPS);
        while self.groups.len() < ngroups {
            self.groups.push(Group {
                ws: LmWorkspace::default(),
                grad: Vec::new(),
                pg: None,
            });
        }
        let per_group: Vec<Vec<R>> = self.groups[..ngroups]
            .par_iter_mut()
            .enumerate()
            .map(|(g, grp)| {
                let (c0, c1) = (g * nchunks / ngroups, (g + 1) * nchunks / ngroups);
                (c0..c1)
                    .map(|c| {
                        let (s, e) = (c * chunk, ((c + 1) * chunk).min(nseq));
                        model.forward(p, &packed, &tokens[s * t..e * t], e - s, t, &mut grp.ws);
                        visit(s, e - s, &grp.ws)
                    })
                    .collect()
            })
            .collect();
        Ok(per_group.into_iter().flatten().collect())
    }

    /// Mean next-token cross-entropy over the `B*(T-1)` predictions of `tokens[B, T]`; with
    /// `grad`, its gradient overwrites `grad`.
    pub fn run(
        &mut self,
        model: &LanguageModel,
        p: &[T],
        tokens: &[u32],
        nseq: usize,
        t: usize,
        grad: Option<&mut [T]>,
    ) -> Result<f64, ModelError> {
        model.check_tokens(tokens, nseq, t)?;
        if p.len() != model.num_params() {
            return Err(ModelError::Shape(format!(
                "{} parameters for a model of {}",
                p.len(),
                model.num_params()
            )));
        }
        let with_grad = grad.is_some();
        let packed = model.pack(p);
        // Enough chunks for every group when the batch allows, each at most CHUNK_TOKENS.
        let chunk = (Self::CHUNK_TOKENS / t)
            .min(nseq.div_ceil(Self::GROUPS))
            .max(1);
        let nchunks = nseq.div_ceil(chunk);
        let ngroups = nchunks.min(Self::GROUPS);
        // Group g runs chunks [g*nchunks/ngroups, (g+1)*nchunks/ngroups).
        let seq_range = |g: usize| {
            let (c0, c1) = (g * nchunks / ngroups, (g + 1) * nchunks / ngroups);
            (c0 * chunk, (c1 * chunk).min(nseq))
        };
        while self.groups.len() < ngroups {
            self.groups.push(Group {
                ws: LmWorkspace::default(),
                grad: Vec::new(),
                pg: None,
            });
        }
        for g in &mut self.groups[..ngroups] {
            if with_grad {
                g.grad.clear();
                g.grad.resize(p.len(), T::ZERO);
                g.pg.get_or_insert_with(|| PackedGrad::zeros(model)).clear();
            }
        }
        self.losses.clear();
        self.losses.resize(nseq * (t - 1), 0.0);
        let dscale = T::from_f64(1.0 / (nseq * (t - 1)) as f64);
        // The token-loss rows of each group, in order.
        let mut slices = Vec::with_capacity(ngroups);
        let mut rest = &mut self.losses[..];
        for g in 0..ngroups {
            let (s0, s1) = seq_range(g);
            let (mine, tail) = rest.split_at_mut((s1 - s0) * (t - 1));
            slices.push(mine);
            rest = tail;
        }
        self.groups[..ngroups]
            .par_iter_mut()
            .zip(slices)
            .enumerate()
            .for_each(|(g, (grp, out))| {
                let (s0, s1) = seq_range(g);
                let mut s = s0;
                while s < s1 {
                    let e = (s + chunk).min(s1);
                    let toks = &tokens[s * t..e * t];
                    model.forward(p, &packed, toks, e - s, t, &mut grp.ws);
                    model.token_losses(&mut grp.ws, dscale);
                    for (b, row) in grp.ws.losses.chunks_exact(t).take(e - s).enumerate() {
                        let o = (s - s0 + b) * (t - 1);
                        out[o..o + t - 1].copy_from_slice(&row[..t - 1]);
                    }
                    if with_grad {
                        let pg = grp.pg.as_mut().expect("packed gradient allocated");
                        model.backward(p, &packed, &mut grp.ws, &mut grp.grad, pg);
                    }
                    s = e;
                }
            });
        self.position_losses.clear();
        self.position_losses.resize(t - 1, 0.0);
        for row in self.losses.chunks_exact(t - 1) {
            for (m, l) in self.position_losses.iter_mut().zip(row) {
                *m += *l;
            }
        }
        let mut total = 0.0;
        for m in &mut self.position_losses {
            total += *m;
            *m /= nseq as f64;
        }
        if let Some(grad) = grad {
            let (first, others) = self.groups[..ngroups].split_at_mut(1);
            let g0 = &mut first[0];
            for o in others.iter() {
                for (a, b) in g0.grad.iter_mut().zip(&o.grad) {
                    *a += *b;
                }
                let (pa, pb) = (g0.pg.as_mut().unwrap(), o.pg.as_ref().unwrap());
                for (x, y) in pa.dwqkv.iter_mut().zip(&pb.dwqkv) {
                    for (a, b) in x.iter_mut().zip(y) {
                        *a += *b;
                    }
                }
                for (x, y) in pa.dbqkv.iter_mut().zip(&pb.dbqkv) {
                    for (a, b) in x.iter_mut().zip(y) {
                        *a += *b;
                    }
                }
            }
            grad.copy_from_slice(&g0.grad);
            model.unpack_grad(g0.pg.as_ref().unwrap(), grad);
        }
        Ok(total / (nseq * (t - 1)) as f64)
    }
}

/// Rows of `n_ctx` token ids to train or evaluate on (the text crate's rows; `(ids, n_ctx)` for rows in memory).
pub trait RowSource: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies row `i` into `out[..n_ctx]`.
    fn row_into(&self, i: usize, out: &mut [u32]);
}

impl RowSource for (Vec<u32>, usize) {
    fn len(&self) -> usize {
        self.0.len() / self.1
    }
    fn row_into(&self, i: usize, out: &mut [u32]) {
        out[..self.1].copy_from_slice(&self.0[i * self.1..(i + 1) * self.1]);
    }
}
