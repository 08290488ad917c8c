//! Causal multi-head self-attention on a fused QKV projection, with the reference's layout:
//! head `h` reads Q from features `[h*3c, h*3c+c)`, K from `[h*3c+c, h*3c+2c)` and V from
//! `[h*3c+2c, (h+1)*3c)` of each `3C`-wide row, and writes its output to features `[h*c, (h+1)*c)`.

use crate::Float;

/// Shapes of one attention call: `nseq` sequences of `t` tokens, width `c_model`, `heads` heads.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub nseq: usize,
    pub t: usize,
    pub c_model: usize,
    pub heads: usize,
}

impl AttnShape {
    fn head_size(&self) -> usize {
        self.c_model / self.heads
    }
}

/// Per-head scratch: Q, K, V as `[t, c]`, K and V transposed as `[c, t]`, and gradients.
struct HeadScratch<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    kt: Vec<T>,
    vt: Vec<T>,
    dq: Vec<T>,
    dk: Vec<T>,
    dv: Vec<T>,
    row: Vec<T>,
}

impl<T: Float> HeadScratch<T> {
    fn new(t: usize, hs: usize) -> Self {
        let z = || vec![T::ZERO; t * hs];
        HeadScratch {
            q: z(),
            k: z(),
            v: z(),
            kt: z(),
            vt: z(),
            dq: z(),
            dk: z(),
            dv: z(),
            row: vec![T::ZERO; t.next_multiple_of(8)],
        }
    }

    /// Copies head `h` of one sequence's `qkv[t, 3C]` into the scratch buffers.
    fn load(&mut self, qkv_b: &[T], h: usize, hs: usize, c3: usize, t: usize) {
        for (i, row) in qkv_b.chunks_exact(c3).enumerate() {
            let head = &row[h * 3 * hs..(h + 1) * 3 * hs];
            self.q[i * hs..(i + 1) * hs].copy_from_slice(&head[..hs]);
            self.k[i * hs..(i + 1) * hs].copy_from_slice(&head[hs..2 * hs]);
            self.v[i * hs..(i + 1) * hs].copy_from_slice(&head[2 * hs..]);
            for e in 0..hs {
                self.kt[e * t + i] = head[hs + e];
                self.vt[e * t + i] = head[2 * hs + e];
            }
        }
    }
}

#[inline(always)]
fn axpy<T: Float>(y: &mut [T], a: T, x: &[T]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * *xi;
    }
}

/// `row[0..n] = sum_e a[e] * mt[e, 0..n]` for `mt[c, t]` (a vector-matrix product without
/// horizontal sums).
#[inline(always)]
fn vec_mat<T: Float>(row: &mut [T], a: &[T], mt: &[T], t: usize, n: usize) {
    let row = &mut row[..n];
    row.fill(T::ZERO);
    for (e, ae) in a.iter().enumerate() {
        axpy(row, *ae, &mt[e * t..e * t + n]);
    }
}

/// Any head size (the reference path for sizes without a specialised kernel).
fn attention_forward_any<T: Float>(
    out: &mut [T],
    probs: &mut [T],
    qkv: &[T],
    s: AttnShape,
    query_stride: usize,
) {
    let (t, c3, cm, hs) = (s.t, 3 * s.c_model, s.c_model, s.head_size());
    let scale = T::from_f64(1.0 / (hs as f64).sqrt());
    let mut sc = HeadScratch::new(t, hs);
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        for h in 0..s.heads {
            sc.load(qkv_b, h, hs, c3, t);
            let p_bh = &mut probs[(b * s.heads + h) * t * t..(b * s.heads + h + 1) * t * t];
            for i in (0..t).step_by(query_stride) {
                // Scores for keys 0..=i, computed over a vector-friendly prefix of the row.
                let n = (i + 1).next_multiple_of(8).min(t);
                vec_mat(&mut sc.row, &sc.q[i * hs..(i + 1) * hs], &sc.kt, t, n);
                let prow = &mut p_bh[i * t..(i + 1) * t];
                let mut mx = T::from_f64(f64::NEG_INFINITY);
                for v in &sc.row[..=i] {
                    mx = mx.max(*v);
                }
                let mut sum = T::ZERO;
                for (p, v) in prow[..=i].iter_mut().zip(&sc.row[..=i]) {
                    *p = ((*v - mx) * scale).exp();
                    sum += *p;
                }
                let inv = T::ONE / sum;
                for p in prow[..=i].iter_mut() {
                    *p *= inv;
                }
                prow[i + 1..].fill(T::ZERO);
                let o = &mut out[(b * t + i) * cm + h * hs..(b * t + i) * cm + (h + 1) * hs];
                o.fill(T::ZERO);
                for (p, v) in prow[..=i].iter().zip(sc.v.chunks_exact(hs)) {
                    axpy(o, *p, v);
                }
            }
        }
    }
}

