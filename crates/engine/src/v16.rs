//! Sixteen float32 lanes (one attention head row of 16, or 16 LayerNorm features): one AVX-512
//! register ([`Z`]) or two AVX2 registers ([`Y`]). The wide attention and LayerNorm kernels
//! are written once over [`V16`], the attention's softmax over [`Lanes`] (16 lanes on AVX-512,
//! 8 on AVX2: [`Y8`]); every method
//! is `#[inline(always)]`, so it compiles with the target features of the kernel it lands in.
//! Each method's body is the intrinsics it wraps, whose one condition is the trait's (the
//! target features), so the bodies are not wrapped in `unsafe` blocks one by one.
#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

/// The operations of the wide kernels on 16 lanes.
///
/// # Safety
/// Every method runs only inside a function compiled for the type's instruction set (AVX-512F
/// for [`Z`], AVX2 and FMA for [`Y`]); pointers are valid for the lanes each method names.
pub(crate) trait V16: Lanes {
    /// The chunk a softmax row is taken in on this instruction set.
    type Chunk: Lanes;
    unsafe fn zero() -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `a * b + c`, fused.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    /// The transpose of a block of `live <= 16` rows of 16 floats (`src_step` apart):
    /// `dst[e * dst_step + l] = src[l * src_step + e]` for `e < 16`, zero for `l >= live`.
    /// Four 8 x 8 transposes in 256-bit registers on both paths: AVX2's alternative, lane by
    /// lane through memory, made this a fifth of the attention's time, and AVX-512's gathers
    /// measured no faster than this.
    #[inline(always)]
    unsafe fn transpose16(
        src: *const f32,
        src_step: usize,
        live: usize,
        dst: *mut f32,
        dst_step: usize,
    ) {
        for (l0, e0) in [(0, 0), (8, 0), (0, 8), (8, 8)] {
            let mut rows = [_mm256_setzero_ps(); 8];
            for (i, r) in rows.iter_mut().enumerate().take(live.saturating_sub(l0)) {
                // SAFETY: the caller's: rows l < live hold 16 floats.
                *r = unsafe { _mm256_loadu_ps(src.add((l0 + i) * src_step + e0)) };
            }
            for (i, c) in transpose8(rows).into_iter().enumerate() {
                // SAFETY: the caller's: dst rows e < 16 hold lanes l0..l0 + 8 <= 16.
                unsafe { _mm256_storeu_ps(dst.add((e0 + i) * dst_step + l0), c) };
            }
        }
    }
    /// Lanes `l < live` from `p`, zeros in the others.
    #[inline(always)]
    unsafe fn load_first(p: *const f32, live: usize) -> Self {
        unsafe { Self::load_first_or(p, live, 0.0) }
    }
}

/// 16 lanes in one AVX-512 register.
#[derive(Clone, Copy)]
pub(crate) struct Z(__m512);

#[inline(always)]
fn mask16(live: usize) -> __mmask16 {
    ((1u32 << live.min(16)) - 1) as __mmask16
}

impl V16 for Z {
    type Chunk = Z;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Z(_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        Z(_mm512_fmadd_ps(a.0, b.0, c.0))
    }
}

