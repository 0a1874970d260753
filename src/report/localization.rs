//! The box benchmark's section of a run's report: `muxmed localize`'s table (the model
//! against both baselines, per finding and map source) and its figures.

use std::path::Path;

use anyhow::{Context, Result};

use super::document::{base64, esc, Section};
use crate::labels::Split;
use crate::run::{ExternalDir, Localization, LocalizationFiles, MapSource, RunDir};

/// The localization table's rows: all findings, then each finding, each with one row per
/// map source (finding, boxes, source, pointing, IoBB > 0.1/0.25/0.5, IoU > 0.1/0.3/0.5).
fn localization_rows(l: &Localization) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let findings = std::iter::once("all findings".to_string()).chain(
        l.source(MapSource::Model)
            .map(|m| {
                m.per_finding
                    .iter()
                    .map(|f| f.finding.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    for f in findings {
        for s in &l.sources {
            let a = if f == "all findings" {
                Some(&s.overall)
            } else {
                s.per_finding
                    .iter()
                    .find(|x| x.finding == f)
                    .map(|x| &x.accuracy)
            };
            let Some(a) = a else { continue };
            let p = |v: f64| format!("{v:.3}");
            rows.push(vec![
                f.clone(),
                a.boxes.to_string(),
                s.source.as_str().replace('_', " "),
                p(a.pointing),
                p(a.iobb[0]),
                p(a.iobb[1]),
                p(a.iobb[2]),
                p(a.iou[0]),
                p(a.iou[2]),
                p(a.iou[4]),
            ]);
        }
    }
    rows
}

/// The box benchmark's section when `muxmed localize` has written `files`: a table of the
/// model against both baselines per finding and its two figures (copied into `out`, their
/// names after `prefix`).
pub(super) fn localization_section(
    files: &LocalizationFiles,
    out: &Path,
    prefix: &str,
) -> Result<Option<Section>> {
    let Some(l) = files.read()? else {
        return Ok(None);
    };
    let (title, whose) = match &l.on {
        None => (
            "Localization (box benchmark)".to_string(),
            format!("the {} split", l.split),
        ),
        Some(p) => (
            format!("Localization on `{p}` (external box benchmark)"),
            format!("`{p}`'s {} split", l.split),
        ),
    };
    let head = format!(
        "Grad-CAM of the {} checkpoint. {} boxes on {} images of {whose} ({} boxes on other images and {} of findings the run has no output for ignored), from {}. Maps thresholded at {} into 8-connected detections; a box is found when a detection passes the threshold. Centre prior: a Gaussian on the image centre; random: uniform noise on the feature-map grid (seed {}), upsampled like Grad-CAM.",
        l.checkpoint.as_str(), l.boxes, l.images, l.boxes_outside_split, l.boxes_without_class, l.boxes_file, l.map_threshold, l.seed
    );
    let headers = [
        "finding",
        "boxes",
        "source",
        "pointing",
        "IoBB>0.1",
        "IoBB>0.25",
        "IoBB>0.5",
        "IoU>0.1",
        "IoU>0.3",
        "IoU>0.5",
    ];
    let rows = localization_rows(&l);
    let mut md = format!(
        "\n## {title}\n\n{head}\n\n| {} |\n|{}\n",
        headers.join(" | "),
        "---|".repeat(headers.len())
    );
    let mut html = format!(
        "<h2>{}</h2>\n<p>{}</p>\n<table><tr>",
        esc(&title),
        esc(&head)
    );
    for h in headers {
        html += &format!("<th>{}</th>", esc(h));
    }
    html += "</tr>";
    for r in &rows {
        md += &format!("| {} |\n", r.join(" | "));
        let strong = r[2] == "model";
        html += "<tr>";
        for (i, c) in r.iter().enumerate() {
            let class = if i == 1 || i >= 3 {
                " class=\"num\""
            } else {
                ""
            };
            let c = if strong && i >= 3 {
                format!("<b>{}</b>", esc(c))
            } else {
                esc(c)
            };
            html += &format!("<td{class}>{c}</td>");
        }
        html += "</tr>";
    }
    html += "</table>\n";
    for (src, alt) in [
        (
            files.chart_png(),
            "Accuracy at T(IoBB) per finding, with the baselines",
        ),
        (files.gallery(), "Best and worst cases"),
    ] {
        let Ok(png) = std::fs::read(&src) else {
            continue;
        };
        let name = src
            .file_name()
            .map(|n| format!("{prefix}{}", n.to_string_lossy()))
            .unwrap_or_default();
        let copy = out.join(&name);
        crate::io::write_atomic(&copy, &png)
            .with_context(|| format!("writing {}", copy.display()))?;
        md += &format!("\n![{alt}]({name})\n");
        html += &format!(
            "<h3>{}</h3>\n<img alt=\"{}\" src=\"data:image/png;base64,{}\">\n",
            esc(alt),
            esc(alt),
            base64(&png)
        );
    }
    Ok(Some(Section { md, html }))
}

/// The box benchmarks on other pipelines' `split` (`muxmed localize --on`), one section
/// each.
pub(super) fn external_localization_sections(
    run: &RunDir,
    split: Split,
    out: &Path,
) -> Result<Vec<Section>> {
    ExternalDir::list(run)
        .iter()
        .filter_map(|(name, dir)| {
            localization_section(&dir.localization_files(split), out, &format!("{name}_"))
                .transpose()
        })
        .collect()
}
