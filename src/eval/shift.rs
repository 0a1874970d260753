//! Internal against external AUROC, concept by concept: the run's own test split and an
//! external evaluation, each with a patient-bootstrap interval resampled within its own
//! dataset, and the difference (external − internal) with an interval from pairing the two
//! independent resample sequences.

use super::join::Joined;
use crate::metrics::bootstrap::{independent_difference, intervals_of, resampled_aurocs};
use crate::metrics::{auroc, known_column, mean_defined};

/// One concept's internal and external AUROC.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConceptShift {
    pub concept: String,
    pub internal_auroc: Option<f64>,
    pub internal_ci: Option<[f64; 2]>,
    pub internal_positives: usize,
    pub external_auroc: Option<f64>,
    pub external_ci: Option<[f64; 2]>,
    pub external_positives: usize,
    /// External minus internal.
    pub difference: Option<f64>,
    pub difference_ci: Option<[f64; 2]>,
}

/// Every shared concept, and the macro means over them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Shift {
    pub per_concept: Vec<ConceptShift>,
    pub internal_mean: Option<f64>,
    pub internal_mean_ci: Option<[f64; 2]>,
    pub external_mean: Option<f64>,
    pub external_mean_ci: Option<[f64; 2]>,
    pub difference_mean: Option<f64>,
    pub difference_mean_ci: Option<[f64; 2]>,
    pub resamples: usize,
    pub seed: u64,
}

fn point(j: &Joined, k: usize) -> (Option<f64>, usize) {
    let (y, s, _) = known_column(&j.y, &j.s, k);
    (auroc(&y, &s), y.iter().filter(|v| **v).count())
}

/// `internal` and `external` must have the same labels in the same order. The two resample
/// sequences use different seeds (`seed` and `seed + 1`), so they are independent.
pub fn shift(internal: &Joined, external: &Joined, resamples: usize, seed: u64) -> Shift {
    let k = internal.labels.len();
    let ri = resampled_aurocs(
        &internal.y,
        &internal.s,
        &internal.patients,
        resamples,
        seed,
    );
    let re = resampled_aurocs(
        &external.y,
        &external.s,
        &external.patients,
        resamples,
        seed.wrapping_add(1),
    );
    let (ci_i, ci_e) = (intervals_of(&ri, k, 0.95), intervals_of(&re, k, 0.95));
    let ci_d = independent_difference(&ri, &re, 0.95);
    let mut per = Vec::with_capacity(k);
    for j in 0..k {
        let (ai, pi) = point(internal, j);
        let (ae, pe) = point(external, j);
        per.push(ConceptShift {
            concept: internal.labels[j].clone(),
            internal_auroc: ai,
            internal_ci: ci_i.per_label[j],
            internal_positives: pi,
            external_auroc: ae,
            external_ci: ci_e.per_label[j],
            external_positives: pe,
            difference: ai.zip(ae).map(|(a, e)| e - a),
            difference_ci: ci_d.per_label[j],
        });
    }
    let mi = mean_defined(&per.iter().map(|c| c.internal_auroc).collect::<Vec<_>>());
    let me = mean_defined(&per.iter().map(|c| c.external_auroc).collect::<Vec<_>>());
    Shift {
        per_concept: per,
        internal_mean: mi,
        internal_mean_ci: ci_i.mean,
        external_mean: me,
        external_mean_ci: ci_e.mean,
        difference_mean: mi.zip(me).map(|(a, e)| e - a),
        difference_mean_ci: ci_d.mean,
        resamples,
        seed,
    }
}

fn ci(v: Option<[f64; 2]>) -> String {
    v.map_or("-".into(), |[a, b]| format!("[{a:.3}, {b:.3}]"))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

impl Shift {
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::io::write_atomic(path, &text)
    }

    pub fn read(path: &std::path::Path) -> Result<Shift, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A table for the terminal: concept, internal, external, difference, with intervals.
    pub fn table(&self) -> String {
        let w = self
            .per_concept
            .iter()
            .map(|c| c.concept.len())
            .max()
            .unwrap_or(0)
            .max(12);
        let mut out = format!(
            "{:<w$} {:>24} {:>24} {:>26}\n",
            "concept", "internal AUROC [95% CI]", "external AUROC [95% CI]", "difference [95% CI]"
        );
        let row = |name: &str, a, ac, e, ec, d, dc| {
            format!(
                "{name:<w$} {:>24} {:>24} {:>26}\n",
                format!("{} {}", num(a), ci(ac)),
                format!("{} {}", num(e), ci(ec)),
                format!("{} {}", num(d), ci(dc)),
            )
        };
        for c in &self.per_concept {
            out += &row(
                &c.concept,
                c.internal_auroc,
                c.internal_ci,
                c.external_auroc,
                c.external_ci,
                c.difference,
                c.difference_ci,
            );
        }
        out += &row(
            "mean",
            self.internal_mean,
            self.internal_mean_ci,
            self.external_mean,
            self.external_mean_ci,
            self.difference_mean,
            self.difference_mean_ci,
        );
        out
    }

    /// The one line of `make demo`'s summary.
    pub fn line(&self, pipeline: &str) -> String {
        format!(
            "mean AUROC over {} shared concepts: internal {} {}, external ({pipeline}) {} {}, difference {} {}",
            self.per_concept.len(),
            num(self.internal_mean),
            ci(self.internal_mean_ci),
            num(self.external_mean),
            ci(self.external_mean_ci),
            num(self.difference_mean),
            ci(self.difference_mean_ci)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::bootstrap::resampled_aurocs;

    /// Against a sample whose AUROC is 1 on every resample (perfectly separated), the
    /// difference's interval is 1 minus the other's interval, reversed.
    #[test]
    fn the_difference_against_a_perfect_sample_mirrors_the_other_interval() {
        let y: Vec<Vec<bool>> = (0..40).map(|i| vec![i % 3 == 0]).collect();
        let s: Vec<Vec<f64>> = (0..40).map(|i| vec![((i * 7) % 11) as f64]).collect();
        let g: Vec<usize> = (0..40).map(|i| i / 2).collect();
        let perfect_s: Vec<Vec<f64>> = y.iter().map(|v| vec![v[0] as u8 as f64]).collect();
        let a = resampled_aurocs(&y, &s, &g, 400, 5);
        let b = resampled_aurocs(&y, &perfect_s, &g, 400, 6);
        assert!(b.iter().all(|r| r[0].is_none_or(|v| v == 1.0)));
        let ia = intervals_of(&a, 1, 0.95).per_label[0].unwrap();
        let paired: Vec<Vec<Option<f64>>> = a
            .iter()
            .zip(&b)
            .filter(|(_, rb)| rb[0].is_some())
            .map(|(ra, _)| ra.clone())
            .collect();
        let ia_paired = intervals_of(&paired, 1, 0.95).per_label[0].unwrap();
        let d = independent_difference(&a, &b, 0.95).per_label[0].unwrap();
        assert!(
            (d[0] - (1.0 - ia_paired[1])).abs() < 1e-12,
            "{d:?} {ia_paired:?}"
        );
        assert!((d[1] - (1.0 - ia_paired[0])).abs() < 1e-12);
        assert!(ia[0] < ia[1]);
    }
}
