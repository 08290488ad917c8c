//! The GEMM helpers of [`GpuModel`]: linear layers forward and backward as strided batched
//! GEMMs over the chains, and column sums, with long reductions split into pieces.

use super::*;

impl GpuModel {
    /// `y[rows, out] (=|+=) x[rows, inp] @ W^T` per chain (`rows` per chain), W = params[off..]
    /// of shape [out, inp].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear(
        &self,
        rows: usize,
        y: Ptr,
        x: Ptr,
        params: Ptr,
        off: usize,
        inp: usize,
        out: usize,
        beta: f32,
    ) -> Result<(), GpuError> {
        self.dev.gemm(&Gemm {
            trans_a: true,
            trans_b: false,
            m: out,
            n: rows,
            k: inp,
            alpha: 1.0,
            a: params.add::<f32>(off),
            lda: inp,
            stride_a: self.p,
            b: x,
            ldb: inp,
            stride_b: rows * inp,
            beta,
            c: y,
            ldc: out,
            stride_c: rows * out,
            batch: self.q,
        })
    }

    /// `dx[rows, inp] = dy[rows, out] @ W` per chain.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_dx(
        &self,
        rows: usize,
        dx: Ptr,
        dy: Ptr,
        params: Ptr,
        off: usize,
        inp: usize,
        out: usize,
    ) -> Result<(), GpuError> {
        self.dev.gemm(&Gemm {
            trans_a: false,
            trans_b: false,
            m: inp,
            n: rows,
            k: out,
            alpha: 1.0,
            a: params.add::<f32>(off),
            lda: inp,
            stride_a: self.p,
            b: dy,
            ldb: out,
            stride_b: rows * out,
            beta: 0.0,
            c: dx,
            ldc: inp,
            stride_c: rows * inp,
            batch: self.q,
        })
    }

    /// `dW[out, inp] += dy^T x` per chain, into grad[off..].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_dw(
        &self,
        rows: usize,
        grad: Ptr,
        off: usize,
        dy: Ptr,
        x: Ptr,
        inp: usize,
        out: usize,
    ) -> Result<(), GpuError> {
        self.split_reduce(
            Gemm {
                trans_a: false,
                trans_b: true,
                m: inp,
                n: out,
                k: rows,
                alpha: 1.0,
                a: x,
                lda: inp,
                stride_a: rows * inp,
                b: dy,
                ldb: out,
                stride_b: rows * out,
                beta: 1.0,
                c: grad.add::<f32>(off),
                ldc: inp,
                stride_c: self.p,
                batch: self.q,
            },
            true,
        )
    }

    /// Pieces a reduction over `rows` rows is split into: a batched GEMM keeps one thread block
    /// per output tile of each weight set, so that a reduction of thousands of rows into a
    /// small weight may run on a few blocks of a GPU of a hundred and more (unless cuBLAS
    /// splits it itself, which it need not do for batched calls); split, its pieces run as more
    /// batch entries and a second small GEMM adds them up (deterministic, unlike atomics).
    pub(super) fn split_factor(&self, rows: usize) -> usize {
        if rows < self.split_min_rows || !split_reductions() {
            return 1;
        }
        let mut s = 1;
        while s < SPLIT_MAX && rows.is_multiple_of(2 * s) && rows / (2 * s) >= self.split_min_piece
        {
            s *= 2;
        }
        s
    }

    /// Runs `g`, a reduction over its `k` rows (A's and B's batch strides span exactly those
    /// rows; `b_rows` says whether B advances along them, false for a ones vector), in
    /// `split_factor(k)` pieces: `C = beta C + alpha sum_s (piece s)`.
    pub(super) fn split_reduce(&self, g: Gemm, b_rows: bool) -> Result<(), GpuError> {
        let s = self.split_factor(g.k);
        if s == 1 {
            return self.dev.gemm(&g);
        }
        let piece = g.k / s;
        let mn = g.m * g.n;
        // Row r of A is column r (lda apart) unless A is transposed; the same for B.
        let a_step = if g.trans_a { 1 } else { g.lda };
        let b_step = if g.trans_b { g.ldb } else { 1 };
        debug_assert!(g.stride_a == g.k * a_step && (!b_rows || g.stride_b == g.k * b_step));
        self.dev.gemm(&Gemm {
            k: piece,
            stride_a: piece * a_step,
            stride_b: if b_rows { piece * b_step } else { 0 },
            beta: 0.0,
            c: self.split.ptr,
            ldc: g.m,
            stride_c: mn,
            batch: g.batch * s,
            ..g
        })?;
        // C[q] (m x n, ldc = m) = beta C[q] + sum over the s pieces (mn-vectors) of set q.
        self.dev.gemm(&Gemm {
            trans_a: false,
            trans_b: false,
            m: mn,
            n: 1,
            k: s,
            alpha: 1.0,
            a: self.split.ptr,
            lda: mn,
            stride_a: s * mn,
            b: self.ones.ptr,
            ldb: s,
            stride_b: 0,
            beta: g.beta,
            c: g.c,
            ldc: mn,
            stride_c: g.stride_c,
            batch: g.batch,
        })
    }

    /// `dst[q, 0..width] (=|+=) alpha * sum over `rows` of src[q, row, 0..width]`, dst rows
    /// `dst_stride` apart: column sums as a GEMM with a ones vector.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn col_sums(
        &self,
        dst: Ptr,
        dst_stride: usize,
        src: Ptr,
        rows: usize,
        width: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<(), GpuError> {
        self.split_reduce(
            Gemm {
                trans_a: false,
                trans_b: false,
                m: width,
                n: 1,
                k: rows,
                alpha,
                a: src,
                lda: width,
                stride_a: rows * width,
                b: self.ones.ptr,
                ldb: rows,
                stride_b: 0,
                beta,
                c: dst,
                ldc: width,
                stride_c: dst_stride,
                batch: self.q,
            },
            false,
        )
    }
}
