//! The figures of a run's report: ROC, precision-recall and reliability grids, per-label
//! AUROC beside the published values, label prevalence and the training curves. Drawn with
//! the kit in [`crate::plot`].

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::references;
use crate::labels::LABELS;
use crate::metrics::{CalibrationBin, PrCurve, Roc};
use crate::plot::{
    canvas, diagonal, e2s, legend, render, unit_chart, DrawResult, Figure, PlotError,
};

const DARK_GREEN: RGBColor = RGBColor(0, 130, 0);

/// What the per-label figures need.
#[derive(Debug, Clone)]
pub struct LabelCurves {
    pub label: String,
    pub auroc: Option<f64>,
    pub ci: Option<[f64; 2]>,
    pub roc: Option<Roc>,
    pub pr: Option<PrCurve>,
    pub average_precision: Option<f64>,
    pub prevalence: f64,
    pub ece: f64,
    pub reliability: Vec<CalibrationBin>,
}

fn auroc_text(c: &LabelCurves) -> String {
    match (c.auroc, c.ci) {
        (Some(a), Some(ci)) => format!("AUROC {a:.3} [{:.3}, {:.3}]", ci[0], ci[1]),
        (Some(a), None) => format!("AUROC {a:.3}"),
        _ => "AUROC undefined (one class)".into(),
    }
}

fn roc_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &LabelCurves,
    big: bool,
) -> DrawResult {
    let label_size = if big { 16 } else { 11 };
    let mut chart = unit_chart(
        area,
        &c.label,
        "false positive rate",
        "true positive rate",
        big,
    )?;
    diagonal(&mut chart)?;
    if let Some(roc) = &c.roc {
        let pts: Vec<(f64, f64)> = roc
            .fpr
            .iter()
            .copied()
            .zip(roc.tpr.iter().copied())
            .collect();
        chart
            .draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
            .map_err(e2s)?
            .label(auroc_text(c))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
    }
    legend(
        &mut chart,
        SeriesLabelPosition::LowerRight,
        label_size,
        0.85,
    )?;
    Ok(())
}

/// One panel per label in a 4x4 grid (empty cells left blank).
/// Rows and columns of a grid of `n` panels: four columns at most, fewer when there are
/// fewer labels, so two labels get two wide panels instead of a mostly empty row of four.
fn grid_shape(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, 4);
    (n.div_ceil(cols).max(1), cols)
}

/// The pixel size of a grid of `n` panels: 400 px columns (at least 900 px in all, for the
/// title), panels 0.9 as tall as wide, 60 px for the title; 1600 × 1500 for 14 labels.
fn grid_size(n: usize) -> (u32, u32) {
    let (rows, cols) = grid_shape(n);
    let width = (400 * cols as u32).max(900);
    let panel = width / cols as u32;
    (width, rows as u32 * panel * 9 / 10 + 60)
}

fn grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    curves: &[LabelCurves],
    title: &str,
    panel: &dyn Fn(&DrawingArea<DB, Shift>, &LabelCurves) -> DrawResult,
) -> DrawResult {
    let root = canvas(root, title, 26)?;
    let (rows, cols) = grid_shape(curves.len());
    let cells = root.split_evenly((rows, cols));
    for (cell, c) in cells.iter().zip(curves) {
        panel(cell, c)?;
    }
    Ok(())
}

pub fn roc_grid(dir: &Path, curves: &[LabelCurves], subtitle: &str) -> Result<Figure, PlotError> {
    let title = format!("ROC curves, {subtitle}");
    render!(
        dir,
        "roc_grid",
        title,
        grid_size(curves.len()),
        |root: &DrawingArea<_, Shift>| grid(root, curves, &title, &|a, c| roc_panel(a, c, false))
    )
}

pub fn roc_single(dir: &Path, c: &LabelCurves, subtitle: &str) -> Result<Figure, PlotError> {
    let name = format!("roc_{}", c.label);
    let title = format!("ROC curve: {}, {subtitle}", c.label);
    render!(dir, &name, title, (700, 700), |root: &DrawingArea<
        _,
        Shift,
    >| {
        root.fill(&WHITE).map_err(e2s)?;
        roc_panel(root, c, true)
    })
}

