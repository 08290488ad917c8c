//! Every code path this CPU supports (x86-64 baseline, AVX2+FMA, AVX-512; NEON on aarch64)
//! against plain float64 loops: GEMM in every transpose variant, attention in float32,
//! LayerNorm forward and backward, the linear layers' backward and ReLU. Paths the CPU lacks
//! are named as skipped.

use stagewise_engine::Float;
use stagewise_engine::attention::{AttnShape, attention_backward, attention_forward};
use stagewise_engine::layernorm::{layernorm_backward, layernorm_backward_add, layernorm_forward};
use stagewise_engine::linear::{
    linear_backward, linear_forward, linear_forward_add, linear1_backward, linear1_forward,
};
use stagewise_engine::matmul::matmul;
use stagewise_engine::relu::{relu_backward_bias, relu_forward};
use stagewise_engine::simd::{self, Level};

fn data(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 * 0.7548776662 + seed).fract() - 0.5) * 2.0)
        .collect()
}

fn cast<T: Float>(x: &[f64]) -> Vec<T> {
    x.iter().map(|v| T::from_f64(*v)).collect()
}

fn assert_close<T: Float>(got: &[T], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g.to_f64() - w).abs();
        assert!(
            err <= tol * scale,
            "{what} [{}]: element {i}: got {g}, want {w}, error {err:e}",
            simd::active()
        );
    }
}

fn naive(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    av * bv
                })
                .sum();
        }
    }
    c
}

fn check_gemm<T: Float>(tol: f64) {
    // Odd sizes exercise the microkernels' edges; 192 x 64 x 512 is the model's dW shape.
    for (m, n, k) in [(1, 1, 1), (7, 13, 5), (33, 17, 64), (192, 64, 512)] {
        let (a, b) = (data(m * k, 0.1), data(k * n, 0.3));
        let (a_t, b_t) = (cast::<T>(&a), cast::<T>(&b));
        for ta in [false, true] {
            for tb in [false, true] {
                let want = naive(&a, &b, m, n, k, ta, tb);
                let what = format!("gemm {m}x{n}x{k} ta={ta} tb={tb} {}", T::DTYPE);
                let mut c = vec![T::ZERO; m * n];
                matmul(&mut c, &a_t, &b_t, m, n, k, ta, tb, false);
                assert_close(&c, &want, tol, &what);
                let plus_one: Vec<f64> = want.iter().map(|v| v + 1.0).collect();
                let mut c = vec![T::ONE; m * n];
                matmul(&mut c, &a_t, &b_t, m, n, k, ta, tb, true);
                assert_close(&c, &plus_one, tol, &format!("{what} accumulate"));
            }
        }
    }
}

/// float32 attention (the path under test) against float64 attention on the baseline path,
/// whose specialised kernels equal the plain loops (the engine's unit test). Shapes: a partial
/// block of sequences, full blocks (AVX tiles) plus a partial one, head sizes 16 (the AVX-512
/// backward kernel), 8 and 32; lengths that fill no, one or several 16-key blocks exactly.
fn check_attention_f32() {
    for (nseq, heads, t) in [
        (3, 4, 32),
        (35, 4, 32),
        (16, 8, 32),
        (16, 2, 32),
        (5, 4, 7),
        (17, 4, 17),
        (4, 4, 45),
        (2, 4, 127),
    ] {
        check_attention_shape(AttnShape {
            nseq,
            t,
            c_model: 64,
            heads,
        });
    }
}

fn check_attention_shape(s: AttnShape) {
    let n = s.nseq * s.t;
    let qkv = data(n * 192, 0.2);
    let dout = data(n * 64, 0.9);
    for stride in [1, 2, 3] {
        let mut o64 = vec![0.0f64; n * 64];
        let mut p64 = vec![0.0f64; s.probs_len(stride)];
        // NaN: the backward pass must overwrite every element.
        let mut d64 = vec![f64::NAN; n * 192];
        simd::with_level(simd::supported()[0], || {
            attention_forward(&mut o64, &mut p64, &qkv, s, stride);
            attention_backward(&mut d64, &dout, &qkv, &p64, s, stride);
        })
        .unwrap();
        let mut o = vec![0.0f32; n * 64];
        let mut p = vec![0.0f32; s.probs_len(stride)];
        let mut d = vec![f32::NAN; n * 192];
        let (qkv32, dout32) = (cast::<f32>(&qkv), cast::<f32>(&dout));
        attention_forward(&mut o, &mut p, &qkv32, s, stride);
        attention_backward(&mut d, &dout32, &qkv32, &p, s, stride);
        let active = |v: &[f64], o: &[f32]| -> (Vec<f64>, Vec<f32>) {
            // Rows that are not active query rows are left untouched by the forward pass.
            let rows = (0..n).filter(|r| (r % s.t) % stride == 0);
            rows.flat_map(|r| (0..64).map(move |e| r * 64 + e))
                .map(|i| (v[i], o[i]))
                .unzip()
        };
        let (want, got) = active(&o64, &o);
        assert_close(
            &got,
            &want,
            1e-5,
            &format!("attention forward stride {stride} {s:?}"),
        );
        assert_close(
            &p,
            &p64,
            1e-5,
            &format!("attention probs stride {stride} {s:?}"),
        );
        assert_close(
            &d,
            &d64,
            1e-4,
            &format!("attention backward stride {stride} {s:?}"),
        );
    }
}

