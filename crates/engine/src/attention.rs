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

/// Kernels for a head size `H` known at compile time: rows live in `[T; H]` registers, scores
/// are computed 8 keys at a time from K transposed, and sums run in several independent
/// accumulators so that FMA latency does not serialise them.
mod fixed {
    use super::AttnShape;
    use crate::Float;

    const L: usize = 8;

    struct Head<T, const H: usize> {
        tp: usize,
        q: Vec<[T; H]>,
        k: Vec<[T; H]>,
        v: Vec<[T; H]>,
        /// K or V transposed, `[H, tp]`, zero-padded to `tp` (a multiple of 8) columns.
        mt: Vec<T>,
        dy: Vec<[T; H]>,
        /// dS, `[t, tp]`.
        ds: Vec<T>,
        row: Vec<T>,
    }

    impl<T: Float, const H: usize> Head<T, H> {
        fn new(t: usize) -> Self {
            let tp = t.next_multiple_of(L);
            Head {
                tp,
                q: vec![[T::ZERO; H]; t],
                k: vec![[T::ZERO; H]; t],
                v: vec![[T::ZERO; H]; t],
                mt: vec![T::ZERO; H * tp],
                dy: vec![[T::ZERO; H]; t],
                ds: vec![T::ZERO; t * tp],
                row: vec![T::ZERO; tp],
            }
        }

        /// Loads head `h` of one sequence's `qkv[t, 3C]`: Q, K, V rows, and the transpose of
        /// segment `transposed` (1 = K for the forward pass, 2 = V for the backward pass).
        fn load(&mut self, qkv_b: &[T], h: usize, c3: usize, transposed: usize) {
            let tp = self.tp;
            for (i, r) in qkv_b.chunks_exact(c3).enumerate() {
                let head = &r[h * 3 * H..(h + 1) * 3 * H];
                self.q[i].copy_from_slice(&head[..H]);
                self.k[i].copy_from_slice(&head[H..2 * H]);
                self.v[i].copy_from_slice(&head[2 * H..]);
                let seg = &head[transposed * H..(transposed + 1) * H];
                for e in 0..H {
                    self.mt[e * tp + i] = seg[e];
                }
            }
        }
    }

    /// `row[8 jb .. 8 (jb + G)] = a . mt[:, 8 jb .. 8 (jb + G)]`: G independent 8-lane sums.
    #[inline(always)]
    fn vec_mat_g<T: Float, const H: usize, const G: usize>(
        row: &mut [T],
        a: &[T; H],
        mt: &[T],
        tp: usize,
        jb: usize,
    ) {
        let mut acc = [[T::ZERO; L]; G];
        for e in 0..H {
            let ae = a[e];
            let base = e * tp + jb * L;
            for (g, accg) in acc.iter_mut().enumerate() {
                let m: &[T; L] = mt[base + g * L..base + g * L + L].try_into().unwrap();
                for l in 0..L {
                    accg[l] = ae.mul_add(m[l], accg[l]);
                }
            }
        }
        for (g, accg) in acc.iter().enumerate() {
            row[(jb + g) * L..(jb + g + 1) * L].copy_from_slice(accg);
        }
    }

    /// `row[0 .. 8 nb] = a . mt[:, 0 .. 8 nb]` for `mt[H, tp]`.
    #[inline(always)]
    fn vec_mat<T: Float, const H: usize>(
        row: &mut [T],
        a: &[T; H],
        mt: &[T],
        tp: usize,
        nb: usize,
    ) {
        let mut jb = 0;
        while jb < nb {
            match nb - jb {
                1 => vec_mat_g::<T, H, 1>(row, a, mt, tp, jb),
                2 => vec_mat_g::<T, H, 2>(row, a, mt, tp, jb),
                3 => vec_mat_g::<T, H, 3>(row, a, mt, tp, jb),
                _ => vec_mat_g::<T, H, 4>(row, a, mt, tp, jb),
            }
            jb += 4;
        }
    }

