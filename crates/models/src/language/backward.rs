//! Backward pass of the language model, from dLoss/dlogits (left in the workspace by
//! `token_losses`) to the gradient of every parameter.

use stagewise_engine::Float;
use stagewise_engine::attention::{AttnShape, attention_backward};
use stagewise_engine::layernorm::layernorm_backward;
use stagewise_engine::matmul::matmul;

use super::{LanguageModel, LmWorkspace, Packed};

/// Gradient of the packed Q/K/V weights `[C, 3A]` and biases `[3A]` per block, accumulated over
/// chunks and added to the flat gradient once by [`LanguageModel::unpack_grad`].
pub struct PackedGrad<T> {
    pub dwqkv: Vec<Vec<T>>,
    pub dbqkv: Vec<Vec<T>>,
}

impl<T: Float> PackedGrad<T> {
    pub fn zeros(model: &LanguageModel) -> Self {
        let (c, a3) = (model.config.d_model, 3 * model.config.attn_width());
        let l = model.blocks.len();
        PackedGrad {
            dwqkv: vec![vec![T::ZERO; c * a3]; l],
            dbqkv: vec![vec![T::ZERO; a3]; l],
        }
    }

    pub fn clear(&mut self) {
        for v in self.dwqkv.iter_mut().chain(self.dbqkv.iter_mut()) {
            v.fill(T::ZERO);
        }
    }
}

/// `dst[C] += sum of the rows of m[rows, C]`.
fn add_column_sums<T: Float>(dst: &mut [T], m: &[T]) {
    for row in m.chunks_exact(dst.len()) {
        for (d, x) in dst.iter_mut().zip(row) {
            *d += *x;
        }
    }
}

