//! Reports a reader can trust: figures (PNG + SVG), `report.md` and a self-contained
//! `report.html` with the images embedded, with where every number comes from.

pub mod figures;
pub mod references;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::PipelineConfig;
use crate::data::manifest_dir::ManifestInfo;
use crate::eval::predictions::{self, EvalOptions, Evaluation, Joined, PredictionsJob};
use crate::labels::Split;
use crate::metrics::{pr_curve, roc_curve};
use crate::plot::Figure;
use crate::run::{Checkpoint, EpochRow, EvalKey, Localization, MapSource, RunDir, RunInfo};
use figures::LabelCurves;

/// What a report is about, shown at its top.
#[derive(Debug, Clone)]
pub struct ReportContext {
    pub title: String,
    /// (name, value) rows of the metadata table.
    pub facts: Vec<(String, String)>,
    /// Plain warnings shown first (e.g. trained from scratch, non-comparable split).
    pub warnings: Vec<String>,
    /// Show published numbers (CheXNet column, reference markers and means). Off for
    /// synthetic data, which says nothing about them.
    pub published: bool,
    /// Sections after the figures (e.g. the box benchmark).
    pub sections: Vec<Section>,
}

/// A report section in both formats.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub md: String,
    pub html: String,
}

/// Curves of every label of a joined evaluation, for the figures.
pub fn label_curves(j: &Joined, ev: &Evaluation) -> Vec<LabelCurves> {
    ev.per_label
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let y: Vec<bool> = j.y.iter().map(|r| r[k]).collect();
            let s: Vec<f64> = j.s.iter().map(|r| r[k]).collect();
            LabelCurves {
                label: m.label.clone(),
                auroc: m.auroc,
                ci: m.auroc_ci,
                roc: roc_curve(&y, &s),
                pr: pr_curve(&y, &s),
                average_precision: m.average_precision,
                prevalence: m.positives as f64 / m.n.max(1) as f64,
                ece: m.expected_calibration_error,
                reliability: m.reliability.clone(),
            }
        })
        .collect()
}

/// Draws every figure of an evaluation into `dir`.
pub fn figures(
    dir: &Path,
    j: &Joined,
    ev: &Evaluation,
    subtitle: &str,
    published: bool,
) -> Result<Vec<Figure>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let curves = label_curves(j, ev);
    let mut figs = vec![
        figures::roc_grid(dir, &curves, subtitle)?,
        figures::auroc_chart(dir, &curves, subtitle, published)?,
        figures::pr_grid(dir, &curves, subtitle)?,
        figures::reliability_grid(dir, &curves, subtitle)?,
        figures::prevalence_chart(
            dir,
            &curves.iter().map(|c| c.label.clone()).collect::<Vec<_>>(),
            &[(
                subtitle.to_string(),
                curves.iter().map(|c| c.prevalence).collect(),
            )],
            subtitle,
        )?,
    ];
    for c in &curves {
        figs.push(figures::roc_single(dir, c, subtitle)?);
    }
    Ok(figs)
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "undefined".into())
}

fn fmt_ci(v: Option<[f64; 2]>) -> String {
    v.map(|c| format!("{:.3}–{:.3}", c[0], c[1]))
        .unwrap_or_else(|| "–".into())
}

/// Rows of the per-label table: label, n, positives, AUROC, CI, AP, ECE, Youden operating
/// point, CheXNet's published value.
fn table_rows(ev: &Evaluation) -> Vec<Vec<String>> {
    ev.per_label
        .iter()
        .map(|m| {
            let chex = crate::labels::LABELS
                .iter()
                .position(|l| *l == m.label)
                .map(|k| format!("{:.3}", references::CHEXNET[k]))
                .unwrap_or_default();
            let op = m
                .youden
                .as_ref()
                .map(|o| {
                    format!(
                        "t={:.3}: sens {}, spec {}",
                        o.threshold,
                        o.sensitivity
                            .map(|v| format!("{v:.2}"))
                            .unwrap_or("–".into()),
                        o.specificity
                            .map(|v| format!("{v:.2}"))
                            .unwrap_or("–".into())
                    )
                })
                .unwrap_or_else(|| "–".into());
            vec![
                m.label.clone(),
                m.n.to_string(),
                m.positives.to_string(),
                fmt(m.auroc),
                if let (Some(few), Some(_)) = (few_of_a_class(m.positives, m.n), m.auroc) {
                    format!("{} ({few}: unreliable)", fmt_ci(m.auroc_ci))
                } else {
                    fmt_ci(m.auroc_ci)
                },
                m.average_precision
                    .map(|v| format!("{v:.4}"))
                    .unwrap_or("–".into()),
                format!("{:.4}", m.expected_calibration_error),
                op,
                chex,
            ]
        })
        .collect()
}

