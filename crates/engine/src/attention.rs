//! Causal multi-head self-attention on a fused QKV projection, with the reference's layout:
//! head `h` reads Q from features `[h*3c, h*3c+c)`, K from `[h*3c+c, h*3c+2c)` and V from
//! `[h*3c+2c, (h+1)*3c)` of each `3C`-wide row, and writes its output to features `[h*c, (h+1)*c)`.
//!
//! Only every `stride`-th query position is computed (stride 2 when only the x positions'
//! outputs are read downstream). The softmax is kept for the backward pass in `probs`:
//! `na = ceil(t / stride)` active query rows (row `a` is position `a * stride`), each `tp` keys
//! (`t` rounded up to a multiple of 8), zero after the row's position, row-major:
//! `probs[nseq, heads, na, tp]` ([`AttnShape::prob_index`]).
//!
//! The kernels: below [`LONG_T`] tokens, [`lanes`] (16 sequences side by side in SIMD lanes)
//! forward and [`fixed`] (register-blocked per sequence and head) backward, except float32
//! heads of 16 on AVX-512 and AVX2, which take [`wide`] both ways (register blocks in
//! intrinsics); from
//! [`LONG_T`] tokens, [`long`] (blocked GEMMs) both ways; [`reference`] (plain loops) for head
//! sizes the others are not compiled for.

/// Shapes of one attention call: `nseq` sequences of `t` tokens, width `c_model`, `heads` heads.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub nseq: usize,
    pub t: usize,
    pub c_model: usize,
    pub heads: usize,
}

/// Row padding of the saved softmax (and the chunk width of the long kernels' softmax).
const L: usize = 8;

/// Sequences per block of the short kernel: one per SIMD lane (one AVX-512 register of f32).
const N: usize = 16;

/// Sequences at least this long (every query row) take the blocked-GEMM kernels of [`long`];
/// shorter ones [`lanes`] and [`fixed`] (`examples/kernels.rs attention` times both sides).
pub const LONG_T: usize = 128;

impl AttnShape {
    fn head_size(&self) -> usize {
        self.c_model / self.heads
    }
    /// Padded row length of the saved softmax.
    pub fn tp(&self) -> usize {
        self.t.next_multiple_of(L)
    }
    /// Active query rows for a query stride.
    pub fn active_rows(&self, stride: usize) -> usize {
        self.t.div_ceil(stride)
    }
    /// Length of the `probs` buffer for a query stride.
    pub fn probs_len(&self, stride: usize) -> usize {
        self.nseq * self.heads * self.active_rows(stride) * self.tp()
    }
    /// Index in `probs` of the attention of active query row `a` of head `h` of sequence `b`
    /// on key `j`.
    pub fn prob_index(&self, stride: usize, b: usize, h: usize, a: usize, j: usize) -> usize {
        ((b * self.heads + h) * self.active_rows(stride) + a) * self.tp() + j
    }
}

crate::multiversion! {
/// `out[nseq,t,C]` (active query rows only; other rows untouched) and the softmax `probs`
/// (layout in the module doc) from `qkv[nseq,t,3C]`. Scores are scaled by `1/sqrt(c)`.
pub fn attention_forward<I, T: Float>(
    out: &mut [T],
    probs: &mut [T],
    qkv: &[T],
    s: AttnShape,
    stride: usize,
) {
    assert!(
        probs.len() >= s.probs_len(stride),
        "attention: probs buffer too small"
    );
    if s.t >= LONG_T && stride == 1 {
        return long::forward::<I, T>(out, probs, qkv, s);
    }
    #[cfg(target_arch = "x86_64")]
    if I::AVX && I::FMA && s.head_size() == 16 && is_f32::<T>() {
        let (out, probs, qkv) = (as_f32_mut(out), as_f32_mut(probs), as_f32(qkv));
        // SAFETY: `I::WIDE` is the AVX-512 path and `I::AVX && I::FMA` at least the AVX2+FMA
        // one, each run only on CPUs that have it; T is f32.
        unsafe {
            if I::WIDE {
                wide::forward(out, probs, qkv, s, stride)
            } else {
                wide::forward_avx2(out, probs, qkv, s, stride)
            }
        };
        return;
    }
    match s.head_size() {
        8 => lanes::forward::<I, T, 8>(out, probs, qkv, s, stride),
        16 => lanes::forward::<I, T, 16>(out, probs, qkv, s, stride),
        32 => lanes::forward::<I, T, 32>(out, probs, qkv, s, stride),
        64 => lanes::forward::<I, T, 64>(out, probs, qkv, s, stride),
        _ => reference::forward(out, probs, qkv, s, stride),
    }
}
}

crate::multiversion! {
/// Backward of `attention_forward`: overwrites `dqkv[nseq,t,3C]` from `dout[nseq,t,C]`
/// (only the active rows of `dout` are read).
pub fn attention_backward<I, T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    probs: &[T],
    s: AttnShape,
    stride: usize,
) {
    if s.t >= LONG_T && stride == 1 {
        return long::backward::<I, T>(dqkv, dout, qkv, probs, s);
    }
    #[cfg(target_arch = "x86_64")]
    if I::AVX && I::FMA && s.head_size() == 16 && is_f32::<T>() {
        let (dqkv, dout, qkv, probs) = (as_f32_mut(dqkv), as_f32(dout), as_f32(qkv), as_f32(probs));
        // SAFETY: as for the forward pass.
        unsafe {
            if I::WIDE {
                wide::backward(dqkv, dout, qkv, probs, s, stride)
            } else {
                wide::backward_avx2(dqkv, dout, qkv, probs, s, stride)
            }
        };
        return;
    }
    match s.head_size() {
        8 => fixed::backward::<I, T, 8>(dqkv, dout, qkv, probs, s, stride),
        16 => fixed::backward::<I, T, 16>(dqkv, dout, qkv, probs, s, stride),
        32 => fixed::backward::<I, T, 32>(dqkv, dout, qkv, probs, s, stride),
        64 => fixed::backward::<I, T, 64>(dqkv, dout, qkv, probs, s, stride),
        _ => reference::backward(dqkv, dout, qkv, probs, s, stride),
    }
}
}

