//! Rectified linear unit.

use crate::Float;

/// `out = max(x, 0)` elementwise.
pub fn relu_forward<T: Float>(out: &mut [T], x: &[T]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o = if *v > T::ZERO { *v } else { T::ZERO };
    }
}

/// `dx = dout * [x > 0]` elementwise (overwrites `dx`; `dx` may alias nothing).
pub fn relu_backward<T: Float>(dx: &mut [T], dout: &[T], x: &[T]) {
    for ((d, g), v) in dx.iter_mut().zip(dout).zip(x) {
        *d = if *v > T::ZERO { *g } else { T::ZERO };
    }
}
