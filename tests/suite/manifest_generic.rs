//! The generic manifest: any dataset described by a CSV of path, labels, patient id, split.

use std::path::{Path, PathBuf};

use muxmed::config::{DataConfig, GenericDataConfig};
use muxmed::data::manifest::build;
use polars::prelude::*;

fn real_images() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/nih/images"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    v.sort();
    v
}

fn dataset(dir: &Path, with_split: bool, rows: usize) -> PathBuf {
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let mut csv = String::from(if with_split {
        "path,labels,patient_id,split\n"
    } else {
        "path,labels,patient_id\n"
    });
    for (i, src) in real_images().iter().take(rows).enumerate() {
        let name = format!("case{i:03}.png");
        std::fs::copy(src, imgs.join(&name)).unwrap();
        let labels = ["", "Opacity", "Opacity|Nodule", "Nodule"][i % 4];
        let patient = format!("P{}", i / 2);
        let split = ["train", "train", "train", "val", "test"][(i / 2) % 5];
        if with_split {
            csv += &format!("imgs/{name},{labels},{patient},{split}\n");
        } else {
            csv += &format!("imgs/{name},{labels},{patient}\n");
        }
    }
    let p = dir.join("labels.csv");
    std::fs::write(&p, csv).unwrap();
    p
}

fn cfg(csv: PathBuf) -> DataConfig {
    DataConfig {
        generic: Some(GenericDataConfig {
            csv,
            labels: vec!["Nodule".into(), "Opacity".into()],
            dicom_folder: None,
        }),
        ..Default::default()
    }
}

#[test]
fn split_column_is_used_and_labels_are_one_hot() {
    let dir = tempfile::tempdir().unwrap();
    let m = build(&cfg(dataset(dir.path(), true, 20)), true).unwrap();
    assert_eq!(m.info.audit.images, 20);
    assert_eq!(m.info.labels, ["Nodule", "Opacity"]);
    assert_eq!(m.info.protocol, "generic_split_column");
    let train = &m.frames["train"];
    assert_eq!(train.height(), 12);
    let nod: u32 = m
        .frames
        .values()
        .map(|df| df.column("Nodule").unwrap().u32().unwrap().sum().unwrap())
        .sum();
    let opa: u32 = m
        .frames
        .values()
        .map(|df| df.column("Opacity").unwrap().u32().unwrap().sum().unwrap())
        .sum();
    let none: u32 = m
        .frames
        .values()
        .map(|df| {
            df.column("no_finding")
                .unwrap()
                .u32()
                .unwrap()
                .sum()
                .unwrap()
        })
        .sum();
    assert_eq!((nod, opa, none), (10, 10, 5));
    assert!(train
        .column("path")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .all(|p| Path::new(p.unwrap()).is_file()));
}

#[test]
fn without_split_column_patients_are_split_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    let m = build(&cfg(dataset(dir.path(), false, 40)), true).unwrap();
    assert_eq!(m.info.protocol, "generic_random_patient");
    let p = |s: &str| m.info.splits[&muxmed::labels::Split::parse(s).unwrap()].patients;
    assert_eq!((p("train"), p("val"), p("test")), (14, 2, 4));
}

#[test]
fn bad_rows_and_leaks_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dataset(dir.path(), true, 10);
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, text.replacen("Opacity|Nodule", "Opacity|Tumour", 1)).unwrap();
    let e = build(&cfg(csv.clone()), true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("labels.csv, line 4") && e.contains("`Tumour`"),
        "{e}"
    );
    // Patient P0 in train and test.
    std::fs::write(&csv, text.replacen("P0,train", "P0,test", 1)).unwrap();
    let e = build(&cfg(csv.clone()), true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("more than one split"), "{e}");
    // A missing image.
    std::fs::write(&csv, text.replacen("imgs/case000.png", "imgs/nope.png", 1)).unwrap();
    let e = build(&cfg(csv.clone()), true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("1 of 10 images") && e.contains("nope.png"),
        "{e}"
    );
}

#[test]
fn a_dicom_folder_csv_without_a_key_column_names_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("labels.csv");
    std::fs::write(&csv, "labels,patient_id\nNodule,P1\n").unwrap();
    let mut d = cfg(csv.clone());
    if let Some(g) = d.generic.as_mut() {
        g.dicom_folder =
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/dicom"));
    }
    let e = build(&d, true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("labels.csv, line 1") && e.contains("sop_instance_uid or path"),
        "{e}"
    );
    // The fixture folder holds truncated.dcm, the first 60% of dx_mono1_12bit_implicit.dcm:
    // its header is whole (the cut is in the pixel data), so both files claim one UID.
    std::fs::write(&csv, "sop_instance_uid,labels\n2.25.1,Nodule\n").unwrap();
    let e = build(&d, true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("dx_mono1_12bit_implicit.dcm and ")
            && e.contains("truncated.dcm have the same SOP Instance UID"),
        "{e}"
    );
}

/// data.val_fraction and data.test_fraction move a random patient split (20 patients here);
/// test_fraction is refused where the CSV gives every row's split.
#[test]
fn split_fractions_move_the_random_patient_split() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dataset(dir.path(), false, 40);
    let counts = |val: f64, test: Option<f64>| {
        let mut c = cfg(csv.clone());
        c.val_fraction = val;
        c.test_fraction = test;
        let m = build(&c, true).unwrap();
        assert_eq!(m.info.val_fraction, val);
        assert_eq!(m.info.test_fraction, test);
        let p = |s: &str| m.info.splits[&muxmed::labels::Split::parse(s).unwrap()].patients;
        (p("train"), p("val"), p("test"))
    };
    assert_eq!(counts(0.1, None), (14, 2, 4));
    assert_eq!(counts(0.3, None), (10, 6, 4));
    assert_eq!(counts(0.1, Some(0.4)), (10, 2, 8));
    let mut c = cfg(dataset(dir.path(), true, 20));
    c.test_fraction = Some(0.3);
    let e = build(&c, true).err().expect("refused").to_string();
    assert!(e.contains("data.test_fraction"), "{e}");
}

