//! Pareto machinery of NSGA-II (Deb, Pratap, Agarwal, Meyarivan, IEEE TEVC 2002): dominance
//! (plain and constrained), the fast non-dominated sort, crowding distance, and the exact
//! hypervolume. Every objective is minimised. Needs no libtorch.

use std::cmp::Ordering;

/// `a` dominates `b`: no worse in every objective and better in one.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        if x < y {
            better = true;
        }
    }
    better
}

/// Deb's constrained domination (2002, §VI): a feasible point (violation 0) beats an
/// infeasible one, of two infeasible points the smaller total violation wins, and two
/// feasible points compare by plain domination.
pub fn constrained_dominates(a: &[f64], va: f64, b: &[f64], vb: f64) -> bool {
    match (va > 0.0, vb > 0.0) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => va < vb,
        (false, false) => dominates(a, b),
    }
}

/// The fast non-dominated sort: the 0-based front of every point, in input order.
/// `violation` (one per point, 0 = feasible) switches to constrained domination.
pub fn non_dominated_ranks(points: &[Vec<f64>], violation: Option<&[f64]>) -> Vec<usize> {
    let n = points.len();
    let v = |i: usize| violation.map_or(0.0, |v| v[i]);
    let mut dominated_by_me: Vec<Vec<usize>> = vec![vec![]; n];
    let mut count = vec![0usize; n];
    for i in 0..n {
        for j in i + 1..n {
            if constrained_dominates(&points[i], v(i), &points[j], v(j)) {
                dominated_by_me[i].push(j);
                count[j] += 1;
            } else if constrained_dominates(&points[j], v(j), &points[i], v(i)) {
                dominated_by_me[j].push(i);
                count[i] += 1;
            }
        }
    }
    let mut rank = vec![usize::MAX; n];
    let mut front: Vec<usize> = (0..n).filter(|&i| count[i] == 0).collect();
    let mut r = 0;
    while !front.is_empty() {
        let mut next = vec![];
        for &p in &front {
            rank[p] = r;
            for &q in &dominated_by_me[p] {
                count[q] -= 1;
                if count[q] == 0 {
                    next.push(q);
                }
            }
        }
        next.sort_unstable();
        front = next;
        r += 1;
    }
    rank
}

/// The points of each front, fronts in rank order, points in input order.
pub fn fronts(ranks: &[usize]) -> Vec<Vec<usize>> {
    let n_fronts = ranks.iter().map(|r| r + 1).max().unwrap_or(0);
    let mut out = vec![vec![]; n_fronts];
    for (i, &r) in ranks.iter().enumerate() {
        out[r].push(i);
    }
    out
}

/// Crowding distance of `members` (indices into `points`, one front), in the order of
/// `members`. Per objective the members are sorted (stably, ties keep member order); the two
/// extremes are infinite and an interior point adds (f[i+1] − f[i−1]) / (f_max − f_min). An
/// objective with f_max = f_min is skipped. Fronts of one or two points are all infinite.
pub fn crowding_distance(points: &[Vec<f64>], members: &[usize]) -> Vec<f64> {
    let n = members.len();
    if n <= 2 {
        return vec![f64::INFINITY; n];
    }
    let mut d = vec![0.0; n];
    let n_obj = points[members[0]].len();
    let columns: Vec<Vec<f64>> = (0..n_obj)
        .map(|m| members.iter().map(|&i| points[i][m]).collect())
        .collect();
    for col in &columns {
        let f = |k: usize| col[k];
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| f(a).partial_cmp(&f(b)).unwrap_or(Ordering::Equal));
        let (lo, hi) = (f(order[0]), f(order[n - 1]));
        if hi <= lo {
            continue;
        }
        d[order[0]] = f64::INFINITY;
        d[order[n - 1]] = f64::INFINITY;
        for w in 1..n - 1 {
            d[order[w]] += (f(order[w + 1]) - f(order[w - 1])) / (hi - lo);
        }
    }
    d
}

/// Crowding distance of every point within its own front, in input order.
pub fn crowding_all(points: &[Vec<f64>], ranks: &[usize]) -> Vec<f64> {
    let mut out = vec![0.0; points.len()];
    for members in fronts(ranks) {
        for (i, c) in members.iter().zip(crowding_distance(points, &members)) {
            out[*i] = c;
        }
    }
    out
}

/// Exact hypervolume of `points` against `reference`: the measure of the union of the boxes
/// [p, reference]. Points not strictly better than the reference in every objective add
/// nothing. Two objectives: a sweep; more: slices along the last objective, each slice the
/// hypervolume of the points below it in one dimension fewer (O(n² log n) in 3-D).
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let inside: Vec<&[f64]> = points
        .iter()
        .map(|p| p.as_slice())
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .collect();
    hv_rec(inside, reference)
}

fn hv_rec(mut pts: Vec<&[f64]>, r: &[f64]) -> f64 {
    let d = r.len();
    if pts.is_empty() {
        return 0.0;
    }
    match d {
        1 => r[0] - pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        2 => {
            pts.sort_by(|a, b| {
                a[0].partial_cmp(&b[0])
                    .unwrap_or(Ordering::Equal)
                    .then(a[1].partial_cmp(&b[1]).unwrap_or(Ordering::Equal))
            });
            let mut area = 0.0;
            let mut best_y = r[1];
            for (i, p) in pts.iter().enumerate() {
                best_y = best_y.min(p[1]);
                let next_x = pts.get(i + 1).map_or(r[0], |q| q[0]);
                area += (next_x - p[0]) * (r[1] - best_y);
            }
            area
        }
        _ => {
            let last = d - 1;
            pts.sort_by(|a, b| a[last].partial_cmp(&b[last]).unwrap_or(Ordering::Equal));
            let mut vol = 0.0;
            for i in 0..pts.len() {
                let z_next = pts.get(i + 1).map_or(r[last], |q| q[last]);
                let depth = z_next - pts[i][last];
                if depth > 0.0 {
                    let slice: Vec<&[f64]> = pts[..=i].iter().map(|p| &p[..last]).collect();
                    vol += depth * hv_rec(slice, &r[..last]);
                }
            }
            vol
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusion_exclusion_cases() {
        let r = [1.0, 1.0, 1.0];
        assert_eq!(hypervolume(&[vec![0.0, 0.0, 0.0]], &r), 1.0);
        let three = vec![
            vec![0.0, 0.5, 0.5],
            vec![0.5, 0.0, 0.5],
            vec![0.5, 0.5, 0.0],
        ];
        // 3·0.25 − 3·0.125 + 0.125 by inclusion–exclusion.
        assert!((hypervolume(&three, &r) - 0.5).abs() < 1e-15);
        let mut with_dominated = three.clone();
        with_dominated.push(vec![0.6, 0.6, 0.6]);
        assert!((hypervolume(&with_dominated, &r) - 0.5).abs() < 1e-15);
        // On the reference in one objective: adds nothing.
        assert_eq!(hypervolume(&[vec![0.0, 1.0]], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn constrained_domination_prefers_feasible_then_smaller_violation() {
        let (good, bad) = (vec![1.0, 1.0], vec![0.0, 0.0]);
        assert!(constrained_dominates(&good, 0.0, &bad, 3.0));
        assert!(!constrained_dominates(&bad, 3.0, &good, 0.0));
        assert!(constrained_dominates(&good, 1.0, &bad, 3.0));
        let ranks = non_dominated_ranks(&[bad.clone(), good.clone()], Some(&[3.0, 0.0]));
        assert_eq!(ranks, vec![1, 0]);
        assert_eq!(non_dominated_ranks(&[bad, good], None), vec![0, 1]);
    }
}
