//! Reports a reader can trust: figures (PNG + SVG), `report.md` and a self-contained
//! `report.html` with the images embedded, with where every number comes from.

pub mod plots;
pub mod references;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::data::nih;
use crate::eval::metrics::{pr_curve, roc_curve};
use crate::eval::predictions::{self, EvalOptions, Evaluation, Joined};
use plots::{Figure, LabelCurves};

/// What a report is about, shown at its top.
#[derive(Debug, Clone)]
pub struct ReportContext {
    pub title: String,
    /// (name, value) rows of the metadata table.
    pub facts: Vec<(String, String)>,
    /// Plain warnings shown first (e.g. trained from scratch, non-comparable split).
    pub warnings: Vec<String>,
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
pub fn figures(dir: &Path, j: &Joined, ev: &Evaluation, subtitle: &str) -> Result<Vec<Figure>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let curves = label_curves(j, ev);
    let mut figs = vec![
        plots::roc_grid(dir, &curves, subtitle)?,
        plots::auroc_chart(dir, &curves, subtitle)?,
        plots::pr_grid(dir, &curves, subtitle)?,
        plots::reliability_grid(dir, &curves, subtitle)?,
        plots::prevalence_chart(
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
        figs.push(plots::roc_single(dir, c, subtitle)?);
    }
    Ok(figs)
}

fn base64(bytes: &[u8]) -> String {
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

fn esc(s: &str) -> String {
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
fn table_rows(ev: &Evaluation) -> Vec<[String; 9]> {
    ev.per_label
        .iter()
        .map(|m| {
            let chex = crate::data::LABELS
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
            [
                m.label.clone(),
                m.n.to_string(),
                m.positives.to_string(),
                fmt(m.auroc),
                if m.positives < FEW_POSITIVES && m.auroc.is_some() {
                    format!(
                        "{} (only {} positives: unreliable)",
                        fmt_ci(m.auroc_ci),
                        m.positives
                    )
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

/// Below this many positives a label's AUROC and interval are flagged as unreliable.
const FEW_POSITIVES: usize = 10;

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
    let rows = table_rows(ev);
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
        .map(|(who, v)| format!("{who}: {v:.3}"))
        .collect();
    let refs_line = format!(
        "References. CheXNet mean {:.3} on its own random patient split; official-split (NIH test list) means: {}. Numbers from different splits are not comparable.",
        references::CHEXNET_MEAN,
        refs.join("; ")
    );

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
        "| {} |\n|{}|\n",
        HEADERS.join(" | "),
        "---|".repeat(HEADERS.len())
    );
    for r in &rows {
        md += &format!("| {} |\n", r.join(" | "));
    }
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

    // HTML.
    let mut html =
        String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html += &format!("<title>{}</title>", esc(&ctx.title));
    html += "<style>body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}\
th{background:#f3f3f3}.warn{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em;margin:.6em 0;border-radius:4px}\
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.num{text-align:right;font-variant-numeric:tabular-nums}\
.small{color:#555;font-size:13px}</style></head><body>\n";
    html += &format!("<h1>{}</h1>\n", esc(&ctx.title));
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
    for h in HEADERS {
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

/// `muxmed report --predictions P --labels L [--split-list S] --out DIR`.
pub fn report_predictions(
    preds_path: &Path,
    labels_path: &Path,
    split_list: Option<&Path>,
    out: &Path,
    split_name: &str,
    opt: &EvalOptions,
) -> Result<(Evaluation, PathBuf)> {
    let preds = predictions::read_predictions(preds_path)?;
    let records = nih::parse_metadata(&nih::read_text(labels_path)?, labels_path)?;
    let list: Option<HashSet<String>> = match split_list {
        Some(p) => Some(nih::read_list(p)?.into_iter().collect()),
        None => None,
    };
    let joined = predictions::join(&preds, &records, list.as_ref())?;
    let ev = predictions::evaluate(&joined, split_name, opt);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::io::write_atomic(
        &out.join(format!("metrics_{split_name}.json")),
        (serde_json::to_string_pretty(&ev)? + "\n").as_bytes(),
    )?;
    let subtitle = format!("{split_name} ({} images)", ev.n_images);
    let figs = figures(out, &joined, &ev, &subtitle)?;
    let hash = |p: &Path| crate::io::sha256_file(p).unwrap_or_else(|_| "unreadable".into());
    let mut facts = vec![
        (
            "predictions".to_string(),
            format!("{} (sha256 {})", preds_path.display(), hash(preds_path)),
        ),
        (
            "labels".to_string(),
            format!("{} (sha256 {})", labels_path.display(), hash(labels_path)),
        ),
    ];
    facts.push((
        "images scored".into(),
        match split_list {
            Some(p) => format!("those listed in {} (sha256 {})", p.display(), hash(p)),
            None => "every image of the predictions that has labels".into(),
        },
    ));
    facts.push((
        "unmatched".into(),
        format!(
            "{} predictions without labels, {} labelled images without predictions",
            ev.predictions_without_labels, ev.labelled_images_without_predictions
        ),
    ));
    let ctx = ReportContext {
        title: format!("AUROC report: {}", preds_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
        facts,
        warnings: vec![format!(
            "these predictions come from outside muxmed; the split they were scored on ({}) decides which published numbers they can be compared with: CheXNet's come from a random patient split, the official-split references from NIH's test list.",
            split_list.map(|p| p.display().to_string()).unwrap_or_else(|| "not given".into())
        )],
    };
    let (_, html) = write_documents(out, &ctx, &ev, &figs)?;
    Ok((ev, html))
}

/// Reads a run's `metrics.csv` into rows of numbers (empty cells left out).
pub fn read_metrics_csv(path: &Path) -> Result<Vec<std::collections::BTreeMap<String, f64>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    Ok(lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .filter_map(|(h, v)| Some((h.to_string(), v.parse::<f64>().ok()?)))
                .collect()
        })
        .collect())
}

/// Reads a predictions CSV written by `evaluate --run` (image_id, patient_id, one column per label).
fn read_run_predictions(
    path: &Path,
    labels: &[String],
) -> Result<std::collections::HashMap<String, Vec<f64>>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {}: run `muxmed evaluate --run` first",
            path.display()
        )
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let cols: Vec<usize> = labels
        .iter()
        .map(|l| {
            header
                .iter()
                .position(|h| h == l)
                .ok_or_else(|| anyhow::anyhow!("{}: no column {l}", path.display()))
        })
        .collect::<Result<_>>()?;
    let mut out = std::collections::HashMap::new();
    for (i, l) in lines.enumerate() {
        let f: Vec<&str> = l.split(',').collect();
        let probs = cols
            .iter()
            .map(|&c| {
                f.get(c)
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| anyhow::anyhow!("{}, line {}: bad value", path.display(), i + 2))
            })
            .collect::<Result<Vec<f64>>>()?;
        out.insert(f[0].to_string(), probs);
    }
    Ok(out)
}

/// `muxmed report --run reports/RUN [--split test]`: every figure, training curves, label
/// prevalence per split, report.md and report.html in `reports/RUN/report/`.
pub fn report_run(run_dir: &Path, manifests_dir: &Path, split: &str) -> Result<PathBuf> {
    use crate::data::dataset::load_split;
    let cfg = crate::config::load(&run_dir.join("config.resolved.yaml"), &[])
        .with_context(|| format!("{} is not a muxmed run directory", run_dir.display()))?
        .config;
    let mdir = manifests_dir.join(&cfg.name);
    let data = load_split(&mdir, split)?;
    let preds = read_run_predictions(
        &run_dir.join(format!("predictions_{split}.csv")),
        &data.label_names,
    )?;
    let metrics_path = run_dir.join(format!("metrics_{split}.json"));
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics_path).with_context(|| {
            format!(
                "reading {}: run `muxmed evaluate --run` first",
                metrics_path.display()
            )
        })?)?;
    // Recompute with the same bootstrap settings and thresholds, so the figures and the
    // tables come from the same code and agree with metrics_<split>.json.
    let opt = EvalOptions {
        resamples: recorded["bootstrap"]["resamples"].as_u64().unwrap_or(1000) as usize,
        seed: recorded["bootstrap"]["seed"].as_u64().unwrap_or(0),
        sensitivity_target: recorded["per_label"][0]["chosen"]["sensitivity_target"]
            .as_f64()
            .unwrap_or(0.9),
        thresholds: Some((
            predictions::thresholds_from(&metrics_path)?,
            recorded["threshold_source"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )),
    };
    let mut j = Joined {
        y: vec![],
        s: vec![],
        patients: vec![],
        labels: data.label_names.clone(),
        predictions_without_labels: 0,
        labelled_without_predictions: 0,
    };
    for ((id, p), l) in data.image_ids.iter().zip(&data.patients).zip(&data.labels) {
        match preds.get(id) {
            Some(pr) => {
                j.y.push(l.iter().map(|v| *v > 0.5).collect());
                j.s.push(pr.clone());
                j.patients.push(predictions::patient_key(p));
            }
            None => j.labelled_without_predictions += 1,
        }
    }
    let ev = predictions::evaluate(&j, split, &opt);
    let out = run_dir.join("report");
    let subtitle = format!("{split} split ({} images)", ev.n_images);
    let mut figs = figures(&out, &j, &ev, &subtitle)?;
    let history = read_metrics_csv(&run_dir.join("metrics.csv")).unwrap_or_default();
    if !history.is_empty() {
        figs.insert(
            1,
            plots::training_curves(
                &out,
                &history,
                &run_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )?,
        );
    }
    // Label prevalence per split, from the manifest.
    let mut sets = Vec::new();
    for s in crate::data::manifest::SPLITS {
        if let Ok(d) = load_split(&mdir, s) {
            let n = d.len().max(1) as f64;
            sets.push((
                format!("{s} ({} images)", d.len()),
                (0..d.label_names.len())
                    .map(|k| d.labels.iter().filter(|l| l[k] > 0.5).count() as f64 / n)
                    .collect(),
            ));
        }
    }
    if let Some(pos) = figs.iter().position(|f| f.name == "prevalence") {
        figs[pos] = plots::prevalence_chart(&out, &data.label_names, &sets, "per split")?;
    }

    let run: serde_json::Value = std::fs::read_to_string(run_dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let manifest: serde_json::Value = std::fs::read_to_string(run_dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let total_s: f64 = history.iter().filter_map(|r| r.get("epoch_time_s")).sum();
    let mut facts = vec![
        ("run".to_string(), run_dir.display().to_string()),
        (
            "model".into(),
            format!(
                "{} ({} parameters, {} multiply-adds per image at {}x{})",
                cfg.model.arch,
                run["params"],
                run["madds"]
                    .as_u64()
                    .map(|m| format!("{:.1}M", m as f64 / 1e6))
                    .unwrap_or("n/a".into()),
                cfg.train.resolution,
                cfg.train.resolution
            ),
        ),
        (
            "weights".into(),
            if cfg.model.from_scratch {
                "none: trained from scratch".into()
            } else {
                format!(
                    "{} (sha256 {})",
                    run["weights"]["path"].as_str().unwrap_or("?"),
                    run["weights"]["sha256"].as_str().unwrap_or("?")
                )
            },
        ),
        (
            "data".into(),
            format!(
                "manifest {} (sha256 {}); protocol {}, seed {}",
                mdir.display(),
                run["manifest_sha256"].as_str().unwrap_or("?"),
                manifest["protocol"],
                manifest["seed"]
            ),
        ),
    ];
    if let Some(src) = manifest["sources"].as_object() {
        for (k, v) in src {
            facts.push((
                format!("source: {k}"),
                format!(
                    "{} (sha256 {})",
                    v["path"].as_str().unwrap_or(""),
                    v["sha256"].as_str().unwrap_or("")
                ),
            ));
        }
    }
    facts.push((
        "training".into(),
        format!(
            "{} epochs, {:.0} s, seed {}, device {}",
            history.len(),
            total_s,
            cfg.train.seed,
            run["device"].as_str().unwrap_or("?")
        ),
    ));
    facts.push((
        "evaluated".into(),
        format!(
            "{split} split, checkpoint best.safetensors, {} images from {} patients",
            ev.n_images, ev.n_patients
        ),
    ));
    let mut warnings = Vec::new();
    if manifest["synthetic"].as_bool() == Some(true) {
        warnings.push("synthetic data (made by `muxmed synth`): these numbers say nothing about real chest X-rays and must not be compared with the published ones.".to_string());
    }
    if cfg.model.from_scratch {
        warnings.push("trained from scratch, without pretrained weights.".into());
    }
    if manifest["protocol"].as_str() != Some("official") {
        warnings.push(format!(
            "split protocol {}: not comparable with the official-split references.",
            manifest["protocol"]
        ));
    } else if split != "test" {
        warnings.push(format!("evaluated on the {split} split, which was used to choose the checkpoint: optimistic, and not comparable with published test numbers."));
    }
    let ctx = ReportContext {
        title: format!(
            "muxmed report: {}",
            run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        facts,
        warnings,
    };
    let (_, html) = write_documents(&out, &ctx, &ev, &figs)?;
    Ok(html)
}

#[cfg(test)]
mod tests {
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
