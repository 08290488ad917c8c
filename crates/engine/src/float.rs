//! The scalar type the engine is generic over: `f32` for training, `f64` for golden checks.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::simd::{Isa, fma};

/// A floating-point scalar usable by every kernel (implemented for `f32` and `f64`).
pub trait Float:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Debug
    + Display
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;
    /// Name of the dtype as safetensors spells it (`F32`, `F64`).
    const DTYPE: &'static str;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn max(self, other: Self) -> Self;
    /// `x <- exp(x)` over a slice, compiled for the code path `I`. `f32` uses a vectorisable
    /// Cephes-style polynomial (about 1 ulp, as torch's vectorised CPU exp); `f64` uses the
    /// correctly rounded libm `exp`.
    fn exp_in_place<I: Isa>(x: &mut [Self]);
    /// `self * a + b` with one rounding (a library call where the code path has no FMA: hot
    /// loops use [`crate::simd::fma`] instead).
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn is_finite(self) -> bool;
    /// Little-endian bytes of a slice, for checkpoint files.
    fn to_le_bytes_vec(values: &[Self]) -> Vec<u8>;
    /// Parses little-endian bytes written by `to_le_bytes_vec`.
    fn from_le_bytes_slice(bytes: &[u8]) -> Vec<Self>;
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $n:literal, $exp:ident) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const DTYPE: &'static str = $name;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn exp_in_place<I: Isa>(x: &mut [Self]) {
                $exp::<I>(x)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn to_le_bytes_vec(values: &[Self]) -> Vec<u8> {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            fn from_le_bytes_slice(bytes: &[u8]) -> Vec<Self> {
                bytes
                    .chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            }
        }
    };
}

impl_float!(f32, "F32", 4, exp_f32);
impl_float!(f64, "F64", 8, exp_f64);

#[inline(always)]
fn exp_f64<I: Isa>(x: &mut [f64]) {
    for v in x {
        *v = v.exp();
    }
}

/// Cephes `expf`: range reduction by ln 2, degree-5 polynomial, exponent by bit assembly.
/// Branch-free so the loop vectorises. Where `floor` is no instruction (x86-64 baseline), it is
/// an integer round trip, exact on the clamped range.
#[inline(always)]
fn exp_f32<I: Isa>(x: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    for v in x {
        // Compare-selects and integer bit tricks only (no saturating float->int casts), so the
        // loop vectorises; NaN inputs are not expected here.
        let a = if *v < -87.3 { -87.3 } else { *v };
        let a = if a > 88.7 { 88.7 } else { a };
        let u = a * LOG2E + 0.5;
        let fx = if I::FLOOR {
            u.floor()
        } else {
            // SAFETY: |u| < 130 after the clamps, so the truncation is in range.
            let t = unsafe { u.to_int_unchecked::<i32>() } as f32;
            if t > u { t - 1.0 } else { t }
        };
        let r = fma::<I, f32>(fx, -C2, fma::<I, f32>(fx, -C1, a));
        let z = r * r;
        let mut y = 1.987_569_1e-4f32;
        y = fma::<I, f32>(y, r, 1.398_2e-3);
        y = fma::<I, f32>(y, r, 8.333_452e-3);
        y = fma::<I, f32>(y, r, 4.166_579_6e-2);
        y = fma::<I, f32>(y, r, 1.666_666_5e-1);
        y = fma::<I, f32>(y, r, 5e-1);
        let y = fma::<I, f32>(y, z, r + 1.0);
        // 2^fx: fx + 127 is an integer in [1, 255); adding 2^23 puts it in the mantissa bits.
        let biased = (fx + 127.0 + 8_388_608.0).to_bits() - 0x4B00_0000;
        *v = y * f32::from_bits(biased << 23);
    }
}

#[cfg(test)]
mod tests {
    use crate::simd::{Avx2, Base, Isa};

    #[test]
    fn fast_exp_is_within_two_ulp_of_libm() {
        check::<Base>();
        check::<Avx2>();
    }

    fn check<I: Isa>() {
        let mut worst = 0.0f64;
        let xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + i as f32 * (87.0 + 20.0) / 200_000.0)
            .collect();
        let mut ys = xs.clone();
        super::exp_f32::<I>(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            let want = (*x as f64).exp();
            let ulp = (want as f32).to_bits().abs_diff(y.to_bits()) as f64;
            worst = worst.max(ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        let mut z = [0.0f32, -1e-30, -200.0];
        super::exp_f32::<I>(&mut z);
        assert_eq!(z[0], 1.0);
        assert_eq!(z[1], 1.0);
        assert!(z[2] >= 0.0 && z[2] < 1e-37);
    }
}
