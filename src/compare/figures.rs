//! The figures of a comparison: AUROC per label for every model, ΔAUROC per label for every
//! pair, mean AUROC against multiply-adds, and every label's ROC curves overlaid.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::inputs::Aligned;
use super::stats::{Comparison, Pair};
use crate::metrics::paired::AucTest;
use crate::metrics::roc_curve;
use crate::plot::{
    canvas, colour, diagonal, e2s, human, legend, madds_chart, marker_radius, render, unit_chart,
    DrawResult, Figure, MaddsChart, PlotError,
};
use crate::report::references;

/// A value with its 95% interval, either possibly undefined.
type Estimate = (Option<f64>, Option<[f64; 2]>);

/// Every figure, written into `dir`.
pub fn figures(dir: &Path, al: &Aligned, c: &Comparison) -> Result<Vec<Figure>, PlotError> {
    let mut figs = vec![auroc_chart(dir, c)?];
    for (i, p) in c.pairs.iter().enumerate() {
        figs.push(delta_chart(dir, i, p, c)?);
    }
    if c.inputs
        .iter()
        .any(|i| i.madds.is_some() && i.mean_auroc.is_some())
    {
        figs.push(cost_chart(dir, c)?);
    }
    figs.push(roc_overlay(dir, al, c)?);
    Ok(figs)
}

/// The lower end of an AUROC/Δ axis that shows every value, in steps of 0.05.
fn floor_05(v: f64) -> f64 {
    ((v - 0.02) * 20.0).floor() / 20.0
}

/// Row labels of the per-label charts: the labels, then the macro mean.
fn row_names(c: &Comparison) -> Vec<String> {
    let mut r = c.labels.clone();
    r.push("mean (macro)".into());
    r
}

fn auroc_chart(dir: &Path, c: &Comparison) -> Result<Figure, PlotError> {
    let title = format!(
        "AUROC per label with 95% patient-bootstrap CI, {} split ({} images)",
        c.split, c.n_images
    );
    let rows = row_names(c);
    let n = rows.len();
    let m = c.inputs.len();
    // values[i][row] = (auroc, ci)
    let values: Vec<Vec<Estimate>> = c
        .inputs
        .iter()
        .map(|inp| {
            let mut v: Vec<_> = inp
                .per_label
                .iter()
                .map(|l| (l.auroc, l.auroc_ci))
                .collect();
            v.push((inp.mean_auroc, inp.mean_auroc_ci));
            v
        })
        .collect();
    let lowest = values
        .iter()
        .flatten()
        .flat_map(|(a, ci)| [*a, ci.map(|c| c[0])])
        .flatten()
        .fold(0.5f64, f64::min);
    let x_lo = floor_05(lowest).clamp(0.0, 0.5);
    render!(
        dir,
        "compare_auroc",
        title,
        (1200, 52 * n as u32 + 24 * m as u32 + 160),
        |root: &DrawingArea<_, Shift>| {
            let root = canvas(root, &title, 22)?;
            let legend_rows = m as f64 * 0.45 + 0.4;
            let mut chart = ChartBuilder::on(&root)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(170)
                .build_cartesian_2d(x_lo..1.0f64, (-0.5 - legend_rows)..(n as f64 - 0.5))
                .map_err(e2s)?;
            let names = rows.clone();
            chart
                .configure_mesh()
                .x_desc("AUROC")
                .light_line_style(WHITE.mix(0.0))
                .y_labels(n + m + 2)
                .y_label_formatter(&|y| row_label(&names, *y))
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(e2s)?;
            for (i, inp) in c.inputs.iter().enumerate() {
                let off = offset(i, m);
                let col = colour(i);
                let y_of = |r: usize| (n - 1 - r) as f64 + off;
                chart
                    .draw_series(values[i].iter().enumerate().filter_map(|(r, (a, ci))| {
                        let ci = (*ci)?;
                        Some(ErrorBar::new_horizontal(
                            y_of(r),
                            ci[0],
                            (*a)?,
                            ci[1],
                            col.stroke_width(2),
                            6,
                        ))
                    }))
                    .map_err(e2s)?
                    .label(format!(
                        "{}: mean {}",
                        inp.name,
                        inp.mean_auroc
                            .map(|v| format!("{v:.3}"))
                            .unwrap_or("n/a".into())
                    ))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(3))
                    });
                chart
                    .draw_series(values[i].iter().enumerate().filter_map(|(r, (a, _))| {
                        Some(Circle::new(((*a)?, y_of(r)), 4, col.filled()))
                    }))
                    .map_err(e2s)?;
            }
            legend(&mut chart, SeriesLabelPosition::LowerLeft, 14, 0.9)
        }
    )
}

