//! Geometry of a developmental trajectory in a PC plane: osculating circles by central
//! differences (devinterp's `get_osculating_circle`), the evolute (locus of their centres), the
//! curve's vertices (local maxima of curvature, where the evolute has its cusps), and "forms":
//! checkpoints where every PC pair shows a vertex.

/// The osculating circle of a plane curve at an interior index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Osculating {
    pub curvature: f64,
    /// `1 / (curvature + 1e-12)`.
    pub radius: f64,
    pub centre: [f64; 2],
}

/// The osculating circle at `t` (1 <= t <= n - 2) from central differences:
/// `r' = (c[t+1] - c[t-1])/2`, `r'' = c[t+1] - 2 c[t] + c[t-1]`, `kappa = |r' x r''|/|r'|^3`,
/// centre on the normal towards which the curve turns.
pub fn osculating(curve: &[[f64; 2]], t: usize) -> Osculating {
    let (a, b, c) = (curve[t - 1], curve[t], curve[t + 1]);
    let d1 = [(c[0] - a[0]) / 2.0, (c[1] - a[1]) / 2.0];
    let d2 = [c[0] - 2.0 * b[0] + a[0], c[1] - 2.0 * b[1] + a[1]];
    let cross = d1[0] * d2[1] - d1[1] * d2[0];
    let speed = (d1[0] * d1[0] + d1[1] * d1[1]).sqrt();
    let curvature = if speed > 0.0 {
        cross.abs() / speed.powi(3)
    } else {
        0.0
    };
    let radius = 1.0 / (curvature + 1e-12);
    let tangent = if speed > 0.0 {
        [d1[0] / speed, d1[1] / speed]
    } else {
        [0.0, 0.0]
    };
    let normal = if cross >= 0.0 {
        [-tangent[1], tangent[0]]
    } else {
        [tangent[1], -tangent[0]]
    };
    Osculating {
        curvature,
        radius,
        centre: [b[0] + radius * normal[0], b[1] + radius * normal[1]],
    }
}

/// Osculating circles at every interior index `1..n-1` (entry `i` is index `i + 1`).
pub fn osculating_circles(curve: &[[f64; 2]]) -> Vec<Osculating> {
    (1..curve.len().saturating_sub(1))
        .map(|t| osculating(curve, t))
        .collect()
}

/// Vertices: interior indices where the curvature is a strict local maximum, at least
/// `min_ratio` times the median curvature (sharp turns; the evolute has a cusp there), and the
/// curve moves at least `min_speed` times its median speed (where it barely moves, the
/// curvature of its jitter means nothing; but a true cusp of the curve is also slow, so 0 keeps
/// those).
pub fn vertices(curve: &[[f64; 2]], min_ratio: f64, min_speed: f64) -> Vec<usize> {
    let k: Vec<f64> = osculating_circles(curve)
        .iter()
        .map(|o| o.curvature)
        .collect();
    if k.len() < 3 {
        return vec![];
    }
    let speed = speeds(curve);
    let (mk, ms) = (median(&k), median(&speed));
    (1..k.len() - 1)
        .filter(|&i| {
            k[i] > k[i - 1]
                && k[i] > k[i + 1]
                && k[i] >= min_ratio * mk
                && speed[i] >= min_speed * ms
        })
        .map(|i| i + 1)
        .collect()
}

/// The jump between consecutive osculating centres, `|c[t+1] - c[t-1]| / 2`, at curve indices
/// `2..n-2`, and the curve's speed there.
fn centre_jumps(curve: &[[f64; 2]]) -> (Vec<f64>, Vec<f64>) {
    let o = osculating_circles(curve);
    let jump = (1..o.len().saturating_sub(1))
        .map(|i| {
            let (a, c) = (o[i - 1].centre, o[i + 1].centre);
            ((c[0] - a[0]).powi(2) + (c[1] - a[1]).powi(2)).sqrt() / 2.0
        })
        .collect();
    let speed = speeds(curve);
    let inner = if speed.len() >= 2 {
        speed[1..speed.len() - 1].to_vec()
    } else {
        vec![]
    };
    (jump, inner)
}

