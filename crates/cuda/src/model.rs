//! The regression transformer on a device, for Q weight sets at once (Q = 1 for training, the
//! chains of an SGLD run otherwise): forward to the MSE loss and backward to the gradient of each
//! chain's own loss, as cuBLAS GEMMs (strided over chains) and the kernels of kernels.cu.
//!
//! Shapes: Q chains, B sequences each, T = 2K tokens, C width, H heads of hs, M MLP width,
//! N = B*T rows per chain; parameters `[Q, P]`, activations `[Q, N, width]`.

use std::sync::Arc;

use stagewise_models::{RegressionConfig, RegressionTransformer};

use crate::device::{Arg, Buf, Device, Gemm, GpuError, Ptr};

mod backward;
mod gemms;

struct BlockActs {
    /// Pre-attention LayerNorm output `[Q, N, C]` and its row statistics `[Q, N]`.
    ln0: Buf<f32>,
    mean0: Buf<f32>,
    rstd0: Buf<f32>,
    /// Fused per-head Q, K, V `[Q, N, 3C]`.
    qkv: Buf<f32>,
    /// log-sum-exp of each query's attention scores `[Q, B, H, T]`.
    lse: Buf<f32>,
    /// Attention output, heads side by side `[Q, N / stride, C]` (active queries only).
    atty: Buf<f32>,
    /// After the output projection `[Q, N / stride, C]`.
    attn: Buf<f32>,
    /// The MLP's input `h = x + attn` `[Q, N / stride, C]`.
    h: Buf<f32>,
    /// Pre-MLP LayerNorm output `[Q, N / stride, C]` and its row statistics `[Q, N / stride]`.
    ln1: Buf<f32>,
    mean1: Buf<f32>,
    rstd1: Buf<f32>,
    /// The MLP's hidden layer after the ReLU `[Q, N / stride, M]` (the backward reads its mask
    /// from r > 0).
    r: Buf<f32>,
}

/// Where a LayerNorm's input gradient goes.
#[derive(Clone, Copy)]
enum LnMode {
    /// dx = v
    Set,
    /// dx += v
    Add,
    /// The MLP's LayerNorm: dattn = dxn + v, dx = 2 dxn + v.
    Residual { dxn: Ptr, dattn: Ptr },
}

/// Activations, gradients scratch and per-token losses of one (Q, B, T) shape.
pub struct GpuModel {
    dev: Arc<dyn Device>,
    pub config: RegressionConfig,
    /// The model (its tensors' offsets in the flat parameter vector).
    off: RegressionTransformer,
    /// Parameters per chain.
    pub p: usize,
    pub q: usize,
    pub b: usize,
    pub t: usize,
    /// Residual stream: `x[l]` is block l's input `[Q, N, C]`, `x[L]` the last block's output
    /// `[Q, N / 2, C]` (x positions only).
    x: Vec<Buf<f32>>,
    /// Per block; `stride` is 2 in the last block (its queries, MLP and final LayerNorm run on
    /// the x positions only), 1 elsewhere.
    acts: Vec<BlockActs>,
    /// Final LayerNorm output `[Q, N / 2, C]` and its row statistics `[Q, N / 2]`.
    lnf: Buf<f32>,
    lnf_mean: Buf<f32>,
    lnf_rstd: Buf<f32>,
    /// y_hat `[Q, B, K]` and squared errors `[Q, B, K]`.
    pub pred: Buf<f32>,
    pub sq_err: Buf<f32>,
    /// dLoss/dy_hat `[Q, B, K]`.
    dpred: Buf<f32>,
    /// Mean squared error per chain and token position `[Q, K]` (after `token_losses`).
    pub tok_loss: Buf<f32>,
    /// Ones `[max(B*T, P)]`: column sums as GEMMs with a ones vector.
    ones: Buf<f32>,
    /// dLoss/d(residual stream) `[Q, N, C]`, two buffers that swap block by block (the block's
    /// output gradient and its input gradient).
    dx_a: Buf<f32>,
    dx_b: Buf<f32>,
    /// dLoss/d(final LayerNorm output) `[Q, N / 2, C]`.
    dlnf: Buf<f32>,
    /// dy * xhat of a LayerNorm backward, summed into its weight gradient `[Q, N, C]`
    /// (allocated `[Q, N, max(C, M)]`).
    dyxhat: Buf<f32>,
    /// dLoss/d(MLP hidden layer), before and after the ReLU mask `[Q, N / stride, M]`.
    dr: Buf<f32>,
    /// dLoss/d(LayerNorm output): LN1's `[Q, N / stride, C]`, then LN0's `[Q, N, C]`.
    dln: Buf<f32>,
    /// dLoss/d(attention after projection) `[Q, N / stride, C]`.
    dattn: Buf<f32>,
    /// dLoss/d(attention output) `[Q, N / stride, C]`.
    datty: Buf<f32>,
    /// dLoss/dqkv `[Q, N, 3C]`.
    dqkv: Buf<f32>,
    /// Per query, the sum of dO * O over its head's row (attention backward) `[Q, B, H, T]`.
    dsum: Buf<f32>,
    /// The last block's residual gradient on its active rows `[Q, N / 2, C]`.
    dres: Buf<f32>,
    /// The positional table's gradient summed over sequences `[Q, T, C]`.
    pos_sums: Buf<f32>,
    /// Attention kernels for this head size: forward, backward for queries, for keys/values.
    attn_kernels: [&'static str; 3],
    /// Partial sums of the split reductions `[Q, SPLIT_MAX, largest weight]`.
    split: Buf<f32>,
    /// Reductions over at least this many rows are split (see `split_factor`), in pieces of at
    /// least `split_min_piece` rows.
    split_min_rows: usize,
    split_min_piece: usize,
}

/// Whether reductions are split (`STAGEWISE_SPLIT_REDUCTIONS=0` turns it off, to compare).
fn split_reductions() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("STAGEWISE_SPLIT_REDUCTIONS").map_or(true, |v| v != "0"))
}

