//! Patient-level bootstrap: percentile intervals of per-label AUROCs (or differences of two)
//! over resamples of patients with replacement.
//!
//! Speed without changing a digit: the resamples are drawn in one seeded sequence, a chunk of
//! [`LANES`] at a time, into a patient-major weight table (`w[patient][lane]`: how often the
//! patient was drawn, which is the weight of each of its images). Each label's scores are
//! sorted once, with each image replaced by its patient; one walk down that order then scores
//! every resample of the chunk together (the inner loops run over the lanes and vectorise),
//! labels in parallel. Sums of integer weights stay integers (twice the trapezoid area
//! included), so every AUROC is the same f64 a one-resample-at-a-time loop gives.

use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::{mean_defined, percentile, Truth};

/// Percentile bootstrap intervals of a per-label statistic (an AUROC, or a difference of two)
/// and of its macro mean.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapCi {
    /// [low, high] per label; None where too few resamples had both classes.
    pub per_label: Vec<Option<[f64; 2]>>,
    pub mean: Option<[f64; 2]>,
    pub resamples: usize,
}

/// Resamples scored together in one walk down a label's order.
pub(crate) const LANES: usize = 64;

/// Patient weights of up to [`LANES`] resamples: `w[p * LANES + r]` is the number of times
/// patient p was drawn in resample r of the chunk; `used` lanes hold resamples. Indexed by
/// patient rather than image, the table is a few hundred KB for a test set (it stays in
/// cache) and drawing a resample is one increment per draw.
pub(crate) struct WeightChunk {
    w: Vec<u32>,
    used: usize,
}

impl WeightChunk {
    fn row(&self, patient: u32) -> &[u32; LANES] {
        let p = patient as usize;
        self.w[p * LANES..(p + 1) * LANES]
            .try_into()
            .expect("a row holds LANES weights")
    }
}

/// Dense patient indices (0, 1, 2, ... in order of first appearance) keyed by the exact id:
/// two ids are one patient only when they are equal ("00123" and "123" are two patients),
/// with no hash standing in for the id, so no two patients can merge.
pub struct PatientIndex<K> {
    map: foldhash::HashMap<K, usize>,
}