pub fn pr_grid(dir: &Path, curves: &[LabelCurves], subtitle: &str) -> Result<Figure, PlotError> {
    let title = format!("Precision-recall curves, {subtitle}");
    render!(
        dir,
        "pr_grid",
        title,
        grid_size(curves.len()),
        |root: &DrawingArea<_, Shift>| grid(root, curves, &title, &|area, c| {
            let mut chart = unit_chart(area, &c.label, "recall", "precision", false)?;
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, c.prevalence), (1.0, c.prevalence)],
                    BLACK.mix(0.3),
                ))
                .map_err(e2s)?;
            if let Some(pr) = &c.pr {
                let mut pts = vec![(0.0, 1.0)];
                pts.extend(pr.recall.iter().copied().zip(pr.precision.iter().copied()));
                let ap = c
                    .average_precision
                    .map(|a| format!("AP {a:.3}"))
                    .unwrap_or_default();
                chart
                    .draw_series(LineSeries::new(pts, RED.stroke_width(2)))
                    .map_err(e2s)?
                    .label(format!("{ap} (prevalence {:.3})", c.prevalence))
                    .legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2))
                    });
                legend(&mut chart, SeriesLabelPosition::UpperRight, 11, 0.85)?;
            }
            Ok(())
        })
    )
}

pub fn reliability_grid(
    dir: &Path,
    curves: &[LabelCurves],
    subtitle: &str,
) -> Result<Figure, PlotError> {
    let title = format!("Reliability diagrams (10 bins), {subtitle}");
    render!(
        dir,
        "reliability_grid",
        title,
        grid_size(curves.len()),
        |root: &DrawingArea<_, Shift>| grid(root, curves, &title, &|area, c| {
            let mut chart = unit_chart(
                area,
                &format!("{} (ECE {:.3})", c.label, c.ece),
                "mean predicted probability",
                "observed frequency",
                false,
            )?;
            diagonal(&mut chart)?;
            let pts = reliability_points(&c.reliability);
            chart
                .draw_series(LineSeries::new(pts.clone(), DARK_GREEN.stroke_width(2)))
                .map_err(e2s)?;
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, DARK_GREEN.filled())))
                .map_err(e2s)?;
            Ok(())
        })
    )
}

/// One label's reliability curves before and after temperature scaling.
pub struct BeforeAfter {
    pub label: String,
    pub temperature: Option<f64>,
    pub before: Vec<CalibrationBin>,
    pub after: Vec<CalibrationBin>,
    pub ece_before: f64,
    pub ece_after: f64,
}

/// A reliability panel's points: (mean predicted, observed) of the non-empty bins.
fn reliability_points(bins: &[CalibrationBin]) -> Vec<(f64, f64)> {
    bins.iter()
        .filter_map(|b| Some((b.mean_predicted?, b.observed?)))
        .collect()
}

