//! Two models scored on the same images: DeLong's test for two correlated ROC curves, the
//! paired patient bootstrap of the AUROC difference, and Holm's step-down adjustment.

use super::bootstrap::{resampled_intervals, BootstrapCi, LabelColumn};

/// DeLong's test of two AUROCs measured on the same images (DeLong, DeLong & Clarke-Pearson
/// 1988), computed with Sun & Xu's (2014) midrank algorithm. Variances and covariance are
/// the DeLong estimates (unbiased structural-component covariances), as R's pROC reports.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeLong {
    pub auc_a: f64,
    pub auc_b: f64,
    pub var_a: f64,
    pub var_b: f64,
    pub cov_ab: f64,
    /// (auc_a − auc_b) / sqrt(var_a + var_b − 2 cov_ab); None when that variance is 0 (for
    /// instance two models that rank every image alike), where the test says nothing.
    pub z: Option<f64>,
    /// Two-sided p-value of `z` under the standard normal.
    pub p: Option<f64>,
}

/// 1-based ranks with ties given their average rank (midranks).
fn midranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) share the rank ((i + 1) + (j + 1)) / 2.
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Structural components of one model's AUROC (Sun & Xu 2014, section 3): V10 per positive
/// (the fraction of negatives it outranks, ties counting one half) and V01 per negative.
fn components(pos: &[f64], neg: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (m, n) = (pos.len() as f64, neg.len() as f64);
    let all: Vec<f64> = pos.iter().chain(neg).copied().collect();
    let tz = midranks(&all);
    let tx = midranks(pos);
    let ty = midranks(neg);
    let v10 = (0..pos.len()).map(|i| (tz[i] - tx[i]) / n).collect();
    let v01 = (0..neg.len())
        .map(|j| 1.0 - (tz[pos.len() + j] - ty[j]) / m)
        .collect();
    (v10, v01)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Unbiased covariance (n − 1 in the denominator); 0 for fewer than two values.
fn covariance(a: &[f64], b: &[f64]) -> f64 {
    if a.len() < 2 {
        return 0.0;
    }
    let (ma, mb) = (mean(a), mean(b));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (a.len() - 1) as f64
}

/// Two-sided p-value of a standard normal statistic: P(|Z| ≥ |z|) = erfc(|z| / √2).
pub fn two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// DeLong's paired test for label truth `y` and two models' scores `a` and `b` on the same
/// images; None when only one class is present.
pub fn delong(y: &[bool], a: &[f64], b: &[f64]) -> Option<DeLong> {
    let split = |s: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let pos = y.iter().zip(s).filter(|(t, _)| **t).map(|(_, v)| *v);
        let neg = y.iter().zip(s).filter(|(t, _)| !**t).map(|(_, v)| *v);
        (pos.collect(), neg.collect())
    };
    let (pa, na) = split(a);
    let (pb, nb) = split(b);
    if pa.is_empty() || na.is_empty() || a.len() != y.len() || b.len() != y.len() {
        return None;
    }
    let (m, n) = (pa.len() as f64, na.len() as f64);
    let (v10a, v01a) = components(&pa, &na);
    let (v10b, v01b) = components(&pb, &nb);
    let var = |v10: &[f64], v01: &[f64]| covariance(v10, v10) / m + covariance(v01, v01) / n;
    let var_a = var(&v10a, &v01a);
    let var_b = var(&v10b, &v01b);
    let cov_ab = covariance(&v10a, &v10b) / m + covariance(&v01a, &v01b) / n;
    let (auc_a, auc_b) = (mean(&v10a), mean(&v10b));
    let var_diff = var_a + var_b - 2.0 * cov_ab;
    let z = (var_diff > 0.0).then(|| (auc_a - auc_b) / var_diff.sqrt());
    Some(DeLong {
        auc_a,
        auc_b,
        var_a,
        var_b,
        cov_ab,
        z,
        p: z.map(two_sided_p),
    })
}

/// Holm's step-down adjustment of a family of p-values (undefined ones are left out of the
/// family and stay None): the i-th smallest of m becomes max over j ≤ i of min(1, (m − j + 1)
/// p_(j)).
pub fn holm(p: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut defined: Vec<(usize, f64)> = p
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .collect();
    defined.sort_by(|a, b| a.1.total_cmp(&b.1));
    let m = defined.len();
    let mut out = vec![None; p.len()];
    let mut running = 0.0f64;
    for (rank, (i, v)) in defined.into_iter().enumerate() {
        running = running.max(((m - rank) as f64 * v).min(1.0));
        out[i] = Some(running);
    }
    out
}

