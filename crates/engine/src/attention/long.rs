//! Long sequences (a language model's hundreds to thousands of tokens, every query row): per
//! (sequence, head) the five products are GEMMs on blocks of `BQ` query rows, each over the
//! causal prefix of keys up to the block's last row, read in place from the fused QKV rows.
//! The softmax and its backward run row by row on whole 8-lane chunks (`softmax.rs`).

use super::{AttnShape, softmax};
use crate::Float;
use crate::matmul::{Strided, matmul_strided};
use crate::simd::Isa;

/// Query rows per block: the GEMMs see `BQ x (a1)` score blocks; the wasted upper triangle of
/// the diagonal block is `BQ^2 / 2` of each block's `BQ * a1`.
const BQ: usize = 64;

#[inline(always)]
pub(super) fn forward<I: Isa, T: Float>(out: &mut [T], probs: &mut [T], qkv: &[T], s: AttnShape) {
    let (t, c3, cm, hs, tp) = (s.t, 3 * s.c_model, s.c_model, s.head_size(), s.tp());
    let scale = T::from_f64(1.0 / (hs as f64).sqrt());
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        let out_b = &mut out[b * t * cm..(b + 1) * t * cm];
        for h in 0..s.heads {
            let (q, k, v) = (h * 3 * hs, h * 3 * hs + hs, h * 3 * hs + 2 * hs);
            let p_bh = &mut probs[(b * s.heads + h) * t * tp..(b * s.heads + h + 1) * t * tp];
            for a0 in (0..t).step_by(BQ) {
                let a1 = (a0 + BQ).min(t);
                let rows = a1 - a0;
                // S[a0..a1, 0..a1] = Q[a0..a1] K[0..a1]^T
                matmul_strided(
                    Strided {
                        data: &mut p_bh[a0 * tp..],
                        rs: tp,
                    },
                    Strided {
                        data: &qkv_b[a0 * c3 + q..],
                        rs: c3,
                    },
                    Strided {
                        data: &qkv_b[k..],
                        rs: c3,
                    },
                    (rows, a1, hs),
                    false,
                    true,
                    false,
                );
                for i in a0..a1 {
                    softmax::forward_row::<I, T>(&mut p_bh[i * tp..(i + 1) * tp], i, scale);
                }
                // Y[a0..a1] = P[a0..a1, 0..a1] V[0..a1]
                matmul_strided(
                    Strided {
                        data: &mut out_b[a0 * cm + h * hs..],
                        rs: cm,
                    },
                    Strided {
                        data: &p_bh[a0 * tp..],
                        rs: tp,
                    },
                    Strided {
                        data: &qkv_b[v..],
                        rs: c3,
                    },
                    (rows, hs, a1),
                    false,
                    false,
                    false,
                );
            }
        }
    }
}

#[inline(always)]
pub(super) fn backward<I: Isa, T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    probs: &[T],
    s: AttnShape,
) {
    let (t, c3, cm, hs, tp) = (s.t, 3 * s.c_model, s.c_model, s.head_size(), s.tp());
    let scale = T::from_f64(1.0 / (hs as f64).sqrt());
    let mut ds = vec![T::ZERO; BQ * tp];
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        let dout_b = &dout[b * t * cm..(b + 1) * t * cm];
        let dqkv_b = &mut dqkv[b * t * c3..(b + 1) * t * c3];
        for h in 0..s.heads {
            let (q, k, v) = (h * 3 * hs, h * 3 * hs + hs, h * 3 * hs + 2 * hs);
            let p_bh = &probs[(b * s.heads + h) * t * tp..(b * s.heads + h + 1) * t * tp];
            for i in 0..t {
                dqkv_b[i * c3 + k..i * c3 + v + hs].fill(T::ZERO);
            }
            for a0 in (0..t).step_by(BQ) {
                let a1 = (a0 + BQ).min(t);
                let rows = a1 - a0;
                // dP = dY[a0..a1] V[0..a1]^T
                matmul_strided(
                    Strided {
                        data: &mut ds[..],
                        rs: tp,
                    },
                    Strided {
                        data: &dout_b[a0 * cm + h * hs..],
                        rs: cm,
                    },
                    Strided {
                        data: &qkv_b[v..],
                        rs: c3,
                    },
                    (rows, a1, hs),
                    false,
                    true,
                    false,
                );
                // dS = P (dP - sum_j P dP) / sqrt(c), zero after each row's position
                for i in a0..a1 {
                    let d = &mut ds[(i - a0) * tp..(i - a0 + 1) * tp];
                    softmax::backward_row::<I, T>(d, &p_bh[i * tp..], i, scale);
                }
                // dV[0..a1] += P[a0..a1]^T dY[a0..a1]
                matmul_strided(
                    Strided {
                        data: &mut dqkv_b[v..],
                        rs: c3,
                    },
                    Strided {
                        data: &p_bh[a0 * tp..],
                        rs: tp,
                    },
                    Strided {
                        data: &dout_b[a0 * cm + h * hs..],
                        rs: cm,
                    },
                    (a1, hs, rows),
                    true,
                    false,
                    true,
                );
                // dK[0..a1] += dS^T Q[a0..a1]
                matmul_strided(
                    Strided {
                        data: &mut dqkv_b[k..],
                        rs: c3,
                    },
                    Strided {
                        data: &ds[..],
                        rs: tp,
                    },
                    Strided {
                        data: &qkv_b[a0 * c3 + q..],
                        rs: c3,
                    },
                    (a1, hs, rows),
                    true,
                    false,
                    true,
                );
                // dQ[a0..a1] = dS K[0..a1]
                matmul_strided(
                    Strided {
                        data: &mut dqkv_b[a0 * c3 + q..],
                        rs: c3,
                    },
                    Strided {
                        data: &ds[..],
                        rs: tp,
                    },
                    Strided {
                        data: &qkv_b[k..],
                        rs: c3,
                    },
                    (rows, hs, a1),
                    false,
                    false,
                    false,
                );
            }
        }
    }
}
