//! The weight gradient `dw[dout, din] += dy[n, dout]^T x[n, din]` for float32 with `din` a
//! multiple of 16 on AVX2, without packing: a tile of 6 output rows by 16 input columns stays
//! in 12 registers while the rows of `dy` and `x` stream past (6 broadcasts of
//! `dy[r, o..o+6]` times two vectors of `x[r, i..i+16]`), in blocks of 64 rows that stay in
//! L1 while every tile passes over them. `gemm`'s AVX2 kernels pack the transposed `dy` on
//! every call and ran this product ~10 % slower at the model's shapes (`examples/kernels`);
//! on AVX-512 they matched this kernel, so that path keeps `gemm`. The layer's forward and
//! input gradient run on the same tile with the operands' roles turned ([`rows_avx2`]).

use crate::v16::{V16, Y};

/// Lanes of one [`V16`].
const W: usize = 16;

/// Output rows per tile.
const G: usize = 6;

/// Rows of `dy` and `x` per block (32 and 128 measured slower on AVX2).
const R: usize = 64;

/// `dw += dy^T x` on AVX2.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dw_avx2(dw: &mut [f32], dy: &[f32], x: &[f32], n: usize, din: usize) {
    assert!(din % W == 0 && din > 0, "wide dw: din = {din}");
    let dout = dw.len() / din;
    assert!(
        dw.len() == dout * din && dy.len() >= n * dout && x.len() >= n * din,
        "wide dw: buffers too small for n = {n}, din = {din}, dout = {dout}"
    );
    for r0 in (0..n).step_by(R) {
        let rn = (n - r0).min(R);
        let (dy, x) = (&dy[r0 * dout..], &x[r0 * din..]);
        for o0 in (0..dout).step_by(G) {
            for i0 in (0..din).step_by(W) {
                let at = (&mut *dw, dy, x, (rn, din, dout), (o0, i0));
                // SAFETY: rows o0..o0+g <= dout, columns i0..i0+16 <= din and rows
                // r0..r0+rn <= n, by the asserts; the CPU's features are the caller's.
                unsafe {
                    match dout - o0 {
                        1 => tile::<Y, 1>(at),
                        2 => tile::<Y, 2>(at),
                        3 => tile::<Y, 3>(at),
                        4 => tile::<Y, 4>(at),
                        5 => tile::<Y, 5>(at),
                        _ => tile::<Y, G>(at),
                    }
                }
            }
        }
    }
}

/// A tile's operands: `(dw, dy, x, (rows, din, dout), (o0, i0))`.
type Tile<'a> = (
    &'a mut [f32],
    &'a [f32],
    &'a [f32],
    (usize, usize, usize),
    (usize, usize),
);

/// `dw[o0..o0+GG, i0..i0+16] += sum_r dy[r, o0..]^T x[r, i0..]` over the block's rows, summed
/// in order onto the tile's current values.
#[inline(always)]
unsafe fn tile<S: V16, const GG: usize>((dw, dy, x, (n, din, dout), (o0, i0)): Tile<'_>) {
    let (dwp, dyp, xp) = (dw.as_mut_ptr(), dy.as_ptr(), x.as_ptr());
    // SAFETY: the caller's bounds.
    unsafe {
        let mut acc: [S; GG] = std::array::from_fn(|g| S::load(dwp.add((o0 + g) * din + i0)));
        for r in 0..n {
            let xr = S::load(xp.add(r * din + i0));
            let yr = dyp.add(r * dout + o0);
            for (g, a) in acc.iter_mut().enumerate() {
                *a = S::fmadd(S::splat(*yr.add(g)), xr, *a);
            }
        }
        for (g, a) in acc.iter().enumerate() {
            a.store(dwp.add((o0 + g) * din + i0));
        }
    }
}