/// Any head size (the reference path for sizes without a specialised kernel).
fn attention_backward_any<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    probs: &[T],
    s: AttnShape,
    query_stride: usize,
) {
    let (t, c3, cm, hs) = (s.t, 3 * s.c_model, s.c_model, s.head_size());
    let scale = T::from_f64(1.0 / (hs as f64).sqrt());
    let mut sc = HeadScratch::new(t, hs);
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        for h in 0..s.heads {
            sc.load(qkv_b, h, hs, c3, t);
            sc.dq.fill(T::ZERO);
            sc.dk.fill(T::ZERO);
            sc.dv.fill(T::ZERO);
            let p_bh = &probs[(b * s.heads + h) * t * t..(b * s.heads + h + 1) * t * t];
            for i in (0..t).step_by(query_stride) {
                let dy = &dout[(b * t + i) * cm + h * hs..(b * t + i) * cm + (h + 1) * hs];
                let prow = &p_bh[i * t..=i * t + i];
                // dP = dy V^T ; dV_j += P[j] dy
                let n = (i + 1).next_multiple_of(8).min(t);
                vec_mat(&mut sc.row, dy, &sc.vt, t, n);
                let pdp: T = prow.iter().zip(&sc.row).map(|(p, d)| *p * *d).sum();
                for (p, dv) in prow.iter().zip(sc.dv.chunks_exact_mut(hs)) {
                    axpy(dv, *p, dy);
                }
                // dS = P (dP - sum P dP) / sqrt(c); dQ_i += dS K ; dK_j += dS_j Q_i
                let q = &sc.q[i * hs..(i + 1) * hs];
                let dq = &mut sc.dq[i * hs..(i + 1) * hs];
                for ((p, d), (k, dk)) in prow
                    .iter()
                    .zip(&sc.row)
                    .zip(sc.k.chunks_exact(hs).zip(sc.dk.chunks_exact_mut(hs)))
                {
                    let ds = *p * (*d - pdp) * scale;
                    axpy(dq, ds, k);
                    axpy(dk, ds, q);
                }
            }
            let dqkv_b = &mut dqkv[b * t * c3..(b + 1) * t * c3];
            for (i, row) in dqkv_b.chunks_exact_mut(c3).enumerate() {
                let head = &mut row[h * 3 * hs..(h + 1) * 3 * hs];
                head[..hs].copy_from_slice(&sc.dq[i * hs..(i + 1) * hs]);
                head[hs..2 * hs].copy_from_slice(&sc.dk[i * hs..(i + 1) * hs]);
                head[2 * hs..].copy_from_slice(&sc.dv[i * hs..(i + 1) * hs]);
            }
        }
    }
}

/// `out[nseq,t,C]` and the softmax `probs[nseq,heads,t,t]` (zero above the diagonal) from
/// `qkv[nseq,t,3C]`. Scores are scaled by `1/sqrt(c)`.
///
/// Only query positions with `pos % query_stride == 0` are computed (a stride of 2 when only
/// the x positions' outputs are read downstream); other rows of `out` and `probs` are untouched.
pub fn attention_forward<T: Float>(
    out: &mut [T],
    probs: &mut [T],
    qkv: &[T],
    s: AttnShape,
    query_stride: usize,
) {
    match s.head_size() {
        8 => fixed::forward::<T, 8>(out, probs, qkv, s, query_stride),
        16 => fixed::forward::<T, 16>(out, probs, qkv, s, query_stride),
        32 => fixed::forward::<T, 32>(out, probs, qkv, s, query_stride),
        64 => fixed::forward::<T, 64>(out, probs, qkv, s, query_stride),
        _ => attention_forward_any(out, probs, qkv, s, query_stride),
    }
}

