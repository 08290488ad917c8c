//! Activations and gradient scratch of the language model for one chunk of sequences, reused
//! across calls (buffers only grow). Shapes as in the model's module doc.

use stagewise_engine::Float;
use stagewise_engine::attention::AttnShape;

use super::LanguageConfig;

/// Saved activations of one block (its input is `LmWorkspace::x[l]`).
#[derive(Default)]
pub struct LmBlockActs<T> {
    /// LN1 output `[N, C]` and its row statistics `[N]`.
    pub ln: Vec<T>,
    pub mean: Vec<T>,
    pub rstd: Vec<T>,
    /// Q (with the positional part), K (with it), V per head `[N, 3A]`.
    pub qkv: Vec<T>,
    /// Attention pattern `[B, nh, T, T rounded up to 8]`: row i is query i's weights.
    pub probs: Vec<T>,
    /// Heads' outputs side by side `[N, A]`.
    pub z: Vec<T>,
}

/// Activations and scratch for one chunk of sequences.
#[derive(Default)]
pub struct LmWorkspace<T> {
    /// Residual stream: `x[l]` is block l's input `[N, C]`, `x[L]` the last block's output.
    pub x: Vec<Vec<T>>,
    pub acts: Vec<LmBlockActs<T>>,
    /// Positional part of Q and K `[T, 3A]` (V columns unused).
    pub(super) pqk: Vec<T>,
    /// Final LayerNorm output `[N, C]` and its row statistics `[N]`.
    pub(super) lnf: Vec<T>,
    pub(super) lnf_mean: Vec<T>,
    pub(super) lnf_rstd: Vec<T>,
    /// Logits `[N, V]`; after `token_losses`, dLoss/dlogits.
    pub logits: Vec<T>,
    /// Per-token losses `[N]` (0 at each sequence's last position) and next-token targets.
    pub losses: Vec<f64>,
    pub(super) targets: Vec<u32>,
    /// The chunk's token ids `[B, T]`.
    pub(super) tokens: Vec<u32>,
    /// Backward scratch: dLoss/d(residual) and dLoss/d(LayerNorm output) `[N, C]`,
    /// dLoss/dz `[N, A]`, dLoss/dqkv `[N, 3A]`, Q/K gradient summed over sequences `[T, 3A]`.
    pub(super) dx: Vec<T>,
    pub(super) dln: Vec<T>,
    pub(super) dz: Vec<T>,
    pub(super) dqkv: Vec<T>,
    pub(super) sqk: Vec<T>,
    /// dLoss/d(block input) through its LayerNorm `[N, C]`.
    pub(super) dtmp: Vec<T>,
    /// B and T of the last forward pass, and the model's head count.
    pub nseq: usize,
    pub t: usize,
    pub heads: usize,
    /// Width of the attention (heads x d_head), for the layout of `probs`.
    attn_width: usize,
}

fn ensure<T: Float>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
}

impl<T: Float> LmWorkspace<T> {
    /// Sizes every buffer for `nseq` sequences of `t` tokens.
    pub(super) fn prepare(&mut self, cfg: &LanguageConfig, nseq: usize, t: usize) {
        let (n, c, a, v) = (nseq * t, cfg.d_model, cfg.attn_width(), cfg.d_vocab);
        let shape = AttnShape {
            nseq,
            t,
            c_model: a,
            heads: cfg.n_heads,
        };
        self.x.resize_with(cfg.n_layers + 1, Vec::new);
        for x in &mut self.x {
            ensure(x, n * c);
        }
        self.acts.resize_with(cfg.n_layers, LmBlockActs::default);
        for act in &mut self.acts {
            ensure(&mut act.ln, n * c);
            ensure(&mut act.mean, n);
            ensure(&mut act.rstd, n);
            ensure(&mut act.qkv, n * 3 * a);
            ensure(&mut act.probs, shape.probs_len(1));
            ensure(&mut act.z, n * a);
        }
        ensure(&mut self.pqk, t * 3 * a);
        ensure(&mut self.lnf, n * c);
        ensure(&mut self.lnf_mean, n);
        ensure(&mut self.lnf_rstd, n);
        // Exact lengths where a kernel walks the whole buffer row by row.
        self.logits.resize(n * v, T::ZERO);
        self.losses.resize(n, 0.0);
        self.nseq = nseq;
        self.t = t;
        self.heads = cfg.n_heads;
        self.attn_width = a;
    }

    /// Attention weight of query `q` on key `k` in head `h` of layer `l`, sequence `b` of the
    /// last forward pass.
    pub fn attention(&self, l: usize, b: usize, h: usize, q: usize, k: usize) -> T {
        let s = AttnShape {
            nseq: self.nseq,
            t: self.t,
            c_model: self.attn_width,
            heads: self.heads,
        };
        self.acts[l].probs[s.prob_index(1, b, h, q, k)]
    }

    /// Logits `[V]` of position `i` of sequence `b` of the last forward pass.
    pub fn logits_at(&self, b: usize, i: usize, v: usize) -> &[T] {
        let r = b * self.t + i;
        &self.logits[r * v..(r + 1) * v]
    }

    /// Sizes the backward scratch.
    pub(super) fn prepare_backward(&mut self, cfg: &LanguageConfig) {
        let (n, c, a) = (self.nseq * self.t, cfg.d_model, cfg.attn_width());
        ensure(&mut self.dx, n * c);
        ensure(&mut self.dln, n * c);
        ensure(&mut self.dz, n * a);
        ensure(&mut self.dqkv, n * 3 * a);
        ensure(&mut self.sqk, self.t * 3 * a);
        ensure(&mut self.dtmp, n * c);
    }
}
