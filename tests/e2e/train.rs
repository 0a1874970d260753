//! `muxmed train`: loss falls, checkpoints, imported weights, resolution, refusals, the
//! non-finite stops, pos_weight, model selection, early stopping, frozen epochs.

use std::path::Path;

use muxmed::config;
use muxmed::labels::Split;
use muxmed::model::weights::read_safetensors;
use muxmed::run::{Checkpoint, Status};
use muxmed::train::loss::pos_weights;
use muxmed::train::train;

use super::compare::compare_two_runs;
use super::support::{
    argmax_epoch, args, demo_net, key, no_stop, torch_lock, world, world_of_size,
};
use crate::bin::muxmed;

#[test]
fn trains_checkpoints_and_loss_falls() {
    let _torch = torch_lock();
    let w = world(120, "");
    let out = train(&args(&w, "run", &[]), no_stop()).unwrap();
    assert_eq!(out.state.status, Status::Finished);
    let h = &out.state.history;
    assert_eq!(h.len(), 3);
    assert!(
        h[2].train_loss < h[0].train_loss,
        "{} -> {}",
        h[0].train_loss,
        h[2].train_loss
    );
    for f in [
        "last.safetensors",
        "best.safetensors",
        "metrics.csv",
        "events.jsonl",
        "state.json",
        "run.json",
        "config.resolved.yaml",
        "manifest.json",
        "train.log",
    ] {
        assert!(out.run.root().join(f).is_file(), "{f}");
    }
    let csv = std::fs::read_to_string(out.run.root().join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("epoch,train_loss,val_loss,val_mean_auroc,val_auroc_Atelectasis"));
    // The best checkpoint loads strictly into a fresh network of the run's architecture.
    let vs = demo_net(0.0, muxmed::model::muxnet::HeadInit::Reference);
    muxmed::model::weights::load_strict(&vs, &out.run.root().join("best.safetensors")).unwrap();
    // A second run of the same name is refused.
    let e = train(&args(&w, "run", &[]), no_stop())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already exists") && e.contains("--overwrite"),
        "{e}"
    );
}

/// The transfer path end to end: the timm-style MUXNet-m ImageNet checkpoint (1000 classes,
/// `../shared/fixtures/muxnet/`) imported, its head replaced by a 14-label one, and a step
/// trained from it; the backbone starts from the imported (EMA) weights.
#[test]
fn an_imagenet_checkpoint_imports_gets_a_14_label_head_and_trains_a_step() {
    let _torch = torch_lock();
    use muxmed::model::weights::{read_torch_checkpoint, write_safetensors};
    let w = world(40, "");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/muxnet/timm_style_muxnet_m_imagenet.pth");
    let ck = read_torch_checkpoint(&src).unwrap();
    let imported: std::collections::BTreeMap<String, tch::Tensor> = ck
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    assert_eq!(imported["classifier.weight"].size(), [1000, 1280]);
    let weights = w.root.join("muxnet_m_imagenet.safetensors");
    write_safetensors(&weights, &ck.tensors, &Default::default()).unwrap();
    let mut a = args(
        &w,
        "transfer",
        &[
            "model.arch=muxnet_m",
            &format!("model.weights={}", weights.display()),
            "model.from_scratch=false",
            "train.epochs=1",
        ],
    );
    a.stop_after_steps = Some(1);
    let out = train(&a, no_stop()).unwrap();
    assert_eq!(out.state.opt_step, 1);
    let info = out.run.info().unwrap();
    assert!(!info.weights.from_scratch);
    let mut replaced = info.weights.replaced.clone();
    replaced.sort();
    assert_eq!(
        replaced,
        [
            "classifier.bias (file [1000] -> model [14])",
            "classifier.weight (file [1000, 1280] -> model [14, 1280])"
        ]
    );
    let last = read_safetensors(&out.run.checkpoint(Checkpoint::Last)).unwrap();
    assert_eq!(last["classifier.weight"].size(), [14, 1280]);
    // One AdamW step moves each backbone weight by at most the backbone's learning rate
    // (|m̂/√v̂| ≤ 1 on the first step, plus decoupled decay lr·wd·|w|): the stem is still
    // the imported one to that bound, and it did move.
    let t = &a.pipeline.as_ref().unwrap().config.train;
    let w0 = &imported["conv_stem.weight"];
    let lr_backbone = t.lr * t.backbone_lr_factor;
    let bound = lr_backbone * (1.0 + t.weight_decay * w0.abs().max().double_value(&[]));
    let moved = (&last["conv_stem.weight"] - w0)
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        moved > 0.0 && moved <= bound * (1.0 + 1e-5),
        "{moved} vs {bound}"
    );
}

