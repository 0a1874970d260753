//! The dataset readers on real label files: the first 1,500 rows of CheXpert's, VinBigData's
//! and RSNA's files in `../shared/data/formats/` (always), and the complete files (223,414,
//! 67,914 and 30,227 rows) when `make test-real` has put them in `MUXMED_REAL_LABELS`
//! (extracted from the torchxrayvision snapshot; never part of the repository). MIMIC-CXR
//! and PadChest, whose files are credentialed, are read from files written here from the
//! documented format.
//!
//! Every expected count comes from Python's csv module, not from muxmed, e.g. for CheXpert:
//! `r = list(csv.DictReader(open(f)))`; images `len(r)`; patients
//! `len({x['Path'].split('/')[2] for x in r})`; per label `Counter(x[l] for x in r)` over
//! `1.0`, `0.0`, `-1.0`, `''`; views by `(Frontal/Lateral, AP/PA)`. VinDr: per image the set
//! of `rad_id`s and, per class, the readers marking it; majority = more than half. RSNA:
//! distinct `patientId`s and their `Target`.

use std::path::{Path, PathBuf};

use muxmed::config::{BlankPolicy, DataConfig, ReaderPolicy, SplitProtocol, UncertainPolicy};
use muxmed::data::manifest;
use muxmed::data::sources::{self, Table};
use muxmed::labels::Dataset;
use polars::prelude::*;

fn formats(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/formats")
        .join(sub)
}

/// A dataset root holding `name` as a link to `file`.
fn root_with(file: &Path, name: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(std::fs::canonicalize(file).unwrap(), t.path().join(name)).unwrap();
    t
}

fn cfg(source: Dataset, root: &Path) -> DataConfig {
    DataConfig {
        source: Some(source),
        root: root.to_path_buf(),
        protocol: SplitProtocol::RandomPatient,
        ..Default::default()
    }
}

/// (positives, negatives, null) of a label column.
fn column_counts(t: &Table, label: &str) -> [usize; 3] {
    let c = t
        .all
        .column(label)
        .unwrap()
        .cast(&DataType::Float32)
        .unwrap();
    let mut out = [0; 3];
    for v in c.f32().unwrap().iter() {
        match v {
            Some(x) if x > 0.5 => out[0] += 1,
            Some(_) => out[1] += 1,
            None => out[2] += 1,
        }
    }
    out
}

/// Images whose `uncertain` column names `label`.
fn uncertain_count(t: &Table, label: &str) -> usize {
    let c = t.all.column("uncertain").unwrap().str().unwrap().clone();
    c.iter()
        .filter(|v| v.is_some_and(|s| s.split('|').any(|x| x == label)))
        .count()
}

/// [positives, negatives, uncertain, missing] of `label` in the manifest's summary, summed
/// over the splits.
fn summary_counts(m: &manifest::Manifest, label: &str) -> [usize; 4] {
    let labels = m.summary.column("label").unwrap().str().unwrap().clone();
    let mut out = [0; 4];
    for (k, col) in ["positives", "negatives", "uncertain", "missing"]
        .iter()
        .enumerate()
    {
        let v = m.summary.column(col).unwrap().u64().unwrap().clone();
        out[k] = (0..m.summary.height())
            .filter(|&i| labels.get(i) == Some(label))
            .map(|i| v.get(i).unwrap() as usize)
            .sum();
    }
    out
}

fn strs(t: &Table, col: &str) -> Vec<Option<String>> {
    let c = t.all.column(col).unwrap().str().unwrap().clone();
    c.iter().map(|v| v.map(String::from)).collect()
}