/// The label of row `y` (rows counted from the top), or nothing between rows.
fn row_label(names: &[String], y: f64) -> String {
    let i = y.round() as isize;
    if (y - i as f64).abs() < 1e-6 && i >= 0 && (i as usize) < names.len() {
        names[names.len() - 1 - i as usize].clone()
    } else {
        String::new()
    }
}

/// Vertical offset of model `i` of `m` inside a row, so intervals do not overlap.
fn offset(i: usize, m: usize) -> f64 {
    if m <= 1 {
        0.0
    } else {
        0.3 - 0.6 * i as f64 / (m - 1) as f64
    }
}

fn delta_chart(dir: &Path, index: usize, p: &Pair, c: &Comparison) -> Result<Figure, PlotError> {
    let title = format!(
        "ΔAUROC = {} − {} per label, 95% paired patient-bootstrap CI",
        p.a, p.b
    );
    let rows = row_names(c);
    let n = rows.len();
    // (Δ, its interval, Holm p) per row.
    let mut vals: Vec<(Estimate, Option<f64>)> = Vec::new();
    for l in &p.per_label {
        vals.push(((l.delta, l.delta_ci), l.p_holm));
    }
    vals.push(((p.mean.delta, p.mean.delta_ci), None));
    let extent = vals
        .iter()
        .flat_map(|((d, ci), _)| [*d, ci.map(|c| c[0]), ci.map(|c| c[1])])
        .flatten()
        .fold(0.02f64, |a, v| a.max(v.abs()));
    let lim = (extent * 20.0 + 0.5).ceil() / 20.0;
    let names: Vec<String> = rows
        .iter()
        .zip(&vals)
        .map(|(r, (_, ph))| match ph {
            Some(ph) if *ph < 0.001 => format!("{r} (Holm p<0.001)*"),
            Some(ph) if *ph < 0.05 => format!("{r} (Holm p={ph:.3})*"),
            Some(ph) => format!("{r} (Holm p={ph:.2})"),
            None => r.clone(),
        })
        .collect();
    render!(
        dir,
        &format!("compare_delta_{}", index + 1),
        title,
        (1200, 46 * n as u32 + 190),
        |root: &DrawingArea<_, Shift>| {
            let root = canvas(root, &title, 21)?;
            let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 - 40);
            let mut chart = ChartBuilder::on(&upper)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(290)
                .build_cartesian_2d(-lim..lim, -0.5f64..(n as f64 - 0.5))
                .map_err(e2s)?;
            chart
                .configure_mesh()
                .x_desc(format!("ΔAUROC ({} better →)", p.a))
                .x_label_formatter(&|v| {
                    if v.abs() < 1e-9 {
                        "0".into()
                    } else {
                        format!("{v:+.2}")
                    }
                })
                .light_line_style(WHITE.mix(0.0))
                .y_labels(n)
                .y_label_formatter(&|y| row_label(&names, *y))
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(e2s)?;
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, -0.5), (0.0, n as f64 - 0.5)],
                    BLACK.mix(0.6).stroke_width(2),
                ))
                .map_err(e2s)?;
            let y_of = |r: usize| (n - 1 - r) as f64;
            let col = colour(0);
            chart
                .draw_series(vals.iter().enumerate().filter_map(|(r, ((d, ci), _))| {
                    let ci = (*ci)?;
                    Some(ErrorBar::new_horizontal(
                        y_of(r),
                        ci[0],
                        (*d)?,
                        ci[1],
                        col.stroke_width(2),
                        8,
                    ))
                }))
                .map_err(e2s)?;
            chart
                .draw_series(vals.iter().enumerate().filter_map(|(r, ((d, _), _))| {
                    Some(Circle::new(((*d)?, y_of(r)), 5, col.filled()))
                }))
                .map_err(e2s)?;
            let by = match c.test {
                AucTest::Clustered => "the patient-clustered test",
                AucTest::Delong => "DeLong's test (images assumed independent)",
            };
            lower
                .draw_text(
                    &format!("Labels marked * differ by {by} after Holm's adjustment across labels (p < 0.05). Intervals resample patients once for both models."),
                    &("sans-serif", 13).into_text_style(&lower),
                    (10, 10),
                )
                .map_err(e2s)?;
            Ok(())
        }
    )
}