impl<K: std::hash::Hash + Eq> Default for PatientIndex<K> {
    fn default() -> Self {
        PatientIndex {
            map: foldhash::HashMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq> PatientIndex<K> {
    /// The index of patient `id`, a new one the first time it is seen.
    pub fn index(&mut self, id: K) -> usize {
        let next = self.map.len();
        *self.map.entry(id).or_insert(next)
    }

    /// Distinct patients seen.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Resamples patients with replacement (all images of a drawn patient come along), seeded.
pub(crate) struct PatientResampler {
    patients: usize,
    rng: rand_chacha::ChaCha8Rng,
}

impl PatientResampler {
    /// `groups[i]` is image i's patient index (0..number of patients).
    pub(crate) fn new(groups: &[usize], seed: u64) -> Self {
        PatientResampler {
            patients: groups.iter().max().map_or(0, |m| m + 1),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// An empty chunk for [`Self::draw_chunk`] to fill.
    fn chunk(&self) -> WeightChunk {
        WeightChunk {
            w: vec![0; self.patients * LANES],
            used: 0,
        }
    }

    /// The next `n` (at most [`LANES`]) resamples into `chunk`, drawn in the same sequence
    /// as one resample at a time: per resample, as many patient draws as there are patients.
    fn draw_chunk(&mut self, n: usize, chunk: &mut WeightChunk) {
        chunk.w.fill(0);
        let patients = self.patients;
        for lane in 0..n {
            for _ in 0..patients {
                chunk.w[self.rng.random_range(0..patients) * LANES + lane] += 1;
            }
        }
        chunk.used = n;
    }
}

/// One step down a label's descending-score order, naming the image's patient (whose weight
/// the image carries).
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A negative image not tied with any positive.
    Negative(u32),
    /// A positive image tied with no other image.
    Positive(u32),
    /// A tie group holding a positive and another image: ranks `start..end`.
    Tied { start: u32, end: u32 },
}

/// One label's truth and scores in descending-score order, sorted once for every resample,
/// as the steps that score a resample: every image in order, tie groups that hold a
/// positive kept together.
pub(crate) struct LabelColumn {
    steps: Vec<Step>,
    /// The patient of the image at each rank.
    patient: Vec<u32>,
    positive: Vec<bool>,
}

impl LabelColumn {
    /// Column `j` of `y[i][k]`, `s[i][k]`; `groups[i]` is image i's patient index. Images
    /// whose label `j` is missing are left out (their patient's other images still count).
    pub(crate) fn new<T: Truth>(y: &[Vec<T>], s: &[Vec<f64>], groups: &[usize], j: usize) -> Self {
        // (score, image) pairs sort faster than indices into the scores; the order inside a
        // tie does not change any sum below.
        let mut order: Vec<(f64, u32)> = s
            .iter()
            .zip(0..)
            .filter(|&(_, i)| y[i as usize][j].known().is_some())
            .map(|(r, i)| (r[j], i))
            .collect();
        order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let patient: Vec<u32> = order
            .iter()
            .map(|&(_, i)| groups[i as usize] as u32)
            .collect();
        let positive: Vec<bool> = order
            .iter()
            .map(|&(_, i)| y[i as usize][j].known() == Some(true))
            .collect();
        let mut steps = Vec::with_capacity(order.len());
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && order[end].0 == order[start].0 {
                end += 1;
            }
            let any_positive = positive[start..end].iter().any(|p| *p);
            match (end - start, any_positive) {
                (1, true) => steps.push(Step::Positive(patient[start])),
                (_, false) => steps.extend(patient[start..end].iter().map(|&p| Step::Negative(p))),
                _ => steps.push(Step::Tied {
                    start: start as u32,
                    end: end as u32,
                }),
            }
            start = end;
        }
        LabelColumn {
            steps,
            patient,
            positive,
        }
    }

    /// The AUROC of each resample of the chunk (`used` values). The ROC path runs from
    /// (0, 0) to (FP, TP) in weight units, and the area under it plus the area to its left
    /// is the rectangle FP·TP. The area to the left only grows where tp grows: a positive
    /// adds w·fp, a tie group adds Δtp·(fp₀ + fp₁)/2 (the trapezoid that scikit-learn's
    /// curve draws through ties). Kept doubled, in integers: area = (2·FP·TP − left₂) / 2,
    /// the same f64 the trapezoid over the curve gives. None when a class has no weight.
    pub(crate) fn aurocs(&self, c: &WeightChunk) -> Vec<Option<f64>> {
        let mut tp = [0u32; LANES];
        let mut fp = [0u32; LANES];
        let mut left2 = [0u64; LANES];
        for step in &self.steps {
            match *step {
                Step::Negative(i) => {
                    for (f, &w) in fp.iter_mut().zip(c.row(i)) {
                        *f += w;
                    }
                }
                Step::Positive(i) => {
                    let lanes = tp.iter_mut().zip(left2.iter_mut());
                    for ((t, l), (&w, &f)) in lanes.zip(c.row(i).iter().zip(&fp)) {
                        *t += w;
                        *l += 2 * w as u64 * f as u64;
                    }
                }
                Step::Tied { start, end } => {
                    let fp0 = fp;
                    let mut dt = [0u32; LANES];
                    for k in start as usize..end as usize {
                        let acc = if self.positive[k] { &mut dt } else { &mut fp };
                        for (a, &w) in acc.iter_mut().zip(c.row(self.patient[k])) {
                            *a += w;
                        }
                    }
                    let lanes = tp.iter_mut().zip(left2.iter_mut()).zip(&dt);
                    for (((t, l), &d), (&f0, &f)) in lanes.zip(fp0.iter().zip(&fp)) {
                        *t += d;
                        *l += d as u64 * (f0 as u64 + f as u64);
                    }
                }
            }
        }
        (0..c.used)
            .map(|r| {
                let (t, f) = (tp[r] as u64, fp[r] as u64);
                (t > 0 && f > 0)
                    .then(|| ((2 * t * f - left2[r]) as f64 / 2.0) / (t as f64 * f as f64))
            })
            .collect()
    }
}

/// The percentile interval of resampled values at `level`; None when fewer than half of
/// the `resamples` gave a value.
pub(crate) fn percentile_interval(
    mut v: Vec<f64>,
    resamples: usize,
    level: f64,
) -> Option<[f64; 2]> {
    if v.len() < resamples / 2 || v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let a = (1.0 - level) / 2.0;
    Some([percentile(&v, a), percentile(&v, 1.0 - a)])
}

/// `k` per-label statistics on each of `resamples` patient resamples (seeded), resample
/// by resample: `stat(j, chunk)` gives label j's value on each resample of the chunk (None
/// where undefined); labels are scored in parallel.
pub(crate) fn resampled_values(
    groups: &[usize],
    k: usize,
    resamples: usize,
    seed: u64,
    stat: impl Fn(usize, &WeightChunk) -> Vec<Option<f64>> + Sync,
) -> Vec<Vec<Option<f64>>> {
    let mut resampler = PatientResampler::new(groups, seed);
    let mut chunk = resampler.chunk();
    let mut out = Vec::with_capacity(resamples);
    let mut done = 0;
    while done < resamples {
        let n = LANES.min(resamples - done);
        resampler.draw_chunk(n, &mut chunk);
        let by_label: Vec<Vec<Option<f64>>> =
            (0..k).into_par_iter().map(|j| stat(j, &chunk)).collect();
        for r in 0..n {
            out.push(by_label.iter().map(|l| l[r]).collect());
        }
        done += n;
    }
    out
}

/// Percentile intervals of per-label values given resample by resample (`values[r][j]`),
/// and of their mean over the labels defined on each resample.
pub(crate) fn intervals_of(values: &[Vec<Option<f64>>], k: usize, level: f64) -> BootstrapCi {
    let resamples = values.len();
    let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); k];
    let mut means = Vec::with_capacity(resamples);
    for vals in values {
        for (j, v) in vals.iter().enumerate() {
            if let Some(v) = v {
                per[j].push(*v);
            }
        }
        if let Some(m) = mean_defined(vals) {
            means.push(m);
        }
    }
    BootstrapCi {
        per_label: per
            .into_iter()
            .map(|v| percentile_interval(v, resamples, level))
            .collect(),
        mean: percentile_interval(means, resamples, level),
        resamples,
    }
}

/// Percentile intervals of `k` per-label statistics over `resamples` patient resamples
/// (seeded), and of their mean over the labels defined on each resample.
pub(crate) fn resampled_intervals(
    groups: &[usize],
    k: usize,
    resamples: usize,
    seed: u64,
    level: f64,
    stat: impl Fn(usize, &WeightChunk) -> Vec<Option<f64>> + Sync,
) -> BootstrapCi {
    intervals_of(
        &resampled_values(groups, k, resamples, seed, stat),
        k,
        level,
    )
}

/// Per-label AUROCs on each patient resample (`out[r][j]`), seeded.
pub fn resampled_aurocs<T: Truth>(
    y: &[Vec<T>],
    s: &[Vec<f64>],
    groups: &[usize],
    resamples: usize,
    seed: u64,
) -> Vec<Vec<Option<f64>>> {
    let k = y.first().map_or(0, |r| r.len());
    let cols: Vec<LabelColumn> = (0..k).map(|j| LabelColumn::new(y, s, groups, j)).collect();
    resampled_values(groups, k, resamples, seed, |j, c| cols[j].aurocs(c))
}

/// Intervals of `b - a` per label (and of the difference of the two macro means), where `a`
/// and `b` are [`resampled_aurocs`] of two independent samples (two datasets, each resampled
/// by its own patients): resample r of one is paired with resample r of the other, which is
/// a draw of the difference because the two samples are resampled independently.
pub fn independent_difference(
    a: &[Vec<Option<f64>>],
    b: &[Vec<Option<f64>>],
    level: f64,
) -> BootstrapCi {
    let k = a.first().or(b.first()).map_or(0, Vec::len);
    let resamples = a.len().min(b.len());
    let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); k];
    let mut means = Vec::with_capacity(resamples);
    for (ra, rb) in a.iter().zip(b) {
        for j in 0..k {
            if let (Some(x), Some(y)) = (ra[j], rb[j]) {
                per[j].push(y - x);
            }
        }
        if let (Some(x), Some(y)) = (mean_defined(ra), mean_defined(rb)) {
            means.push(y - x);
        }
    }
    BootstrapCi {
        per_label: per
            .into_iter()
            .map(|v| percentile_interval(v, resamples, level))
            .collect(),
        mean: percentile_interval(means, resamples, level),
        resamples,
    }
}

