//! The reference's in-context linear-regression transformer (`InContextRegressionTransformer`
//! wrapping `DTransformer`), with its quirks: the double residual, the fused per-head QKV layout,
//! the positional lookup through the transposed `Linear` weight, and `y_hat_k` read from
//! component 0 of the output at the `x_k` token.
//!
//! Shapes: B sequences (a chunk), T = 2K tokens of width D+1, C = embed width, H heads of
//! size c = C/H, M = MLP width, L layers, N = B*T rows.

use stagewise_engine::Float;
use stagewise_engine::attention::{AttnShape, attention_forward};
use stagewise_engine::layernorm::layernorm_forward;
use stagewise_engine::linear::{linear_forward, linear_forward_add, linear1_forward};
use stagewise_engine::relu::relu_forward;

use crate::layout::{Init, ParamLayout, StateDict};

mod backward;
mod config;
mod workspace;

pub use config::{ModelError, RegressionConfig};
pub use workspace::Workspace;

/// LayerNorm epsilon (torch default).
pub const LN_EPS: f64 = 1e-5;
/// Prefix of every state-dict key.
pub const PREFIX: &str = "token_sequence_transformer.";

/// The restriction glob of one attention head: its rows of layer `layer`'s fused per-head QKV
/// weight (`heads` heads), in the sampler's `[i/n]` slice syntax.
pub fn head_glob(layer: usize, head: usize, heads: usize) -> String {
    format!("{PREFIX}blocks.{layer}.attention.attention.weight[{head}/{heads}]")
}

/// Which outputs the forward pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readout {
    /// Only `y_hat` (component 0 at the x positions) — all the loss reads. The last block's
    /// attention queries, MLP and the final LayerNorm run on the x positions only.
    Predictions,
    /// Every token output `[B, T, D+1]`.
    Full,
}

/// Offsets of one block's tensors in the flat parameter vector.
#[derive(Clone, Debug)]
pub struct BlockOffsets {
    /// Fused QKV weight `[3C, C]`.
    pub qkv: usize,
    /// Attention output projection `[C, C]`, if the config has one.
    pub out: Option<usize>,
    /// MLP: `W1 [M, C]`, `b1 [M]`, `W2 [C, M]`, `b2 [C]`.
    pub w1: usize,
    pub b1: usize,
    pub w2: usize,
    pub b2: usize,
    /// (weight, bias) of the pre-attention and pre-MLP LayerNorms.
    pub ln: Option<[(usize, usize); 2]>,
}

/// The model: configuration plus the layout of its flat parameter vector.
#[derive(Clone, Debug)]
pub struct RegressionTransformer {
    pub config: RegressionConfig,
    pub layout: ParamLayout,
    /// Offsets of the tensors in the flat parameter vector (what other backends index by).
    /// Token embedding `[C, D+1]`, positional table `[C, 2K]`.
    pub tok: usize,
    pub pos: usize,
    pub blocks: Vec<BlockOffsets>,
    /// Final LayerNorm (weight, bias), if the config has LayerNorms.
    pub ln_f: Option<(usize, usize)>,
    /// Unembedding `[D+1, C]` and its bias `[D+1]`.
    pub unemb_w: usize,
    pub unemb_b: usize,
}