/// CheXpert counts: images, patients, AP, PA, lateral, then per label [positive, negative,
/// uncertain, blank] for Atelectasis, Pleural Effusion (concept Effusion), Edema, Fracture.
fn check_chexpert(file: &Path, want: (usize, usize, usize, usize, usize), labels: [[usize; 4]; 4]) {
    let root = root_with(file, "train.csv");
    let mut d = cfg(Dataset::Chexpert, root.path());
    d.uncertain = Some(UncertainPolicy::Ignore);
    d.blank = Some(BlankPolicy::Missing);
    let t = sources::read(&d, false).unwrap();
    let m = manifest::build(&d, false).unwrap();
    let patients = t.all.column("patient_id").unwrap().n_unique().unwrap();
    let views = strs(&t, "view");
    let n_view = |v: &str| views.iter().filter(|x| x.as_deref() == Some(v)).count();
    assert_eq!(
        (
            t.all.height(),
            patients,
            n_view("AP"),
            n_view("PA"),
            n_view("LATERAL")
        ),
        want
    );
    for (concept, w) in ["Atelectasis", "Effusion", "Edema", "Fracture"]
        .iter()
        .zip(labels)
    {
        let [pos, neg, null] = column_counts(&t, concept);
        let unc = uncertain_count(&t, concept);
        assert_eq!([pos, neg, unc, null - unc], w, "{concept}");
        assert_eq!(summary_counts(&m, concept), w, "summary.csv, {concept}");
    }
    // U-Ones for Atelectasis, U-Zeros for the rest, blanks negative (Irvin et al. 2019).
    d.uncertain = Some(UncertainPolicy::Zeros);
    d.uncertain_per_label
        .insert("Atelectasis".into(), UncertainPolicy::Ones);
    d.blank = None;
    let t = sources::read(&d, false).unwrap();
    let [pos, neg, null] = column_counts(&t, "Atelectasis");
    assert_eq!(
        [pos, neg, null],
        [labels[0][0] + labels[0][2], labels[0][1] + labels[0][3], 0]
    );
    let [pos, neg, _] = column_counts(&t, "Edema");
    assert_eq!(
        [pos, neg],
        [labels[2][0], labels[2][1] + labels[2][2] + labels[2][3]]
    );
    assert_eq!(
        t.labels.len(),
        13,
        "CheXpert's 14 observations but No Finding"
    );
}

#[test]
fn chexpert_reader_counts_the_first_1500_real_rows() {
    check_chexpert(
        &formats("chexpert/train_first1500.csv"),
        (1500, 347, 873, 312, 315),
        [
            [198, 15, 200, 1087],
            [562, 289, 72, 577],
            [299, 143, 64, 994],
            [65, 16, 5, 1414],
        ],
    );
}

/// The real file wherever `make test-real` put it.
fn real(name: &str) -> PathBuf {
    let dir =
        std::env::var("MUXMED_REAL_LABELS").expect("MUXMED_REAL_LABELS: run `make test-real`");
    let p = Path::new(&dir).join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `make test-real`",
        p.display()
    );
    p
}

#[test]
#[ignore = "needs the complete label files: make test-real"]
fn chexpert_reader_counts_the_full_real_train_csv() {
    check_chexpert(
        &real("chexpert_train.csv"),
        (223_414, 64_540, 161_590, 29_420, 32_387),
        [
            [33_376, 1_328, 33_739, 154_971],
            [86_187, 35_396, 11_628, 90_203],
            [52_246, 20_726, 12_984, 137_458],
            [9_040, 2_512, 642, 211_220],
        ],
    );
}

/// VinDr: images, then (majority, any) positives of Pleural effusion, Cardiomegaly and
/// Pulmonary fibrosis.
fn check_vindr(file: &Path, images: usize, want: [(usize, usize); 3]) {
    let root = root_with(file, "train.csv");
    let mut d = cfg(Dataset::VindrCxr, root.path());
    let mut got = Vec::new();
    for policy in [ReaderPolicy::Majority, ReaderPolicy::Any] {
        d.readers = Some(policy);
        let t = sources::read(&d, false).unwrap();
        assert_eq!(t.all.height(), images);
        got.push(["Effusion", "Cardiomegaly", "Fibrosis"].map(|c| column_counts(&t, c)[0]));
    }
    let pairs: Vec<(usize, usize)> = (0..3).map(|k| (got[0][k], got[1][k])).collect();
    assert_eq!(pairs, want);
}

#[test]
fn vindr_reader_counts_the_first_1500_real_rows() {
    check_vindr(
        &formats("vindr_cxr/train_first1500.csv"),
        1405,
        [(47, 55), (120, 130), (90, 101)],
    );
}

#[test]
#[ignore = "needs the complete label files: make test-real"]
fn vindr_reader_counts_the_full_real_file() {
    check_vindr(
        &real("vinbigdata-train.csv"),
        15_000,
        [(634, 1032), (1817, 2300), (1017, 1617)],
    );
}

fn check_rsna(file: &Path, images: usize, positive: usize) {
    let root = root_with(file, "stage_2_train_labels.csv");
    let t = sources::read(&cfg(Dataset::RsnaPneumonia, root.path()), false).unwrap();
    assert_eq!(t.labels, ["Pneumonia"]);
    assert_eq!(
        (t.all.height(), column_counts(&t, "Pneumonia")[0]),
        (images, positive)
    );
}

