//! Variable-sigma Gaussian smoothing along the checkpoint axis, as the reference's
//! `gaussian_filter1d_variable_sigma` (scipy's `gaussian_filter1d`, mode "reflect", truncate 4,
//! applied per index with that index's sigma).

/// scipy's order-0 kernel: `exp(-x^2 / (2 sigma^2))` for integer `x` in `[-r, r]`, normalised.
pub fn gaussian_kernel(sigma: f64, radius: usize) -> Vec<f64> {
    let r = radius as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp())
        .collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// scipy's radius `int(truncate * sigma + 0.5)`.
pub fn radius(sigma: f64, truncate: f64) -> usize {
    (truncate * sigma + 0.5) as usize
}

/// scipy's "reflect" (half-sample symmetric) index into a window of length `len`.
fn reflect(j: i64, len: i64) -> usize {
    let p = 2 * len;
    let m = j.rem_euclid(p);
    (if m >= len { p - 1 - m } else { m }) as usize
}

/// Smooths the rows of `x[n, d]` (row i = checkpoint i) with a Gaussian of width `sigma[i]` at
/// row i. Row i is the centre of scipy's filter applied to the window
/// `[max(0, i - r_i), min(n, i + r_i + 1))` with reflection at the window's ends, exactly as the
/// reference computes it.
pub fn smooth_variable(x: &[f64], n: usize, d: usize, sigma: &[f64], truncate: f64) -> Vec<f64> {
    assert_eq!(x.len(), n * d, "x must be n x d");
    assert_eq!(sigma.len(), n, "one sigma per row");
    let mut out = vec![0.0; n * d];
    for i in 0..n {
        let r = radius(sigma[i], truncate);
        let start = i.saturating_sub(r);
        let end = (i + r + 1).min(n);
        let len = (end - start) as i64;
        let kernel = gaussian_kernel(sigma[i], r);
        let centre = (i - start) as i64;
        let row = &mut out[i * d..(i + 1) * d];
        for (o, k) in kernel.iter().enumerate() {
            let src = start + reflect(centre + o as i64 - r as i64, len);
            for (v, s) in row.iter_mut().zip(&x[src * d..(src + 1) * d]) {
                *v += k * s;
            }
        }
    }
    out
}

/// `linspace(lo, hi, n)`: the reference's sigma schedule (e.g. 0.1 to 300 over 5000 checkpoints).
pub fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![lo],
        _ => (0..n)
            .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_matches_scipy() {
        // scipy.ndimage._filters._gaussian_kernel1d(1.0, 0, 4)
        let k = gaussian_kernel(1.0, 4);
        let want = [
            0.00013383062461474176,
            0.0044318616200312655,
            0.05399112742070441,
            0.24197144565660073,
            0.39894346935609776,
        ];
        for (a, b) in k.iter().zip(want.iter().chain(want.iter().rev().skip(1))) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
        assert_eq!(radius(0.1, 4.0), 0);
        assert_eq!(radius(1.0, 4.0), 4);
        assert_eq!(radius(2.4, 4.0), 10);
    }

    #[test]
    fn reflect_is_half_sample_symmetric() {
        // d c b a | a b c d | d c b a
        let idx: Vec<usize> = (-4..8).map(|j| reflect(j, 4)).collect();
        assert_eq!(idx, [3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
        assert_eq!(reflect(-1, 1), 0);
    }

    /// Constant sigma in the interior is an ordinary convolution; a linear signal is preserved
    /// there (symmetric kernel); sigma 0.1 is the identity; a constant stays constant even at
    /// the ends (reflection).
    #[test]
    fn analytic_cases() {
        let n = 40;
        let lin: Vec<f64> = (0..n).map(|i| 3.0 + 0.5 * i as f64).collect();
        let s = smooth_variable(&lin, n, 1, &vec![1.5; n], 4.0);
        for i in 7..n - 7 {
            assert!((s[i] - lin[i]).abs() < 1e-12, "row {i}");
        }
        assert_eq!(smooth_variable(&lin, n, 1, &vec![0.1; n], 4.0), lin);
        let c = smooth_variable(&vec![2.0; 2 * n], n, 2, &linspace(0.1, 30.0, n), 4.0);
        assert!(c.iter().all(|v| (v - 2.0).abs() < 1e-12));
        // A unit impulse spreads into the kernel of the centre row's sigma.
        let mut imp = vec![0.0; n];
        imp[20] = 1.0;
        let s = smooth_variable(&imp, n, 1, &vec![2.0; n], 4.0);
        let k = gaussian_kernel(2.0, 8);
        for j in 12..=28 {
            assert!((s[j] - k[j + 8 - 20]).abs() < 1e-15);
        }
    }

    /// With one sigma for all rows the windows only ever reflect at the array's ends, so the
    /// result is scipy's `gaussian_filter1d(x, 2.0)` (mode "reflect") on the whole array
    /// (values printed by scipy 1.17.1).
    #[test]
    fn constant_sigma_matches_scipy() {
        let x: Vec<f64> = (0..12).map(|i| (i * i) as f64).collect();
        let want = [
            2.8369127726228585,
            4.461402365873323,
            7.78886871047365,
            12.930587628703899,
            19.97901157770195,
            28.98010016223809,
            39.909205298797474,
            52.58311196984996,
            66.43402934200041,
            80.1744942227047,
            91.6427682968972,
            98.27950765213652,
        ];
        let s = smooth_variable(&x, 12, 1, &[2.0; 12], 4.0);
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-12 * b, "{a} vs {b}");
        }
        // scipy: gaussian_filter1d([0., 1, 4, 9, 16], 1.0)[1] = 1.9307676588016667
        let s = smooth_variable(&[0.0, 1.0, 4.0, 9.0, 16.0], 5, 1, &[1.0; 5], 4.0);
        assert!((s[1] - 1.9307676588016667).abs() < 1e-14);
    }
}
