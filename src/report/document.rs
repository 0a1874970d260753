//! The document kit of every HTML and Markdown report (a run's, a predictions file's,
//! compare's): sections in both formats, escaping, the shared stylesheet, figures embedded as
//! base64 PNG with links to their SVG, and the number formats of the tables.

use anyhow::{Context, Result};

use crate::plot::Figure;

/// A report section in both formats.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub md: String,
    pub html: String,
}

/// A table: header and rows of cells, written as Markdown or HTML (every column but the
/// first right-aligned as a number).
pub(crate) struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "| {} |\n|{}\n",
            self.header.join(" | "),
            "---|".repeat(self.header.len())
        );
        for r in &self.rows {
            s += &format!("| {} |\n", r.join(" | ").replace('\n', " "));
        }
        s
    }

    pub fn html(&self) -> String {
        let mut s = String::from("<table><tr>");
        for h in &self.header {
            s += &format!("<th>{}</th>", esc(h));
        }
        s += "</tr>";
        for r in &self.rows {
            s += "<tr>";
            for (i, c) in r.iter().enumerate() {
                let class = if i > 0 { " class=\"num\"" } else { "" };
                s += &format!("<td{class}>{}</td>", esc(c));
            }
            s += "</tr>";
        }
        s + "</table>\n"
    }
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

pub(crate) fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "undefined".into())
}

pub(crate) fn fmt_ci(v: Option<[f64; 2]>) -> String {
    v.map(|c| format!("{:.3}–{:.3}", c[0], c[1]))
        .unwrap_or_else(|| "–".into())
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