/// Widths: the regression model's 64 and the language model's 256 (16-lane kernels on AVX-512,
/// row counts that leave a partial group of four), and 40 (the generic loops).
fn check_layernorm<T: Float>(tol: f64) {
    for (n, c) in [(37, 64), (6, 256), (9, 40)] {
        check_layernorm_shape::<T>(tol, n, c);
    }
}

fn check_layernorm_shape<T: Float>(tol: f64, n: usize, c: usize) {
    let (x, w, b, dy) = (
        data(n * c, 0.4),
        data(c, 0.5),
        data(c, 0.6),
        data(n * c, 0.7),
    );
    let (mut want_y, mut want_dx) = (vec![0.0; n * c], vec![0.0; n * c]);
    let (mut want_dw, mut want_db) = (vec![0.5; c], vec![0.25; c]);
    for i in 0..n {
        let r = &x[i * c..(i + 1) * c];
        let m = r.iter().sum::<f64>() / c as f64;
        let var = r.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        let xhat: Vec<f64> = r.iter().map(|v| (v - m) * rstd).collect();
        let g: Vec<f64> = (0..c).map(|j| dy[i * c + j] * w[j]).collect();
        let (g_mean, gx_mean) = (
            g.iter().sum::<f64>() / c as f64,
            g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / c as f64,
        );
        for j in 0..c {
            want_y[i * c + j] = xhat[j] * w[j] + b[j];
            want_dx[i * c + j] = (g[j] - g_mean - xhat[j] * gx_mean) * rstd;
            want_dw[j] += dy[i * c + j] * xhat[j];
            want_db[j] += dy[i * c + j];
        }
    }
    let (x_t, w_t, b_t, dy_t) = (cast::<T>(&x), cast::<T>(&w), cast::<T>(&b), cast::<T>(&dy));
    let (mut y, mut mean, mut rstd) = (vec![T::ZERO; n * c], vec![T::ZERO; n], vec![T::ZERO; n]);
    layernorm_forward(&mut y, &mut mean, &mut rstd, &x_t, &w_t, &b_t, n, c, 1e-5);
    assert_close(
        &y,
        &want_y,
        tol,
        &format!("layernorm forward {} c={c}", T::DTYPE),
    );
    let mut dx = vec![T::ZERO; n * c];
    let (mut dw, mut db) = (cast::<T>(&vec![0.5; c]), cast::<T>(&vec![0.25; c]));
    layernorm_backward(
        &mut dx, &mut dw, &mut db, &dy_t, &x_t, &mean, &rstd, &w_t, n, c,
    );
    let what = format!("layernorm backward {} c={c}", T::DTYPE);
    assert_close(&dx, &want_dx, tol, &what);
    assert_close(&dw, &want_dw, tol, &what);
    assert_close(&db, &want_db, tol, &what);
    // With two residual gradients summed onto dx.
    let (r1, r2) = (data(n * c, 0.8), data(n * c, 0.9));
    let (r1t, r2t) = (cast::<T>(&r1), cast::<T>(&r2));
    let (mut dw, mut db) = (vec![T::ZERO; c], vec![T::ZERO; c]);
    let adds = [&r1t[..], &r2t[..]];
    layernorm_backward_add(
        &mut dx, &mut dw, &mut db, &dy_t, &x_t, &mean, &rstd, &w_t, &adds, n, c,
    );
    let want: Vec<f64> = (0..n * c).map(|i| want_dx[i] + r1[i] + r2[i]).collect();
    assert_close(&dx, &want, tol, &format!("{what} with two adds"));
}

