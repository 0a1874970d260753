//! Per-label AUROC within the groups of one attribute (sex, age band, view, dataset), with
//! patient-bootstrap intervals, and per label the largest gap between groups. Patients are
//! resampled once per replicate and every group is scored on that same resample, so the gap's
//! interval comes from the same draws as the groups' intervals. A group with fewer positives
//! or negatives than the minimum is "too few": it gets no AUROC and takes no part in a gap.

use serde::{Deserialize, Serialize};

use super::bootstrap::{percentile_interval, resampled_values, LabelColumn};

/// One label within one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupLabel {
    pub positives: usize,
    pub negatives: usize,
    /// None when too few (see [`GroupLabel::too_few`]) or one class only.
    pub auroc: Option<f64>,
    pub ci: Option<[f64; 2]>,
    /// Fewer than the minimum positives or negatives: no number is reported.
    pub too_few: bool,
}

/// One group of an attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupResult {
    pub group: String,
    pub images: usize,
    pub patients: usize,
    /// In the labels' order.
    pub per_label: Vec<GroupLabel>,
}

/// The largest AUROC difference between the groups of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelGap {
    pub label: String,
    /// Highest minus lowest group AUROC; None with fewer than two groups that have one.
    pub gap: Option<f64>,
    pub ci: Option<[f64; 2]>,
    /// The groups with the highest and the lowest AUROC.
    pub high: Option<String>,
    pub low: Option<String>,
}

/// Every group of one attribute, and the gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeResult {
    pub groups: Vec<GroupResult>,
    pub gaps: Vec<LabelGap>,
}

/// How the images fall into groups: `member[i]` is image i's group (an index into
/// `names`), None when the attribute is unknown for it.
pub struct Grouping<'a> {
    pub names: &'a [String],
    pub member: &'a [Option<usize>],
}

/// The bootstrap's settings.
#[derive(Debug, Clone, Copy)]
pub struct SubgroupOptions {
    pub min_positives: usize,
    pub resamples: usize,
    pub seed: u64,
    pub level: f64,
}

/// One group's rows: truth, scores and (global) patient indices.
struct Subset {
    y: Vec<Vec<Option<bool>>>,
    s: Vec<Vec<f64>>,
    patients: Vec<usize>,
}

/// Scores every group of `g` on `y` (None: label missing), `s` and `patients` (each image's
/// dense patient index).
pub fn score_groups(
    y: &[Vec<Option<bool>>],
    s: &[Vec<f64>],
    patients: &[usize],
    labels: &[String],
    g: &Grouping,
    o: &SubgroupOptions,
) -> AttributeResult {
    let k = labels.len();
    let rows: Vec<Vec<usize>> = (0..g.names.len())
        .map(|grp| (0..y.len()).filter(|&i| g.member[i] == Some(grp)).collect())
        .collect();
    let subsets: Vec<Subset> = rows
        .iter()
        .map(|r| Subset {
            y: r.iter().map(|&i| y[i].clone()).collect(),
            s: r.iter().map(|&i| s[i].clone()).collect(),
            patients: r.iter().map(|&i| patients[i]).collect(),
        })
        .collect();
    // One column per (group, label), patients indexed globally so one resample's weights
    // apply to every group.
    let cols: Vec<LabelColumn> = subsets
        .iter()
        .flat_map(|u| (0..k).map(move |j| LabelColumn::new(&u.y, &u.s, &u.patients, j)))
        .collect();
    let draws = resampled_values(patients, cols.len(), o.resamples, o.seed, |c, chunk| {
        cols[c].aurocs(chunk)
    });
    let mut groups = Vec::with_capacity(g.names.len());
    for (grp, u) in subsets.iter().enumerate() {
        let (ys, ss) = (&u.y, &u.s);
        let per_label = (0..k)
            .map(|j| {
                let (yk, sk, _) = super::known_column(ys, ss, j);
                let positives = yk.iter().filter(|v| **v).count();
                let negatives = yk.len() - positives;
                let too_few = positives < o.min_positives || negatives < o.min_positives;
                let values: Vec<f64> = draws.iter().filter_map(|d| d[grp * k + j]).collect();
                GroupLabel {
                    positives,
                    negatives,
                    auroc: if too_few {
                        None
                    } else {
                        super::auroc(&yk, &sk)
                    },
                    ci: if too_few {
                        None
                    } else {
                        percentile_interval(values, o.resamples, o.level)
                    },
                    too_few,
                }
            })
            .collect();
        let mut distinct = u.patients.clone();
        distinct.sort_unstable();
        distinct.dedup();
        groups.push(GroupResult {
            group: g.names[grp].clone(),
            images: ys.len(),
            patients: distinct.len(),
            per_label,
        });
    }
    let gaps = (0..k)
        .map(|j| label_gap(&groups, &draws, labels, j, k, o))
        .collect();
    AttributeResult { groups, gaps }
}

/// Label `j`'s gap: over the groups with an AUROC, highest minus lowest, and the same on
/// each resample where every one of those groups has a value.
fn label_gap(
    groups: &[GroupResult],
    draws: &[Vec<Option<f64>>],
    labels: &[String],
    j: usize,
    k: usize,
    o: &SubgroupOptions,
) -> LabelGap {
    let scored: Vec<(usize, f64)> = groups
        .iter()
        .enumerate()
        .filter_map(|(g, r)| r.per_label[j].auroc.map(|a| (g, a)))
        .collect();
    if scored.len() < 2 {
        return LabelGap {
            label: labels[j].clone(),
            gap: None,
            ci: None,
            high: None,
            low: None,
        };
    }
    let by = |a: &&(usize, f64), b: &&(usize, f64)| a.1.total_cmp(&b.1);
    let hi = scored.iter().max_by(by).map(|x| x.0);
    let lo = scored.iter().min_by(by).map(|x| x.0);
    let range = |v: &[f64]| {
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        max - min
    };
    let point: Vec<f64> = scored.iter().map(|x| x.1).collect();
    let resampled: Vec<f64> = draws
        .iter()
        .filter_map(|d| {
            let v: Option<Vec<f64>> = scored.iter().map(|&(g, _)| d[g * k + j]).collect();
            v.map(|v| range(&v))
        })
        .collect();
    LabelGap {
        label: labels[j].clone(),
        gap: Some(range(&point)),
        ci: percentile_interval(resampled, o.resamples, o.level),
        high: hi.map(|g| groups[g].group.clone()),
        low: lo.map(|g| groups[g].group.clone()),
    }
}