#[test]
fn rsna_reader_counts_the_first_1500_real_rows() {
    check_rsna(
        &formats("rsna_pneumonia/stage_2_train_labels_first1500.csv"),
        1243,
        399,
    );
}

#[test]
#[ignore = "needs the complete label files: make test-real"]
fn rsna_reader_counts_the_full_real_file() {
    check_rsna(&real("stage_2_train_labels.csv"), 26_684, 6_012);
}

/// A CheXpert file with a column renamed names the file, the column, the format and the
/// columns it found.
#[test]
fn a_label_file_of_the_wrong_format_names_the_missing_column() {
    let t = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(formats("chexpert/train_first1500.csv")).unwrap();
    std::fs::write(
        t.path().join("train.csv"),
        text.replacen("Frontal/Lateral", "View", 1),
    )
    .unwrap();
    let e = sources::read(&cfg(Dataset::Chexpert, t.path()), false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("train.csv") && e.contains("`Frontal/Lateral`") && e.contains("chexpert"),
        "{e}"
    );
    assert!(e.contains("Path, Sex, Age, View, AP/PA"), "{e}");
}

/// MIMIC-CXR-JPG from the documented format: per-study labels shared by the study's
/// images, the official split, the path rule and a study without labels left out.
#[test]
fn mimic_reader_follows_the_documented_format() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::write(r.join("mimic-cxr-2.0.0-metadata.csv"), "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning\nd1,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,21800506,213014.531,CHEST (PA AND LAT),postero-anterior,Erect\nd2,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544,21800506,213014.531,CHEST (PA AND LAT),lateral,Erect\nd3,10000764,57375967,CHEST (PORTABLE AP),AP,2705,2539,21321015,144950.0,CHEST (PORTABLE AP),antero-posterior,Erect\nd4,10000898,59000000,CHEST,,2705,2539,21321015,144950.0,CHEST,,\n").unwrap();
    let obs = "Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices";
    std::fs::write(r.join("mimic-cxr-2.0.0-chexpert.csv"), format!("subject_id,study_id,{obs}\n10000032,50414267,,,,,,,,,1.0,,,,,\n10000764,57375967,-1.0,,1.0,,,,,1.0,,0.0,,-1.0,,\n")).unwrap();
    std::fs::write(r.join("mimic-cxr-2.0.0-split.csv"), "dicom_id,study_id,subject_id,split\nd1,50414267,10000032,train\nd2,50414267,10000032,train\nd3,57375967,10000764,test\nd4,59000000,10000898,validate\n").unwrap();
    let mut d = cfg(Dataset::MimicCxr, r);
    d.protocol = SplitProtocol::Official;
    d.uncertain = Some(UncertainPolicy::Ignore);
    let tab = sources::read(&d, false).unwrap();
    assert_eq!(
        strs(&tab, "image_id"),
        [Some("d1".into()), Some("d2".into()), Some("d3".into())]
    );
    assert_eq!(
        strs(&tab, "split"),
        [
            Some("train".into()),
            Some("train".into()),
            Some("test".into())
        ]
    );
    assert_eq!(strs(&tab, "view")[1].as_deref(), Some("LATERAL"));
    let path = strs(&tab, "path")[2].clone().unwrap();
    assert!(
        path.ends_with("files/p10/p10000764/s57375967/d3.jpg"),
        "{path}"
    );
    // d3's study: Atelectasis uncertain (ignored: missing), Consolidation 1, Lung Opacity
    // 1, Pleural Effusion (Effusion) 0, Pneumonia uncertain; blanks negative.
    let col = |c: &str| column_counts(&tab, c);
    assert_eq!(col("Atelectasis"), [0, 2, 1]);
    assert_eq!(col("Consolidation"), [1, 2, 0]);
    assert_eq!(col("Effusion"), [0, 3, 0]);
    assert_eq!(col("Pneumonia"), [0, 2, 1]);
    // Study 2's Lung Opacity is 1; study 1's only 1.0 is under No Finding, not a concept.
    assert_eq!(col("Lung Opacity"), [1, 2, 0]);
    assert_eq!(uncertain_count(&tab, "Pneumonia"), 1);
    assert!(tab
        .audit
        .dropped
        .contains(&("studies_without_labels".into(), 1)));
}