/// A published model drawn on the cost chart.
struct PublishedPoint {
    label: String,
    madds: f64,
    params: f64,
    mean: f64,
}

/// Published points whose split protocol matches every input's.
fn published_points(c: &Comparison) -> (Vec<PublishedPoint>, Option<String>) {
    let protocols: Vec<Option<&str>> = c.inputs.iter().map(|i| i.protocol.as_deref()).collect();
    let all = |p: &str| protocols.iter().all(|x| *x == Some(p));
    if c.inputs.iter().any(|i| i.synthetic) {
        return (vec![], None);
    }
    // DenseNet-121 with a 14-way head, counted at the comparison's resolution (the first
    // input's with one; 224, CheXNet's, otherwise).
    let res = c.inputs.iter().find_map(|i| i.resolution).unwrap_or(224);
    let dn = crate::model::count::count_densenet121(14, res);
    let (dn_madds, dn_params) = (dn.madds as f64, dn.total_params as f64);
    if all("random_patient") {
        (
            vec![PublishedPoint {
                label: "CheXNet DenseNet-121 (its own random split)".into(),
                madds: dn_madds,
                params: dn_params,
                mean: references::CHEXNET_MEAN,
            }],
            Some(format!(
                "Wang et al. 2017 (ResNet-50, its own random split): mean {:.3}",
                references::WANG2017.iter().sum::<f64>() / 14.0
            )),
        )
    } else if all("official") {
        let points = references::OFFICIAL_SPLIT_MEANS
            .iter()
            .filter(|r| r.peer_reviewed && r.who.contains("DenseNet-121"))
            .map(|r| PublishedPoint {
                label: format!("{} (official split)", r.who),
                madds: dn_madds,
                params: dn_params,
                mean: r.mean,
            })
            .collect();
        (points, None)
    } else {
        (vec![], None)
    }
}

/// Each input with multiply-adds and a mean AUROC: its marker (area ∝ parameters), its 95%
/// interval and its name to the right.
fn draw_inputs<DB: DrawingBackend>(
    chart: &mut MaddsChart<'_, DB>,
    c: &Comparison,
    pts: &[(usize, f64, f64, f64)],
    radius: &dyn Fn(f64) -> i32,
) -> DrawResult {
    for &(i, x, y, params) in pts {
        let inp = &c.inputs[i];
        let col = colour(i);
        if let Some(ci) = inp.mean_auroc_ci {
            chart
                .draw_series([ErrorBar::new_vertical(
                    x,
                    ci[0],
                    y,
                    ci[1],
                    col.stroke_width(2),
                    10,
                )])
                .map_err(e2s)?;
        }
        chart
            .draw_series([Circle::new((x, y), radius(params), col.mix(0.55).filled())])
            .map_err(e2s)?
            .label(format!(
                "{}: {} params, {} MAdds at {}²",
                inp.name,
                human(params, ""),
                human(x, ""),
                inp.resolution.unwrap_or(0)
            ))
            .legend(move |(x, y)| Circle::new((x + 8, y), 6, col.filled()));
        // The name sits to the right of the marker, not on it.
        let r = radius(params);
        chart
            .draw_series([EmptyElement::at((x, y))
                + Text::new(
                    inp.name.clone(),
                    (r + 6, -8),
                    ("sans-serif", 15).into_font(),
                )])
            .map_err(e2s)?;
    }
    Ok(())
}

