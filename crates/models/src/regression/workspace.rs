//! Activations and gradient scratch of the regression transformer for one chunk of sequences,
//! reused across steps (buffers only grow), as llm.c's `ActivationTensors`.
//!
//! Shapes: B = `nseq` sequences of t tokens, N = B*t rows, C = embed width, M = MLP width,
//! H heads, D+1 = token width, K = ceil(t/2) x positions per sequence. A block runs its attention
//! on all N rows; the rest of the block runs on R rows: N, or the B*K x positions only in the
//! last block of a `Readout::Predictions` pass ("compact"). Buffers are allocated for N rows;
//! a `[R, ..]` buffer uses its first R rows.

use stagewise_engine::Float;
use stagewise_engine::attention::AttnShape;

use super::{Readout, RegressionTransformer};

/// Saved activations of one block (its input is `Workspace::x[l]`).
#[derive(Default)]
pub(super) struct BlockActs<T> {
    /// Pre-attention LayerNorm output `[N, C]` and its row statistics `[N]`.
    pub(super) ln0: Vec<T>,
    pub(super) mean0: Vec<T>,
    pub(super) rstd0: Vec<T>,
    /// Fused per-head Q, K, V `[N, 3C]` (head h: Q at `[h*3c, h*3c + c)`, K, V next; c = C/H).
    pub(super) qkv: Vec<T>,
    /// Attention probabilities `[B, H, t, t rounded up to 8]` (row i: query i's weights).
    pub(super) probs: Vec<T>,
    /// Attention output, heads side by side `[N, C]`.
    pub(super) atty: Vec<T>,
    /// `atty` and the block input at the x positions `[R, C]` (compact block only).
    pub(super) atty_c: Vec<T>,
    pub(super) x_c: Vec<T>,
    /// The MLP's input `h = x + attn` `[R, C]` (`attn`, the output projection, is summed into
    /// it as it is computed and not kept).
    pub(super) h: Vec<T>,
    /// Pre-MLP LayerNorm output `[R, C]` and its row statistics `[R]`.
    pub(super) ln1: Vec<T>,
    pub(super) mean1: Vec<T>,
    pub(super) rstd1: Vec<T>,
    /// MLP pre-activation `[R, M]` and its ReLU `[R, M]` (the MLP output is summed into the
    /// next block's input as it is computed).
    pub(super) f: Vec<T>,
    pub(super) r: Vec<T>,
    /// R.
    pub(super) rows: usize,
}

/// Scratch for gradients flowing through a block (shared by the blocks, last to first).
#[derive(Default)]
pub(super) struct BlockGrads<T> {
    /// dLoss/d(ReLU output) and dLoss/d(pre-activation) `[R, M]`.
    pub(super) dr: Vec<T>,
    pub(super) df: Vec<T>,
    /// dLoss/d(LayerNorm output): LN1's `[R, C]`, then LN0's `[N, C]`.
    pub(super) dln: Vec<T>,
    /// dLoss/d(attention after projection) `[R, C]`, also dLoss/dh.
    pub(super) dattn: Vec<T>,
    /// dLoss/d(block output) `[R, C]` while the block's backward runs: swapped in from the
    /// workspace's `dx`, which then receives dLoss/d(block input).
    pub(super) dx_up: Vec<T>,
    /// dLoss/d(attention output) `[N, C]` (in the compact block only its x positions are
    /// written, and attention's backward reads only those) and its compact rows `[R, C]`.
    pub(super) datty: Vec<T>,
    pub(super) datty_c: Vec<T>,
    /// dLoss/dqkv `[N, 3C]`.
    pub(super) dqkv: Vec<T>,
}

/// Activations and scratch for one chunk of sequences; reused across steps.
pub struct Workspace<T> {
    /// Residual stream: `x[l]` is block l's input `[N, C]`; `x[L]` the last block's output
    /// `[R_out, C]`.
    pub(super) x: Vec<Vec<T>>,
    /// Per block.
    pub(super) acts: Vec<BlockActs<T>>,
    pub(super) grads: BlockGrads<T>,
    /// Final LayerNorm output `[R_out, C]` and its row statistics `[R_out]`.
    pub(super) lnf: Vec<T>,
    pub(super) lnf_mean: Vec<T>,
    pub(super) lnf_rstd: Vec<T>,
    /// dLoss/d(final LayerNorm output) `[R_out, C]`.
    pub(super) d_lnf: Vec<T>,
    /// dLoss/d(residual stream) at the block being differentiated `[N, C]`.
    pub(super) dx: Vec<T>,
    /// Token outputs `[B, t, D+1]` (`Readout::Full` only).
    pub out: Vec<T>,
    /// Predictions `y_hat[B, K]`.
    pub pred: Vec<T>,
    /// The input tokens `[B, t, D+1]` (kept for the embedding's gradient).
    pub(super) toks: Vec<T>,
    /// Positional rows `[t, C]` (forward) or their gradient (backward).
    pub(super) pos: Vec<T>,
    /// B, t and K of the last forward pass.
    pub(super) nseq: usize,
    pub(super) t: usize,
    pub(super) k: usize,
    /// R_out, the rows of the final LayerNorm and readout: N (`Full`) or B*K (`Predictions`).
    pub(super) rows_out: usize,
    pub(super) readout: Readout,
    /// Per block, the ReLU on/off pattern `[R, M]` that forward and backward use instead of
    /// the pre-activation signs while `freeze_relu` is set (see [`crate::batch::ChunkedRunner::freeze_relu`]).
    pub(crate) relu_frozen: Vec<Vec<bool>>,
    pub(crate) freeze_relu: bool,
}

