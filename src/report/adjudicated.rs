//! The report section of `evaluate --truth google2019`: per finding, AUROC on NIH's
//! report-mined labels and on the radiologists' adjudicated labels of the same images, side
//! by side with their intervals.

use anyhow::Result;

use super::document::{esc, Section, Table};
use crate::eval::adjudicated::{Adjudicated, Score};
use crate::run::{EvalKey, RunDir};

/// The section of `a`.
pub(super) fn section(a: &Adjudicated) -> Section {
    let head = format!(
        "{} images of {} patients of this split are among the {} images of Google's `{}` set (Majkowska et al., Radiology 2019){}. Each was read by three radiologists and disagreements adjudicated, where NIH's labels were mined from reports by NLP: the adjudicated column is the better truth and the one to quote; the NIH-label column scores the same images against NIH's labels, so the difference between the two is the effect of label noise. A finding's score is the largest of the model's outputs for the NIH labels listed; its NIH-label truth is their union. Airspace opacity is read as alveolar filling (consolidation, pneumonia, infiltration, edema) and leaves out atelectasis, which is collapse. Intervals: 95%, {} patient resamples, the same resamples for both truths; a truth with fewer than {} positives or negatives is \"too few\" for an AUROC.",
        a.n_images,
        a.n_patients,
        a.in_google_set,
        a.set,
        if a.in_other_set > 0 {
            format!(
                "; {} more are in Google's other set and are not used",
                a.in_other_set
            )
        } else {
            String::new()
        },
        a.bootstrap.resamples,
        a.min_positives
    );
    let table = Table {
        header: [
            "finding",
            "model outputs",
            "images",
            "positive (NIH / panel)",
            "labels agree",
            "AUROC, NIH labels",
            "AUROC, adjudicated",
        ]
        .map(String::from)
        .to_vec(),
        rows: a
            .findings
            .iter()
            .map(|f| match &f.not_scored {
                Some(why) => vec![
                    f.finding.clone(),
                    "none".into(),
                    f.n.to_string(),
                    format!("– / {}", f.positives_adjudicated),
                    "–".into(),
                    format!("not scored: {why}"),
                    "–".into(),
                ],
                None => vec![
                    f.finding.clone(),
                    f.from.join(", "),
                    f.n.to_string(),
                    format!("{} / {}", f.positives_nih, f.positives_adjudicated),
                    f.agreement
                        .map_or("–".into(), |v| format!("{:.1}%", 100.0 * v)),
                    Score::text(f.nih.as_ref()),
                    Score::text(f.adjudicated.as_ref()),
                ],
            })
            .collect(),
    };
    Section {
        md: format!("\n## Adjudicated labels\n\n{head}\n\n{}", table.markdown()),
        html: format!(
            "<h2>Adjudicated labels</h2>\n<p>{}</p>\n{}",
            esc(&head),
            table.html()
        ),
    }
}

/// The section of a run's `truth_google2019_<key>.json`, when `evaluate --truth google2019`
/// wrote one.
pub(super) fn run_section(run: &RunDir, key: &EvalKey) -> Result<Option<Section>> {
    let p = run.adjudicated(key);
    if !p.is_file() {
        return Ok(None);
    }
    Ok(Some(section(&Adjudicated::read(&p)?)))
}