fn check_linear1<T: Float>(tol: f64) {
    let (n, c) = (11, 64);
    let (x, w, dy) = (data(n * c, 0.15), data(c, 0.25), data(n, 0.35));
    let want_y: Vec<f64> = (0..n)
        .map(|r| (0..c).map(|j| x[r * c + j] * w[j]).sum::<f64>() + 0.5)
        .collect();
    let mut y = vec![T::ZERO; n];
    linear1_forward(&mut y, &cast::<T>(&x), &cast::<T>(&w), T::from_f64(0.5));
    assert_close(&y, &want_y, tol, "linear1 forward");
    let (mut dx, mut dw, mut db) = (vec![T::ZERO; n * c], vec![T::ONE; c], T::ONE);
    linear1_backward(
        &mut dx,
        &mut dw,
        &mut db,
        &cast::<T>(&dy),
        &cast::<T>(&x),
        &cast::<T>(&w),
    );
    let want_dx: Vec<f64> = (0..n * c).map(|i| dy[i / c] * w[i % c]).collect();
    let want_dw: Vec<f64> = (0..c)
        .map(|j| 1.0 + (0..n).map(|r| dy[r] * x[r * c + j]).sum::<f64>())
        .collect();
    assert_close(&dx, &want_dx, tol, "linear1 backward dx");
    assert_close(&dw, &want_dw, tol, "linear1 backward dw");
    assert_close(
        &[db],
        &[1.0 + dy.iter().sum::<f64>()],
        tol,
        "linear1 backward db",
    );
}

/// `linear_backward` with `dw` accumulated, in both shapes a path may compute as its transpose
/// (more outputs than inputs, and fewer), with odd sizes for the blocked transposed add, and
/// for the wide weight-gradient kernel's partial tiles (rows not a multiple of 6, columns of
/// 16 not a multiple of 64); `dx` also added onto a buffer, and the forward with and without a
/// bias (the AVX2 forward's weight transpose in 16 x 16 blocks and element by element).
fn check_linear<T: Float>(tol: f64) {
    let shapes = [
        (37, 64, 192),
        (37, 256, 64),
        (9, 5, 21),
        (9, 21, 5),
        (11, 48, 7),
        (13, 80, 13),
        (1, 16, 1),
        (9, 5, 32),
        (7, 48, 80),
    ];
    for (n, din, dout) in shapes {
        let (x, w, dy) = (
            data(n * din, 0.45),
            data(dout * din, 0.55),
            data(n * dout, 0.65),
        );
        let dw0 = data(dout * din, 0.75);
        let mut dx = vec![T::ZERO; n * din];
        let mut dw = cast::<T>(&dw0);
        let mut db = vec![T::ZERO; dout];
        linear_backward(
            Some(&mut dx),
            false,
            &mut dw,
            Some(&mut db),
            &cast::<T>(&dy),
            &cast::<T>(&x),
            &cast::<T>(&w),
            n,
            din,
            dout,
        );
        let want_dw: Vec<f64> = (0..dout * din)
            .map(|i| {
                let (o, j) = (i / din, i % din);
                dw0[i]
                    + (0..n)
                        .map(|r| dy[r * dout + o] * x[r * din + j])
                        .sum::<f64>()
            })
            .collect();
        let want_dx = naive(&dy, &w, n, din, dout, false, false);
        let want_db: Vec<f64> = (0..dout)
            .map(|o| (0..n).map(|r| dy[r * dout + o]).sum())
            .collect();
        let what = format!("linear backward {} {dout}x{din}", T::DTYPE);
        assert_close(&dw, &want_dw, tol, &format!("{what} dw"));
        assert_close(&dx, &want_dx, tol, &format!("{what} dx"));
        assert_close(&db, &want_db, tol, &format!("{what} db"));
        // dx added onto what it held.
        let dx0 = data(n * din, 0.85);
        let mut dx = cast::<T>(&dx0);
        let mut dw = cast::<T>(&dw0);
        let (dyt, xt, wt) = (cast::<T>(&dy), cast::<T>(&x), cast::<T>(&w));
        linear_backward(
            Some(&mut dx),
            true,
            &mut dw,
            None,
            &dyt,
            &xt,
            &wt,
            n,
            din,
            dout,
        );
        let want: Vec<f64> = dx0.iter().zip(&want_dx).map(|(a, b)| a + b).collect();
        assert_close(&dx, &want, tol, &format!("{what} dx accumulated"));
        // The forward, with and without a bias, over a buffer that held other values.
        let b = data(dout, 0.95);
        let xw = naive(&x, &w, n, dout, din, false, true);
        for bias in [None, Some(cast::<T>(&b))] {
            let mut y = cast::<T>(&data(n * dout, 0.35));
            linear_forward(&mut y, &xt, &wt, bias.as_deref(), n, din, dout);
            let want: Vec<f64> = (0..n * dout)
                .map(|i| xw[i] + if bias.is_some() { b[i % dout] } else { 0.0 })
                .collect();
            let what = format!(
                "linear forward {} {dout}x{din} bias {}",
                T::DTYPE,
                bias.is_some()
            );
            assert_close(&y, &want, tol, &what);
        }
        // With residual buffers added onto the product (one and two of them).
        let (r1, r2) = (data(n * dout, 0.15), data(n * dout, 0.25));
        let (r1t, r2t) = (cast::<T>(&r1), cast::<T>(&r2));
        for adds in [vec![&r1t[..]], vec![&r1t[..], &r2t[..]]] {
            let mut y = cast::<T>(&data(n * dout, 0.35));
            linear_forward_add(&mut y, &xt, &wt, Some(&cast::<T>(&b)), &adds, n, din, dout);
            let want: Vec<f64> = (0..n * dout)
                .map(|i| xw[i] + b[i % dout] + r1[i] + if adds.len() > 1 { r2[i] } else { 0.0 })
                .collect();
            let what = format!(
                "linear forward {} {dout}x{din} with {} adds",
                T::DTYPE,
                adds.len()
            );
            assert_close(&y, &want, tol, &what);
        }
    }
}

