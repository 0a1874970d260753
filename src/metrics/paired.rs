//! Two models scored on the same images: the test of two correlated AUROCs (clustered by
//! patient after Obuchowski 1997, or DeLong's for independent images), the paired patient
//! bootstrap of the AUROC difference, and Holm's step-down adjustment.

use super::bootstrap::{resampled_intervals, BootstrapCi, LabelColumn};
use super::Truth;

/// Which variance the paired AUROC test uses.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum AucTest {
    /// Obuchowski's (1997) nonparametric variance with the patient as the cluster: right
    /// when a patient contributes several images, as in ChestX-Ray14's test split.
    #[default]
    Clustered,
    /// DeLong, DeLong & Clarke-Pearson (1988): assumes every image is independent.
    Delong,
}

impl AucTest {
    /// How reports name the test.
    pub fn describe(self) -> &'static str {
        match self {
            AucTest::Clustered => {
                "Obuchowski's clustered test (patients as clusters; images of one patient \
                 are not independent)"
            }
            AucTest::Delong => "DeLong's test (assumes every image is independent)",
        }
    }

    /// The paired test of two models' scores `a`, `b` for truth `y`; `groups[i]` is image
    /// i's patient (used by the clustered test only).
    pub fn run(self, y: &[bool], a: &[f64], b: &[f64], groups: &[usize]) -> Option<DeLong> {
        match self {
            AucTest::Clustered => clustered(y, a, b, groups),
            AucTest::Delong => delong(y, a, b),
        }
    }
}

/// A test of two AUROCs measured on the same images: DeLong's (DeLong, DeLong &
/// Clarke-Pearson 1988), computed with Sun & Xu's (2014) midrank algorithm, with the DeLong
/// estimates of variance and covariance (unbiased structural-component covariances) as R's
/// pROC reports; or the clustered one ([`clustered`]), with the same fields.
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

/// The paired test with Obuchowski's clustered variance (Biometrics 1997, 53:567–578), the
/// patient as the cluster. With V10 per positive image and V01 per negative image as in
/// DeLong's test (each against every image of the other class, across patients), and per
/// patient i the sums V10ᵢ, V01ᵢ over its m_i positive and n_i negative images:
///
/// - S10 = I10 / ((I10 − 1) M) · Σᵢ (V10ᵢ − m_i θ)², over the I10 patients with a positive;
/// - S01 = I01 / ((I01 − 1) N) · Σᵢ (V01ᵢ − n_i θ)², over the I01 patients with a negative;
/// - S11 = I / (I − 1) · Σᵢ (V10ᵢ − m_i θ)(V01ᵢ − n_i θ), over all I patients;
/// - var θ = S10 / M + S01 / N + 2 S11 / (M N), where M, N count positive, negative images.
///
/// The covariance of two models' AUROCs takes the same sums over products of one model's
/// deviations with the other's (S11 both ways round). With one image per patient every sum
/// is DeLong's and S11 is 0, so the test is DeLong's. None when one class is absent, or when
/// fewer than two patients hold a positive (or a negative): no spread between clusters.
pub fn clustered(y: &[bool], a: &[f64], b: &[f64], groups: &[usize]) -> Option<DeLong> {
    if a.len() != y.len() || b.len() != y.len() || groups.len() != y.len() {
        return None;
    }
    let clusters = Clusters::new(y, groups)?;
    let ca = clusters.deviations(y, a)?;
    let cb = clusters.deviations(y, b)?;
    let var_a = clusters.covariance(&ca, &ca);
    let var_b = clusters.covariance(&cb, &cb);
    let cov_ab = clusters.covariance(&ca, &cb);
    let var_diff = var_a + var_b - 2.0 * cov_ab;
    let z = (var_diff > 0.0).then(|| (ca.auc - cb.auc) / var_diff.sqrt());
    Some(DeLong {
        auc_a: ca.auc,
        auc_b: cb.auc,
        var_a,
        var_b,
        cov_ab,
        z,
        p: z.map(two_sided_p),
    })
}

/// The patients of one label's images: dense cluster index per image and the counts of
/// positive and negative images per cluster.
struct Clusters {
    of_image: Vec<usize>,
    positives: Vec<f64>,
    negatives: Vec<f64>,
    /// Totals M, N and the numbers of clusters with a positive (I10), a negative (I01).
    m: f64,
    n: f64,
    i10: f64,
    i01: f64,
}

/// One model's per-cluster deviations V10ᵢ − m_i θ and V01ᵢ − n_i θ, and its AUROC θ.
struct ClusterDeviations {
    auc: f64,
    d10: Vec<f64>,
    d01: Vec<f64>,
}

