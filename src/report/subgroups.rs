//! The "Subgroups" section of a run's report: per attribute (sex, age band, view, dataset)
//! a forest plot (label × group, AUROC with its patient-bootstrap interval) and a table of
//! each label's groups and its largest gap, from `subgroups_<key>.json`.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift as Area;
use plotters::prelude::*;

use super::document::{base64, esc, Section, Table};
use crate::eval::subgroups::{Attribute, AttributeSubgroups, Subgroups};
use crate::metrics::subgroups::GroupLabel;
use crate::plot::{canvas, colour, e2s, render, Figure, PlotError};
use crate::run::{EvalKey, RunDir};

/// A view gap whose interval starts above this is called large, and the report names the
/// AP/PA shortcut.
pub const LARGE_VIEW_GAP: f64 = 0.05;

/// Rows of the forest plot: (label index, group index), top to bottom; a label no group
/// has an AUROC for is left out (the table lists it).
fn plot_rows(a: &AttributeSubgroups, labels: usize) -> Vec<(usize, usize)> {
    let groups = &a.result.groups;
    (0..labels)
        .filter(|&k| groups.iter().any(|g| g.per_label[k].auroc.is_some()))
        .flat_map(|k| (0..groups.len()).map(move |g| (k, g)))
        .collect()
}

/// One attribute's forest plot: each label a block of one row per group, the group's AUROC
/// and 95% interval in its colour; a group with too few cases is written as such.
pub fn forest_plot(
    dir: &Path,
    name: &str,
    a: &AttributeSubgroups,
    labels: &[String],
) -> Result<Figure, PlotError> {
    let rows = plot_rows(a, labels.len());
    let n = rows.len();
    let groups = &a.result.groups;
    let point = |k: usize, g: usize| -> &GroupLabel { &groups[g].per_label[k] };
    let lowest = rows
        .iter()
        .flat_map(|&(k, g)| [point(k, g).auroc, point(k, g).ci.map(|c| c[0])])
        .flatten()
        .fold(0.5f64, f64::min);
    let x_lo = (((lowest - 0.02) * 20.0).floor() / 20.0).clamp(0.0, 0.5);
    let title = format!(
        "AUROC by {} (95% patient-bootstrap CI)",
        a.attribute.title()
    );
    let legend_rows = groups.len() as f64 + 1.0;
    render!(
        dir,
        name,
        title,
        (1100, 18 * n as u32 + 22 * legend_rows as u32 + 130),
        |root: &DrawingArea<_, Area>| {
            let root = canvas(root, &title, 22)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(210)
                .build_cartesian_2d(x_lo..1.0f64, (-0.5 - legend_rows)..(n as f64 - 0.5))
                .map_err(e2s)?;
            let y_of = |i: usize| (n - 1 - i) as f64;
            let ylabel = |y: &f64| -> String {
                let i = n as f64 - 1.0 - *y;
                let r = i.round();
                if (i - r).abs() > 1e-6 || r < 0.0 || r as usize >= n {
                    return String::new();
                }
                let (k, g) = rows[r as usize];
                if g == 0 {
                    format!("{} · {}", labels[k], groups[g].group)
                } else {
                    groups[g].group.clone()
                }
            };
            chart
                .configure_mesh()
                .x_desc("AUROC")
                .light_line_style(WHITE.mix(0.0))
                .y_labels(n + legend_rows as usize)
                .y_label_formatter(&ylabel)
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(e2s)?;
            // A rule above each label's block.
            let per = groups.len();
            chart
                .draw_series((1..n / per).map(|b| {
                    let y = y_of(b * per) + 0.5;
                    PathElement::new(vec![(x_lo, y), (1.0, y)], BLACK.mix(0.25))
                }))
                .map_err(e2s)?;
            for (g, grp) in groups.iter().enumerate() {
                let c = colour(g);
                let mine = rows.iter().enumerate().filter(|(_, r)| r.1 == g);
                chart
                    .draw_series(mine.clone().filter_map(|(i, &(k, _))| {
                        let l = point(k, g);
                        let ci = l.ci?;
                        Some(ErrorBar::new_horizontal(
                            y_of(i),
                            ci[0],
                            l.auroc?,
                            ci[1],
                            c.stroke_width(2),
                            6,
                        ))
                    }))
                    .map_err(e2s)?
                    .label(format!("{} ({} images)", grp.group, grp.images))
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
                chart
                    .draw_series(mine.clone().filter_map(|(i, &(k, _))| {
                        Some(Circle::new((point(k, g).auroc?, y_of(i)), 4, c.filled()))
                    }))
                    .map_err(e2s)?;
                chart
                    .draw_series(
                        mine.filter(|(_, &(k, _))| point(k, g).too_few)
                            .map(|(i, _)| {
                                Text::new(
                                    "too few",
                                    (x_lo + 0.005, y_of(i) + 0.3),
                                    ("sans-serif", 11).into_font().color(&c),
                                )
                            }),
                    )
                    .map_err(e2s)?;
            }
            crate::plot::legend(&mut chart, SeriesLabelPosition::LowerRight, 13, 0.9)
        }
    )
}

fn cell(l: &GroupLabel) -> String {
    match (l.too_few, l.auroc, l.ci) {
        (true, _, _) => format!("too few ({}+ / {}−)", l.positives, l.negatives),
        (false, Some(a), Some([lo, hi])) => format!("{a:.3} [{lo:.3}, {hi:.3}]"),
        (false, Some(a), None) => format!("{a:.3}"),
        (false, None, _) => "undefined".into(),
    }
}

