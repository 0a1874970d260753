//! The built-in synthetic dataset: NIH's format, the real file's statistics, deterministic.

use std::path::{Path, PathBuf};

use muxmed::config::DataConfig;
use muxmed::data::manifest::build;
use muxmed::data::synth::{metadata, write, SynthOptions};
use muxmed::labels::LABELS;
use polars::prelude::ChunkAgg;

fn opts(images: usize, seed: u64) -> SynthOptions {
    SynthOptions {
        images,
        patients: None,
        size: 64,
        seed,
        test_fraction: 0.2,
        overwrite: false,
    }
}

#[test]
fn synthetic_dataset_passes_the_manifest_audit_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("synth");
    let recs = write(&root, &opts(400, 3)).unwrap();
    let header = std::fs::read_to_string(root.join("Data_Entry_2017_v2020.csv")).unwrap();
    assert!(header.starts_with(muxmed::data::nih::METADATA_HEADER));
    let d = DataConfig {
        root: root.clone(),
        ..Default::default()
    };
    // The same audit as the real file: patient-disjoint lists, known labels, images present.
    let m = build(&d, true).unwrap();
    assert_eq!(m.info.audit.images, 400);
    assert_eq!(m.info.audit.missing_images, 0);
    assert_eq!(m.info.audit.shared_patients_between_splits, 0);
    assert!(m.info.synthetic);
    // Boxes use the real file's `Infiltrate` spelling and land on test images.
    let bb = std::fs::read_to_string(root.join("BBox_List_2017.csv")).unwrap();
    assert!(bb.starts_with("Image Index,Finding Label,Bbox [x,y,w,h],,,"));
    let boxed: u32 = m.frames["test"]
        .column("n_boxes")
        .unwrap()
        .u32()
        .unwrap()
        .sum()
        .unwrap();
    assert_eq!(boxed as usize, bb.lines().count() - 1);
    // Three image folders in the images_00N/images layout, some RGBA, all decodable.
    for k in 1..=3 {
        assert!(root.join(format!("images_{k:03}/images")).is_dir());
    }
    let mut rgba = 0;
    let found = muxmed::data::nih::scan_images(&root).unwrap();
    for r in &recs {
        let p = found[&r.image_id].clone();
        let raw = image::open(&p).unwrap();
        if raw.color() == image::ColorType::Rgba8 {
            rgba += 1;
        }
        let g = muxmed::data::image::decode_file(&p).unwrap();
        assert_eq!((g.width, g.height), (64, 64));
    }
    assert!(rgba >= 1, "expected a few RGBA images");
}

/// A header-only metadata file gives a manifest without images: `manifest` refuses it and
/// the good manifest already in the folder stays as it was.
#[test]
fn an_empty_split_is_an_error_and_replaces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("synth");
    write(&root, &opts(60, 3)).unwrap();
    let d = DataConfig {
        root: root.clone(),
        allow_missing_images: true,
        ..Default::default()
    };
    let out = dir.path().join("manifests/x");
    build(&d, true).unwrap().write(&out).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = walk(&out)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let meta = root.join("Data_Entry_2017_v2020.csv");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, format!("{}\n", text.lines().next().unwrap())).unwrap();
    let e = match build(&d, true) {
        Ok(mut m) => m.write(&out).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("every split would be empty"), "{e}");
    for (p, b) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} changed", p.display());
    }
}

#[test]
fn label_prevalence_follows_the_real_file() {
    // Real prevalence computed here from the real metadata (not from the generator's table).
    let real = muxmed::data::nih::parse_metadata(
        &muxmed::data::nih::read_text(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/data/nih/Data_Entry_2017_v2020.csv.gz"),
        )
        .unwrap(),
        &PathBuf::from("real"),
    )
    .unwrap();
    let n_real = real.len() as f64;
    let recs = metadata(&opts(30_000, 11)).unwrap();
    let n = recs.len() as f64;
    // Stated tolerance: within 0.01 absolute and 25% relative for every label (sampling error
    // at 30,000 images is about 0.002 for the common labels).
    for (k, l) in LABELS.iter().enumerate() {
        let r = real.iter().filter(|x| x.labels.contains(&k)).count() as f64 / n_real;
        let s = recs.iter().filter(|x| x.labels.contains(&k)).count() as f64 / n;
        assert!(
            (s - r).abs() < 0.01 && (s - r).abs() <= 0.25 * r + 0.002,
            "{l}: synthetic {s:.4} vs real {r:.4}"
        );
    }
    let nf_real = real.iter().filter(|x| x.labels.is_empty()).count() as f64 / n_real;
    let nf = recs.iter().filter(|x| x.labels.is_empty()).count() as f64 / n;
    assert!((nf - nf_real).abs() < 0.01, "No Finding {nf} vs {nf_real}");
    // Several follow-ups per patient, as in the real file (3.64 images per patient).
    let patients = recs.iter().map(|r| r.patient).max().unwrap() as f64;
    assert!((n / patients - 3.64).abs() < 0.2);
}

