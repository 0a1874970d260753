//! A generic manifest over a DICOM folder: prepare, train a step, a report without
//! published numbers.

use std::path::{Path, PathBuf};

use muxmed::config;
use muxmed::labels::Split;
use muxmed::run::{Checkpoint, Status};
use muxmed::train::{train, TrainArgs};

use super::support::{key, no_stop, resume_args_in, torch_lock};

/// A folder of 24 DICOM files for 12 patients, copied from the readable fixtures with new
/// Patient IDs and SOP Instance UIDs, and a labels CSV keyed by UID without patient ids.
pub fn dicom_world(dir: &Path) -> (PathBuf, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/dicom");
    let good = [
        "cr_mono2_8bit_explicit",
        "cr_mono2_8bit_jpeg_baseline",
        "dx_deflated",
        "dx_mono1_12bit_implicit",
        "dx_mono2_12bit_j2k_lossless",
        "dx_mono2_12bit_rle",
        "dx_mono2_16bit_rescale_window",
        "multiframe_2",
    ];
    let folder = dir.join("dicoms");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    let mut csv = String::from("sop_instance_uid,labels\n");
    for i in 0..24 {
        let src = fixtures.join(format!("{}.dcm", good[i % good.len()]));
        // Any file name, in sub-folders too: files are found by UID.
        let dst = folder
            .join(if i % 3 == 0 { "sub" } else { "" })
            .join(format!("im{i}"));
        let uid = format!("2.25.{}", 1000 + i);
        muxmed::data::dicom::rewrite_identity(&src, &dst, &format!("PAT{}", i / 2), &uid).unwrap();
        csv += &format!(
            "{uid},{}\n",
            ["Effusion", "", "Nodule", "Effusion|Nodule"][i % 4]
        );
    }
    let labels = dir.join("labels.csv");
    std::fs::write(&labels, csv).unwrap();
    (folder, labels)
}

/// A generic dataset whose labels share NIH's names (Effusion, Nodule) is not ChestX-Ray14:
/// its report draws no CheXNet markers or official-split means and says why.
pub fn generic_run_report_shows_no_published_numbers(root: &Path, run: &Path) {
    let finished = train(&resume_args_in(root, run.to_path_buf()), no_stop()).unwrap();
    assert_eq!(finished.state.status, Status::Finished);
    // Its val split is a few images: train names the labels it cannot score reliably, at the
    // end and in train.log.
    let said = finished.warnings.join("\n");
    assert!(
        said.contains("the val split has fewer than 10 positives or negatives"),
        "{said}"
    );
    let log = std::fs::read_to_string(finished.run.log_file()).unwrap();
    assert!(
        log.contains("warning: the val split has fewer than 10"),
        "{log}"
    );
    let mdirs = root.join("data_manifests");
    let opt = muxmed::eval::scoring::EvalOptions {
        resamples: 20,
        ..Default::default()
    };
    let k = key(Split::Test, Checkpoint::Best, false);
    muxmed::eval::run_eval::evaluate_run(run, &mdirs, k, &opt, Some("cpu")).unwrap();
    let (html, _) = muxmed::report::report_run(run, &mdirs, k).unwrap();
    let md = std::fs::read_to_string(html.with_file_name("report.md")).unwrap();
    assert!(
        md.contains("published ChestX-Ray14 numbers do not apply"),
        "{md}"
    );
    assert!(md.contains("Published references are not shown"), "{md}");
    assert!(!md.contains("CheXNet"), "{md}");
}

#[test]
fn a_dicom_folder_manifest_prepares_and_trains_a_step() {
    let _g = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (folder, labels) = dicom_world(root);
    let arch = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json");
    let yaml = format!(
        "name: dicom\ndata:\n  generic:\n    csv: {}\n    labels: [Effusion, Nodule]\n    dicom_folder: {}\naugment:\n  working_size: 64\n  cache_dtype: u16\n  train:\n    - to_rgb\n    - normalize_imagenet\n  eval:\n    - to_rgb\n    - normalize_imagenet\nmodel:\n  arch: {}\n  weights: null\n  from_scratch: true\ntrain:\n  resolution: 64\n  epochs: 1\n  batch_size: 4\nruntime:\n  device: cpu\n  data_workers: 1\n",
        labels.display(),
        folder.display(),
        arch.display()
    );
    let pipeline = root.join("dicom.yaml");
    std::fs::write(&pipeline, yaml).unwrap();
    let cfg = config::load(&pipeline, &[]).unwrap().config;
    let mut m = muxmed::data::manifest::build(&cfg.data, true).unwrap();
    // Patients come from the headers (the CSV has none): 12 of them, none in two splits.
    assert_eq!((m.info.audit.images, m.info.audit.patients), (24, 12));
    let mdir = root.join("data_manifests/dicom");
    m.write(&mdir).unwrap();
    muxmed::data::cache::prepare(&mdir, &cfg.augment, &|_, _| {}).unwrap();
    let cache = muxmed::data::cache::Cache::open(&mdir, &cfg.augment).unwrap();
    assert_eq!(
        cache.index.entries.iter().filter(|e| !e.skipped).count(),
        24
    );
    let mut a = TrainArgs {
        pipeline: Some(config::load(&pipeline, &[]).unwrap()),
        run_name: Some("d".into()),
        reports_dir: root.join("reports"),
        manifests_dir: root.join("data_manifests"),
        ..Default::default()
    };
    a.stop_after_steps = Some(1);
    let out = train(&a, no_stop()).unwrap();
    assert_eq!(out.state.opt_step, 1);
    assert!(out.run.checkpoint(Checkpoint::Last).is_file());
    generic_run_report_shows_no_published_numbers(root, out.run.root());

    // Keyed by path in the folder instead, with the CSV's patient ids overriding the headers'.
    let by_path = root.join("by_path.csv");
    let mut csv = String::from("path,labels,patient_id\n");
    for i in 0..24 {
        let sub = if i % 3 == 0 { "sub/" } else { "" };
        csv += &format!("{sub}im{i},Nodule,X{}\n", i % 6);
    }
    std::fs::write(&by_path, csv).unwrap();
    let mut d = cfg.data.clone();
    if let Some(g) = d.generic.as_mut() {
        g.csv = by_path;
    }
    let m = muxmed::data::manifest::build(&d, true).unwrap();
    assert_eq!((m.info.audit.images, m.info.audit.patients), (24, 6));

    // A UID the folder does not hold is a missing image, named.
    let mut csv = std::fs::read_to_string(&labels).unwrap();
    csv += "2.25.999999,Nodule\n";
    std::fs::write(&labels, csv).unwrap();
    let e = match muxmed::data::manifest::build(&cfg.data, true) {
        Ok(_) => panic!("a UID missing from the folder must fail the manifest"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("no DICOM file with SOP Instance UID 2.25.999999"),
        "{e}"
    );
}
