//! `evaluate --run R --on PIPELINE`: a run trained on the NIH-format synthetic set scored on
//! a CheXpert-format one (`synth --format chexpert`, another scanner).

use std::collections::HashMap;
use std::path::Path;

use muxmed::labels::Split;
use muxmed::run::{Checkpoint, ExternalKey, RunDir};

use muxmed::config::PipelineConfig;
use muxmed::eval::external::{evaluate_external, ExternalEvaluation};
use muxmed::eval::scoring::EvalOptions;

use super::support::{key, World};

/// AUROC by counting pairs (Mann-Whitney, ties one half), written here from its definition.
pub(super) fn pairs_auroc(pos: &[f64], neg: &[f64]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in pos {
        for n in neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

/// valid.csv's rows (the test split) as image id (`valid/patient...jpg`) → column → cell.
pub(super) fn valid_cells(root: &Path) -> HashMap<String, HashMap<String, String>> {
    let text = std::fs::read_to_string(root.join("valid.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let id = f[0].split_once('/').unwrap().1.to_string();
            let row = header
                .iter()
                .zip(&f)
                .map(|(h, v)| (h.clone(), v.to_string()))
                .collect();
            (id, row)
        })
        .collect()
}

/// Writes pipeline `name` (data section `data`) under `root`, builds its manifest into
/// `mdirs/name` and returns its config.
pub(super) fn other_pipeline(root: &Path, mdirs: &Path, name: &str, data: &str) -> PipelineConfig {
    let p = root.join(format!("{name}.yaml"));
    std::fs::write(&p, format!("name: {name}\ndata:\n{data}")).unwrap();
    let other = muxmed::config::load(&p, &[]).unwrap().config;
    muxmed::data::manifest::build(&other.data, true)
        .unwrap()
        .write(&mdirs.join(name))
        .unwrap();
    other
}

/// `evaluate --run RUN --on OTHER` on the CPU, without progress.
pub(super) fn score_on(
    run: &RunDir,
    mdirs: &Path,
    other: &PipelineConfig,
    k: ExternalKey,
    opt: &EvalOptions,
) -> anyhow::Result<ExternalEvaluation> {
    evaluate_external(run.root(), mdirs, other, k, opt, Some("cpu"), &|_, _| {})
}

/// A CheXpert-format synthetic set of `images` at `w.root/name` (seed, share of test
/// patients), its pipeline `name` written and its manifest built; the set's root and config.
pub(super) fn chexpert_pipeline(
    w: &World,
    name: &str,
    images: usize,
    seed: u64,
    test_fraction: f64,
) -> (std::path::PathBuf, PipelineConfig) {
    use muxmed::data::synth::SynthOptions;
    use muxmed::data::synth_formats::{write, SynthFormat};
    let cx = w.root.join(name);
    let o = SynthOptions {
        images,
        patients: None,
        size: 64,
        seed,
        test_fraction,
        overwrite: false,
    };
    write(&cx, &o, SynthFormat::Chexpert).unwrap();
    let data = format!(
        "  source: chexpert\n  root: {}\n  protocol: official\n",
        cx.display()
    );
    let other = other_pipeline(&w.root, &w.root.join("data_manifests"), name, &data);
    (cx, other)
}

/// `concept`'s AUROC recounted by pair counting from the predictions file `pred` against
/// CheXpert-coded `cells` (image id → observation → `1.0` or `0.0`; anything else fails the
/// test), with its positives. Effusion is CheXpert's `Pleural Effusion` (vocabulary.csv).
pub(super) fn recount_auroc(
    pred: &Path,
    cells: &HashMap<String, HashMap<String, String>>,
    concept: &str,
) -> (Option<f64>, usize) {
    let text = std::fs::read_to_string(pred).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == concept).unwrap();
    let name = if concept == "Effusion" {
        "Pleural Effusion"
    } else {
        concept
    };
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for l in lines {
        let row: Vec<&str> = l.split(',').collect();
        let p: f64 = row[col].parse().unwrap();
        match cells[row[0]][name].as_str() {
            "1.0" => pos.push(p),
            "0.0" => neg.push(p),
            other => panic!("{}: cell {other} of {name}", row[0]),
        }
    }
    (pairs_auroc(&pos, &neg), pos.len())
}

pub fn external_validation(w: &World, run: &RunDir) {
    let (cx, other) = chexpert_pipeline(w, "cx", 200, 9, 0.4);
    let mdirs = w.root.join("data_manifests");
    let k = ExternalKey {
        eval: key(Split::Test, Checkpoint::Best, false),
        all: false,
    };
    let opt = EvalOptions {
        resamples: 200,
        ..Default::default()
    };
    let r = score_on(run, &mdirs, &other, k, &opt).unwrap();
    // NIH's 14 ∩ CheXpert's 13 observations, by concept (vocabulary.csv), in the run's order.
    let shared = [
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Pneumonia",
        "Pneumothorax",
        "Consolidation",
        "Edema",
    ];
    assert_eq!(r.info.scored, shared);
    assert_eq!(r.info.not_in_other.len(), 7, "{:?}", r.info.not_in_other);
    assert!(r.info.not_in_run.contains(&"Lung Opacity".to_string()));
    let ext = run.external("cx");
    for f in [
        ext.predictions(&k),
        ext.metrics(&k),
        ext.info(&k),
        ext.shift(&k),
    ] {
        assert!(f.is_file(), "{}", f.display());
    }
    assert!(ext.root().ends_with("external/cx"));
    // Subgroups of the other data: CheXpert's Sex (Male/Female as M/F) and AP/PA columns,
    // over the scored concepts; group sizes recounted from valid.csv.
    assert!(ext.subgroups(&k).is_file());
    assert_eq!(r.subgroups.labels, shared);
    let cells_for_sex = valid_cells(&cx);
    for (attr, col, map) in [
        (
            muxmed::eval::subgroups::Attribute::Sex,
            "Sex",
            [("F", "Female"), ("M", "Male")],
        ),
        (
            muxmed::eval::subgroups::Attribute::View,
            "AP/PA",
            [("AP", "AP"), ("PA", "PA")],
        ),
    ] {
        let a = r.subgroups.attribute(attr).unwrap();
        for g in &a.result.groups {
            let cell = map.iter().find(|m| m.0 == g.group).unwrap().1;
            let n = cells_for_sex.values().filter(|c| c[col] == cell).count();
            assert_eq!(g.images, n, "{col} {}", g.group);
        }
    }
    // The run's report has the other data's subgroups, with its forest plots.
    let (html, _) = muxmed::report::report_run(run.root(), &mdirs, k.eval).unwrap();
    let md = std::fs::read_to_string(html.with_file_name("report.md")).unwrap();
    assert!(md.contains("## Subgroups on cx (test split)"), "{md}");
    assert!(html
        .with_file_name("subgroups_external_cx_test_sex.png")
        .is_file());
    // External AUROC from the written predictions and valid.csv's own cells.
    let cells = valid_cells(&cx);
    assert_eq!(r.info.images, cells.len());
    let pred = std::fs::read_to_string(ext.predictions(&k)).unwrap();
    assert_eq!(pred.lines().count() - 1, cells.len());
    for c in &r.shift.per_concept {
        let (want, positives) = recount_auroc(&ext.predictions(&k), &cells, &c.concept);
        match (want, c.external_auroc) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{}: {a} {b}", c.concept),
            (a, b) => assert_eq!(a, b, "{}", c.concept),
        }
        assert_eq!(c.external_positives, positives);
        if let (Some(d), Some(i), Some(e)) = (c.difference, c.internal_auroc, c.external_auroc) {
            assert!((d - (e - i)).abs() < 1e-12);
        }
    }
    // The internal side is the run's own test evaluation.
    let internal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.metrics(&k.eval)).unwrap()).unwrap();
    for c in &r.shift.per_concept {
        let m = internal["per_label"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["label"] == c.concept.as_str())
            .unwrap();
        assert_eq!(m["auroc"].as_f64(), c.internal_auroc, "{}", c.concept);
    }
    // Only the other pipeline's test split (or all of it) is scored: --split val is refused.
    let val = ExternalKey {
        eval: key(Split::Val, Checkpoint::Best, false),
        all: false,
    };
    let e = score_on(run, &mdirs, &other, val, &opt)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--split val with --on"), "{e}");
    // The run's own pipeline is not an external one.
    let own = muxmed::config::load(&w.pipeline, &[]).unwrap().config;
    let e = score_on(run, &mdirs, &own, k, &opt)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is the run's own"), "{e}");
}