/// Most pieces a reduction over rows is split into.
const SPLIT_MAX: usize = 32;
/// Rows per piece of a split reduction, at least.
const SPLIT_MIN_PIECE: usize = 1024;

impl GpuModel {
    /// Buffers for `q` chains of `b` sequences of `t` tokens (t even, at most 2K).
    pub fn new(
        dev: &Arc<dyn Device>,
        model: &RegressionTransformer,
        q: usize,
        b: usize,
        t: usize,
    ) -> Result<Self, GpuError> {
        let cfg = model.config.clone();
        if t == 0 || !t.is_multiple_of(2) || t > cfg.max_tokens() {
            return Err(GpuError::Shape(format!(
                "{t} tokens per sequence; the device path needs an even count up to {}",
                cfg.max_tokens()
            )));
        }
        if cfg.task_size > 64 {
            return Err(GpuError::Shape(format!(
                "task_size = {}: the device data generator supports at most 64",
                cfg.task_size
            )));
        }
        let (c, m, h) = (cfg.embed_size, cfg.mlp_size, cfg.num_heads);
        let rows = q * b * t;
        let nb = |len: usize| Buf::<f32>::new(dev, len);
        let x = (0..=cfg.num_layers)
            .map(|_| nb(rows * c))
            .collect::<Result<Vec<_>, _>>()?;
        let lse_len = q * b * h * t;
        let hs = c / h;
        let attn_kernels = [
            crate::kernels::attention_kernel("attention_forward", hs)?,
            crate::kernels::attention_kernel("attention_backward_q", hs)?,
            crate::kernels::attention_kernel("attention_backward_kv", hs)?,
        ];
        let mut acts = Vec::new();
        for _ in 0..cfg.num_layers {
            acts.push(BlockActs {
                ln0: nb(rows * c)?,
                mean0: nb(rows)?,
                rstd0: nb(rows)?,
                qkv: nb(rows * 3 * c)?,
                lse: nb(lse_len)?,
                atty: nb(rows * c)?,
                attn: nb(rows * c)?,
                h: nb(rows * c)?,
                ln1: nb(rows * c)?,
                mean1: nb(rows)?,
                rstd1: nb(rows)?,
                r: nb(rows * m)?,
            });
        }
        let k = t / 2;
        let ones_len = (b * t).max(model.num_params());
        let model_gpu = GpuModel {
            off: model.clone(),
            p: model.num_params(),
            q,
            b,
            t,
            x,
            acts,
            lnf: nb(rows * c)?,
            lnf_mean: nb(rows)?,
            lnf_rstd: nb(rows)?,
            pred: nb(q * b * k)?,
            sq_err: nb(q * b * k)?,
            dpred: nb(q * b * k)?,
            tok_loss: nb(q * k)?,
            ones: Buf::from_host(dev, &vec![1.0f32; ones_len])?,
            dx_a: nb(rows * c)?,
            dx_b: nb(rows * c)?,
            dlnf: nb(rows * c)?,
            dyxhat: nb(rows * c.max(m))?,
            dr: nb(rows * m)?,
            dln: nb(rows * c)?,
            dattn: nb(rows * c)?,
            datty: nb(rows * c)?,
            dqkv: nb(rows * 3 * c)?,
            dsum: nb(lse_len)?,
            dres: nb(rows * c)?,
            attn_kernels,
            pos_sums: nb(q * t * c)?,
            split: nb(q
                * SPLIT_MAX
                * (3 * c * c)
                    .max(m * c)
                    .max(cfg.token_size() * c)
                    .max(t * c)
                    .max(m))?,
            split_min_rows: 4 * SPLIT_MIN_PIECE,
            split_min_piece: SPLIT_MIN_PIECE,
            config: cfg,
            dev: dev.clone(),
        };
        Ok(model_gpu)
    }