#[cfg(target_arch = "x86_64")]
/// Whether `T` is f32 (kernels written with f32 intrinsics).
#[inline(always)]
pub(crate) fn is_f32<T: crate::Float>() -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
}

#[cfg(target_arch = "x86_64")]
/// `x` as f32, for `T` = f32.
#[inline(always)]
pub(crate) fn as_f32<T: crate::Float>(x: &[T]) -> &[f32] {
    assert!(is_f32::<T>());
    // SAFETY: T is f32.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) }
}

#[cfg(target_arch = "x86_64")]
/// `x` as f32, for `T` = f32.
#[inline(always)]
pub(crate) fn as_f32_mut<T: crate::Float>(x: &mut [T]) -> &mut [f32] {
    assert!(is_f32::<T>());
    // SAFETY: T is f32.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) }
}

mod fixed;
mod lanes;
mod long;
/// Plain loops for any head size: the path for unusual sizes and the tests' oracle.
mod reference;
mod softmax;
#[cfg(target_arch = "x86_64")]
mod wide;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specialised_kernels_equal_the_reference_path() {
        for level in crate::simd::supported() {
            crate::simd::with_level(level, specialised_equal_reference).unwrap();
        }
    }

    fn specialised_equal_reference() {
        // (stride, t, nseq, heads) at C = 64: the lane kernel with full and partial blocks of
        // sequences and head sizes 8, 16 and 32, the blocked kernels, the plain loops.
        for (stride, t, nseq, heads) in [
            (1usize, 13usize, 2usize, 4usize),
            (2, 16, 19, 4),
            (1, 32, 17, 2),
            (2, 7, 3, 8),
            (3, 11, 33, 4),
            (1, LONG_T - 1, 2, 4),
            (1, LONG_T + 77, 2, 4),
            (1, 2 * LONG_T + 3, 1, 4),
            (2, LONG_T + 3, 2, 4),
        ] {
            let s = AttnShape {
                nseq,
                t,
                c_model: 64,
                heads,
            };
            let n = s.nseq * t;
            let qkv: Vec<f64> = (0..n * 192)
                .map(|i| ((i * 37 % 101) as f64 / 50.0 - 1.0) * 0.8)
                .collect();
            let dout: Vec<f64> = (0..n * 64)
                .map(|i| {
                    if (i / 64 % t) % stride == 0 {
                        (i as f64 * 0.13).sin()
                    } else {
                        // Rows off the query stride are never read (the model leaves them
                        // unwritten): NaN there would reach every output that read one.
                        f64::NAN
                    }
                })
                .collect();
            let (mut o1, mut o2) = (vec![0.0; n * 64], vec![0.0; n * 64]);
            let (mut p1, mut p2) = (
                vec![0.0; s.probs_len(stride)],
                vec![0.0; s.probs_len(stride)],
            );
            attention_forward(&mut o1, &mut p1, &qkv, s, stride);
            reference::forward(&mut o2, &mut p2, &qkv, s, stride);
            let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
            let level = crate::simd::active();
            let what = format!("stride {stride} t {t} nseq {nseq} heads {heads}, {level}");
            assert!(close(&o1, &o2), "forward, {what}");
            let (na, tp) = (s.active_rows(stride), s.tp());
            for b in 0..nseq {
                for h in 0..heads {
                    for a in 0..na {
                        for j in 0..tp {
                            let (x, y) = (
                                p1[s.prob_index(stride, b, h, a, j)],
                                p2[((b * heads + h) * na + a) * tp + j],
                            );
                            assert!((x - y).abs() < 1e-12, "probs {b} {h} {a} {j}, {what}");
                        }
                    }
                }
            }
            let (mut d1, mut d2) = (vec![1.0; n * 192], vec![1.0; n * 192]);
            attention_backward(&mut d1, &dout, &qkv, &p1, s, stride);
            reference::backward(&mut d2, &dout, &qkv, &p2, s, stride);
            assert!(close(&d1, &d2), "backward, {what}");
        }
    }

    #[test]
    fn rows_are_a_causal_softmax() {
        // Head size 3 (row-major probs, plain loops) and 8 (lane-major, the lane kernel).
        for c_model in [6, 16] {
            let s = AttnShape {
                nseq: 1,
                t: 5,
                c_model,
                heads: 2,
            };
            let (c3, hs) = (3 * c_model, c_model / 2);
            let qkv: Vec<f64> = (0..5 * c3).map(|i| (i as f64 * 0.3).cos()).collect();
            let mut out = vec![0.0; 5 * c_model];
            let mut p = vec![0.0; s.probs_len(1)];
            attention_forward(&mut out, &mut p, &qkv, s, 1);
            for h in 0..2 {
                for i in 0..5 {
                    let r: Vec<f64> = (0..s.tp())
                        .map(|j| p[s.prob_index(1, 0, h, i, j)])
                        .collect();
                    assert!((r[..=i].iter().sum::<f64>() - 1.0).abs() < 1e-12);
                    assert!(r[i + 1..].iter().all(|v| *v == 0.0));
                }
            }
            // The first query attends only to itself: its output is V of position 0.
            for h in 0..2 {
                let (o, v) = (out[h * hs], qkv[h * 3 * hs + 2 * hs]);
                assert!((o - v).abs() < 1e-12, "c_model {c_model} head {h}");
            }
        }
    }
}
