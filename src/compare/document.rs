//! `compare.md` and a self-contained `compare.html` (figures embedded) from a [`Comparison`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::stats::{signed, Comparison, InputSummary, Pair};
use super::{HTML_FILE, MD_FILE};
use crate::metrics::paired::AucTest;
use crate::plot::human;
use crate::plot::Figure;
use crate::report::document::{esc, few_of_a_class, html_figures, html_head, md_figures, Table};

fn f3(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "n/a".into())
}

fn ci(v: Option<[f64; 2]>) -> String {
    v.map(|c| format!("[{:.3}, {:.3}]", c[0], c[1]))
        .unwrap_or_else(|| "n/a".into())
}

fn signed_ci(v: Option<[f64; 2]>) -> String {
    v.map(|c| format!("[{}, {}]", signed(Some(c[0])), signed(Some(c[1]))))
        .unwrap_or_else(|| "n/a".into())
}

fn p_text(v: Option<f64>) -> String {
    match v {
        Some(p) if p < 1e-4 => format!("{p:.1e}"),
        Some(p) => format!("{p:.4}"),
        None => "n/a".into(),
    }
}

fn inputs_table(c: &Comparison) -> Table {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    let rows = c
        .inputs
        .iter()
        .map(|i: &InputSummary| {
            let cost = i.cost.as_ref();
            vec![
                i.name.clone(),
                format!(
                    "{} ({}, {})",
                    i.source,
                    i.protocol.as_deref().unwrap_or("protocol unknown"),
                    i.split
                ),
                opt(i.arch.clone()),
                opt(i.resolution.map(|r| format!("{r}²"))),
                opt(i.params.map(|p| human(p as f64, ""))),
                opt(i.madds.map(|m| human(m as f64, ""))),
                opt(cost.map(|c| {
                    format!(
                        "{:.1} ({:.1} ms)",
                        c.batch_1.images_per_s, c.batch_1.ms_per_image
                    )
                })),
                opt(cost.map(|c| {
                    format!(
                        "{:.1} ({:.1} ms)",
                        c.batch_32.images_per_s, c.batch_32.ms_per_image
                    )
                })),
                opt(cost
                    .and_then(|c| c.inference_memory_mb)
                    .map(|m| format!("{m:.0} MB"))),
                format!("{} {}", f3(i.mean_auroc), ci(i.mean_auroc_ci)),
            ]
        })
        .collect();
    Table {
        header: [
            "model",
            "source",
            "arch",
            "input",
            "params",
            "multiply-adds",
            "img/s at batch 1 (ms/img)",
            "img/s at batch 32 (ms/img)",
            "inference memory (batch 32)",
            "mean AUROC [95% CI]",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }
}

/// Positives of each compared label (the same images for every input), flagged when too few
/// for a stable AUROC.
fn positives(c: &Comparison, k: usize) -> String {
    let n = c.inputs.first().map_or(0, |i| i.per_label[k].positives);
    match few_of_a_class(n, c.n_images) {
        Some(few) => format!("{n} ({few}: unreliable)"),
        None => n.to_string(),
    }
}

fn pair_table(p: &Pair, c: &Comparison) -> Table {
    let mut rows: Vec<Vec<String>> = p
        .per_label
        .iter()
        .enumerate()
        .map(|(k, l)| {
            vec![
                l.label.clone(),
                positives(c, k),
                f3(l.auroc_a),
                f3(l.auroc_b),
                signed(l.delta),
                signed_ci(l.delta_ci),
                l.z.map(|z| format!("{z:.2}"))
                    .unwrap_or_else(|| "n/a".into()),
                p_text(l.p),
                p_text(l.p_holm),
            ]
        })
        .collect();
    rows.push(vec![
        "mean (macro)".into(),
        c.n_images.to_string() + " images",
        f3(p.mean.auroc_a),
        f3(p.mean.auroc_b),
        signed(p.mean.delta),
        signed_ci(p.mean.delta_ci),
        "–".into(),
        "–".into(),
        "–".into(),
    ]);
    Table {
        header: vec![
            "label".into(),
            "positives".into(),
            format!("AUROC {}", p.a),
            format!("AUROC {}", p.b),
            "Δ (a − b)".into(),
            "95% CI (paired patient bootstrap)".into(),
            match c.test {
                AucTest::Clustered => "clustered z".into(),
                AucTest::Delong => "DeLong z".into(),
            },
            "p".into(),
            "p (Holm)".into(),
        ],
        rows,
    }
}

fn significant(p: &Pair) -> Vec<String> {
    p.per_label
        .iter()
        .filter(|l| l.p_holm.is_some_and(|v| v < 0.05))
        .map(|l| format!("{} ({})", l.label, signed(l.delta)))
        .collect()
}

/// Paragraph after a pair's heading.
fn pair_summary(p: &Pair, test: AucTest) -> String {
    let sig = significant(p);
    let by = match test {
        AucTest::Clustered => "the clustered test",
        AucTest::Delong => "DeLong's test",
    };
    format!(
        "Mean ΔAUROC ({a} − {b}) {} {}. {}",
        signed(p.mean.delta),
        signed_ci(p.mean.delta_ci),
        if sig.is_empty() {
            format!("No label differs by {by} after Holm's adjustment (p < 0.05).")
        } else {
            format!(
                "Labels that differ by {by} after Holm's adjustment (p < 0.05): {}.",
                sig.join(", ")
            )
        },
        a = p.a,
        b = p.b
    )
}

fn method_note(c: &Comparison) -> String {
    format!(
        "{} images from {} patients, {} split. AUROC intervals: {} patient-bootstrap resamples (seed {}); ΔAUROC intervals resample patients once per round and score both models on that resample. Paired test of the two AUROCs: {}, two-sided; Holm's adjustment across the {} labels of each pair. Multiply-adds count conv and linear multiply-accumulates per image. Speeds: every model loaded and warmed up (two passes), then timed CPU passes taking turns model by model over three rounds, median per model, in this process{}; memory: growth of resident memory during one batch-32 pass.",
        c.n_images,
        c.n_patients,
        c.split,
        c.bootstrap.resamples,
        c.bootstrap.seed,
        c.test.describe(),
        c.labels.len(),
        c.machine.as_ref().map(|m| format!(" on {m}")).unwrap_or_default()
    )
}

/// Writes `compare.md` and `compare.html` into `dir`; returns the HTML path.
pub fn write(dir: &Path, c: &Comparison, warnings: &[String], figs: &[Figure]) -> Result<PathBuf> {
    let names: Vec<&str> = c.inputs.iter().map(|i| i.name.as_str()).collect();
    let title = format!("muxmed comparison: {}", names.join(" vs "));
    let headlines = c.headlines();
    let inputs = inputs_table(c);
    let note = method_note(c);

    let mut md = format!("# {title}\n\n");
    for w in warnings {
        md += &format!("> **Warning:** {w}\n\n");
    }
    for h in &headlines {
        md += &format!("**{h}**\n\n");
    }
    md += &inputs.markdown();
    md += &format!("\n{note}\n");
    for p in &c.pairs {
        md += &format!("\n## {} vs {}\n\n{}\n\n", p.a, p.b, pair_summary(p, c.test));
        md += &pair_table(p, c).markdown();
    }
    md += &md_figures(figs);

    let mut html = html_head(
        &title,
        ".headline{font-size:17px;font-weight:600;background:#eef5fb;border-left:4px solid #0072b2;padding:.5em 1em;margin:.5em 0}",
    );
    for w in warnings {
        html += &format!("<div class=\"warn\"><b>Warning:</b> {}</div>\n", esc(w));
    }
    for h in &headlines {
        html += &format!("<div class=\"headline\">{}</div>\n", esc(h));
    }
    html += &inputs.html();
    html += &format!("<p class=\"small\">{}</p>\n", esc(&note));
    for p in &c.pairs {
        html += &format!(
            "<h2>{} vs {}</h2>\n<p>{}</p>\n",
            esc(&p.a),
            esc(&p.b),
            esc(&pair_summary(p, c.test))
        );
        html += &pair_table(p, c).html();
    }
    html += &html_figures(figs)?;
    html += &format!(
        "<p class=\"small\">Made by muxmed {}. Every number is in compare.json.</p></body></html>\n",
        env!("CARGO_PKG_VERSION")
    );
    let md_path = dir.join(MD_FILE);
    let html_path = dir.join(HTML_FILE);
    crate::io::write_atomic(&md_path, md.as_bytes())
        .with_context(|| format!("writing {}", md_path.display()))?;
    crate::io::write_atomic(&html_path, html.as_bytes())
        .with_context(|| format!("writing {}", html_path.display()))?;
    Ok(html_path)
}
