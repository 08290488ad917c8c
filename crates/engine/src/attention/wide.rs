//! Attention for float32 heads of 16 (the regression model's heads) on AVX-512 and AVX2,
//! written with intrinsics over [`V16`]: one head row is one 512-bit register or two 256-bit
//! ones, so each product is a block of G rows (or keys) times 16 lanes, G = 8 on AVX-512 (32
//! registers) and 4 on AVX2 (16), enough independent sums to keep both FMA ports busy. (The
//! generic kernels leave this to the compiler, whose vectorisation of larger blocks measured
//! slower, not faster.)
//!
//! Per (sequence, head), Q, K, V and dY are read in place and one of K or V is transposed into
//! zero-padded scratch. Forward: S = Q K^T by 16-key vectors straight into the saved softmax
//! rows, the softmax row by row (in [`V16::Chunk`]s: 8 keys on AVX2), Y = P V by G-row blocks.
//! Backward: dP = dY V^T, dS = P (dP - sum P dP) / sqrt(16) row by row, dQ = dS K by G-row
//! blocks, and dK = dS^T Q, then dV = P^T dY, by G-key blocks. Causal blocks that are all zero
//! are skipped.

use super::AttnShape;
use crate::v16::{Lanes, V16, Y, Z};

/// Head size of this kernel.
const H: usize = 16;

/// The forward pass on AVX-512 (as [`super::lanes::forward`] for `H = 16`, `T = f32`).
///
/// # Safety
/// The CPU has AVX-512F; the slices are the shapes `s` and `stride` give, with
/// `s.c_model / s.heads == 16`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward(
    out: &mut [f32],
    probs: &mut [f32],
    qkv: &[f32],
    s: AttnShape,
    stride: usize,
) {
    // SAFETY: the caller's.
    unsafe { forward_in::<Z, 8>(out, probs, qkv, s, stride) }
}

/// The forward pass on AVX2 (as [`forward`]).
///
/// # Safety
/// The CPU has AVX2 and FMA; the slices as for [`forward`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn forward_avx2(
    out: &mut [f32],
    probs: &mut [f32],
    qkv: &[f32],
    s: AttnShape,
    stride: usize,
) {
    // SAFETY: the caller's.
    unsafe { forward_in::<Y, 4>(out, probs, qkv, s, stride) }
}

/// The backward pass on AVX-512 (as [`super::fixed::backward`] for `H = 16`, `T = f32`).
///
/// # Safety
/// The CPU has AVX-512F; the slices are the shapes `s` and `stride` give (as the generic
/// kernel's), with `s.c_model / s.heads == 16`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    s: AttnShape,
    stride: usize,
) {
    // SAFETY: the caller's.
    unsafe { backward_in::<Z, 8>(dqkv, dout, qkv, probs, s, stride) }
}

/// The backward pass on AVX2 (as [`backward`]).
///
/// # Safety
/// The CPU has AVX2 and FMA; the slices as for [`backward`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn backward_avx2(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    s: AttnShape,
    stride: usize,
) {
    // SAFETY: the caller's.
    unsafe { backward_in::<Y, 4>(dqkv, dout, qkv, probs, s, stride) }
}
/// The forward pass in `S`, G rows per block.
#[inline(always)]
unsafe fn forward_in<S: V16, const G: usize>(
    out: &mut [f32],
    probs: &mut [f32],
    qkv: &[f32],
    s: AttnShape,
    stride: usize,
) {
    let (t, cm, heads) = (s.t, s.c_model, s.heads);
    let c3 = 3 * cm;
    let (na, tp, t16) = (s.active_rows(stride), s.tp(), t.next_multiple_of(H));
    assert!(
        out.len() >= s.nseq * t * cm
            && qkv.len() >= s.nseq * t * c3
            && probs.len() >= s.probs_len(stride)
            && cm == heads * H,
        "attention forward: buffers too small for {s:?}"
    );
    let mut kt = vec![0.0f32; H * t16];
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        let out_b = &mut out[b * t * cm..(b + 1) * t * cm];
        for h in 0..heads {
            let (oq, ok, ov, oy) = (h * 3 * H, h * 3 * H + H, h * 3 * H + 2 * H, h * H);
            let q = Rows::new(qkv_b, oq, stride * c3, na);
            let v = Rows::new(qkv_b, ov, c3, t);
            // SAFETY: `kt` holds 16 rows of t16; K rows j < t of this head lie in qkv_b.
            unsafe { transpose_rows::<S>(&mut kt, qkv_b, ok, c3, t) };
            let p_bh = &mut probs[(b * heads + h) * na * tp..][..na * tp];
            for a0 in (0..na).step_by(G) {
                let nkb = ((a0 + G - 1).min(na - 1) * stride) / H + 1;
                // SAFETY: rows a < na of p_bh, key blocks nkb * 16 <= t16 of kt.
                unsafe { scores_block::<S, G>(p_bh, q, &kt, (t16, tp), a0, nkb) };
                // SAFETY: rows a < na of p_bh hold tp >= a * stride + 1 scores.
                unsafe {
                    softmax_rows::<S::Chunk, G>(p_bh, tp, a0, (na - a0).min(G), stride, 0.25)
                };
                // Y = P V over the keys < t of the blocks (P is zero past each row's key).
                let nk = (nkb * H).min(t);
                // SAFETY: rows a < na of p_bh (tp apart, nk <= tp) and of the output.
                unsafe { weighted_rows::<S, G>(out_b, (cm, oy), p_bh, tp, na, v, nk, a0, stride) };
            }
        }
    }
}

