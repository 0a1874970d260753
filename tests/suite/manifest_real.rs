//! Manifests built from the real NIH files in `../shared/data/nih/`.

use std::path::{Path, PathBuf};

use muxmed::config::{DataConfig, SplitProtocol};
use muxmed::data::{manifest::build, manifest_dir::ManifestError};
use muxmed::labels::LABELS;
use polars::prelude::*;

fn nih() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/nih")
}

fn cfg() -> DataConfig {
    DataConfig {
        root: nih(),
        ..Default::default()
    }
}

/// (images, patients) of a split of a built manifest.
fn counts(m: &muxmed::data::manifest::Manifest, split: &str) -> (u64, u64) {
    let c = m.info.splits[&muxmed::labels::Split::parse(split).unwrap()];
    (c.images, c.patients)
}

#[test]
fn official_split_on_the_full_metadata() {
    let m = build(&cfg(), false).unwrap();
    let images = |k: &str| counts(&m, k).0;
    let patients = |k: &str| counts(&m, k).1;
    assert_eq!(images("train") + images("val") + images("test"), 112_120);
    assert_eq!(m.info.audit.patients, 30_805);
    assert_eq!(images("train") + images("val"), 86_524);
    assert_eq!(images("test"), 25_596);
    assert_eq!(patients("train") + patients("val"), 28_008);
    assert_eq!(patients("test"), 2_797);
    assert_eq!(m.info.audit.shared_patients_between_splits, 0);
    // About 10% of train_val patients in val.
    let frac = patients("val") as f64 / 28_008.0;
    assert!((frac - 0.1).abs() < 0.005, "{frac}");
    // Label counts over all images, as published with the dataset.
    let published = [
        ("Atelectasis", 11_559),
        ("Cardiomegaly", 2_776),
        ("Effusion", 13_317),
        ("Infiltration", 19_894),
        ("Mass", 5_782),
        ("Nodule", 6_331),
        ("Pneumonia", 1_431),
        ("Pneumothorax", 5_302),
        ("Consolidation", 4_667),
        ("Edema", 2_303),
        ("Emphysema", 2_516),
        ("Fibrosis", 1_686),
        ("Pleural_Thickening", 3_385),
        ("Hernia", 227),
        ("no_finding", 60_361),
    ];
    for (label, want) in published {
        let mut total = 0u64;
        for df in m.frames.values() {
            total += df.column(label).unwrap().u32().unwrap().sum().unwrap_or(0) as u64;
        }
        assert_eq!(total, want, "{label}");
    }
    // Every label has positives in val.
    for l in LABELS {
        let pos = m.frames["val"]
            .column(l)
            .unwrap()
            .u32()
            .unwrap()
            .sum()
            .unwrap_or(0);
        assert!(pos > 0, "{l} has no positives in val");
    }
    // Bounding boxes only on test images (880 images, 984 boxes).
    let boxes: u64 = m.frames["test"]
        .column("n_boxes")
        .unwrap()
        .u32()
        .unwrap()
        .sum()
        .unwrap() as u64;
    assert_eq!(boxes, 984);
    assert!(m.info.sources["metadata"].sha256.len() == 64);
}

#[test]
fn same_config_and_seed_give_byte_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    for k in ["a", "b"] {
        build(&cfg(), false)
            .unwrap()
            .write(&dir.path().join(k))
            .unwrap();
    }
    for f in [
        "train.parquet",
        "val.parquet",
        "test.parquet",
        "summary.csv",
        "manifest.json",
    ] {
        let a = std::fs::read(dir.path().join("a").join(f)).unwrap();
        let b = std::fs::read(dir.path().join("b").join(f)).unwrap();
        assert!(a == b && !a.is_empty(), "{f} differs");
    }
    // A different seed moves patients between train and val.
    let mut c = cfg();
    c.seed = 7;
    let other = build(&c, false).unwrap();
    let base = build(&cfg(), false).unwrap();
    assert_ne!(counts(&other, "val"), counts(&base, "val"));
}

#[test]
fn random_patient_protocol_is_70_10_20_by_patient() {
    let mut c = cfg();
    c.protocol = SplitProtocol::RandomPatient;
    let m = build(&c, false).unwrap();
    let p = |k: &str| counts(&m, k).1 as f64 / 30_805.0;
    assert!((p("train") - 0.7).abs() < 0.001 && (p("val") - 0.1).abs() < 0.001);
    assert_eq!(m.info.audit.shared_patients_between_splits, 0);
}

