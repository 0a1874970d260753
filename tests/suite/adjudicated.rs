//! `--truth google2019`: Google's adjudicated labels (Majkowska et al. 2019) read from the
//! real file, joined with the published DenseNet-121 predictions, and scored; every number
//! is checked against pandas and scikit-learn.

use std::path::{Path, PathBuf};

use muxmed::data::google2019::{self, Finding};
use muxmed::labels::Split;

fn nih(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/nih")
        .join(p)
}

/// The real file's counts per finding and Set Id. Checked with pandas:
/// `g = pd.read_csv('google2019_nih-chest-xray-labels.csv.gz');
/// g.groupby('Set Id')[finding].value_counts()` gives, as (test, val) positives:
/// Fracture (72, 114), Pneumothorax (195, 43), Airspace opacity (1135, 1031),
/// Nodule or mass (295, 310); `g['Set Id'].value_counts()`: test 1962, val 2414;
/// 4,376 distinct images of 1,695 patients. awk agrees (`awk -F, 'NR>1{print $16}'`: the
/// bracketed header names hold commas, so rows and header both split into 16 fields).
#[test]
fn the_real_file_reads_with_pandas_counts() {
    let g = google2019::read(&nih("google2019_nih-chest-xray-labels.csv.gz")).unwrap();
    assert_eq!(g.len(), 4376);
    let patients: std::collections::HashSet<u32> = g.iter().map(|r| r.patient_id).collect();
    assert_eq!(patients.len(), 1695);
    let count = |set: Split| g.iter().filter(|r| r.set == set).count();
    assert_eq!((count(Split::Test), count(Split::Val)), (1962, 2414));
    let expected = [(72, 114), (195, 43), (1135, 1031), (295, 310)];
    for (f, (finding, (test, val))) in Finding::ALL.iter().zip(expected).enumerate() {
        let pos = |set: Split| g.iter().filter(|r| r.set == set && r.findings[f]).count();
        assert_eq!(
            (pos(Split::Test), pos(Split::Val)),
            (test, val),
            "{}",
            finding.column()
        );
    }
    // Every image of Google's test set is in NIH's official test list (pandas: 1962 of
    // 1962), so a run on the official split scores all of them.
    let test_list: std::collections::HashSet<String> =
        muxmed::data::nih::read_list(&nih("test_list.txt"))
            .unwrap()
            .into_iter()
            .collect();
    assert!(g
        .iter()
        .filter(|r| r.set == Split::Test)
        .all(|r| test_list.contains(&r.image_id)));
}

/// scikit-learn's `roc_auc_score` on the published DenseNet-121 predictions (Zech's
/// reproduce-chexnet) joined with Google's file and NIH's metadata, by this script:
/// `d = g[g['Set Id']==s].merge(preds, on='Image Index').merge(meta[['Image Index',
/// 'Finding Labels']], ...)`; score = the row max of the finding's `prob_` columns; NIH truth
/// = any of the finding's labels in `Finding Labels` split on `|`. Test set: 408 images of
/// 180 patients; val: 527 of 173. Per finding (positives adjudicated, positives NIH,
/// agreement, AUROC adjudicated, AUROC NIH):
const REFERENCE: [(Split, &str, usize, usize, f64, f64, f64); 6] = [
    (
        Split::Test,
        "Pneumothorax",
        43,
        50,
        0.875,
        0.8994584262503982,
        0.8984357541899441,
    ),
    (
        Split::Test,
        "Airspace opacity",
        231,
        122,
        0.5906862745098039,
        0.7947758456233033,
        0.739940387481371,
    ),
    (
        Split::Test,
        "Nodule or mass",
        66,
        47,
        0.8897058823529411,
        0.8479089136983874,
        0.7869393528614369,
    ),
    (
        Split::Val,
        "Pneumothorax",
        3,
        7,
        0.9848197343453511,
        0.5820610687022901,
        0.8315934065934066,
    ),
    (
        Split::Val,
        "Airspace opacity",
        243,
        130,
        0.6451612903225806,
        0.8637918043238857,
        0.7659562100368145,
    ),
    (
        Split::Val,
        "Nodule or mass",
        61,
        50,
        0.8956356736242884,
        0.8597059030465067,
        0.8076729559748428,
    ),
];

