//! Causal multi-head self-attention on a fused QKV projection, with the reference's layout:
//! head `h` reads Q from features `[h*3c, h*3c+c)`, K from `[h*3c+c, h*3c+2c)` and V from
//! `[h*3c+2c, (h+1)*3c)` of each `3C`-wide row, and writes its output to features `[h*c, (h+1)*c)`.

use crate::Float;

/// Shapes of one attention call: `nseq` sequences of `t` tokens, width `c_model`, `heads` heads.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub nseq: usize,
    pub t: usize,
    pub c_model: usize,
    pub heads: usize,
}

impl AttnShape {
    fn head_size(&self) -> usize {
        self.c_model / self.heads
    }
}

/// `out[nseq,t,C]` and the softmax `probs[nseq,heads,t,t]` (zero above the diagonal) from
/// `qkv[nseq,t,3C]`. Scores are scaled by `1/sqrt(c)`.
///
/// `query_rows`, when given, restricts the computed query positions to those with
/// `pos % query_stride == 0` (rows whose outputs nothing downstream reads stay untouched).
pub fn attention_forward<T: Float>(
    out: &mut [T],
    probs: &mut [T],
    qkv: &[T],
    s: AttnShape,
    query_stride: usize,
) {
    let (t, c3, cm, hs) = (s.t, 3 * s.c_model, s.c_model, s.head_size());
    let scale = T::from_f64(1.0 / (hs as f64).sqrt());
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        for h in 0..s.heads {
            let p_bh = &mut probs[(b * s.heads + h) * t * t..(b * s.heads + h + 1) * t * t];
            for i in (0..t).step_by(query_stride) {
                let q = &qkv_b[i * c3 + h * 3 * hs..i * c3 + h * 3 * hs + hs];
                let prow = &mut p_bh[i * t..(i + 1) * t];
                let mut mx = T::from_f64(f64::NEG_INFINITY);
                for j in 0..=i {
                    let k = &qkv_b[j * c3 + h * 3 * hs + hs..j * c3 + h * 3 * hs + 2 * hs];
                    let mut d = T::ZERO;
                    for e in 0..hs {
                        d += q[e] * k[e];
                    }
                    let v = d * scale;
                    prow[j] = v;
                    mx = mx.max(v);
                }
                let mut sum = T::ZERO;
                for pj in prow[..=i].iter_mut() {
                    *pj = (*pj - mx).exp();
                    sum += *pj;
                }
                let inv = T::ONE / sum;
                for pj in prow[..=i].iter_mut() {
                    *pj *= inv;
                }
                prow[i + 1..].fill(T::ZERO);
                let o = &mut out[(b * t + i) * cm + h * hs..(b * t + i) * cm + (h + 1) * hs];
                o.fill(T::ZERO);
                for j in 0..=i {
                    let v = &qkv_b[j * c3 + h * 3 * hs + 2 * hs..j * c3 + (h + 1) * 3 * hs];
                    let p = prow[j];
                    for e in 0..hs {
                        o[e] += p * v[e];
                    }
                }
            }
        }
    }
}

/// Backward of `attention_forward`: overwrites `dqkv[nseq,t,3C]` from `dout[nseq,t,C]`.
/// Query rows skipped in the forward pass (by `query_stride`) must have zero `dout`.
pub fn attention_backward<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    probs: &[T],
    s: AttnShape,
    query_stride: usize,
) {
    let (t, c3, cm, hs) = (s.t, 3 * s.c_model, s.c_model, s.head_size());
    let scale = T::from_f64(1.0 / (hs as f64).sqrt());
    dqkv[..s.nseq * t * c3].fill(T::ZERO);
    let mut dp = vec![T::ZERO; t];
    for b in 0..s.nseq {
        let qkv_b = &qkv[b * t * c3..(b + 1) * t * c3];
        let dqkv_b = &mut dqkv[b * t * c3..(b + 1) * t * c3];
        for h in 0..s.heads {
            let p_bh = &probs[(b * s.heads + h) * t * t..(b * s.heads + h + 1) * t * t];
            let (qo, ko, vo) = (h * 3 * hs, h * 3 * hs + hs, h * 3 * hs + 2 * hs);
            for i in (0..t).step_by(query_stride) {
                let dy = &dout[(b * t + i) * cm + h * hs..(b * t + i) * cm + (h + 1) * hs];
                let prow = &p_bh[i * t..(i + 1) * t];
                // dP[j] = dy . v_j ; dV_j += P[j] dy
                let mut pdp = T::ZERO;
                for j in 0..=i {
                    let v = &qkv_b[j * c3 + vo..j * c3 + vo + hs];
                    let mut d = T::ZERO;
                    for e in 0..hs {
                        d += dy[e] * v[e];
                    }
                    dp[j] = d;
                    pdp += prow[j] * d;
                    let p = prow[j];
                    let dv = &mut dqkv_b[j * c3 + vo..j * c3 + vo + hs];
                    for e in 0..hs {
                        dv[e] += p * dy[e];
                    }
                }
                // dS[j] = P[j] (dP[j] - sum_j P dP); dQ_i += scale dS K_j; dK_j += scale dS Q_i
                for j in 0..=i {
                    let ds = prow[j] * (dp[j] - pdp) * scale;
                    for e in 0..hs {
                        let kv = qkv_b[j * c3 + ko + e];
                        let qv = qkv_b[i * c3 + qo + e];
                        dqkv_b[i * c3 + qo + e] += ds * kv;
                        dqkv_b[j * c3 + ko + e] += ds * qv;
                    }
                }
            }
        }
    }
}
