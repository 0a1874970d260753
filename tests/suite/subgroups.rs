//! The subgroup bootstrap (`metrics::subgroups`) on hand-made cases whose answers are known
//! without muxmed: AUROCs by counting pairs, and binormal groups whose population AUROC is
//! Φ(d/√2) for a separation of d standard deviations.

use muxmed::metrics::subgroups::{score_groups, Grouping, SubgroupOptions};

/// AUROC by counting pairs (ties one half).
fn pairs(pos: &[f64], neg: &[f64]) -> f64 {
    let mut w = 0.0;
    for p in pos {
        for n in neg {
            w += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    w / (pos.len() * neg.len()) as f64
}

/// Standard normal draws from a 64-bit LCG and Box-Muller, written here.
struct Normal(u64);
impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn next(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Φ by the Abramowitz-Stegun 7.1.26 erf (error below 1.5e-7).
fn phi(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * (1.0 + if x < 0.0 { -erf } else { erf })
}

/// Two groups of 600 one-image patients, half positive: group A's positives sit d = 1.5
/// standard deviations above its negatives, group B's d = 0.5. Population AUROCs Φ(d/√2):
/// 0.8555 and 0.6382, gap 0.2173. Point AUROCs equal pair counts; the 95% intervals of both
/// groups and of the gap contain the population values; a third group with two positives is
/// "too few" and takes no part in the gap.
#[test]
fn two_binormal_groups_have_their_known_aurocs_and_gap() {
    let mut rng = Normal(7);
    let (mut y, mut s, mut member) = (Vec::new(), Vec::new(), Vec::new());
    for (g, d) in [(0usize, 1.5f64), (1, 0.5)] {
        for i in 0..600 {
            let pos = i % 2 == 0;
            y.push(vec![Some(pos)]);
            s.push(vec![rng.next() + if pos { d } else { 0.0 }]);
            member.push(Some(g));
        }
    }
    for i in 0..20 {
        y.push(vec![Some(i < 2)]);
        s.push(vec![rng.next()]);
        member.push(Some(2));
    }
    // An image whose attribute is unknown belongs to no group.
    y.push(vec![Some(true)]);
    s.push(vec![9.0]);
    member.push(None);
    let patients: Vec<usize> = (0..y.len()).collect();
    let names = vec!["A".to_string(), "B".to_string(), "C".to_string()];
    let o = SubgroupOptions {
        min_positives: 5,
        resamples: 1000,
        seed: 3,
        level: 0.95,
    };
    let r = score_groups(
        &y,
        &s,
        &patients,
        &["L".to_string()],
        &Grouping {
            names: &names,
            member: &member,
        },
        &o,
    );
    let truth = [phi(1.5 / 2f64.sqrt()), phi(0.5 / 2f64.sqrt())];
    for (g, t) in r.groups[..2].iter().zip(truth) {
        assert_eq!((g.images, g.patients), (600, 600));
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        let start = if g.group == "A" { 0 } else { 600 };
        for i in start..start + 600 {
            if y[i][0] == Some(true) {
                pos.push(s[i][0]);
            } else {
                neg.push(s[i][0]);
            }
        }
        let l = &g.per_label[0];
        assert!((l.auroc.unwrap() - pairs(&pos, &neg)).abs() < 1e-12);
        let [lo, hi] = l.ci.unwrap();
        assert!(lo < t && t < hi, "{}: {t} outside [{lo}, {hi}]", g.group);
        assert!(hi - lo < 0.1, "{}: [{lo}, {hi}]", g.group);
    }
    let c = &r.groups[2].per_label[0];
    assert!(c.too_few && c.auroc.is_none() && c.ci.is_none());
    assert_eq!((c.positives, c.negatives), (2, 18));
    let gap = &r.gaps[0];
    let a = r.groups[0].per_label[0].auroc.unwrap();
    let b = r.groups[1].per_label[0].auroc.unwrap();
    assert_eq!(gap.gap, Some(a - b));
    assert_eq!(
        (gap.high.as_deref(), gap.low.as_deref()),
        (Some("A"), Some("B"))
    );
    let [lo, hi] = gap.ci.unwrap();
    let true_gap = truth[0] - truth[1];
    assert!(
        lo < true_gap && true_gap < hi,
        "{true_gap} outside [{lo}, {hi}]"
    );
}

/// Patients resampled once: when every patient has one image in each group and the scores
/// of group B are group A's, each resample gives both groups the same AUROC, so the gap is
/// exactly 0 on every resample, and its interval is [0, 0]. Were the groups resampled
/// independently, the gap would spread.
#[test]
fn every_group_is_scored_on_the_same_resample() {
    let mut rng = Normal(11);
    let (mut y, mut s, mut member, mut patients) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in 0..300 {
        let pos = p % 3 == 0;
        let v = rng.next() + if pos { 1.0 } else { 0.0 };
        for g in 0..2 {
            y.push(vec![Some(pos)]);
            s.push(vec![v]);
            member.push(Some(g));
            patients.push(p);
        }
    }
    let names = vec!["A".to_string(), "B".to_string()];
    let r = score_groups(
        &y,
        &s,
        &patients,
        &["L".to_string()],
        &Grouping {
            names: &names,
            member: &member,
        },
        &SubgroupOptions {
            min_positives: 5,
            resamples: 200,
            seed: 1,
            level: 0.95,
        },
    );
    assert_eq!(r.gaps[0].gap, Some(0.0));
    assert_eq!(r.gaps[0].ci, Some([0.0, 0.0]));
    assert_eq!(r.groups[0].per_label[0].ci, r.groups[1].per_label[0].ci);
    assert!(r.groups[0].per_label[0].ci.unwrap()[1] > r.groups[0].per_label[0].ci.unwrap()[0]);
}

/// The published DenseNet-121 predictions (reproduce-chexnet, 22,433 images of its own test
/// fold) by view through `evaluate --predictions`'s subgroups. Expected from scikit-learn:
/// `d = preds.merge(metadata)`; per `View Position` v, `roc_auc_score('Cardiomegaly' in
/// labels.split('|'), prob_Cardiomegaly)` over `d[d.view == v]`: AP 8,847 images (246
/// positive) 0.8516423217946864, PA 13,586 (336) 0.9403402964959569.
#[test]
fn published_predictions_by_view_match_scikit_learn() {
    use muxmed::eval::job::PredictionsJob;
    use muxmed::eval::subgroups::Attribute;
    let nih = |p: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/nih")
            .join(p)
    };
    let preds = nih("reference_predictions/zech_densenet121/preds.csv");
    let meta = nih("Data_Entry_2017_v2020.csv.gz");
    let job = PredictionsJob {
        predictions: &preds,
        labels: &meta,
        split_list: None,
        split: muxmed::labels::Split::Test,
        thresholds_from: None,
        labels_subset: false,
        truth_file: None,
    };
    let opt = muxmed::eval::scoring::EvalOptions {
        resamples: 100,
        ..Default::default()
    };
    let s = job.run(&opt).unwrap().subgroups;
    let v = s.attribute(Attribute::View).unwrap();
    let k = s.labels.iter().position(|l| l == "Cardiomegaly").unwrap();
    let got: Vec<(&str, usize, usize, f64)> = v
        .result
        .groups
        .iter()
        .map(|g| {
            let l = &g.per_label[k];
            (g.group.as_str(), g.images, l.positives, l.auroc.unwrap())
        })
        .collect();
    let want = [
        ("AP", 8847, 246, 0.851_642_321_794_686_4),
        ("PA", 13586, 336, 0.940_340_296_495_956_9),
    ];
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2));
        assert!((g.3 - w.3).abs() < 1e-12, "{}: {} vs {}", g.0, g.3, w.3);
    }
    // Cardiomegaly's view gap (0.0887) has an interval above 0.05: the AP/PA sentence.
    let note = muxmed::report::subgroups::view_shortcut_note(&s).unwrap();
    assert!(
        note.contains("Cardiomegaly") && note.contains("bed-bound"),
        "{note}"
    );
}