/// A MIMIC-format set's test images as dicom_id → observation → cell, from its own split,
/// metadata and label CSVs (labels are per study).
fn mimic_test_cells(root: &Path) -> HashMap<String, HashMap<String, String>> {
    let read = |name: &str| -> (Vec<String>, Vec<Vec<String>>) {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap().split(',').map(String::from).collect();
        let rows = lines
            .map(|l| l.split(',').map(String::from).collect())
            .collect();
        (header, rows)
    };
    let (_, split) = read("mimic-cxr-2.0.0-split.csv");
    let (lh, labels) = read("mimic-cxr-2.0.0-chexpert.csv");
    let by_study: HashMap<&str, &Vec<String>> = labels.iter().map(|r| (r[1].as_str(), r)).collect();
    split
        .iter()
        .filter(|r| r[3] == "test")
        .map(|r| {
            let cells = by_study[r[1].as_str()];
            let row = lh.iter().cloned().zip(cells.iter().cloned()).collect();
            (r[0].clone(), row)
        })
        .collect()
}

/// Issue 29's end-to-end path: a run trained on an NIH-format and a CheXpert-format set
/// together (`data.sources`), then scored on a third, MIMIC-CXR-format set drawn by a third
/// scanner. The external AUROCs are recounted from the MIMIC files' own cells.
#[test]
fn train_on_two_sources_then_validate_on_a_third() {
    use muxmed::data::synth::SynthOptions;
    use muxmed::data::synth_formats::{write, SynthFormat};
    let _torch = super::support::torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let o = |images, seed, test_fraction| SynthOptions {
        images,
        patients: None,
        size: 64,
        seed,
        test_fraction,
        overwrite: false,
    };
    write(&root.join("nih"), &o(160, 1, 0.2), SynthFormat::Nih).unwrap();
    write(&root.join("cx"), &o(160, 2, 0.2), SynthFormat::Chexpert).unwrap();
    write(&root.join("mimic"), &o(160, 3, 0.5), SynthFormat::MimicCxr).unwrap();
    let arch = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json");
    let shared =
        "[Atelectasis, Cardiomegaly, Effusion, Pneumonia, Pneumothorax, Consolidation, Edema]";
    let yaml = format!(
        "name: mix\ndata:\n  protocol: official\n  val_fraction: 0.25\n  filters:\n    labels: {shared}\n  sources:\n    - source: nih\n      root: {}\n    - source: chexpert\n      root: {}\n      uncertain: zeros\n      weight: 2\naugment:\n  working_size: 64\n  train:\n    - to_rgb\n    - normalize_imagenet\n  eval:\n    - to_rgb\n    - normalize_imagenet\nmodel:\n  arch: {}\n  weights: null\n  from_scratch: true\ntrain:\n  resolution: 64\n  epochs: 1\n  batch_size: 16\nruntime:\n  device: cpu\n  data_workers: 2\n",
        root.join("nih").display(),
        root.join("cx").display(),
        arch.display()
    );
    let pipeline = root.join("mix.yaml");
    std::fs::write(&pipeline, yaml).unwrap();
    let loaded = muxmed::config::load(&pipeline, &[]).unwrap();
    let mdirs = root.join("data_manifests");
    let mut m = muxmed::data::manifest::build(&loaded.config.data, true).unwrap();
    m.write(&mdirs.join("mix")).unwrap();
    muxmed::data::cache::prepare(&mdirs.join("mix"), &loaded.config.augment, &|_, _| {}).unwrap();
    let args = muxmed::train::TrainArgs {
        pipeline: Some(loaded),
        run_name: Some("mix".into()),
        reports_dir: root.join("reports"),
        manifests_dir: mdirs.clone(),
        ..Default::default()
    };
    let out = muxmed::train::train(&args, super::support::no_stop()).unwrap();
    assert_eq!(out.state.status, muxmed::run::Status::Finished);
    // Both sources are in the run's splits, each image tagged with its dataset.
    let train = out.run.split(Split::Train).unwrap();
    for d in ["nih", "chexpert"] {
        assert!(train.datasets.iter().any(|x| x == d), "{d} in train");
    }
    let data = format!(
        "  source: mimic_cxr\n  root: {}\n  protocol: official\n",
        root.join("mimic").display()
    );
    let other = other_pipeline(root, &mdirs, "mimic", &data);
    let k = ExternalKey {
        eval: key(Split::Test, Checkpoint::Best, false),
        all: false,
    };
    let opt = EvalOptions {
        resamples: 100,
        ..Default::default()
    };
    let r = score_on(&out.run, &mdirs, &other, k, &opt).unwrap();
    assert_eq!(r.info.scored.len(), 7, "{:?}", r.info.scored);
    let cells = mimic_test_cells(&root.join("mimic"));
    assert_eq!(r.info.images, cells.len());
    let pred_csv = out.run.external("mimic").predictions(&k);
    let pred = std::fs::read_to_string(&pred_csv).unwrap();
    let mut lines = pred.lines();
    assert_eq!(lines.next().unwrap().split(',').nth(2), Some("dataset"));
    assert!(lines.all(|l| l.split(',').nth(2) == Some("mimic_cxr")));
    let mut defined = 0;
    for c in &r.shift.per_concept {
        match (
            recount_auroc(&pred_csv, &cells, &c.concept).0,
            c.external_auroc,
        ) {
            (Some(a), Some(b)) => {
                defined += 1;
                assert!((a - b).abs() < 1e-12, "{}: {a} {b}", c.concept)
            }
            (a, b) => assert_eq!(a, b, "{}", c.concept),
        }
    }
    assert!(defined >= 3, "{defined} concepts with both classes");
    // A set the run trained on is not external: refused, naming the shared file.
    let data = format!(
        "  source: chexpert\n  root: {}\n  protocol: official\n",
        root.join("cx").display()
    );
    let own = other_pipeline(root, &mdirs, "cxown", &data);
    let e = score_on(&out.run, &mdirs, &own, k, &opt)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not external") && e.contains("train.csv"), "{e}");
    // The report names both datasets with their image counts and share.
    let (html, _) = muxmed::report::report_run(
        out.run.root(),
        &mdirs,
        key(Split::Test, Checkpoint::Best, false),
    )
    .unwrap();
    let html = std::fs::read_to_string(html).unwrap();
    assert!(
        html.contains("format of Stanford CheXpert (Irvin et al., AAAI 2019) (160 images)")
            && html.contains("NIH Clinical Center ChestX-ray14 (Wang et al., CVPR 2017) (160 images): 320 of 320 listed images (100.0%)"),
        "{}",
        html.lines().filter(|l| l.contains("Data:")).collect::<Vec<_>>().join("\n")
    );
}