impl<T: Float> Default for Workspace<T> {
    fn default() -> Self {
        Workspace {
            x: Vec::new(),
            acts: Vec::new(),
            grads: BlockGrads::default(),
            lnf: Vec::new(),
            lnf_mean: Vec::new(),
            lnf_rstd: Vec::new(),
            d_lnf: Vec::new(),
            dx: Vec::new(),
            out: Vec::new(),
            pred: Vec::new(),
            toks: Vec::new(),
            pos: Vec::new(),
            nseq: 0,
            t: 0,
            k: 0,
            rows_out: 0,
            readout: Readout::Predictions,
            relu_frozen: Vec::new(),
            freeze_relu: false,
        }
    }
}

fn ensure<T: Float>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
}

impl<T: Float> Workspace<T> {
    /// The MLP ReLUs' on/off pattern `[L][R, M]` of the last forward pass, into `out`.
    pub(crate) fn relu_pattern(&self, model: &RegressionTransformer, out: &mut Vec<Vec<bool>>) {
        let m = model.config.mlp_size;
        out.resize_with(self.acts.len(), Vec::new);
        for (o, a) in out.iter_mut().zip(&self.acts) {
            o.clear();
            o.extend(a.f[..a.rows * m].iter().map(|v| *v > T::ZERO));
        }
    }

    /// Sizes every buffer for `nseq` sequences of `t` tokens (buffers only grow).
    pub(super) fn prepare(
        &mut self,
        model: &RegressionTransformer,
        nseq: usize,
        t: usize,
        readout: Readout,
    ) {
        let cfg = &model.config;
        let (c, m, h, d1) = (
            cfg.embed_size,
            cfg.mlp_size,
            cfg.num_heads,
            cfg.token_size(),
        );
        let n = nseq * t;
        self.nseq = nseq;
        self.t = t;
        self.k = t.div_ceil(2);
        self.readout = readout;
        self.rows_out = if readout == Readout::Full {
            n
        } else {
            nseq * self.k
        };
        self.x.resize_with(cfg.num_layers + 1, Vec::new);
        for x in &mut self.x {
            ensure(x, n * c);
        }
        self.acts.resize_with(cfg.num_layers, BlockActs::default);
        for a in &mut self.acts {
            for v in [
                &mut a.ln0,
                &mut a.atty,
                &mut a.atty_c,
                &mut a.x_c,
                &mut a.h,
                &mut a.ln1,
            ] {
                ensure(v, n * c);
            }
            for v in [&mut a.mean0, &mut a.rstd0, &mut a.mean1, &mut a.rstd1] {
                ensure(v, n);
            }
            ensure(&mut a.qkv, n * 3 * c);
            let shape = AttnShape {
                nseq,
                t,
                c_model: c,
                heads: h,
            };
            ensure(&mut a.probs, shape.probs_len(1));
            ensure(&mut a.f, n * m);
            ensure(&mut a.r, n * m);
        }
        let g = &mut self.grads;
        for v in [
            &mut g.dln,
            &mut g.dattn,
            &mut g.dx_up,
            &mut g.datty,
            &mut g.datty_c,
        ] {
            ensure(v, n * c);
        }
        ensure(&mut g.dr, n * m);
        ensure(&mut g.df, n * m);
        ensure(&mut g.dqkv, n * 3 * c);
        for v in [&mut self.lnf, &mut self.d_lnf, &mut self.dx] {
            ensure(v, n * c);
        }
        ensure(&mut self.lnf_mean, n);
        ensure(&mut self.lnf_rstd, n);
        if readout == Readout::Full {
            ensure(&mut self.out, n * d1);
        }
        self.pred.resize(nseq * self.k, T::ZERO);
    }
}