impl LanguageModel {
    /// Adds the gradient of the last forward pass's `dscale * sum of token losses` (as set up by
    /// `token_losses`) to `grad` (flat, every tensor but the packed ones) and to `pg`.
    pub fn backward<T: Float>(
        &self,
        p: &[T],
        packed: &Packed<T>,
        ws: &mut LmWorkspace<T>,
        grad: &mut [T],
        pg: &mut PackedGrad<T>,
    ) {
        let cfg = &self.config;
        let (c, v, dh) = (cfg.d_model, cfg.d_vocab, cfg.d_head);
        let (a, a3) = (cfg.attn_width(), 3 * cfg.attn_width());
        let (nseq, t) = (ws.nseq, ws.t);
        let n = nseq * t;
        let nl = self.blocks.len();
        ws.prepare_backward(cfg);
        let dlogits = &ws.logits[..n * v];
        // Unembedding: dW_U[C, V] += lnf^T @ dlogits; db_U += colsum; dlnf = dlogits @ W_U^T
        let lnf = &ws.lnf[..n * c];
        matmul(
            &mut grad[self.w_u..self.w_u + c * v],
            lnf,
            dlogits,
            c,
            v,
            n,
            true,
            false,
            true,
        );
        add_column_sums(&mut grad[self.b_u..self.b_u + v], dlogits);
        let w_u = &p[self.w_u..self.w_u + c * v];
        matmul(&mut ws.dln, dlogits, w_u, n, c, v, false, true, false);
        // Final LayerNorm: dx[N, C] = dLoss/d(last residual)
        {
            let (gw, gb) = grad[self.lnf_w..self.lnf_b + c].split_at_mut(c);
            layernorm_backward(
                &mut ws.dx,
                gw,
                gb,
                &ws.dln,
                &ws.x[nl],
                &ws.lnf_mean,
                &ws.lnf_rstd,
                &p[self.lnf_w..self.lnf_w + c],
                n,
                c,
            );
        }
        let pos = &p[self.w_pos..self.w_pos + t * c];
        let shape = AttnShape {
            nseq,
            t,
            c_model: a,
            heads: cfg.n_heads,
        };
        for (l, blk) in self.blocks.iter().enumerate().rev() {
            let act = &ws.acts[l];
            let wqkv = &packed.wqkv[l];
            let dx = &ws.dx[..n * c];
            // x_next = x + z @ W_O + b_O: db_O, dW_O[A, C] += z^T @ dx, dz[N, A] = dx @ W_O^T
            add_column_sums(&mut grad[blk.b_o..blk.b_o + c], dx);
            matmul(
                &mut grad[blk.w_o..blk.w_o + a * c],
                &act.z,
                dx,
                a,
                c,
                n,
                true,
                false,
                true,
            );
            let w_o = &p[blk.w_o..blk.w_o + a * c];
            matmul(&mut ws.dz, dx, w_o, n, a, c, false, true, false);
            // Attention: dqkv[N, 3A]
            attention_backward(&mut ws.dqkv, &ws.dz, &act.qkv, &act.probs, shape, 1);
            let dqkv = &ws.dqkv[..n * a3];
            add_column_sums(&mut pg.dbqkv[l], dqkv);
            // Q, K, V = ln @ Wqkv (+ pos @ Wqk for Q, K): dWqkv[C, 3A] += ln^T @ dqkv
            matmul(&mut pg.dwqkv[l], &act.ln, dqkv, c, a3, n, true, false, true);
            // sqk[T, 3A] = dqkv summed over sequences, V columns zero
            let sqk = &mut ws.sqk[..t * a3];
            sqk.copy_from_slice(&dqkv[..t * a3]);
            for b in 1..nseq {
                for (s, d) in sqk.iter_mut().zip(&dqkv[b * t * a3..(b + 1) * t * a3]) {
                    *s += *d;
                }
            }
            for head in sqk.chunks_exact_mut(3 * dh) {
                head[2 * dh..].fill(T::ZERO);
            }
            // dWqkv += pos^T @ sqk; dW_pos[:T] += sqk @ Wqkv^T
            matmul(&mut pg.dwqkv[l], pos, sqk, c, a3, t, true, false, true);
            matmul(
                &mut grad[self.w_pos..self.w_pos + t * c],
                sqk,
                wqkv,
                t,
                c,
                a3,
                false,
                true,
                true,
            );
            // dln[N, C] = dqkv @ Wqkv^T; dx += LN1 backward
            matmul(&mut ws.dln, dqkv, wqkv, n, c, a3, false, true, false);
            let (gw, gb) = grad[blk.ln_w..blk.ln_b + c].split_at_mut(c);
            layernorm_backward(
                &mut ws.dtmp,
                gw,
                gb,
                &ws.dln,
                &ws.x[l],
                &act.mean,
                &act.rstd,
                &p[blk.ln_w..blk.ln_w + c],
                n,
                c,
            );
            for (d, x) in ws.dx[..n * c].iter_mut().zip(&ws.dtmp) {
                *d += *x;
            }
        }
        // Embedding: dW_E[token] += dx row
        for (row, &id) in ws.dx[..n * c].chunks_exact(c).zip(&ws.tokens) {
            let id = id as usize;
            for (g, d) in grad[self.w_e + id * c..self.w_e + (id + 1) * c]
                .iter_mut()
                .zip(row)
            {
                *g += *d;
            }
        }
    }

    /// Adds the packed Q/K/V gradients to the flat gradient's `W_Q, W_K, W_V, b_Q, b_K, b_V`.
    pub fn unpack_grad<T: Float>(&self, pg: &PackedGrad<T>, grad: &mut [T]) {
        let (c, nh, dh) = (self.config.d_model, self.config.n_heads, self.config.d_head);
        let a3 = 3 * nh * dh;
        for (l, blk) in self.blocks.iter().enumerate() {
            let (w, b) = (&pg.dwqkv[l], &pg.dbqkv[l]);
            for (s, (wo, bo)) in [(blk.w_q, blk.b_q), (blk.w_k, blk.b_k), (blk.w_v, blk.b_v)]
                .into_iter()
                .enumerate()
            {
                for h in 0..nh {
                    let col = h * 3 * dh + s * dh;
                    for m in 0..c {
                        let dst = &mut grad[wo + (h * c + m) * dh..wo + (h * c + m + 1) * dh];
                        for (d, x) in dst.iter_mut().zip(&w[m * a3 + col..m * a3 + col + dh]) {
                            *d += *x;
                        }
                    }
                    for (d, x) in grad[bo + h * dh..bo + (h + 1) * dh]
                        .iter_mut()
                        .zip(&b[col..col + dh])
                    {
                        *d += *x;
                    }
                }
            }
        }
    }
}
