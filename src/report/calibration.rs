//! The Calibration section of a run's report: per label the temperature fitted on val, and
//! Brier score and ECE (equal-width and equal-mass bins) on the scored split before and
//! after scaling, with the reliability curves of both.

use anyhow::Result;

use super::document::{esc, html_figures, md_figures, Section, Table};
use super::figures::{calibration_grid, BeforeAfter};
use crate::eval::calibrate::{Calibration, Temperatures};
use crate::run::{EvalKey, RunDir};

fn arrow(before: f64, after: f64) -> String {
    format!("{before:.4} → {after:.4}")
}

/// The section of `c` (the scored split) and `t` (the fit on val), its figure drawn into
/// `out` named after `suffix`.
pub(super) fn section(
    c: &Calibration,
    t: &Temperatures,
    out: &std::path::Path,
    suffix: &str,
) -> Result<Section> {
    let mut head = format!(
        "One temperature T per label, fitted on the {} images of the val split by minimum negative log-likelihood of p_T = sigmoid(logit(p) / T) (a convex problem in 1/T, solved by safeguarded Newton steps), then applied to the {} split, whose numbers are below. T above 1 softens over-confident probabilities, below 1 sharpens timid ones. Scaling keeps every score's order, so no AUROC changes; the operating thresholds are chosen on the calibrated val probabilities, and `predict` writes calibrated probabilities by default. ECE over {} bins of equal width and of equal count.",
        t.labels.first().map_or(0, |l| l.val_images),
        c.split,
        c.bins
    );
    if c.split == "val" {
        head += " Here the temperatures are scored on the split they were fitted on, so the numbers after scaling are optimistic; the test split's are the honest ones.";
    }
    for l in t.labels.iter().filter(|l| l.why_none.is_some()) {
        head += &format!(
            " {}: no temperature ({}).",
            l.label,
            l.why_none.as_deref().unwrap_or_default()
        );
    }
    let table = Table {
        header: [
            "label",
            "T",
            "images (positive)",
            "Brier",
            "ECE equal-width",
            "ECE equal-mass",
        ]
        .map(String::from)
        .to_vec(),
        rows: c
            .per_label
            .iter()
            .map(|l| {
                vec![
                    l.label.clone(),
                    l.temperature.map_or("none".into(), |t| format!("{t:.3}")),
                    format!("{} ({})", l.n, l.positives),
                    arrow(l.before.brier, l.after.brier),
                    arrow(l.before.ece_equal_width, l.after.ece_equal_width),
                    arrow(l.before.ece_equal_mass, l.after.ece_equal_mass),
                ]
            })
            .collect(),
    };
    let curves: Vec<BeforeAfter> = c
        .per_label
        .iter()
        .map(|l| BeforeAfter {
            label: l.label.clone(),
            temperature: l.temperature,
            before: l.before.reliability_equal_mass.clone(),
            after: l.after.reliability_equal_mass.clone(),
            ece_before: l.before.ece_equal_mass,
            ece_after: l.after.ece_equal_mass,
        })
        .collect();
    let fig = calibration_grid(
        out,
        &format!("calibration_{suffix}"),
        &curves,
        &format!("{} split", c.split),
    )?;
    let figs = [fig];
    Ok(Section {
        md: format!(
            "\n## Calibration\n\n{head}\n\n{}{}",
            table.markdown(),
            md_figures(&figs)
        ),
        html: format!(
            "<h2>Calibration</h2>\n<p>{}</p>\n{}{}",
            esc(&head),
            table.html(),
            html_figures(&figs)?
        ),
    })
}

/// The section when `evaluate --run` wrote `calibration_<key>.json` and the temperatures.
pub(super) fn run_section(
    run: &RunDir,
    key: &EvalKey,
    out: &std::path::Path,
) -> Result<Option<Section>> {
    let (c, t) = (run.calibration(key), run.temperatures(key));
    if !c.is_file() || !t.is_file() {
        return Ok(None);
    }
    section(
        &Calibration::read(&c)?,
        &Temperatures::read(&t)?,
        out,
        &key.suffix(),
    )
    .map(Some)
}
