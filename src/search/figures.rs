//! What a search shows: the Pareto front (val AUROC against multiply-adds, marker area ∝
//! parameters, MUXNet-m, MUXNet-l and DenseNet-121 placed on it) and the hypervolume per
//! generation, each as PNG and SVG in the search directory.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::archive::{Archive, SearchDir, FRONT_CHART, HYPERVOLUME_CHART};
use super::space::phenotype_key;
use crate::model::count::{count, count_densenet121};
use crate::model::spec::ArchSpec;
use crate::plot::human;
use crate::plot::{
    canvas, e2s, legend, madds_chart, marker_radius, render, DrawResult, Figure, MaddsChart,
    PlotError,
};

const FRONT: RGBColor = RGBColor(31, 119, 180);
const REFERENCE: RGBColor = RGBColor(214, 39, 40);

/// A reference architecture: its name, multiply-adds and parameters at the archive's
/// resolution, and its proxy AUROC when the search trained it.
struct Reference {
    name: &'static str,
    madds: f64,
    params: f64,
    auroc: Option<f64>,
}

fn references(a: &Archive) -> Vec<Reference> {
    let k = a.labels.len() as i64;
    let r = i64::from(a.count_resolution);
    let mut out = vec![];
    for (name, spec) in [
        ("MUXNet-m", ArchSpec::muxnet_m()),
        ("MUXNet-l", ArchSpec::muxnet_l()),
    ] {
        let Ok(c) = count(&spec, k, r) else { continue };
        let key = phenotype_key(&spec.arch_def, spec.num_features);
        let auroc = a
            .candidates
            .iter()
            .find(|e| e.key() == key)
            .and_then(|e| e.val_auroc);
        out.push(Reference {
            name,
            madds: c.madds as f64,
            params: c.total_params as f64,
            auroc,
        });
    }
    let d = count_densenet121(k, r);
    out.push(Reference {
        name: "DenseNet-121",
        madds: d.madds as f64,
        params: d.total_params as f64,
        auroc: None,
    });
    out
}

pub fn front_chart(dir: &SearchDir, a: &Archive) -> Result<Figure, PlotError> {
    let front = a.front();
    let scored: Vec<(f64, f64, f64, bool)> = a
        .candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let auroc = c.val_auroc.filter(|_| c.violation == 0.0)?;
            Some((c.madds as f64, auroc, c.params as f64, front.contains(&i)))
        })
        .collect();
    let refs = references(a);
    let title = format!(
        "Search {}: val mean AUROC after proxy training ({}², {} epochs) against multiply-adds at {}²",
        a.pipeline, a.config.proxy.resolution, a.config.proxy.epochs, a.count_resolution
    );
    let xs: Vec<f64> = scored
        .iter()
        .map(|p| p.0)
        .chain(refs.iter().map(|r| r.madds))
        .collect();
    let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min).max(1.0) / 1.5;
    let x_hi = xs.iter().copied().fold(1.0f64, f64::max) * 1.5;
    let ys: Vec<f64> = scored.iter().map(|p| p.1).collect();
    let y_lo = (ys.iter().copied().fold(1.0f64, f64::min) - 0.02).max(0.0);
    let y_hi = (ys.iter().copied().fold(0.5f64, f64::max) + 0.02).min(1.0);
    let x_hi = x_hi.max(a.config.max_madds.map_or(0.0, |b| b as f64 * 1.5));
    let max_params = scored.iter().map(|p| p.2).fold(1.0f64, f64::max);
    let radius = move |params: f64| marker_radius(params, max_params, 3.0, 14.0);
    render!(
        dir.root(),
        FRONT_CHART,
        title,
        (1200, 760),
        |root: &DrawingArea<_, Shift>| {
            let root = canvas(root, &title, 19)?;
            let mut chart =
                madds_chart(&root, (x_lo, x_hi), (y_lo, y_hi), "val mean AUROC (proxy)")?;
            chart
                .draw_series(
                    scored
                        .iter()
                        .filter(|p| !p.3)
                        .map(|p| Circle::new((p.0, p.1), radius(p.2), BLACK.mix(0.25).filled())),
                )
                .map_err(e2s)?
                .label("evaluated (dominated)")
                .legend(|(x, y)| Circle::new((x + 8, y), 5, BLACK.mix(0.25).filled()));
            let mut on_front: Vec<(f64, f64, f64)> = scored
                .iter()
                .filter(|p| p.3)
                .map(|p| (p.0, p.1, p.2))
                .collect();
            on_front.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(
                    on_front
                        .iter()
                        .map(|p| Circle::new((p.0, p.1), radius(p.2), FRONT.mix(0.7).filled())),
                )
                .map_err(e2s)?
                .label("non-dominated in (AUROC, params, MAdds); marker area ∝ parameters")
                .legend(|(x, y)| Circle::new((x + 8, y), 6, FRONT.filled()));
            draw_references(&mut chart, &refs, (x_lo, x_hi), (y_lo, y_hi))?;
            if let Some(b) = a.config.max_madds {
                draw_budget(&mut chart, b as f64, (y_lo, y_hi))?;
            }
            legend(&mut chart, SeriesLabelPosition::LowerRight, 14, 0.9)
        }
    )
}