/// Higher-resolution training (320-512 pixels, where current ChestX-Ray14 single models are)
/// works once `augment.working_size` is raised: the cache holds 320-pixel images, training and
/// evaluation feed 320-pixel batches, and the run is labelled and counted at 320.
#[test]
fn training_at_320_works_once_the_working_size_is_raised() {
    let _torch = torch_lock();
    use muxmed::eval::run_eval::evaluate_run;
    use muxmed::eval::scoring::EvalOptions;
    let at_320 = [
        "augment.working_size=320",
        "augment.train=[{random_resized_crop: {size: 320, scale: [0.8, 1.0]}}, to_rgb, normalize_imagenet]",
        "train.resolution=320",
        "train.epochs=1",
        "train.batch_size=8",
    ];
    let w = world_of_size(24, 384, "", &at_320, |_| {});
    let mdir = w.root.join("data_manifests/tiny");
    let cfg = config::load(&w.pipeline, &at_320.map(String::from))
        .unwrap()
        .config;
    let cache = muxmed::data::cache::Cache::open(&mdir, &cfg.augment).unwrap();
    assert!(muxmed::data::cache::cache_dir(&mdir, &cfg.augment).ends_with("cache_320_u8"));
    let first = cache.image(0);
    assert_eq!((first.h, first.w), (320, 320));
    let out = train(&args(&w, "r320", &at_320), no_stop()).unwrap();
    assert_eq!(out.state.status, Status::Finished);
    let info = out.run.info().unwrap();
    let resolved = out.run.config().unwrap();
    assert_eq!(resolved.train.resolution, 320);
    // Multiply-adds grow with the pixel count: the run counts them at 320, 25x the 64-pixel
    // count (to the rounding of strided layers' output sizes).
    let arch = muxmed::config::Arch::Json(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json"),
    );
    let at_64 = muxmed::model::count::count_arch(&arch, 14, 64)
        .unwrap()
        .madds as f64;
    let ratio = info.madds.unwrap() as f64 / at_64;
    assert!((ratio - 25.0).abs() < 1.0, "{ratio}");
    let opt = EvalOptions {
        resamples: 20,
        ..Default::default()
    };
    let r = evaluate_run(
        out.run.root(),
        &w.root.join("data_manifests"),
        key(Split::Test, Checkpoint::Best, false),
        &opt,
        Some("cpu"),
    )
    .unwrap();
    assert_eq!(r.evaluation.n_images, info.test_images);
}

#[test]
fn refuses_to_start_without_weights_unless_from_scratch() {
    let _torch = torch_lock();
    let w = world(40, "");
    let e = train(
        &args(
            &w,
            "r",
            &[
                "model.from_scratch=false",
                "model.weights=nowhere/muxnet_m.safetensors",
            ],
        ),
        no_stop(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("nowhere/muxnet_m.safetensors")
            && e.contains("muxmed model import")
            && e.contains("from_scratch"),
        "{e}"
    );
}

#[test]
fn a_non_finite_loss_stops_the_run() {
    let _torch = torch_lock();
    let w = world(40, "");
    let e = train(
        &args(
            &w,
            "nan",
            &[
                "train.lr=1e30",
                "train.warmup_epochs=0",
                "train.grad_clip_norm=null",
            ],
        ),
        no_stop(),
    )
    .unwrap_err()
    .to_string();
    // It fails in epoch 1 (a non-finite loss, or non-finite val outputs): no checkpoint
    // exists, and the message does not pretend one does.
    assert!(
        (e.contains("the loss became") || e.contains("val probabilities are not finite"))
            && e.contains("training stopped")
            && e.contains("no checkpoint was written"),
        "{e}"
    );
    assert!(!w.root.join("reports/nan/last.safetensors").exists());
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.root.join("reports/nan/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["status"], "failed_non_finite");
}

#[test]
fn pos_weight_is_negatives_over_positives() {
    let split = muxmed::data::dataset::SplitData {
        label_names: vec!["A".into(), "B".into(), "C".into()],
        image_ids: vec!["1".into(), "2".into(), "3".into(), "4".into()],
        paths: vec![None; 4],
        patients: vec!["p".into(); 4],
        datasets: vec![String::new(); 4],
        labels: vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 1.0, 0.0],
        ],
    };
    assert_eq!(pos_weights(&split), vec![3.0, 1.0, 1.0]);
}

