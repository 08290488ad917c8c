//! The backward pass of the regression transformer: the read-out, the final LayerNorm and each
//! block in reverse, accumulating into the flat gradient (layout as `ParamLayout`).

use stagewise_engine::Float;
use stagewise_engine::attention::{AttnShape, attention_backward};
use stagewise_engine::layernorm::layernorm_backward;
use stagewise_engine::linear::{linear_backward, linear1_backward};
use stagewise_engine::relu::relu_backward;

use super::{Readout, RegressionTransformer, Workspace};

impl RegressionTransformer {
    /// Backward pass after a `Readout::Predictions` forward: `dpred[nseq, K]` is dLoss/dy_hat;
    /// parameter gradients are added to `grad`.
    pub fn backward<T: Float>(&self, p: &[T], dpred: &[T], grad: &mut [T], ws: &mut Workspace<T>) {
        assert_eq!(
            ws.readout,
            Readout::Predictions,
            "backward needs a Predictions forward"
        );
        let cfg = &self.config;
        let (c, d1, nseq, t) = (cfg.embed_size, cfg.token_size(), ws.nseq, ws.t);
        let (n, rows) = (nseq * t, ws.rows_out);
        let ll = cfg.num_layers;
        // Unembedding: y_hat = lnf . Wu[0] + bu[0]
        let uw = &p[self.unemb_w..self.unemb_w + c];
        let lnf: &[T] = if self.ln_f.is_some() {
            &ws.lnf
        } else {
            &ws.x[ll]
        };
        let dlnf = &mut ws.d_lnf;
        let mut db = grad[self.unemb_b];
        linear1_backward(
            dlnf,
            &mut grad[self.unemb_w..self.unemb_w + c],
            &mut db,
            &dpred[..rows],
            lnf,
            uw,
        );
        grad[self.unemb_b] = db;
        let dx = &mut ws.dx;
        match self.ln_f {
            Some((w, b)) => {
                let (gw, gb) = split_two(grad, w, b, c);
                layernorm_backward(
                    dx,
                    gw,
                    gb,
                    dlnf,
                    &ws.x[ll],
                    &ws.lnf_mean,
                    &ws.lnf_rstd,
                    &p[w..],
                    rows,
                    c,
                );
            }
            None => dx[..rows * c].copy_from_slice(&dlnf[..rows * c]),
        }
        for l in (0..ll).rev() {
            self.block_backward(p, l, grad, ws);
        }
        // Embedding: dWe += dx0^T toks ; dWp[j, pos] += sum over sequences of dx0[pos, j]
        let dx = &ws.dx;
        let wt = cfg.max_tokens();
        linear_backward(
            None,
            false,
            &mut grad[self.tok..self.tok + c * d1],
            None,
            dx,
            &ws.toks,
            &[],
            n,
            d1,
            c,
        );
        // Sum over sequences per position first (contiguous), then transpose into dWp[j, tpos].
        let dpos = &mut ws.pos;
        dpos.clear();
        dpos.resize(t * c, T::ZERO);
        for rows in dx[..n * c].chunks_exact(t * c) {
            for (d, v) in dpos.iter_mut().zip(rows) {
                *d += *v;
            }
        }
        for (i, v) in dpos.iter().enumerate() {
            grad[self.pos + (i % c) * wt + i / c] += *v;
        }
    }