/// "only 3 positives" (or negatives, or both) when a label has fewer than
/// [`crate::metrics::FEW_OF_A_CLASS`] of either class among `n` images; None otherwise.
pub(crate) fn few_of_a_class(positives: usize, n: usize) -> Option<String> {
    let few = crate::metrics::FEW_OF_A_CLASS;
    let negatives = n.saturating_sub(positives);
    match (positives < few, negatives < few) {
        (false, false) => None,
        (true, false) => Some(format!("only {positives} positives")),
        (false, true) => Some(format!("only {negatives} negatives")),
        (true, true) => Some(format!(
            "only {positives} positives and {negatives} negatives"
        )),
    }
}

const HEADERS: [&str; 9] = [
    "label",
    "images",
    "positives",
    "AUROC",
    "95% CI (patient bootstrap)",
    "average precision",
    "ECE",
    "Youden operating point",
    "CheXNet (random split)",
];

/// Writes `report.md` and a self-contained `report.html` (PNG figures embedded).
pub fn write_documents(
    dir: &Path,
    ctx: &ReportContext,
    ev: &Evaluation,
    figs: &[Figure],
) -> Result<(PathBuf, PathBuf)> {
    let mut rows = table_rows(ev);
    let mut headers = HEADERS.to_vec();
    if !ctx.published {
        headers.pop();
        rows.iter_mut().for_each(|r| {
            r.pop();
        });
    }
    let summary = format!(
        "Mean AUROC over defined labels: **{}** (95% CI {}, {} resamples by {}); micro AUROC {}; {} images from {} patients.",
        fmt(ev.mean_auroc),
        fmt_ci(ev.mean_auroc_ci),
        ev.bootstrap.resamples,
        ev.bootstrap.unit,
        fmt(ev.micro_auroc),
        ev.n_images,
        ev.n_patients
    );
    let refs: Vec<String> = references::OFFICIAL_SPLIT_MEANS
        .iter()
        .map(|r| format!("{}: {:.3}", r.source(), r.mean))
        .collect();
    let refs_line = if ctx.published {
        format!(
            "References. CheXNet mean {:.3} on its own random patient split; official-split (NIH test list) means: {}. Numbers from different splits are not comparable.",
            references::CHEXNET_MEAN,
            refs.join("; ")
        )
    } else {
        "Published references are not shown: this data says nothing about them.".to_string()
    };

    // Markdown.
    let mut md = format!("# {}\n\n", ctx.title);
    for w in &ctx.warnings {
        md += &format!("> **Warning:** {w}\n\n");
    }
    md += "| | |\n|---|---|\n";
    for (k, v) in &ctx.facts {
        md += &format!("| {k} | {} |\n", v.replace('|', "\\|"));
    }
    md += &format!(
        "\n{summary}\n\nOperating thresholds: {}.\n\n{refs_line}\n\n",
        ev.threshold_source
    );
    md += &format!(
        "| {} |\n|{}\n",
        headers.join(" | "),
        "---|".repeat(headers.len())
    );
    for r in &rows {
        md += &format!("| {} |\n", r.join(" | "));
    }
    md += &md_figures(figs);
    for sec in &ctx.sections {
        md += &sec.md;
    }

    // HTML.
    let mut html = html_head(&ctx.title, "");
    for w in &ctx.warnings {
        html += &format!("<div class=\"warn\"><b>Warning:</b> {}</div>\n", esc(w));
    }
    html += "<table>";
    for (k, v) in &ctx.facts {
        html += &format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    html += "</table>\n";
    html += &format!("<p>{}</p>\n", esc(&summary).replace("**", ""));
    html += &format!(
        "<p class=\"small\">Operating thresholds: {}. {}</p>\n",
        esc(&ev.threshold_source),
        esc(&refs_line)
    );
    html += "<table><tr>";
    for h in &headers {
        html += &format!("<th>{}</th>", esc(h));
    }
    html += "</tr>";
    for r in &rows {
        html += "<tr>";
        for (i, c) in r.iter().enumerate() {
            let class = if (1..=6).contains(&i) || i == 8 {
                " class=\"num\""
            } else {
                ""
            };
            html += &format!("<td{class}>{}</td>", esc(c));
        }
        html += "</tr>";
    }
    html += "</table>\n";
    html += &html_figures(figs)?;
    for sec in &ctx.sections {
        html += &sec.html;
    }
    html += &format!(
        "<p class=\"small\">Made by muxmed {}. Data: NIH Clinical Center ChestX-ray14 (Wang et al., CVPR 2017).</p></body></html>\n",
        env!("CARGO_PKG_VERSION")
    );
    let md_path = dir.join("report.md");
    let html_path = dir.join("report.html");
    crate::io::write_atomic(&md_path, md.as_bytes())?;
    crate::io::write_atomic(&html_path, html.as_bytes())?;
    Ok((md_path, html_path))
}

/// The start of a self-contained HTML document up to its `<h1>`: the shared stylesheet
/// plus `extra_css`.
pub(crate) fn html_head(title: &str, extra_css: &str) -> String {
    let mut html =
        String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html += &format!("<title>{}</title>", esc(title));
    html += "<style>body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}\
th{background:#f3f3f3}.warn{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em;margin:.6em 0;border-radius:4px}\
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.num{text-align:right;font-variant-numeric:tabular-nums}\
.small{color:#555;font-size:13px}";
    html += extra_css;
    html += "</style></head><body>\n";
    html + &format!("<h1>{}</h1>\n", esc(title))
}

/// One Markdown section per figure: the PNG, with a link to its SVG.
pub(crate) fn md_figures(figs: &[Figure]) -> String {
    let mut md = String::new();
    for f in figs {
        let file = f
            .png
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        md += &format!(
            "\n## {}\n\n![{}]({file}) ([SVG]({}))\n",
            f.title,
            f.title,
            file.replace(".png", ".svg")
        );
    }
    md
}

/// One HTML section per figure, with the PNG embedded.
pub(crate) fn html_figures(figs: &[Figure]) -> Result<String> {
    let mut html = String::new();
    for f in figs {
        let png = std::fs::read(&f.png).with_context(|| format!("reading {}", f.png.display()))?;
        html += &format!(
            "<h2>{}</h2>\n<img alt=\"{}\" width=\"{}\" src=\"data:image/png;base64,{}\">\n",
            esc(&f.title),
            esc(&f.title),
            f.size.0.min(1200),
            base64(&png)
        );
    }
    Ok(html)
}

/// `muxmed report --predictions P --labels L [--split-list S] --out DIR`.
pub fn report_predictions(
    job: &PredictionsJob,
    out: &Path,
    opt: &EvalOptions,
) -> Result<(Evaluation, PathBuf)> {
    if out.exists() && !out.is_dir() {
        anyhow::bail!("--out {} is a file, not a folder", out.display());
    }
    let metrics = predictions::metrics_file(out, job.split)?;
    let (joined, ev) = job.run(opt)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    ev.write(&metrics)?;
    let subtitle = format!("{} ({} images)", job.split, ev.n_images);
    let figs = figures(out, &joined, &ev, &subtitle, true)?;
    let hash = |p: &Path| crate::io::sha256_file(p).unwrap_or_else(|_| "unreadable".into());
    let facts = vec![
        (
            "predictions".to_string(),
            format!(
                "{} (sha256 {})",
                job.predictions.display(),
                hash(job.predictions)
            ),
        ),
        (
            "labels".to_string(),
            format!("{} (sha256 {})", job.labels.display(), hash(job.labels)),
        ),
        (
            "images scored".into(),
            match job.split_list {
                Some(p) => format!("those listed in {} (sha256 {})", p.display(), hash(p)),
                None => "every image of the predictions that has labels".into(),
            },
        ),
        (
            "unmatched".into(),
            format!(
                "{} predictions without labels, {} labelled images without predictions",
                ev.predictions_without_labels, ev.labelled_images_without_predictions
            ),
        ),
    ];
    let ctx = ReportContext {
        title: format!("AUROC report: {}", job.predictions.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
        facts,
        warnings: constant_warning(&ev).into_iter().chain(subset_warning(&ev)).chain([format!(
            "these predictions come from outside muxmed; the split they were scored on ({}) decides which published numbers they can be compared with: CheXNet's come from a random patient split, the official-split references from NIH's test list.",
            job.split_list.map(|p| p.display().to_string()).unwrap_or_else(|| "not given".into())
        )]).collect(),
        published: true,
        sections: vec![],
    };
    let (_, html) = write_documents(out, &ctx, &ev, &figs)?;
    Ok((ev, html))
}

/// Said when the outputs rank nothing (a diverged model).
fn constant_warning(ev: &Evaluation) -> Option<String> {
    ev.constant_outputs
        .then(|| crate::metrics::CONSTANT_OUTPUTS_WARNING.to_string())
}

/// Said when only some of the 14 labels were scored (`--labels-subset`).
fn subset_warning(ev: &Evaluation) -> Option<String> {
    let all = crate::labels::LABELS.len();
    (ev.per_label.len() < all).then(|| {
        format!(
            "only {} of the {all} labels were scored (--labels-subset): the mean AUROC is over these labels and is not comparable with 14-label means.",
            ev.per_label.len()
        )
    })
}

/// The evaluation `evaluate --run` wrote for `key`, recomputed from its predictions file
/// with the recorded settings, so figures and tables come from the same numbers.
pub fn run_evaluation(run: &RunDir, key: &EvalKey) -> Result<(Joined, Evaluation)> {
    let data = run.split(key.split)?;
    let metrics_path = run.metrics(key);
    let recorded = Evaluation::read(&metrics_path).with_context(|| {
        format!(
            "no evaluation of the {}: run `muxmed evaluate --run {}{}` first",
            key.describe(),
            run.root().display(),
            eval_flags(key)
        )
    })?;
    let preds = predictions::read_run_predictions(&run.predictions(key), &data.label_names)?;
    let j = predictions::join_split(&data, |_, id| preds.get(id).cloned());
    let ev = predictions::evaluate(&j, key.split.as_str(), &recorded.options());
    Ok((j, ev))
}

/// The `evaluate --run` flags that write `key`'s files.
fn eval_flags(key: &EvalKey) -> String {
    let mut f = format!(" --split {}", key.split);
    if key.checkpoint != Checkpoint::Best {
        f += &format!(" --checkpoint {}", key.checkpoint.as_str());
    }
    if key.tta {
        f += " --tta";
    }
    f
}

/// `muxmed report --run reports/RUN [--split test] [--checkpoint C] [--tta]`: every figure,
/// training curves, label prevalence per split, report.md and report.html in the key's
/// report folder ([`RunDir::report_dir`]: `reports/RUN/report/` for the test split). Returns the HTML path and a notice when the manifest changed.
pub fn report_run(
    run_dir: &Path,
    manifests_dir: &Path,
    key: EvalKey,
) -> Result<(PathBuf, Option<String>)> {
    let run = RunDir::open(run_dir)?;
    let cfg = run.config()?;
    let notice = run.manifest_notice(
        crate::data::manifest_dir::ManifestDir::of(manifests_dir, &cfg.name).root(),
    );
    let (j, ev) = run_evaluation(&run, &key)?;
    let manifest = run.manifest()?;
    let info = run.info()?;
    let out = run.report_dir(&key);
    let subtitle = format!("{} split ({} images)", key.split, ev.n_images);
    let published = manifest.published_references_apply();
    let mut figs = figures(&out, &j, &ev, &subtitle, published)?;
    let history = run.state().map(|s| s.history).unwrap_or_default();
    if !history.is_empty() {
        figs.insert(1, figures::training_curves(&out, &history, &run.name())?);
    }
    // Label prevalence per split, from the run's own splits.
    let mut sets = Vec::new();
    for s in Split::ALL {
        if let Ok(d) = run.split(s) {
            sets.push((format!("{s} ({} images)", d.len()), d.prevalence()));
        }
    }
    if let Some(pos) = figs.iter().position(|f| f.name == "prevalence") {
        figs[pos] = figures::prevalence_chart(&out, &j.labels, &sets, "per split")?;
    }
    let ctx = ReportContext {
        title: format!("muxmed report: {}", run.name()),
        facts: run_facts(&run, &cfg, &info, &manifest, &history, &key, &ev),
        warnings: constant_warning(&ev)
            .into_iter()
            .chain(skipped_warning(&info.skipped_images))
            .chain(run_warnings(&cfg, &manifest, &key, notice.as_deref()))
            .collect(),
        published,
        sections: localization_section(&run, key.split, &out)?
            .into_iter()
            .collect(),
    };
    let (_, html) = write_documents(&out, &ctx, &ev, &figs)?;
    Ok((html, notice))
}

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

/// The box benchmark's section when `muxmed localize` has run on `split`: a table of the
/// model against both baselines per finding and its two figures (copied into `out`).
fn localization_section(run: &RunDir, split: Split, out: &Path) -> Result<Option<Section>> {
    let Some(l) = run.localization(split)? else {
        return Ok(None);
    };
    let head = format!(
        "Grad-CAM of the {} checkpoint. {} boxes on {} images of the {} split ({} boxes on other images ignored), from {}. Maps thresholded at {} into 8-connected detections; a box is found when a detection passes the threshold. Centre prior: a Gaussian on the image centre; random: uniform noise on the feature-map grid (seed {}), upsampled like Grad-CAM.",
        l.checkpoint.as_str(), l.boxes, l.images, l.split, l.boxes_outside_split, l.boxes_file, l.map_threshold, l.seed
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
        "\n## Localization (box benchmark)\n\n{head}\n\n| {} |\n|{}\n",
        headers.join(" | "),
        "---|".repeat(headers.len())
    );
    let mut html = format!(
        "<h2>Localization (box benchmark)</h2>\n<p>{}</p>\n<table><tr>",
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
            run.localization_chart_png(split),
            "Accuracy at T(IoBB) per finding, with the baselines",
        ),
        (run.localization_gallery(split), "Best and worst cases"),
    ] {
        let Ok(png) = std::fs::read(&src) else {
            continue;
        };
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
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

fn run_facts(
    run: &RunDir,
    cfg: &PipelineConfig,
    info: &RunInfo,
    manifest: &ManifestInfo,
    history: &[EpochRow],
    key: &EvalKey,
    ev: &Evaluation,
) -> Vec<(String, String)> {
    let r = cfg.train.resolution;
    let mut facts = vec![
        ("run".to_string(), run.root().display().to_string()),
        (
            "model".into(),
            format!(
                "{} ({} parameters, {} multiply-adds per image at {r}x{r})",
                info.arch,
                info.params,
                info.madds
                    .map(|m| format!("{:.1}M", m as f64 / 1e6))
                    .unwrap_or("n/a".into()),
            ),
        ),
        (
            "weights".into(),
            match (&info.weights.path, &info.weights.sha256) {
                (Some(p), Some(h)) => format!("{p} (sha256 {h})"),
                _ => "none: trained from scratch".into(),
            },
        ),
        (
            "data".into(),
            format!(
                "the run's own splits ({}), copied from {} (manifest.json sha256 {}); protocol {}, seed {}",
                run.splits_dir().display(),
                info.manifest_dir,
                info.manifest_sha256,
                manifest.protocol,
                manifest.seed
            ),
        ),
    ];
    for (k, v) in &manifest.sources {
        facts.push((
            format!("source: {k}"),
            format!("{} (sha256 {})", v.path, v.sha256),
        ));
    }
    let total_s: f64 = history.iter().map(|r| r.epoch_time_s).sum();
    facts.push((
        "training".into(),
        format!(
            "{} epochs, {:.0} s, seed {}, device {}",
            history.len(),
            total_s,
            cfg.train.seed,
            info.device
        ),
    ));
    facts.push((
        "evaluated".into(),
        format!(
            "{}, {} images from {} patients",
            key.describe(),
            ev.n_images,
            ev.n_patients
        ),
    ));
    facts
}

/// The images `prepare` could not read, by name, when a run left any out.
fn skipped_warning(skipped: &[crate::run::SkippedImage]) -> Option<String> {
    (!skipped.is_empty()).then(|| {
        format!(
            "{} image(s) of the manifest could not be read by `prepare` (skip_bad_images) and are left out of this run's splits: {}.",
            skipped.len(),
            skipped
                .iter()
                .map(|s| format!("{} ({} split: {})", s.image_id, s.split, s.error))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

fn run_warnings(
    cfg: &PipelineConfig,
    manifest: &ManifestInfo,
    key: &EvalKey,
    notice: Option<&str>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if manifest.synthetic {
        warnings.push("synthetic data (made by `muxmed synth`): these numbers say nothing about real chest X-rays, so no published numbers are shown beside them.".to_string());
    }
    if !manifest.synthetic && !manifest.published_references_apply() {
        warnings.push(format!(
            "not NIH ChestX-Ray14 under the official or random-patient protocol (sources: {}; protocol {}): published ChestX-Ray14 numbers do not apply, so none are shown.",
            manifest.sources.keys().cloned().collect::<Vec<_>>().join(", "),
            manifest.protocol
        ));
    }
    if cfg.train.class_balanced {
        warnings.push(format!(
            "trained with class-balanced sampling ({} weighting{}): rare labels were drawn more often than they occur, so the probabilities are shifted towards them. Read the reliability curves with that in mind; calibration and operating thresholds must come from validation (evaluate chooses thresholds on val).",
            match cfg.train.balance_weighting {
                crate::config::BalanceWeighting::Sqrt => "1/√frequency",
                crate::config::BalanceWeighting::Inverse => "1/frequency",
            },
            cfg.train.max_repeat.map(|m| format!(", at most {m} draws per image per epoch")).unwrap_or_default()
        ));
    }
    if cfg.model.from_scratch {
        warnings.push("trained from scratch, without pretrained weights.".into());
    }
    if let Some(n) = notice {
        warnings.push(n.trim_start_matches("note: ").to_string());
    }
    if manifest.protocol != "official" {
        warnings.push(format!(
            "split protocol {}: not comparable with the official-split references.",
            manifest.protocol
        ));
    } else if key.split != Split::Test {
        warnings.push(format!("evaluated on the {} split, which was used to choose the checkpoint: optimistic, and not comparable with published test numbers.", key.split));
    }
    warnings
}

#[cfg(test)]
mod tests {
    /// A label with plenty of positives but 5 negatives among 55 images is as unreliable as
    /// one with 5 positives: both are flagged, and a balanced one is not.
    #[test]
    fn few_positives_or_few_negatives_are_both_flagged() {
        use super::few_of_a_class;
        assert_eq!(few_of_a_class(50, 55).as_deref(), Some("only 5 negatives"));
        assert_eq!(few_of_a_class(5, 55).as_deref(), Some("only 5 positives"));
        assert_eq!(
            few_of_a_class(3, 8).as_deref(),
            Some("only 3 positives and 5 negatives")
        );
        assert_eq!(few_of_a_class(10, 20), None);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