/// `y[n, m] (= init +) a[n, k] @ b[k, m]` for float32 with `m` a multiple of 16 on AVX2,
/// without packing: a tile of 6 rows of `y` by 16 columns stays in 12 registers while `k`
/// runs (6 broadcasts of `a[r, kk]` times two vectors of `b[kk, j..j+16]`), as [`dw_avx2`]
/// with the roles of the operands turned. `init` is the bias row, or `y` itself
/// (`accumulate`), or zero; each of `adds` (`[n, m]`, at most [`MAX_ADDS`]) is added to the
/// finished tile before it is stored (a residual sum fused into the product). The layer's forward takes `b = w^T` (a transposed copy of the
/// weight) and its input gradient `b = w` as stored; `gemm` packed both operands on every
/// call, which was most of its overhead at these shapes.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows_avx2(
    y: &mut [f32],
    a: &[f32],
    b: &[f32],
    (n, k, m): (usize, usize, usize),
    bias: Option<&[f32]>,
    accumulate: bool,
    adds: &[&[f32]],
) {
    assert!(m % W == 0 && m > 0, "wide rows: m = {m}");
    assert!(
        y.len() >= n * m
            && a.len() >= n * k
            && b.len() >= k * m
            && adds.len() <= MAX_ADDS
            && adds.iter().all(|x| x.len() >= n * m),
        "wide rows: buffers too small for n = {n}, k = {k}, m = {m}"
    );
    let mut add_ptrs = [std::ptr::null::<f32>(); MAX_ADDS];
    for (p, x) in add_ptrs.iter_mut().zip(adds) {
        *p = x.as_ptr();
    }
    let adds = &add_ptrs[..adds.len()];
    assert!(bias.is_none_or(|b| b.len() >= m) && !(accumulate && bias.is_some()));
    let init = match (bias, accumulate) {
        (Some(b), _) => Init::Bias(b.as_ptr()),
        (None, true) => Init::Dst,
        (None, false) => Init::Zero,
    };
    for r0 in (0..n).step_by(G) {
        for j0 in (0..m).step_by(W) {
            let at = (&mut *y, a, b, (k, m), (r0, j0), init, adds);
            // SAFETY: rows r0..r0+g <= n, columns j0..j0+16 <= m, by the asserts; the CPU's
            // features are the caller's.
            unsafe {
                match n - r0 {
                    1 => rows_tile::<Y, 1>(at),
                    2 => rows_tile::<Y, 2>(at),
                    3 => rows_tile::<Y, 3>(at),
                    4 => rows_tile::<Y, 4>(at),
                    5 => rows_tile::<Y, 5>(at),
                    _ => rows_tile::<Y, G>(at),
                }
            }
        }
    }
}

/// `wt[din, dout] = w[dout, din]^T` on AVX2, in 16 x 16 blocks (register transposes) where
/// both sizes are multiples of 16, element by element otherwise: the forward of
/// [`rows_avx2`] reads the weight transposed, and an element loop made this transpose
/// about 1.4 % of a training step.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transpose_avx2(wt: &mut [f32], w: &[f32], dout: usize, din: usize) {
    assert!(w.len() >= dout * din && wt.len() >= dout * din);
    if !dout.is_multiple_of(W) || !din.is_multiple_of(W) {
        for (o, row) in w[..dout * din].chunks_exact(din).enumerate() {
            for (i, v) in row.iter().enumerate() {
                wt[i * dout + o] = *v;
            }
        }
        return;
    }
    for o0 in (0..dout).step_by(W) {
        for i0 in (0..din).step_by(W) {
            // SAFETY: rows o0..o0+16 <= dout of w hold columns i0..i0+16 <= din; rows
            // i0..i0+16 of wt hold columns o0..o0+16, by the assert; the CPU's features are
            // the caller's.
            unsafe {
                Y::transpose16(
                    w.as_ptr().add(o0 * din + i0),
                    din,
                    W,
                    wt.as_mut_ptr().add(i0 * dout + o0),
                    dout,
                )
            };
        }
    }
}

/// What a tile of [`rows_avx2`] starts from.
#[derive(Clone, Copy)]
enum Init {
    Zero,
    Dst,
    Bias(*const f32),
}

/// A tile's operands: `(y, a, b, (k, m), (r0, j0), init, adds)`.
type RowsTile<'a> = (
    &'a mut [f32],
    &'a [f32],
    &'a [f32],
    (usize, usize),
    (usize, usize),
    Init,
    &'a [*const f32],
);

/// Most `[n, m]` buffers [`rows_avx2`] adds to its product.
pub(super) const MAX_ADDS: usize = 2;

/// `y[r0..r0+GG, j0..j0+16] = init + sum_kk a[r, kk] b[kk, j0..]`, summed in order of `kk`,
/// then plus each of `adds` in turn.
#[inline(always)]
unsafe fn rows_tile<S: V16, const GG: usize>(
    (y, a, b, (k, m), (r0, j0), init, adds): RowsTile<'_>,
) {
    let (yp, ap, bp) = (y.as_mut_ptr(), a.as_ptr(), b.as_ptr());
    // SAFETY: the caller's bounds.
    unsafe {
        let mut acc: [S; GG] = std::array::from_fn(|g| match init {
            Init::Zero => S::zero(),
            Init::Dst => S::load(yp.add((r0 + g) * m + j0)),
            Init::Bias(bias) => S::load(bias.add(j0)),
        });
        let ar: [*const f32; GG] = std::array::from_fn(|g| ap.add((r0 + g) * k));
        for kk in 0..k {
            let bk = S::load(bp.add(kk * m + j0));
            for (g, acc) in acc.iter_mut().enumerate() {
                *acc = S::fmadd(S::splat(*ar[g].add(kk)), bk, *acc);
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            let at = (r0 + g) * m + j0;
            let mut v = *acc;
            for x in adds {
                v = v.add(S::load(x.add(at)));
            }
            v.store(yp.add(at));
        }
    }
}
