//! The weight gradient `dw[dout, din] += dy[n, dout]^T x[n, din]` for float32 with `din` a
//! multiple of 16 on AVX2, without packing: a tile of 6 output rows by 16 input columns stays
//! in 12 registers while the rows of `dy` and `x` stream past (6 broadcasts of
//! `dy[r, o..o+6]` times two vectors of `x[r, i..i+16]`), in blocks of 64 rows that stay in
//! L1 while every tile passes over them. `gemm`'s AVX2 kernels pack the transposed `dy` on
//! every call and ran this product ~10 % slower at the model's shapes (`examples/kernels`);
//! on AVX-512 they matched this kernel, so that path keeps `gemm`.

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
