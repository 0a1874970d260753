//! `muxmed evaluate`, `report` and `predict` on a trained run: skipped images, every
//! evaluation key, the run's own splits.

use std::path::{Path, PathBuf};

use muxmed::config;
use muxmed::labels::Split;
use muxmed::run::{Checkpoint, Status};
use muxmed::train::train;

use super::explain::localize_and_explain;
use super::export::export_round_trip;
use super::support::{
    argmax_epoch, args, aurocs, key, no_stop, resume_args, torch_lock, world, world_with,
};
use crate::bin::muxmed;
use crate::tolerance;

/// `augment.skip_bad_images: true`: prepare skips a truncated train PNG and a truncated test
/// PNG; train, evaluate, localize and the report go on without them, and run.json, train.log
/// and the report name both.
#[test]
fn images_prepare_skipped_are_left_out_of_the_run_and_named() {
    let _torch = torch_lock();
    use muxmed::data::dataset::load_split;
    let first_of = |m: &Path, s: Split| {
        let d = load_split(m, s).unwrap();
        (d.image_ids[0].clone(), d.paths[0].clone().unwrap())
    };
    let truncate = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        std::fs::write(p, &b[..b.len() / 3]).unwrap();
    };
    let skip = ["augment.skip_bad_images=true"];
    let w = world_with(120, "", &skip, |m| {
        truncate(&first_of(m, Split::Train).1);
        truncate(&first_of(m, Split::Test).1);
    });
    let mdir = w.root.join("data_manifests/tiny");
    let (bad_train, _) = first_of(&mdir, Split::Train);
    let (bad_test, _) = first_of(&mdir, Split::Test);
    let out = train(&args(&w, "skip", &[skip[0], "train.epochs=1"]), no_stop()).unwrap();
    assert_eq!(out.state.status, Status::Finished);
    let info = out.run.info().unwrap();
    let names: Vec<&str> = info
        .skipped_images
        .iter()
        .map(|s| s.image_id.as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&bad_train.as_str()) && names.contains(&bad_test.as_str()));
    let all_train = load_split(&mdir, Split::Train).unwrap().len();
    assert_eq!(info.train_images, all_train - 1);
    for s in Split::ALL {
        let ids = out.run.split(s).unwrap().image_ids;
        assert!(!ids.contains(&bad_train) && !ids.contains(&bad_test), "{s}");
    }
    let log = std::fs::read_to_string(out.run.log_file()).unwrap();
    assert!(
        log.contains("left out 2 image(s)") && log.contains(&bad_test),
        "{log}"
    );
    let mdirs = w.root.join("data_manifests");
    let opt = muxmed::eval::scoring::EvalOptions {
        resamples: 20,
        ..Default::default()
    };
    let k = key(Split::Test, Checkpoint::Best, false);
    let r =
        muxmed::eval::run_eval::evaluate_run(out.run.root(), &mdirs, k, &opt, Some("cpu")).unwrap();
    let all_test = load_split(&mdir, Split::Test).unwrap().len();
    assert_eq!(r.evaluation.n_images, all_test - 1);
    // The box benchmark: a box on the skipped test image is outside the run's split, one on
    // a readable test image is scored.
    let header = std::fs::read_to_string(w.root.join("synth/BBox_List_2017.csv")).unwrap();
    let header = header.lines().next().unwrap();
    let good = out.run.split(Split::Test).unwrap().image_ids[0].clone();
    let boxes = w.root.join("skip_boxes.csv");
    std::fs::write(
        &boxes,
        format!("{header}\n{bad_test},Mass,1,1,10,10\n{good},Mass,2,2,20,20\n"),
    )
    .unwrap();
    let l = muxmed::explain::localize::localize(&muxmed::explain::localize::LocalizeArgs {
        run: out.run.root(),
        split: Split::Test,
        checkpoint: Checkpoint::Best,
        boxes: Some(&boxes),
        on: None,
        threshold: 0.5,
        seed: 0,
        device: Some("cpu"),
    })
    .unwrap()
    .localization;
    assert_eq!((l.boxes, l.boxes_outside_split), (1, 1));
    let (html, _) = muxmed::report::report_run(out.run.root(), &mdirs, k).unwrap();
    let md = std::fs::read_to_string(html.with_file_name("report.md")).unwrap();
    assert!(
        md.contains("2 image(s) of the manifest could not be read") && md.contains(&bad_train),
        "{md}"
    );
    // `prepare` counts the images it kept, not the manifest's.
    let o = muxmed()
        .current_dir(&w.root)
        .args(["prepare", "--pipeline"])
        .arg(&w.pipeline)
        .args(["--set", skip[0]])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let all = load_split(&mdir, Split::Train).unwrap().len()
        + load_split(&mdir, Split::Val).unwrap().len()
        + load_split(&mdir, Split::Test).unwrap().len();
    let kept = format!("({} images, 2 skipped as unreadable)", all - 2);
    assert!(
        o.status.success() && stdout.contains(&kept),
        "{kept}\n{stdout}"
    );
    assert_eq!(stdout.matches("skipped: ").count(), 2, "{stdout}");
}

