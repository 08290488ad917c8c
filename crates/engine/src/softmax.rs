//! Softmax cross-entropy over the rows of a logits matrix (a language model's next-token loss).

use crate::reduce::{max, sum};

/// Marks a row without a target: its loss is 0 and its gradient row is zero.
pub const NO_TARGET: u32 = u32::MAX;

crate::multiversion! {
/// For each row `r` of `logits[n, v]` with `targets[r] < v`: `losses[r] = -log softmax(row)[t]`
/// (row max subtracted first, so any finite logits work); the row is overwritten with
/// `dscale * (softmax(row) - onehot(t))`, the gradient of `dscale * losses[r]`. Rows whose
/// target is [`NO_TARGET`] get loss 0 and a zero row. Panics on another target `>= v`.
pub fn cross_entropy_rows<I, T: Float>(
    logits: &mut [T],
    targets: &[u32],
    v: usize,
    losses: &mut [f64],
    dscale: T,
) {
    for ((row, &t), loss) in logits.chunks_exact_mut(v).zip(targets).zip(losses.iter_mut()) {
        if t == NO_TARGET {
            *loss = 0.0;
            row.fill(T::ZERO);
            continue;
        }
        let t = t as usize;
        assert!(t < v, "cross_entropy_rows: target {t} >= vocabulary {v}");
        let mx = max::<I, T>(row);
        let xt = row[t];
        for x in row.iter_mut() {
            *x = *x - mx;
        }
        T::exp_in_place::<I>(row);
        let s = sum::<I, T>(row);
        *loss = s.to_f64().ln() - (xt - mx).to_f64();
        let k = dscale / s;
        for x in row.iter_mut() {
            *x *= k;
        }
        row[t] -= dscale;
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_gradient_match_a_direct_computation() {
        for level in crate::simd::supported() {
            crate::simd::with_level(level, check).unwrap();
        }
    }

    fn check() {
        let v = 7;
        let logits: Vec<f64> = (0..3 * v)
            .map(|i| ((i * 13 % 11) as f64 - 5.0) * 0.7)
            .collect();
        let targets = [2u32, NO_TARGET, 6];
        let mut g = logits.clone();
        let mut losses = [9.0; 3];
        cross_entropy_rows(&mut g, &targets, v, &mut losses, 0.5);
        for (r, &t) in targets.iter().enumerate() {
            let row = &logits[r * v..(r + 1) * v];
            if t == NO_TARGET {
                assert_eq!(losses[r], 0.0);
                assert!(g[r * v..(r + 1) * v].iter().all(|x| *x == 0.0));
                continue;
            }
            let z: f64 = row.iter().map(|x| x.exp()).sum();
            let want = z.ln() - row[t as usize];
            assert!((losses[r] - want).abs() < 1e-12, "{} vs {want}", losses[r]);
            for j in 0..v {
                let p = row[j].exp() / z - if j == t as usize { 1.0 } else { 0.0 };
                assert!((g[r * v + j] - 0.5 * p).abs() < 1e-12);
            }
        }
        // Large logits do not overflow: the row max is subtracted first.
        let mut big = vec![1000.0f32, 999.0, 0.0];
        let mut l = [0.0];
        cross_entropy_rows(&mut big, &[0], 3, &mut l, 1.0);
        assert!((l[0] - (1.0 + (-1f64).exp()).ln()).abs() < 1e-5, "{}", l[0]);
    }
}