#[test]
fn published_predictions_on_adjudicated_labels_match_sklearn() {
    let preds = nih("reference_predictions/zech_densenet121/preds.csv");
    let meta = nih("Data_Entry_2017_v2020.csv.gz");
    let truth = nih("google2019_nih-chest-xray-labels.csv.gz");
    for (split, n, patients, fracture) in [(Split::Test, 408, 180, 14), (Split::Val, 527, 173, 25)]
    {
        let job = muxmed::eval::job::PredictionsJob {
            predictions: &preds,
            labels: &meta,
            split_list: None,
            split,
            thresholds_from: None,
            labels_subset: false,
            truth_file: Some(&truth),
        };
        let opt = muxmed::eval::scoring::EvalOptions {
            resamples: 200,
            ..Default::default()
        };
        let a = job.run(&opt).unwrap().adjudicated.unwrap();
        assert_eq!((a.n_images, a.n_patients), (n, patients), "{split}");
        let fr = a.findings.iter().find(|f| f.finding == "Fracture").unwrap();
        assert!(fr.not_scored.is_some() && fr.adjudicated.is_none());
        assert_eq!(fr.positives_adjudicated, fracture);
        for (s, name, pa, pn, agree, auc_a, auc_n) in REFERENCE.iter().filter(|r| r.0 == split) {
            let f = a.findings.iter().find(|f| f.finding == *name).unwrap();
            assert_eq!(
                (f.positives_adjudicated, f.positives_nih),
                (*pa, *pn),
                "{s} {name}"
            );
            // Counts ratio and rank AUROCs: exact up to the last bits of one division.
            assert!((f.agreement.unwrap() - agree).abs() < 1e-12, "{s} {name}");
            let adj = f.adjudicated.as_ref().unwrap();
            let nih = f.nih.as_ref().unwrap();
            // Fewer than eval.subgroups.min_positives (10) positives: "too few", no number
            // (val's Pneumothorax: 3 adjudicated, 7 NIH positives).
            for (score, positives, reference) in [(adj, *pa, auc_a), (nih, *pn, auc_n)] {
                if positives < 10 {
                    assert!(score.too_few && score.auroc.is_none(), "{s} {name}");
                    continue;
                }
                let auroc = score.auroc.unwrap();
                assert!(
                    (auroc - reference).abs() < 1e-12,
                    "{s} {name}: {auroc} {reference}"
                );
                let [lo, hi] = score.ci.unwrap();
                assert!(lo < *reference && *reference < hi, "{s} {name}: {lo} {hi}");
            }
        }
    }
}

#[test]
fn bad_adjudicated_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],Fracture,Pneumothorax,Airspace opacity,Nodule or mass,Set Id";
    let bad = dir.path().join("g.csv");
    std::fs::write(
        &bad,
        format!("{header}\n00000013_008.png,No Finding,8,13,60,M,AP,3056,2544,0.139,0.139,NO,NO,YES,NO,test\n00000013_026.png,No Finding,26,13,57,M,AP,2500,2048,0.168,0.168,NO,MAYBE,NO,NO,test\n"),
    )
    .unwrap();
    let e = google2019::read(&bad).unwrap_err().to_string();
    assert!(
        e.contains("g.csv, line 3") && e.contains("Pneumothorax value `MAYBE`"),
        "{e}"
    );
    // A file without the finding columns is not Google's.
    std::fs::write(&bad, "Image Index,Set Id\na.png,test\n").unwrap();
    let e = google2019::read(&bad).unwrap_err().to_string();
    assert!(e.contains("no `Fracture` column"), "{e}");
    // Synthetic data copies NIH's image names: refused before anything is scored.
    std::fs::write(dir.path().join(muxmed::data::synth::MARKER), "synthetic\n").unwrap();
    let e = muxmed::eval::adjudicated::truth_file(None, dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("synthetic dataset"), "{e}");
}

/// `evaluate --predictions --truth google2019` finds Google's file beside --labels, writes
/// truth_google2019_<split>.json, and says so when no scored image is in Google's set.
#[test]
fn evaluate_with_adjudicated_truth_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::muxmed()
        .args(["evaluate", "--predictions"])
        .arg(nih("reference_predictions/zech_densenet121/preds.csv"))
        .arg("--labels")
        .arg(nih("Data_Entry_2017_v2020.csv.gz"))
        .args(["--truth", "google2019", "--bootstrap", "50", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("408 images, 180 patients"), "{stdout}");
    let a = muxmed::eval::adjudicated::Adjudicated::read(&muxmed::eval::scoring::adjudicated_file(
        dir.path(),
        Split::Test,
    ))
    .unwrap();
    assert_eq!(a.n_images, 408);
    // Predictions of images Google never read: the error says so.
    let few = dir.path().join("few.csv");
    let mut text = String::from("Image Index");
    for l in muxmed::labels::LABELS {
        text += &format!(",{l}");
    }
    text += "\n00000001_000.png";
    text += &",0.5".repeat(14);
    text += "\n";
    std::fs::write(&few, text).unwrap();
    let out = crate::muxmed()
        .args(["evaluate", "--predictions"])
        .arg(&few)
        .arg("--labels")
        .arg(nih("Data_Entry_2017_v2020.csv.gz"))
        .args(["--truth", "google2019", "--bootstrap", "0", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "none of the 1 scored images is among the 1962 images of Google's `test` set"
        ),
        "{stderr}"
    );
}