/// Softmax of the score rows `a0..a0 + rows` of `p` (row `a`: keys `0..=a * stride`, scaled by
/// `scale`), zeros after each row's last key; as [`super::softmax::forward_row`], in chunks of
/// `C::N` keys, each step over all the rows before the next so that their dependency chains
/// overlap. Only a row's last chunk is masked, and no chunk past its last key is computed.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn softmax_rows<C: Lanes, const G: usize>(
    p: &mut [f32],
    tp: usize,
    a0: usize,
    rows: usize,
    stride: usize,
    scale: f32,
) {
    assert!(rows <= G && p.len() >= (a0 + rows) * tp && (a0 + rows - 1) * stride < tp);
    let w = C::N;
    let base = p.as_mut_ptr();
    // Row g: its start, its keys in whole chunks, and the live keys of its last chunk (0: none).
    let row = |g: usize| {
        let n = (a0 + g) * stride + 1;
        (unsafe { base.add((a0 + g) * tp) }, n / w * w, n % w)
    };
    // SAFETY (this block): whole chunks read and written are keys j0 + l < n <= tp; the last
    // chunk's lanes are keys < n (reads) or < tp (`kept`, writes) of rows a0 + g < a0 + rows.
    unsafe {
        let kept = |j0: usize| (tp - j0).min(w);
        let ninf = f32::NEG_INFINITY;
        let mut mx = [0.0f32; G];
        for (g, mx) in mx.iter_mut().enumerate().take(rows) {
            let (r, full, last) = row(g);
            let mut m = C::splat(ninf);
            for j0 in (0..full).step_by(w) {
                m = m.max(C::load(r.add(j0)));
            }
            if last > 0 {
                m = m.max(C::load_first_or(r.add(full), last, ninf));
            }
            *mx = m.reduce_max();
        }
        let scale = C::splat(scale);
        let mut sum = [0.0f32; G];
        for g in 0..rows {
            let ((r, full, last), m) = (row(g), C::splat(mx[g]));
            let mut acc = C::splat(0.0);
            for j0 in (0..full).step_by(w) {
                let y = C::load(r.add(j0)).sub(m).mul(scale).exp();
                acc = acc.add(y);
                y.store_first(r.add(j0), w);
            }
            if last > 0 {
                let x = C::load_first_or(r.add(full), last, 0.0);
                let y = x.sub(m).mul(scale).exp().keep_first(last);
                acc = acc.add(y);
                y.store_first(r.add(full), kept(full));
            }
            sum[g] = acc.reduce_add();
        }
        for g in 0..rows {
            let ((r, full, last), inv) = (row(g), C::splat(1.0 / sum[g]));
            let end = if last > 0 { full + last } else { full };
            for j0 in (0..end).step_by(w) {
                let y = C::load_first_or(r.add(j0), kept(j0), 0.0);
                y.mul(inv).store_first(r.add(j0), kept(j0));
            }
            // Keys from the chunk after the last live one to tp.
            for j0 in (end.next_multiple_of(w)..tp).step_by(w) {
                C::splat(0.0).store_first(r.add(j0), kept(j0));
            }
        }
    }
}