/// 95% (or `level`) confidence intervals by resampling **patients** with replacement (all
/// images of a drawn patient come along), seeded. `groups[i]` is image i's patient index.
pub fn bootstrap_auroc<T: Truth>(
    y: &[Vec<T>],
    s: &[Vec<f64>],
    groups: &[usize],
    resamples: usize,
    seed: u64,
    level: f64,
) -> BootstrapCi {
    let k = y.first().map_or(0, |r| r.len());
    let cols: Vec<LabelColumn> = (0..k).map(|j| LabelColumn::new(y, s, groups, j)).collect();
    resampled_intervals(groups, k, resamples, seed, level, |j, c| cols[j].aurocs(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auroc;

    /// Label column 0 of `y`, `s`, image i belonging to patient `groups[i]`.
    fn column(y: &[bool], s: &[f64], groups: &[usize]) -> LabelColumn {
        LabelColumn::new(
            &y.iter().map(|v| vec![*v]).collect::<Vec<_>>(),
            &s.iter().map(|v| vec![*v]).collect::<Vec<_>>(),
            groups,
            0,
        )
    }

    fn chunk(lanes: &[Vec<u32>]) -> WeightChunk {
        let n = lanes[0].len();
        let mut w = vec![0u32; n * LANES];
        for (r, lane) in lanes.iter().enumerate() {
            for (i, &v) in lane.iter().enumerate() {
                w[i * LANES + r] = v;
            }
        }
        WeightChunk {
            w,
            used: lanes.len(),
        }
    }

    /// Unit weights give the plain AUROC (ties included); weight 2 on an image equals
    /// duplicating it; weight 0 equals dropping it; a lane without negatives is undefined.
    #[test]
    fn weighted_lanes_equal_auroc_of_the_resampled_data() {
        let y = [false, true, false, true, true, false, false, true];
        let s = [0.2, 0.9, 0.2, 0.5, 0.2, 0.1, 0.7, 0.7];
        let col = column(&y, &s, &(0..8).collect::<Vec<_>>());
        let mut doubled = vec![1u32; 8];
        doubled[3] = 2;
        let mut dropped = vec![1u32; 8];
        dropped[6] = 0;
        let only_positives: Vec<u32> = y.iter().map(|p| *p as u32).collect();
        let got = col.aurocs(&chunk(&[vec![1; 8], doubled, dropped, only_positives]));
        assert_eq!(got.len(), 4);
        // The plain AUROC divides rates, this divides the area once: the last bit may differ.
        let close = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs() < 1e-15;
        assert!(close(got[0], auroc(&y, &s)));
        let (mut y2, mut s2) = (y.to_vec(), s.to_vec());
        y2.push(true);
        s2.push(0.5);
        assert!(close(got[1], auroc(&y2, &s2)));
        let y3: Vec<bool> = (0..8).filter(|&i| i != 6).map(|i| y[i]).collect();
        let s3: Vec<f64> = (0..8).filter(|&i| i != 6).map(|i| s[i]).collect();
        assert!(close(got[2], auroc(&y3, &s3)));
        assert_eq!(got[3], None);
    }

    /// A patient's weight applies to every one of its images: patient 0 (images 1 and 6)
    /// drawn twice equals both images duplicated; not drawn equals both dropped.
    #[test]
    fn a_patient_weight_counts_each_of_its_images() {
        let y = [false, true, false, true, true, false, false, true];
        let s = [0.2, 0.9, 0.2, 0.5, 0.2, 0.1, 0.7, 0.7];
        let groups = [1, 0, 2, 3, 4, 5, 0, 6];
        let col = column(&y, &s, &groups);
        let mut twice = vec![1u32; 7];
        twice[0] = 2;
        let mut never = vec![1u32; 7];
        never[0] = 0;
        let got = col.aurocs(&chunk(&[twice, never]));
        let close = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs() < 1e-15;
        let (mut y2, mut s2) = (y.to_vec(), s.to_vec());
        y2.extend([y[1], y[6]]);
        s2.extend([s[1], s[6]]);
        assert!(close(got[0], auroc(&y2, &s2)));
        let keep = |i: &usize| groups[*i] != 0;
        let y3: Vec<bool> = (0..8).filter(keep).map(|i| y[i]).collect();
        let s3: Vec<f64> = (0..8).filter(keep).map(|i| s[i]).collect();
        assert!(close(got[1], auroc(&y3, &s3)));
        assert_ne!(got[0], got[1]);
    }
}