/// `|c[t+1] - c[t-1]| / 2` at the interior indices `1..n-1`.
fn speeds(curve: &[[f64; 2]]) -> Vec<f64> {
    (1..curve.len().saturating_sub(1))
        .map(|t| {
            let (a, c) = (curve[t - 1], curve[t + 1]);
            ((c[0] - a[0]).powi(2) + (c[1] - a[1]).powi(2)).sqrt() / 2.0
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// Cusps of the evolute: where the locus of centres stops and turns back, i.e. strict local
/// minima of the centre jump at most `1/min_ratio` of its median (mathematically the curve's
/// vertices, found from the evolute side), with the speed filter of [`vertices`].
pub fn evolute_cusps(curve: &[[f64; 2]], min_ratio: f64, min_speed: f64) -> Vec<usize> {
    let (jump, speed) = centre_jumps(curve);
    if jump.len() < 3 {
        return vec![];
    }
    let (mj, ms) = (median(&jump), median(&speed));
    (1..jump.len() - 1)
        .filter(|&i| {
            jump[i] < jump[i - 1]
                && jump[i] < jump[i + 1]
                && jump[i] * min_ratio <= mj
                && speed[i] >= min_speed * ms
        })
        .map(|i| i + 2)
        .collect()
}

/// The evolute's jumps as devinterp's helper ranks "cusps": strict local maxima of the centre
/// jump at least `min_ratio` times its median (the centre runs away where the curvature changes
/// fastest relative to itself, near inflections), with the same speed filter.
pub fn evolute_jumps(curve: &[[f64; 2]], min_ratio: f64, min_speed: f64) -> Vec<usize> {
    let (jump, speed) = centre_jumps(curve);
    if jump.len() < 3 {
        return vec![];
    }
    let (mj, ms) = (median(&jump), median(&speed));
    (1..jump.len() - 1)
        .filter(|&i| {
            jump[i] > jump[i - 1]
                && jump[i] > jump[i + 1]
                && jump[i].is_finite()
                && jump[i] >= min_ratio * mj
                && speed[i] >= min_speed * ms
        })
        .map(|i| i + 2)
        .collect()
}

/// Forms: indices where every pair's vertex list has a vertex within `window` indices. Each
/// form is reported once, at the mean position of the vertices that make it up.
pub fn forms(vertex_lists: &[Vec<usize>], window: usize) -> Vec<usize> {
    let Some((first, rest)) = vertex_lists.split_first() else {
        return vec![];
    };
    let mut out: Vec<usize> = Vec::new();
    for &v in first {
        let mut members = vec![v];
        let all = rest.iter().all(|list| {
            let near = list
                .iter()
                .copied()
                .filter(|u| u.abs_diff(v) <= window)
                .min_by_key(|u| u.abs_diff(v));
            near.map(|u| members.push(u)).is_some()
        });
        if all {
            let at = members.iter().sum::<usize>() / members.len();
            if out.last().is_none_or(|&l| at.abs_diff(l) > window) {
                out.push(at);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a circle of radius 2 the curvature is 1/2 and every centre is the circle's centre
    /// (up to the central differences' O(h^2) error).
    #[test]
    fn circle_has_constant_curvature_and_a_point_evolute() {
        let n = 400;
        let curve: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let a = i as f64 * 0.01;
                [3.0 + 2.0 * a.cos(), -1.0 + 2.0 * a.sin()]
            })
            .collect();
        for o in osculating_circles(&curve) {
            assert!((o.curvature - 0.5).abs() < 1e-4, "{}", o.curvature);
            assert!((o.centre[0] - 3.0).abs() < 1e-3 && (o.centre[1] + 1.0).abs() < 1e-3);
        }
        // Clockwise traversal: the centre is still inside.
        let rev: Vec<[f64; 2]> = curve.iter().rev().copied().collect();
        let o = osculating(&rev, 100);
        assert!((o.centre[0] - 3.0).abs() < 1e-3 && (o.centre[1] + 1.0).abs() < 1e-3);
        // A straight line: zero curvature, radius 1e12.
        let line: Vec<[f64; 2]> = (0..5).map(|i| [i as f64, 2.0 * i as f64]).collect();
        assert_eq!(osculating(&line, 2).curvature, 0.0);
    }

    /// The parabola y = x^2 has its only vertex at x = 0 (curvature 2, evolute cusp at (0, 1/2)).
    #[test]
    fn parabola_vertex_and_evolute_cusp() {
        let curve: Vec<[f64; 2]> = (-100..=100)
            .map(|i| {
                let x = i as f64 * 0.02;
                [x, x * x]
            })
            .collect();
        let v = vertices(&curve, 1.0, 0.1);
        assert_eq!(v, vec![100]);
        let o = osculating(&curve, 100);
        assert!((o.curvature - 2.0).abs() < 1e-3);
        assert!(o.centre[0].abs() < 1e-9 && (o.centre[1] - 0.5).abs() < 1e-3);
        // A wiggle where the curve stands still is no vertex.
        let mut still = curve.clone();
        for (i, p) in still.iter_mut().enumerate().take(40) {
            *p = [-2.0 + 1e-9 * (i % 3) as f64, 4.0 + 1e-9 * (i % 2) as f64];
        }
        assert_eq!(vertices(&still, 1.0, 0.1), vec![100]);
    }

    /// The ellipse (2 cos s, sin s) has four vertices; the sharp ones (curvature 2 at s = pi,
    /// 2 pi) pass a 2x-median threshold, the flat ones (curvature 1/4, minima) do not.
    #[test]
    fn ellipse_vertices() {
        let n = 1000;
        let curve: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let s = 0.3 + 2.0 * std::f64::consts::PI * i as f64 / n as f64;
                [2.0 * s.cos(), s.sin()]
            })
            .collect();
        let v = vertices(&curve, 2.0, 0.1);
        let pi = std::f64::consts::PI;
        let at = |i: usize| 0.3 + 2.0 * pi * i as f64 / n as f64;
        assert_eq!(v.len(), 2, "{v:?}");
        assert!((at(v[0]) - pi).abs() < 0.01, "{}", at(v[0]));
        assert!((at(v[1]) - 2.0 * pi).abs() < 0.01, "{}", at(v[1]));
    }

    /// The semicubical parabola (t^2, t^3) has a cusp at t = 0 (curvature without bound); the
    /// ellipse's evolute (an astroid) has its four cusps at the ellipse's vertices, and its
    /// largest jumps between them.
    #[test]
    fn known_cusps() {
        let cusp: Vec<[f64; 2]> = (-100..=100)
            .map(|i| {
                let t = i as f64 * 0.01 + 0.005;
                [t * t, t * t * t]
            })
            .collect();
        // The cusp is where the curve stops: found with the speed filter off, not with it on.
        let v = vertices(&cusp, 2.0, 0.0);
        assert!(v.iter().any(|&i| (99..=101).contains(&i)), "{v:?}");
        assert!(
            !vertices(&cusp, 2.0, 0.1)
                .iter()
                .any(|&i| (99..=101).contains(&i))
        );
        let n = 1000;
        let pi = std::f64::consts::PI;
        let ellipse: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let s = 0.3 + 2.0 * pi * i as f64 / n as f64;
                [2.0 * s.cos(), s.sin()]
            })
            .collect();
        let c = evolute_cusps(&ellipse, 1.0, 0.1);
        let at = |i: usize| 0.3 + 2.0 * pi * i as f64 / n as f64;
        let found: Vec<f64> = c.iter().map(|&i| at(i)).collect();
        assert_eq!(found.len(), 4, "{found:?}");
        for target in [pi / 2.0, pi, 1.5 * pi, 2.0 * pi] {
            assert!(
                found.iter().any(|s| (s - target).abs() < 0.02),
                "{target}: {found:?}"
            );
        }
        // The largest jumps lie between the vertices, symmetric about pi/2 and 3 pi/2.
        let j: Vec<f64> = evolute_jumps(&ellipse, 1.0, 0.1)
            .iter()
            .map(|&i| at(i))
            .collect();
        assert_eq!(j.len(), 4, "{j:?}");
        assert!(
            (j[0] + j[1] - pi).abs() < 0.02 && (j[2] + j[3] - 3.0 * pi).abs() < 0.02,
            "{j:?}"
        );
        assert!(
            j.iter()
                .all(|s| (s - pi / 2.0).abs() > 0.3 && (s - pi).abs() > 0.3)
        );
    }

    #[test]
    fn forms_need_a_vertex_in_every_pair() {
        let lists = vec![vec![10, 50, 90], vec![12, 88], vec![9, 51, 91]];
        assert_eq!(forms(&lists, 3), vec![10, 89]);
        assert_eq!(forms(&lists, 1), Vec::<usize>::new());
        assert!(forms(&[], 3).is_empty());
    }
}
