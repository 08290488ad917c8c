//! The reference's language model: TransformerLens' `HookedTransformer` with
//! `attn_only=True`, `normalization_type='LN'` and `positional_embedding_type='shortformer'`.
//!
//! The positional embedding never enters the residual stream: each block's queries and keys
//! read `LN1(resid) + W_pos[:T]`, its values `LN1(resid)`; `resid += attn_out`. Then the final
//! LayerNorm and the unembedding with bias. The loss is the mean next-token cross-entropy over
//! positions `0..T-1` (TransformerLens' `lm_cross_entropy_loss`).
//!
//! Shapes: B sequences (a chunk), T tokens each, N = B*T rows, C = d_model, nh heads of size
//! dh, A = nh*dh, V = d_vocab. Parameters are stored flat in TransformerLens' state-dict order
//! and shapes (`blocks.0.attn.W_Q` is `[nh, C, dh]`); a pass first packs each block's W_Q, W_K,
//! W_V into one `[C, 3A]` matrix in the engine's per-head QKV layout (head h: Q at
//! `[h*3dh, h*3dh+dh)`, then K, then V), so Q, K and V come from one GEMM. As
//! `LN1(x) + W_pos` feeds only Q and K, the positional part is `W_pos[:T] @ Wqk`, computed
//! once per chunk for T rows and added to every sequence.

use stagewise_engine::Float;
use stagewise_engine::attention::{AttnShape, attention_forward};
use stagewise_engine::layernorm::layernorm_forward;
use stagewise_engine::matmul::matmul;
use stagewise_engine::softmax::{NO_TARGET, cross_entropy_rows};

use crate::ModelError;
use crate::layout::{Init, ParamLayout, StateDict};

mod backward;
mod config;
mod runner;
mod workspace;

pub use backward::PackedGrad;
pub use config::LanguageConfig;
pub use runner::{LmRunner, RowSource};
pub use workspace::LmWorkspace;

/// LayerNorm epsilon (TransformerLens' default `eps`).
pub const LN_EPS: f64 = 1e-5;

/// Offsets of one block's tensors in the flat parameter vector, in state-dict order.
#[derive(Clone, Debug)]
pub struct LmBlock {
    /// `ln1.w`, `ln1.b` `[C]`.
    pub ln_w: usize,
    pub ln_b: usize,
    /// `attn.W_Q` `[nh, C, dh]`, `W_O` `[nh, dh, C]`, `b_Q` `[nh, dh]`, `b_O` `[C]`,
    /// `W_K`, `W_V` `[nh, C, dh]`, `b_K`, `b_V` `[nh, dh]`.
    pub w_q: usize,
    pub w_o: usize,
    pub b_q: usize,
    pub b_o: usize,
    pub w_k: usize,
    pub w_v: usize,
    pub b_k: usize,
    pub b_v: usize,
}

/// The model: configuration plus the layout of its flat parameter vector.
#[derive(Clone, Debug)]
pub struct LanguageModel {
    pub config: LanguageConfig,
    pub layout: ParamLayout,
    /// `embed.W_E` `[V, C]`, `pos_embed.W_pos` `[n_ctx, C]`.
    pub w_e: usize,
    pub w_pos: usize,
    pub blocks: Vec<LmBlock>,
    /// `ln_final.w`, `ln_final.b` `[C]`; `unembed.W_U` `[C, V]`, `unembed.b_U` `[V]`.
    pub lnf_w: usize,
    pub lnf_b: usize,
    pub w_u: usize,
    pub b_u: usize,
}

/// Each block's W_Q, W_K, W_V packed as `wqkv[C, 3A]` and `bqkv[3A]` (engine QKV layout).
pub struct Packed<T> {
    pub wqkv: Vec<Vec<T>>,
    pub bqkv: Vec<Vec<T>>,
}

