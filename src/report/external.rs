//! The "External validation" section of a run's report: for every `evaluate --run --on`
//! done with the report's checkpoint, per shared concept the internal (the run's test split)
//! and external AUROC with patient-bootstrap intervals resampled within each dataset, the
//! difference with its interval, and one figure.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift as Area;
use plotters::prelude::*;

use super::document::{base64, esc, Section, Table};
use crate::eval::shift::Shift;
use crate::plot::{canvas, e2s, legend, render, Figure, PlotError};
use crate::run::{EvalKey, ExternalDir, ExternalInfo, ExternalKey, RunDir};

const ORANGE: RGBColor = RGBColor(230, 120, 0);

/// Internal and external AUROC per concept, each with its interval, one row per concept.
pub fn shift_chart(dir: &Path, name: &str, s: &Shift, title: &str) -> Result<Figure, PlotError> {
    let n = s.per_concept.len();
    let lowest = s
        .per_concept
        .iter()
        .flat_map(|c| {
            [
                c.internal_auroc,
                c.internal_ci.map(|x| x[0]),
                c.external_auroc,
                c.external_ci.map(|x| x[0]),
            ]
        })
        .flatten()
        .fold(0.5f64, f64::min);
    let x_lo = (((lowest - 0.02) * 20.0).floor() / 20.0).clamp(0.0, 0.5);
    let title = title.to_string();
    render!(
        dir,
        name,
        title,
        (1100, 70 * (n as u32 + 1) + 140),
        |root: &DrawingArea<_, Area>| {
            let root = canvas(root, &title, 22)?;
            let names: Vec<String> = s.per_concept.iter().map(|c| c.concept.clone()).collect();
            let mut chart = ChartBuilder::on(&root)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(170)
                .build_cartesian_2d(x_lo..1.0f64, -1.5..(n as f64 - 0.5))
                .map_err(e2s)?;
            chart
                .configure_mesh()
                .x_desc("AUROC")
                .light_line_style(WHITE.mix(0.0))
                .y_labels(n + 1)
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
            type Pick = fn(&crate::eval::shift::ConceptShift) -> (Option<f64>, Option<[f64; 2]>);
            let sides: [(&str, RGBColor, f64, Pick); 2] = [
                ("internal: the run's test split", BLUE, 0.15, |c| {
                    (c.internal_auroc, c.internal_ci)
                }),
                ("external", ORANGE, -0.15, |c| {
                    (c.external_auroc, c.external_ci)
                }),
            ];
            for (label, color, dy, pick) in sides {
                chart
                    .draw_series(s.per_concept.iter().enumerate().filter_map(|(i, c)| {
                        let (a, ci) = pick(c);
                        let ci = ci?;
                        Some(ErrorBar::new_horizontal(
                            y_of(i) + dy,
                            ci[0],
                            a?,
                            ci[1],
                            color.stroke_width(2),
                            8,
                        ))
                    }))
                    .map_err(e2s)?
                    .label(format!("{label}: AUROC and 95% patient-bootstrap CI"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(s.per_concept.iter().enumerate().filter_map(|(i, c)| {
                        Some(Circle::new((pick(c).0?, y_of(i) + dy), 5, color.filled()))
                    }))
                    .map_err(e2s)?;
            }
            legend(&mut chart, SeriesLabelPosition::LowerLeft, 14, 0.9)
        }
    )
}

fn num(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.3}"))
}

fn ci(v: Option<[f64; 2]>) -> String {
    v.map_or("–".into(), |[a, b]| format!("[{a:.3}, {b:.3}]"))
}

/// Rows: concept, positives (internal / external), internal, external, difference.
fn rows(s: &Shift) -> Vec<[String; 5]> {
    let mut out: Vec<[String; 5]> = s
        .per_concept
        .iter()
        .map(|c| {
            [
                c.concept.clone(),
                format!("{} / {}", c.internal_positives, c.external_positives),
                format!("{} {}", num(c.internal_auroc), ci(c.internal_ci)),
                format!("{} {}", num(c.external_auroc), ci(c.external_ci)),
                format!("{} {}", num(c.difference), ci(c.difference_ci)),
            ]
        })
        .collect();
    out.push([
        "mean of these concepts".into(),
        String::new(),
        format!("{} {}", num(s.internal_mean), ci(s.internal_mean_ci)),
        format!("{} {}", num(s.external_mean), ci(s.external_mean_ci)),
        format!("{} {}", num(s.difference_mean), ci(s.difference_mean_ci)),
    ]);
    out
}

fn one(info: &ExternalInfo, s: &Shift, fig: &Figure, png: &[u8]) -> Section {
    let head = format!(
        "Pipeline {} ({} data, {} split{}): {} images of {} patients, scored with this run's preprocessing and its val-split thresholds. Scored: the {} concepts both sides label. Not labelled there: {}. Not an output of this run: {}. Intervals: {} patient resamples within each dataset; the difference is external − internal.",
        info.pipeline,
        info.dataset,
        info.scored_split,
        if info.scored_split == "all" { "s" } else { "" },
        info.images,
        info.patients,
        info.scored.len(),
        if info.not_in_other.is_empty() { "none".into() } else { info.not_in_other.join(", ") },
        if info.not_in_run.is_empty() { "none".into() } else { info.not_in_run.join(", ") },
        s.resamples
    );
    let headers = [
        "concept",
        "positives (int. / ext.)",
        "internal AUROC (95% CI)",
        "external AUROC (95% CI)",
        "difference (95% CI)",
    ];
    let table = Table {
        header: headers.iter().map(|h| h.to_string()).collect(),
        rows: rows(s).into_iter().map(Vec::from).collect(),
    };
    let mut md = format!("\n### {}\n\n{head}\n\n{}", info.pipeline, table.markdown());
    let mut html = format!(
        "<h3>{}</h3>\n<p>{}</p>\n{}",
        esc(&info.pipeline),
        esc(&head),
        table.html()
    );
    let file = format!("{}.png", fig.name);
    md += &format!("\n![{}]({file})\n", fig.title);
    html += &format!(
        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">\n",
        esc(&fig.title),
        base64(png)
    );
    Section { md, html }
}

/// The section when the run has external evaluations with `key`'s checkpoint and TTA.
pub(super) fn external_section(run: &RunDir, key: &EvalKey, out: &Path) -> Result<Option<Section>> {
    let mut md = String::from("\n## External validation\n");
    let mut html = String::from("<h2>External validation</h2>\n");
    let mut any = false;
    for (name, dir) in ExternalDir::list(run) {
        for all in [false, true] {
            let k = ExternalKey { eval: *key, all };
            let (Ok(info), Ok(s)) = (dir.read_info(&k), Shift::read(&dir.shift(&k))) else {
                continue;
            };
            let fig_name = format!("external_{name}_{}", k.suffix());
            let title = format!(
                "Internal and external AUROC, {name} ({} split)",
                info.scored_split
            );
            let fig = shift_chart(out, &fig_name, &s, &title)?;
            let png = std::fs::read(&fig.png)
                .with_context(|| format!("reading {}", fig.png.display()))?;
            let sec = one(&info, &s, &fig, &png);
            md += &sec.md;
            html += &sec.html;
            let sub = dir.subgroups(&k);
            if sub.is_file() {
                let title = format!("Subgroups on {name} ({} split)", info.scored_split);
                let sec = super::subgroups::section(
                    &crate::eval::subgroups::Subgroups::read(&sub)?,
                    out,
                    &fig_name,
                    &title,
                )?;
                md += &sec.md;
                html += &sec.html;
            }
            any = true;
        }
    }
    Ok(any.then_some(Section { md, html }))
}