/// `p[a, kb*16 ..] = sum_e q[a, e] kt[e, kb*16 ..]` (raw scores) for the active rows of the
/// 8 from `a0` and key blocks `kb < nkb`, keys past `tp` not stored.
#[inline(always)]
unsafe fn scores_block<S: V16, const G: usize>(
    p: &mut [f32],
    q: Rows<'_>,
    kt: &[f32],
    (t16, tp): (usize, usize),
    a0: usize,
    nkb: usize,
) {
    let na = q.n;
    assert!(p.len() >= na * tp && kt.len() >= H * t16 && nkb * H <= t16);
    let (pp, ktp) = (p.as_mut_ptr(), kt.as_ptr());
    let qs: [*const f32; G] = std::array::from_fn(|g| q.ptr(a0 + g));
    for kb in 0..nkb {
        // SAFETY: in bounds by the assert above and `Rows`; stores keep to lanes
        // kb*16 + l < tp of rows a0 + g < na.
        unsafe {
            let mut acc = [S::zero(); G];
            for e in 0..H {
                let m = S::load(ktp.add(e * t16 + kb * H));
                for (g, acc) in acc.iter_mut().enumerate() {
                    *acc = S::fmadd(S::splat(*qs[g].add(e)), m, *acc);
                }
            }
            let live = (tp - kb * H).min(H);
            for (g, acc) in acc.iter().enumerate().take(na.saturating_sub(a0)) {
                acc.store_first(pp.add((a0 + g) * tp + kb * H), live);
            }
        }
    }
}

/// `out[a] = sum_{j < nk} w[a, j] x[j]` for the active rows `a < rows` of the 8 from `a0`
/// (`w` row-major, `ws` apart), stored at rows `a * stride` of the head's columns `off` of
/// `out` (`step` apart): the attention output Y = P V, and dQ = dS K.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weighted_rows<S: V16, const G: usize>(
    out: &mut [f32],
    (step, off): (usize, usize),
    w: &[f32],
    ws: usize,
    rows: usize,
    x: Rows<'_>,
    nk: usize,
    a0: usize,
    stride: usize,
) {
    let rows = rows.saturating_sub(a0).min(G);
    assert!(rows > 0 && nk <= ws && nk <= x.n && w.len() >= (a0 + rows - 1) * ws + nk);
    // Rows past the last active one read row a0's weights; they are never stored.
    let wr: [*const f32; G] = std::array::from_fn(|g| {
        // SAFETY: row a0 + g (or a0) holds nk weights, by the assert above.
        unsafe { w.as_ptr().add((a0 + if g < rows { g } else { 0 }) * ws) }
    });
    // SAFETY: keys j < nk of those rows; row j < x.n of x; each output row holds 16 floats.
    unsafe {
        let mut acc = [S::zero(); G];
        for j in 0..nk {
            let xj = S::load(x.ptr(j));
            for (g, acc) in acc.iter_mut().enumerate() {
                *acc = S::fmadd(S::splat(*wr[g].add(j)), xj, *acc);
            }
        }
        for (g, acc) in acc.iter().enumerate().take(rows) {
            let row = &mut out[(a0 + g) * stride * step + off..][..H];
            acc.store(row.as_mut_ptr());
        }
    }
}

