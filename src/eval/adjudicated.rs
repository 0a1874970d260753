//! `evaluate --truth google2019`: scores predictions on Google's adjudicated labels
//! (`crate::data::google2019`) instead of NIH's report-mined ones, with NIH's labels on the
//! same images beside them, so that the effect of label noise on each AUROC can be read.
//!
//! A 14-label model's score for a finding is the largest of its outputs for the finding's
//! NIH labels ([`Finding::nih_sources`]); the NIH-label truth for it is their union. Only the
//! images of the scored set that Google put in the requested `Set Id` are used.

use std::path::Path;

use super::join::Joined;
use super::predictions::EvalError;
use super::scoring::BootstrapSettings;
use crate::data::google2019::{AdjudicatedImage, Finding};
use crate::labels::Split;
use crate::metrics::bootstrap::PatientIndex;
use crate::metrics::{bootstrap_auroc, Curve};

/// The name of this truth in files and on the command line.
pub const TRUTH_NAME: &str = "google2019";

/// Which labels `evaluate` scores against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Truth {
    /// The labels of the data itself (NIH's metadata, or the manifest's).
    #[default]
    Nih,
    /// Google's radiologist-adjudicated labels for four findings (Majkowska et al. 2019).
    Google2019,
}

/// One finding's AUROC with its patient-bootstrap 95% interval.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    pub auroc: Option<f64>,
    pub ci: Option<[f64; 2]>,
    /// Fewer than `min_positives` positives or negatives: no AUROC is given.
    #[serde(default)]
    pub too_few: bool,
}

impl Score {
    /// "0.848 [0.785, 0.903]", "too few", or "n/a" (no score).
    pub fn text(s: Option<&Score>) -> String {
        match s {
            Some(Score {
                auroc: Some(a),
                ci: Some([lo, hi]),
                ..
            }) => format!("{a:.3} [{lo:.3}, {hi:.3}]"),
            Some(Score { auroc: Some(a), .. }) => format!("{a:.3}"),
            Some(Score { too_few: true, .. }) => "too few".into(),
            _ => "n/a".into(),
        }
    }
}

/// One finding on the scored images.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FindingResult {
    pub finding: String,
    /// The model outputs whose largest value is the finding's score.
    pub from: Vec<String>,
    /// Why the finding is not scored (no output for it); None when it is.
    pub not_scored: Option<String>,
    pub n: usize,
    pub positives_adjudicated: usize,
    pub positives_nih: usize,
    /// Fraction of images where NIH's label and the panel's agree.
    pub agreement: Option<f64>,
    pub adjudicated: Option<Score>,
    pub nih: Option<Score>,
}

/// What `truth_google2019_<key>.json` holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Adjudicated {
    pub truth: String,
    /// Google's `Set Id` the images come from.
    pub set: Split,
    /// Images of the scored set in Google's file with that Set Id.
    pub n_images: usize,
    pub n_patients: usize,
    /// Images of Google's file with that Set Id.
    pub in_google_set: usize,
    /// Images of the scored set that Google put in its other set (not used).
    pub in_other_set: usize,
    /// A truth with fewer positives or negatives than this gets "too few", not an AUROC.
    pub min_positives: usize,
    pub bootstrap: BootstrapSettings,
    pub findings: Vec<FindingResult>,
}

impl Adjudicated {
    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        super::predictions::write_json(path, self)
    }

    pub fn read(path: &Path) -> Result<Adjudicated, EvalError> {
        super::predictions::read_json(path, "an adjudicated-label evaluation")
    }

    /// One line per finding for the terminal.
    pub fn summary(&self) -> Vec<String> {
        self.findings
            .iter()
            .map(|f| match &f.not_scored {
                Some(why) => format!("{}: not scored ({why})", f.finding),
                None => format!(
                    "{}: adjudicated {} ({} positive)  NIH labels {} ({} positive)  agreement {:.1}%",
                    f.finding,
                    Score::text(f.adjudicated.as_ref()),
                    f.positives_adjudicated,
                    Score::text(f.nih.as_ref()),
                    f.positives_nih,
                    100.0 * f.agreement.unwrap_or(f64::NAN)
                ),
            })
            .collect()
    }
}