impl LanguageModel {
    pub fn new(config: LanguageConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let LanguageConfig {
            n_layers,
            d_model: c,
            n_heads: nh,
            d_head: dh,
            n_ctx,
            d_vocab: v,
        } = config;
        let std = Init::Normal {
            std: 0.8 / (c as f64).sqrt(),
        };
        let (zero, one) = (Init::Const(0.0), Init::Const(1.0));
        let mut lay = ParamLayout::default();
        let w_e = lay.push("embed.W_E".into(), vec![v, c], std);
        let w_pos = lay.push("pos_embed.W_pos".into(), vec![n_ctx, c], std);
        let blocks = (0..n_layers)
            .map(|l| {
                let mut push = |name: &str, shape: Vec<usize>, init| {
                    lay.push(format!("blocks.{l}.{name}"), shape, init)
                };
                LmBlock {
                    ln_w: push("ln1.w", vec![c], one),
                    ln_b: push("ln1.b", vec![c], zero),
                    w_q: push("attn.W_Q", vec![nh, c, dh], std),
                    w_o: push("attn.W_O", vec![nh, dh, c], std),
                    b_q: push("attn.b_Q", vec![nh, dh], zero),
                    b_o: push("attn.b_O", vec![c], zero),
                    w_k: push("attn.W_K", vec![nh, c, dh], std),
                    w_v: push("attn.W_V", vec![nh, c, dh], std),
                    b_k: push("attn.b_K", vec![nh, dh], zero),
                    b_v: push("attn.b_V", vec![nh, dh], zero),
                }
            })
            .collect();
        let lnf_w = lay.push("ln_final.w".into(), vec![c], one);
        let lnf_b = lay.push("ln_final.b".into(), vec![c], zero);
        let w_u = lay.push("unembed.W_U".into(), vec![c, v], std);
        let b_u = lay.push("unembed.b_U".into(), vec![v], zero);
        debug_assert_eq!(lay.len, config.num_params());
        Ok(LanguageModel {
            config,
            layout: lay,
            w_e,
            w_pos,
            blocks,
            lnf_w,
            lnf_b,
            w_u,
            b_u,
        })
    }

    pub fn num_params(&self) -> usize {
        self.layout.len
    }

    /// TransformerLens' "gpt2" initialisation: every `W_*` from `N(0, (0.8/sqrt(C))^2)`, biases
    /// 0, LayerNorm weights 1. Tensor `q`'s draws come from stream `(seed, MODEL_INIT, q)`.
    pub fn init_params<T: Float>(&self, seed: u64) -> Vec<T> {
        self.layout.init_params(seed)
    }

    /// Packs every block's Q, K, V weights and biases into the engine's QKV layout.
    pub fn pack<T: Float>(&self, p: &[T]) -> Packed<T> {
        let (c, nh, dh) = (self.config.d_model, self.config.n_heads, self.config.d_head);
        let a3 = 3 * nh * dh;
        let mut wqkv = Vec::with_capacity(self.blocks.len());
        let mut bqkv = Vec::with_capacity(self.blocks.len());
        for blk in &self.blocks {
            let mut w = vec![T::ZERO; c * a3];
            let mut b = vec![T::ZERO; a3];
            for (s, (wo, bo)) in [(blk.w_q, blk.b_q), (blk.w_k, blk.b_k), (blk.w_v, blk.b_v)]
                .into_iter()
                .enumerate()
            {
                for h in 0..nh {
                    let col = h * 3 * dh + s * dh;
                    for m in 0..c {
                        let src = &p[wo + (h * c + m) * dh..wo + (h * c + m + 1) * dh];
                        w[m * a3 + col..m * a3 + col + dh].copy_from_slice(src);
                    }
                    b[col..col + dh].copy_from_slice(&p[bo + h * dh..bo + (h + 1) * dh]);
                }
            }
            wqkv.push(w);
            bqkv.push(b);
        }
        Packed { wqkv, bqkv }
    }