/// The reference architectures: a cross at the AUROC of those trained here, else a dashed
/// line at their multiply-adds with a label, staggered so no line crosses another's label.
fn draw_references<DB: DrawingBackend>(
    chart: &mut MaddsChart<'_, DB>,
    refs: &[Reference],
    (x_lo, x_hi): (f64, f64),
    (y_lo, y_hi): (f64, f64),
) -> DrawResult {
    let span = y_hi - y_lo;
    for (i, r) in refs.iter().enumerate() {
        let (y_text, label) = match r.auroc {
            Some(y) => {
                chart
                    .draw_series([Cross::new((r.madds, y), 9, REFERENCE.stroke_width(3))])
                    .map_err(e2s)?;
                (y, format!("{} (trained here)", r.name))
            }
            None => {
                // Each line stops just below its own label, and later labels sit
                // lower, so no line runs through another reference's label.
                let y = y_hi - span * (0.04 + 0.06 * i as f64);
                chart
                    .draw_series(DashedLineSeries::new(
                        [(r.madds, y_lo), (r.madds, y - 0.025 * span)],
                        6,
                        4,
                        REFERENCE.mix(0.6).stroke_width(2),
                    ))
                    .map_err(e2s)?;
                (
                    y,
                    format!(
                        "{} {}, {} params",
                        r.name,
                        human(r.madds, ""),
                        human(r.params, "")
                    ),
                )
            }
        };
        // A label starts at its line's top; near the right edge it ends there instead.
        let at = (r.madds.ln() - x_lo.ln()) / (x_hi.ln() - x_lo.ln());
        let (anchor, dx) = if at < 0.7 {
            (HPos::Left, -4)
        } else {
            (HPos::Right, 4)
        };
        let style = ("sans-serif", 14)
            .into_font()
            .color(&REFERENCE)
            .pos(Pos::new(anchor, VPos::Center));
        chart
            .draw_series([EmptyElement::at((r.madds, y_text)) + Text::new(label, (dx, 0), style)])
            .map_err(e2s)?;
    }
    Ok(())
}

/// The search's multiply-add budget as a vertical line.
fn draw_budget<DB: DrawingBackend>(
    chart: &mut MaddsChart<'_, DB>,
    b: f64,
    (y_lo, y_hi): (f64, f64),
) -> DrawResult {
    chart
        .draw_series(LineSeries::new(
            [(b, y_lo), (b, y_hi)],
            BLACK.mix(0.5).stroke_width(2),
        ))
        .map_err(e2s)?
        .label(format!("multiply-add budget {}", human(b, "")))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.5).stroke_width(2)));
    Ok(())
}

pub fn hypervolume_chart(dir: &SearchDir, a: &Archive) -> Result<Figure, PlotError> {
    let title = format!(
        "Search {}: normalised hypervolume per generation (bounds: 1 − AUROC ≤ {}, params ≤ {}, MAdds ≤ {})",
        a.pipeline,
        a.bounds.f1,
        human(a.bounds.params, ""),
        human(a.bounds.madds, "")
    );
    let pts: Vec<(f64, f64)> = a
        .generations
        .iter()
        .map(|g| (f64::from(g.generation), g.hypervolume))
        .collect();
    let x_hi = pts.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let y_hi = pts.iter().map(|p| p.1).fold(0.0f64, f64::max) * 1.15 + 1e-6;
    render!(
        dir.root(),
        HYPERVOLUME_CHART,
        title,
        (1000, 560),
        |root: &DrawingArea<_, Shift>| {
            let root = canvas(root, &title, 17)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.25..x_hi + 0.25, 0.0..y_hi)
                .map_err(e2s)?;
            chart
                .configure_mesh()
                .x_desc("generation (0 = initial design)")
                .x_labels(x_hi as usize + 1)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_desc("hypervolume")
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(e2s)?;
            chart
                .draw_series(LineSeries::new(pts.clone(), FRONT.stroke_width(2)))
                .map_err(e2s)?;
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 5, FRONT.filled())))
                .map_err(e2s)?;
            Ok(())
        }
    )
}