    pub fn k(&self) -> usize {
        self.t / 2
    }

    fn rows(&self) -> usize {
        self.b * self.t
    }

    fn launch(&self, name: &'static str, threads: usize, args: &[Arg]) -> Result<(), GpuError> {
        self.dev.launch(name, threads, args)
    }

    /// Splits reductions over at least `rows` rows into pieces of at least `piece` rows (tests
    /// use small values to run the split path on small problems).
    pub fn with_split(mut self, rows: usize, piece: usize) -> Self {
        self.split_min_rows = rows.max(2);
        self.split_min_piece = piece.max(1);
        self
    }

    /// LayerNorm of `rows` rows per chain.
    #[allow(clippy::too_many_arguments)]
    fn layernorm(
        &self,
        rows: usize,
        out: &Buf<f32>,
        mean: &Buf<f32>,
        rstd: &Buf<f32>,
        x: Ptr,
        params: Ptr,
        (w, b): (usize, usize),
    ) -> Result<(), GpuError> {
        let c = self.config.embed_size;
        let all = self.q * rows;
        self.launch(
            "layernorm_forward",
            all,
            &[
                out.arg(),
                mean.arg(),
                rstd.arg(),
                Arg::Ptr(x),
                Arg::Ptr(params),
                Arg::I64(self.p as i64),
                Arg::I64(w as i64),
                Arg::I64(b as i64),
                Arg::I32(c as i32),
                Arg::F32(stagewise_models::regression::LN_EPS as f32),
                Arg::I64(rows as i64),
                Arg::I64(all as i64),
            ],
        )
    }