#[test]
fn missing_images_stop_the_build_unless_allowed() {
    let mut c = cfg();
    c.images = Some(nih().join("images"));
    let err = build(&c, true)
        .err()
        .expect("most images are absent")
        .to_string();
    assert!(err.contains("111880 of 112120 images"), "{err}");
    c.allow_missing_images = true;
    let m = build(&c, true).unwrap();
    assert_eq!(m.info.audit.images, 240);
    assert_eq!(m.info.audit.missing_images, 111_880);
    // The data is named with its share of the metadata's 112,120 rows (`zcat | wc -l` less
    // the header): 240 / 112,120 = 0.214%.
    assert_eq!(
        m.info.data_credit(),
        "NIH Clinical Center ChestX-ray14 (Wang et al., CVPR 2017): 240 of 112,120 listed images (0.2%)"
    );
    let paths = m.frames["test"]
        .column("path")
        .unwrap()
        .str()
        .unwrap()
        .clone();
    assert!(paths
        .iter()
        .all(|p| p.is_some_and(|p| Path::new(p).is_file())));
}

/// A small copy of the real metadata in the 2017 release's shape: trailing commas,
/// plain text, an age above 100.
fn small_dataset(dir: &Path, edit: impl Fn(usize, String) -> String) {
    let text = muxmed::data::nih::read_text(&nih().join("Data_Entry_2017_v2020.csv.gz")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .take(301)
        .enumerate()
        .map(|(i, l)| edit(i, format!("{l},")))
        .collect();
    std::fs::write(dir.join("Data_Entry_2017.csv"), lines.join("\n") + "\n").unwrap();
    let ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let (tv, _) = ids.split_at(200);
    // Keep patients disjoint: move the patient straddling the cut to test.
    let cut = tv.last().unwrap()[..8].to_string();
    let tv: Vec<&str> = tv
        .iter()
        .filter(|i| !i.starts_with(&cut))
        .copied()
        .collect();
    let test: Vec<&str> = ids.iter().filter(|i| !tv.contains(i)).copied().collect();
    std::fs::write(dir.join("train_val_list.txt"), tv.join("\n")).unwrap();
    std::fs::write(dir.join("test_list.txt"), test.join("\n")).unwrap();
}

#[test]
fn release_2017_quirks_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    small_dataset(dir.path(), |i, l| {
        if i == 5 {
            let mut f: Vec<String> = l.split(',').map(str::to_string).collect();
            f[4] = "148".into();
            f.join(",")
        } else {
            l
        }
    });
    let c = DataConfig {
        root: dir.path().to_path_buf(),
        ..Default::default()
    };
    let m = build(&c, false).unwrap();
    assert_eq!(m.info.audit.images, 300);
    assert_eq!(m.info.audit.ages_outside_0_120.len(), 1);
    assert!(m.info.audit.ages_outside_0_120[0].contains("line 6"));
}

#[test]
fn a_bad_row_names_file_and_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    small_dataset(dir.path(), |i, l| {
        if i == 10 {
            l.replacen(",", ",Cancer|", 1)
        } else {
            l
        }
    });
    let c = DataConfig {
        root: dir.path().to_path_buf(),
        ..Default::default()
    };
    let out = dir.path().join("out");
    let err = build(&c, false)
        .and_then(|mut m| m.write(&out))
        .expect_err("bad label");
    let msg = err.to_string();
    assert!(matches!(err, ManifestError::Nih(_)));
    assert!(
        msg.contains("Data_Entry_2017.csv, line 11") && msg.contains("`Cancer`"),
        "{msg}"
    );
    assert!(!out.exists());
}

#[test]
fn leaking_split_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    small_dataset(dir.path(), |_, l| l);
    // Put one image of a train_val patient into the test list as well as keeping its siblings.
    let tv = std::fs::read_to_string(dir.path().join("train_val_list.txt")).unwrap();
    let mut lines: Vec<&str> = tv.lines().collect();
    let moved = lines.remove(0).to_string();
    std::fs::write(dir.path().join("train_val_list.txt"), lines.join("\n")).unwrap();
    let test = std::fs::read_to_string(dir.path().join("test_list.txt")).unwrap();
    std::fs::write(dir.path().join("test_list.txt"), format!("{moved}\n{test}")).unwrap();
    let c = DataConfig {
        root: dir.path().to_path_buf(),
        ..Default::default()
    };
    let err = build(&c, false).err().expect("leak").to_string();
    assert!(err.contains("more than one split"), "{err}");
}