impl RegressionTransformer {
    pub fn new(config: RegressionConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let (d1, t, c, m) = (
            config.token_size(),
            config.max_tokens(),
            config.embed_size,
            config.mlp_size,
        );
        let mut lay = ParamLayout::default();
        let name = |s: &str| format!("{PREFIX}{s}");
        let lin = |fan_in| Init::Uniform { fan_in };
        let tok = lay.push(name("token_embedding.weight"), vec![c, d1], lin(d1));
        let pos = lay.push(name("postn_embedding.weight"), vec![c, t], lin(t));
        let mut blocks = Vec::new();
        for l in 0..config.num_layers {
            let b = |s: &str| name(&format!("blocks.{l}.{s}"));
            let qkv = lay.push(b("attention.attention.weight"), vec![3 * c, c], lin(c));
            let out = config
                .include_output
                .then(|| lay.push(b("attention.output.weight"), vec![c, c], lin(c)));
            let w1 = lay.push(b("compute.0.weight"), vec![m, c], lin(c));
            let b1 = lay.push(b("compute.0.bias"), vec![m], lin(c));
            let w2 = lay.push(b("compute.2.weight"), vec![c, m], lin(m));
            let b2 = lay.push(b("compute.2.bias"), vec![c], lin(m));
            let ln = config.layer_norm.then(|| {
                let mut pair = |i: usize| {
                    let w = lay.push(
                        b(&format!("layer_norms.{i}.weight")),
                        vec![c],
                        Init::Const(1.0),
                    );
                    let bb = lay.push(
                        b(&format!("layer_norms.{i}.bias")),
                        vec![c],
                        Init::Const(0.0),
                    );
                    (w, bb)
                };
                [pair(0), pair(1)]
            });
            blocks.push(BlockOffsets {
                qkv,
                out,
                w1,
                b1,
                w2,
                b2,
                ln,
            });
        }
        let (ln_f, unemb_w, unemb_b) = if config.layer_norm {
            let w = lay.push(name("unembedding.0.weight"), vec![c], Init::Const(1.0));
            let b = lay.push(name("unembedding.0.bias"), vec![c], Init::Const(0.0));
            let uw = lay.push(name("unembedding.1.weight"), vec![d1, c], lin(c));
            let ub = lay.push(name("unembedding.1.bias"), vec![d1], lin(c));
            (Some((w, b)), uw, ub)
        } else {
            let uw = lay.push(name("unembedding.weight"), vec![d1, c], lin(c));
            let ub = lay.push(name("unembedding.bias"), vec![d1], lin(c));
            (None, uw, ub)
        };
        Ok(RegressionTransformer {
            config,
            layout: lay,
            tok,
            pos,
            blocks,
            ln_f,
            unemb_w,
            unemb_b,
        })
    }

    pub fn num_params(&self) -> usize {
        self.layout.len
    }

    /// Torch-default initialisation; parameter `q`'s draws come from stream `(seed, MODEL_INIT, q)`.
    pub fn init_params<T: Float>(&self, seed: u64) -> Vec<T> {
        self.layout.init_params(seed)
    }

