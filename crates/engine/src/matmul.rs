//! Row-major matrix products on the `gemm` crate.

use crate::Float;

/// `c[m,n] (= or +=) op(a)[m,k] @ op(b)[k,n]`, all row-major.
///
/// `a` is stored `[m,k]`, or `[k,m]` when `trans_a`; `b` is stored `[k,n]`, or `[n,k]` when
/// `trans_b`. With `accumulate` the product is added to `c`, otherwise `c` is overwritten.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Float>(
    c: &mut [T],
    a: &[T],
    b: &[T],
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    let a_rs = if trans_a { m } else { k };
    let b_rs = if trans_b { k } else { n };
    matmul_strided(
        Strided { data: c, rs: n },
        Strided { data: a, rs: a_rs },
        Strided { data: b, rs: b_rs },
        (m, n, k),
        trans_a,
        trans_b,
        accumulate,
    );
}

/// A row-major matrix whose rows lie `rs` elements apart in `data` (a block of a wider
/// matrix, e.g. one head's columns of a fused QKV activation).
pub struct Strided<S> {
    pub data: S,
    pub rs: usize,
}

/// `matmul` on strided operands: `c` holds `m` rows of `n`, `a` holds `m` rows of `k` (`k` rows
/// of `m` when `trans_a`), `b` holds `k` rows of `n` (`n` rows of `k` when `trans_b`).
pub fn matmul_strided<T: Float>(
    c: Strided<&mut [T]>,
    a: Strided<&[T]>,
    b: Strided<&[T]>,
    (m, n, k): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    // Elements a (rows x cols) view with row stride rs reaches.
    let span = |rows: usize, cols: usize, rs: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + cols
        }
    };
    let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
    let (br, bc) = if trans_b { (n, k) } else { (k, n) };
    assert!(
        c.rs >= n && c.data.len() >= span(m, n, c.rs),
        "matmul: c has {} < {m}x{n} (row stride {})",
        c.data.len(),
        c.rs
    );
    assert!(
        a.rs >= ac && a.data.len() >= span(ar, ac, a.rs),
        "matmul: a has {} < {ar}x{ac} (row stride {})",
        a.data.len(),
        a.rs
    );
    assert!(
        b.rs >= bc && b.data.len() >= span(br, bc, b.rs),
        "matmul: b has {} < {br}x{bc} (row stride {})",
        b.data.len(),
        b.rs
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c.data[r * c.rs..r * c.rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    let (a_rs, a_cs) = if trans_a {
        (1, a.rs as isize)
    } else {
        (a.rs as isize, 1)
    };
    let (b_rs, b_cs) = if trans_b {
        (1, b.rs as isize)
    } else {
        (b.rs as isize, 1)
    };
    // SAFETY: the asserts above bound every index the strides can reach.
    unsafe {
        gemm_at::<T>(
            crate::simd::active(),
            m,
            n,
            k,
            c.data.as_mut_ptr(),
            c.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
        );
    }
}

/// `dst[m,n] (= or +=) lhs @ rhs` with `gemm`'s microkernels for `level` on x86-64 (`gemm`
/// picks its own path once per process, the best the CPU has; calling the path's kernel here
/// lets `STAGEWISE_SIMD` and tests select a lower one). Other targets and types: `gemm::gemm`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_at<T: Float>(
    level: crate::simd::Level,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const T,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const T,
    rhs_cs: isize,
    rhs_rs: isize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::any::TypeId;
        // As `gemm::gemm`: the microkernels want a column-major destination, so a row-major
        // product is computed as its transpose (all strides here are positive).
        let (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs) = if 1 < dst_rs {
            (n, m, dst_rs, 1, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs)
        } else {
            (m, n, 1, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs)
        };
        let args = (
            m, n, k, dst_cs, dst_rs, read_dst, lhs_cs, lhs_rs, rhs_cs, rhs_rs,
        );
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            let f = x86::f32_path(level);
            // SAFETY: T is f32.
            return unsafe { f(dst.cast(), lhs.cast(), rhs.cast(), args) };
        }
        if TypeId::of::<T>() == TypeId::of::<f64>() {
            let f = x86::f64_path(level);
            // SAFETY: T is f64.
            return unsafe { f(dst.cast(), lhs.cast(), rhs.cast(), args) };
        }
    }
    let _ = level;
    // SAFETY: the caller's contract, as for `gemm_at`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `gemm`'s kernels per path, instantiated as `gemm_f32`/`gemm_f64` instantiate them.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::simd::Level;
    use gemm_common::simd::MixedSimd;

    /// `(m, n, k, dst_cs, dst_rs, read_dst, lhs_cs, lhs_rs, rhs_cs, rhs_rs)`.
    pub type Args = (
        usize,
        usize,
        usize,
        isize,
        isize,
        bool,
        isize,
        isize,
        isize,
        isize,
    );

    macro_rules! path {
        ($fname:ident, $ty:ident, $n:expr, $simd:ty, $($ukr:ident)::+) => {
            #[inline(never)]
            pub unsafe fn $fname(dst: *mut $ty, lhs: *const $ty, rhs: *const $ty, a: Args) {
                use $($ukr)::+ as u;
                const N: usize = $n;
                let (m, n, k, dst_cs, dst_rs, read_dst, lhs_cs, lhs_rs, rhs_cs, rhs_rs) = a;
                // SAFETY: the level was checked against the CPU; the caller bounds the strides.
                unsafe {
                    gemm_common::gemm::gemm_basic_generic::<
                        _,
                        $ty,
                        N,
                        { u::MR_DIV_N * N },
                        { u::NR },
                        { u::MR_DIV_N },
                        { u::H_M },
                        { u::H_N },
                    >(
                        <$simd as MixedSimd<$ty, $ty, $ty, $ty>>::try_new().unwrap(),
                        m,
                        n,
                        k,
                        dst,
                        dst_cs,
                        dst_rs,
                        read_dst,
                        lhs,
                        lhs_cs,
                        lhs_rs,
                        rhs,
                        rhs_cs,
                        rhs_rs,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        |a, b, c| a * b + c,
                        &u::UKR,
                        &u::H_UKR,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            }
        };
    }

    path!(
        f32_base,
        f32,
        1,
        gemm_common::simd::Scalar,
        gemm_f32::microkernel::scalar::f32
    );
    path!(
        f32_avx2,
        f32,
        8,
        gemm_common::simd::V3,
        gemm_f32::microkernel::fma::f32
    );
    path!(
        f32_avx512,
        f32,
        16,
        gemm_common::simd::V4,
        gemm_f32::microkernel::avx512f::f32
    );
    path!(
        f64_base,
        f64,
        1,
        gemm_common::simd::Scalar,
        gemm_f64::microkernel::scalar::f64
    );
    path!(
        f64_avx2,
        f64,
        4,
        gemm_common::simd::V3,
        gemm_f64::microkernel::fma::f64
    );
    path!(
        f64_avx512,
        f64,
        8,
        gemm_common::simd::V4,
        gemm_f64::microkernel::avx512f::f64
    );

    type Path<T> = unsafe fn(*mut T, *const T, *const T, Args);

    pub fn f32_path(l: Level) -> Path<f32> {
        match l {
            Level::Avx512 => f32_avx512,
            Level::Avx2 => f32_avx2,
            _ => f32_base,
        }
    }

    pub fn f64_path(l: Level) -> Path<f64> {
        match l {
            Level::Avx512 => f64_avx512,
            Level::Avx2 => f64_avx2,
            _ => f64_base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av * bv;
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn all_transpose_variants_match_naive_product() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        for ta in [false, true] {
            for tb in [false, true] {
                let want = naive(&a, &b, m, n, k, ta, tb);
                let mut c = vec![1.0; m * n];
                matmul(&mut c, &a, &b, m, n, k, ta, tb, true);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - (w + 1.0)).abs() < 1e-12);
                }
                matmul(&mut c, &a, &b, m, n, k, ta, tb, false);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - w).abs() < 1e-12);
                }
            }
        }
    }
}