#[test]
fn filters_views_ages_one_per_patient_and_labels() {
    let mut c = cfg();
    c.filters.views = vec!["PA".into()];
    c.filters.min_age = Some(20);
    c.filters.max_age = Some(60);
    c.filters.one_per_patient = true;
    c.filters.labels = vec!["Effusion".into(), "Hernia".into()];
    let m = build(&c, false).unwrap();
    let mut patients = std::collections::BTreeSet::new();
    for df in m.frames.values() {
        assert!(df
            .column("view")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .all(|v| v == Some("PA")));
        let ages = df.column("age").unwrap().u32().unwrap();
        assert!(ages
            .iter()
            .all(|a| a.is_some_and(|a| (20..=60).contains(&a))));
        for p in df.column("patient_id").unwrap().u32().unwrap().iter() {
            assert!(patients.insert(p.unwrap()), "patient {p:?} twice");
        }
        assert!(df.column("Effusion").is_ok() && df.column("Hernia").is_ok());
        assert!(df.column("Mass").is_err());
    }
    assert_eq!(m.info.labels, ["Effusion", "Hernia"]);
    assert!(
        m.info.audit.images < 30_805 && m.info.audit.images > 5_000,
        "{}",
        m.info.audit.images
    );
}

#[test]
fn user_split_file_protocol() {
    let dir = tempfile::tempdir().unwrap();
    small_dataset(dir.path(), |_, l| l);
    let text = std::fs::read_to_string(dir.path().join("Data_Entry_2017.csv")).unwrap();
    let mut split = String::from("image_id,split\n");
    for l in text.lines().skip(1) {
        let id = l.split(',').next().unwrap();
        let patient: u32 = id[..8].parse().unwrap();
        let s = ["train", "train", "val", "test"][patient as usize % 4];
        split += &format!("{id},{s}\n");
    }
    let sf = dir.path().join("split.csv");
    std::fs::write(&sf, &split).unwrap();
    let mut c = DataConfig {
        root: dir.path().to_path_buf(),
        protocol: SplitProtocol::SplitFile,
        split_file: Some(sf.clone()),
        ..Default::default()
    };
    let m = build(&c, false).unwrap();
    assert_eq!(m.info.audit.images, 300);
    assert!(m.frames.values().all(|df| df.height() > 0));
    // A bad split name is an error naming the line.
    std::fs::write(&sf, split.replacen(",val\n", ",validation\n", 1)).unwrap();
    c.split_file = Some(sf);
    let err = build(&c, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("split.csv, line") && err.contains("validation"),
        "{err}"
    );
}

