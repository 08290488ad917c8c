//! Data-parallel evaluation of a batch: fixed chunks of sequences run on rayon's pool, each with
//! its own gradient buffer, reduced in chunk order. Because the chunking does not depend on the
//! thread count, results are bitwise identical for any number of threads. A chunk borrows its
//! activations from a pool that holds one workspace per chunk in flight (at most the thread
//! count), not one per chunk: the memory stays small and warm in cache.

use std::sync::Mutex;

use rayon::prelude::*;
use stagewise_engine::Float;

use crate::regression::{ModelError, Readout, RegressionTransformer, Workspace};

struct ChunkState<T> {
    grad: Vec<T>,
    /// `grad` holds zeros: the reduction zeroes each chunk's gradient as it reads it, which
    /// saves a separate pass over them all before the next batch.
    grad_zero: bool,
    loss: f64,
    /// Squared error summed per token position.
    token_loss: Vec<f64>,
    /// The chunk's ReLU pattern `[L][R, M]`: recorded each pass while `record_relu` is set,
    /// used instead of the signs while `frozen` is set.
    relu: Vec<Vec<bool>>,
}

/// Workspaces lent to the chunks running now.
struct Pool<T>(Mutex<Vec<Workspace<T>>>);

impl<T: Float> Pool<T> {
    fn take(&self) -> Workspace<T> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.pop().unwrap_or_default()
    }

    fn give(&self, ws: Workspace<T>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ws);
    }
}

/// Runs the regression transformer over batches in chunks of `chunk` sequences.
pub struct ChunkedRunner<T> {
    chunk: usize,
    states: Vec<ChunkState<T>>,
    pool: Pool<T>,
    token_loss: Vec<f64>,
    /// Record each chunk's ReLU pattern on every pass, for [`ChunkedRunner::freeze_relu`].
    record_relu: bool,
    frozen: bool,
}

impl<T: Float> ChunkedRunner<T> {
    /// Default sequences per chunk: small enough to keep a chunk's activations in cache.
    pub const DEFAULT_CHUNK: usize = 16;

    pub fn new(chunk: usize) -> Self {
        ChunkedRunner {
            chunk: chunk.max(1),
            states: Vec::new(),
            pool: Pool(Mutex::new(Vec::new())),
            token_loss: Vec::new(),
            record_relu: false,
            frozen: false,
        }
    }

    /// Workspaces a batch of `nseq` sequences in chunks of `chunk` allocates: one per chunk
    /// in flight, at most the thread count of the current rayon pool.
    pub fn workspaces_for(nseq: usize, chunk: usize) -> usize {
        nseq.div_ceil(chunk.max(1))
            .min(rayon::current_num_threads())
    }

    /// Records every chunk's ReLU pattern on each pass, so that [`ChunkedRunner::freeze_relu`]
    /// can freeze the last one (costs one flag per MLP unit and row).
    pub fn recording_relu(mut self) -> Self {
        self.record_relu = true;
        self
    }

    /// Runs a chunk's passes in a pooled workspace, with the chunk's frozen ReLU pattern lent
    /// in, and records the pattern afterwards when asked.
    fn with_workspace<R>(
        pool: &Pool<T>,
        model: &RegressionTransformer,
        (frozen, record): (bool, bool),
        s: &mut ChunkState<T>,
        f: impl FnOnce(&mut Workspace<T>, &mut ChunkState<T>) -> R,
    ) -> R {
        let mut ws = pool.take();
        ws.freeze_relu = frozen;
        if frozen {
            std::mem::swap(&mut ws.relu_frozen, &mut s.relu);
        }
        let r = f(&mut ws, s);
        if frozen {
            std::mem::swap(&mut ws.relu_frozen, &mut s.relu);
        } else if record {
            ws.relu_pattern(model, &mut s.relu);
        }
        pool.give(ws);
        r
    }

