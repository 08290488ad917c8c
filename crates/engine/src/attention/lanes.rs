//! Short sequences (the regression model's tens of tokens): `N` sequences side by side, one per
//! SIMD lane. Every product and the softmax are then vertical vector operations over exactly the
//! causal keys: no masked lanes, no horizontal reductions, no transposes inside the loops. Per
//! head, Q, K and V of a block of `N` sequences are gathered once into lane-major scratch
//! (`[rows][H]` vectors), and the outputs and the softmax scattered back to their row-major
//! buffers. Lanes past the last sequence of a partial block compute on zeros and are never
//! written out.
//!
//! This is the forward pass only: the same layout for the backward pass cost more in moving
//! Q, K, V, dY in and dQ, dK, dV out than it saved, so the backward (`fixed`) reads `probs`
//! in place, row by row.

use super::{AttnShape, N};
use crate::Float;
use crate::simd::{Isa, fma};

/// One value per sequence of the block.
type V<T> = [T; N];

/// Head features per register block of the weighted sums.
const E: usize = 4;

#[inline(always)]
fn vfma<I: Isa, T: Float>(acc: &mut V<T>, a: &V<T>, b: &V<T>) {
    for l in 0..N {
        acc[l] = fma::<I, T>(a[l], b[l], acc[l]);
    }
}

/// Where one head's rows of a block of sequences live in a row-major `[nseq, t, width]` buffer:
/// row `r` of sequence `b` starts at `b * seq + r * row + off`.
#[derive(Clone, Copy)]
struct Place {
    seq: usize,
    row: usize,
    off: usize,
}

/// `dst[r][e][l] = src[row r of sequence b0 + l][e]` for `r < dst.len()`, `l < nb`.
#[inline(always)]
fn gather<I: Isa, T: Float, const H: usize>(
    dst: &mut [[V<T>; H]],
    src: &[T],
    at: Place,
    b0: usize,
    nb: usize,
) {
    for (r, d) in dst.iter_mut().enumerate() {
        let o = b0 * at.seq + r * at.row + at.off;
        if nb == N && tiles::<I, T>(H) {
            let s = &src[o..][..(N - 1) * at.seq + H];
            // SAFETY: `tiles` checked AVX and f32; `s` holds the N rows of H, `d` is [H][N].
            unsafe { rows_to_lanes(s.as_ptr().cast(), at.seq, d.as_mut_ptr().cast(), H) };
            continue;
        }
        for l in 0..nb {
            let x: &[T; H] = src[o + l * at.seq..][..H].try_into().unwrap();
            for e in 0..H {
                d[e][l] = x[e];
            }
        }
        // Lanes past the block's last sequence: zeros, not stale scratch (no NaN, no subnormal).
        for de in d.iter_mut() {
            de[nb..].fill(T::ZERO);
        }
    }
}

/// The inverse of [`gather`] for rows `w` wide: `src` is `[rows][w]` vectors, and lanes
/// `l < nb` of row `r` go to `dst[row r of sequence b0 + l][0..w]`.
#[inline(always)]
fn scatter<I: Isa, T: Float>(
    dst: &mut [T],
    src: &[V<T>],
    w: usize,
    at: Place,
    b0: usize,
    nb: usize,
) {
    for (r, s) in src.chunks_exact(w).enumerate() {
        let o = b0 * at.seq + r * at.row + at.off;
        if nb == N && tiles::<I, T>(w) {
            let d = &mut dst[o..][..(N - 1) * at.seq + w];
            // SAFETY: `tiles` checked AVX and f32; `d` holds the N rows of w, `s` is [w][N].
            unsafe { lanes_to_rows(s.as_ptr().cast(), d.as_mut_ptr().cast(), at.seq, w) };
            continue;
        }
        for l in 0..nb {
            let x = &mut dst[o + l * at.seq..][..w];
            for e in 0..w {
                x[e] = s[e][l];
            }
        }
    }
}

/// Whether gathers and scatters move 8 x 8 tiles with AVX shuffles (f32 on AVX2 or AVX-512).
#[inline(always)]
fn tiles<I: Isa, T: Float>(w: usize) -> bool {
    I::AVX && w % 8 == 0 && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
}

/// `dst[e][l] = src[l * ss + e]` for `l < N`, `e < h` (`dst` is `[h][N]`), by 8 x 8 tiles.
///
/// # Safety
/// The CPU has AVX; `h` is a multiple of 8; `src` and `dst` are valid for what they address.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows_to_lanes(src: *const f32, ss: usize, dst: *mut f32, h: usize) {
    for l0 in (0..N).step_by(8) {
        for e0 in (0..h).step_by(8) {
            // SAFETY: the caller's contract.
            unsafe { tile8(src.add(l0 * ss + e0), ss, dst.add(e0 * N + l0), N) };
        }
    }
}