/// Paired bootstrap intervals of AUROC(a) − AUROC(b), per label and of the mean difference:
/// patients are resampled once per round and both models scored on that same resample, so
/// the interval keeps the correlation between the two models. Both means run over the same
/// labels (those defined on the resample), so the mean of the differences is the difference
/// of the macro means. `y[i][k]`, `a[i][k]`, `b[i][k]`; `groups[i]` is image i's patient.
pub fn paired_bootstrap(
    y: &[Vec<bool>],
    a: &[Vec<f64>],
    b: &[Vec<f64>],
    groups: &[usize],
    resamples: usize,
    seed: u64,
    level: f64,
) -> BootstrapCi {
    let k = y.first().map_or(0, |r| r.len());
    let cols: Vec<(LabelColumn, LabelColumn)> = (0..k)
        .map(|j| {
            (
                LabelColumn::new(y, a, groups, j),
                LabelColumn::new(y, b, groups, j),
            )
        })
        .collect();
    resampled_intervals(groups, k, resamples, seed, level, |j, chunk| {
        let (ca, cb) = &cols[j];
        ca.aurocs(chunk)
            .into_iter()
            .zip(cb.aurocs(chunk))
            .map(|(a, b)| Some(a? - b?))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midranks_average_ties() {
        assert_eq!(
            midranks(&[0.5, 0.1, 0.5, 0.9, 0.5]),
            vec![3.0, 1.0, 3.0, 5.0, 3.0]
        );
    }

    #[test]
    fn holm_on_a_hand_example() {
        // Sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 ->
        // raised to the running max 0.06); None stays out of the family.
        let adj = holm(&[Some(0.03), None, Some(0.01), Some(0.04), Some(0.02)]);
        let want = [Some(0.06), None, Some(0.04), Some(0.06), Some(0.06)];
        for (a, w) in adj.iter().zip(want) {
            match (a, w) {
                (Some(a), Some(w)) => assert!((a - w).abs() < 1e-15, "{a} vs {w}"),
                (a, w) => assert_eq!(*a, w),
            }
        }
        // Capped at 1.
        assert_eq!(holm(&[Some(0.5), Some(0.9)]), vec![Some(1.0), Some(1.0)]);
    }

    #[test]
    fn the_normal_tail_matches_known_quantiles() {
        // z = 1.959963984540054 is the 97.5% quantile; 2.5758293035489 the 99.5%.
        assert!((two_sided_p(1.959963984540054) - 0.05).abs() < 1e-15);
        assert!((two_sided_p(-2.5758293035489004) - 0.01).abs() < 1e-15);
        assert_eq!(two_sided_p(0.0), 1.0);
    }

    fn case() -> (Vec<Vec<bool>>, Vec<Vec<f64>>, Vec<usize>) {
        // 60 images of 20 patients, 2 labels; scores loosely follow the truth.
        let y: Vec<Vec<bool>> = (0..60).map(|i| vec![i % 3 == 0, i % 4 == 1]).collect();
        let s: Vec<Vec<f64>> = (0..60)
            .map(|i| {
                let noise = ((i * 37) % 17) as f64 / 17.0;
                vec![
                    0.4 * (y[i][0] as u8 as f64) + 0.6 * noise,
                    0.3 * (y[i][1] as u8 as f64) + 0.7 * (1.0 - noise),
                ]
            })
            .collect();
        (y, s, (0..60).map(|i| i / 3).collect())
    }

    #[test]
    fn a_model_compared_with_itself_differs_by_exactly_zero() {
        let (y, s, g) = case();
        let pb = paired_bootstrap(&y, &s, &s, &g, 200, 7, 0.95);
        assert_eq!(pb.per_label, vec![Some([0.0, 0.0]); 2]);
        assert_eq!(pb.mean, Some([0.0, 0.0]));
        let yk: Vec<bool> = y.iter().map(|r| r[0]).collect();
        let sk: Vec<f64> = s.iter().map(|r| r[0]).collect();
        let d = delong(&yk, &sk, &sk).unwrap();
        assert_eq!((d.z, d.p), (None, None));
    }

    #[test]
    fn a_perfect_model_against_a_reversed_one_differs_by_one() {
        let (y, _, g) = case();
        // a ranks every positive above every negative (AUROC 1); b reverses it (AUROC 0).
        let a: Vec<Vec<f64>> = y
            .iter()
            .map(|r| r.iter().map(|&t| if t { 0.9 } else { 0.1 }).collect())
            .collect();
        let b: Vec<Vec<f64>> = a
            .iter()
            .map(|r| r.iter().map(|v| 1.0 - v).collect())
            .collect();
        let pb = paired_bootstrap(&y, &a, &b, &g, 200, 7, 0.95);
        assert_eq!(pb.per_label, vec![Some([1.0, 1.0]); 2]);
        assert_eq!(pb.mean, Some([1.0, 1.0]));
    }

    #[test]
    fn a_known_large_difference_is_inside_its_interval_and_zero_is_not() {
        let (y, s, g) = case();
        // b is a's scores with the truth signal removed: a clear loss of AUROC.
        let b: Vec<Vec<f64>> = (0..60)
            .map(|i| vec![((i * 37) % 17) as f64 / 17.0 * 0.6 + 0.2, 0.5])
            .collect();
        let pb = paired_bootstrap(&y, &s, &b, &g, 500, 3, 0.95);
        for k in 0..2 {
            let yk: Vec<bool> = y.iter().map(|r| r[k]).collect();
            let ak: Vec<f64> = s.iter().map(|r| r[k]).collect();
            let bk: Vec<f64> = b.iter().map(|r| r[k]).collect();
            let delta =
                crate::metrics::auroc(&yk, &ak).unwrap() - crate::metrics::auroc(&yk, &bk).unwrap();
            assert!(delta > 0.25, "label {k}: delta {delta}");
            let ci = pb.per_label[k].unwrap();
            assert!(ci[0] <= delta && delta <= ci[1], "{ci:?} vs {delta}");
            assert!(ci[0] > 0.0, "{ci:?}");
        }
    }
}