    /// `sum_j w[j] * rows[j]` with four independent accumulators.
    #[inline(always)]
    fn weighted_sum<T: Float, const H: usize>(w: &[T], rows: &[[T; H]]) -> [T; H] {
        let mut acc = [[T::ZERO; H]; 4];
        let n = w.len();
        let mut j = 0;
        while j + 4 <= n {
            for (u, accu) in acc.iter_mut().enumerate() {
                let (wj, r) = (w[j + u], &rows[j + u]);
                for e in 0..H {
                    accu[e] = wj.mul_add(r[e], accu[e]);
                }
            }
            j += 4;
        }
        for (wj, r) in w[j..].iter().zip(&rows[j..n]) {
            for e in 0..H {
                acc[0][e] = wj.mul_add(r[e], acc[0][e]);
            }
        }
        let mut out = [T::ZERO; H];
        for e in 0..H {
            out[e] = (acc[0][e] + acc[1][e]) + (acc[2][e] + acc[3][e]);
        }
        out
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
        let mut hd = Head::<T, H>::new(t);
        for b in 0..s.nseq {
            for h in 0..s.heads {
                hd.load(&qkv[b * t * c3..(b + 1) * t * c3], h, c3, 1);
                let p_bh = &mut probs[(b * s.heads + h) * t * t..(b * s.heads + h + 1) * t * t];
                for i in (0..t).step_by(stride) {
                    vec_mat(&mut hd.row, &hd.q[i], &hd.mt, hd.tp, (i + 1).div_ceil(L));
                    let mut mx = T::from_f64(f64::NEG_INFINITY);
                    for v in &hd.row[..=i] {
                        mx = mx.max(*v);
                    }
                    let prow = &mut p_bh[i * t..(i + 1) * t];
                    let mut sum = T::ZERO;
                    for (p, v) in prow[..=i].iter_mut().zip(&hd.row[..=i]) {
                        *p = ((*v - mx) * scale).exp();
                        sum += *p;
                    }
                    let inv = T::ONE / sum;
                    for p in prow[..=i].iter_mut() {
                        *p *= inv;
                    }
                    prow[i + 1..].fill(T::ZERO);
                    let acc = weighted_sum(&prow[..=i], &hd.v);
                    let o = (b * t + i) * cm + h * H;
                    out[o..o + H].copy_from_slice(&acc);
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
        let mut hd = Head::<T, H>::new(t);
        let tp = hd.tp;
        for b in 0..s.nseq {
            for h in 0..s.heads {
                hd.load(&qkv[b * t * c3..(b + 1) * t * c3], h, c3, 2);
                let p_bh = &probs[(b * s.heads + h) * t * t..(b * s.heads + h + 1) * t * t];
                let dqkv_b = &mut dqkv[b * t * c3..(b + 1) * t * c3];
                // Pass 1 over query rows: dP = dy V^T, dS = P (dP - sum P dP) / sqrt(c), dQ = dS K.
                for i in 0..t {
                    let d = &mut dqkv_b[i * c3 + h * 3 * H..i * c3 + h * 3 * H + H];
                    if i % stride != 0 {
                        d.fill(T::ZERO);
                        continue;
                    }
                    let o = (b * t + i) * cm + h * H;
                    hd.dy[i].copy_from_slice(&dout[o..o + H]);
                    vec_mat(&mut hd.row, &hd.dy[i], &hd.mt, tp, (i + 1).div_ceil(L));
                    let prow = &p_bh[i * t..=i * t + i];
                    let pdp = crate::reduce::dot(prow, &hd.row);
                    let dsrow = &mut hd.ds[i * tp..i * tp + i + 1];
                    for (ds, (p, x)) in dsrow.iter_mut().zip(prow.iter().zip(&hd.row)) {
                        *ds = *p * (*x - pdp) * scale;
                    }
                    d.copy_from_slice(&weighted_sum(dsrow, &hd.k));
                }
                // Pass 2 over key rows: dK_j = sum_i dS_ij Q_i, dV_j = sum_i P_ij dy_i.
                for j in 0..t {
                    let (mut dk0, mut dk1) = ([T::ZERO; H], [T::ZERO; H]);
                    let (mut dv0, mut dv1) = ([T::ZERO; H], [T::ZERO; H]);
                    let mut rows = (j.next_multiple_of(stride)..t).step_by(stride);
                    loop {
                        let Some(i0) = rows.next() else { break };
                        let (ds, p) = (hd.ds[i0 * tp + j], p_bh[i0 * t + j]);
                        let (q, dy) = (&hd.q[i0], &hd.dy[i0]);
                        for e in 0..H {
                            dk0[e] = ds.mul_add(q[e], dk0[e]);
                            dv0[e] = p.mul_add(dy[e], dv0[e]);
                        }
                        let Some(i1) = rows.next() else { break };
                        let (ds, p) = (hd.ds[i1 * tp + j], p_bh[i1 * t + j]);
                        let (q, dy) = (&hd.q[i1], &hd.dy[i1]);
                        for e in 0..H {
                            dk1[e] = ds.mul_add(q[e], dk1[e]);
                            dv1[e] = p.mul_add(dy[e], dv1[e]);
                        }
                    }
                    let base = j * c3 + h * 3 * H;
                    for e in 0..H {
                        dqkv_b[base + H + e] = dk0[e] + dk1[e];
                        dqkv_b[base + 2 * H + e] = dv0[e] + dv1[e];
                    }
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
