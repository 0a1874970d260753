//! `muxmed evaluate --predictions`: one job from a predictions file and its labels to the
//! evaluation and its files.

use std::collections::HashSet;
use std::path::Path;

use super::join::{join, Joined};
use super::predictions::{read_predictions, EvalError, Predictions};
use super::scoring::{evaluate, thresholds_from, EvalOptions, Evaluation};
use crate::data::nih::{self};
use crate::labels::Split;
use crate::labels::LABELS;

/// What [`PredictionsJob::run`] gives.
pub struct PredictionsEvaluation {
    pub joined: Joined,
    pub evaluation: Evaluation,
    pub subgroups: super::subgroups::Subgroups,
    /// With [`PredictionsJob::truth_file`]: the scores on Google's adjudicated labels.
    pub adjudicated: Option<super::adjudicated::Adjudicated>,
}

/// `muxmed evaluate --predictions`: scores any model's predictions CSV against NIH labels.
pub struct PredictionsJob<'a> {
    pub predictions: &'a Path,
    pub labels: &'a Path,
    pub split_list: Option<&'a Path>,
    pub split: Split,
    pub thresholds_from: Option<&'a Path>,
    /// Score a file that has columns for only some of the 14 labels (the macro mean is then
    /// over those labels only); without it, missing label columns are an error.
    pub labels_subset: bool,
    /// Also score on Google's adjudicated labels from this file (`--truth google2019`), on
    /// the images of its `Set Id` equal to `split`.
    pub truth_file: Option<&'a Path>,
}

impl PredictionsJob<'_> {
    /// The labels of [`LABELS`] the predictions have no column for.
    pub fn missing_labels(&self, p: &Predictions) -> Vec<String> {
        LABELS
            .iter()
            .filter(|l| !p.labels.iter().any(|x| x == *l))
            .map(|l| l.to_string())
            .collect()
    }

    /// Reads, joins and evaluates; returns the joined data, the evaluation and the
    /// subgroups (the metadata read once for all three).
    pub fn run(&self, opt: &EvalOptions) -> Result<PredictionsEvaluation, EvalError> {
        let mut opt = opt.clone();
        if !(0.0..=1.0).contains(&opt.sensitivity_target) {
            return Err(EvalError::Input {
                path: self.predictions.to_path_buf(),
                message: "--sensitivity must be between 0 and 1".into(),
            });
        }
        if let Some(t) = self.thresholds_from {
            opt.thresholds = Some((thresholds_from(t)?, format!("chosen in {}", t.display())));
        }
        let preds = read_predictions(self.predictions)?;
        let missing = self.missing_labels(&preds);
        if !missing.is_empty() && !self.labels_subset {
            return Err(EvalError::Input {
                path: self.predictions.to_path_buf(),
                message: format!(
                    "no column for {} of the 14 labels ({}): the mean AUROC would not be comparable; pass --labels-subset to score only the labels present",
                    missing.len(),
                    missing.join(", ")
                ),
            });
        }
        let records = nih::parse_metadata(&nih::read_text(self.labels)?, self.labels)?;
        let list: Option<HashSet<String>> = match self.split_list {
            Some(p) => Some(nih::read_list(p)?.into_iter().collect()),
            None => None,
        };
        let joined = join(&preds, &records, list.as_ref())?;
        let evaluation = evaluate(&joined, self.split.as_str(), &opt);
        let subgroups = self.subgroups(&records, &joined, &opt);
        let adjudicated = match self.truth_file {
            Some(f) => Some(super::adjudicated::adjudicate(
                &joined,
                &crate::data::google2019::read(f)?,
                f,
                self.split,
                crate::config::SubgroupConfig::default().min_positives,
                (opt.resamples, opt.seed),
            )?),
            None => None,
        };
        Ok(PredictionsEvaluation {
            joined,
            evaluation,
            subgroups,
            adjudicated,
        })
    }

    /// Per-label AUROC within sex, age band and view (the metadata's `Patient Gender`,
    /// `Patient Age` and `View Position`) of `j`'s rows, with the default settings.
    fn subgroups(
        &self,
        records: &[nih::Record],
        j: &Joined,
        opt: &EvalOptions,
    ) -> super::subgroups::Subgroups {
        let by_id: std::collections::HashMap<&str, &nih::Record> =
            records.iter().map(|r| (r.image_id.as_str(), r)).collect();
        let rec: Vec<Option<&nih::Record>> = j
            .image_ids
            .iter()
            .map(|id| by_id.get(id.as_str()).copied())
            .collect();
        let attrs = crate::data::dataset::SplitAttributes::of_nih_records(&j.image_ids, &rec);
        super::subgroups::score(
            &attrs,
            j,
            self.split.as_str(),
            &crate::config::SubgroupConfig::default(),
            opt.resamples,
            opt.seed,
        )
    }
}