impl Clusters {
    fn new(y: &[bool], groups: &[usize]) -> Option<Clusters> {
        let mut index = std::collections::HashMap::new();
        let of_image: Vec<usize> = groups
            .iter()
            .map(|g| {
                let next = index.len();
                *index.entry(*g).or_insert(next)
            })
            .collect();
        let mut positives = vec![0.0; index.len()];
        let mut negatives = vec![0.0; index.len()];
        for (&c, &t) in of_image.iter().zip(y) {
            if t {
                positives[c] += 1.0;
            } else {
                negatives[c] += 1.0;
            }
        }
        let count = |v: &[f64]| v.iter().filter(|x| **x > 0.0).count() as f64;
        let (i10, i01) = (count(&positives), count(&negatives));
        if i10 < 2.0 || i01 < 2.0 {
            return None;
        }
        Some(Clusters {
            m: positives.iter().sum(),
            n: negatives.iter().sum(),
            of_image,
            positives,
            negatives,
            i10,
            i01,
        })
    }

    fn deviations(&self, y: &[bool], s: &[f64]) -> Option<ClusterDeviations> {
        let pos: Vec<f64> = y
            .iter()
            .zip(s)
            .filter(|(t, _)| **t)
            .map(|(_, v)| *v)
            .collect();
        let neg: Vec<f64> = y
            .iter()
            .zip(s)
            .filter(|(t, _)| !**t)
            .map(|(_, v)| *v)
            .collect();
        let (v10, v01) = components(&pos, &neg);
        let auc = mean(&v10);
        let mut d10: Vec<f64> = self.positives.iter().map(|m| -m * auc).collect();
        let mut d01: Vec<f64> = self.negatives.iter().map(|n| -n * auc).collect();
        let (mut ip, mut ineg) = (v10.iter(), v01.iter());
        for (&c, &t) in self.of_image.iter().zip(y) {
            if t {
                d10[c] += ip.next()?;
            } else {
                d01[c] += ineg.next()?;
            }
        }
        Some(ClusterDeviations { auc, d10, d01 })
    }