/// `train.select_by: val_loss`: best.safetensors is the live model's lowest val loss and
/// ema_best the EMA's lowest; early stopping watches the EMA's score (the model kept), so
/// its reference is epoch 1's EMA val loss, not the live one.
#[test]
fn selection_by_val_loss_picks_the_lowest_loss_and_patience_watches_the_ema() {
    let _torch = torch_lock();
    let w = world(120, "");
    let out = train(
        &args(
            &w,
            "by_loss",
            &[
                "train.epochs=4",
                "train.select_by=val_loss",
                "train.ema_decay=0.5",
                "train.early_stopping={patience: 10, min_delta: 1.0e9}",
            ],
        ),
        no_stop(),
    )
    .unwrap();
    let h = &out.state.history;
    assert_eq!(h.len(), 4);
    let argmin = |f: fn(&muxmed::run::EpochRow) -> Option<f64>| {
        h.iter()
            .filter_map(|r| Some((r.epoch, f(r)?)))
            .fold((0, f64::MAX), |b, (e, v)| if v < b.1 { (e, v) } else { b })
    };
    let (live_epoch, live_loss) = argmin(|r| Some(r.val_loss));
    let (ema_epoch, ema_loss) = argmin(|r| r.val_loss_ema);
    assert_eq!(
        (out.state.best_epoch, out.state.best_score),
        (Some(live_epoch), Some(live_loss))
    );
    assert_eq!(
        (out.state.ema_best_epoch, out.state.ema_best_score),
        (Some(ema_epoch), Some(ema_loss))
    );
    // By AUROC the best epoch would differ on at least one of the two here, or the test
    // says nothing about the choice of score.
    let by_auroc = argmax_epoch(h, |r| r.val_mean_auroc);
    let ema_by_auroc = argmax_epoch(h, |r| r.val_mean_auroc_ema);
    assert!(
        by_auroc != live_epoch || ema_by_auroc != ema_epoch,
        "val loss and val AUROC pick the same epochs ({live_epoch}, {ema_epoch})"
    );
    let ema_first = h[0].val_loss_ema.unwrap();
    assert_ne!(ema_first, h[0].val_loss);
    assert_eq!(out.state.patience.reference, Some(ema_first));
    assert_eq!(out.state.patience.stale_epochs, 3);
}

#[test]
fn early_stopping_and_tta() {
    let _torch = torch_lock();
    let w = world(120, "");
    // An improvement of 1.0 in AUROC is impossible: stop after patience 1.
    let out = train(
        &args(
            &w,
            "es",
            &[
                "train.epochs=5",
                "train.early_stopping={patience: 1, min_delta: 1.0}",
            ],
        ),
        no_stop(),
    )
    .unwrap();
    assert_eq!(out.state.status, Status::EarlyStopped);
    assert_eq!(out.state.history.len(), 2);
    let es = out.run.clone();
    // TTA with a configured pipeline writes separate files.
    let out = train(
        &args(
            &w,
            "tta",
            &[
                "train.epochs=1",
                "augment.tta=[[{horizontal_flip: {p: 1.0}}, to_rgb, normalize_imagenet]]",
            ],
        ),
        no_stop(),
    )
    .unwrap();
    let opt = muxmed::eval::scoring::EvalOptions {
        resamples: 20,
        ..Default::default()
    };
    let r = muxmed::eval::run_eval::evaluate_run(
        out.run.root(),
        &w.root.join("data_manifests"),
        key(Split::Test, Checkpoint::Best, true),
        &opt,
        Some("cpu"),
    )
    .unwrap();
    assert!(
        r.predictions_csv.ends_with("predictions_test_tta.csv")
            && r.metrics_json.ends_with("metrics_test_tta.json")
    );
    assert!(!out.run.root().join("metrics_test.json").exists());
    compare_two_runs(&w, &es, &out.run);
    super::compare::compare_external_evaluations(&w, &es, &out.run);
}