/// `localize --on`: the run's Grad-CAM scored on the boxes of an RSNA-format and a
/// VinDr-format synthetic set (DICOM images, boxes in their own files). Every expected count
/// comes from the written label files and the other manifest's test split, counted here:
/// RSNA's boxes are its `Target` 1 rows; VinDr's are every reader's box, and those whose
/// class is not one of the run's concepts (vocabulary: `Nodule/Mass`, `Lung Opacity`, ...)
/// are counted as without class.
pub fn external_localization(w: &World, run: &RunDir) {
    use muxmed::data::synth::SynthOptions;
    use muxmed::data::synth_formats::{write, SynthFormat};
    use muxmed::explain::localize::{localize, LocalizeArgs, OtherPipeline};
    let mdirs = w.root.join("data_manifests");
    let run_labels = run.manifest().unwrap().labels;
    for (name, format, file) in [
        (
            "rsna-ext",
            SynthFormat::RsnaPneumonia,
            "stage_2_train_labels.csv",
        ),
        ("vindr-ext", SynthFormat::VindrCxr, "train.csv"),
    ] {
        let root = w.root.join(name);
        let o = SynthOptions {
            images: 120,
            patients: None,
            size: 64,
            seed: 21,
            test_fraction: 0.5,
            overwrite: false,
        };
        write(&root, &o, format).unwrap();
        let data = format!(
            "  source: {}\n  root: {}\n  protocol: random_patient\n  test_fraction: 0.5\n",
            format.dataset().key(),
            root.display()
        );
        other_pipeline(&w.root, &mdirs, name, &data);
        let test: std::collections::HashSet<String> = muxmed::data::dataset::load_split_file(
            &muxmed::data::dataset::split_path(&mdirs.join(name), Split::Test),
            &[],
        )
        .unwrap()
        .image_ids
        .into_iter()
        .collect();
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let (mut boxes, mut without, mut outside) = (0, 0, 0);
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            let concept = match format {
                SynthFormat::RsnaPneumonia if f[5] == "1" => "Pneumonia",
                SynthFormat::VindrCxr if f[1] != "No finding" => match f[1] {
                    "Pleural effusion" => "Effusion",
                    "Pleural thickening" => "Pleural_Thickening",
                    "Pulmonary fibrosis" => "Fibrosis",
                    other => other,
                },
                _ => continue,
            };
            if !test.contains(f[0]) {
                outside += 1;
            } else if run_labels.iter().any(|l| l == concept) {
                boxes += 1;
            } else {
                without += 1;
            }
        }
        assert!(boxes > 0, "{name}: no box on a test image");
        let dir = mdirs.join(name);
        let l = localize(&LocalizeArgs {
            run: run.root(),
            split: Split::Test,
            checkpoint: Checkpoint::Best,
            boxes: None,
            on: Some(OtherPipeline {
                name,
                manifest_dir: &dir,
            }),
            threshold: 0.5,
            seed: 0,
            device: Some("cpu"),
        })
        .unwrap();
        let got = &l.localization;
        assert_eq!(
            (got.boxes, got.boxes_without_class, got.boxes_outside_split),
            (boxes, without, outside),
            "{name}"
        );
        assert_eq!(got.on.as_deref(), Some(name));
        assert!(l.json.starts_with(run.external(name).root()));
        assert!(l.notice.is_none());
    }
}