/// The backward pass in `S`, G rows per block.
#[inline(always)]
unsafe fn backward_in<S: V16, const G: usize>(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    s: AttnShape,
    stride: usize,
) {
    let (t, cm, heads) = (s.t, s.c_model, s.heads);
    let c3 = 3 * cm;
    let (na, tp) = (s.active_rows(stride), s.tp());
    let (t16, na8) = (t.next_multiple_of(H), na.next_multiple_of(G));
    assert!(
        dqkv.len() >= s.nseq * t * c3
            && qkv.len() >= s.nseq * t * c3
            && dout.len() >= s.nseq * t * cm
            && probs.len() >= s.probs_len(stride)
            && cm == heads * H,
        "attention backward: buffers too small for {s:?}"
    );
    // Zero padding (keys past t) is written once and never overwritten.
    let mut vt = vec![0.0f32; H * t16];
    let mut ds = vec![0.0f32; na8 * t16];
    // SAFETY: the caller's target features.
    let scale = unsafe { S::splat(0.25) }; // 1 / sqrt(16)
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        let dout_b = &dout[b * t * cm..(b + 1) * t * cm];
        let dqkv_b = &mut dqkv[b * t * c3..(b + 1) * t * c3];
        for h in 0..heads {
            let (oq, ok, ov, oy) = (h * 3 * H, h * 3 * H + H, h * 3 * H + 2 * H, h * H);
            // Rows of Q (active), K, V and dY (active) of this head.
            let q = Rows::new(qkv_b, oq, stride * c3, na);
            let k = Rows::new(qkv_b, ok, c3, t);
            let dy = Rows::new(dout_b, oy, stride * cm, na);
            // SAFETY: `vt` holds 16 rows of t16; V rows j < t of this head lie in qkv_b.
            unsafe { transpose_rows::<S>(&mut vt, qkv_b, ov, c3, t) };
            let p_bh = &probs[(b * heads + h) * na * tp..][..na * tp];
            for a0 in (0..na).step_by(G) {
                // Keys blocks of 16 up to the block's last query position.
                let nkb = ((a0 + G - 1).min(na - 1) * stride) / H + 1;
                // SAFETY: the scratch holds na8 rows of t16 keys; nkb * 16 <= t16.
                unsafe {
                    dp_block::<S, G>(&mut ds, dy, &vt, t16, a0, nkb);
                    for a in a0..(a0 + G).min(na) {
                        ds_row::<S>(&mut ds[a * t16..][..nkb * H], &p_bh[a * tp..][..tp], scale);
                    }
                    // dQ = dS K over the keys < t of the blocks (dS is zero past t).
                    let nk = (nkb * H).min(t);
                    weighted_rows::<S, G>(dqkv_b, (c3, oq), &ds, t16, na, k, nk, a0, stride);
                }
            }
            if stride > 1 {
                for i in (0..t).filter(|i| i % stride != 0) {
                    dqkv_b[i * c3 + oq..][..H].fill(0.0);
                }
            }
            for j0 in (0..t).step_by(G) {
                // SAFETY: rows a < na of ds, qs, dys and p_bh; keys j0..j0+8 <= tp, t16.
                unsafe {
                    dkv_block::<S, G>(
                        dqkv_b,
                        &ds,
                        q,
                        dy,
                        p_bh,
                        (t, t16, tp),
                        j0,
                        stride,
                        (c3, ok, ov),
                    )
                };
            }
        }
    }
}

/// `n` rows of 16 floats, `step` apart from `off` in `data`; rows past `n` read as zeros.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    off: usize,
    step: usize,
    n: usize,
}

static ZEROS: [f32; H] = [0.0; H];

impl<'a> Rows<'a> {
    fn new(data: &'a [f32], off: usize, step: usize, n: usize) -> Self {
        assert!(n == 0 || data.len() >= off + (n - 1) * step + H);
        Rows { data, off, step, n }
    }

    /// Row `r` (zeros past `n`).
    #[inline(always)]
    fn ptr(&self, r: usize) -> *const f32 {
        if r < self.n {
            // SAFETY: in bounds by the assert in `new`.
            unsafe { self.data.as_ptr().add(self.off + r * self.step) }
        } else {
            ZEROS.as_ptr()
        }
    }
}

/// `vt[e, j] = x[j, e]` for keys `j < t` (blocks of 16), row j of x at `j * c3 + ov` of
/// `qkv_b`; keys past t get zeros.
#[inline(always)]
unsafe fn transpose_rows<S: V16>(vt: &mut [f32], qkv_b: &[f32], ov: usize, c3: usize, t: usize) {
    let t16 = t.next_multiple_of(H);
    assert!(vt.len() >= H * t16 && t > 0 && qkv_b.len() >= (t - 1) * c3 + ov + H);
    assert!(c3 * H < i32::MAX as usize);
    for j0 in (0..t).step_by(H) {
        let live = (t - j0).min(H);
        // SAFETY: rows l < live are V rows j0 + l < t, in qkv_b by the assert; vt's rows
        // e < 16 hold keys j0..j0 + 16 <= t16.
        unsafe {
            S::transpose16(
                qkv_b.as_ptr().add(j0 * c3 + ov),
                c3,
                live,
                vt.as_mut_ptr().add(j0),
                t16,
            )
        };
    }
}