/// The rows of `j` in Google's `set`: (row of j, its adjudicated image), and how many of
/// j's images Google put in its other set.
fn rows_in_set<'g>(
    j: &Joined,
    google: &'g [AdjudicatedImage],
    set: Split,
) -> (Vec<(usize, &'g AdjudicatedImage)>, usize) {
    let by_id: foldhash::HashMap<&str, &AdjudicatedImage> =
        google.iter().map(|g| (g.image_id.as_str(), g)).collect();
    let mut rows = Vec::new();
    let mut other = 0;
    for (i, id) in j.image_ids.iter().enumerate() {
        match by_id.get(id.as_str()) {
            Some(g) if g.set == set => rows.push((i, *g)),
            Some(_) => other += 1,
            None => {}
        }
    }
    (rows, other)
}

/// Google's file for the data in `root` (NIH's folder): `explicit`, else one of
/// [`crate::data::google2019::FILE_NAMES`] in `root`. Refuses muxmed's synthetic data, whose
/// image names copy NIH's but whose images Google never read.
pub fn truth_file(explicit: Option<&Path>, root: &Path) -> Result<std::path::PathBuf, EvalError> {
    if crate::data::synth::is_synthetic(root) {
        return Err(EvalError::Input {
            path: root.to_path_buf(),
            message: format!(
                "is a synthetic dataset (it has {}): its image names copy NIH's, but Google's adjudicated labels describe NIH's real images, not these",
                crate::data::synth::MARKER
            ),
        });
    }
    match explicit {
        Some(p) => Ok(p.to_path_buf()),
        None => crate::data::google2019::find(root).map_err(|e| EvalError::Input {
            path: root.to_path_buf(),
            message: format!("{e}; pass --truth-file"),
        }),
    }
}

/// Scores `j` (predictions with NIH's labels) on Google's adjudicated labels of `set`, read
/// from `file`. Errors when none of j's images is in that set. `min_positives` is
/// `eval.subgroups.min_positives`: the same rule as for a subgroup.
pub fn adjudicate(
    j: &Joined,
    google: &[AdjudicatedImage],
    file: &Path,
    set: Split,
    min_positives: usize,
    (resamples, seed): (usize, u64),
) -> Result<Adjudicated, EvalError> {
    let in_google_set = google.iter().filter(|g| g.set == set).count();
    let (rows, in_other_set) = rows_in_set(j, google, set);
    if rows.is_empty() {
        return Err(EvalError::Input {
            path: file.to_path_buf(),
            message: format!(
                "none of the {} scored images is among the {in_google_set} images of Google's `{set}` set ({in_other_set} are in its other set): adjudicated labels cover only NIH ChestX-Ray14 images",
                j.image_ids.len()
            ),
        });
    }
    let mut index = PatientIndex::<usize>::default();
    let patients: Vec<usize> = rows
        .iter()
        .map(|(i, _)| index.index(j.patients[*i]))
        .collect();
    let findings = Finding::ALL
        .iter()
        .enumerate()
        .map(|(f, &finding)| {
            let on = Scoring {
                rows: &rows,
                patients: &patients,
                min_positives,
                resamples,
                seed,
            };
            on.finding(j, f, finding)
        })
        .collect();
    Ok(Adjudicated {
        truth: TRUTH_NAME.into(),
        set,
        n_images: rows.len(),
        n_patients: index.len(),
        in_google_set,
        in_other_set,
        min_positives,
        bootstrap: BootstrapSettings {
            resamples,
            seed,
            level: 0.95,
            unit: "patient".into(),
        },
        findings,
    })
}

/// The images scored (rows of the joined data with their adjudicated image), their patients
/// and the settings.
struct Scoring<'r, 'g> {
    rows: &'r [(usize, &'g AdjudicatedImage)],
    patients: &'r [usize],
    min_positives: usize,
    resamples: usize,
    seed: u64,
}

impl Scoring<'_, '_> {
    /// One finding (index `f` of [`Finding::ALL`]) on `rows`, against both truths with the same
    /// patient resamples.
    fn finding(&self, j: &Joined, f: usize, finding: Finding) -> FindingResult {
        let rows = self.rows;
        let sources = finding.nih_sources();
        let cols: Option<Vec<usize>> = sources
            .iter()
            .map(|l| j.labels.iter().position(|x| x == l))
            .collect();
        let mut out = FindingResult {
            finding: finding.column().into(),
            from: sources.iter().map(|s| s.to_string()).collect(),
            not_scored: None,
            n: rows.len(),
            positives_adjudicated: rows.iter().filter(|(_, g)| g.findings[f]).count(),
            positives_nih: 0,
            agreement: None,
            adjudicated: None,
            nih: None,
        };
        let cols = match cols {
            Some(c) if !c.is_empty() => c,
            _ => {
                out.not_scored = Some(if sources.is_empty() {
                    "no output of the 14 NIH labels corresponds to it".into()
                } else {
                    format!(
                        "the predictions have no column for {}",
                        sources.join(" or ")
                    )
                });
                return out;
            }
        };
        let s: Vec<Vec<f64>> = rows
            .iter()
            .map(|(i, _)| vec![cols.iter().map(|&c| j.s[*i][c]).fold(f64::MIN, f64::max)])
            .collect();
        // NIH's truth for the finding: positive when any source label is; unknown when none is
        // and some is unknown.
        let nih: Vec<Vec<Option<bool>>> = rows
            .iter()
            .map(|(i, _)| {
                let v: Vec<Option<bool>> = cols.iter().map(|&c| j.y[*i][c]).collect();
                vec![if v.contains(&Some(true)) {
                    Some(true)
                } else if v.iter().all(|x| x.is_some()) {
                    Some(false)
                } else {
                    None
                }]
            })
            .collect();
        let adj: Vec<Vec<bool>> = rows.iter().map(|(_, g)| vec![g.findings[f]]).collect();
        out.positives_nih = nih.iter().filter(|r| r[0] == Some(true)).count();
        let known: Vec<(bool, bool)> = nih
            .iter()
            .zip(&adj)
            .filter_map(|(n, a)| n[0].map(|n| (n, a[0])))
            .collect();
        out.agreement = (!known.is_empty())
            .then(|| known.iter().filter(|(n, a)| n == a).count() as f64 / known.len() as f64);
        out.adjudicated = Some(self.score(&adj, &s));
        out.nih = Some(self.score(&nih, &s));
        out
    }

    fn score<T: crate::metrics::Truth>(&self, y: &[Vec<T>], s: &[Vec<f64>]) -> Score {
        let (yk, sk, _) = crate::metrics::known_column(y, s, 0);
        let positives = yk.iter().filter(|v| **v).count();
        if positives.min(yk.len() - positives) < self.min_positives {
            return Score {
                auroc: None,
                ci: None,
                too_few: true,
            };
        }
        let ci = bootstrap_auroc(y, s, self.patients, self.resamples, self.seed, 0.95);
        Score {
            auroc: Curve::new(&yk, &sk).auroc(),
            ci: ci.per_label[0],
            too_few: false,
        }
    }
}
