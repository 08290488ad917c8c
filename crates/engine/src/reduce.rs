//! Vectorisable reductions: eight independent partial sums, so the compiler can keep them in
//! one SIMD register instead of a serial chain of additions. Generic over the code path `I`
//! and always inlined, so they compile for the path of the kernel that calls them.

use crate::Float;
use crate::simd::{Isa, fma};

/// `sum(x)`.
#[inline(always)]
pub fn sum<I: Isa, T: Float>(x: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let mut s = fold(acc);
    for v in rest {
        s += *v;
    }
    s
}

/// `sum(a * b)`.
#[inline(always)]
pub fn dot<I: Isa, T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = fma::<I, T>(x[l], y[l], acc[l]);
        }
    }
    let mut s = fold(acc);
    for (x, y) in ra.iter().zip(rb) {
        s = fma::<I, T>(*x, *y, s);
    }
    s
}

/// `sum((x - c)^2)`.
#[inline(always)]
pub fn sum_sq_dev<I: Isa, T: Float>(x: &[T], c: T) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for l in 0..8 {
            let d = ch[l] - c;
            acc[l] = fma::<I, T>(d, d, acc[l]);
        }
    }
    let mut s = fold(acc);
    for v in rest {
        let d = *v - c;
        s = fma::<I, T>(d, d, s);
    }
    s
}

/// `max(x)` (not NaN-aware: a plain compare-select, which vectorises); `-inf` for an empty slice.
#[inline(always)]
pub fn max<I: Isa, T: Float>(x: &[T]) -> T {
    let ninf = T::from_f64(f64::NEG_INFINITY);
    let mut acc = [ninf; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = ninf;
    for v in acc.iter().chain(rest) {
        m = if *v > m { *v } else { m };
    }
    m
}

#[inline(always)]
fn fold<T: Float>(a: [T; 8]) -> T {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Avx2, Base};

    #[test]
    fn reductions_match_serial_sums() {
        check::<Base>();
        check::<Avx2>();
    }

    fn check<I: Isa>() {
        for n in [0usize, 1, 7, 8, 9, 64, 67] {
            let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin()).collect();
            let y: Vec<f64> = (0..n).map(|i| (i as f64 * 0.3).cos()).collect();
            let s: f64 = x.iter().sum();
            assert!((sum::<I, _>(&x) - s).abs() < 1e-12);
            let d: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            assert!((dot::<I, _>(&x, &y) - d).abs() < 1e-12);
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max::<I, _>(&x), m);
            let q: f64 = x.iter().map(|a| (a - 0.2) * (a - 0.2)).sum();
            assert!((sum_sq_dev::<I, _>(&x, 0.2) - q).abs() < 1e-12);
        }
    }
}