/// The inverse of [`rows_to_lanes`]: `dst[l * ds + e] = src[e][l]`.
///
/// # Safety
/// As [`rows_to_lanes`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn lanes_to_rows(src: *const f32, dst: *mut f32, ds: usize, h: usize) {
    for l0 in (0..N).step_by(8) {
        for e0 in (0..h).step_by(8) {
            // SAFETY: the caller's contract.
            unsafe { tile8(src.add(e0 * N + l0), N, dst.add(l0 * ds + e0), ds) };
        }
    }
}

/// `dst[e * ds + l] = src[l * ss + e]` for `l, e < 8`: an 8 x 8 transpose in registers.
///
/// # Safety
/// The CPU has AVX; `src` and `dst` are valid for the 8 rows of 8 they address.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        // No closures here: they would not be compiled with AVX, and each intrinsic would
        // become a call.
        let mut r = [_mm256_setzero_ps(); 8];
        for (l, rl) in r.iter_mut().enumerate() {
            *rl = _mm256_loadu_ps(src.add(l * ss));
        }
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
        ];
        let u = [
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        // Columns e and e + 4 of rows 0-3 (a) and 4-7 (b).
        let a = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        ];
        let b = [
            _mm256_shuffle_ps::<0x44>(u[0], u[2]),
            _mm256_shuffle_ps::<0xEE>(u[0], u[2]),
            _mm256_shuffle_ps::<0x44>(u[1], u[3]),
            _mm256_shuffle_ps::<0xEE>(u[1], u[3]),
        ];
        for e in 0..4 {
            _mm256_storeu_ps(dst.add(e * ds), _mm256_permute2f128_ps::<0x20>(a[e], b[e]));
            _mm256_storeu_ps(
                dst.add((e + 4) * ds),
                _mm256_permute2f128_ps::<0x31>(a[e], b[e]),
            );
        }
    }
}

/// Never called: `tiles` is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn rows_to_lanes(_: *const f32, _: usize, _: *mut f32, _: usize) {
    unreachable!("AVX tiles off x86-64")
}

/// Never called: `tiles` is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn lanes_to_rows(_: *const f32, _: *mut f32, _: usize, _: usize) {
    unreachable!("AVX tiles off x86-64")
}

/// `out[j] = x . m[j]` (dot products over the `H` features) for `j < out.len()`.
#[inline(always)]
fn dots<I: Isa, T: Float, const H: usize>(out: &mut [V<T>], x: &[V<T>; H], m: &[[V<T>; H]]) {
    let n = out.len();
    let mut j = 0;
    while j + 4 <= n {
        let mut acc = [[T::ZERO; N]; 4];
        for e in 0..H {
            for g in 0..4 {
                vfma::<I, T>(&mut acc[g], &x[e], &m[j + g][e]);
            }
        }
        out[j..j + 4].copy_from_slice(&acc);
        j += 4;
    }
    for (o, mj) in out[j..].iter_mut().zip(&m[j..]) {
        let mut acc = [T::ZERO; N];
        for e in 0..H {
            vfma::<I, T>(&mut acc, &x[e], &mj[e]);
        }
        *o = acc;
    }
}

/// `out = sum_j w[j] m[j]` over `j < w.len()`.
#[inline(always)]
fn weighted<I: Isa, T: Float, const H: usize>(out: &mut [V<T>; H], w: &[V<T>], m: &[[V<T>; H]]) {
    for e0 in (0..H).step_by(E) {
        let mut acc = [[T::ZERO; N]; E];
        for (wj, mj) in w.iter().zip(m) {
            for g in 0..E {
                vfma::<I, T>(&mut acc[g], wj, &mj[e0 + g]);
            }
        }
        out[e0..e0 + E].copy_from_slice(&acc);
    }
}

/// Softmax over the row's keys (all of `row`), lane by lane, of the scores scaled by `scale`.
#[inline(always)]
fn softmax<I: Isa, T: Float>(row: &mut [V<T>], scale: T) {
    let mut m = row[0];
    for r in &row[1..] {
        for l in 0..N {
            m[l] = if r[l] > m[l] { r[l] } else { m[l] };
        }
    }
    let mut sum = [T::ZERO; N];
    for r in row.iter_mut() {
        for l in 0..N {
            r[l] = (r[l] - m[l]) * scale;
        }
        T::exp_in_place::<I>(r);
        for l in 0..N {
            sum[l] += r[l];
        }
    }
    let mut inv = [T::ZERO; N];
    for l in 0..N {
        inv[l] = T::ONE / sum[l];
    }
    for r in row.iter_mut() {
        for l in 0..N {
            r[l] *= inv[l];
        }
    }
}