/// The published points that share the inputs' split protocol.
fn draw_published<DB: DrawingBackend>(
    chart: &mut MaddsChart<'_, DB>,
    published: &[PublishedPoint],
    radius: &dyn Fn(f64) -> i32,
) -> DrawResult {
    for p in published {
        chart
            .draw_series([Cross::new(
                (p.madds, p.mean),
                radius(p.params) / 2 + 4,
                RED.stroke_width(2),
            )])
            .map_err(e2s)?
            .label(format!(
                "published: {} ({}, mean {:.3})",
                p.label,
                human(p.params, " params"),
                p.mean
            ))
            .legend(|(x, y)| Cross::new((x + 8, y), 6, RED.stroke_width(2)));
    }
    Ok(())
}

/// Needs at least one input with multiply-adds and a mean AUROC.
fn cost_chart(dir: &Path, c: &Comparison) -> Result<Figure, PlotError> {
    let title = format!("Mean AUROC against multiply-adds ({} split)", c.split);
    let pts: Vec<(usize, f64, f64, f64)> = c
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(i, inp)| Some((i, inp.madds? as f64, inp.mean_auroc?, inp.params? as f64)))
        .collect();
    let (published, wang) = published_points(c);
    let xs: Vec<f64> = pts
        .iter()
        .map(|p| p.1)
        .chain(published.iter().map(|p| p.madds))
        .collect();
    let ys: Vec<f64> = pts
        .iter()
        .map(|p| p.2)
        .chain(published.iter().map(|p| p.mean))
        .chain(
            c.inputs
                .iter()
                .filter_map(|i| i.mean_auroc_ci.map(|c| c[0])),
        )
        .collect();
    let max_params = pts
        .iter()
        .map(|p| p.3)
        .chain(published.iter().map(|p| p.params))
        .fold(1.0f64, f64::max);
    let radius = |params: f64| marker_radius(params, max_params, 5.0, 20.0);
    let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min).max(1.0) / 2.5;
    let x_hi = xs.iter().copied().fold(1.0f64, f64::max) * 2.5;
    let y_lo = floor_05(ys.iter().copied().fold(1.0f64, f64::min)).max(0.0);
    let y_hi = (ys.iter().copied().fold(0.0f64, f64::max) + 0.05)
        .min(1.0)
        .max(y_lo + 0.1);
    render!(
        dir,
        "compare_cost",
        title,
        (1100, 750),
        |root: &DrawingArea<_, Shift>| {
            let root = canvas(root, &title, 22)?;
            let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 - 40);
            let mut chart = madds_chart(&upper, (x_lo, x_hi), (y_lo, y_hi), "mean AUROC")?;
            draw_inputs(&mut chart, c, &pts, &radius)?;
            draw_published(&mut chart, &published, &radius)?;
            legend(&mut chart, SeriesLabelPosition::LowerRight, 13, 0.9)?;
            let note = match &wang {
                Some(w) => format!("Marker area ∝ parameters; bars: 95% patient-bootstrap CI. {w} (cost not plotted)."),
                None if published.is_empty() => "Marker area ∝ parameters; bars: 95% patient-bootstrap CI. No published point shares these inputs' split protocol.".into(),
                None => "Marker area ∝ parameters; bars: 95% patient-bootstrap CI. Published points are drawn for the same split protocol only.".into(),
            };
            lower
                .draw_text(&note, &("sans-serif", 13).into_text_style(&lower), (10, 10))
                .map_err(e2s)?;
            Ok(())
        }
    )
}

fn roc_overlay(dir: &Path, al: &Aligned, c: &Comparison) -> Result<Figure, PlotError> {
    let title = format!(
        "ROC curves of every model, {} split ({} images)",
        c.split, c.n_images
    );
    let cols = 4;
    let rows = c.labels.len().div_ceil(cols).max(1);
    render!(
        dir,
        "compare_roc",
        title,
        (1600, 380 * rows as u32 + 60),
        |root: &DrawingArea<_, Shift>| {
            let root = canvas(root, &title, 26)?;
            let cells = root.split_evenly((rows, cols));
            for (k, (cell, label)) in cells.iter().zip(&c.labels).enumerate() {
                roc_panel(cell, al, c, k, label)?;
            }
            Ok(())
        }
    )
}

