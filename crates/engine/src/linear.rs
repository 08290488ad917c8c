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
    linear_forward_add(y, x, w, b, &[], n, din, dout)
}

/// `y[n,dout] = x[n,din] @ w[dout,din]^T + b[dout] + adds[0] + adds[1] ...` (each add
/// `[n,dout]`, at most two, summed onto the finished product in turn): a layer whose output
/// feeds a residual sum. On AVX2 the sum is taken as each tile of the product is stored,
/// which saves a pass over the rows.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_add<T: Float>(
    y: &mut [T],
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    adds: &[&[T]],
    n: usize,
    din: usize,
    dout: usize,
) {
    let y = &mut y[..n * dout];
    assert!(
        adds.len() <= 2 && adds.iter().all(|a| a.len() >= n * dout),
        "linear forward: at most two adds of {n} x {dout}"
    );
    #[cfg(target_arch = "x86_64")]
    if wide_rows::<T>(din, dout) {
        use crate::attention::{as_f32, as_f32_mut};
        let (yf, xf, wf) = (as_f32_mut(y), as_f32(x), as_f32(&w[..dout * din]));
        let bf = b.map(|b| as_f32(&b[..dout]));
        thread_local! {
            static WT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        return WT.with_borrow_mut(|wt| {
            // w^T [din, dout], so that each row of y is a sum of rows of it.
            wt.resize(din * dout, 0.0);
            let mut af: [&[f32]; 2] = [&[], &[]];
            for (f, a) in af.iter_mut().zip(adds) {
                *f = as_f32(a);
            }
            // SAFETY: `wide_rows` checked the CPU.
            unsafe {
                wide::transpose_avx2(wt, wf, dout, din);
                wide::rows_avx2(yf, xf, wt, (n, din, dout), bf, false, &af[..adds.len()])
            }
        });
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
    for a in adds {
        add_assign(y, &a[..n * dout]);
    }
}

crate::multiversion! {
/// `y += x`, element by element.
pub fn add_assign<I, T: Float>(y: &mut [T], x: &[T]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += *x;
    }
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
            unsafe { wide::rows_avx2(dxf, dyf, wf, (n, dout, din), None, accumulate_dx, &[]) };
        } else {
            matmul(dx, dy, w, n, din, dout, false, false, accumulate_dx);
        }
        #[cfg(not(target_arch = "x86_64"))]
        matmul(dx, dy, w, n, din, dout, false, false, accumulate_dx);
    }
    dw_accumulate(&mut dw[..dout * din], dy, x, n, din, dout);
    if let Some(db) = db {
        bias_backward(&mut db[..dout], &dy[..n * dout]);
    }
}

crate::multiversion! {
/// `db[width] += sum_rows dy[rows, width]`, row by row in order: a bias's gradient.
pub fn bias_backward<I, T: Float>(db: &mut [T], dy: &[T]) {
    for row in dy.chunks_exact(db.len()) {
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