#[test]
fn evaluate_report_and_predict_a_trained_run() {
    let _torch = torch_lock();
    use muxmed::eval::run_eval::{evaluate_run, predict_files, ModelSource};
    use muxmed::eval::scoring::EvalOptions;
    let w = world(160, "");
    let out = train(
        &args(
            &w,
            "ev",
            &["train.epochs=2", "eval.subgroups.min_positives=1"],
        ),
        no_stop(),
    )
    .unwrap();
    let mdirs = w.root.join("data_manifests");
    let opt = EvalOptions {
        resamples: 50,
        ..Default::default()
    };
    let r = evaluate_run(
        out.run.root(),
        &mdirs,
        key(Split::Test, Checkpoint::Best, false),
        &opt,
        Some("cpu"),
    )
    .unwrap();
    assert!(
        r.predictions_csv.ends_with("predictions_test.csv")
            && r.metrics_json.ends_with("metrics_test.json")
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&r.metrics_json).unwrap()).unwrap();
    assert_eq!(m["per_label"].as_array().unwrap().len(), 14);
    assert_eq!(
        m["threshold_source"],
        muxmed::eval::run_eval::VAL_THRESHOLDS
    );
    let csv = std::fs::read_to_string(&r.predictions_csv).unwrap();
    assert!(csv.starts_with("image_id,patient_id,Atelectasis,Cardiomegaly"));
    subgroups_match_the_written_files(&w, &r);
    adjudicated_truth_through_the_run(&w, out.run.root(), &r);
    calibration_keeps_every_auroc(out.run.root(), &r);
    assert_eq!(csv.lines().count(), r.evaluation.n_images + 1);
    // Scoring the written predictions again reproduces the AUROCs.
    let mean = m["mean_auroc"].as_f64().unwrap();
    assert!((mean - r.evaluation.mean_auroc.unwrap()).abs() < 1e-12);
    // `evaluate --predictions` never writes into a run's folder, by default (the CSV's own
    // folder) or by --out: the run's val-thresholded metrics stay as they were.
    let before = std::fs::read(&r.metrics_json).unwrap();
    for out in [None, Some(out.run.root())] {
        let mut c = muxmed();
        c.args(["evaluate", "--predictions"])
            .arg(&r.predictions_csv)
            .arg("--labels")
            .arg(w.root.join("synth/Data_Entry_2017_v2020.csv"));
        if let Some(o) = out {
            c.arg("--out").arg(o);
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("is a training run's folder"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&r.metrics_json).unwrap(), before);
    // The run's own preprocessing: predicting one test image from its file gives the
    // evaluation's probabilities through the cache.
    let test = muxmed::data::dataset::load_split(&mdirs.join("tiny"), Split::Test).unwrap();
    let img = test.paths[0].clone().unwrap();
    let pcsv = w.root.join("p.csv");
    // A corrupt file among good ones: the good ones are scored, the bad one reported.
    let bad = w.root.join("broken.png");
    std::fs::write(&bad, b"\x89PNG not really").unwrap();
    let r = predict_files(
        ModelSource::Checkpoint(&out.run.root().join("best.safetensors")),
        &[img.clone(), bad.clone()],
        &pcsv,
        Some("cpu"),
        (false, true),
    )
    .unwrap();
    assert_eq!(r.written, 1);
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].0, bad);
    // --strict: any failure stops, nothing is written; all inputs failing is an error.
    let strict_out = w.root.join("strict.csv");
    assert!(predict_files(
        ModelSource::Checkpoint(&out.run.root().join("best.safetensors")),
        &[img.clone(), bad.clone()],
        &strict_out,
        Some("cpu"),
        (true, true)
    )
    .is_err());
    assert!(!strict_out.exists());
    assert!(predict_files(
        ModelSource::Checkpoint(&out.run.root().join("best.safetensors")),
        std::slice::from_ref(&bad),
        &strict_out,
        Some("cpu"),
        (false, true)
    )
    .is_err());
    // A folder holding a FIFO named like an image: the good file is scored, the FIFO is
    // named as a failure (it would block a reader forever).
    let folder = w.root.join("with_fifo");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(&img, folder.join("good.png")).unwrap();
    let fifo = folder.join("pipe.png");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let r = predict_files(
        ModelSource::Checkpoint(&out.run.root().join("best.safetensors")),
        std::slice::from_ref(&folder),
        &w.root.join("fifo.csv"),
        Some("cpu"),
        (false, true),
    )
    .unwrap();
    assert_eq!(r.written, 1);
    assert_eq!(r.failed.len(), 1);
    assert!(
        r.failed[0].0 == fifo && r.failed[0].1.contains("FIFO"),
        "{:?}",
        r.failed
    );
    let pl: Vec<f64> = std::fs::read_to_string(&pcsv)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .skip(2)
        .map(|v| v.parse().unwrap())
        .collect();
    let el: Vec<f64> = csv
        .lines()
        .find(|l| l.starts_with(&test.image_ids[0]))
        .unwrap()
        .split(',')
        .skip(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // The same pixels both ways (predict rounds the file's working-size image to the cache's
    // u8, as prepare did); only the batch differs (1 image against the split's batches), so
    // the sums may run in another order: the float32 bound, through the sigmoid (slope
    // ≤ 1/4), relative to the largest |logit| of these probabilities. Both are scaled by the
    // run's temperatures: a logit error δz becomes δz / T with slope ≤ 1 / (4T), and |z| = T
    // times the scaled logit, so the same bound holds on the scaled logits.
    let largest_logit = el
        .iter()
        .map(|p| (p / (1.0 - p)).ln().abs())
        .fold(1.0, f64::max);
    let tol = tolerance::MUXNET_DEMO_64.reorder_tolerance() * largest_logit / 4.0;
    for (a, b) in pl.iter().zip(&el) {
        assert!(
            (a - b).abs() <= tol,
            "predict {a} vs evaluate {b} (tolerance {tol:e})"
        );
    }
    // A checkpoint away from its run has no temperatures: calibrated (the default) is
    // refused with the way out named; --calibrated false writes the raw outputs.
    let lone = w.root.join("lone");
    std::fs::create_dir(&lone).unwrap();
    std::fs::copy(
        out.run.root().join("best.safetensors"),
        lone.join("best.safetensors"),
    )
    .unwrap();
    let predict_lone = |calibrated: bool| {
        predict_files(
            ModelSource::Checkpoint(&lone.join("best.safetensors")),
            std::slice::from_ref(&img),
            &w.root.join("lone.csv"),
            Some("cpu"),
            (false, calibrated),
        )
    };
    let e = predict_lone(true).unwrap_err().to_string();
    assert!(
        e.contains("no temperatures") && e.contains("--calibrated false"),
        "{e}"
    );
    let raw = predict_lone(false).unwrap();
    assert!(raw.calibrated_with.is_none());
    export_round_trip(&w, &out.run, &img, &pcsv);
    // TTA needs configured pipelines; EMA needs an EMA run.
    assert!(evaluate_run(
        out.run.root(),
        &mdirs,
        key(Split::Test, Checkpoint::Best, true),
        &opt,
        Some("cpu")
    )
    .is_err());
    assert!(evaluate_run(
        out.run.root(),
        &mdirs,
        key(Split::Test, Checkpoint::Ema, false),
        &opt,
        Some("cpu")
    )
    .is_err());
    localize_and_explain(&w, &out.run);
    super::external::external_validation(&w, &out.run);
    super::external::external_localization(&w, &out.run);
    // The report renders from the run directory alone (plus the manifest).
    let (html, notice) = muxmed::report::report_run(
        out.run.root(),
        &mdirs,
        key(Split::Test, Checkpoint::Best, false),
    )
    .unwrap();
    assert!(notice.is_none());
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("synthetic data") && text.contains("trained from scratch"));
    assert!(text.contains("Localization (box benchmark)") && text.contains("centre prior"));
    assert!(text.contains("<h2>Subgroups</h2>") && text.contains("AUROC by sex"));
    assert!(
        text.contains("Localization on `rsna-ext` (external box benchmark)")
            && text.contains("Localization on `vindr-ext` (external box benchmark)")
    );
    for f in [
        "localization_accuracy.png",
        "roc_grid.png",
        "training_curves.png",
        "training_curves.svg",
        "prevalence.png",
        "auroc_chart.svg",
        "report.md",
    ] {
        assert!(html.parent().unwrap().join(f).is_file(), "{f}");
    }
}

