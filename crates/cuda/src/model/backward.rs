//! The backward pass of [`GpuModel`]: each chain's mean squared error back to its parameter
//! gradient, block by block in reverse (shapes as in the parent module).

use super::*;

impl GpuModel {
    /// Query stride of block `l`: 2 in the last block (only the x positions are read), else 1.
    pub(super) fn stride(&self, l: usize) -> usize {
        if l + 1 == self.config.num_layers {
            2
        } else {
            1
        }
    }

    /// Gradient of each chain's mean squared error (after a `forward` with targets) into
    /// `grad[Q, P]` (overwritten).
    pub fn backward(&self, params: Ptr, toks: Ptr, grad: Ptr) -> Result<(), GpuError> {
        let cfg = &self.config;
        let (c, m, h, d1) = (
            cfg.embed_size,
            cfg.mlp_size,
            cfg.num_heads,
            cfg.token_size(),
        );
        let (q, b, t, k) = (self.q, self.b, self.t, self.k());
        let (n, nk) = (self.rows(), b * k);
        let hs = c / h;
        let p = self.p as i64;
        let o = &self.off;
        let len = (q * self.p) as i64;
        self.launch(
            "fill_f32",
            q * self.p,
            &[Arg::Ptr(grad), Arg::F32(0.0), Arg::I64(len)],
        )?;
        // Unembedding: only row 0 of Wu and bu[0] are read by the loss.
        let lnf = if o.ln_f.is_some() {
            self.lnf.ptr
        } else {
            self.x[cfg.num_layers].ptr
        };
        self.split_reduce(
            Gemm {
                trans_a: false,
                trans_b: false,
                m: c,
                n: 1,
                k: nk,
                alpha: 1.0,
                a: lnf,
                lda: c,
                stride_a: nk * c,
                b: self.dpred.ptr,
                ldb: nk,
                stride_b: nk,
                beta: 1.0,
                c: grad.add::<f32>(o.unemb_w),
                ldc: c,
                stride_c: self.p,
                batch: q,
            },
            true,
        )?;
        self.col_sums(
            grad.add::<f32>(o.unemb_b),
            self.p,
            self.dpred.ptr,
            nk,
            1,
            1.0,
            1.0,
        )?;
        self.launch(
            "readout_backward",
            q * nk * c,
            &[
                self.dlnf.arg(),
                self.dpred.arg(),
                Arg::Ptr(params),
                Arg::I64(p),
                Arg::I64(o.unemb_w as i64),
                Arg::I32(c as i32),
                Arg::I64(nk as i64),
                Arg::I64((q * nk * c) as i64),
            ],
        )?;
        let (mut dxn, mut dxo) = (&self.dx_a, &self.dx_b);
        match o.ln_f {
            Some(ln) => self.layernorm_backward(
                nk,
                dxn.ptr,
                self.dlnf.ptr,
                self.x[cfg.num_layers].ptr,
                &self.lnf_mean,
                &self.lnf_rstd,
                params,
                grad,
                ln,
                LnMode::Set,
            )?,
            None => self.copy(dxn.ptr, self.dlnf.ptr, q * nk * c)?,
        }
        let scale = (1.0 / (hs as f64).sqrt()) as f32;
        for (l, bo) in o.blocks.iter().enumerate().rev() {
            let a = &self.acts[l];
            let x = self.x[l].ptr;
            let stride = self.stride(l);
            let na = n / stride;
            // x_next = 2x + attn + W2 relu(W1 ln1 + b1) + b2 on the block's active rows
            self.linear_dw(na, grad, bo.w2, dxn.ptr, a.r.ptr, m, c)?;
            self.col_sums(grad.add::<f32>(bo.b2), self.p, dxn.ptr, na, c, 1.0, 1.0)?;
            self.linear_dx(na, self.dr.ptr, dxn.ptr, params, bo.w2, m, c)?;
            let nm = (q * na * m) as i64;
            // dr <- dr where r > 0 (in place)
            self.launch(
                "relu_backward",
                q * na * m,
                &[self.dr.arg(), self.dr.arg(), a.r.arg(), Arg::I64(nm)],
            )?;
            let ln1 = if bo.ln.is_some() { a.ln1.ptr } else { a.h.ptr };
            self.linear_dw(na, grad, bo.w1, self.dr.ptr, ln1, c, m)?;
            self.col_sums(grad.add::<f32>(bo.b1), self.p, self.dr.ptr, na, m, 1.0, 1.0)?;
            self.linear_dx(na, self.dln.ptr, self.dr.ptr, params, bo.w1, c, m)?;
            // Through h = x + attn and x_next = 2x + attn + mlp: dattn = dxn + dh and the
            // residual part of dx = 2 dxn + dh (fused into the LayerNorm's backward when there
            // is one); the last block's lives on its active rows until scattered back.
            let dres = if stride == 1 { dxo } else { &self.dres };
            match bo.ln {
                Some([_, ln]) => self.layernorm_backward(
                    na,
                    dres.ptr,
                    self.dln.ptr,
                    a.h.ptr,
                    &a.mean1,
                    &a.rstd1,
                    params,
                    grad,
                    ln,
                    LnMode::Residual {
                        dxn: dxn.ptr,
                        dattn: self.dattn.ptr,
                    },
                )?,
                None => self.launch(
                    "residual_backward",
                    q * na * c,
                    &[
                        self.dattn.arg(),
                        dres.arg(),
                        dxn.arg(),
                        self.dln.arg(),
                        Arg::I64((q * na * c) as i64),
                    ],
                )?,
            }
            if stride != 1 {
                self.launch(
                    "scatter_rows",
                    q * n * c,
                    &[
                        dxo.arg(),
                        self.dres.arg(),
                        Arg::I32(t as i32),
                        Arg::I32(stride as i32),
                        Arg::I32(c as i32),
                        Arg::I64((q * n * c) as i64),
                    ],
                )?;
            }
            let datty = match bo.out {
                Some(w) => {
                    self.linear_dw(na, grad, w, self.dattn.ptr, a.atty.ptr, c, c)?;
                    self.linear_dx(na, self.datty.ptr, self.dattn.ptr, params, w, c, c)?;
                    self.datty.ptr
                }
                None => self.dattn.ptr,
            };
            let total = (q * b * h * t) as i64;
            let common = [
                Arg::I32(t as i32),
                Arg::I32(stride as i32),
                Arg::I32(h as i32),
                Arg::F32(scale),
                Arg::I64(total),
            ];
            let mut args = vec![
                self.dqkv.arg(),
                self.dsum.arg(),
                Arg::Ptr(datty),
                a.atty.arg(),
                a.qkv.arg(),
                a.lse.arg(),
            ];
            args.extend(common);
            self.launch(self.attn_kernels[1], q * b * h * t, &args)?;
            let mut args = vec![
                self.dqkv.arg(),
                self.dsum.arg(),
                Arg::Ptr(datty),
                a.qkv.arg(),
                a.lse.arg(),
            ];
            args.extend(common);
            self.launch(self.attn_kernels[2], q * b * h * t, &args)?;
            let ln0 = if bo.ln.is_some() { a.ln0.ptr } else { x };
            self.linear_dw(n, grad, bo.qkv, self.dqkv.ptr, ln0, c, 3 * c)?;
            self.linear_dx(n, self.dln.ptr, self.dqkv.ptr, params, bo.qkv, c, 3 * c)?;
            match bo.ln {
                Some([ln, _]) => self.layernorm_backward(
                    n,
                    dxo.ptr,
                    self.dln.ptr,
                    x,
                    &a.mean0,
                    &a.rstd0,
                    params,
                    grad,
                    ln,
                    LnMode::Add,
                )?,
                None => self.launch(
                    "add_f32",
                    q * n * c,
                    &[
                        dxo.arg(),
                        dxo.arg(),
                        self.dln.arg(),
                        Arg::I64((q * n * c) as i64),
                    ],
                )?,
            }
            std::mem::swap(&mut dxn, &mut dxo);
        }
        // Embedding: dWe += dx0^T toks; positions from the sums of dx0 over sequences.
        self.linear_dw(n, grad, o.tok, dxn.ptr, toks, d1, c)?;
        self.col_sums(self.pos_sums.ptr, t * c, dxn.ptr, b, t * c, 1.0, 0.0)?;
        self.launch(
            "positions_backward",
            q * t * c,
            &[
                Arg::Ptr(grad),
                self.pos_sums.arg(),
                Arg::I64(p),
                Arg::I64(o.pos as i64),
                Arg::I32(cfg.max_tokens() as i32),
                Arg::I32(t as i32),
                Arg::I32(c as i32),
                Arg::I64((q * t * c) as i64),
            ],
        )
    }

