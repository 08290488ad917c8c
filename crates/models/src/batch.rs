//! Data-parallel evaluation of a batch: fixed chunks of sequences run on rayon's pool, each with
//! its own workspace and gradient buffer, reduced in chunk order. Because the chunking does not
//! depend on the thread count, results are bitwise identical for any number of threads.

use rayon::prelude::*;
use stagewise_engine::Float;

use crate::regression::{ModelError, Readout, RegressionTransformer, Workspace};

struct ChunkState<T> {
    ws: Workspace<T>,
    grad: Vec<T>,
    loss: f64,
    /// Squared error summed per token position.
    token_loss: Vec<f64>,
}

/// Runs the regression transformer over batches in chunks of `chunk` sequences.
pub struct ChunkedRunner<T> {
    chunk: usize,
    states: Vec<ChunkState<T>>,
    token_loss: Vec<f64>,
}

impl<T: Float> ChunkedRunner<T> {
    /// Default sequences per chunk: small enough to keep a chunk's activations in cache.
    pub const DEFAULT_CHUNK: usize = 16;

    pub fn new(chunk: usize) -> Self {
        ChunkedRunner {
            chunk: chunk.max(1),
            states: Vec::new(),
            token_loss: Vec::new(),
        }
    }

    fn prepare(&mut self, nseq: usize, nparams: usize, with_grad: bool) -> usize {
        let nchunks = nseq.div_ceil(self.chunk);
        while self.states.len() < nchunks {
            self.states.push(ChunkState {
                ws: Workspace::default(),
                grad: Vec::new(),
                loss: 0.0,
                token_loss: Vec::new(),
            });
        }
        if with_grad {
            for s in &mut self.states[..nchunks] {
                s.grad.clear();
                s.grad.resize(nparams, T::ZERO);
            }
        }
        nchunks
    }

    /// Mean squared error `mean((y_hat - y)^2)` over all `nseq * ceil(t/2)` predictions of
    /// `toks[nseq, t, D+1]` against `ys[nseq, ceil(t/2)]`; overwrites `grad` with its gradient.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grad(
        &mut self,
        model: &RegressionTransformer,
        p: &[T],
        toks: &[T],
        ys: &[T],
        nseq: usize,
        t: usize,
        grad: &mut [T],
    ) -> Result<f64, ModelError> {
        let k = t.div_ceil(2);
        let d1 = model.config.token_size();
        let nchunks = self.prepare(nseq, p.len(), true);
        let chunk = self.chunk;
        let scale = 2.0 / (nseq * k) as f64;
        let results: Vec<Result<(), ModelError>> = self.states[..nchunks]
            .par_iter_mut()
            .enumerate()
            .map(|(i, s)| {
                let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(nseq));
                let toks_c = &toks[lo * t * d1..hi * t * d1];
                let ys_c = &ys[lo * k..hi * k];
                model.forward(p, toks_c, hi - lo, t, &mut s.ws, Readout::Predictions)?;
                let mut loss = 0.0;
                s.token_loss.clear();
                s.token_loss.resize(k, 0.0);
                let dpred: Vec<T> =
                    s.ws.pred
                        .iter()
                        .zip(ys_c)
                        .enumerate()
                        .map(|(j, (pr, y))| {
                            let diff = *pr - *y;
                            let sq = (diff * diff).to_f64();
                            loss += sq;
                            s.token_loss[j % k] += sq;
                            T::from_f64(scale) * diff
                        })
                        .collect();
                s.loss = loss;
                model.backward(p, &dpred, &mut s.grad, &mut s.ws);
                Ok(())
            })
            .collect();
        results.into_iter().collect::<Result<(), _>>()?;
        let states = &self.states[..nchunks];
        grad.par_chunks_mut(4096).enumerate().for_each(|(ci, g)| {
            let off = ci * 4096;
            g.copy_from_slice(&states[0].grad[off..off + g.len()]);
            for s in &states[1..] {
                for (a, b) in g.iter_mut().zip(&s.grad[off..]) {
                    *a += *b;
                }
            }
        });
        self.token_loss.clear();
        self.token_loss.resize(k, 0.0);
        for s in states {
            for (a, b) in self.token_loss.iter_mut().zip(&s.token_loss) {
                *a += b / nseq as f64;
            }
        }
        Ok(states.iter().map(|s| s.loss).sum::<f64>() / (nseq * k) as f64)
    }

    /// Mean squared error of each token position in the last `loss_and_grad` (their mean is
    /// its loss).
    pub fn token_losses(&self) -> &[f64] {
        &self.token_loss
    }

    /// Predictions `y_hat[nseq, ceil(t/2)]` of `toks[nseq, t, D+1]` into `pred`.
    pub fn predict(
        &mut self,
        model: &RegressionTransformer,
        p: &[T],
        toks: &[T],
        nseq: usize,
        t: usize,
        pred: &mut [T],
    ) -> Result<(), ModelError> {
        self.forward_into(model, p, toks, nseq, t, Readout::Predictions, pred)
    }

    /// Runs the chunks forward and copies each chunk's readout (`Predictions`: `[n, ceil(t/2)]`,
    /// `Full`: `[n, t, D+1]`) into its slice of `out`.
    #[allow(clippy::too_many_arguments)]
    fn forward_into(
        &mut self,
        model: &RegressionTransformer,
        p: &[T],
        toks: &[T],
        nseq: usize,
        t: usize,
        readout: Readout,
        out: &mut [T],
    ) -> Result<(), ModelError> {
        let d1 = model.config.token_size();
        let per_seq = match readout {
            Readout::Predictions => t.div_ceil(2),
            Readout::Full => t * d1,
        };
        let nchunks = self.prepare(nseq, p.len(), false);
        let chunk = self.chunk;
        self.states[..nchunks]
            .par_iter_mut()
            .zip(out.par_chunks_mut(chunk * per_seq))
            .enumerate()
            .map(|(i, (s, out))| {
                let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(nseq));
                model.forward(
                    p,
                    &toks[lo * t * d1..hi * t * d1],
                    hi - lo,
                    t,
                    &mut s.ws,
                    readout,
                )?;
                let src = match readout {
                    Readout::Predictions => &s.ws.pred,
                    Readout::Full => &s.ws.out,
                };
                out.copy_from_slice(&src[..(hi - lo) * per_seq]);
                Ok(())
            })
            .collect()
    }

    /// Freezes every chunk's ReLU pattern of the last pass (see [`Workspace::freeze_relu`]);
    /// later passes must use the same batch.
    pub fn freeze_relu(&mut self, model: &RegressionTransformer) {
        for s in &mut self.states {
            s.ws.freeze_relu(model);
        }
    }

    pub fn unfreeze_relu(&mut self) {
        for s in &mut self.states {
            s.ws.unfreeze_relu();
        }
    }

    /// Every token output `out[nseq, t, D+1]` of `toks[nseq, t, D+1]` (the reference's
    /// `token_sequence_transformer(tokens)`).
    pub fn outputs(
        &mut self,
        model: &RegressionTransformer,
        p: &[T],
        toks: &[T],
        nseq: usize,
        t: usize,
        out: &mut [T],
    ) -> Result<(), ModelError> {
        self.forward_into(model, p, toks, nseq, t, Readout::Full, out)
    }
}