/// The table of one attribute: per label each group's AUROC (or "too few") and the gap.
fn table(a: &AttributeSubgroups, labels: &[String]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut headers = vec!["label".to_string()];
    headers.extend(
        a.result
            .groups
            .iter()
            .map(|g| format!("{} ({} img.)", g.group, g.images)),
    );
    headers.push("largest gap [95% CI]".into());
    let rows = labels
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let mut r = vec![l.clone()];
            r.extend(a.result.groups.iter().map(|g| cell(&g.per_label[k])));
            let gap = &a.result.gaps[k];
            r.push(match (gap.gap, gap.ci) {
                (Some(v), ci) => format!(
                    "{v:.3}{} ({} over {})",
                    ci.map(|[lo, hi]| format!(" [{lo:.3}, {hi:.3}]"))
                        .unwrap_or_default(),
                    gap.high.as_deref().unwrap_or(""),
                    gap.low.as_deref().unwrap_or("")
                ),
                (None, _) => "–".into(),
            });
            r
        })
        .collect();
    (headers, rows)
}

/// The AP/PA sentence, when some label's view gap has an interval above [`LARGE_VIEW_GAP`].
pub fn view_shortcut_note(s: &Subgroups) -> Option<String> {
    let v = s.attribute(Attribute::View)?;
    let widest = v
        .result
        .gaps
        .iter()
        .filter(|g| g.ci.is_some_and(|c| c[0] > LARGE_VIEW_GAP))
        .max_by(|a, b| a.gap.unwrap_or(0.0).total_cmp(&b.gap.unwrap_or(0.0)))?;
    Some(format!(
        "The view gap is large for {} ({:.3}, interval above {LARGE_VIEW_GAP}): in ChestX-Ray14, AP films come mostly from sicker, bed-bound patients, so a gap between views can be a shortcut the model took rather than a difference in how well it reads the film.",
        widest.label,
        widest.gap.unwrap_or(0.0)
    ))
}

fn attribute_section(
    a: &AttributeSubgroups,
    s: &Subgroups,
    out: &Path,
    suffix: &str,
) -> Result<Section> {
    let name = format!(
        "subgroups_{suffix}_{}",
        serde_json::to_value(a.attribute)?
            .as_str()
            .unwrap_or("attribute")
    );
    let plotted = !plot_rows(a, s.labels.len()).is_empty();
    let fig = plotted
        .then(|| forest_plot(out, &name, a, &s.labels))
        .transpose()?;
    let (headers, rows) = table(a, &s.labels);
    let title = format!("By {}", a.attribute.title());
    let unknown = if a.unknown > 0 {
        format!(
            " {} images have no {} and are in no group.",
            a.unknown,
            a.attribute.title()
        )
    } else {
        String::new()
    };
    let table = Table {
        header: headers,
        rows,
    };
    let mut md = format!("\n### {title}\n\n{unknown}\n\n{}", table.markdown());
    let mut html = format!(
        "<h3>{}</h3>\n<p>{}</p>\n{}",
        esc(&title),
        esc(unknown.trim()),
        table.html()
    );
    if let Some(fig) = fig {
        let png =
            std::fs::read(&fig.png).with_context(|| format!("reading {}", fig.png.display()))?;
        md += &format!("\n![{}]({}.png)\n", fig.title, fig.name);
        html += &format!(
            "<p>Labels where no group has enough cases are left out of the figure.</p>\n<img alt=\"{}\" src=\"data:image/png;base64,{}\">\n",
            esc(&fig.title),
            base64(&png)
        );
    }
    Ok(Section { md, html })
}

/// The section when `evaluate --run` has written `subgroups_<key>.json`.
pub(super) fn subgroups_section(
    run: &RunDir,
    key: &EvalKey,
    out: &Path,
) -> Result<Option<Section>> {
    let p = run.subgroups(key);
    if !p.is_file() {
        return Ok(None);
    }
    section(&Subgroups::read(&p)?, out, &key.suffix(), "Subgroups").map(Some)
}

/// The section of `s` under the heading `title`, its figures written into `out` named after
/// `suffix`.
pub(super) fn section(s: &Subgroups, out: &Path, suffix: &str, title: &str) -> Result<Section> {
    let mut head = format!(
        "Per-label AUROC within groups of the {} split ({} images), with 95% intervals from {} patient resamples; every group is scored on the same resamples, and the largest gap (highest minus lowest group) has its interval from them too. A gap is never negative, so neither is its interval: one whose lower end is near 0 is no evidence of a difference. A group with fewer than {} positives or negatives of a label is \"too few\" for it and takes no part in its gap.",
        s.split, s.images, s.resamples, s.min_positives
    );
    for k in &s.skipped {
        head += &format!(" Not by {}: {}.", k.attribute.title(), k.why);
    }
    if let Some(n) = view_shortcut_note(s) {
        head += &format!(" {n}");
    }
    let mut sec = Section {
        md: format!("\n## {title}\n\n{head}\n"),
        html: format!("<h2>{}</h2>\n<p>{}</p>\n", esc(title), esc(&head)),
    };
    for a in &s.attributes {
        let one = attribute_section(a, s, out, suffix)?;
        sec.md += &one.md;
        sec.html += &one.html;
    }
    Ok(sec)
}
