//! Rectified linear unit.

crate::multiversion! {
/// `out = max(x, 0)` elementwise; NaN stays NaN, as in PyTorch (`x <= 0 ? 0 : x`).
pub fn relu_forward<I, T: Float>(out: &mut [T], x: &[T]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o = if *v <= T::ZERO { T::ZERO } else { *v };
    }
}
}

crate::multiversion! {
/// `dx = dout * [x > 0]` elementwise, passing the gradient at NaN as PyTorch's
/// `threshold_backward` does (`x <= 0 ? 0 : dout`; overwrites `dx`; `dx` may alias nothing).
pub fn relu_backward<I, T: Float>(dx: &mut [T], dout: &[T], x: &[T]) {
    for ((d, g), v) in dx.iter_mut().zip(dout).zip(x) {
        *d = if *v <= T::ZERO { T::ZERO } else { *g };
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_propagates_as_in_pytorch() {
        let x = [-1.0f32, 0.0, -0.0, 2.0, f32::NAN];
        let mut out = [9.0f32; 5];
        relu_forward(&mut out, &x);
        assert_eq!(out[..4], [0.0, 0.0, 0.0, 2.0]);
        assert!(out[4].is_nan() && out[1].is_sign_positive() && out[2].is_sign_positive());
        let mut dx = [9.0f32; 5];
        relu_backward(&mut dx, &[1.0; 5], &x);
        assert_eq!(dx, [0.0, 0.0, 0.0, 1.0, 1.0]);
    }
}