    /// Obuchowski's covariance of two models' AUROCs (a variance when `a` is `b`).
    fn covariance(&self, a: &ClusterDeviations, b: &ClusterDeviations) -> f64 {
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
        let i = self.positives.len() as f64;
        let s10 = self.i10 / ((self.i10 - 1.0) * self.m) * dot(&a.d10, &b.d10);
        let s01 = self.i01 / ((self.i01 - 1.0) * self.n) * dot(&a.d01, &b.d01);
        let s11 = i / (i - 1.0) * (dot(&a.d10, &b.d01) + dot(&a.d01, &b.d10)) / 2.0;
        s10 / self.m + s01 / self.n + 2.0 * s11 / (self.m * self.n)
    }
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
pub fn paired_bootstrap<T: Truth>(
    y: &[Vec<T>],
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

    /// Obuchowski's variance straight from its definition: ψ over every (positive, negative)
    /// pair, no ranks; clusters given as lists of (truth, score).
    fn obuchowski_by_definition(clusters: &[Vec<(bool, f64)>]) -> (f64, f64) {
        let psi = |x: f64, y: f64| {
            if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        };
        let all: Vec<(bool, f64)> = clusters.iter().flatten().copied().collect();
        let m = all.iter().filter(|(t, _)| *t).count() as f64;
        let n = all.len() as f64 - m;
        let v10 = |x: f64| {
            all.iter()
                .filter(|(t, _)| !t)
                .map(|(_, y)| psi(x, *y))
                .sum::<f64>()
                / n
        };
        let v01 = |y: f64| {
            all.iter()
                .filter(|(t, _)| *t)
                .map(|(_, x)| psi(*x, y))
                .sum::<f64>()
                / m
        };
        let theta = all
            .iter()
            .filter(|(t, _)| *t)
            .map(|(_, x)| v10(*x))
            .sum::<f64>()
            / m;
        let (mut s10, mut s01, mut s11) = (0.0, 0.0, 0.0);
        let (mut i10, mut i01) = (0.0, 0.0);
        for c in clusters {
            let mi = c.iter().filter(|(t, _)| *t).count() as f64;
            let ni = c.len() as f64 - mi;
            let a = c
                .iter()
                .filter(|(t, _)| *t)
                .map(|(_, x)| v10(*x))
                .sum::<f64>()
                - mi * theta;
            let b = c
                .iter()
                .filter(|(t, _)| !t)
                .map(|(_, y)| v01(*y))
                .sum::<f64>()
                - ni * theta;
            s10 += a * a;
            s01 += b * b;
            s11 += a * b;
            i10 += if mi > 0.0 { 1.0 } else { 0.0 };
            i01 += if ni > 0.0 { 1.0 } else { 0.0 };
        }
        let i = clusters.len() as f64;
        let s10 = i10 / ((i10 - 1.0) * m) * s10;
        let s01 = i01 / ((i01 - 1.0) * n) * s01;
        let s11 = i / (i - 1.0) * s11;
        (theta, s10 / m + s01 / n + 2.0 * s11 / (m * n))
    }

    /// 7 patients with 1–4 images each, ties included.
    fn small_clustered() -> (Vec<bool>, Vec<f64>, Vec<f64>, Vec<usize>) {
        let rows = [
            (0, true, 0.9, 0.7),
            (0, false, 0.4, 0.5),
            (0, true, 0.8, 0.8),
            (1, false, 0.1, 0.2),
            (2, true, 0.6, 0.3),
            (2, true, 0.4, 0.6),
            (2, false, 0.3, 0.3),
            (2, false, 0.5, 0.1),
            (3, false, 0.2, 0.4),
            (4, true, 0.7, 0.9),
            (5, false, 0.6, 0.5),
            (5, false, 0.4, 0.2),
            (6, true, 0.3, 0.4),
            (6, false, 0.35, 0.6),
        ];
        (
            rows.iter().map(|r| r.1).collect(),
            rows.iter().map(|r| r.2).collect(),
            rows.iter().map(|r| r.3).collect(),
            rows.iter().map(|r| r.0 * 11).collect(),
        )
    }

    #[test]
    fn clustered_variance_equals_its_definition() {
        let (y, a, b, g) = small_clustered();
        let c = clustered(&y, &a, &b, &g).unwrap();
        for (scores, auc, var) in [(&a, c.auc_a, c.var_a), (&b, c.auc_b, c.var_b)] {
            let mut by: std::collections::BTreeMap<usize, Vec<(bool, f64)>> = Default::default();
            for i in 0..y.len() {
                by.entry(g[i]).or_default().push((y[i], scores[i]));
            }
            let (theta, v) = obuchowski_by_definition(&by.into_values().collect::<Vec<_>>());
            assert!(
                (auc - theta).abs() < 1e-12 && (var - v).abs() < 1e-12,
                "{var} vs {v}"
            );
        }
        // var(a − b) ≥ 0 and the covariance is symmetric in the two models.
        let r = clustered(&y, &b, &a, &g).unwrap();
        assert!((r.cov_ab - c.cov_ab).abs() < 1e-15);
        assert!(c.var_a + c.var_b - 2.0 * c.cov_ab >= 0.0);
    }

    #[test]
    fn duplicated_images_leave_the_clustered_z_and_grow_delongs() {
        let (y, a, b, g) = small_clustered();
        let base = clustered(&y, &a, &b, &g).unwrap();
        let plain = delong(&y, &a, &b).unwrap();
        for k in [2usize, 5] {
            let rep = |v: &[f64]| {
                v.iter()
                    .flat_map(|x| std::iter::repeat_n(*x, k))
                    .collect::<Vec<_>>()
            };
            let yk: Vec<bool> = y.iter().flat_map(|t| std::iter::repeat_n(*t, k)).collect();
            let gk: Vec<usize> = g.iter().flat_map(|t| std::iter::repeat_n(*t, k)).collect();
            let c = clustered(&yk, &rep(&a), &rep(&b), &gk).unwrap();
            assert!((c.z.unwrap() - base.z.unwrap()).abs() < 1e-9, "k={k}");
            // Plain DeLong treats the k copies as new images: its variance falls by about k
            // (exactly (M−1)/(kM−1) per class with its n − 1 denominators), so z grows by √k
            // up to that correction: at most √(M/(M − 1)) with M = 6 positives here.
            let d = delong(&yk, &rep(&a), &rep(&b)).unwrap();
            let ratio = d.z.unwrap() / plain.z.unwrap() / (k as f64).sqrt();
            assert!(
                ratio > 1.0 && ratio <= (6.0f64 / 5.0).sqrt(),
                "k={k}: {ratio}"
            );
        }
    }

    #[test]
    fn one_image_per_patient_makes_the_clustered_test_delongs() {
        let (y, a, b, _) = small_clustered();
        let g: Vec<usize> = (0..y.len()).collect();
        let (c, d) = (
            clustered(&y, &a, &b, &g).unwrap(),
            delong(&y, &a, &b).unwrap(),
        );
        for (u, v) in [(c.var_a, d.var_a), (c.var_b, d.var_b), (c.cov_ab, d.cov_ab)] {
            assert!((u - v).abs() < 1e-15, "{u} vs {v}");
        }
    }

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