/// Backward of `attention_forward`: overwrites `dqkv[nseq,t,3C]` from `dout[nseq,t,C]`.
/// Query rows skipped in the forward pass (by `query_stride`) must be skipped here too.
pub fn attention_backward<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    probs: &[T],
    s: AttnShape,
    query_stride: usize,
) {
    match s.head_size() {
        8 => fixed::backward::<T, 8>(dqkv, dout, qkv, probs, s, query_stride),
        16 => fixed::backward::<T, 16>(dqkv, dout, qkv, probs, s, query_stride),
        32 => fixed::backward::<T, 32>(dqkv, dout, qkv, probs, s, query_stride),
        64 => fixed::backward::<T, 64>(dqkv, dout, qkv, probs, s, query_stride),
        _ => attention_backward_any(dqkv, dout, qkv, probs, s, query_stride),
    }
}

/// Kernels for a head size `H` known at compile time. Per (sequence, head) the attention is
/// five small matrix products over the active query rows (every `stride`-th position), each a
/// register-blocked loop: `R` rows at a time, 8 keys (one SIMD vector) at a time, `[T; H]`
/// rows in registers; causal blocks that are entirely masked are skipped.
mod fixed {
    use super::AttnShape;
    use crate::Float;
    use crate::reduce;

    const L: usize = 8;

    struct Head<T, const H: usize> {
        t: usize,
        tp: usize,
        stride: usize,
        /// Number of active query rows; row `a` is position `a * stride`.
        na: usize,
        qa: Vec<[T; H]>,
        k: Vec<[T; H]>,
        v: Vec<[T; H]>,
        /// K (forward) or V (backward) transposed, `[H, tp]`, zero-padded columns.
        mt: Vec<T>,
        dya: Vec<[T; H]>,
        /// Row buffers `[na, tp]`: scores / probabilities, and dP / dS.
        s: Vec<T>,
        ds: Vec<T>,
        out: Vec<[T; H]>,
        out2: Vec<[T; H]>,
    }

    impl<T: Float, const H: usize> Head<T, H> {
        fn new(t: usize, stride: usize) -> Self {
            let tp = t.next_multiple_of(L);
            let na = t.div_ceil(stride);
            let rows = |n| vec![[T::ZERO; H]; n];
            Head {
                t,
                tp,
                stride,
                na,
                qa: rows(na),
                k: rows(t),
                v: rows(t),
                mt: vec![T::ZERO; H * tp],
                dya: rows(na),
                s: vec![T::ZERO; na * tp],
                ds: vec![T::ZERO; na * tp],
                out: rows(tp),
                out2: rows(tp),
            }
        }

        fn pos(&self, a: usize) -> usize {
            a * self.stride
        }

        /// Loads head `h` of one sequence's `qkv[t, 3C]`: active Q rows, K and V rows, and the
        /// transpose of segment `transposed` (1 = K, 2 = V).
        fn load(&mut self, qkv_b: &[T], h: usize, c3: usize, transposed: usize) {
            let tp = self.tp;
            for (i, r) in qkv_b.chunks_exact(c3).enumerate() {
                let head = &r[h * 3 * H..(h + 1) * 3 * H];
                if i % self.stride == 0 {
                    self.qa[i / self.stride].copy_from_slice(&head[..H]);
                }
                self.k[i].copy_from_slice(&head[H..2 * H]);
                self.v[i].copy_from_slice(&head[2 * H..]);
                let seg = &head[transposed * H..(transposed + 1) * H];
                for e in 0..H {
                    self.mt[e * tp + i] = seg[e];
                }
            }
        }
    }