#[test]
fn a_run_keeps_its_splits_and_every_evaluation_reports_exactly() {
    let _torch = torch_lock();
    let w = world(160, "");
    let tta = "augment.tta=[[{horizontal_flip: {p: 1.0}}, to_rgb, normalize_imagenet]]";
    let out = train(
        &args(&w, "bound", &["train.epochs=3", "train.ema_decay=0.9", tta]),
        no_stop(),
    )
    .unwrap();
    let run = out.run.clone();
    // best.safetensors is the val argmax; ema_best follows the EMA's own val score.
    let h = &out.state.history;
    assert_eq!(
        out.state.best_epoch,
        Some(argmax_epoch(h, |r| r.val_mean_auroc))
    );
    // As state.json says it.
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.state_file()).unwrap()).unwrap();
    assert_eq!(j["best_epoch"], serde_json::json!(out.state.best_epoch));
    assert_eq!(
        out.state.ema_best_epoch,
        Some(argmax_epoch(h, |r| r.val_mean_auroc_ema))
    );
    let mdirs = w.root.join("data_manifests");
    let opt = muxmed::eval::scoring::EvalOptions {
        resamples: 30,
        ..Default::default()
    };
    let keys = [
        key(Split::Test, Checkpoint::Best, false),
        key(Split::Test, Checkpoint::Ema, false),
        key(Split::Test, Checkpoint::Best, true),
        key(Split::Val, Checkpoint::Last, false),
    ];
    let mut before = Vec::new();
    for k in keys {
        let r =
            muxmed::eval::run_eval::evaluate_run(run.root(), &mdirs, k, &opt, Some("cpu")).unwrap();
        assert!(r.notice.is_none());
        assert_eq!(r.metrics_json, run.metrics(&k));
        // The report recomputes from the predictions CSV: identical numbers.
        let (_, rep) = muxmed::report::run_evaluation(&run, &k).unwrap();
        let written = muxmed::eval::scoring::Evaluation::read(&r.metrics_json).unwrap();
        assert_eq!(rep, written, "{k:?}");
        let (html, _) = muxmed::report::report_run(run.root(), &mdirs, k).unwrap();
        let text = std::fs::read_to_string(html).unwrap();
        assert!(text.contains(
            run.checkpoint(k.checkpoint)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
        ));
        // Synthetic data: no published numbers beside it.
        assert!(!text.contains("CheXNet"), "{k:?}");
        before.push(aurocs(&r.metrics_json));
    }
    // One report folder per evaluation: the four reports are all still there, each saying
    // which evaluation it shows.
    let folders: Vec<PathBuf> = keys.iter().map(|k| run.report_dir(k)).collect();
    assert_eq!(folders[0], run.root().join("report"));
    assert_eq!(folders[3], run.root().join("report_val_last"));
    for (k, f) in keys.iter().zip(&folders) {
        let text = std::fs::read_to_string(f.join("report.html")).unwrap();
        assert!(text.contains(&k.describe()), "{k:?}");
    }
    let distinct: std::collections::HashSet<&PathBuf> = folders.iter().collect();
    assert_eq!(distinct.len(), keys.len());

    // Rebuild the manifest under the same name with another protocol, and prepare again.
    let cfg = config::load(&w.pipeline, &["data.protocol=random_patient".into()])
        .unwrap()
        .config;
    let mdir = mdirs.join("tiny");
    muxmed::data::manifest::build(&cfg.data, true)
        .unwrap()
        .write(&mdir)
        .unwrap();
    muxmed::data::cache::prepare(&mdir, &cfg.augment, &|_, _| {}).unwrap();
    let new_test = muxmed::data::dataset::load_split(&mdir, Split::Test).unwrap();
    let old_test = run.split(Split::Test).unwrap();
    assert_ne!(
        new_test.image_ids, old_test.image_ids,
        "the rebuild must change the split"
    );
    for (k, b) in keys.iter().zip(&before) {
        let r = muxmed::eval::run_eval::evaluate_run(run.root(), &mdirs, *k, &opt, Some("cpu"))
            .unwrap();
        assert!(r.notice.as_deref().unwrap().contains("has changed"));
        assert_eq!(&aurocs(&r.metrics_json), b, "{k:?}");
        let (_, notice) = muxmed::report::report_run(run.root(), &mdirs, *k).unwrap();
        assert!(notice.is_some());
    }

    // Resuming a finished run trains nothing and changes nothing.
    let last = run.checkpoint(Checkpoint::Last);
    let stamp = std::fs::metadata(&last).unwrap().modified().unwrap();
    let again = train(&resume_args(&w, run.root().to_path_buf()), no_stop()).unwrap();
    assert!(again.already_done);
    assert_eq!(again.state.history.len(), 3);
    assert_eq!(std::fs::metadata(&last).unwrap().modified().unwrap(), stamp);

    // A manifest rebuilt with a filter leaves some of the run's images out of the cache:
    // evaluating the run stops with an error naming one, instead of scoring fewer images.
    let cfg = config::load(&w.pipeline, &["data.filters.views=[PA]".into()])
        .unwrap()
        .config;
    muxmed::data::manifest::build(&cfg.data, true)
        .unwrap()
        .write(&mdir)
        .unwrap();
    muxmed::data::cache::prepare(&mdir, &cfg.augment, &|_, _| {}).unwrap();
    let e = muxmed::eval::run_eval::evaluate_run(run.root(), &mdirs, keys[0], &opt, Some("cpu"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is not in the prepared cache"), "{e}");
}

/// `subgroups_test.json` against the written files: every group AUROC reported is recounted
/// by pair counting from predictions_test.csv and the synthetic metadata's `Patient Gender`,
/// `View Position` and `Finding Labels`; groups are the values present; image counts add up.
fn subgroups_match_the_written_files(
    w: &super::support::World,
    r: &muxmed::eval::run_eval::RunEvaluation,
) {
    use muxmed::eval::subgroups::Attribute;
    use std::collections::HashMap;
    let meta = std::fs::read_to_string(w.root.join("synth/Data_Entry_2017_v2020.csv")).unwrap();
    let by_id: HashMap<&str, Vec<&str>> = meta
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0], f)
        })
        .collect();
    let pred = std::fs::read_to_string(&r.predictions_csv).unwrap();
    let mut lines = pred.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let s = &r.subgroups;
    assert!(r.subgroups_json.ends_with("subgroups_test.json"));
    assert_eq!(
        &muxmed::eval::subgroups::Subgroups::read(&r.subgroups_json).unwrap(),
        s
    );
    assert_eq!(s.min_positives, 1, "the run's eval.subgroups");
    let mut checked = 0;
    for (attr, col) in [(Attribute::Sex, 5), (Attribute::View, 6)] {
        let a = s.attribute(attr).unwrap();
        let total: usize = a.result.groups.iter().map(|g| g.images).sum();
        assert_eq!(total + a.unknown, rows.len());
        for g in &a.result.groups {
            for (k, l) in g.per_label.iter().enumerate() {
                let Some(auroc) = l.auroc else { continue };
                let label = &s.labels[k];
                let c = header.iter().position(|h| h == label).unwrap();
                let (mut pos, mut neg) = (Vec::new(), Vec::new());
                for row in &rows {
                    let m = &by_id[row[0]];
                    if m[col] != g.group {
                        continue;
                    }
                    let p: f64 = row[c].parse().unwrap();
                    if m[1].split('|').any(|x| x == label) {
                        pos.push(p);
                    } else {
                        neg.push(p);
                    }
                }
                assert_eq!((l.positives, l.negatives), (pos.len(), neg.len()));
                let want = super::external::pairs_auroc(&pos, &neg).unwrap();
                assert!(
                    (auroc - want).abs() < 1e-12,
                    "{label} {}: {auroc} {want}",
                    g.group
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 5,
        "{checked} group AUROCs checked: {:?}",
        s.summary()
    );
    assert!(s.skipped.iter().any(|k| k.attribute == Attribute::Dataset));
}

/// `evaluate --run --truth google2019`: refused on synthetic data; with the marker gone and a
/// hand-made Google file (the first half of the run's test images in Set Id `test`, the rest
/// in `val`, findings by a fixed pattern), the written scores equal a pair count over the
/// run's own predictions file, and the run's report has the section.
fn adjudicated_truth_through_the_run(
    w: &super::support::World,
    run: &Path,
    r: &muxmed::eval::run_eval::RunEvaluation,
) {
    let cli = |extra: &[&str]| {
        muxmed()
            .current_dir(&w.root)
            .args(["evaluate", "--run"])
            .arg(run)
            .args([
                "--truth",
                "google2019",
                "--bootstrap",
                "20",
                "--device",
                "cpu",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = cli(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("is a synthetic dataset"),
        "{err}"
    );
    let pred = std::fs::read_to_string(&r.predictions_csv).unwrap();
    let mut lines = pred.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let half = rows.len() / 2;
    let pattern = |i: usize, f: usize| (i * 7 + f * 3) % 5 < 2;
    let mut g = String::from(
        "Image Index,Patient ID,Fracture,Pneumothorax,Airspace opacity,Nodule or mass,Set Id\n",
    );
    for (i, row) in rows.iter().enumerate() {
        let yn = |f| if pattern(i, f) { "YES" } else { "NO" };
        let set = if i < half { "test" } else { "val" };
        g += &format!(
            "{},{},{},{},{},{},{set}\n",
            row[0],
            row[1],
            yn(0),
            yn(1),
            yn(2),
            yn(3)
        );
    }
    let gfile = w.root.join("google.csv");
    std::fs::write(&gfile, g).unwrap();
    let marker = w.root.join("synth").join(muxmed::data::synth::MARKER);
    let kept = std::fs::read(&marker).unwrap();
    std::fs::remove_file(&marker).unwrap();
    let o = cli(&["--truth-file", gfile.to_str().unwrap()]);
    std::fs::write(&marker, kept).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = super::support::key(Split::Test, Checkpoint::Best, false);
    let written = muxmed::run::RunDir::open(run).unwrap().adjudicated(&key);
    let a = muxmed::eval::adjudicated::Adjudicated::read(&written).unwrap();
    assert_eq!((a.n_images, a.in_other_set), (half, rows.len() - half));
    let col = |l: &str| header.iter().position(|h| *h == l).unwrap();
    for (f, sources) in [(1, vec!["Pneumothorax"]), (3, vec!["Nodule", "Mass"])] {
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for (i, row) in rows.iter().enumerate().take(half) {
            let s = sources
                .iter()
                .map(|l| row[col(l)].parse::<f64>().unwrap())
                .fold(f64::MIN, f64::max);
            if pattern(i, f) {
                pos.push(s);
            } else {
                neg.push(s);
            }
        }
        let got = a.findings[f].adjudicated.as_ref().unwrap().auroc.unwrap();
        let want = super::external::pairs_auroc(&pos, &neg).unwrap();
        assert!(
            (got - want).abs() < 1e-12,
            "{}: {got} {want}",
            a.findings[f].finding
        );
        assert_eq!(a.findings[f].positives_adjudicated, pos.len());
    }
    assert!(a.findings[0].not_scored.is_some(), "Fracture has no output");
    let (html, _) = muxmed::report::report_run(run, &w.root.join("data_manifests"), key).unwrap();
    let md = std::fs::read_to_string(html.with_file_name("report.md")).unwrap();
    assert!(md.contains("## Adjudicated labels"), "{md}");
}

/// Temperature scaling on a trained run: the temperatures file is written, every label's
/// AUROC on the scaled probabilities equals the raw one to the last bit, and the
/// predictions file holds the scaled probabilities the metrics were computed from.
fn calibration_keeps_every_auroc(run: &Path, r: &muxmed::eval::run_eval::RunEvaluation) {
    use muxmed::metrics::{known_column, Curve};
    let key = super::support::key(Split::Test, Checkpoint::Best, false);
    let dir = muxmed::run::RunDir::open(run).unwrap();
    let t = muxmed::eval::calibrate::Temperatures::read(&dir.temperatures(&key)).unwrap();
    assert!(dir.temperatures(&key).ends_with("temperatures_val.json"));
    assert_eq!(t.labels.len(), 14);
    let fitted = t.labels.iter().filter(|l| l.temperature.is_some()).count();
    assert!(fitted > 0, "{t:?}");
    for l in &t.labels {
        assert_eq!(l.temperature.is_none(), l.why_none.is_some(), "{}", l.label);
        let one_class = l.val_positives == 0 || l.val_positives == l.val_images;
        assert_eq!(one_class, l.temperature.is_none(), "{}", l.label);
    }
    let mut differs = 0;
    for k in 0..14 {
        let (y, raw, _) = known_column(&r.uncalibrated.y, &r.uncalibrated.s, k);
        let (_, cal, _) = known_column(&r.joined.y, &r.joined.s, k);
        differs += usize::from(raw != cal);
        let a = Curve::new(&y, &raw).auroc().map(f64::to_bits);
        let b = Curve::new(&y, &cal).auroc().map(f64::to_bits);
        assert_eq!(a, b, "label {k}");
        assert_eq!(b, r.evaluation.per_label[k].auroc.map(f64::to_bits));
    }
    assert!(differs > 0, "scaling changed no probability");
    let written =
        muxmed::eval::predictions::read_run_predictions(&r.predictions_csv, &r.joined.labels)
            .unwrap();
    for (id, s) in r.joined.image_ids.iter().zip(&r.joined.s) {
        assert_eq!(&written[id], s, "{id}");
    }
}
