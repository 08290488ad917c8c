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

crate::multiversion! {
/// [`relu_backward`] over rows of `width`, also adding each row of `dx` to the bias gradient
/// `db[width]` in row order (the bias of the layer before the ReLU), in the same pass.
pub fn relu_backward_bias<I, T: Float>(dx: &mut [T], dout: &[T], x: &[T], db: &mut [T]) {
    let width = db.len();
    assert!(width > 0 && dx.len().is_multiple_of(width), "relu backward: rows of {width}");
    for ((drow, grow), xrow) in dx
        .chunks_exact_mut(width)
        .zip(dout.chunks_exact(width))
        .zip(x.chunks_exact(width))
    {
        for (((d, g), v), b) in drow.iter_mut().zip(grow).zip(xrow).zip(db.iter_mut()) {
            *d = if *v <= T::ZERO { T::ZERO } else { *g };
            *b += *d;
        }
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

    #[test]
    fn the_bias_gradient_sums_the_passed_rows() {
        // Two rows of 3 onto a bias gradient that held [1, 2, 3].
        let x = [1.0f32, -1.0, 2.0, 0.5, 3.0, -2.0];
        let dout = [0.5f32, 7.0, 0.25, 2.0, 4.0, 9.0];
        let (mut dx, mut db) = ([9.0f32; 6], [1.0f32, 2.0, 3.0]);
        relu_backward_bias(&mut dx, &dout, &x, &mut db);
        assert_eq!(dx, [0.5, 0.0, 0.25, 2.0, 4.0, 0.0]);
        assert_eq!(db, [3.5, 6.0, 3.25]);
    }
}
