//! Causal multi-head self-attention on a fused QKV projection, with the reference's layout:
//! head `h` reads Q from features `[h*3c, h*3c+c)`, K from `[h*3c+c, h*3c+2c)` and V from
//! `[h*3c+2c, (h+1)*3c)` of each `3C`-wide row, and writes its output to features `[h*c, (h+1)*c)`.
//!
//! Only every `stride`-th query position is computed (stride 2 when only the x positions'
//! outputs are read downstream). The softmax is kept for the backward pass as
//! `probs[nseq, heads, na, tp]`: `na = ceil(t / stride)` active query rows (row `a` is position
//! `a * stride`), `tp` = `t` rounded up to a multiple of 8, zero after the row's position.

/// Shapes of one attention call: `nseq` sequences of `t` tokens, width `c_model`, `heads` heads.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub nseq: usize,
    pub t: usize,
    pub c_model: usize,
    pub heads: usize,
}

const L: usize = 8;

impl AttnShape {
    fn head_size(&self) -> usize {
        self.c_model / self.heads
    }
    /// Padded row length of the saved softmax.
    pub fn tp(&self) -> usize {
        self.t.next_multiple_of(L)
    }
    /// Active query rows for a query stride.
    pub fn active_rows(&self, stride: usize) -> usize {
        self.t.div_ceil(stride)
    }
    /// Length of the `probs` buffer for a query stride.
    pub fn probs_len(&self, stride: usize) -> usize {
        self.nseq * self.heads * self.active_rows(stride) * self.tp()
    }
}

crate::multiversion! {
/// `out[nseq,t,C]` (active query rows only; other rows untouched) and the softmax `probs`
/// (layout in the module doc) from `qkv[nseq,t,3C]`. Scores are scaled by `1/sqrt(c)`.
pub fn attention_forward<I, T: Float>(
    out: &mut [T],
    probs: &mut [T],
    qkv: &[T],
    s: AttnShape,
    stride: usize,
) {
    assert!(
        probs.len() >= s.probs_len(stride),
        "attention: probs buffer too small"
    );
    if blocked(s, stride) {
        return long::forward::<I, T>(out, probs, qkv, s);
    }
    match s.head_size() {
        8 => fixed::forward::<I, T, 8>(out, probs, qkv, s, stride),
        16 => fixed::forward::<I, T, 16>(out, probs, qkv, s, stride),
        32 => fixed::forward::<I, T, 32>(out, probs, qkv, s, stride),
        64 => fixed::forward::<I, T, 64>(out, probs, qkv, s, stride),
        _ => reference::forward(out, probs, qkv, s, stride),
    }
}
}

crate::multiversion! {
/// Backward of `attention_forward`: overwrites `dqkv[nseq,t,3C]` from `dout[nseq,t,C]`
/// (only the active rows of `dout` are read).
pub fn attention_backward<I, T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    probs: &[T],
    s: AttnShape,
    stride: usize,
) {
    if blocked(s, stride) {
        return long::backward::<I, T>(dqkv, dout, qkv, probs, s);
    }
    match s.head_size() {
        8 => fixed::backward::<I, T, 8>(dqkv, dout, qkv, probs, s, stride),
        16 => fixed::backward::<I, T, 16>(dqkv, dout, qkv, probs, s, stride),
        32 => fixed::backward::<I, T, 32>(dqkv, dout, qkv, probs, s, stride),
        64 => fixed::backward::<I, T, 64>(dqkv, dout, qkv, probs, s, stride),
        _ => reference::backward(dqkv, dout, qkv, probs, s, stride),
    }
}
}

/// Plain loops for any head size: the path for unusual sizes and the tests' oracle.
mod reference;

/// Sequences at least this long (every query row) take the blocked-GEMM kernels of [`long`]
/// by default: the crossover `examples/kernels.rs attention` measures with AVX2 and AVX-512.
/// On the x86-64 baseline `gemm`'s scalar kernels lose to the short ones at every length.
pub const LONG_T: usize = 128;