/// Reliability curves over equal-mass bins, raw (grey) and temperature-scaled (green), one
/// panel per label.
pub fn calibration_grid(
    dir: &Path,
    name: &str,
    labels: &[BeforeAfter],
    subtitle: &str,
) -> Result<Figure, PlotError> {
    let title =
        format!("Reliability before and after temperature scaling (equal-mass bins), {subtitle}");
    let n = labels.len();
    render!(dir, name, title, grid_size(n), |root: &DrawingArea<
        _,
        Shift,
    >| {
        let root = canvas(root, &title, 26)?;
        let cells = root.split_evenly(grid_shape(n));
        for (area, c) in cells.iter().zip(labels) {
            let t = c
                .temperature
                .map_or("no T".to_string(), |t| format!("T {t:.2}"));
            let mut chart = unit_chart(
                area,
                &format!("{} ({t})", c.label),
                "mean predicted probability",
                "observed frequency",
                false,
            )?;
            diagonal(&mut chart)?;
            let grey = RGBColor(150, 150, 150);
            for (bins, colour, what, ece) in [
                (&c.before, grey, "raw", c.ece_before),
                (&c.after, DARK_GREEN, "scaled", c.ece_after),
            ] {
                let pts = reliability_points(bins);
                chart
                    .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                    .map_err(e2s)?
                    .label(format!("{what}, ECE {ece:.3}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 3, colour.filled())))
                    .map_err(e2s)?;
            }
            legend(&mut chart, SeriesLabelPosition::LowerRight, 11, 0.85)?;
        }
        Ok(())
    })
}

/// Empty rows under the labels of the AUROC chart, where its legend goes.
const LEGEND_ROWS: u32 = 2;

/// Per-label AUROC with its CI beside CheXNet's and Wang et al.'s published values.
/// `published`: draw the published per-label AUROCs and the official-split means beside the
/// evaluation (off for synthetic data, which says nothing about them).
pub fn auroc_chart(
    dir: &Path,
    curves: &[LabelCurves],
    subtitle: &str,
    published: bool,
) -> Result<Figure, PlotError> {
    let title = format!("Per-label AUROC with 95% CI, {subtitle}");
    let n = curves.len();
    // The axis starts low enough to show every point and interval (an AUROC below 0.5 must
    // not fall off the chart), in steps of 0.05.
    let show = published;
    let published = |label: &str, table: &[f64; 14]| {
        LABELS
            .iter()
            .position(|l| *l == label)
            .filter(|_| show)
            .map(|k| table[k])
    };
    let lowest = curves
        .iter()
        .flat_map(|c| {
            [
                c.auroc,
                c.ci.map(|x| x[0]),
                published(&c.label, &references::CHEXNET),
                published(&c.label, &references::WANG2017),
            ]
        })
        .flatten()
        .fold(0.5f64, f64::min);
    let x_lo = (((lowest - 0.02) * 20.0).floor() / 20.0).clamp(0.0, 0.5);
    render!(
        dir,
        "auroc_chart",
        title,
        (1200, 60 * (n as u32 + LEGEND_ROWS) + 220),
        |root: &DrawingArea<_, Shift>| {
            let root = canvas(root, &title, 24)?;
            let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 - 60);
            let names: Vec<String> = curves.iter().map(|c| c.label.clone()).collect();
            let mut chart = ChartBuilder::on(&upper)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(170)
                .build_cartesian_2d(x_lo..1.0f64, (-0.5 - LEGEND_ROWS as f64)..(n as f64 - 0.5))
                .map_err(e2s)?;
            chart
                .configure_mesh()
                .x_desc("AUROC")
                .light_line_style(WHITE.mix(0.0))
                .y_labels(n + LEGEND_ROWS as usize)
                .y_label_formatter(&|y| {
                    let i = y.round() as isize;
                    if (y - i as f64).abs() < 1e-6 && i >= 0 && (i as usize) < names.len() {
                        names[names.len() - 1 - i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(e2s)?;
            let y_of = |i: usize| (n - 1 - i) as f64;
            chart
                .draw_series(curves.iter().enumerate().filter_map(|(i, c)| {
                    let ci = c.ci?;
                    Some(ErrorBar::new_horizontal(
                        y_of(i),
                        ci[0],
                        c.auroc?,
                        ci[1],
                        BLUE.stroke_width(2),
                        10,
                    ))
                }))
                .map_err(e2s)?
                .label("this evaluation: AUROC and 95% patient-bootstrap CI")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
            chart
                .draw_series(
                    curves.iter().enumerate().filter_map(|(i, c)| {
                        Some(Circle::new((c.auroc?, y_of(i)), 5, BLUE.filled()))
                    }),
                )
                .map_err(e2s)?;
            if !show {
                legend(&mut chart, SeriesLabelPosition::LowerLeft, 14, 0.9)?;
                return Ok(());
            }
            draw_published(&mut chart, curves, &y_of, &published)?;
            legend(&mut chart, SeriesLabelPosition::LowerLeft, 14, 0.9)?;
            official_means_note(&lower)
        }
    )
}

/// CheXNet's and Wang et al.'s per-label AUROCs beside each label's row.
fn draw_published<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    curves: &[LabelCurves],
    y_of: &dyn Fn(usize) -> f64,
    published: &dyn Fn(&str, &[f64; 14]) -> Option<f64>,
) -> DrawResult {
    chart
        .draw_series(curves.iter().enumerate().filter_map(|(i, c)| {
            Some(Cross::new(
                (published(&c.label, &references::CHEXNET)?, y_of(i) + 0.22),
                6,
                RED.stroke_width(2),
            ))
        }))
        .map_err(e2s)?
        .label(format!("CheXNet 2017 ({})", references::CHEXNET_SPLIT))
        .legend(|(x, y)| Cross::new((x + 8, y), 6, RED.stroke_width(2)));
    chart
        .draw_series(curves.iter().enumerate().filter_map(|(i, c)| {
            Some(TriangleMarker::new(
                (published(&c.label, &references::WANG2017)?, y_of(i) - 0.22),
                6,
                BLACK.mix(0.6).filled(),
            ))
        }))
        .map_err(e2s)?
        .label("Wang et al. 2017 (as quoted by CheXNet; its own split)")
        .legend(|(x, y)| TriangleMarker::new((x + 8, y), 6, BLACK.mix(0.6).filled()));
    Ok(())
}

/// The official-split mean AUROCs of the literature, in two lines under the chart.
fn official_means_note<DB: DrawingBackend>(lower: &DrawingArea<DB, Shift>) -> DrawResult {
    let refs: Vec<String> = references::OFFICIAL_SPLIT_MEANS
        .iter()
        .map(|r| format!("{:.3} {}", r.mean, r.source()))
        .collect();
    lower
        .draw_text(
            &format!(
                "Official-split mean AUROC references (NIH test list): {}",
                refs[..3].join("; ")
            ),
            &("sans-serif", 13).into_text_style(lower),
            (10, 8),
        )
        .map_err(e2s)?;
    lower
        .draw_text(
            &format!(
                "{}. Random-split and official-split AUROCs are not comparable.",
                refs[3..].join("; ")
            ),
            &("sans-serif", 13).into_text_style(lower),
            (10, 30),
        )
        .map_err(e2s)?;
    Ok(())
}

/// Label prevalence per split (or per scored set).
pub fn prevalence_chart(
    dir: &Path,
    labels: &[String],
    sets: &[(String, Vec<f64>)],
    subtitle: &str,
) -> Result<Figure, PlotError> {
    let title = format!("Label prevalence, {subtitle}");
    let n = labels.len();
    let max = sets
        .iter()
        .flat_map(|(_, v)| v.iter())
        .fold(0.0f64, |a, b| a.max(*b))
        .max(0.01)
        * 1.1;
    render!(
        dir,
        "prevalence",
        title,
        (1200, 40 * n as u32 * sets.len().max(1) as u32 / 2 + 260),
        |root: &DrawingArea<_, Shift>| {
            let root = canvas(root, &title, 24)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(170)
                .build_cartesian_2d(0f64..max, -0.5f64..(n as f64 - 0.5))
                .map_err(e2s)?;
            chart
                .configure_mesh()
                .x_desc("fraction of images with the label")
                .light_line_style(WHITE.mix(0.0))
                .y_labels(n)
                .y_label_formatter(&|y| {
                    let i = y.round() as isize;
                    if (y - i as f64).abs() < 1e-6 && i >= 0 && (i as usize) < n {
                        labels[n - 1 - i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(e2s)?;
            let colors = [BLUE, RED, DARK_GREEN, MAGENTA, CYAN];
            let m = sets.len().max(1) as f64;
            for (s, (name, values)) in sets.iter().enumerate() {
                let color = colors[s % colors.len()];
                let h = 0.8 / m;
                chart
                    .draw_series(values.iter().enumerate().map(|(i, v)| {
                        let y0 = (n - 1 - i) as f64 - 0.4 + s as f64 * h;
                        Rectangle::new([(0.0, y0), (*v, y0 + h * 0.9)], color.mix(0.8).filled())
                    }))
                    .map_err(e2s)?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.mix(0.8).filled())
                    });
            }
            legend(&mut chart, SeriesLabelPosition::LowerRight, 14, 0.9)?;
            Ok(())
        }
    )
}

/// A panel of the training curves: y label and (name, points, colour) series.
type Panel<'a> = (&'a str, Vec<(&'a str, Vec<(f64, f64)>, RGBColor)>);

/// Train/val loss, val mean AUROC and learning rate per epoch (from metrics.csv).
pub fn training_curves(
    dir: &Path,
    rows: &[crate::run::EpochRow],
    subtitle: &str,
) -> Result<Figure, PlotError> {
    use crate::run::EpochRow;
    let title = format!("Training curves, {subtitle}");
    let get = |f: fn(&EpochRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.epoch as f64, f(r)?)))
            .collect()
    };
    let n_epochs = rows.len().max(1) as f64;
    render!(
        dir,
        "training_curves",
        title,
        (1500, 480),
        |root: &DrawingArea<_, Shift>| {
            let root = canvas(root, &title, 22)?;
            let panels = root.split_evenly((1, 3));
            let specs: [Panel; 3] = [
                (
                    "loss",
                    vec![
                        ("train loss", get(|r| Some(r.train_loss)), BLUE),
                        ("val loss", get(|r| Some(r.val_loss)), RED),
                    ],
                ),
                (
                    "val mean AUROC",
                    vec![
                        ("val mean AUROC", get(|r| r.val_mean_auroc), DARK_GREEN),
                        ("EMA", get(|r| r.val_mean_auroc_ema), MAGENTA),
                    ],
                ),
                (
                    "learning rate",
                    vec![
                        ("head", get(|r| Some(r.lr_head)), BLUE),
                        ("backbone", get(|r| Some(r.lr_backbone)), RED),
                    ],
                ),
            ];
            for (area, (ylabel, series)) in panels.iter().zip(specs.iter()) {
                let ys: Vec<f64> = series
                    .iter()
                    .flat_map(|(_, v, _)| v.iter().map(|p| p.1))
                    .collect();
                let (lo, hi) = ys
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
                let (lo, hi) = if ys.is_empty() {
                    (0.0, 1.0)
                } else if hi > lo {
                    (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
                } else {
                    (lo - 0.5, hi + 0.5)
                };
                let mut chart = ChartBuilder::on(area)
                    .margin(10)
                    .x_label_area_size(35)
                    .y_label_area_size(60)
                    .build_cartesian_2d(0.5f64..n_epochs + 0.5, lo..hi)
                    .map_err(e2s)?;
                chart
                    .configure_mesh()
                    .x_desc("epoch")
                    .y_desc(*ylabel)
                    .label_style(("sans-serif", 13))
                    .light_line_style(WHITE.mix(0.0))
                    .draw()
                    .map_err(e2s)?;
                for (name, pts, color) in series {
                    if pts.is_empty() {
                        continue;
                    }
                    let color = *color;
                    chart
                        .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                        .map_err(e2s)?
                        .label(*name)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                        });
                    chart
                        .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                        .map_err(e2s)?;
                }
                legend(&mut chart, SeriesLabelPosition::UpperRight, 13, 0.85)?;
            }
            Ok(())
        }
    )
}

#[cfg(test)]
mod tests {
    use super::{grid_shape, grid_size};

    /// 14 labels keep today's 4 × 4 grid of 400 px panels (1600 × 1500); 2 labels get one
    /// row of two 450 px panels, not a row of four 400 px cells with two left empty.
    #[test]
    fn grids_are_sized_for_the_label_count() {
        assert_eq!(grid_shape(14), (4, 4));
        assert_eq!(grid_size(14), (1600, 1500));
        assert_eq!(grid_shape(2), (1, 2));
        assert_eq!(grid_size(2), (900, 465));
        assert_eq!(grid_shape(5), (2, 4));
        assert_eq!(grid_shape(1), (1, 1));
    }
}