/// PadChest from the documented format: columns by name among others, the Python-list
/// labels with stray spaces and empty strings, an unknown term counted, physician rows as
/// test, a test patient's report-model rows left out, ages from study date and birth year.
#[test]
fn padchest_reader_follows_the_documented_format() {
    let t = tempfile::tempdir().unwrap();
    let head = "ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,ViewPosition_DICOM,Projection,MethodProjection,Labels,Localizations,LabelsLocalizationsBySentence,labelCUIS,LocalizationsCUIS,MethodLabel";
    let rows = [
        "a.png,0,20140101,s1,p1,1950,M,POSTEROANTERIOR,PA,Manual review,\"['pleural effusion', 'cardiomegaly']\",[],[],[],[],Physician",
        "b.png,0,20150101,s2,p1,1950,M,,L,Manual review,\"['normal']\",[],[],[],[],RNN_model",
        "c.png,1,20100615,s3,p2,1980,F,,AP_horizontal,Manual review,\"[' atelectasis ', '', 'cardiomegally']\",[],[],[],[],RNN_model",
        "d.png,1,20100615,s4,p3,1990,F,,PA,Manual review,\"[]\",[],[],[],[],RNN_model",
        "e.png,2,20120101,s5,p4,1960,F,,PA,Manual review,\"['hiatal hernia']\",[],[],[],[],RNN_model",
    ];
    std::fs::write(
        t.path()
            .join("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"),
        format!("{head}\n{}\n", rows.join("\n")),
    )
    .unwrap();
    let mut d = cfg(Dataset::Padchest, t.path());
    d.protocol = SplitProtocol::Official;
    d.val_fraction = 0.5;
    let tab = sources::read(&d, false).unwrap();
    assert_eq!(
        strs(&tab, "image_id"),
        [
            Some("a.png".into()),
            Some("c.png".into()),
            Some("e.png".into())
        ]
    );
    assert_eq!(strs(&tab, "split")[0].as_deref(), Some("test"));
    assert_eq!(column_counts(&tab, "Effusion"), [1, 2, 0]);
    assert_eq!(column_counts(&tab, "Atelectasis"), [1, 2, 0]);
    assert_eq!(column_counts(&tab, "Hernia"), [1, 2, 0]);
    assert_eq!(tab.audit.unmapped_labels.get("cardiomegally"), Some(&1));
    assert!(tab.audit.dropped.contains(&("empty_labels".into(), 1)));
    assert!(tab
        .audit
        .dropped
        .contains(&("report_model_rows_of_physician_patients".into(), 1)));
    let ages: Vec<Option<f64>> = tab
        .all
        .column("age")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(ages, [Some(64.0), Some(30.0), Some(52.0)]);
    assert!(strs(&tab, "path")[1].clone().unwrap().ends_with("1/c.png"));
}

/// `muxmed synth --format chexpert` through the CheXpert reader end to end: every listed
/// JPEG exists and decodes, valid.csv is the test split, and the counts of one label agree
/// with a count of the written CSVs' cells made here.
#[test]
fn chexpert_reader_reads_the_synthetic_chexpert_set() {
    use muxmed::data::synth::SynthOptions;
    use muxmed::data::synth_formats::{self, SynthFormat};
    let t = tempfile::tempdir().unwrap();
    let o = SynthOptions {
        images: 120,
        patients: None,
        size: 48,
        seed: 3,
        test_fraction: 0.2,
        overwrite: false,
    };
    synth_formats::write(t.path(), &o, SynthFormat::Chexpert).unwrap();
    let mut d = cfg(Dataset::Chexpert, t.path());
    d.protocol = SplitProtocol::Official;
    d.uncertain = Some(UncertainPolicy::Ignore);
    d.blank = Some(BlankPolicy::Missing);
    let m = manifest::build(&d, true).unwrap();
    // Cells of "Pleural Effusion" (the Effusion concept) in both files.
    let mut want = [0usize; 4];
    let mut test_rows = 0;
    for name in ["train.csv", "valid.csv"] {
        let text = std::fs::read_to_string(t.path().join(name)).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = header
            .iter()
            .position(|h| *h == "Pleural Effusion")
            .unwrap();
        for l in lines {
            let cell = l.split(',').nth(col).unwrap();
            let k = match cell {
                "1.0" => 0,
                "0.0" => 1,
                "-1.0" => 2,
                "" => 3,
                other => panic!("unexpected cell {other}"),
            };
            want[k] += 1;
            if name == "valid.csv" {
                test_rows += 1;
                assert!(k < 2, "valid.csv has only 1.0 and 0.0");
            }
        }
    }
    assert_eq!(summary_counts(&m, "Effusion"), want);
    assert_eq!(m.frames["test"].height(), test_rows);
    assert_eq!(m.info.audit.images, 120);
    let paths = m.frames["train"]
        .column("path")
        .unwrap()
        .str()
        .unwrap()
        .clone();
    for p in paths.iter().take(5) {
        let img = image::open(p.unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (48, 48));
    }
}