    /// Non-parameter state-dict entries: each block's `attention.causal_mask` buffer,
    /// `log(tril(ones(2K, 2K)))` (0 on and below the diagonal, -inf above).
    pub fn buffers(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let t = self.config.max_tokens();
        let mask: Vec<f32> = (0..t * t)
            .map(|i| {
                if i % t <= i / t {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        (0..self.config.num_layers)
            .map(|l| {
                (
                    format!("{PREFIX}blocks.{l}.attention.causal_mask"),
                    vec![t, t],
                    mask.clone(),
                )
            })
            .collect()
    }

    /// Encodes examples as tokens: `[0, x_k]` then `[y_k, 0...]`, giving `toks[B, 2K, D+1]`.
    pub fn encode<T: Float>(&self, xs: &[T], ys: &[T], nseq: usize, k: usize) -> Vec<T> {
        let d = self.config.task_size;
        let mut toks = vec![T::ZERO; nseq * 2 * k * (d + 1)];
        for b in 0..nseq {
            for e in 0..k {
                let row = (b * 2 * k + 2 * e) * (d + 1);
                toks[row + 1..row + 1 + d]
                    .copy_from_slice(&xs[(b * k + e) * d..(b * k + e + 1) * d]);
                toks[row + d + 1] = ys[b * k + e];
            }
        }
        toks
    }

    fn check_tokens(&self, toks_len: usize, nseq: usize, t: usize) -> Result<(), ModelError> {
        if t == 0 || t > self.config.max_tokens() {
            return Err(ModelError::Shape(format!(
                "{t} tokens per sequence, expected 1..={} (max_examples = {})",
                self.config.max_tokens(),
                self.config.max_examples
            )));
        }
        if toks_len != nseq * t * self.config.token_size() {
            return Err(ModelError::Shape(format!(
                "token buffer holds {toks_len} values, expected {nseq} x {t} x {}",
                self.config.token_size()
            )));
        }
        Ok(())
    }

    /// Forward pass over `toks[nseq, t, D+1]`. Outputs land in `ws.pred[nseq, ceil(t/2)]`
    /// (always) and, for `Readout::Full`, in `ws.out[nseq, t, D+1]`.
    pub fn forward<T: Float>(
        &self,
        p: &[T],
        toks: &[T],
        nseq: usize,
        t: usize,
        ws: &mut Workspace<T>,
        readout: Readout,
    ) -> Result<(), ModelError> {
        self.check_tokens(toks.len(), nseq, t)?;
        ws.prepare(self, nseq, t, readout);
        ws.toks.clear();
        ws.toks.extend_from_slice(toks);
        let cfg = &self.config;
        let (c, d1, n) = (cfg.embed_size, cfg.token_size(), nseq * t);
        // Embedding: x0 = toks @ We^T + Wp^T[:t]   [N, C]
        let x0 = &mut ws.x[0];
        linear_forward(x0, toks, &p[self.tok..], None, n, d1, c);
        // pos[tpos, j] = Wp[j, tpos], gathered once so the per-row add is contiguous.
        let (wp, mt) = (
            &p[self.pos..self.pos + c * cfg.max_tokens()],
            cfg.max_tokens(),
        );
        ws.pos.clear();
        ws.pos.extend((0..t * c).map(|i| wp[(i % c) * mt + i / c]));
        for (row, pos) in x0[..n * c]
            .chunks_exact_mut(c)
            .zip(ws.pos.chunks_exact(c).cycle())
        {
            for (v, q) in row.iter_mut().zip(pos) {
                *v += *q;
            }
        }
        for l in 0..cfg.num_layers {
            let compact = readout == Readout::Predictions && l + 1 == cfg.num_layers;
            self.block_forward(p, l, nseq, t, compact, ws);
        }
        // Final LayerNorm and unembedding.
        let rows = ws.rows_out;
        let xl = &ws.x[cfg.num_layers];
        let lnf: &[T] = match self.ln_f {
            Some((w, b)) => {
                layernorm_forward(
                    &mut ws.lnf,
                    &mut ws.lnf_mean,
                    &mut ws.lnf_rstd,
                    xl,
                    &p[w..],
                    &p[b..],
                    rows,
                    c,
                    LN_EPS,
                );
                &ws.lnf
            }
            None => xl,
        };
        let uw = &p[self.unemb_w..self.unemb_w + d1 * c];
        let ub = &p[self.unemb_b..self.unemb_b + d1];
        match readout {
            Readout::Full => {
                linear_forward(&mut ws.out, lnf, uw, Some(ub), n, c, d1);
                for (r, pr) in ws.pred.iter_mut().enumerate() {
                    let (b, e) = (r / ws.k, r % ws.k);
                    *pr = ws.out[(b * t + 2 * e) * d1];
                }
            }
            Readout::Predictions => {
                // y_hat[r] = lnf[r] . Wu[0] + bu[0] over the compact x rows.
                linear1_forward(&mut ws.pred, lnf, &uw[..c], ub[0]);
            }
        }
        Ok(())
    }

    fn block_forward<T: Float>(
        &self,
        p: &[T],
        l: usize,
        nseq: usize,
        t: usize,
        compact: bool,
        ws: &mut Workspace<T>,
    ) {
        let cfg = &self.config;
        let bo = &self.blocks[l];
        let (c, m, n) = (cfg.embed_size, cfg.mlp_size, nseq * t);
        let shape = AttnShape {
            nseq,
            t,
            c_model: c,
            heads: cfg.num_heads,
        };
        let (xs_in, xs_out) = ws.x.split_at_mut(l + 1);
        let (x, x_next) = (&xs_in[l], &mut xs_out[0]);
        let a = &mut ws.acts[l];
        // ln0 = LN(x); qkv = ln0 @ Wqkv^T; atty = attention(qkv)
        let ln0: &[T] = match bo.ln {
            Some([(w, b), _]) => {
                layernorm_forward(
                    &mut a.ln0,
                    &mut a.mean0,
                    &mut a.rstd0,
                    x,
                    &p[w..],
                    &p[b..],
                    n,
                    c,
                    LN_EPS,
                );
                &a.ln0
            }
            None => x,
        };
        linear_forward(&mut a.qkv, ln0, &p[bo.qkv..], None, n, c, 3 * c);
        let stride = if compact { 2 } else { 1 };
        attention_forward(&mut a.atty, &mut a.probs, &a.qkv, shape, stride);
        // Rows the rest of the block runs on: all N, or the x positions only.
        let rows = if compact {
            gather_even_rows(&mut a.atty_c, &a.atty, nseq, t, c);
            gather_even_rows(&mut a.x_c, x, nseq, t, c);
            nseq * t.div_ceil(2)
        } else {
            n
        };
        let (atty, xin): (&[T], &[T]) = if compact {
            (&a.atty_c, &a.x_c)
        } else {
            (&a.atty, x)
        };
        // h = x + a, a = atty @ Wo^T (or atty), summed as the product is stored.
        match bo.out {
            Some(o) => linear_forward_add(&mut a.h, atty, &p[o..], None, &[xin], rows, c, c),
            None => {
                for ((h, x), at) in a.h[..rows * c].iter_mut().zip(xin).zip(atty) {
                    *h = *x + *at;
                }
            }
        }
        // MLP on LN1(h)
        let ln1: &[T] = match bo.ln {
            Some([_, (w, b)]) => {
                layernorm_forward(
                    &mut a.ln1,
                    &mut a.mean1,
                    &mut a.rstd1,
                    &a.h,
                    &p[w..],
                    &p[b..],
                    rows,
                    c,
                    LN_EPS,
                );
                &a.ln1
            }
            None => &a.h,
        };
        linear_forward(&mut a.f, ln1, &p[bo.w1..], Some(&p[bo.b1..]), rows, c, m);
        match ws.relu_frozen.get(l) {
            Some(mask) if ws.freeze_relu => {
                assert_eq!(
                    mask.len(),
                    rows * m,
                    "frozen ReLU pattern of another batch shape"
                );
                for ((r, f), on) in a.r[..rows * m].iter_mut().zip(&a.f[..rows * m]).zip(mask) {
                    *r = if *on { *f } else { T::ZERO };
                }
            }
            _ => relu_forward(&mut a.r[..rows * m], &a.f[..rows * m]),
        }
        // Double residual: x_next = x + (x + a + mlp) = mlp + x + h, mlp = r @ W2^T + b2.
        let (w2, b2) = (&p[bo.w2..], Some(&p[bo.b2..]));
        linear_forward_add(x_next, &a.r, w2, b2, &[xin, &a.h], rows, m, c);
        a.rows = rows;
    }
}

/// `dst[nseq*ceil(t/2), c]` = rows at even positions of `src[nseq, t, c]`.
fn gather_even_rows<T: Float>(dst: &mut [T], src: &[T], nseq: usize, t: usize, c: usize) {
    let k = t.div_ceil(2);
    for b in 0..nseq {
        for e in 0..k {
            dst[(b * k + e) * c..(b * k + e + 1) * c]
                .copy_from_slice(&src[(b * t + 2 * e) * c..(b * t + 2 * e + 1) * c]);
        }
    }
}

impl StateDict for RegressionTransformer {
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    fn buffers(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        RegressionTransformer::buffers(self)
    }
}
