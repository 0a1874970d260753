//! `muxmed evaluate --predictions` on a published model's real predictions.

use std::path::{Path, PathBuf};

fn nih(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/nih")
        .join(p)
}

use crate::muxmed;

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
            "--labels-subset",
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 of 14 labels scored"));
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("metrics_val.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["n_images"], 300);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 of 14 labels scored"));
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
        .args([
            "evaluate",
            "--bootstrap",
            "10",
            "--labels-subset",
            "--predictions",
        ])
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

fn all_labels_csv(
    ids: &[String],
    header_extra: &str,
    value: impl Fn(usize, usize) -> String,
) -> String {
    let labels = muxmed::labels::LABELS;
    let mut csv = format!("image_id{header_extra},{}\n", labels.join(","));
    for (i, id) in ids.iter().enumerate() {
        let extra = if header_extra.is_empty() {
            String::new()
        } else {
            format!(",\"p, {i}\"")
        };
        let cells: Vec<String> = (0..labels.len()).map(|k| value(i, k)).collect();
        csv += &format!("{id}{extra},{}\n", cells.join(","));
    }
    csv
}

fn test_ids(n: usize) -> Vec<String> {
    std::fs::read_to_string(nih("test_list.txt"))
        .unwrap()
        .lines()
        .take(n)
        .map(String::from)
        .collect()
}

fn evaluate(p: &Path, extra: &[&str]) -> std::process::Output {
    muxmed()
        .args(["evaluate", "--bootstrap", "10"])
        .args(extra)
        .arg("--predictions")
        .arg(p)
        .arg("--labels")
        .arg(nih("Data_Entry_2017_v2020.csv.gz"))
        .output()
        .unwrap()
}

#[test]
fn missing_labels_logits_and_muxmeds_own_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let ids = test_ids(200);
    // A missing label column is an error naming it, unless --labels-subset.
    let p = write(
        dir.path(),
        "two.csv",
        "image_id,Effusion,Mass\n00000001_000.png,0.1,0.2\n",
    );
    let out = evaluate(&p, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("12 of the 14 labels")
            && err.contains("Hernia")
            && err.contains("--labels-subset"),
        "{err}"
    );
    // Logits are not probabilities.
    let p = write(
        dir.path(),
        "logits.csv",
        &all_labels_csv(&ids, "", |i, k| format!("{}", (i + k) as f64 - 100.0)),
    );
    let out = evaluate(&p, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("sigmoid"), "{err}");
    // muxmed's own predictions file (image_id, patient_id, labels) reads back, with a quoted
    // field holding a comma.
    let p = write(
        dir.path(),
        "own.csv",
        &all_labels_csv(&ids, ",patient_id", |i, k| {
            format!("{:e}", ((i * 7 + k * 3) % 11) as f64 / 11.0)
        }),
    );
    let out = evaluate(&p, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn constant_outputs_are_flagged_in_evaluate_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let ids = test_ids(300);
    let p = write(
        dir.path(),
        "flat.csv",
        &all_labels_csv(&ids, "", |_, _| "0.5".into()),
    );
    let out = evaluate(&p, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("outputs are constant"), "{stdout}");
    let rep = dir.path().join("rep");
    let out = muxmed()
        .args(["report", "--bootstrap", "10", "--predictions"])
        .arg(&p)
        .arg("--labels")
        .arg(nih("Data_Entry_2017_v2020.csv.gz"))
        .arg("--out")
        .arg(&rep)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(rep.join("report.html")).unwrap();
    assert!(html.contains("outputs are constant"));
}

/// Patients are keyed by their exact id string: "00123" and "123" are two patients (a
/// numeric parse merged them), and so are `patient579599` and `patient762382`, whose 32-bit
/// FNV-1a hashes are equal (0xb7b21942: found by brute force in Python), which the old key
/// merged too. Each pair here makes the bootstrap see 4 patients, not 3.
#[test]
fn patients_are_their_exact_id_strings() {
    use muxmed::data::dataset::SplitData;
    use muxmed::eval::join::join_split;
    use muxmed::eval::scoring::{evaluate, EvalOptions};
    for (a, b) in [("00123", "123"), ("patient579599", "patient762382")] {
        let patients = [a, b, "x", "y", a, b];
        let split = SplitData {
            label_names: vec!["Nodule".into()],
            image_ids: (0..6).map(|i| format!("im{i}.png")).collect(),
            paths: vec![None; 6],
            patients: patients.iter().map(|p| p.to_string()).collect(),
            datasets: vec![String::new(); 6],
            labels: [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
                .iter()
                .map(|v| vec![*v])
                .collect(),
        };
        let j = join_split(&split, |i, _| Some(vec![i as f64 / 10.0]));
        assert_eq!(j.patients, [0, 1, 2, 3, 0, 1], "{a} / {b}");
        let ev = evaluate(
            &j,
            "test",
            &EvalOptions {
                resamples: 10,
                ..Default::default()
            },
        );
        assert_eq!(ev.n_patients, 4, "{a} / {b}");
    }
}