impl Lanes for Z {
    const N: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Z(_mm512_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Z(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn load_first_or(p: *const f32, live: usize, fill: f32) -> Self {
        Z(unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask16(live), p) })
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, live: usize) {
        unsafe { _mm512_mask_storeu_ps(p, mask16(live), self.0) }
    }
    #[inline(always)]
    unsafe fn keep_first(self, live: usize) -> Self {
        Z(_mm512_maskz_mov_ps(mask16(live), self.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Z(_mm512_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Z(_mm512_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Z(_mm512_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        Z(_mm512_max_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        _mm512_reduce_add_ps(self.0)
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        _mm512_reduce_max_ps(self.0)
    }
    #[inline(always)]
    unsafe fn exp(self) -> Self {
        let c = _mm512_set1_ps;
        let a = _mm512_min_ps(_mm512_max_ps(self.0, c(-87.3)), c(88.7));
        let u = _mm512_add_ps(_mm512_mul_ps(a, c(std::f32::consts::LOG2_E)), c(0.5));
        let fx = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(u);
        let r = _mm512_fmadd_ps(fx, c(EXP_C2), _mm512_fmadd_ps(fx, c(EXP_C1), a));
        let z = _mm512_mul_ps(r, r);
        let mut y = c(EXP_P[0]);
        for k in &EXP_P[1..] {
            y = _mm512_fmadd_ps(y, r, c(*k));
        }
        let y = _mm512_fmadd_ps(y, z, _mm512_add_ps(r, c(1.0)));
        let biased = _mm512_sub_epi32(
            _mm512_castps_si512(_mm512_add_ps(_mm512_add_ps(fx, c(127.0)), c(8_388_608.0))),
            _mm512_set1_epi32(0x4B00_0000),
        );
        Z(_mm512_mul_ps(
            y,
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased)),
        ))
    }
}

/// `exp`'s Cody-Waite split of ln 2 and its polynomial (`float.rs`).
const EXP_C1: f32 = -0.693_359_4;
const EXP_C2: f32 = 2.121_944_4e-4;
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];

/// 16 lanes in two AVX2 registers (lanes 0-7, 8-15).
#[derive(Clone, Copy)]
pub(crate) struct Y(__m256, __m256);

/// `-1` then `0`: 8 lanes read from `16 - live` (and `24 - live`) are the masks of the first
/// `live` lanes.
static MASKS: [i32; 32] = {
    let mut m = [0i32; 32];
    let mut i = 0;
    while i < 16 {
        m[i] = -1;
        i += 1;
    }
    m
};

#[inline(always)]
unsafe fn mask8x2(live: usize) -> (__m256i, __m256i) {
    let p = MASKS[16 - live.min(16)..].as_ptr();
    // SAFETY: 16 - live + 16 <= 32 elements.
    unsafe {
        (
            _mm256_loadu_si256(p.cast()),
            _mm256_loadu_si256(p.add(8).cast()),
        )
    }
}

/// `f` on both halves.
macro_rules! halves {
    ($f:ident, $a:expr, $b:expr) => {
        Y($f($a.0, $b.0), $f($a.1, $b.1))
    };
}

impl V16 for Y {
    type Chunk = Y8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Y(_mm256_setzero_ps(), _mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe {
            _mm256_storeu_ps(p, self.0);
            _mm256_storeu_ps(p.add(8), self.1);
        }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        Y(
            _mm256_fmadd_ps(a.0, b.0, c.0),
            _mm256_fmadd_ps(a.1, b.1, c.1),
        )
    }
}

impl Lanes for Y {
    const N: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Y(_mm256_set1_ps(x), _mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { Y(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
    #[inline(always)]
    unsafe fn load_first_or(p: *const f32, live: usize, fill: f32) -> Self {
        unsafe {
            let (m0, m1) = mask8x2(live);
            let f = _mm256_set1_ps(fill);
            let a = _mm256_maskload_ps(p, m0);
            let b = _mm256_maskload_ps(p.add(8), m1);
            Y(
                _mm256_blendv_ps(f, a, _mm256_castsi256_ps(m0)),
                _mm256_blendv_ps(f, b, _mm256_castsi256_ps(m1)),
            )
        }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, live: usize) {
        unsafe {
            let (m0, m1) = mask8x2(live);
            _mm256_maskstore_ps(p, m0, self.0);
            _mm256_maskstore_ps(p.add(8), m1, self.1);
        }
    }
    #[inline(always)]
    unsafe fn keep_first(self, live: usize) -> Self {
        unsafe {
            let (m0, m1) = mask8x2(live);
            Y(
                _mm256_and_ps(self.0, _mm256_castsi256_ps(m0)),
                _mm256_and_ps(self.1, _mm256_castsi256_ps(m1)),
            )
        }
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        halves!(_mm256_add_ps, self, o)
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        halves!(_mm256_sub_ps, self, o)
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        halves!(_mm256_mul_ps, self, o)
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        halves!(_mm256_max_ps, self, o)
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        let s = _mm256_add_ps(self.0, self.1);
        let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        let s = _mm256_max_ps(self.0, self.1);
        let s = _mm_max_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }
    #[inline(always)]
    unsafe fn exp(self) -> Self {
        // SAFETY: the caller's target features.
        unsafe { Y(exp8(self.0), exp8(self.1)) }
    }
}

/// Lanes of float32 and what the kernels do to them lane by lane; [`V16`] adds the rest for 16
/// lanes. A softmax row is taken in [`V16::Chunk`]s: all 16 lanes of [`Z`] on AVX-512, where
/// masks cost nothing, but 8 ([`Y8`]) on AVX2, where a row's last keys are often 8 or fewer
/// and the dead half of a [`Y`] would still cost its `exp` and masked moves.
///
/// # Safety
/// As [`V16`]'s ([`Y8`]: AVX2 and FMA).
pub(crate) trait Lanes: Copy {
    /// Lanes.
    const N: usize;
    unsafe fn splat(x: f32) -> Self;
    /// All `N` lanes from `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// Lanes `l < live` from `p`, `fill` in the others.
    unsafe fn load_first_or(p: *const f32, live: usize, fill: f32) -> Self;
    /// Lanes `l < live` to `p`.
    unsafe fn store_first(self, p: *mut f32, live: usize);
    /// `self` with lanes `l >= live` zeroed.
    unsafe fn keep_first(self, live: usize) -> Self;
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn max(self, o: Self) -> Self;
    unsafe fn reduce_add(self) -> f32;
    unsafe fn reduce_max(self) -> f32;
    /// The engine's Cephes `expf` (`float.rs`), the same operations in the same order.
    unsafe fn exp(self) -> Self;
}

/// 8 lanes in one AVX2 register.
#[derive(Clone, Copy)]
pub(crate) struct Y8(__m256);

/// The mask of the first `live` of 8 lanes.
#[inline(always)]
unsafe fn mask8(live: usize) -> __m256i {
    // SAFETY: 16 - live + 8 <= 32 elements.
    unsafe { _mm256_loadu_si256(MASKS[16 - live.min(8)..].as_ptr().cast()) }
}

impl Lanes for Y8 {
    const N: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Y8(_mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Y8(unsafe { _mm256_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn load_first_or(p: *const f32, live: usize, fill: f32) -> Self {
        if live >= 8 {
            return unsafe { Self::load(p) };
        }
        unsafe {
            let m = mask8(live);
            let x = _mm256_maskload_ps(p, m);
            Y8(_mm256_blendv_ps(
                _mm256_set1_ps(fill),
                x,
                _mm256_castsi256_ps(m),
            ))
        }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, live: usize) {
        unsafe {
            if live >= 8 {
                _mm256_storeu_ps(p, self.0)
            } else {
                _mm256_maskstore_ps(p, mask8(live), self.0)
            }
        }
    }
    #[inline(always)]
    unsafe fn keep_first(self, live: usize) -> Self {
        Y8(_mm256_and_ps(
            self.0,
            _mm256_castsi256_ps(unsafe { mask8(live) }),
        ))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Y8(_mm256_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Y8(_mm256_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Y8(_mm256_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        Y8(_mm256_max_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        let s = _mm_add_ps(
            _mm256_castps256_ps128(self.0),
            _mm256_extractf128_ps::<1>(self.0),
        );
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        let s = _mm_max_ps(
            _mm256_castps256_ps128(self.0),
            _mm256_extractf128_ps::<1>(self.0),
        );
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }
    #[inline(always)]
    unsafe fn exp(self) -> Self {
        Y8(unsafe { exp8(self.0) })
    }
}

/// The transpose of 8 rows of 8 floats: `out[e]` lane `l` is `r[l]` lane `e`.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let (lo, hi) = (_mm256_unpacklo_ps, _mm256_unpackhi_ps);
    // Pairs of rows interleaved: t0 = r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5], ...
    let t = [
        lo(r[0], r[1]),
        hi(r[0], r[1]),
        lo(r[2], r[3]),
        hi(r[2], r[3]),
        lo(r[4], r[5]),
        hi(r[4], r[5]),
        lo(r[6], r[7]),
        hi(r[6], r[7]),
    ];
    // Quads: u0 = r0..r3 element 0 | element 4, u1 = elements 1 | 5, ...
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    [
        _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
        _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
    ]
}

/// [`Z`]'s `exp` on 8 lanes.
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    let c = _mm256_set1_ps;
    let a = _mm256_min_ps(_mm256_max_ps(x, c(-87.3)), c(88.7));
    let u = _mm256_add_ps(_mm256_mul_ps(a, c(std::f32::consts::LOG2_E)), c(0.5));
    let fx = _mm256_floor_ps(u);
    let r = _mm256_fmadd_ps(fx, c(EXP_C2), _mm256_fmadd_ps(fx, c(EXP_C1), a));
    let z = _mm256_mul_ps(r, r);
    let mut y = c(EXP_P[0]);
    for k in &EXP_P[1..] {
        y = _mm256_fmadd_ps(y, r, c(*k));
    }
    let y = _mm256_fmadd_ps(y, z, _mm256_add_ps(r, c(1.0)));
    let biased = _mm256_sub_epi32(
        _mm256_castps_si256(_mm256_add_ps(_mm256_add_ps(fx, c(127.0)), c(8_388_608.0))),
        _mm256_set1_epi32(0x4B00_0000),
    );
    _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Float;
    use crate::simd::{Avx2, Avx512, Level, supported};

    /// (the engine's `expf` of the path, this type's `exp`) of `x`.
    type Exps = unsafe fn(&[f32]) -> (Vec<f32>, Vec<f32>);

    #[target_feature(enable = "avx512f,avx2,fma")]
    fn z(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (mut want, mut got) = (x.to_vec(), x.to_vec());
        f32::exp_in_place::<Avx512>(&mut want);
        for o in got.chunks_exact_mut(16) {
            // SAFETY: 16 floats; AVX-512 by the target features.
            unsafe { Lanes::exp(<Z as Lanes>::load(o.as_ptr())).store(o.as_mut_ptr()) };
        }
        (want, got)
    }

    #[target_feature(enable = "avx2,fma")]
    fn y(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (mut want, mut got) = (x.to_vec(), x.to_vec());
        f32::exp_in_place::<Avx2>(&mut want);
        for o in got.chunks_exact_mut(16) {
            // SAFETY: 16 floats; AVX2 by the target features.
            unsafe { Y::load(o.as_ptr()).exp().store(o.as_mut_ptr()) };
        }
        (want, got)
    }

    /// Both types' `exp` is the engine's `expf` of the same path, bit for bit, over its whole
    /// clamped range.
    #[test]
    fn exp_is_the_engines_expf_bit_for_bit() {
        let xs: Vec<f32> = (0..200_000)
            .map(|i| -100.0 + i as f32 * 1e-3 + (i % 7) as f32 * 1.3e-7)
            .collect();
        for (level, f) in [(Level::Avx512, z as Exps), (Level::Avx2, y as Exps)] {
            if !supported().contains(&level) {
                eprintln!("no {level} on this CPU: skipped");
                continue;
            }
            // SAFETY: the CPU has the level's features (checked above).
            let (want, got) = unsafe { f(&xs) };
            for ((x, w), g) in xs.iter().zip(&want).zip(&got) {
                assert_eq!(g.to_bits(), w.to_bits(), "{level}: exp({x})");
            }
        }
    }
}
