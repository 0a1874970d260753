//! Reports a reader can trust: figures (PNG + SVG), `report.md` and a self-contained
//! `report.html` with the images embedded, with where every number comes from.
pub mod adjudicated;
mod calibration;
pub mod document;
mod external;
pub mod figures;
mod localization;
mod provenance;
pub mod references;
pub mod subgroups;

use document::{esc, few_of_a_class, fmt, fmt_ci, html_figures, html_head, md_figures, Section};
use localization::{external_localization_sections, localization_section};
use provenance::{eval_flags, run_facts, run_warnings, skipped_warning};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::eval::job::PredictionsJob;
use crate::eval::join::Joined;
use crate::eval::predictions;
use crate::eval::scoring::{EvalOptions, Evaluation};
use crate::labels::Split;
use crate::metrics::{pr_curve, roc_curve};
use crate::plot::Figure;
use crate::run::{EvalKey, RunDir};
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
    /// The data credited at the foot ([`ManifestInfo::data_credit`] for a run).
    ///
    /// [`ManifestInfo::data_credit`]: crate::data::manifest_dir::ManifestInfo::data_credit
    pub data: String,
}

/// Curves of every label of a joined evaluation, for the figures.
pub fn label_curves(j: &Joined, ev: &Evaluation) -> Vec<LabelCurves> {
    ev.per_label
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let (y, s, _) = crate::metrics::known_column(&j.y, &j.s, k);
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
    md += &format!("\nData: {}.\n", ctx.data);

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
        "<p class=\"small\">Made by muxmed {}. Data: {}.</p></body></html>\n",
        env!("CARGO_PKG_VERSION"),
        esc(&ctx.data)
    );
    let md_path = dir.join("report.md");
    let html_path = dir.join("report.html");
    crate::io::write_atomic(&md_path, md.as_bytes())?;
    crate::io::write_atomic(&html_path, html.as_bytes())?;
    Ok((md_path, html_path))
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
    let metrics = crate::eval::scoring::metrics_file(out, job.split)?;
    let crate::eval::job::PredictionsEvaluation {
        joined,
        evaluation: ev,
        subgroups: sub,
        adjudicated,
    } = job.run(opt)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    ev.write(&metrics)?;
    sub.write(&crate::eval::scoring::subgroups_file(out, job.split))?;
    if let Some(a) = &adjudicated {
        a.write(&crate::eval::scoring::adjudicated_file(out, job.split))?;
    }
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
        sections: std::iter::once(subgroups::section(&sub, out, job.split.as_str(), "Subgroups")?)
            .chain(adjudicated.as_ref().map(adjudicated::section))
            .collect(),
        data: format!(
            "NIH Clinical Center ChestX-ray14 (Wang et al., CVPR 2017), labels from {}",
            job.labels.display()
        ),
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
    let j = crate::eval::join::join_split(&data, |_, id| preds.get(id).cloned());
    let ev = crate::eval::scoring::evaluate(&j, key.split.as_str(), &recorded.options());
    Ok((j, ev))
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
        sections: localization_section(&run.localization_files(key.split), &out, "")?
            .into_iter()
            .chain(subgroups::subgroups_section(&run, &key, &out)?)
            .chain(calibration::run_section(&run, &key, &out)?)
            .chain(adjudicated::run_section(&run, &key)?)
            .chain(external::external_section(&run, &key, &out)?)
            .chain(external_localization_sections(&run, key.split, &out)?)
            .collect(),
        data: manifest.data_credit(),
    };
    let (_, html) = write_documents(&out, &ctx, &ev, &figs)?;
    Ok((html, notice))
}