    fn prepare(&mut self, nseq: usize, nparams: usize, with_grad: bool) -> usize {
        let nchunks = nseq.div_ceil(self.chunk);
        while self.states.len() < nchunks {
            self.states.push(ChunkState {
                grad: Vec::new(),
                grad_zero: false,
                loss: 0.0,
                token_loss: Vec::new(),
                relu: Vec::new(),
            });
        }
        if with_grad {
            for s in &mut self.states[..nchunks] {
                if !s.grad_zero || s.grad.len() != nparams {
                    s.grad.clear();
                    s.grad.resize(nparams, T::ZERO);
                }
                s.grad_zero = false;
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
        if grad.len() != p.len() || nseq == 0 {
            return Err(ModelError::Shape(format!(
                "gradient of {} values for {} parameters over {nseq} sequences: expected one \
                 value per parameter and at least one sequence",
                grad.len(),
                p.len()
            )));
        }
        let k = t.div_ceil(2);
        let d1 = model.config.token_size();
        let nchunks = self.prepare(nseq, p.len(), true);
        let chunk = self.chunk;
        let scale = 2.0 / (nseq * k) as f64;
        let (pool, modes) = (&self.pool, (self.frozen, self.record_relu));
        let results: Vec<Result<(), ModelError>> = self.states[..nchunks]
            .par_iter_mut()
            .enumerate()
            .map(|(i, s)| {
                let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(nseq));
                let toks_c = &toks[lo * t * d1..hi * t * d1];
                let ys_c = &ys[lo * k..hi * k];
                Self::with_workspace(pool, model, modes, s, |ws, s| {
                    model.forward(p, toks_c, hi - lo, t, ws, Readout::Predictions)?;
                    let mut loss = 0.0;
                    s.token_loss.clear();
                    s.token_loss.resize(k, 0.0);
                    let dpred: Vec<T> = ws
                        .pred
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
                    model.backward(p, &dpred, &mut s.grad, ws);
                    Ok(())
                })
            })
            .collect();
        results.into_iter().collect::<Result<(), _>>()?;
        // The chunks' gradients summed in chunk order, block by block, each zeroed as it is read.
        const BLOCK: usize = 4096;
        let mut blocks: Vec<Vec<&mut [T]>> = (0..grad.len().div_ceil(BLOCK))
            .map(|_| Vec::with_capacity(nchunks))
            .collect();
        for s in &mut self.states[..nchunks] {
            for (parts, part) in blocks.iter_mut().zip(s.grad.chunks_mut(BLOCK)) {
                parts.push(part);
            }
        }
        grad.par_chunks_mut(BLOCK)
            .zip(blocks.par_iter_mut())
            .for_each(|(g, parts)| {
                let (first, rest) = parts.split_first_mut().expect("at least one chunk");
                g.copy_from_slice(first);
                first.fill(T::ZERO);
                for part in rest {
                    for (a, b) in g.iter_mut().zip(part.iter_mut()) {
                        *a += *b;
                        *b = T::ZERO;
                    }
                }
            });
        drop(blocks);
        for s in &mut self.states[..nchunks] {
            s.grad_zero = true;
        }
        let states = &self.states[..nchunks];
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
        let (pool, modes) = (&self.pool, (self.frozen, self.record_relu));
        self.states[..nchunks]
            .par_iter_mut()
            .zip(out.par_chunks_mut(chunk * per_seq))
            .enumerate()
            .map(|(i, (s, out))| {
                let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(nseq));
                let toks_c = &toks[lo * t * d1..hi * t * d1];
                Self::with_workspace(pool, model, modes, s, |ws, _| {
                    model.forward(p, toks_c, hi - lo, t, ws, readout)?;
                    let src = match readout {
                        Readout::Predictions => &ws.pred,
                        Readout::Full => &ws.out,
                    };
                    out.copy_from_slice(&src[..(hi - lo) * per_seq]);
                    Ok(())
                })
            })
            .collect()
    }

    /// Freezes every chunk's ReLU pattern of the last pass: later passes (on the same batch) use
    /// it instead of the signs of their own pre-activations, so the model is the smooth piece
    /// around that point and finite differences of gradients give the Hessian that autograd
    /// reports (ReLU'' = 0). Needs [`ChunkedRunner::recording_relu`].
    pub fn freeze_relu(&mut self) {
        assert!(
            self.record_relu,
            "freeze_relu needs a runner built with recording_relu()"
        );
        self.frozen = true;
    }

    /// Back to the pre-activation signs.
    pub fn unfreeze_relu(&mut self) {
        self.frozen = false;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegressionConfig;

    /// `nseq` sequences of `k` examples: pseudo-random x and y in [-2, 2).
    fn batch(
        model: &RegressionTransformer,
        nseq: usize,
        k: usize,
        seed: u64,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
        };
        let d = model.config.task_size;
        let xs: Vec<f64> = (0..nseq * k * d).map(|_| next()).collect();
        let ys: Vec<f64> = (0..nseq * k).map(|_| next()).collect();
        (model.encode(&xs, &ys, nseq, k), ys)
    }

    fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    /// Pooled workspaces carry nothing from one chunk or call to the next: a runner that has
    /// just run a larger batch (more rows, more tokens) on 3 threads gives bitwise what a fresh
    /// runner gives on 1 thread, the last chunk partial.
    #[test]
    fn pooled_workspaces_carry_nothing_between_chunks_or_calls() {
        let model = RegressionTransformer::new(RegressionConfig::l2h4(8)).unwrap();
        let p: Vec<f64> = model.init_params(3);
        let (big, big_ys) = batch(&model, 40, 8, 1);
        let (toks, ys) = batch(&model, 35, 6, 2);
        let run = |threads: usize, warm: bool| {
            in_pool(threads, || {
                let mut r = ChunkedRunner::<f64>::new(16);
                let mut g = vec![0.0; p.len()];
                if warm {
                    r.loss_and_grad(&model, &p, &big, &big_ys, 40, 16, &mut g)
                        .unwrap();
                }
                let loss = r
                    .loss_and_grad(&model, &p, &toks, &ys, 35, 12, &mut g)
                    .unwrap();
                let mut pred = vec![f64::NAN; 35 * 6];
                r.predict(&model, &p, &toks, 35, 12, &mut pred).unwrap();
                (loss, g, pred, r.token_losses().to_vec())
            })
        };
        let fresh = run(1, false);
        assert!(fresh.0 > 0.0 && fresh.2.iter().all(|v| v.is_finite()));
        for threads in [1, 3] {
            let warm = run(threads, true);
            assert_eq!(warm.0.to_bits(), fresh.0.to_bits(), "{threads} threads");
            assert_eq!(warm.1, fresh.1, "gradient, {threads} threads");
            assert_eq!(warm.2, fresh.2, "predictions, {threads} threads");
            assert_eq!(warm.3, fresh.3, "token losses, {threads} threads");
        }
    }

    /// A frozen ReLU pattern belongs to its chunk, whichever pooled workspace runs it: frozen at
    /// w and evaluated at w', three chunks together give what each chunk gives alone, and not
    /// what the unfrozen model gives at w'.
    #[test]
    fn each_chunk_keeps_its_own_frozen_relu_pattern() {
        let model = RegressionTransformer::new(RegressionConfig::l2h4(8)).unwrap();
        let w: Vec<f64> = model.init_params(5);
        let w2: Vec<f64> = model
            .init_params::<f64>(6)
            .iter()
            .zip(&w)
            .map(|(a, b)| b + 0.5 * a)
            .collect();
        let (k, t, nseq) = (6, 12, 35);
        let (toks, ys) = batch(&model, nseq, k, 7);
        let frozen_loss = |lo: usize, hi: usize, threads: usize| {
            in_pool(threads, || {
                let mut r = ChunkedRunner::<f64>::new(16).recording_relu();
                let mut g = vec![0.0; w.len()];
                let d1 = model.config.token_size();
                let (tk, y) = (&toks[lo * t * d1..hi * t * d1], &ys[lo * k..hi * k]);
                r.loss_and_grad(&model, &w, tk, y, hi - lo, t, &mut g)
                    .unwrap();
                r.freeze_relu();
                let frozen = r
                    .loss_and_grad(&model, &w2, tk, y, hi - lo, t, &mut g)
                    .unwrap();
                r.unfreeze_relu();
                let free = r
                    .loss_and_grad(&model, &w2, tk, y, hi - lo, t, &mut g)
                    .unwrap();
                (frozen * (hi - lo) as f64, free * (hi - lo) as f64)
            })
        };
        let (whole, free) = frozen_loss(0, nseq, 3);
        let parts: f64 = [(0, 16), (16, 32), (32, 35)]
            .iter()
            .map(|&(lo, hi)| frozen_loss(lo, hi, 1).0)
            .sum();
        assert!((whole - parts).abs() <= 1e-12 * whole, "{whole} vs {parts}");
        assert!(
            (whole - free).abs() > 1e-6 * whole,
            "freezing changed nothing: {whole}"
        );
    }
}