/// `muxmed manifest` names the labels whose val split has fewer than 10 positives or
/// negatives (here 2 and 2 of each on 4 val images; a label with no negatives in val says
/// its AUROC is undefined).
#[test]
fn manifest_names_labels_the_val_split_cannot_score() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dataset(dir.path(), true, 20);
    // Every val row (i = 6, 7, 16, 17) gets Nodule: no negatives left for it in val.
    let text = std::fs::read_to_string(&csv).unwrap();
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(n, l)| {
            if n > 0 && l.ends_with(",val") {
                let f: Vec<&str> = l.split(',').collect();
                format!("{},Nodule|Opacity,{},val", f[0], f[2])
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&csv, edited.join("\n") + "\n").unwrap();
    let yaml = dir.path().join("g.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: g\ndata:\n  generic:\n    csv: {}\n    labels: [Nodule, Opacity]\n",
            csv.display()
        ),
    )
    .unwrap();
    let out = crate::muxmed()
        .args(["manifest", "--pipeline"])
        .arg(&yaml)
        .arg("--out")
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "warning: the val split has fewer than 10 positives or negatives for 2 label(s)"
        ),
        "{text}"
    );
    assert!(
        text.contains("Nodule (4 positives, 0 negatives: one class only, AUROC undefined)")
            && text.contains("Opacity (4 positives, 0 negatives"),
        "{text}"
    );
}

/// A CSV that lists four files a second time under other patient ids: every one of the four
/// is named with both of its lines, not only the first.
#[test]
fn every_file_listed_twice_is_named_with_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dataset(dir.path(), false, 12);
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    let mut again = text.clone();
    // Rows of files 1, 4, 6 and 9 (lines 3, 6, 8, 11) again as lines 14 to 17.
    for i in [1, 4, 6, 9] {
        let f: Vec<&str> = rows[i].split(',').collect();
        again += &format!("{},{},Q{i}\n", f[0], f[1]);
    }
    std::fs::write(&csv, again).unwrap();
    let e = build(&cfg(csv), true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("4 file(s) are listed more than once"), "{e}");
    for (i, (first, second)) in [(1, (3, 14)), (4, (6, 15)), (6, (8, 16)), (9, (11, 17))] {
        let want = format!("case{i:03}.png (lines {first}, {second})");
        assert!(e.contains(&want), "{want}\n{e}");
    }
}

/// A generic CSV's optional view, sex and age columns: kept in the manifest, read by
/// `data.filters` (views, age range, one image per patient), and a filter whose column is
/// absent is an error naming it. Expected counts by hand from the rows written here: row i
/// has view PA for even i, age 20 + 5i, patient i / 2.
#[test]
fn generic_view_sex_and_age_columns_feed_the_filters() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let mut csv = String::from("path,labels,patient_id,view,sex,age\n");
    for (i, src) in real_images().iter().take(12).enumerate() {
        let name = format!("c{i:02}.png");
        std::fs::copy(src, imgs.join(&name)).unwrap();
        let view = if i % 2 == 0 { "PA" } else { "AP" };
        let sex = if i % 3 == 0 { "Female" } else { "M" };
        csv += &format!(
            "imgs/{name},Nodule,P{},{view},{sex},{}\n",
            i / 2,
            20 + 5 * i
        );
    }
    let p = dir.path().join("labels.csv");
    std::fs::write(&p, &csv).unwrap();
    let all = build(&cfg(p.clone()), true).unwrap();
    let df = muxmed::data::sources::read(&cfg(p.clone()), false)
        .unwrap()
        .all;
    let sexes: Vec<Option<&str>> = df.column("sex").unwrap().str().unwrap().iter().collect();
    assert_eq!(sexes.iter().filter(|s| **s == Some("F")).count(), 4);
    assert_eq!(all.info.audit.images, 12);
    let mut d = cfg(p.clone());
    d.filters.views = vec!["PA".into()];
    d.filters.min_age = Some(30);
    // PA rows: i = 0, 2, ..., 10, ages 20, 30, ..., 70; age >= 30 drops i = 0.
    assert_eq!(build(&d, true).unwrap().info.audit.images, 5);
    let mut d = cfg(p.clone());
    d.filters.one_per_patient = true;
    d.filters.max_age = Some(60);
    // Ages 20..=60 are i = 0..=8 (patients 0..=4), one image each.
    assert_eq!(build(&d, true).unwrap().info.audit.images, 5);
    std::fs::write(&p, csv.replace(",age\n", ",years\n")).unwrap();
    let mut d = cfg(p.clone());
    d.filters.min_age = Some(30);
    let e = build(&d, true).err().unwrap().to_string();
    assert!(
        e.contains("labels.csv") && e.contains("data.filters.min_age needs the `age` column"),
        "{e}"
    );
    std::fs::write(&p, csv.replacen(",Female,", ",X,", 1)).unwrap();
    let e = build(&cfg(p), true).err().unwrap().to_string();
    assert!(e.contains("line 2") && e.contains("sex `X`"), "{e}");
}