    /// `out[a, 0..8 nb] = rows[a] . mt[:, 0..8 nb]` for the `G` rows `a0..a0+G`.
    #[inline(always)]
    fn abt_block<T: Float, const H: usize, const G: usize>(
        out: &mut [T],
        rows: &[[T; H]],
        mt: &[T],
        tp: usize,
        a0: usize,
        nb: usize,
    ) {
        for jb in 0..nb {
            let mut acc = [[T::ZERO; L]; G];
            for e in 0..H {
                let m: &[T; L] = mt[e * tp + jb * L..e * tp + jb * L + L].try_into().unwrap();
                for g in 0..G {
                    let x = rows[a0 + g][e];
                    for l in 0..L {
                        acc[g][l] = x.mul_add(m[l], acc[g][l]);
                    }
                }
            }
            for g in 0..G {
                out[(a0 + g) * tp + jb * L..(a0 + g) * tp + jb * L + L].copy_from_slice(&acc[g]);
            }
        }
    }

    /// `out[a] = sum_{j < ncols} w[a, j] x[j]` for the `G` rows `a0..a0+G`.
    #[inline(always)]
    fn wx_block<T: Float, const H: usize, const G: usize>(
        out: &mut [[T; H]],
        w: &[T],
        x: &[[T; H]],
        tp: usize,
        a0: usize,
        ncols: usize,
    ) {
        let mut acc = [[T::ZERO; H]; G];
        for (j, xj) in x[..ncols].iter().enumerate() {
            for g in 0..G {
                let wv = w[(a0 + g) * tp + j];
                for e in 0..H {
                    acc[g][e] = wv.mul_add(xj[e], acc[g][e]);
                }
            }
        }
        out[a0..a0 + G].copy_from_slice(&acc);
    }

    /// `out[j] = sum_{a >= a_start} w[a, j] x[a]` for the `G` columns `j0..j0+G`.
    #[inline(always)]
    fn wtx_block<T: Float, const H: usize, const G: usize>(
        out: &mut [[T; H]],
        w: &[T],
        x: &[[T; H]],
        tp: usize,
        j0: usize,
        a_start: usize,
    ) {
        let mut acc = [[T::ZERO; H]; G];
        for (a, xa) in x.iter().enumerate().skip(a_start) {
            for g in 0..G {
                let wv = w[a * tp + j0 + g];
                for e in 0..H {
                    acc[g][e] = wv.mul_add(xa[e], acc[g][e]);
                }
            }
        }
        out[j0..j0 + G].copy_from_slice(&acc);
    }

    /// Rows per register block: four rows of up to 16 lanes fit the 16 AVX registers.
    const fn rows_per_block(h: usize) -> usize {
        if h <= 16 {
            4
        } else if h <= 32 {
            2
        } else {
            1
        }
    }

    /// Scores `s[a, :] = rows[a] . mt` for every active row, up to each row block's last key.
    fn scores<T: Float, const H: usize>(hd: &Head<T, H>, rows: &[[T; H]], s: &mut [T]) {
        let r = rows_per_block(H);
        let mut a0 = 0;
        while a0 < hd.na {
            let g = r.min(hd.na - a0);
            let nb = (hd.pos(a0 + g - 1) + 1).div_ceil(L);
            match g {
                1 => abt_block::<T, H, 1>(s, rows, &hd.mt, hd.tp, a0, nb),
                2 => abt_block::<T, H, 2>(s, rows, &hd.mt, hd.tp, a0, nb),
                3 => abt_block::<T, H, 3>(s, rows, &hd.mt, hd.tp, a0, nb),
                _ => abt_block::<T, H, 4>(s, rows, &hd.mt, hd.tp, a0, nb),
            }
            a0 += g;
        }
    }