#[test]
fn images_are_found_in_any_folder_layout() {
    let dir = tempfile::tempdir().unwrap();
    small_dataset(dir.path(), |_, l| l);
    let real: Vec<PathBuf> = std::fs::read_dir(nih().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // NIH's tarballs give images/; others ship images_001/images/, images_002/images/...
    let wanted = ["00000001_000.png", "00000001_001.png", "00000002_000.png"];
    for (i, name) in wanted.iter().enumerate() {
        let sub = dir.path().join(format!("images_{:03}/images", i + 1));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(&real[i], sub.join(name)).unwrap();
    }
    let c = DataConfig {
        root: dir.path().to_path_buf(),
        allow_missing_images: true,
        ..Default::default()
    };
    let m = build(&c, true).unwrap();
    assert_eq!(m.info.audit.images, 3);
    let paths: Vec<String> = m
        .frames
        .values()
        .flat_map(|df| {
            df.column("path")
                .unwrap()
                .str()
                .unwrap()
                .iter()
                .map(|p| p.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("images_002/images/00000001_001.png")),
        "{paths:?}"
    );
}

#[test]
fn one_per_patient_keeps_the_first_image_that_passes_the_view_filter() {
    let mut c = cfg();
    c.filters.views = vec!["PA".into()];
    c.filters.one_per_patient = true;
    let m = build(&c, false).unwrap();
    // Reference: each patient's earliest PA follow-up, straight from the metadata.
    let meta = nih().join("Data_Entry_2017_v2020.csv.gz");
    let records =
        muxmed::data::nih::parse_metadata(&muxmed::data::nih::read_text(&meta).unwrap(), &meta)
            .unwrap();
    let mut first_pa: std::collections::HashMap<u32, (u32, String)> = Default::default();
    for r in records.iter().filter(|r| r.view == "PA") {
        let e = first_pa
            .entry(r.patient_id)
            .or_insert((r.follow_up, r.image_id.clone()));
        if r.follow_up < e.0 {
            *e = (r.follow_up, r.image_id.clone());
        }
    }
    let mut kept = std::collections::BTreeSet::new();
    for df in m.frames.values() {
        for id in df.column("image_id").unwrap().str().unwrap().iter() {
            kept.insert(id.unwrap().to_string());
        }
    }
    let want: std::collections::BTreeSet<String> =
        first_pa.into_values().map(|(_, id)| id).collect();
    assert_eq!(kept.len(), want.len());
    assert_eq!(kept, want);
}

#[test]
fn split_lists_sharing_an_image_are_an_error_and_unknown_names_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    small_dataset(dir.path(), |_, l| l);
    let c = DataConfig {
        root: dir.path().to_path_buf(),
        ..Default::default()
    };
    let tv_path = dir.path().join("train_val_list.txt");
    let tv = std::fs::read_to_string(&tv_path).unwrap();
    // Names the metadata does not have: counted, not silently ignored.
    std::fs::write(
        &tv_path,
        format!("{tv}\n99999999_000.png\n99999998_000.png"),
    )
    .unwrap();
    let m = build(&c, false).unwrap();
    assert_eq!(m.info.audit.list_names_not_in_metadata, 2);
    assert!(m
        .summary()
        .unwrap()
        .contains("2 names in the split lists are not in the metadata"));
    // An image in both lists.
    let test = std::fs::read_to_string(dir.path().join("test_list.txt")).unwrap();
    let first_test = test.lines().next().unwrap();
    std::fs::write(&tv_path, format!("{tv}\n{first_test}")).unwrap();
    let err = build(&c, false).err().unwrap().to_string();
    assert!(err.contains("in both") && err.contains(first_test), "{err}");
}

/// `one_per_patient` with `allow_missing_images` keeps each patient's first image present on
/// disk (the 240 real images here): a patient whose earliest follow-up is missing still
/// contributes one. Each filter's drop is counted in the audit and printed.
#[test]
fn one_per_patient_keeps_the_first_image_present_on_disk_and_drops_are_counted() {
    let mut c = cfg();
    c.images = Some(nih().join("images"));
    c.allow_missing_images = true;
    c.filters.one_per_patient = true;
    let m = build(&c, true).unwrap();
    let on_disk: std::collections::HashSet<String> = std::fs::read_dir(nih().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let meta = nih().join("Data_Entry_2017_v2020.csv.gz");
    let records =
        muxmed::data::nih::parse_metadata(&muxmed::data::nih::read_text(&meta).unwrap(), &meta)
            .unwrap();
    let mut first: std::collections::HashMap<u32, (u32, String)> = Default::default();
    for r in records.iter().filter(|r| on_disk.contains(&r.image_id)) {
        let e = first
            .entry(r.patient_id)
            .or_insert((r.follow_up, r.image_id.clone()));
        if r.follow_up < e.0 {
            *e = (r.follow_up, r.image_id.clone());
        }
    }
    let mut kept = std::collections::BTreeSet::new();
    for df in m.frames.values() {
        for id in df.column("image_id").unwrap().str().unwrap().iter() {
            kept.insert(id.unwrap().to_string());
        }
    }
    let want: std::collections::BTreeSet<String> = first.into_values().map(|(_, id)| id).collect();
    assert_eq!(kept, want);
    // All 240 images are of different patients, and 27 of them are not their patient's
    // first follow-up (whose image is missing here): keeping the metadata's first follow-up
    // and then dropping missing files would lose those 27 patients.
    assert_eq!(want.len(), 240);
    let present = records
        .iter()
        .filter(|r| on_disk.contains(&r.image_id))
        .count();
    assert_eq!(
        m.info.audit.dropped,
        [("missing_images".to_string(), records.len() - present)]
    );
    // The view filter's drop is counted and printed too.
    c.filters.views = vec!["PA".into()];
    let m = build(&c, true).unwrap();
    let not_pa = records.iter().filter(|r| r.view != "PA").count();
    assert_eq!(m.info.audit.dropped[0], ("views".to_string(), not_pa));
    let text = m.summary().unwrap();
    assert!(
        text.contains(&format!("filters.views dropped {not_pa} images")),
        "{text}"
    );
}
