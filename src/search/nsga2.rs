//! NSGA-II's selection and variation (Deb et al. 2002) for categorical genomes: binary
//! tournament on (rank, crowding), two-point crossover, per-gene resampling mutation, and
//! elitist (μ+λ) survival that fills fronts in order and cuts the last by crowding.

use rand::Rng;

use super::pareto::{crowding_all, non_dominated_ranks};

/// Ranks (constrained domination) and crowding distances of a set of points.
pub fn rank_and_crowd(points: &[Vec<f64>], violation: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let ranks = non_dominated_ranks(points, Some(violation));
    let crowd = crowding_all(points, &ranks);
    (ranks, crowd)
}

/// The `mu` survivors (indices into `points`), best first: whole fronts while they fit,
/// then the last front's points by descending crowding distance (ties keep input order).
pub fn survive(points: &[Vec<f64>], violation: &[f64], mu: usize) -> Vec<usize> {
    let (ranks, crowd) = rank_and_crowd(points, violation);
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        ranks[a]
            .cmp(&ranks[b])
            .then(
                crowd[b]
                    .partial_cmp(&crowd[a])
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
            .then(a.cmp(&b))
    });
    order.truncate(mu);
    order
}

/// Binary tournament: the lower rank wins, then the larger crowding distance, then a coin.
pub fn tournament(rng: &mut impl Rng, ranks: &[usize], crowd: &[f64]) -> usize {
    let (a, b) = (
        rng.random_range(0..ranks.len()),
        rng.random_range(0..ranks.len()),
    );
    if ranks[a] != ranks[b] {
        return if ranks[a] < ranks[b] { a } else { b };
    }
    if crowd[a] != crowd[b] {
        return if crowd[a] > crowd[b] { a } else { b };
    }
    if rng.random_bool(0.5) {
        a
    } else {
        b
    }
}

/// Two-point crossover with probability `p`: the genes between two cut points swap.
pub fn two_point(rng: &mut impl Rng, a: &[usize], b: &[usize], p: f64) -> (Vec<usize>, Vec<usize>) {
    let (mut x, mut y) = (a.to_vec(), b.to_vec());
    if a.len() > 1 && rng.random_bool(p) {
        let mut i = rng.random_range(0..a.len());
        let mut j = rng.random_range(0..a.len());
        if i > j {
            std::mem::swap(&mut i, &mut j);
        }
        for k in i..=j {
            std::mem::swap(&mut x[k], &mut y[k]);
        }
    }
    (x, y)
}

/// Each gene mutates with probability `p` to a different choice, drawn uniformly
/// (categorical genes have no order to step along).
pub fn mutate(rng: &mut impl Rng, genome: &mut [usize], cardinalities: &[usize], p: f64) {
    for (g, &n) in genome.iter_mut().zip(cardinalities) {
        if n > 1 && rng.random_bool(p) {
            let other = rng.random_range(0..n - 1);
            *g = if other >= *g { other + 1 } else { other };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn survival_keeps_whole_fronts_then_the_least_crowded() {
        // Front 0: (0,3) (1,1) (2,0.5) (3,0); front 1: (3,3).
        let pts = vec![
            vec![3.0, 3.0],
            vec![0.0, 3.0],
            vec![1.0, 1.0],
            vec![2.0, 0.5],
            vec![3.0, 0.0],
        ];
        let v = vec![0.0; 5];
        let kept = survive(&pts, &v, 3);
        // The extremes are infinite; of the interior, (1,1) spans 2/3+2.5/3 > (2,0.5)'s 2/3+1/3.
        assert_eq!(kept, vec![1, 4, 2]);
        // An infeasible point never survives ahead of a feasible one.
        let kept = survive(&pts, &[0.0, 0.0, 0.0, 0.0, 5.0], 4);
        assert!(!kept.contains(&4));
        assert!(kept.contains(&0));
    }

    #[test]
    fn mutation_always_changes_a_gene_it_touches() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let card = vec![2, 3, 4, 5];
        for _ in 0..100 {
            let mut g = vec![1, 2, 3, 4];
            mutate(&mut rng, &mut g, &card, 1.0);
            for (a, b) in g.iter().zip([1, 2, 3, 4]) {
                assert_ne!(*a, b);
            }
            assert!(g.iter().zip(&card).all(|(x, n)| x < n));
        }
    }

    #[test]
    fn crossover_swaps_one_contiguous_run() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (a, b) = (vec![0; 8], vec![1; 8]);
        for _ in 0..50 {
            let (x, y) = two_point(&mut rng, &a, &b, 1.0);
            assert!(x.iter().zip(&y).all(|(p, q)| p + q == 1));
            let switches = x.windows(2).filter(|w| w[0] != w[1]).count();
            assert!(switches <= 2 && x.contains(&1));
        }
        assert_eq!(two_point(&mut rng, &a, &b, 0.0), (a, b));
    }

    #[test]
    fn tournament_prefers_rank_then_crowding() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let ranks = vec![0, 1];
        let crowd = vec![0.1, 9.0];
        let wins0 = (0..400)
            .filter(|_| tournament(&mut rng, &ranks, &crowd) == 0)
            .count();
        // Index 0 wins unless both draws are 1 (probability 1/4).
        assert!((250..350).contains(&wins0), "{wins0}");
        let wins_crowded = (0..400)
            .filter(|_| tournament(&mut rng, &[0, 0], &crowd) == 1)
            .count();
        assert!((250..350).contains(&wins_crowded), "{wins_crowded}");
    }
}