    /// `out[a] = sum_j w[a, j] x[j]` over the causal prefix of each row block.
    fn weighted_rows<T: Float, const H: usize>(
        hd: &Head<T, H>,
        w: &[T],
        x: &[[T; H]],
        out: &mut [[T; H]],
    ) {
        let r = rows_per_block(H);
        let mut a0 = 0;
        while a0 < hd.na {
            let g = r.min(hd.na - a0);
            let ncols = hd.pos(a0 + g - 1) + 1;
            match g {
                1 => wx_block::<T, H, 1>(out, w, x, hd.tp, a0, ncols),
                2 => wx_block::<T, H, 2>(out, w, x, hd.tp, a0, ncols),
                3 => wx_block::<T, H, 3>(out, w, x, hd.tp, a0, ncols),
                _ => wx_block::<T, H, 4>(out, w, x, hd.tp, a0, ncols),
            }
            a0 += g;
        }
    }

    /// `out[j] = sum_a w[a, j] x[a]` for every key `j < t` (rows with `pos(a) < j` hold zeros).
    fn weighted_cols<T: Float, const H: usize>(
        hd: &Head<T, H>,
        w: &[T],
        x: &[[T; H]],
        out: &mut [[T; H]],
    ) {
        let r = rows_per_block(H);
        let mut j0 = 0;
        while j0 < hd.t {
            let g = r.min(hd.t - j0);
            let a_start = j0.div_ceil(hd.stride);
            match g {
                1 => wtx_block::<T, H, 1>(out, w, x, hd.tp, j0, a_start),
                2 => wtx_block::<T, H, 2>(out, w, x, hd.tp, j0, a_start),
                3 => wtx_block::<T, H, 3>(out, w, x, hd.tp, j0, a_start),
                _ => wtx_block::<T, H, 4>(out, w, x, hd.tp, j0, a_start),
            }
            j0 += g;
        }
    }

    pub(super) fn forward<T: Float, const H: usize>(
        out: &mut [T],
        probs: &mut [T],
        qkv: &[T],
        s: AttnShape,
        stride: usize,
    ) {
        let (t, c3, cm) = (s.t, 3 * s.c_model, s.c_model);
        let scale = T::from_f64(1.0 / (H as f64).sqrt());
        let mut hd = Head::<T, H>::new(t, stride);
        let (tp, na) = (hd.tp, hd.na);
        let mut sbuf = std::mem::take(&mut hd.s);
        let mut obuf = std::mem::take(&mut hd.out);
        for b in 0..s.nseq {
            for h in 0..s.heads {
                hd.load(&qkv[b * t * c3..(b + 1) * t * c3], h, c3, 1);
                scores(&hd, &hd.qa, &mut sbuf);
                // Softmax per active row over whole 8-lane blocks; keys after the row masked.
                for a in 0..na {
                    let i = hd.pos(a);
                    let w = (i + 1).next_multiple_of(L);
                    let row = &mut sbuf[a * tp..(a + 1) * tp];
                    row[i + 1..w].fill(T::from_f64(f64::NEG_INFINITY));
                    let mx = reduce::max(&row[..w]);
                    for v in row[..w].iter_mut() {
                        *v = (*v - mx) * scale;
                    }
                    T::exp_in_place(&mut row[..w]);
                    row[i + 1..].fill(T::ZERO);
                    let inv = T::ONE / reduce::sum(&row[..w]);
                    for v in row[..w].iter_mut() {
                        *v *= inv;
                    }
                    let p_row = (b * s.heads + h) * t * t + i * t;
                    probs[p_row..p_row + t].copy_from_slice(&row[..t]);
                }
                weighted_rows(&hd, &sbuf, &hd.v, &mut obuf);
                for a in 0..na {
                    let o = (b * t + hd.pos(a)) * cm + h * H;
                    out[o..o + H].copy_from_slice(&obuf[a]);
                }
            }
        }
    }