fn roc_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    al: &Aligned,
    c: &Comparison,
    k: usize,
    label: &str,
) -> DrawResult {
    let mut chart = unit_chart(
        area,
        label,
        "false positive rate",
        "true positive rate",
        false,
    )?;
    diagonal(&mut chart)?;
    for (i, inp) in c.inputs.iter().enumerate() {
        let (y, s, _) = crate::metrics::known_column(&al.y, &al.scores[i], k);
        let Some(roc) = roc_curve(&y, &s) else {
            continue;
        };
        let col = colour(i);
        let auc = inp.per_label[k]
            .auroc
            .map(|a| format!("{a:.3}"))
            .unwrap_or("n/a".into());
        chart
            .draw_series(LineSeries::new(
                roc.fpr.iter().copied().zip(roc.tpr.iter().copied()),
                col.stroke_width(2),
            ))
            .map_err(e2s)?
            .label(format!("{} {auc}", inp.name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], col.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight, 11, 0.85)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::stats::{InputKind, InputSummary};
    use crate::eval::scoring::BootstrapSettings;

    fn comparison(protocol: Option<&str>, synthetic: bool) -> Comparison {
        let input = |name: &str| InputSummary {
            name: name.into(),
            source: format!("reports/{name}"),
            kind: InputKind::Run,
            split: "test".into(),
            protocol: protocol.map(String::from),
            synthetic,
            n_images: 10,
            arch: None,
            resolution: None,
            params: None,
            madds: None,
            mean_auroc: None,
            mean_auroc_ci: None,
            per_label: vec![],
            cost: None,
            vs_first: None,
        };
        Comparison {
            split: "test".into(),
            n_images: 10,
            n_patients: 5,
            labels: vec![],
            dropped_labels: vec![],
            bootstrap: BootstrapSettings {
                resamples: 0,
                seed: 0,
                level: 0.95,
                unit: "patient".into(),
            },
            test: AucTest::Clustered,
            inputs: vec![input("a"), input("b")],
            pairs: vec![],
            restricted_to: None,
            machine: None,
        }
    }

    /// The DenseNet-121 point is counted at the comparison's resolution: 2.83G multiply-adds
    /// and 6.97M parameters at 224² (torchvision's model as the architecture doc counts it),
    /// about 4× the multiply-adds at 448² (the head's 14k are negligible), same parameters.
    #[test]
    fn the_published_densenet_point_is_counted_at_the_comparisons_resolution() {
        let mut c = comparison(Some("official"), false);
        let (p, _) = published_points(&c);
        assert!((p[0].madds / 2833e6 - 1.0).abs() < 0.005, "{}", p[0].madds);
        assert!(
            (p[0].params / 6.968e6 - 1.0).abs() < 0.001,
            "{}",
            p[0].params
        );
        c.inputs[0].resolution = Some(448);
        let (q, _) = published_points(&c);
        assert!(
            (q[0].madds / (4.0 * 2833e6) - 1.0).abs() < 0.01,
            "{}",
            q[0].madds
        );
        assert_eq!(q[0].params, p[0].params);
    }

    #[test]
    fn published_points_only_for_a_matching_protocol() {
        let (p, wang) = published_points(&comparison(Some("random_patient"), false));
        assert_eq!(p.len(), 1);
        assert!(p[0].label.contains("CheXNet") && p[0].mean == references::CHEXNET_MEAN);
        assert!(wang.is_some_and(|w| w.contains("random split")));
        let (p, wang) = published_points(&comparison(Some("official"), false));
        assert!(!p.is_empty() && p.iter().all(|x| x.label.contains("official split")));
        assert!(wang.is_none());
        for (protocol, synthetic) in [
            (Some("official"), true),
            (Some("split_file"), false),
            (None, false),
        ] {
            let (p, wang) = published_points(&comparison(protocol, synthetic));
            assert!(p.is_empty() && wang.is_none(), "{protocol:?} {synthetic}");
        }
    }
}
