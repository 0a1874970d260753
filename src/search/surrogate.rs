//! The accuracy surrogate of MSuNAS (Lu et al., ECCV 2020), in its RBF form: Gaussian-kernel
//! ridge regression from a genome's one-hot encoding to f1 = 1 − val AUROC, fitted on the
//! archive. NSGA-II then runs on (predicted f1, parameters, multiply-adds), all cheap, and
//! only its most promising new candidates get real proxy training. Its quality is reported
//! as Kendall's τ between predicted and measured f1 on archive points held back from a fit.

use crate::metrics::kendall_tau;

/// A fitted surrogate.
#[derive(Debug, Clone)]
pub struct Rbf {
    cardinalities: Vec<usize>,
    centres: Vec<Vec<usize>>,
    weights: Vec<f64>,
    mean: f64,
    gamma: f64,
}

/// Genes that differ between two genomes: half the squared distance of their one-hot codes.
fn mismatches(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64
}

/// Ridge added to the kernel's diagonal.
const RIDGE: f64 = 1e-3;

impl Rbf {
    /// Fits on `genomes` → `f1`. The kernel is exp(−γ·2m) with m the mismatching genes and γ
    /// set from the median pairwise distance, so the width follows the data.
    pub fn fit(cardinalities: &[usize], genomes: &[Vec<usize>], f1: &[f64]) -> Option<Self> {
        let n = genomes.len();
        if n < 2 {
            return None;
        }
        let mut d: Vec<f64> = vec![];
        for i in 0..n {
            for j in i + 1..n {
                d.push(2.0 * mismatches(&genomes[i], &genomes[j]));
            }
        }
        d.sort_by(f64::total_cmp);
        let median = d[d.len() / 2].max(1.0);
        let gamma = 1.0 / median;
        let mean = f1.iter().sum::<f64>() / n as f64;
        let mut k = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in 0..n {
                k[i][j] = (-gamma * 2.0 * mismatches(&genomes[i], &genomes[j])).exp();
            }
            k[i][i] += RIDGE;
        }
        let rhs: Vec<f64> = f1.iter().map(|v| v - mean).collect();
        let weights = solve(k, rhs)?;
        Some(Rbf {
            cardinalities: cardinalities.to_vec(),
            centres: genomes.to_vec(),
            weights,
            mean,
            gamma,
        })
    }

    pub fn predict(&self, genome: &[usize]) -> f64 {
        debug_assert_eq!(genome.len(), self.cardinalities.len());
        self.mean
            + self
                .centres
                .iter()
                .zip(&self.weights)
                .map(|(c, w)| w * (-self.gamma * 2.0 * mismatches(c, genome)).exp())
                .sum::<f64>()
    }
}

/// Kendall's τ-b of the surrogate on held-back points: fitted on the points whose index is
/// not ≡ `fold` (mod `folds`), scored on the others, pooled over the folds.
pub fn cross_validated_tau(
    cardinalities: &[usize],
    genomes: &[Vec<usize>],
    f1: &[f64],
    folds: usize,
) -> Option<f64> {
    let (mut pred, mut truth) = (vec![], vec![]);
    for fold in 0..folds {
        let (train, test): (Vec<usize>, Vec<usize>) =
            (0..genomes.len()).partition(|i| i % folds != fold);
        let g: Vec<Vec<usize>> = train.iter().map(|&i| genomes[i].clone()).collect();
        let y: Vec<f64> = train.iter().map(|&i| f1[i]).collect();
        let model = Rbf::fit(cardinalities, &g, &y)?;
        for &i in &test {
            pred.push(model.predict(&genomes[i]));
            truth.push(f1[i]);
        }
    }
    kendall_tau(&pred, &truth)
}

/// Solves A x = b by Gaussian elimination with partial pivoting (A is small and dense).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            if f != 0.0 {
                let (top, rest) = a.split_at_mut(row);
                for (x, y) in rest[0][col..].iter_mut().zip(&top[col][col..]) {
                    *x -= f * y;
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|j| a[row][j] * x[j]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_known_system() {
        // 2x + y = 5, x + 3y = 10 → x = 1, y = 3.
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![5.0, 10.0]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 3.0).abs() < 1e-12);
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }

    #[test]
    fn interpolates_its_centres_and_ranks_a_smooth_target() {
        // f1 falls with the number of genes set to 1: a target the kernel can learn.
        let card = vec![2; 8];
        let genomes: Vec<Vec<usize>> = (0..64u32)
            .map(|v| (0..8).map(|b| ((v * 37 + 11) >> b & 1) as usize).collect())
            .collect();
        let f1: Vec<f64> = genomes
            .iter()
            .map(|g| 0.5 - 0.05 * g.iter().sum::<usize>() as f64)
            .collect();
        let m = Rbf::fit(&card, &genomes, &f1).unwrap();
        for (g, y) in genomes.iter().zip(&f1) {
            // The ridge keeps the fit from passing exactly through its centres.
            assert!((m.predict(g) - y).abs() < 0.02, "{} vs {y}", m.predict(g));
        }
        let tau = cross_validated_tau(&card, &genomes, &f1, 4).unwrap();
        assert!(tau > 0.7, "{tau}");
    }
}