    pub(super) fn backward<T: Float, const H: usize>(
        dqkv: &mut [T],
        dout: &[T],
        qkv: &[T],
        probs: &[T],
        s: AttnShape,
        stride: usize,
    ) {
        let (t, c3, cm) = (s.t, 3 * s.c_model, s.c_model);
        let scale = T::from_f64(1.0 / (H as f64).sqrt());
        let mut hd = Head::<T, H>::new(t, stride);
        let (tp, na) = (hd.tp, hd.na);
        let mut pbuf = std::mem::take(&mut hd.s);
        let mut dsbuf = std::mem::take(&mut hd.ds);
        let mut dya = std::mem::take(&mut hd.dya);
        let mut obuf = std::mem::take(&mut hd.out);
        let mut obuf2 = std::mem::take(&mut hd.out2);
        for b in 0..s.nseq {
            let dqkv_b = &mut dqkv[b * t * c3..(b + 1) * t * c3];
            for h in 0..s.heads {
                hd.load(&qkv[b * t * c3..(b + 1) * t * c3], h, c3, 2);
                for a in 0..na {
                    let i = hd.pos(a);
                    let o = (b * t + i) * cm + h * H;
                    dya[a].copy_from_slice(&dout[o..o + H]);
                    let p_row = (b * s.heads + h) * t * t + i * t;
                    pbuf[a * tp..a * tp + t].copy_from_slice(&probs[p_row..p_row + t]);
                }
                // dP = dy V^T ; dS = P (dP - sum_j P dP) / sqrt(c)
                scores(&hd, &dya, &mut dsbuf);
                for a in 0..na {
                    let w = (hd.pos(a) + 1).next_multiple_of(L);
                    let (p, d) = (&pbuf[a * tp..a * tp + w], &mut dsbuf[a * tp..(a + 1) * tp]);
                    let pdp = reduce::dot(p, &d[..w]);
                    for (dv, pv) in d[..w].iter_mut().zip(p) {
                        *dv = *pv * (*dv - pdp) * scale;
                    }
                    d[w..].fill(T::ZERO);
                }
                // dQ = dS K (active rows; other rows get zero) ; dK = dS^T Q ; dV = P^T dy
                weighted_rows(&hd, &dsbuf, &hd.k, &mut obuf);
                for i in 0..t {
                    let d = &mut dqkv_b[i * c3 + h * 3 * H..i * c3 + h * 3 * H + H];
                    if i % stride == 0 {
                        d.copy_from_slice(&obuf[i / stride]);
                    } else {
                        d.fill(T::ZERO);
                    }
                }
                weighted_cols(&hd, &dsbuf, &hd.qa, &mut obuf);
                weighted_cols(&hd, &pbuf, &dya, &mut obuf2);
                for j in 0..t {
                    let base = j * c3 + h * 3 * H;
                    dqkv_b[base + H..base + 2 * H].copy_from_slice(&obuf[j]);
                    dqkv_b[base + 2 * H..base + 3 * H].copy_from_slice(&obuf2[j]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specialised_kernels_equal_the_generic_path() {
        for (stride, t) in [(1usize, 13usize), (2, 16), (1, 32)] {
            let s = AttnShape {
                nseq: 2,
                t,
                c_model: 64,
                heads: 4,
            };
            let n = s.nseq * t;
            let qkv: Vec<f64> = (0..n * 192)
                .map(|i| ((i * 37 % 101) as f64 / 50.0 - 1.0) * 0.8)
                .collect();
            let dout: Vec<f64> = (0..n * 64)
                .map(|i| {
                    if (i / 64 % t) % stride == 0 {
                        (i as f64 * 0.13).sin()
                    } else {
                        0.0
                    }
                })
                .collect();
            let (mut o1, mut o2) = (vec![0.0; n * 64], vec![0.0; n * 64]);
            let (mut p1, mut p2) = (vec![0.0; 2 * 4 * t * t], vec![0.0; 2 * 4 * t * t]);
            attention_forward(&mut o1, &mut p1, &qkv, s, stride);
            attention_forward_any(&mut o2, &mut p2, &qkv, s, stride);
            let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
            assert!(close(&o1, &o2) && close(&p1, &p2));
            let (mut d1, mut d2) = (vec![0.0; n * 192], vec![0.0; n * 192]);
            attention_backward(&mut d1, &dout, &qkv, &p1, s, stride);
            attention_backward_any(&mut d2, &dout, &qkv, &p2, s, stride);
            assert!(close(&d1, &d2), "stride {stride} t {t}");
        }
    }
}
