//! The causal softmax of one score row and its backward, on whole `L`-lane chunks.
//!
//! Rows are short (a few dozen keys in the regression model), so every loop runs over fixed
//! `[T; L]` chunks: the compiler emits straight vector code per chunk instead of a loop whose
//! vector body needs more elements than a row has and falls back to scalars.

use super::L;
use crate::Float;
use crate::simd::{Isa, fma};

#[inline(always)]
fn chunks<T>(row: &mut [T]) -> impl Iterator<Item = &mut [T; L]> {
    row.chunks_exact_mut(L).map(|c| c.try_into().unwrap())
}

#[inline(always)]
fn fold<T: Float>(a: [T; L]) -> T {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// Softmax of score row `i` (keys `0..=i` of `row`, scaled by `scale`); zeros after key `i`.
/// `row.len()` is a multiple of `L`.
#[inline(always)]
pub(super) fn forward_row<I: Isa, T: Float>(row: &mut [T], i: usize, scale: T) {
    let w = (i + 1).next_multiple_of(L);
    let ninf = T::from_f64(f64::NEG_INFINITY);
    let (live, tail) = row.split_at_mut(w);
    tail.fill(T::ZERO);
    live[i + 1..].fill(ninf);
    let mut m = [ninf; L];
    for c in chunks(live) {
        for l in 0..L {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    let mut mx = m[0];
    for v in &m[1..] {
        mx = if *v > mx { *v } else { mx };
    }
    let mut acc = [T::ZERO; L];
    let last = w / L - 1;
    for (k, c) in chunks(live).enumerate() {
        for l in 0..L {
            c[l] = (c[l] - mx) * scale;
        }
        T::exp_in_place::<I>(c);
        if k == last {
            // exp of the clamped -inf is tiny, not zero: the masked keys get exact zeros.
            for l in (i + 1 - k * L)..L {
                c[l] = T::ZERO;
            }
        }
        for l in 0..L {
            acc[l] += c[l];
        }
    }
    let inv = T::ONE / fold(acc);
    for c in chunks(live) {
        for l in 0..L {
            c[l] *= inv;
        }
    }
}

/// `d <- p * (d - sum(p * d)) * scale` over row `i`'s live chunks, zeros after them.
/// `p` holds at least the live chunks; `d.len()` is a multiple of `L`.
#[inline(always)]
pub(super) fn backward_row<I: Isa, T: Float>(d: &mut [T], p: &[T], i: usize, scale: T) {
    let w = (i + 1).next_multiple_of(L);
    let (live, tail) = d.split_at_mut(w);
    tail.fill(T::ZERO);
    let pc = || {
        p[..w]
            .chunks_exact(L)
            .map(|c| <&[T; L]>::try_from(c).unwrap())
    };
    let mut acc = [T::ZERO; L];
    for (c, pv) in chunks(live).zip(pc()) {
        for l in 0..L {
            acc[l] = fma::<I, T>(pv[l], c[l], acc[l]);
        }
    }
    let pdp = fold(acc);
    for (c, pv) in chunks(live).zip(pc()) {
        for l in 0..L {
            c[l] = pv[l] * (c[l] - pdp) * scale;
        }
    }
}
