//! Plain loops for any head size: the path for unusual sizes and the tests' oracle.

use super::AttnShape;
use crate::Float;

pub(super) fn forward<T: Float>(
    out: &mut [T],
    probs: &mut [T],
    qkv: &[T],
    s: AttnShape,
    stride: usize,
) {
    let (t, c3, cm, hs, tp, na) = (
        s.t,
        3 * s.c_model,
        s.c_model,
        s.head_size(),
        s.tp(),
        s.active_rows(stride),
    );
    let scale = 1.0 / (hs as f64).sqrt();
    let at = |b: usize, i: usize, f: usize| qkv[(b * t + i) * c3 + f];
    for b in 0..s.nseq {
        for h in 0..s.heads {
            for a in 0..na {
                let i = a * stride;
                let p = &mut probs
                    [((b * s.heads + h) * na + a) * tp..((b * s.heads + h) * na + a + 1) * tp];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..hs)
                            .map(|e| {
                                (at(b, i, h * 3 * hs + e) * at(b, j, h * 3 * hs + hs + e)).to_f64()
                            })
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let mx = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|v| (v - mx).exp()).sum();
                p.fill(T::ZERO);
                for (j, v) in scores.iter().enumerate() {
                    p[j] = T::from_f64((v - mx).exp() / z);
                }
                for e in 0..hs {
                    let o: T = (0..=i)
                        .map(|j| p[j] * at(b, j, h * 3 * hs + 2 * hs + e))
                        .sum();
                    out[(b * t + i) * cm + h * hs + e] = o;
                }
            }
        }
    }
}

pub(super) fn backward<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    probs: &[T],
    s: AttnShape,
    stride: usize,
) {
    let (t, c3, cm, hs, tp, na) = (
        s.t,
        3 * s.c_model,
        s.c_model,
        s.head_size(),
        s.tp(),
        s.active_rows(stride),
    );
    let scale = T::from_f64(1.0 / (hs as f64).sqrt());
    dqkv[..s.nseq * t * c3].fill(T::ZERO);
    for b in 0..s.nseq {
        for h in 0..s.heads {
            let (qo, ko, vo) = (h * 3 * hs, h * 3 * hs + hs, h * 3 * hs + 2 * hs);
            for a in 0..na {
                let i = a * stride;
                let p = &probs[((b * s.heads + h) * na + a) * tp..];
                let dy = |e: usize| dout[(b * t + i) * cm + h * hs + e];
                let dp: Vec<T> = (0..=i)
                    .map(|j| {
                        (0..hs)
                            .map(|e| dy(e) * qkv[(b * t + j) * c3 + vo + e])
                            .sum()
                    })
                    .collect();
                let pdp: T = (0..=i).map(|j| p[j] * dp[j]).sum();
                for j in 0..=i {
                    let ds = p[j] * (dp[j] - pdp) * scale;
                    for e in 0..hs {
                        let (kv, qv) = (
                            qkv[(b * t + j) * c3 + ko + e],
                            qkv[(b * t + i) * c3 + qo + e],
                        );
                        dqkv[(b * t + i) * c3 + qo + e] += ds * kv;
                        dqkv[(b * t + j) * c3 + ko + e] += ds * qv;
                        dqkv[(b * t + j) * c3 + vo + e] += p[j] * dy(e);
                    }
                }
            }
        }
    }
}
