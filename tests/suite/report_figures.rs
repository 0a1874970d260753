//! `muxmed report --predictions`: every figure is a valid, non-empty PNG and SVG of the
//! expected size, and the HTML embeds them.

use std::path::{Path, PathBuf};

fn nih(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/nih")
        .join(p)
}

#[test]
fn report_renders_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    // The first 3,000 rows of a published model's predictions.
    let preds: String =
        std::fs::read_to_string(nih("reference_predictions/zech_densenet121/preds.csv"))
            .unwrap()
            .lines()
            .take(3001)
            .map(|l| format!("{l}\n"))
            .collect();
    let p = dir.path().join("preds.csv");
    std::fs::write(&p, preds).unwrap();
    let out_dir = dir.path().join("report");
    let out = crate::muxmed()
        .args(["report", "--bootstrap", "50", "--predictions"])
        .arg(&p)
        .arg("--labels")
        .arg(nih("Data_Entry_2017_v2020.csv.gz"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected: Vec<(String, (u32, u32))> = vec![
        ("roc_grid".into(), (1600, 1500)),
        ("pr_grid".into(), (1600, 1500)),
        ("reliability_grid".into(), (1600, 1500)),
        ("auroc_chart".into(), (1200, 60 * (14 + 2) + 220)),
    ];
    for l in muxmed::labels::LABELS {
        expected.push((format!("roc_{l}"), (700, 700)));
    }
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    for (name, (w, h)) in &expected {
        let png = out_dir.join(format!("{name}.png"));
        let img = image::open(&png).unwrap_or_else(|e| panic!("{name}.png: {e}"));
        assert_eq!((img.width(), img.height()), (*w, *h), "{name}");
        // Not a blank canvas: a drawn figure has many distinct colours.
        let rgb = img.to_rgb8();
        let mut colours: Vec<[u8; 3]> = rgb.pixels().map(|p| p.0).collect();
        colours.sort();
        colours.dedup();
        assert!(colours.len() > 20, "{name}.png looks blank");
        let svg = std::fs::read_to_string(out_dir.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg")
                && svg.contains(&format!("width=\"{w}\""))
                && svg.contains("</svg>"),
            "{name}.svg"
        );
        assert!(svg.contains("<text"), "{name}.svg has no text");
    }
    assert!(out_dir.join("prevalence.png").is_file());
    // The figures above, the prevalence chart and a forest plot per attribute the metadata
    // gives (sex, age band, view).
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        expected.len() + 1 + 3
    );
    assert!(html.contains("<h2>Subgroups</h2>") && html.contains("AUROC by view"));
    assert!(out_dir.join("subgroups_test.json").is_file());
    assert!(html.contains("Warning") && html.contains("random patient split"));
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("| Hernia |") && md.contains("roc_grid.png"));
    // Every Markdown table's delimiter row has as many cells as its header.
    let lines: Vec<&str> = md.lines().collect();
    let delimiters = lines
        .windows(2)
        .filter(|w| w[1].starts_with("|---"))
        .count();
    assert!(delimiters >= 2);
    for w in lines.windows(2).filter(|w| w[1].starts_with("|---")) {
        assert_eq!(
            w[0].matches('|').count(),
            w[1].matches('|').count(),
            "{}\n{}",
            w[0],
            w[1]
        );
    }
}