thread_local! {
    /// Scratch reused across calls (as 8-byte words), so that no call allocates and faults in
    /// fresh pages.
    static POOL: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// This thread's scratch, taken from the pool for one call and given back on drop. (A guard,
/// not a closure: a closure would not be compiled for the calling kernel's code path.)
struct Scratch(Vec<f64>);

impl Scratch {
    #[inline(always)]
    fn take<T>(n: usize) -> Self {
        let mut buf = POOL.take();
        let words = (n * std::mem::size_of::<V<T>>()).div_ceil(8);
        if buf.len() < words {
            buf.resize(words, 0.0);
        }
        Scratch(buf)
    }

    /// The first `n` vectors (stale contents).
    #[inline(always)]
    fn vectors<T: Float>(&mut self, n: usize) -> &mut [V<T>] {
        // SAFETY: f64 is at least as aligned as the engine's floats (f32, f64), for which every
        // bit pattern is a value.
        let (pre, v, _) = unsafe { self.0.align_to_mut::<V<T>>() };
        assert!(pre.is_empty() && v.len() >= n);
        &mut v[..n]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        POOL.set(std::mem::take(&mut self.0));
    }
}

/// Splits scratch into lane-major head rows, `[rows[0]][H]`, `[rows[1]][H]`, ..., `SKEW`
/// vectors apart, and the rest.
#[inline(always)]
fn carve<'a, T, const H: usize, const K: usize>(
    buf: &'a mut [V<T>],
    rows: [usize; K],
) -> ([&'a mut [[V<T>; H]]; K], &'a mut [V<T>]) {
    let mut rest = buf;
    let parts = rows.map(|r| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(r * H);
        rest = &mut tail[SKEW..];
        head.as_chunks_mut::<H>().0
    });
    (parts, rest)
}

/// Vectors left between regions of scratch. Regions are often a multiple of 4 KiB long; without
/// the skew the same row of every region would share its address bits below 4 KiB, and the
/// CPU stalls loads it cannot tell apart from earlier stores (4K aliasing).
const SKEW: usize = 3;

#[inline(always)]
pub(super) fn forward<I: Isa, T: Float, const H: usize>(
    out: &mut [T],
    probs: &mut [T],
    qkv: &[T],
    s: AttnShape,
    stride: usize,
) {
    let (t, c3, cm, heads) = (s.t, 3 * s.c_model, s.c_model, s.heads);
    let (na, tp) = (s.active_rows(stride), s.tp());
    let scale = T::from_f64(1.0 / (H as f64).sqrt());
    let n = (2 * na + 2 * t) * H + 4 * SKEW + na * tp;
    let mut scratch = Scratch::take::<T>(n);
    let buf = scratch.vectors::<T>(n);
    let ([q, k, v, y], p) = carve::<T, H, 4>(buf, [na, t, t, na]);
    let p = &mut p[..na * tp];
    for b0 in (0..s.nseq).step_by(N) {
        let nb = N.min(s.nseq - b0);
        for h in 0..heads {
            let at = |row, off| Place {
                seq: t * c3,
                row,
                off,
            };
            gather::<I, T, H>(q, qkv, at(stride * c3, h * 3 * H), b0, nb);
            gather::<I, T, H>(k, qkv, at(c3, h * 3 * H + H), b0, nb);
            gather::<I, T, H>(v, qkv, at(c3, h * 3 * H + 2 * H), b0, nb);
            for (a, (row, ya)) in p.chunks_exact_mut(tp).zip(y.iter_mut()).enumerate() {
                let i = a * stride;
                let (live, masked) = row.split_at_mut(i + 1);
                dots::<I, T, H>(live, &q[a], k);
                softmax::<I, T>(live, scale);
                masked.fill([T::ZERO; N]);
                weighted::<I, T, H>(ya, live, v);
            }
            let at = Place {
                seq: t * cm,
                row: stride * cm,
                off: h * H,
            };
            scatter::<I, T>(out, y.as_flattened(), H, at, b0, nb);
            // The softmax of sequence b, head h: `na * tp` values at `(b * heads + h) * na * tp`.
            let at = Place {
                seq: heads * na * tp,
                row: 0,
                off: h * na * tp,
            };
            scatter::<I, T>(probs, p, na * tp, at, b0, nb);
        }
    }
}
