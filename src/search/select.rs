//! Choosing architectures from a front: the high trade-off points of MSuNAS (Lu et al.,
//! ECCV 2020), plus the most accurate point.
//!
//! In objectives min-max normalised over the front, a point's neighbours are the points
//! within ε (Euclidean). Against each neighbour, sacrifice = Σ max(0, Δf) and
//! gain = Σ max(0, −Δf) (Δf = neighbour − point); the point's trade-off μ is the smallest
//! sacrifice / gain over its neighbours. A large μ means moving away from the point costs
//! much more than it buys: a knee. muxmed's one addition: a point with no neighbour within ε
//! (common on the small fronts of short searches) is compared with its nearest neighbour,
//! so every point of a front of two or more has a μ.

/// μ of every point of `front` (all objectives minimised), in input order.
pub fn tradeoffs(front: &[Vec<f64>], eps: f64) -> Vec<f64> {
    let n = front.len();
    if n == 0 {
        return vec![];
    }
    let m = front[0].len();
    let (lo, hi): (Vec<f64>, Vec<f64>) = (0..m)
        .map(|k| {
            let col = front.iter().map(|p| p[k]);
            (
                col.clone().fold(f64::INFINITY, f64::min),
                col.fold(f64::NEG_INFINITY, f64::max),
            )
        })
        .unzip();
    let norm: Vec<Vec<f64>> = front
        .iter()
        .map(|p| {
            (0..m)
                .map(|k| {
                    let span = hi[k] - lo[k];
                    if span > 0.0 {
                        (p[k] - lo[k]) / span
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let dist = |i: usize, j: usize| -> f64 {
        (0..m)
            .map(|k| (norm[j][k] - norm[i][k]).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    (0..n)
        .map(|i| {
            let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            let nearest = others
                .iter()
                .map(|&j| dist(i, j))
                .fold(f64::INFINITY, f64::min);
            // A small front can leave a point alone within ε: its nearest neighbour stands in.
            let radius = eps.max(nearest);
            let mut mu = f64::INFINITY;
            let mut any = false;
            for &j in others.iter().filter(|&&j| dist(i, j) <= radius) {
                any = true;
                let d: Vec<f64> = (0..m).map(|k| norm[j][k] - norm[i][k]).collect();
                let sacrifice: f64 = d.iter().map(|x| x.max(0.0)).sum();
                let gain: f64 = d.iter().map(|x| (-x).max(0.0)).sum();
                mu = mu.min(if gain > 0.0 {
                    sacrifice / gain
                } else {
                    f64::INFINITY
                });
            }
            if any {
                mu
            } else {
                0.0
            }
        })
        .collect()
}

/// Indices (into `front`) of the `n` highest trade-off points, best first, then the most
/// accurate point (smallest objective 0) if it is not among them.
pub fn high_tradeoff(front: &[Vec<f64>], n: usize, eps: f64) -> Vec<usize> {
    let mu = tradeoffs(front, eps);
    let mut order: Vec<usize> = (0..front.len()).collect();
    order.sort_by(|&a, &b| {
        mu[b]
            .partial_cmp(&mu[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    order.truncate(n);
    let best = (0..front.len()).min_by(|&a, &b| {
        front[a][0]
            .partial_cmp(&front[b][0])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    if let Some(b) = best {
        if !order.contains(&b) {
            order.push(b);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knee_of_a_bent_front_wins() {
        // A front along two straight arms meeting at (0.2, 0.2): leaving the corner costs
        // far more in one objective than it gains in the other.
        let front = vec![
            vec![0.0, 1.0],
            vec![0.1, 0.6],
            vec![0.2, 0.2],
            vec![0.6, 0.1],
            vec![1.0, 0.0],
        ];
        let mu = tradeoffs(&front, 0.5);
        // From (0.2,0.2) to (0.1,0.6): gain 0.1, sacrifice 0.4 -> 4; to (0.6,0.1): 0.4/0.1.
        assert!((mu[2] - 4.0).abs() < 1e-12, "{mu:?}");
        assert_eq!(high_tradeoff(&front, 1, 0.5), vec![2, 0]);
        // A lone point has no neighbours.
        assert_eq!(tradeoffs(&[vec![1.0, 2.0]], 0.1), vec![0.0]);
        // Far apart (ε = 0.01), each point is compared with its nearest. The front spans
        // [0,1] in both objectives, so normalising changes nothing. (0.5,0.4)'s nearest is
        // (1,0) (distance √0.41 < √0.61): Δ = (0.5, −0.4), sacrifice 0.5 / gain 0.4.
        let spread = vec![vec![0.0, 1.0], vec![0.5, 0.4], vec![1.0, 0.0]];
        let mu = tradeoffs(&spread, 0.01);
        assert!((mu[1] - 1.25).abs() < 1e-12, "{mu:?}");
        assert!(mu.iter().all(|v| *v > 0.0), "{mu:?}");
    }
}