    /// Checks a chunk's shape and token ids before any work.
    pub fn check_tokens(&self, tokens: &[u32], nseq: usize, t: usize) -> Result<(), ModelError> {
        if t < 2 || t > self.config.n_ctx {
            return Err(ModelError::Shape(format!(
                "sequences of {t} tokens; the model takes 2 to n_ctx = {}",
                self.config.n_ctx
            )));
        }
        if tokens.len() != nseq * t {
            return Err(ModelError::Shape(format!(
                "{} token ids for {nseq} sequences of {t}",
                tokens.len()
            )));
        }
        if let Some((i, id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= self.config.d_vocab)
        {
            return Err(ModelError::Shape(format!(
                "token id {id} at position {i} is beyond the vocabulary (d_vocab = {})",
                self.config.d_vocab
            )));
        }
        Ok(())
    }

    /// Forward pass of `tokens[B, T]` (checked by [`Self::check_tokens`]): leaves the logits
    /// `[N, V]` in `ws.logits` and every block's activations for the backward pass.
    pub fn forward<T: Float>(
        &self,
        p: &[T],
        packed: &Packed<T>,
        tokens: &[u32],
        nseq: usize,
        t: usize,
        ws: &mut LmWorkspace<T>,
    ) {
        let cfg = &self.config;
        let (c, v, nh, dh) = (cfg.d_model, cfg.d_vocab, cfg.n_heads, cfg.d_head);
        let (a, a3) = (cfg.attn_width(), 3 * cfg.attn_width());
        let n = nseq * t;
        ws.prepare(cfg, nseq, t);
        ws.tokens.clear();
        ws.tokens.extend_from_slice(tokens);
        // resid[N, C] = W_E[tokens]
        for (row, &id) in ws.x[0].chunks_exact_mut(c).zip(tokens) {
            let id = id as usize;
            row.copy_from_slice(&p[self.w_e + id * c..self.w_e + (id + 1) * c]);
        }
        let pos = &p[self.w_pos..self.w_pos + t * c]; // [T, C]
        let shape = AttnShape {
            nseq,
            t,
            c_model: a,
            heads: nh,
        };
        for (l, blk) in self.blocks.iter().enumerate() {
            let (xs, rest) = ws.x.split_at_mut(l + 1);
            let (x, x_next) = (&xs[l], &mut rest[0]);
            let act = &mut ws.acts[l];
            let (wqkv, bqkv) = (&packed.wqkv[l], &packed.bqkv[l]);
            // ln[N, C] = LN1(x)
            layernorm_forward(
                &mut act.ln,
                &mut act.mean,
                &mut act.rstd,
                x,
                &p[blk.ln_w..blk.ln_w + c],
                &p[blk.ln_b..blk.ln_b + c],
                n,
                c,
                LN_EPS,
            );
            // qkv[N, 3A] = ln @ Wqkv + bqkv
            let qkv = &mut act.qkv[..n * a3];
            for row in qkv.chunks_exact_mut(a3) {
                row.copy_from_slice(bqkv);
            }
            matmul(qkv, &act.ln, wqkv, n, a3, c, false, false, true);
            // pqk[T, 3A] = W_pos[:T] @ Wqkv, added to the Q and K columns of every sequence
            matmul(&mut ws.pqk, pos, wqkv, t, a3, c, false, false, false);
            for (i, row) in qkv.chunks_exact_mut(a3).enumerate() {
                let prow = &ws.pqk[(i % t) * a3..(i % t + 1) * a3];
                for (dst, src) in row.chunks_exact_mut(3 * dh).zip(prow.chunks_exact(3 * dh)) {
                    for (d, s) in dst[..2 * dh].iter_mut().zip(&src[..2 * dh]) {
                        *d += *s;
                    }
                }
            }
            // z[N, A] = causal attention, probs[B, nh, T, T8]
            attention_forward(&mut act.z, &mut act.probs, &act.qkv, shape, 1);
            // x_next[N, C] = x + z @ W_O + b_O (W_O [nh, dh, C] is the [A, C] matrix)
            let x_next = &mut x_next[..n * c];
            for (dst, src) in x_next.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for ((d, s), b) in dst.iter_mut().zip(src).zip(&p[blk.b_o..blk.b_o + c]) {
                    *d = *s + *b;
                }
            }
            matmul(
                x_next,
                &act.z,
                &p[blk.w_o..blk.w_o + a * c],
                n,
                c,
                a,
                false,
                false,
                true,
            );
        }
        // lnf[N, C] = LN_final(resid); logits[N, V] = lnf @ W_U + b_U
        let nl = self.blocks.len();
        layernorm_forward(
            &mut ws.lnf,
            &mut ws.lnf_mean,
            &mut ws.lnf_rstd,
            &ws.x[nl],
            &p[self.lnf_w..self.lnf_w + c],
            &p[self.lnf_b..self.lnf_b + c],
            n,
            c,
            LN_EPS,
        );
        let b_u = &p[self.b_u..self.b_u + v];
        for row in ws.logits[..n * v].chunks_exact_mut(v) {
            row.copy_from_slice(b_u);
        }
        let w_u = &p[self.w_u..self.w_u + c * v];
        matmul(&mut ws.logits, &ws.lnf, w_u, n, v, c, false, false, true);
    }

    /// Next-token cross-entropy of the last forward pass: `ws.losses[b, i]` for `i < T-1` (the
    /// loss of predicting token `i+1`; position `T-1` has none and holds 0). Overwrites the
    /// logits with `dscale * dloss/dlogits` (the gradient of `dscale * sum of losses`).
    pub fn token_losses<T: Float>(&self, ws: &mut LmWorkspace<T>, dscale: T) {
        let (nseq, t) = (ws.nseq, ws.t);
        ws.targets.clear();
        for b in 0..nseq {
            let seq = &ws.tokens[b * t..(b + 1) * t];
            ws.targets.extend_from_slice(&seq[1..]);
            ws.targets.push(NO_TARGET);
        }
        cross_entropy_rows(
            &mut ws.logits,
            &ws.targets,
            self.config.d_vocab,
            &mut ws.losses,
            dscale,
        );
    }
}

/// TransformerLens' state dict without its `attn.mask` and `attn.IGNORE` buffers (constants a
/// module rebuilds; load with `strict=False`).
impl StateDict for LanguageModel {
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
}