    /// LN'(dy) of `rows` rows per chain into dx as `mode` says, with the LayerNorm's weight and
    /// bias gradients added to grad.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        rows: usize,
        dx: Ptr,
        dy: Ptr,
        x: Ptr,
        mean: &Buf<f32>,
        rstd: &Buf<f32>,
        params: Ptr,
        grad: Ptr,
        (w, b): (usize, usize),
        mode: LnMode,
    ) -> Result<(), GpuError> {
        let (code, dxn, dattn) = match mode {
            LnMode::Set => (0, Ptr::NULL, Ptr::NULL),
            LnMode::Add => (1, Ptr::NULL, Ptr::NULL),
            LnMode::Residual { dxn, dattn } => (2, dxn, dattn),
        };
        let c = self.config.embed_size;
        let all = self.q * rows;
        self.launch(
            "layernorm_backward",
            all,
            &[
                Arg::Ptr(dx),
                self.dyxhat.arg(),
                Arg::Ptr(dy),
                Arg::Ptr(x),
                mean.arg(),
                rstd.arg(),
                Arg::Ptr(params),
                Arg::I64(self.p as i64),
                Arg::I64(w as i64),
                Arg::I32(c as i32),
                Arg::I32(code),
                Arg::Ptr(dxn),
                Arg::Ptr(dattn),
                Arg::I64(rows as i64),
                Arg::I64(all as i64),
            ],
        )?;
        self.col_sums(
            grad.add::<f32>(w),
            self.p,
            self.dyxhat.ptr,
            rows,
            c,
            1.0,
            1.0,
        )?;
        self.col_sums(grad.add::<f32>(b), self.p, dy, rows, c, 1.0, 1.0)
    }
}