    /// Takes `ws.dx` = dLoss/dx_{l+1} and leaves dLoss/dx_l in `ws.dx`.
    fn block_backward<T: Float>(&self, p: &[T], l: usize, grad: &mut [T], ws: &mut Workspace<T>) {
        let cfg = &self.config;
        let bo = &self.blocks[l];
        let (c, m, nseq, t) = (cfg.embed_size, cfg.mlp_size, ws.nseq, ws.t);
        let n = nseq * t;
        let shape = AttnShape {
            nseq,
            t,
            c_model: c,
            heads: cfg.num_heads,
        };
        let a = &ws.acts[l];
        let rows = a.rows;
        let compact = rows != n;
        let x = &ws.x[l];
        let atty: &[T] = if compact { &a.atty_c } else { &a.atty };
        let g = &mut ws.grads;
        let dxn = &ws.dx; // dLoss/dx_next [rows, C]
        // x_next = 2 xin + attn + mlp ; mlp = W2 relu(W1 ln1 + b1) + b2 ; h = xin + attn
        let ln1: &[T] = if bo.ln.is_some() { &a.ln1 } else { &a.h };
        linear_backward(
            Some(&mut g.dr),
            false,
            &mut grad[bo.w2..bo.w2 + c * m],
            None,
            dxn,
            &a.r,
            &p[bo.w2..],
            rows,
            m,
            c,
        );
        apply_bias_grad(grad, bo.b2, dxn, rows, c);
        match ws.relu_frozen.get(l) {
            Some(mask) if ws.freeze_relu => {
                for ((d, g), on) in g.df[..rows * m].iter_mut().zip(&g.dr[..rows * m]).zip(mask) {
                    *d = if *on { *g } else { T::ZERO };
                }
            }
            _ => relu_backward(&mut g.df[..rows * m], &g.dr[..rows * m], &a.f[..rows * m]),
        }
        linear_backward(
            Some(&mut g.dln),
            false,
            &mut grad[bo.w1..bo.w1 + m * c],
            None,
            &g.df,
            ln1,
            &p[bo.w1..],
            rows,
            c,
            m,
        );
        apply_bias_grad(grad, bo.b1, &g.df, rows, m);
        // dh = LN1'(dln1)
        match bo.ln {
            Some([_, (w, b)]) => {
                let (gw, gb) = split_two(grad, w, b, c);
                layernorm_backward(
                    &mut g.dh,
                    gw,
                    gb,
                    &g.dln,
                    &a.h,
                    &a.mean1,
                    &a.rstd1,
                    &p[w..],
                    rows,
                    c,
                );
            }
            None => g.dh[..rows * c].copy_from_slice(&g.dln[..rows * c]),
        }
        // dattn = dx_next + dh ; dx_in (residual part) = 2 dx_next + dh
        let both = g.dattn[..rows * c]
            .iter_mut()
            .zip(g.dres[..rows * c].iter_mut());
        for ((da, dr), (d, dh)) in both.zip(dxn[..rows * c].iter().zip(&g.dh[..rows * c])) {
            *da = *d + *dh;
            *dr = *d + *d + *dh;
        }
        // datty = dattn @ Wo ; dWo += dattn^T atty
        let datty_rows: &mut [T] = if compact {
            &mut g.datty_c
        } else {
            &mut g.datty
        };
        match bo.out {
            Some(o) => linear_backward(
                Some(&mut *datty_rows),
                false,
                &mut grad[o..o + c * c],
                None,
                &g.dattn,
                atty,
                &p[o..],
                rows,
                c,
                c,
            ),
            None => datty_rows[..rows * c].copy_from_slice(&g.dattn[..rows * c]),
        }
        if compact {
            scatter_even_rows(&mut g.datty, &g.datty_c, nseq, t, c);
        }
        let stride = if compact { 2 } else { 1 };
        attention_backward(&mut g.dqkv, &g.datty, &a.qkv, &a.probs, shape, stride);
        // dln0 = dqkv @ Wqkv ; dWqkv += dqkv^T ln0
        let ln0: &[T] = if bo.ln.is_some() { &a.ln0 } else { x };
        let dx = &mut ws.dx;
        let dln0: &mut [T] = if bo.ln.is_some() {
            &mut g.dln
        } else {
            &mut dx[..n * c]
        };
        let dw_qkv = &mut grad[bo.qkv..bo.qkv + 3 * c * c];
        linear_backward(
            Some(dln0),
            false,
            dw_qkv,
            None,
            &g.dqkv,
            ln0,
            &p[bo.qkv..],
            n,
            c,
            3 * c,
        );
        if let Some([(w, b), _]) = bo.ln {
            let (gw, gb) = split_two(grad, w, b, c);
            layernorm_backward(dx, gw, gb, &g.dln, x, &a.mean0, &a.rstd0, &p[w..], n, c);
        }
        // Residual contributions.
        if compact {
            let k = t.div_ceil(2);
            for b in 0..nseq {
                for e in 0..k {
                    let (src, dst) = ((b * k + e) * c, (b * t + 2 * e) * c);
                    for (d, r) in dx[dst..dst + c].iter_mut().zip(&g.dres[src..src + c]) {
                        *d += *r;
                    }
                }
            }
        } else {
            for (d, r) in dx[..n * c].iter_mut().zip(&g.dres[..n * c]) {
                *d += *r;
            }
        }
    }
}

fn apply_bias_grad<T: Float>(grad: &mut [T], off: usize, dy: &[T], rows: usize, width: usize) {
    let db = &mut grad[off..off + width];
    for row in dy[..rows * width].chunks_exact(width) {
        for (d, v) in db.iter_mut().zip(row) {
            *d += *v;
        }
    }
}

/// Two disjoint `len`-long windows of `grad` at offsets `a < b`.
fn split_two<T>(grad: &mut [T], a: usize, b: usize, len: usize) -> (&mut [T], &mut [T]) {
    assert!(a + len <= b);
    let (lo, hi) = grad.split_at_mut(b);
    (&mut lo[a..a + len], &mut hi[..len])
}

/// Inverse of `gather_even_rows`; odd rows of `dst` are zeroed.
fn scatter_even_rows<T: Float>(dst: &mut [T], src: &[T], nseq: usize, t: usize, c: usize) {
    let k = t.div_ceil(2);
    dst[..nseq * t * c].fill(T::ZERO);
    for b in 0..nseq {
        for e in 0..k {
            dst[(b * t + 2 * e) * c..(b * t + 2 * e + 1) * c]
                .copy_from_slice(&src[(b * k + e) * c..(b * k + e + 1) * c]);
        }
    }
}