/// Cells of `column` in a CSV written by `synth` (plain commas, no quoting), counted here
/// as [`1.0`, `0.0`, `-1.0`, blank].
fn csv_cells(file: &Path, column: &str) -> [usize; 4] {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == column).unwrap();
    let mut out = [0; 4];
    for l in lines {
        let k = match l.split(',').nth(col).unwrap() {
            "1.0" => 0,
            "0.0" => 1,
            "-1.0" => 2,
            _ => 3,
        };
        out[k] += 1;
    }
    out
}

/// `data.sources` stacks an NIH-format and a CheXpert-format synthetic set: patients are
/// namespaced, every image keeps its dataset, labels are the union of concepts, and a
/// concept one source does not annotate is missing (not negative) for its images. Expected
/// counts come from the written files (NIH's `Finding Labels` strings, CheXpert's cells).
#[test]
fn several_sources_stack_into_one_manifest() {
    use muxmed::config::SourceEntry;
    use muxmed::data::synth::SynthOptions;
    use muxmed::data::synth_formats::{self, SynthFormat};
    let o = |images, seed| SynthOptions {
        images,
        patients: None,
        size: 32,
        seed,
        test_fraction: 0.2,
        overwrite: false,
    };
    let (nih, chx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    synth_formats::write(nih.path(), &o(90, 1), SynthFormat::Nih).unwrap();
    synth_formats::write(chx.path(), &o(60, 2), SynthFormat::Chexpert).unwrap();
    let entry = |source, root: &Path| SourceEntry {
        source: Some(source),
        root: root.to_path_buf(),
        ..Default::default()
    };
    let mut d = DataConfig {
        protocol: SplitProtocol::Official,
        sources: vec![entry(Dataset::Nih, nih.path()), {
            let mut e = entry(Dataset::Chexpert, chx.path());
            e.uncertain = Some(UncertainPolicy::Ignore);
            e.blank = Some(BlankPolicy::Missing);
            e
        }],
        ..Default::default()
    };
    d.check().unwrap();
    let m = manifest::build(&d, true).unwrap();
    assert_eq!(m.info.audit.images, 150);
    assert_eq!(m.info.protocol, "multi_source");
    let mut datasets = std::collections::BTreeMap::new();
    for f in m.frames.values() {
        let ds = f.column("dataset").unwrap().str().unwrap().clone();
        let pats = f.column("patient_id").unwrap().str().unwrap().clone();
        for (d, p) in ds.iter().zip(pats.iter()) {
            let (d, p) = (d.unwrap(), p.unwrap());
            assert!(p.starts_with(&format!("{d}:")), "{p} is namespaced by {d}");
            *datasets.entry(d.to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(
        datasets,
        [("chexpert".into(), 60), ("nih".into(), 90)].into()
    );
    // NIH's 14 labels first, then CheXpert's concepts NIH does not have.
    assert_eq!(
        m.info.labels[..14],
        muxmed::labels::LABELS.map(String::from)
    );
    for l in ["Lung Opacity", "Support Devices", "Fracture"] {
        assert!(m.info.labels.iter().any(|x| x == l), "{l} in the union");
    }
    // Infiltration: NIH only, so missing for all 60 CheXpert images.
    let nih_csv = std::fs::read_to_string(nih.path().join("Data_Entry_2017_v2020.csv")).unwrap();
    let has = |l: &str| {
        nih_csv
            .lines()
            .skip(1)
            .filter(|r| r.split(',').nth(1).unwrap().split('|').any(|x| x == l))
            .count()
    };
    let inf = has("Infiltration");
    assert_eq!(summary_counts(&m, "Infiltration"), [inf, 90 - inf, 0, 60]);
    // Effusion: NIH's positives and CheXpert's "Pleural Effusion" cells together.
    let mut c = csv_cells(&chx.path().join("train.csv"), "Pleural Effusion");
    let v = csv_cells(&chx.path().join("valid.csv"), "Pleural Effusion");
    for k in 0..4 {
        c[k] += v[k];
    }
    let eff = has("Effusion");
    assert_eq!(
        summary_counts(&m, "Effusion"),
        [eff + c[0], 90 - eff + c[1], c[2], c[3]]
    );
    // Fracture: CheXpert only; NIH's 90 images are missing on top of CheXpert's blanks.
    let mut f = csv_cells(&chx.path().join("train.csv"), "Fracture");
    let v = csv_cells(&chx.path().join("valid.csv"), "Fracture");
    for k in 0..4 {
        f[k] += v[k];
    }
    assert_eq!(
        summary_counts(&m, "Fracture"),
        [f[0], f[1], f[2], f[3] + 90]
    );

    // One dataset listed twice shares its patients across entries: a leakage error.
    d.sources = vec![
        entry(Dataset::Nih, nih.path()),
        entry(Dataset::Nih, nih.path()),
    ];
    let e = manifest::build(&d, false).err().unwrap().to_string();
    assert!(
        e.contains("leakage") && e.contains("data.sources[1]"),
        "{e}"
    );
    // Names tag the images; a name used twice and a weight that is not positive are
    // refused, naming the entry's key.
    let mut named = entry(Dataset::Nih, nih.path());
    named.name = Some("hospital_a".into());
    d.sources = vec![named.clone()];
    let m = manifest::build(&d, false).unwrap();
    let pats = m.frames["test"]
        .column("patient_id")
        .unwrap()
        .str()
        .unwrap()
        .clone();
    assert!(pats.iter().all(|p| p.unwrap().starts_with("hospital_a:")));
    d.sources = vec![named.clone(), named.clone()];
    assert_eq!(d.check().unwrap_err().0, "data.sources[1].name");
    named.weight = Some(0.0);
    d.sources = vec![named];
    assert_eq!(d.check().unwrap_err().0, "data.sources[0].weight");
    // A dataset other than NIH's left at NIH's default folder is refused, naming data.root.
    let bare = DataConfig {
        source: Some(Dataset::Chexpert),
        ..Default::default()
    };
    let (key, why) = bare.check().unwrap_err();
    assert_eq!(key, "data.root", "{why}");
    // A per-entry key given at the top is refused, naming it.
    d.source = Some(Dataset::Chexpert);
    let (key, _) = d.check().unwrap_err();
    assert_eq!(key, "data.source");
}

fn synth_into(format: muxmed::data::synth_formats::SynthFormat) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let o = muxmed::data::synth::SynthOptions {
        images: 150,
        patients: None,
        size: 48,
        seed: 5,
        test_fraction: 0.25,
        overwrite: false,
    };
    muxmed::data::synth_formats::write(t.path(), &o, format).unwrap();
    t
}

/// Every path of the manifest decodes (PNG 16-bit or DICOM, MONOCHROME1 included) at the
/// written size.
fn all_decode(m: &manifest::Manifest, side: u32) {
    for f in m.frames.values() {
        let paths = f.column("path").unwrap().str().unwrap().clone();
        for p in paths.iter() {
            let g = muxmed::data::image::decode_file(Path::new(p.unwrap())).unwrap();
            assert_eq!((g.width, g.height), (side, side), "{}", p.unwrap());
        }
    }
}

/// `synth --format padchest` through the PadChest reader: the physician-labelled rows are the
/// test split, and Effusion's positives are the rows whose `Labels` cell holds
/// `'pleural effusion'`, counted here on the raw text.
#[test]
fn padchest_reader_reads_the_synthetic_padchest_set() {
    use muxmed::data::synth_formats::SynthFormat;
    let t = synth_into(SynthFormat::Padchest);
    let text = std::fs::read_to_string(
        t.path()
            .join("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"),
    )
    .unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    let effusion = rows
        .iter()
        .filter(|l| l.contains("'pleural effusion'"))
        .count();
    let physician = rows.iter().filter(|l| l.contains(",Physician,")).count();
    let mut d = cfg(Dataset::Padchest, t.path());
    d.protocol = SplitProtocol::Official;
    let m = manifest::build(&d, true).unwrap();
    assert_eq!(m.info.audit.images, rows.len());
    assert_eq!(m.frames["test"].height(), physician);
    let s = summary_counts(&m, "Effusion");
    assert_eq!((s[0], s[0] + s[1]), (effusion, rows.len()));
    all_decode(&m, 48);
}

/// `synth --format vindr_cxr` through the VinDr reader under both reader policies, against
/// a count made here of the readers marking `Pleural effusion` per image.
#[test]
fn vindr_reader_reads_the_synthetic_vindr_set() {
    use muxmed::data::synth_formats::SynthFormat;
    use std::collections::{BTreeMap, BTreeSet};
    let t = synth_into(SynthFormat::VindrCxr);
    let text = std::fs::read_to_string(t.path().join("train.csv")).unwrap();
    let mut readers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut marks: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        readers.entry(f[0]).or_default().insert(f[3]);
        if f[1] == "Pleural effusion" {
            marks.entry(f[0]).or_default().insert(f[3]);
        }
    }
    assert!(readers.values().all(|r| r.len() == 3));
    let majority = marks.values().filter(|m| m.len() >= 2).count();
    let mut d = cfg(Dataset::VindrCxr, t.path());
    for (policy, want) in [
        (ReaderPolicy::Majority, majority),
        (ReaderPolicy::Any, marks.len()),
    ] {
        d.readers = Some(policy);
        let m = manifest::build(&d, true).unwrap();
        assert_eq!(m.info.audit.images, readers.len());
        assert_eq!(summary_counts(&m, "Effusion")[0], want, "{policy:?}");
    }
    assert!(marks.len() > majority, "readers disagree somewhere");
    all_decode(&manifest::build(&d, true).unwrap(), 48);
}

/// `synth --format rsna_pneumonia` through the RSNA reader: one image per patientId, and
/// Pneumonia's positives are the ids with Target 1, counted here.
#[test]
fn rsna_reader_reads_the_synthetic_rsna_set() {
    use muxmed::data::synth_formats::SynthFormat;
    use std::collections::BTreeMap;
    let t = synth_into(SynthFormat::RsnaPneumonia);
    let text = std::fs::read_to_string(t.path().join("stage_2_train_labels.csv")).unwrap();
    let mut target: BTreeMap<&str, &str> = BTreeMap::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        target.insert(f[0], f[5]);
    }
    let positive = target.values().filter(|t| **t == "1").count();
    let m = manifest::build(&cfg(Dataset::RsnaPneumonia, t.path()), true).unwrap();
    assert_eq!(m.info.audit.images, target.len());
    assert_eq!(summary_counts(&m, "Pneumonia")[0], positive);
    assert!(positive > 10, "{positive} positives");
    all_decode(&m, 48);
}

/// The box readers on the real first 1,500 rows. Expected values from Python's csv module:
/// VinDr `b = [x for x in r if x['class_name'] != 'No finding']`: 799 boxes, 58 of them
/// `Pleural effusion`, summed area `sum((x_max - x_min) * (y_max - y_min))` 174,418,429;
/// RSNA `[x for x in r if x['Target'] == '1']`: 656 boxes, summed `width * height`
/// 61,217,744; its first box 264, 152, 213 x 379.
#[test]
fn box_readers_read_the_real_vindr_and_rsna_rows() {
    use muxmed::data::boxes::{read, BoxFormat};
    let area = |b: &[muxmed::data::boxes::GroundBox]| b.iter().map(|b| b.w * b.h).sum::<f64>();
    let v = read(BoxFormat::Vindr, &formats("vindr_cxr/train_first1500.csv")).unwrap();
    assert_eq!(v.len(), 799);
    assert_eq!(v.iter().filter(|b| b.concept == "Effusion").count(), 58);
    assert_eq!(area(&v), 174_418_429.0);
    let r = read(
        BoxFormat::Rsna,
        &formats("rsna_pneumonia/stage_2_train_labels_first1500.csv"),
    )
    .unwrap();
    assert_eq!(r.len(), 656);
    assert!(r.iter().all(|b| b.concept == "Pneumonia"));
    assert_eq!(area(&r), 61_217_744.0);
    assert_eq!(
        (r[0].image_id.as_str(), r[0].x, r[0].y, r[0].w, r[0].h),
        (
            "00436515-870c-4b36-a041-de91049b9ab4",
            264.0,
            152.0,
            213.0,
            379.0
        )
    );
}