fn check_relu() {
    let x = [-1.0f32, 0.0, 2.5, f32::NAN, -0.0, 7.0, -3.0, 1.0, 4.0];
    let mut out = [9.0f32; 9];
    relu_forward(&mut out, &x);
    assert_eq!(out[..3], [0.0, 0.0, 2.5]);
    assert!(out[3].is_nan());
    assert_eq!(out[4..], [0.0, 7.0, 0.0, 1.0, 4.0]);
    // The backward with the bias gradient, 37 rows of 24, against float64 loops.
    let (n, w) = (37, 24);
    let (x, dy, db0) = (data(n * w, 0.1), data(n * w, 0.2), data(w, 0.3));
    let (mut dx, mut db) = (vec![9.0f32; n * w], cast::<f32>(&db0));
    relu_backward_bias(&mut dx, &cast::<f32>(&dy), &cast::<f32>(&x), &mut db);
    let want_dx: Vec<f64> = (0..n * w)
        .map(|i| if x[i] as f32 <= 0.0 { 0.0 } else { dy[i] })
        .collect();
    let want_db: Vec<f64> = (0..w)
        .map(|j| db0[j] + (0..n).map(|r| want_dx[r * w + j]).sum::<f64>())
        .collect();
    assert_close(&dx, &want_dx, 1e-6, "relu backward");
    assert_close(&db, &want_db, 1e-5, "relu backward bias");
}

#[test]
fn every_code_path_this_cpu_has_matches_plain_float64_loops() {
    let supported = simd::supported();
    for level in Level::ALL {
        if !supported.contains(&level) {
            println!(
                "skipped {level} ({}): not supported by this CPU",
                level.name()
            );
            continue;
        }
        simd::with_level(level, || {
            check_gemm::<f64>(1e-13);
            check_gemm::<f32>(2e-6);
            check_attention_f32();
            check_layernorm::<f64>(1e-12);
            check_layernorm::<f32>(2e-5);
            check_linear1::<f64>(1e-13);
            check_linear1::<f32>(2e-6);
            check_linear::<f64>(1e-13);
            check_linear::<f32>(5e-6);
            check_relu();
        })
        .unwrap();
        println!("checked {level} ({})", level.name());
    }
}

#[test]
fn an_unsupported_or_unknown_level_is_refused_with_the_supported_ones() {
    assert!(
        Level::parse("avx1024")
            .unwrap_err()
            .contains("expected auto")
    );
    for level in Level::ALL {
        let r = simd::with_level(level, || ());
        if level.supported() {
            assert!(r.is_ok());
        } else {
            let e = r.unwrap_err();
            assert!(
                e.contains("does not support") && e.contains(simd::best().name()),
                "{e}"
            );
        }
    }
}
