//! The backward pass for a head size `H` known at compile time. Per (sequence, head) the attention is
//! five small matrix products over the active query rows, each a register-blocked loop: `G`
//! rows at a time, 8 keys (one SIMD vector) at a time, `[T; H]` rows in registers; blocks that
//! the causal mask zeroes entirely are skipped. Q, K, V and dY rows are read in place. All of
//! it is inlined into the public kernels, so it compiles for each code path `I`.

use super::{AttnShape, L, softmax};
use crate::Float;
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
fn scores<I: Isa, T: Float, const H: usize>(hd: &Head<T, H>, rows: Rows<'_, T, H>, s: &mut [T]) {
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
                let d = &mut dsbuf[a * tp..(a + 1) * tp];
                softmax::backward_row::<I, T>(d, &p_bh[a * tp..], hd.pos(a), scale);
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