#[test]
fn a_fixed_seed_gives_byte_identical_output() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write(&a, &opts(60, 5)).unwrap();
    write(&b, &opts(60, 5)).unwrap();
    let files = |root: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walk(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect();
        v.sort();
        v
    };
    let fa = files(&a);
    assert_eq!(fa, files(&b));
    assert!(fa.len() > 60);
    for f in &fa {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{}",
            f.display()
        );
    }
    let c = dir.path().join("c");
    write(&c, &opts(60, 6)).unwrap();
    assert_ne!(
        std::fs::read(a.join("Data_Entry_2017_v2020.csv")).unwrap(),
        std::fs::read(c.join("Data_Entry_2017_v2020.csv")).unwrap()
    );
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out
}

#[test]
fn synth_refuses_to_write_over_a_folder_that_is_not_synthetic() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("nih");
    std::fs::create_dir_all(&real).unwrap();
    let meta = real.join("Data_Entry_2017_v2020.csv");
    std::fs::write(&meta, "real metadata\n").unwrap();
    let err = write(&real, &opts(20, 0)).unwrap_err().to_string();
    assert!(
        err.contains("SYNTHETIC.txt") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&meta).unwrap(), "real metadata\n");
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 1);
    // A synthetic set is rewritten; --overwrite writes over anything.
    let synth = dir.path().join("synth");
    write(&synth, &opts(20, 0)).unwrap();
    write(&synth, &opts(20, 1)).unwrap();
    write(
        &real,
        &SynthOptions {
            overwrite: true,
            ..opts(20, 0)
        },
    )
    .unwrap();
    assert!(real.join("SYNTHETIC.txt").is_file());
}

/// A box is where its lesion was drawn: the same record rendered with and without the
/// finding differs (beyond zero-mean noise) inside the box and not outside it.
#[test]
fn boxes_are_the_drawn_lesions_extent() {
    use muxmed::data::synth::{render, SynthRecord};
    let size = 256usize;
    for (k, name) in LABELS.iter().enumerate().take(8) {
        let mut checked = 0;
        for patient in 1..4u32 {
            let r = SynthRecord {
                image_id: format!("{patient:08}_000.png"),
                patient,
                follow_up: 0,
                labels: vec![k],
                age: 50,
                male: true,
                pa: true,
                size: (2500, 2048),
                spacing: 0.143,
                test: true,
            };
            let (with, lesions) = render(&r, size as u32, 7);
            let (without, none) = render(
                &SynthRecord {
                    labels: vec![],
                    ..r.clone()
                },
                size as u32,
                7,
            );
            assert!(none.is_empty());
            assert_eq!(lesions.len(), 1, "{name}");
            assert_eq!(lesions[0].label, k);
            let [x0, y0, x1, y1] = lesions[0].extent.map(|v| v * size as f32);
            assert!(
                x0 < x1 && y0 < y1 && x0 >= 0.0 && y1 <= size as f32,
                "{name}: {:?}",
                lesions[0]
            );
            let (mut inside, mut n_in, mut outside, mut n_out) = (0f64, 0, 0f64, 0);
            for (i, (a, b)) in with.iter().zip(&without).enumerate() {
                let (x, y) = ((i % size) as f32 + 0.5, (i / size) as f32 + 0.5);
                let d = (a - b) as f64;
                if x >= x0 && x < x1 && y >= y0 && y < y1 {
                    inside += d;
                    n_in += 1;
                } else {
                    outside += d;
                    n_out += 1;
                }
            }
            let (inside, outside) = (inside / n_in as f64, outside / n_out as f64);
            // Pneumothorax darkens, every other finding brightens; both far above the
            // noise's mean over the box (noise std <= 0.04 per pixel, both images).
            let signal = if *name == "Pneumothorax" {
                -inside
            } else {
                inside
            };
            assert!(
                signal > 0.004,
                "{name} patient {patient}: inside mean {inside}"
            );
            assert!(
                signal > 8.0 * outside.abs(),
                "{name} patient {patient}: inside {inside}, outside {outside}"
            );
            checked += 1;
        }
        assert_eq!(checked, 3);
    }
}