#[test]
fn train_without_the_nih_data_says_where_it_is_expected() {
    let out = muxmed()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "train",
            "--pipeline",
            "chestxray",
            "--set",
            "data.root=/nonexistent/nih",
            "--set",
            "name=no-such-pipeline-data",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "/nonexistent/nih",
        "data.root",
        "nihcc.app.box.com",
        "make demo",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn frozen_epochs_keep_the_backbone_and_its_batchnorm_statistics() {
    let _torch = torch_lock();
    let w = world(120, "");
    // The initial weights: the run seeds libtorch with train.seed before building the model.
    tch::manual_seed(0);
    let vs = demo_net(0.1, muxmed::model::muxnet::HeadInit::PytorchDefault);
    let init: Vec<(String, tch::Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    // One frozen epoch (4 steps), stopped right after it.
    let mut a = args(
        &w,
        "frozen",
        &["train.freeze_backbone_epochs=1", "train.epochs=2"],
    );
    a.stop_after_steps = Some(4);
    let out = train(&a, no_stop()).unwrap();
    assert_eq!((out.state.epoch, out.state.batch_in_epoch), (0, 4));
    let after = read_safetensors(&out.run.root().join("last.safetensors")).unwrap();
    let mut head_moved = false;
    for (name, t0) in &init {
        let d = (&after[name] - t0).abs().max().double_value(&[]);
        if name.starts_with("classifier.") {
            head_moved |= d > 0.0;
        } else {
            assert_eq!(d, 0.0, "{name} moved while the backbone was frozen");
        }
    }
    assert!(head_moved);
}

#[test]
fn non_finite_val_outputs_stop_the_run_and_are_never_a_best_epoch() {
    let _torch = torch_lock();
    let w = world(80, "");
    let e = train(
        &args(
            &w,
            "nanval",
            &["train.lr=1e5", "train.warmup_epochs=2.5", "train.epochs=3"],
        ),
        no_stop(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("training stopped"), "{e}");
    // state.json stays readable as typed state, and nothing non-finite became best.
    let run = muxmed::run::RunDir::open(w.root.join("reports/nanval")).unwrap();
    let state = run.state().unwrap();
    assert_eq!(state.status, Status::FailedNonFinite);
    for r in &state.history {
        assert!(r.val_loss.is_finite() && r.train_loss.is_finite());
    }
    if state.best_epoch.is_none() {
        assert!(!run.checkpoint(Checkpoint::Best).exists());
    }
    // A last.safetensors that exists holds finite weights only.
    if run.checkpoint(Checkpoint::Last).exists() {
        for (k, t) in read_safetensors(&run.checkpoint(Checkpoint::Last)).unwrap() {
            let finite = t.isfinite().all().int64_value(&[]) == 1;
            assert!(finite, "{k}");
        }
    }
}

#[test]
fn val_loss_is_the_training_loss() {
    let _torch = torch_lock();
    let w = world(40, "");
    // A focal loss with a huge gamma is ~0 for any prediction, unlike plain BCE (~0.3+).
    let out = train(
        &args(
            &w,
            "focal",
            &["train.epochs=1", "train.loss=focal", "train.focal_gamma=60"],
        ),
        no_stop(),
    )
    .unwrap();
    let row = &out.state.history[0];
    assert!(row.val_loss < 1e-3, "{}", row.val_loss);
    assert!(row.train_loss < 1e-3, "{}", row.train_loss);
}
