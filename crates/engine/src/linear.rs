//! Fully connected layer with torch's `[out, in]` weight layout.

use crate::Float;
use crate::matmul::matmul;
use crate::reduce::dot;
use crate::simd::fma;

/// `y[n,dout] = x[n,din] @ w[dout,din]^T + b[dout]`.
pub fn linear_forward<T: Float>(
    y: &mut [T],
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    n: usize,
    din: usize,
    dout: usize,
) {
    let y = &mut y[..n * dout];
    #[cfg(target_arch = "x86_64")]
    if wide_rows::<T>(din, dout) {
        use crate::attention::{as_f32, as_f32_mut};
        let (yf, xf, wf) = (as_f32_mut(y), as_f32(x), as_f32(&w[..dout * din]));
        let bf = b.map(|b| as_f32(&b[..dout]));
        // w^T [din, dout], so that each row of y is a sum of rows of it.
        let mut wt = vec![0.0f32; din * dout];
        for (o, row) in wf.chunks_exact(din).enumerate() {
            for (i, v) in row.iter().enumerate() {
                wt[i * dout + o] = *v;
            }
        }
        // SAFETY: `wide_rows` checked the CPU.
        return unsafe { wide::rows_avx2(yf, xf, &wt, (n, din, dout), bf, false) };
    }
    match b {
        Some(b) => {
            for row in y.chunks_exact_mut(dout) {
                row.copy_from_slice(&b[..dout]);
            }
            matmul(y, x, w, n, dout, din, false, true, true);
        }
        None => matmul(y, x, w, n, dout, din, false, true, false),
    }
}

/// Backward of `linear_forward`: `dw += dy^T @ x`, `db += sum_rows dy`, and, when asked,
/// `dx = dy @ w` (`accumulate_dx` adds to `dx` instead of overwriting it).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Float>(
    dx: Option<&mut [T]>,
    accumulate_dx: bool,
    dw: &mut [T],
    db: Option<&mut [T]>,
    dy: &[T],
    x: &[T],
    w: &[T],
    n: usize,
    din: usize,
    dout: usize,
) {
    if let Some(dx) = dx {
        #[cfg(target_arch = "x86_64")]
        if wide_rows::<T>(dout, din) {
            use crate::attention::{as_f32, as_f32_mut};
            let (dxf, dyf, wf) = (as_f32_mut(dx), as_f32(dy), as_f32(w));
            // SAFETY: `wide_rows` checked the CPU.
            unsafe { wide::rows_avx2(dxf, dyf, wf, (n, dout, din), None, accumulate_dx) };
        } else {
            matmul(dx, dy, w, n, din, dout, false, false, accumulate_dx);
        }
        #[cfg(not(target_arch = "x86_64"))]
        matmul(dx, dy, w, n, din, dout, false, false, accumulate_dx);
    }
    dw_accumulate(&mut dw[..dout * din], dy, x, n, din, dout);
    if let Some(db) = db {
        let db = &mut db[..dout];
        for row in dy[..n * dout].chunks_exact(dout) {
            for (d, g) in db.iter_mut().zip(row) {
                *d += *g;
            }
        }
    }
}

/// Whether a float32 product of rows `k` long by a `[k, width]` matrix takes
/// [`wide::rows_avx2`]: AVX2 only (on AVX-512 `gemm`'s kernels are as fast), and the matrix at
/// most 64 KB, the regression model's shapes (`k * width <= 64 * 192` measured faster; the
/// language model's 256 x 1024 was not, without cache blocking).
#[cfg(target_arch = "x86_64")]
fn wide_rows<T: Float>(k: usize, width: usize) -> bool {
    crate::attention::is_f32::<T>()
        && width % 16 == 0
        && k * width <= 16 * 1024
        && crate::simd::active() == crate::simd::Level::Avx2
}

/// `dw[dout,din] += dy[n,dout]^T @ x[n,din]`: the wide kernel for float32 rows of a multiple
/// of 16 on AVX2, `gemm` otherwise.
fn dw_accumulate<T: Float>(dw: &mut [T], dy: &[T], x: &[T], n: usize, din: usize, dout: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::attention::is_f32::<T>() && din % 16 == 0 {
        use crate::attention::{as_f32, as_f32_mut};
        if crate::simd::active() == crate::simd::Level::Avx2 {
            let (dwf, dyf, xf) = (as_f32_mut(dw), as_f32(dy), as_f32(x));
            // SAFETY: `active` returns only levels this CPU supports.
            return unsafe { wide::dw_avx2(dwf, dyf, xf, n, din) };
        }
    }
    matmul(dw, dy, x, dout, din, n, true, false, true);
}

#[cfg(target_arch = "x86_64")]
mod wide;

crate::multiversion! {
/// `y[r] = x[r,:] . w + b` for the rows of `x[n,c]`, `c = w.len()`: a linear layer with one
/// output (the regression model's `y_hat` read-out).
pub fn linear1_forward<I, T: Float>(y: &mut [T], x: &[T], w: &[T], b: T) {
    for (yr, row) in y.iter_mut().zip(x.chunks_exact(w.len())) {
        *yr = dot::<I, T>(row, w) + b;
    }
}
}

crate::multiversion! {
/// Backward of `linear1_forward` from `dy[n]`: `dw += sum_r dy[r] x[r,:]`, `db += sum_r dy[r]`
/// and `dx[r,:] = dy[r] w` (overwritten).
pub fn linear1_backward<I, T: Float>(dx: &mut [T], dw: &mut [T], db: &mut T, dy: &[T], x: &[T], w: &[T]) {
    let c = w.len();
    let dw = &mut dw[..c];
    for ((g, row), drow) in dy.iter().zip(x.chunks_exact(c)).zip(dx.chunks_exact_mut(c)) {
        *db += *g;
        for (((gwj, l), d), u) in dw.iter_mut().zip(row).zip(drow.iter_mut()).zip(w) {
            *gwj = fma::<I, T>(*g, *l, *gwj);
            *d = *g * *u;
        }
    }
}
}
