//! `muxmed explain` and `localize` on a trained run.

use std::path::Path;

use muxmed::labels::Split;
use muxmed::run::{Checkpoint, RunDir};

use super::support::World;

/// `localize` on a small synthetic run: every test-image box is scored once per source, a
/// box on a training image is ignored and counted, and `explain` writes its pictures and an
/// original-size map.
pub fn localize_and_explain(w: &World, run: &RunDir) {
    use muxmed::explain::localize::{localize, LocalizeArgs};
    use muxmed::run::MapSource;
    let synth = w.root.join("synth");
    let text = std::fs::read_to_string(synth.join("BBox_List_2017.csv")).unwrap();
    let test: std::collections::HashSet<String> =
        std::fs::read_to_string(synth.join("test_list.txt"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert!(rows.len() >= 2, "{} boxes", rows.len());
    assert!(rows
        .iter()
        .all(|r| test.contains(r.split(',').next().unwrap())));
    // One more box, on an image outside the test split.
    let train_img = std::fs::read_to_string(synth.join("train_val_list.txt"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let boxes = w.root.join("boxes.csv");
    std::fs::write(&boxes, format!("{text}{train_img},Mass,1,1,10,10\n")).unwrap();
    let o = localize(&LocalizeArgs {
        run: run.root(),
        split: Split::Test,
        checkpoint: Checkpoint::Best,
        boxes: Some(&boxes),
        on: None,
        threshold: 0.5,
        seed: 0,
        device: Some("cpu"),
    })
    .unwrap();
    // An explicit --boxes file has no recorded hash to compare with.
    assert!(o.notice.is_none());
    let l = &o.localization;
    assert_eq!(l.boxes, rows.len());
    assert_eq!(l.boxes_outside_split, 1);
    let images: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.split(',').next().unwrap()).collect();
    assert_eq!(l.images, images.len());
    assert_eq!(l.sources.len(), 3);
    for s in &l.sources {
        assert_eq!(s.overall.boxes, rows.len());
        assert_eq!(
            s.per_finding
                .iter()
                .map(|f| f.accuracy.boxes)
                .sum::<usize>(),
            rows.len()
        );
        for v in s
            .overall
            .iobb
            .iter()
            .chain(&s.overall.iou)
            .chain([&s.overall.pointing])
        {
            assert!((0.0..=1.0).contains(v), "{v}");
        }
        // More boxes pass a lower threshold.
        assert!(s.overall.iobb.windows(2).all(|p| p[0] >= p[1]));
    }
    // The centre prior peaks on the four middle pixels of these 64x64 images (identity
    // geometry); the first of them in raster order, (31, 31), is its maximum: its pointing
    // accuracy is the share of boxes containing that pixel's centre.
    let centre = rows
        .iter()
        .filter(|r| {
            let v: Vec<f64> = r.split(',').skip(2).map(|x| x.parse().unwrap()).collect();
            v[0] <= 31.5 && 31.5 < v[0] + v[2] && v[1] <= 31.5 && 31.5 < v[1] + v[3]
        })
        .count() as f64
        / rows.len() as f64;
    let cp = l.source(MapSource::CentrePrior).unwrap();
    assert!(
        (cp.overall.pointing - centre).abs() < 1e-12,
        "{} vs {centre}",
        cp.overall.pointing
    );
    let back: muxmed::run::Localization =
        serde_json::from_str(&std::fs::read_to_string(&o.json).unwrap()).unwrap();
    assert_eq!(&back, l);
    let csv = std::fs::read_to_string(&o.csv).unwrap();
    assert!(csv.starts_with("source,finding,metric,threshold,boxes,accuracy\n"));
    assert!(csv.contains(&format!("model,all,pointing,,{},", rows.len())));
    for f in &o.figures {
        assert!(
            std::fs::metadata(f).unwrap().len() > 1000,
            "{}",
            f.display()
        );
    }
    // The manifest's own box list: as recorded, no notice; edited since, a notice.
    let from_manifest = || {
        localize(&LocalizeArgs {
            run: run.root(),
            split: Split::Test,
            checkpoint: Checkpoint::Best,
            boxes: None,
            on: None,
            threshold: 0.5,
            seed: 0,
            device: Some("cpu"),
        })
        .unwrap()
    };
    let m = from_manifest();
    assert!(m.notice.is_none());
    assert_eq!(
        (m.localization.boxes, m.localization.boxes_outside_split),
        (rows.len(), 0)
    );
    std::fs::write(
        synth.join("BBox_List_2017.csv"),
        std::fs::read(&boxes).unwrap(),
    )
    .unwrap();
    let m = from_manifest();
    assert!(m
        .notice
        .unwrap()
        .contains("has changed since the run's manifest was built"));
    assert_eq!(m.localization.boxes_outside_split, 1);
    // A box reaching beyond its 64x64 image (NIH's 1024-pixel coordinates, say) is refused by
    // its line, never scored.
    let first_test = rows[0].split(',').next().unwrap();
    let far = w.root.join("far.csv");
    std::fs::write(&far, format!("{text}{first_test},Mass,604,460,80,80\n")).unwrap();
    let e = localize(&LocalizeArgs {
        run: run.root(),
        split: Split::Test,
        checkpoint: Checkpoint::Best,
        boxes: Some(&far),
        on: None,
        threshold: 0.5,
        seed: 0,
        device: Some("cpu"),
    })
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    let line = text.lines().count() + 1;
    assert!(
        e.contains(&format!("line {line}:")) && e.contains("beyond its 64x64 image"),
        "{e}"
    );
    // explain: two labels of one test image, and an unknown label refused by name.
    use muxmed::explain::heatmaps::{explain, Choice, ExplainArgs};
    let img = synth
        .read_dir()
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path().join("images")).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| test.contains(p.file_name().unwrap().to_str().unwrap()))
        .unwrap();
    let out = w.root.join("explain");
    let e = explain(&ExplainArgs {
        checkpoint: &run.root().join("best.safetensors"),
        images: std::slice::from_ref(&img),
        choice: Choice::Labels(vec!["Mass".into(), "Effusion".into()]),
        out: &out,
        device: Some("cpu"),
    })
    .unwrap();
    assert_eq!(e.explained.len(), 2);
    let pic = image::open(&e.explained[0].picture).unwrap();
    assert!(pic.width() > 64 && pic.height() > 64);
    let npy = std::fs::read(&e.explained[0].map).unwrap();
    assert!(npy.starts_with(b"\x93NUMPY"));
    // The header is padded to 64 bytes; then 64 x 64 f32 (the synthetic images' size).
    assert_eq!(npy.len(), 128 + 64 * 64 * 4);
    // Two inputs sharing a stem (a PNG and a JPEG of it) get pictures and maps of their own.
    let jpg = w.root.join(img.file_stem().unwrap()).with_extension("jpg");
    image::open(&img).unwrap().to_luma8().save(&jpg).unwrap();
    let e = explain(&ExplainArgs {
        checkpoint: &run.root().join("best.safetensors"),
        images: &[img.clone(), jpg.clone()],
        choice: Choice::Labels(vec!["Mass".into()]),
        out: &out,
        device: Some("cpu"),
    })
    .unwrap();
    let pictures: std::collections::HashSet<&str> =
        e.explained.iter().map(|x| x.picture.as_str()).collect();
    let maps: std::collections::HashSet<&str> =
        e.explained.iter().map(|x| x.map.as_str()).collect();
    assert_eq!((e.explained.len(), pictures.len(), maps.len()), (2, 2, 2));
    assert!(pictures.iter().all(|p| Path::new(p).is_file()));
    let err = explain(&ExplainArgs {
        checkpoint: &run.root().join("best.safetensors"),
        images: std::slice::from_ref(&img),
        choice: Choice::Labels(vec!["Nodle".into()]),
        out: &out,
        device: Some("cpu"),
    })
    .unwrap_err();
    assert!(err.to_string().contains("`Nodle` is not a label"), "{err}");
}