static LONG_FROM: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(LONG_T);

/// Sets the sequence length from which the blocked-GEMM kernels run (for benchmarks that
/// time both kernels; results agree to rounding either way).
pub fn set_long_from(t: usize) {
    LONG_FROM.store(t, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a call of this shape takes the blocked-GEMM kernels.
fn blocked(s: AttnShape, stride: usize) -> bool {
    stride == 1
        && s.t >= LONG_FROM.load(std::sync::atomic::Ordering::Relaxed)
        && crate::simd::active() != crate::simd::Level::Baseline
}

mod long;

/// Kernels for a head size `H` known at compile time. Per (sequence, head) the attention is
/// five small matrix products over the active query rows, each a register-blocked loop: `G`
/// rows at a time, 8 keys (one SIMD vector) at a time, `[T; H]` rows in registers; blocks that
/// the causal mask zeroes entirely are skipped. Q, K, V and dY rows are read in place. All of
/// it is inlined into the public kernels, so it compiles for each code path `I`.
mod fixed {
    use super::{AttnShape, L};
    use crate::Float;
    use crate::reduce;
    use crate::simd::{Isa, fma};

    /// Rows `off + j * stride .. + H` of a row-major buffer, as `[T; H]`.
    #[derive(Clone, Copy)]
    struct Rows<'a, T, const H: usize> {
        data: &'a [T],
        stride: usize,
        off: usize,
    }

    impl<'a, T: Float, const H: usize> Rows<'a, T, H> {
        #[inline(always)]
        fn get(&self, j: usize) -> &'a [T; H] {
            let o = self.off + j * self.stride;
            self.data[o..o + H].try_into().unwrap()
        }
    }

    /// Geometry of one (sequence, head) problem and its scratch.
    struct Head<T, const H: usize> {
        t: usize,
        tp: usize,
        stride: usize,
        na: usize,
        /// K (forward) or V (backward) transposed, `[H, tp]`, zero-padded columns.
        mt: Vec<T>,
        /// dP / dS rows `[na, tp]`.
        ds: Vec<T>,
        out: Vec<[T; H]>,
        out2: Vec<[T; H]>,
    }

    impl<T: Float, const H: usize> Head<T, H> {
        #[inline(always)]
        fn new(s: AttnShape, stride: usize) -> Self {
            let (tp, na) = (s.tp(), s.active_rows(stride));
            Head {
                t: s.t,
                tp,
                stride,
                na,
                mt: vec![T::ZERO; H * tp],
                ds: vec![T::ZERO; na * tp],
                out: vec![[T::ZERO; H]; tp],
                out2: vec![[T::ZERO; H]; tp],
            }
        }

        #[inline(always)]
        fn pos(&self, a: usize) -> usize {
            a * self.stride
        }

        /// `mt[e, j] = rows[j][e]` for the sequence's `t` rows.
        #[inline(always)]
        fn transpose(&mut self, rows: Rows<'_, T, H>) {
            for j in 0..self.t {
                let r = rows.get(j);
                for e in 0..H {
                    self.mt[e * self.tp + j] = r[e];
                }
            }
        }
    }

    /// `out[a, 0..8 nb] = rows[a] . mt[:, 0..8 nb]` for the `G` rows `a0..a0+G`.
    #[inline(always)]
    fn abt_block<I: Isa, T: Float, const H: usize, const G: usize>(
        out: &mut [T],
        rows: Rows<'_, T, H>,
        mt: &[T],
        tp: usize,
        a0: usize,
        nb: usize,
    ) {
        let x: [&[T; H]; G] = std::array::from_fn(|g| rows.get(a0 + g));
        for jb in 0..nb {
            let mut acc = [[T::ZERO; L]; G];
            for e in 0..H {
                let m: &[T; L] = mt[e * tp + jb * L..e * tp + jb * L + L].try_into().unwrap();
                for g in 0..G {
                    let xe = x[g][e];
                    for l in 0..L {
                        acc[g][l] = fma::<I, T>(xe, m[l], acc[g][l]);
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
    fn wx_block<I: Isa, T: Float, const H: usize, const G: usize>(
        out: &mut [[T; H]],
        w: &[T],
        x: Rows<'_, T, H>,
        tp: usize,
        a0: usize,
        ncols: usize,
    ) {
        let mut acc = [[T::ZERO; H]; G];
        for j in 0..ncols {
            let xj = x.get(j);
            for g in 0..G {
                let wv = w[(a0 + g) * tp + j];
                for e in 0..H {
                    acc[g][e] = fma::<I, T>(wv, xj[e], acc[g][e]);
                }
            }
        }
        out[a0..a0 + G].copy_from_slice(&acc);
    }

    /// `out[j] = sum_{a >= a_start} w[a, j] x[a]` for the `G` keys `j0..j0+G`.
    #[inline(always)]
    fn wtx_block<I: Isa, T: Float, const H: usize, const G: usize>(
        out: &mut [[T; H]],
        w: &[T],
        x: Rows<'_, T, H>,
        tp: usize,
        na: usize,
        j0: usize,
        a_start: usize,
    ) {
        let mut acc = [[T::ZERO; H]; G];
        for a in a_start..na {
            let xa = x.get(a);
            let wr: &[T; G] = w[a * tp + j0..a * tp + j0 + G].try_into().unwrap();
            for g in 0..G {
                for e in 0..H {
                    acc[g][e] = fma::<I, T>(wr[g], xa[e], acc[g][e]);
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

    /// Dispatches `$f::<T, H, G>` for the block size `G` = `$g` (1 to 4).
    macro_rules! by_block {
        ($g:expr, $f:ident, $($arg:expr),*) => {
            match $g {
                1 => $f::<I, T, H, 1>($($arg),*),
                2 => $f::<I, T, H, 2>($($arg),*),
                3 => $f::<I, T, H, 3>($($arg),*),
                _ => $f::<I, T, H, 4>($($arg),*),
            }
        };
    }

    /// Scores `s[a, :] = rows[a] . mt` for every active row, up to each row block's last key.
    #[inline(always)]
    fn scores<I: Isa, T: Float, const H: usize>(
        hd: &Head<T, H>,
        rows: Rows<'_, T, H>,
        s: &mut [T],
    ) {
        let r = rows_per_block(H);
        let mut a0 = 0;
        while a0 < hd.na {
            let g = r.min(hd.na - a0);
            let nb = (hd.pos(a0 + g - 1) + 1).div_ceil(L);
            by_block!(g, abt_block, s, rows, &hd.mt, hd.tp, a0, nb);
            a0 += g;
        }
    }

    /// `out[a] = sum_j w[a, j] x[j]` over the causal prefix of each row block.
    #[inline(always)]
    fn weighted_rows<I: Isa, T: Float, const H: usize>(
        hd: &Head<T, H>,
        w: &[T],
        x: Rows<'_, T, H>,
        out: &mut [[T; H]],
    ) {
        let r = rows_per_block(H);
        let mut a0 = 0;
        while a0 < hd.na {
            let g = r.min(hd.na - a0);
            let ncols = hd.pos(a0 + g - 1) + 1;
            by_block!(g, wx_block, out, w, x, hd.tp, a0, ncols);
            a0 += g;
        }
    }

    /// `out[j] = sum_a w[a, j] x[a]` for every key `j < t` (rows with `pos(a) < j` hold zeros).
    #[inline(always)]
    fn weighted_cols<I: Isa, T: Float, const H: usize>(
        hd: &Head<T, H>,
        w: &[T],
        x: Rows<'_, T, H>,
        out: &mut [[T; H]],
    ) {
        let r = rows_per_block(H);
        let mut j0 = 0;
        while j0 < hd.t {
            let g = r.min(hd.t - j0);
            let a_start = j0.div_ceil(hd.stride);
            by_block!(g, wtx_block, out, w, x, hd.tp, hd.na, j0, a_start);
            j0 += g;
        }
    }

    #[inline(always)]
    pub(super) fn forward<I: Isa, T: Float, const H: usize>(
        out: &mut [T],
        probs: &mut [T],
        qkv: &[T],
        s: AttnShape,
        stride: usize,
    ) {
        let (t, c3, cm) = (s.t, 3 * s.c_model, s.c_model);
        let scale = T::from_f64(1.0 / (H as f64).sqrt());
        let mut hd = Head::<T, H>::new(s, stride);
        let (tp, na) = (hd.tp, hd.na);
        let mut obuf = std::mem::take(&mut hd.out);
        let ninf = T::from_f64(f64::NEG_INFINITY);
        for b in 0..s.nseq {
            let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
            for h in 0..s.heads {
                let q = Rows::<T, H> {
                    data: qkv_b,
                    stride: stride * c3,
                    off: h * 3 * H,
                };
                let k = Rows::<T, H> {
                    data: qkv_b,
                    stride: c3,
                    off: h * 3 * H + H,
                };
                let v = Rows::<T, H> {
                    data: qkv_b,
                    stride: c3,
                    off: h * 3 * H + 2 * H,
                };
                hd.transpose(k);
                let p_bh = &mut probs[(b * s.heads + h) * na * tp..(b * s.heads + h + 1) * na * tp];
                scores::<I, T, H>(&hd, q, p_bh);
                // Softmax per active row over whole 8-lane blocks; keys after the row masked.
                for a in 0..na {
                    let i = hd.pos(a);
                    let w = (i + 1).next_multiple_of(L);
                    let row = &mut p_bh[a * tp..(a + 1) * tp];
                    row[i + 1..w].fill(ninf);
                    let mx = reduce::max::<I, T>(&row[..w]);
                    for x in row[..w].iter_mut() {
                        *x = (*x - mx) * scale;
                    }
                    T::exp_in_place::<I>(&mut row[..w]);
                    row[i + 1..].fill(T::ZERO);
                    let inv = T::ONE / reduce::sum::<I, T>(&row[..w]);
                    for x in row[..w].iter_mut() {
                        *x *= inv;
                    }
                }
                weighted_rows::<I, T, H>(&hd, p_bh, v, &mut obuf);
                for a in 0..na {
                    let o = (b * t + hd.pos(a)) * cm + h * H;
                    out[o..o + H].copy_from_slice(&obuf[a]);
                }
            }
        }
    }

    #[inline(always)]
    pub(super) fn backward<I: Isa, T: Float, const H: usize>(
        dqkv: &mut [T],
        dout: &[T],
        qkv: &[T],
        probs: &[T],
        s: AttnShape,
        stride: usize,
    ) {
        let (t, c3, cm) = (s.t, 3 * s.c_model, s.c_model);
        let scale = T::from_f64(1.0 / (H as f64).sqrt());
        let mut hd = Head::<T, H>::new(s, stride);
        let (tp, na) = (hd.tp, hd.na);
        let mut dsbuf = std::mem::take(&mut hd.ds);
        let (mut obuf, mut obuf2) = (std::mem::take(&mut hd.out), std::mem::take(&mut hd.out2));
        for b in 0..s.nseq {
            let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
            let dout_b = &dout[b * t * cm..(b + 1) * t * cm];
            let dqkv_b = &mut dqkv[b * t * c3..(b + 1) * t * c3];
            for h in 0..s.heads {
                let q = Rows::<T, H> {
                    data: qkv_b,
                    stride: stride * c3,
                    off: h * 3 * H,
                };
                let k = Rows::<T, H> {
                    data: qkv_b,
                    stride: c3,
                    off: h * 3 * H + H,
                };
                let v = Rows::<T, H> {
                    data: qkv_b,
                    stride: c3,
                    off: h * 3 * H + 2 * H,
                };
                let dy = Rows::<T, H> {
                    data: dout_b,
                    stride: stride * cm,
                    off: h * H,
                };
                hd.transpose(v);
                let p_bh = &probs[(b * s.heads + h) * na * tp..(b * s.heads + h + 1) * na * tp];
                // dP = dy V^T ; dS = P (dP - sum_j P dP) / sqrt(c)
                scores::<I, T, H>(&hd, dy, &mut dsbuf);
                for a in 0..na {
                    let w = (hd.pos(a) + 1).next_multiple_of(L);
                    let (p, d) = (&p_bh[a * tp..a * tp + w], &mut dsbuf[a * tp..(a + 1) * tp]);
                    let pdp = reduce::dot::<I, T>(p, &d[..w]);
                    for (dv, pv) in d[..w].iter_mut().zip(p) {
                        *dv = *pv * (*dv - pdp) * scale;
                    }
                    d[w..].fill(T::ZERO);
                }
                // dQ = dS K (active rows; other rows get zero) ; dK = dS^T Q ; dV = P^T dy
                weighted_rows::<I, T, H>(&hd, &dsbuf, k, &mut obuf);
                for i in 0..t {
                    let d = &mut dqkv_b[i * c3 + h * 3 * H..i * c3 + h * 3 * H + H];
                    if i % stride == 0 {
                        d.copy_from_slice(&obuf[i / stride]);
                    } else {
                        d.fill(T::ZERO);
                    }
                }
                weighted_cols::<I, T, H>(&hd, &dsbuf, q, &mut obuf);
                weighted_cols::<I, T, H>(&hd, p_bh, dy, &mut obuf2);
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
    fn specialised_kernels_equal_the_reference_path() {
        for level in crate::simd::supported() {
            crate::simd::with_level(level, specialised_equal_reference).unwrap();
        }
    }

    fn specialised_equal_reference() {
        for (stride, t) in [
            (1usize, 13usize),
            (2, 16),
            (1, 32),
            (2, 7),
            (1, LONG_T + 77),
            (1, 2 * LONG_T + 3),
        ] {
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
            let (mut p1, mut p2) = (
                vec![0.0; s.probs_len(stride)],
                vec![0.0; s.probs_len(stride)],
            );
            attention_forward(&mut o1, &mut p1, &qkv, s, stride);
            reference::forward(&mut o2, &mut p2, &qkv, s, stride);
            let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
            let level = crate::simd::active();
            assert!(
                close(&o1, &o2) && close(&p1, &p2),
                "forward, stride {stride} t {t}, {level}"
            );
            let (mut d1, mut d2) = (vec![1.0; n * 192], vec![1.0; n * 192]);
            attention_backward(&mut d1, &dout, &qkv, &p1, s, stride);
            reference::backward(&mut d2, &dout, &qkv, &p2, s, stride);
            assert!(close(&d1, &d2), "backward, stride {stride} t {t}, {level}");
        }
    }

    #[test]
    fn rows_are_a_causal_softmax() {
        let s = AttnShape {
            nseq: 1,
            t: 5,
            c_model: 6,
            heads: 2,
        };
        let qkv: Vec<f64> = (0..5 * 18).map(|i| (i as f64 * 0.3).cos()).collect();
        let mut out = vec![0.0; 5 * 6];
        let mut p = vec![0.0; s.probs_len(1)];
        attention_forward(&mut out, &mut p, &qkv, s, 1);
        for row in 0..2 * 5 {
            let r = &p[row * s.tp()..(row + 1) * s.tp()];
            let i = row % 5;
            assert!((r[..=i].iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(r[i + 1..].iter().all(|v| *v == 0.0));
        }
        // The first query attends only to itself: its output is V of position 0.
        assert!((out[0] - qkv[6]).abs() < 1e-12 && (out[3] - qkv[9 + 6]).abs() < 1e-12);
    }
}