/// `ds[a, kb*16 ..][..16] = sum_e dy[a, e] vt[e, kb*16 ..]` for the 8 rows from `a0` and key
/// blocks `kb < nkb`.
#[inline(always)]
unsafe fn dp_block<S: V16, const G: usize>(
    ds: &mut [f32],
    dy: Rows<'_>,
    vt: &[f32],
    t16: usize,
    a0: usize,
    nkb: usize,
) {
    assert!(ds.len() >= (a0 + G) * t16 && nkb * H <= t16 && vt.len() >= H * t16);
    let (ds, vt) = (ds.as_mut_ptr(), vt.as_ptr());
    let ys: [*const f32; G] = std::array::from_fn(|g| dy.ptr(a0 + g));
    for kb in 0..nkb {
        // SAFETY: in bounds by the assert above.
        unsafe {
            let mut acc = [S::zero(); G];
            for e in 0..H {
                let m = S::load(vt.add(e * t16 + kb * H));
                for (g, acc) in acc.iter_mut().enumerate() {
                    *acc = S::fmadd(S::splat(*ys[g].add(e)), m, *acc);
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                acc.store(ds.add((a0 + g) * t16 + kb * H));
            }
        }
    }
}

/// One row of the softmax backward: `d <- p * (d - sum(p * d)) * scale` over `d`'s key blocks;
/// `p` is the row of `tp` probabilities (zeros past the query), read as zeros past `tp`.
#[inline(always)]
unsafe fn ds_row<S: V16>(d: &mut [f32], p: &[f32], scale: S) {
    let p_at = |j0: usize| {
        let live = p.len().saturating_sub(j0).min(H);
        // SAFETY: the lanes read are elements j0 + l < p.len().
        unsafe { S::load_first(p.as_ptr().add(j0.min(p.len())), live) }
    };
    // SAFETY: d.len() is a multiple of 16.
    unsafe {
        let mut dot = S::zero();
        for j0 in (0..d.len()).step_by(H) {
            dot = S::fmadd(p_at(j0), S::load(d.as_ptr().add(j0)), dot);
        }
        let dot = S::splat(dot.reduce_add());
        for j0 in (0..d.len()).step_by(H) {
            let x = S::load(d.as_ptr().add(j0));
            p_at(j0)
                .mul(x.sub(dot))
                .mul(scale)
                .store(d.as_mut_ptr().add(j0));
        }
    }
}

/// dK and dV of the 8 keys from `j0`: `sum_a ds[a, j] q[a]` and `sum_a p[a, j] dy[a]` over the
/// rows that see them (`a * stride >= j`), stored at rows `j < t`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dkv_block<S: V16, const G: usize>(
    dqkv_b: &mut [f32],
    ds: &[f32],
    q: Rows<'_>,
    dy: Rows<'_>,
    p: &[f32],
    (t, t16, tp): (usize, usize, usize),
    j0: usize,
    stride: usize,
    (c3, ok, ov): (usize, usize, usize),
) {
    let na = q.n;
    assert!(ds.len() >= na * t16 && dy.n == na && p.len() >= na * tp && j0 + G <= tp.min(t16));
    let (dsp, pp) = (ds.as_ptr(), p.as_ptr());
    // One pass for dK, one for dV: together their 2 G sums fill all of AVX2's 16 registers,
    // and the compiler spilled them inside the loop.
    for (w, ws, x, off) in [(dsp, t16, q, ok), (pp, tp, dy, ov)] {
        // SAFETY: in bounds by the assert above; the key and value columns of a row hold 16
        // floats.
        unsafe {
            let mut acc = [S::zero(); G];
            for a in j0.div_ceil(stride)..na {
                let x = S::load(x.ptr(a));
                for (g, acc) in acc.iter_mut().enumerate() {
                    *acc = S::fmadd(S::splat(*w.add(a * ws + j0 + g)), x, *acc);
                }
            }
            for (g, acc) in acc.iter().enumerate().take(t - j0) {
                acc.store(dqkv_b[(j0 + g) * c3 + off..][..H].as_mut_ptr());
            }
        }
    }
}
