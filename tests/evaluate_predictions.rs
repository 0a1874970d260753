//! `muxmed evaluate --predictions` on a published model's real predictions.

use std::path::{Path, PathBuf};
use std::process::Command;

fn nih(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/nih")
        .join(p)
}

fn muxmed() -> Command {
    Command::new(env!("CARGO_BIN_EXE_muxmed"))
}

#[test]
fn reproduces_the_published_per_disease_aurocs() {
    let dir = tempfile::tempdir().unwrap();
    let out = muxmed()
        .args(["evaluate", "--bootstrap", "20", "--predictions"])
        .arg(nih("reference_predictions/zech_densenet121/preds.csv"))
        .arg("--labels")
        .arg(nih("Data_Entry_2017_v2020.csv.gz"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("metrics_test.json")).unwrap(),
    )
    .unwrap();
    let published =
        std::fs::read_to_string(nih("reference_predictions/zech_densenet121/aucs.csv")).unwrap();
    let per = m["per_label"].as_array().unwrap();
    let mut n = 0;
    for line in published.lines().skip(1) {
        let (label, auc) = line.split_once(',').unwrap();
        let auc: f64 = auc.parse().unwrap();
        let ours = per.iter().find(|p| p["label"] == label).unwrap();
        let d = (ours["auroc"].as_f64().unwrap() - auc).abs();
        assert!(d < 1e-9, "{label}: {d}");
        let ci = ours["auroc_ci"].as_array().unwrap();
        assert!(ci[0].as_f64().unwrap() <= auc && auc <= ci[1].as_f64().unwrap());
        n += 1;
    }
    assert_eq!(n, 14);
    assert_eq!(m["n_images"], 22_433);
    assert_eq!(m["predictions_without_labels"], 0);
    assert_eq!(m["bootstrap"]["unit"], "patient");
    assert!((m["mean_auroc"].as_f64().unwrap() - 0.838).abs() < 5e-4);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn unknown_column_and_bad_values_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "image_id,prob_Effusion,prob_Tumour\n00000001_000.png,0.1,0.2\n",
            "column `prob_Tumour` is not a known label",
        ),
        (
            "image_id,Effusion\n00000001_000.png,high\n",
            "line 2: Effusion value `high`",
        ),
        (
            "name,Effusion\n00000001_000.png,0.1\n",
            "no image id column",
        ),
    ] {
        let p = write(dir.path(), "p.csv", text);
        let out = muxmed()
            .args(["evaluate", "--predictions"])
            .arg(&p)
            .arg("--labels")
            .arg(nih("Data_Entry_2017_v2020.csv.gz"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("p.csv") && err.contains(want), "{err}");
    }
}

#[test]
fn split_list_restricts_and_mismatches_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Three test-list images and one that is not an NIH image.
    let test: Vec<String> = std::fs::read_to_string(nih("test_list.txt"))
        .unwrap()
        .lines()
        .take(400)
        .map(String::from)
        .collect();
    let mut csv = String::from("Image Index,Effusion,Atelectasis\n");
    for (i, id) in test.iter().enumerate() {
        csv += &format!("{id},{},{}\n", (i % 7) as f64 / 7.0, (i % 5) as f64 / 5.0);
    }
    csv += "99999999_000.png,0.5,0.5\n";
    let p = write(dir.path(), "p.csv", &csv);
    let list = write(dir.path(), "list.txt", &test[..300].join("\n"));
    let out = muxmed()
        .args([
            "evaluate",
            "--bootstrap",
            "10",
            "--split",
            "val",
            "--predictions",
        ])
        .arg(&p)
        .arg("--labels")
        .arg(nih("Data_Entry_2017_v2020.csv.gz"))
        .arg("--split-list")
        .arg(&list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("metrics_val.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["n_images"], 300);
    assert_eq!(m["predictions_without_labels"], 101);
    assert_eq!(m["labelled_images_without_predictions"], 0);
    let labels: Vec<&str> = m["per_label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Atelectasis", "Effusion"]);
    // Thresholds chosen here can be applied to another split.
    let out = muxmed()
        .args(["evaluate", "--bootstrap", "10", "--predictions"])
        .arg(&p)
        .arg("--labels")
        .arg(nih("Data_Entry_2017_v2020.csv.gz"))
        .arg("--thresholds-from")
        .arg(dir.path().join("metrics_val.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("metrics_test.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(t["per_label"][0]["chosen"], m["per_label"][0]["chosen"]);
    assert!(t["threshold_source"]
        .as_str()
        .unwrap()
        .contains("metrics_val.json"));
}
