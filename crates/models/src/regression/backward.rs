//! The backward pass of the regression transformer: the read-out, the final LayerNorm and each
//! block in reverse, accumulating into the flat gradient (layout as `ParamLayout`).

use stagewise_engine::Float;
use stagewise_engine::attention::{AttnShape, attention_backward};
use stagewise_engine::layernorm::{layernorm_backward, layernorm_backward_add};
use stagewise_engine::linear::{bias_backward, linear_backward, linear1_backward};
use stagewise_engine::relu::relu_backward_bias;

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
        std::mem::swap(&mut ws.dx, &mut ws.grads.dx_up);
        let a = &ws.acts[l];
        let rows = a.rows;
        let compact = rows != n;
        let x = &ws.x[l];
        let atty: &[T] = if compact { &a.atty_c } else { &a.atty };
        let g = &mut ws.grads;
        let dxn = &g.dx_up[..rows * c]; // dLoss/dx_next [rows, C]
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
        bias_backward(&mut grad[bo.b2..bo.b2 + c], dxn);
        let (df, db1) = (&mut g.df[..rows * m], &mut grad[bo.b1..bo.b1 + m]);
        match ws.relu_frozen.get(l) {
            Some(mask) if ws.freeze_relu => {
                for ((d, g), on) in df.iter_mut().zip(&g.dr[..rows * m]).zip(mask) {
                    *d = if *on { *g } else { T::ZERO };
                }
                bias_backward(db1, df);
            }
            _ => relu_backward_bias(df, &g.dr[..rows * m], &a.f[..rows * m], db1),
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
        // dattn = dh = dx_next + LN1'(dln1), the residual summed as LN1's gradient is stored.
        match bo.ln {
            Some([_, (w, b)]) => {
                let (gw, gb) = split_two(grad, w, b, c);
                let (mean, rstd) = (&a.mean1, &a.rstd1);
                let (dattn, dln) = (&mut g.dattn, &g.dln);
                layernorm_backward_add(
                    dattn,
                    gw,
                    gb,
                    dln,
                    &a.h,
                    mean,
                    rstd,
                    &p[w..],
                    &[dxn],
                    rows,
                    c,
                );
            }
            None => {
                for ((da, d), dl) in g.dattn[..rows * c].iter_mut().zip(dxn).zip(&g.dln) {
                    *da = *dl + *d;
                }
            }
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
        // dx_in = LN0'(dln0) + 2 dx_next + dh: the residual paths' dx_next + dattn, summed as
        // LN0's gradient is stored where the rows line up, added after it otherwise.
        let (dxn, dattn) = (&g.dx_up[..rows * c], &g.dattn[..rows * c]);
        let fused = !compact && bo.ln.is_some();
        if let Some([(w, b), _]) = bo.ln {
            let (gw, gb) = split_two(grad, w, b, c);
            let adds: &[&[T]] = if fused { &[dxn, dattn] } else { &[] };
            let (mean, rstd, w) = (&a.mean0, &a.rstd0, &p[w..]);
            layernorm_backward_add(dx, gw, gb, &g.dln, x, mean, rstd, w, adds, n, c);
        }
        if !fused {
            // Row r of the residual gradients is row r of dx, or its r-th x position.
            let k = t.div_ceil(2);
            for r in 0..rows {
                let dst = if compact {
                    (r / k * t + 2 * (r % k)) * c
                } else {
                    r * c
                };
                let src = r * c;
                let sum = dxn[src..src + c].iter().zip(&dattn[src..src + c]);
                for (d, (u, v)) in dx[dst..dst + c].iter_mut().zip(sum) {
                    *d += *u + *v;
                }
            }
        }
    }
}

/// Two disjoint `len`-long windows of `grad` at offsets `a < b`.
fn split_two<T>(grad: &mut [T], a: usize, b: usize, len: usize) -> (&mut [T], &mut [T]) {
    assert!(a + len <= b);
    let (lo, hi) = grad.split_at_mut(b);
    (&mut lo[a..a + len], &mut hi[..len])
}

/// Inverse of `gather_even_rows`; odd rows of `dst` keep what they held (attention's backward
/// with query stride 2 reads only the even rows).
fn scatter_even_rows<T: Float>(dst: &mut [T], src: &[T], nseq: usize, t: usize, c: usize) {
    let k = t.div_ceil(2);
    for b in 0..nseq {
        for e in 0..k {
            dst[(b * t + 2 * e) * c..(b * t + 2 * e + 1) * c]
                .copy_from_slice(&src[(b * k + e) * c..(b * k + e + 1) * c]);
        }
    }
}