    /// Forward pass of the chains' weights `params[Q, P]` on `toks[Q, B, T, D+1]`: predictions
    /// in `pred`; with targets `ys[Q, B, K]` also squared errors, per-token losses and the
    /// loss gradient with respect to the predictions (for `backward`). The last block runs its
    /// attention queries, MLP and the final LayerNorm on the x positions only (the rows the
    /// loss reads), as the CPU engine does.
    pub fn forward(&self, params: Ptr, toks: Ptr, ys: Option<Ptr>) -> Result<(), GpuError> {
        let cfg = &self.config;
        let (c, m, h, d1) = (
            cfg.embed_size,
            cfg.mlp_size,
            cfg.num_heads,
            cfg.token_size(),
        );
        let (q, b, t, k) = (self.q, self.b, self.t, self.k());
        let n = self.rows();
        let hs = c / h;
        let p = self.p as i64;
        let o = &self.off;
        self.linear(n, self.x[0].ptr, toks, params, o.tok, d1, c, 0.0)?;
        self.launch(
            "add_positions",
            q * n * c,
            &[
                self.x[0].arg(),
                Arg::Ptr(params),
                Arg::I64(p),
                Arg::I64(o.pos as i64),
                Arg::I32(cfg.max_tokens() as i32),
                Arg::I32(t as i32),
                Arg::I32(c as i32),
                Arg::I64(n as i64),
                Arg::I64((q * n * c) as i64),
            ],
        )?;
        let scale = (1.0 / (hs as f64).sqrt()) as f32;
        for (l, bo) in o.blocks.iter().enumerate() {
            let a = &self.acts[l];
            let x = self.x[l].ptr;
            let stride = self.stride(l);
            let na = n / stride;
            let ln0 = match bo.ln {
                Some([ln, _]) => {
                    self.layernorm(n, &a.ln0, &a.mean0, &a.rstd0, x, params, ln)?;
                    a.ln0.ptr
                }
                None => x,
            };
            self.linear(n, a.qkv.ptr, ln0, params, bo.qkv, c, 3 * c, 0.0)?;
            self.launch(
                self.attn_kernels[0],
                q * b * h * (t / stride),
                &[
                    a.atty.arg(),
                    a.lse.arg(),
                    a.qkv.arg(),
                    Arg::I32(t as i32),
                    Arg::I32(stride as i32),
                    Arg::I32(h as i32),
                    Arg::F32(scale),
                    Arg::I64((q * b * h * (t / stride)) as i64),
                ],
            )?;
            let attn = match bo.out {
                Some(w) => {
                    self.linear(na, a.attn.ptr, a.atty.ptr, params, w, c, c, 0.0)?;
                    a.attn.ptr
                }
                None => a.atty.ptr,
            };
            self.launch(
                "attention_residual",
                q * na * c,
                &[
                    a.h.arg(),
                    self.x[l + 1].arg(),
                    Arg::Ptr(x),
                    Arg::Ptr(attn),
                    Arg::Ptr(params),
                    Arg::I64(p),
                    Arg::I64(bo.b2 as i64),
                    Arg::I32(c as i32),
                    Arg::I32(t as i32),
                    Arg::I32(stride as i32),
                    Arg::I64(na as i64),
                    Arg::I64((q * na * c) as i64),
                ],
            )?;
            let ln1 = match bo.ln {
                Some([_, ln]) => {
                    self.layernorm(na, &a.ln1, &a.mean1, &a.rstd1, a.h.ptr, params, ln)?;
                    a.ln1.ptr
                }
                None => a.h.ptr,
            };
            self.linear(na, a.r.ptr, ln1, params, bo.w1, c, m, 0.0)?;
            self.launch(
                "bias_relu",
                q * na * m,
                &[
                    a.r.arg(),
                    Arg::Ptr(params),
                    Arg::I64(p),
                    Arg::I64(bo.b1 as i64),
                    Arg::I32(m as i32),
                    Arg::I64(na as i64),
                    Arg::I64((q * na * m) as i64),
                ],
            )?;
            // x_next (= 2x + attn + b2) += r @ W2^T
            self.linear(na, self.x[l + 1].ptr, a.r.ptr, params, bo.w2, m, c, 1.0)?;
        }
        // The last block's output has the x positions only: B*K rows per chain.
        let nk = b * k;
        let last = self.x[cfg.num_layers].ptr;
        let lnf = match o.ln_f {
            Some(ln) => {
                self.layernorm(
                    nk,
                    &self.lnf,
                    &self.lnf_mean,
                    &self.lnf_rstd,
                    last,
                    params,
                    ln,
                )?;
                self.lnf.ptr
            }
            None => last,
        };
        let scale = (2.0 / (b * k) as f64) as f32;
        self.launch(
            "readout_loss",
            q * nk,
            &[
                self.pred.arg(),
                self.sq_err.arg(),
                self.dpred.arg(),
                Arg::Ptr(lnf),
                Arg::Ptr(ys.unwrap_or(Ptr::NULL)),
                Arg::Ptr(params),
                Arg::I64(p),
                Arg::I64(o.unemb_w as i64),
                Arg::I64(o.unemb_b as i64),
                Arg::I32(k as i32),
                Arg::I32(c as i32),
                Arg::I32(b as i32),
                Arg::F32(scale),
                Arg::I64((q * nk) as i64),
            ],
        )?;
        if ys.is_some() {
            // tok_loss[q, e] = mean over sequences of sq_err[q, s, e].
            self.col_sums(
                self.tok_loss.ptr,
                k,
                self.sq_err.ptr,
                b,
                k,
                1.0 / b as f32,
                0.0,
            )?;
        }
        Ok(())
    }

    fn copy(&self, dst: Ptr, src: Ptr, n: usize) -> Result<(), GpuError> {
        self.launch(
            "copy_f32",
            n,
            &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I64(n as i64)],
        )
    }

    /// `dst[Q, K] = beta dst + alpha * (sum over this batch's sequences of the squared errors)`,
    /// after a `forward` with targets: how a loss over many batches accumulates on the device.
    pub fn add_token_error_sums(&self, dst: Ptr, alpha: f32, beta: f32) -> Result<(), GpuError> {
        let k = self.k();
        self.col_sums(dst, k, self.sq_err.ptr, self.b, k, alpha, beta)
    }

    /// Downloads the per-token losses `[Q, K]` and returns each chain's loss (their mean) and
    /// its parts.
    pub fn losses(&self) -> Result<Vec<(f64, Vec<f64>)>, GpuError> {
        let k = self.k();
        let tl = self.tok_loss.download()?;
        Ok(tl
            .chunks(k)
            .map(|c| {
                let parts: Vec<f64> = c.iter().map(|v| *v as f64).collect();
                (parts.iter().sum::<f64>() / k as f64, parts)
            })
            .collect())
    }
}
