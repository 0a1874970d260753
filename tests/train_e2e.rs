//! Training end to end on a tiny synthetic dataset: loss falls, checkpoints, exact resume,
//! refusal without weights, the non-finite stop, and SIGINT writing a checkpoint.
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use muxmed::config;
use muxmed::data::synth::{write, SynthOptions};
use muxmed::labels::Split;
use muxmed::model::weights::read_safetensors;
use muxmed::run::{Checkpoint, EvalKey, RunDir, Status};
use muxmed::train::loss::pos_weights;
use muxmed::train::{train, TrainArgs};

#[path = "common/tolerance.rs"]
#[allow(dead_code)]
mod tolerance;

/// libtorch's random generator is global to the process and the tests of this file run in
/// parallel threads: training tests take this lock so their seeded draws do not interleave.
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn torch_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pipeline: PathBuf,
}

fn world(images: usize, extra_yaml: &str) -> World {
    world_with(images, extra_yaml, &[], |_| {})
}

/// A tiny world whose manifest is built, then `edit` runs on the manifest folder (to damage
/// files, say), then `prepare` runs with the pipeline and `overrides`.
fn world_with(images: usize, extra_yaml: &str, overrides: &[&str], edit: impl Fn(&Path)) -> World {
    world_of_size(images, 64, extra_yaml, overrides, edit)
}

/// `world_with` on synthetic images of `size` × `size` pixels.
fn world_of_size(
    images: usize,
    size: u32,
    extra_yaml: &str,
    overrides: &[&str],
    edit: impl Fn(&Path),
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    write(
        &root.join("synth"),
        &SynthOptions {
            images,
            patients: None,
            size,
            seed: 1,
            test_fraction: 0.2,
            overwrite: false,
        },
    )
    .unwrap();
    let arch = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json");
    let yaml = format!(
        "name: tiny\ndata:\n  root: {}\n  val_fraction: 0.25\naugment:\n  working_size: 64\n  train:\n    - random_resized_crop: {{size: 64, scale: [0.8, 1.0]}}\n    - to_rgb\n    - normalize_imagenet\n  eval:\n    - to_rgb\n    - normalize_imagenet\nmodel:\n  arch: {}\n  weights: null\n  from_scratch: true\n  drop_rate: 0.1\ntrain:\n  resolution: 64\n  epochs: 3\n  batch_size: 16\n  lr: 0.003\n  warmup_epochs: 0.5\n  log_every: 2\nruntime:\n  device: cpu\n  data_workers: 2\n{extra_yaml}",
        root.join("synth").display(),
        arch.display()
    );
    let pipeline = root.join("tiny.yaml");
    std::fs::write(&pipeline, yaml).unwrap();
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let cfg = config::load(&pipeline, &overrides).unwrap().config;
    let mdir = root.join("data_manifests/tiny");
    muxmed::data::manifest::build(&cfg.data, true)
        .unwrap()
        .write(&mdir)
        .unwrap();
    edit(&mdir);
    muxmed::data::cache::prepare(&mdir, &cfg.augment, &|_, _| {}).unwrap();
    World {
        _dir: dir,
        root,
        pipeline,
    }
}

fn args(w: &World, run: &str, overrides: &[&str]) -> TrainArgs {
    TrainArgs {
        pipeline: Some(
            config::load(
                &w.pipeline,
                &overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap(),
        ),
        run_name: Some(run.into()),
        reports_dir: w.root.join("reports"),
        manifests_dir: w.root.join("data_manifests"),
        ..Default::default()
    }
}

/// A VarStore holding the demo architecture the tiny pipeline trains (14 classes).
fn demo_net(drop_rate: f64, head: muxmed::model::muxnet::HeadInit) -> tch::nn::VarStore {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let arch = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json");
    let arch = muxmed::config::Arch::Json(arch);
    muxmed::model::network::Network::build(&vs.root(), &arch, 14, drop_rate, head).unwrap();
    vs
}

/// Arguments that resume the run at `run` of world `w`.
fn resume_args(w: &World, run: PathBuf) -> TrainArgs {
    resume_args_in(&w.root, run)
}

/// Arguments that resume `run` with reports/ and data_manifests/ under `root`.
fn resume_args_in(root: &Path, run: PathBuf) -> TrainArgs {
    TrainArgs {
        resume: Some(run),
        reports_dir: root.join("reports"),
        manifests_dir: root.join("data_manifests"),
        ..Default::default()
    }
}

fn key(split: Split, checkpoint: Checkpoint, tta: bool) -> EvalKey {
    EvalKey {
        split,
        checkpoint,
        tta,
    }
}

fn no_stop() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

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

fn model_only(t: &std::collections::BTreeMap<String, tch::Tensor>) -> Vec<(&String, &tch::Tensor)> {
    t.iter()
        .filter(|(k, _)| !k.starts_with("optim.") && !k.starts_with("ema."))
        .collect()
}

#[test]
fn interrupted_and_resumed_run_ends_like_an_uninterrupted_one() {
    let _torch = torch_lock();
    let w = world(120, "");
    let straight = train(&args(&w, "straight", &["train.ema_decay=0.9"]), no_stop()).unwrap();
    // Stop in the middle of epoch 2 (4 steps per epoch), then resume.
    let mut a = args(&w, "resumed", &["train.ema_decay=0.9"]);
    a.stop_after_steps = Some(6);
    let first = train(&a, no_stop()).unwrap();
    assert_eq!(first.state.status, Status::Interrupted);
    assert_eq!((first.state.epoch, first.state.opt_step), (1, 6));
    let resumed = train(&resume_args(&w, first.run.root().to_path_buf()), no_stop()).unwrap();
    assert_eq!(resumed.state.status, Status::Finished);
    // One machine, one process, the same kernels in the same order: an exact resume is bit
    // for bit, so every tensor of the last checkpoint is compared for equality: weights,
    // BatchNorm statistics, the EMA copy and AdamW's first and second moments and step counts.
    let a = read_safetensors(&straight.run.root().join("last.safetensors")).unwrap();
    let b = read_safetensors(&resumed.run.root().join("last.safetensors")).unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let count = |pred: &dyn Fn(&str) -> bool| a.keys().filter(|k| pred(k)).count();
    let params = model_only(&a).len();
    assert!(count(&|k| k.starts_with("optim.") && k.ends_with(".m")) > 10);
    assert!(count(&|k| k.starts_with("optim.") && k.ends_with(".v")) > 10);
    assert!(count(&|k| k.starts_with("ema.")) > 10 && params > 10);
    for (k, ta) in &a {
        let tb = &b[k];
        assert_eq!(ta.size(), tb.size(), "{k}");
        assert!(
            ta.equal(tb),
            "{k}: resumed differs by {}",
            (ta - tb).abs().max().double_value(&[])
        );
    }
    // The moments are not trivially equal: they moved from zero during training.
    let v = a
        .iter()
        .find(|(k, _)| k.starts_with("optim.") && k.ends_with(".v"))
        .unwrap()
        .1;
    assert!(v.abs().max().double_value(&[]) > 0.0);
    for (ha, hb) in straight.state.history.iter().zip(&resumed.state.history) {
        let values = |h: &muxmed::run::EpochRow| {
            [
                h.train_loss,
                h.val_loss,
                h.val_mean_auroc.unwrap(),
                h.val_mean_auroc_ema.unwrap(),
            ]
        };
        assert_eq!(values(ha), values(hb), "epoch {}", ha.epoch);
    }
}

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
    let opt = muxmed::eval::predictions::EvalOptions {
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
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"))
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
    use muxmed::eval::predictions::EvalOptions;
    use muxmed::eval::run_eval::evaluate_run;
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

/// `--overwrite` takes the old run's lock first and refuses while its holder lives; a start
/// that cannot build its model removes nothing of the old run; a run stopped before its first
/// checkpoint says how to start again, at `--resume` and at a fresh start alike.
#[test]
fn overwrite_respects_the_lock_and_a_bad_start_removes_nothing() {
    let _torch = torch_lock();
    let w = world(40, "");
    let one = ["train.epochs=1"];
    let out = train(&args(&w, "x", &one), no_stop()).unwrap();
    let last = out.run.checkpoint(Checkpoint::Last);
    let before = std::fs::read(&last).unwrap();
    let overwrite = |extra: &[&str]| {
        let mut a = args(&w, "x", &[one.as_slice(), extra].concat());
        a.overwrite = true;
        train(&a, no_stop())
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    };
    // A live holder (this process) of run.lock.
    let pid = std::process::id();
    std::fs::write(out.run.lock_file(), format!("{pid}\n")).unwrap();
    let e = overwrite(&[]);
    assert!(e.contains(&format!("held by process {pid}")), "{e}");
    assert_eq!(std::fs::read(&last).unwrap(), before);
    std::fs::remove_file(out.run.lock_file()).unwrap();
    // An architecture libtorch could not run: refused by block and option, nothing removed.
    let arch = w.root.join("bad.json");
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json"),
    )
    .unwrap();
    std::fs::write(&arch, good.replace("_sr0.5_", "_sr1.5_")).unwrap();
    let e = overwrite(&[&format!("model.arch={}", arch.display())]);
    assert!(e.contains("sr1.5 must lie strictly between 0 and 1"), "{e}");
    assert_eq!(std::fs::read(&last).unwrap(), before);
    assert!(out.run.root().join("state.json").is_file());
    // Stopped before its first checkpoint: one message says what to do.
    let y = w.root.join("reports/y");
    std::fs::create_dir_all(&y).unwrap();
    std::fs::copy(out.run.config_file(), y.join("config.resolved.yaml")).unwrap();
    let e = format!(
        "{:#}",
        train(&resume_args(&w, y.clone()), no_stop()).err().unwrap()
    );
    assert!(e.contains("interrupted before its first checkpoint"), "{e}");
    assert!(e.contains("--run-name y --overwrite"), "{e}");
    let log = std::fs::read_to_string(y.join("train.log")).unwrap();
    assert!(log.contains("resume refused: "), "{log}");
    let e = format!(
        "{:#}",
        train(&args(&w, "y", &one), no_stop()).err().unwrap()
    );
    assert!(e.contains("interrupted before its first checkpoint"), "{e}");
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
        labels: vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 1.0, 0.0],
        ],
    };
    assert_eq!(pos_weights(&split), vec![3.0, 1.0, 1.0]);
}

#[test]
fn sigint_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume() {
    let w = world(200, "");
    // The shell's convention: 128 + the signal's number.
    for (sig, code) in [("INT", 130), ("TERM", 143)] {
        let name = format!("sig{sig}");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"))
            .current_dir(&w.root)
            .args(["train", "--pipeline"])
            .arg(&w.pipeline)
            .args(["--run-name", &name, "--set", "train.epochs=20"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the first logged steps, then interrupt.
        let run = w.root.join("reports").join(&name);
        let events = run.join("events.jsonl");
        let t = std::time::Instant::now();
        while !events.is_file() && t.elapsed().as_secs() < 120 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(events.is_file(), "training never logged a step");
        std::process::Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            status.code(),
            Some(code),
            "SIG{sig}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("muxmed train --resume"), "{stdout}");
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap())
                .unwrap();
        assert_eq!(state["status"], "interrupted");
        assert!(state["opt_step"].as_u64().unwrap() >= 2);
        read_safetensors(&run.join("last.safetensors")).unwrap();
    }
}

#[test]
fn evaluate_report_and_predict_a_trained_run() {
    let _torch = torch_lock();
    use muxmed::eval::predictions::EvalOptions;
    use muxmed::eval::run_eval::{evaluate_run, predict_files, ModelSource};
    let w = world(160, "");
    let out = train(&args(&w, "ev", &["train.epochs=2"]), no_stop()).unwrap();
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
    assert_eq!(m["threshold_source"], "chosen on this run's val split");
    let csv = std::fs::read_to_string(&r.predictions_csv).unwrap();
    assert!(csv.starts_with("image_id,patient_id,Atelectasis,Cardiomegaly"));
    assert_eq!(csv.lines().count(), r.evaluation.n_images + 1);
    // Scoring the written predictions again reproduces the AUROCs.
    let mean = m["mean_auroc"].as_f64().unwrap();
    assert!((mean - r.evaluation.mean_auroc.unwrap()).abs() < 1e-12);
    // `evaluate --predictions` never writes into a run's folder, by default (the CSV's own
    // folder) or by --out: the run's val-thresholded metrics stay as they were.
    let before = std::fs::read(&r.metrics_json).unwrap();
    for out in [None, Some(out.run.root())] {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"));
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
        false,
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
        true
    )
    .is_err());
    assert!(!strict_out.exists());
    assert!(predict_files(
        ModelSource::Checkpoint(&out.run.root().join("best.safetensors")),
        std::slice::from_ref(&bad),
        &strict_out,
        Some("cpu"),
        false
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
        false,
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
    // ≤ 1/4), relative to the largest |logit| of these probabilities.
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

/// `export --out` a folder (existing, or a path ending in `/`) writes `<stem>.pt` and its spec
/// inside and leaves no temp file; the checkpoint itself is refused as a target; `predict
/// --model` names a missing module, a missing spec and a file that is no module, each on one
/// line.
fn export_targets_are_checked(w: &World, best: &Path, img: &Path) {
    use muxmed::eval::export::export;
    let existing = w.root.join("exported");
    let e = export(best, &existing, Some("cpu")).unwrap();
    assert_eq!(e.model, existing.join("best.pt"));
    assert!(existing.join("best.json").is_file());
    let fresh = w.root.join("fresh_dir/");
    let e = export(
        best,
        Path::new(&format!("{}/", fresh.display())),
        Some("cpu"),
    )
    .unwrap();
    assert_eq!(e.model, fresh.join("best.pt"));
    let leftovers: Vec<_> = [&w.root, &existing, &fresh]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let before = std::fs::read(best).unwrap();
    let err = export(best, best, Some("cpu")).unwrap_err().to_string();
    assert!(err.contains("is the checkpoint being exported"), "{err}");
    assert_eq!(std::fs::read(best).unwrap(), before);
    let predict = |model: &Path| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"))
            .arg("predict")
            .arg("--model")
            .arg(model)
            .arg(img)
            .arg("--out")
            .arg(w.root.join("never.csv"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).trim().to_string()
    };
    let err = predict(&w.root.join("absent.pt"));
    assert!(err.contains("absent.pt: no exported module here"), "{err}");
    let random = w.root.join("random.pt");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let err = predict(&random);
    assert!(
        err.contains("not a TorchScript module written by `muxmed export`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::copy(existing.join("best.pt"), w.root.join("lonely.pt")).unwrap();
    let err = predict(&w.root.join("lonely.pt"));
    assert!(
        err.contains("lonely.json: cannot read the export's spec (no such file)"),
        "{err}"
    );
    assert!(!w.root.join("never.csv").exists());
}

/// `muxmed export` of the run's best checkpoint: model.json says how to feed it, the module
/// reloaded through libtorch gives the native network's logits for a batch size it was not
/// traced with, `predict --model` gives `predict --checkpoint`'s probabilities, and
/// `model forward --checkpoint` the same logits from the command line.
fn export_round_trip(w: &World, run: &RunDir, img: &Path, checkpoint_csv: &Path) {
    use muxmed::eval::run_eval::{predict_files, ModelSource};
    use muxmed::model::export::ExportManifest;
    use muxmed::run::checkpoint::load_checkpoint;
    use sha2::Digest;
    let best = run.root().join("best.safetensors");
    let pt = w.root.join("exported/model.pt");
    let e = muxmed::eval::export::export(&best, &pt, Some("cpu")).unwrap();
    assert_eq!(e.manifest, w.root.join("exported/model.json"));
    let m = ExportManifest::read(&e.manifest).unwrap();
    assert_eq!(m.labels, muxmed::labels::LABELS.map(String::from));
    assert_eq!((m.resolution, m.working_size), (64, 64));
    let sha = format!("{:x}", sha2::Sha256::digest(std::fs::read(&best).unwrap()));
    assert_eq!(m.checkpoint_sha256, sha);
    let t = m
        .thresholds
        .as_ref()
        .expect("the run was evaluated: val thresholds");
    assert_eq!(t.len(), 14);
    let p = m.preprocessing.as_ref().unwrap();
    assert!(p.grey_to_rgb && p.mean == muxmed::config::augment::IMAGENET_MEAN.to_vec());

    tch::manual_seed(3);
    let x = tch::Tensor::randn([3, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
    let native = load_checkpoint(&best, tch::Device::Cpu).unwrap();
    let want = tch::no_grad(|| native.net.forward_t(&x, false));
    let module = tch::CModule::load(&pt).unwrap();
    let got = module.forward_ts(&[&x]).unwrap();
    assert_eq!(got.size(), [3, 14]);
    // The export is the folded model (BatchNorm in the convs) run by TorchScript: another
    // rounding of each weight and another summation order over the same path.
    tolerance::assert_close("export", &got, &want, tolerance::MUXNET_DEMO_64);
    // Probabilities: the sigmoid's slope is at most 1/4, so a logit error of δ moves a
    // probability by at most δ/4.
    let prob_tol = tolerance::MUXNET_DEMO_64.reorder_tolerance() * tolerance::scale_of(&want) / 4.0;

    let exported_csv = w.root.join("p_exported.csv");
    predict_files(
        ModelSource::Exported(&pt),
        &[img.to_path_buf()],
        &exported_csv,
        Some("cpu"),
        false,
    )
    .unwrap();
    let values = |p: &Path| -> Vec<f64> {
        let text = std::fs::read_to_string(p).unwrap();
        let row = text.lines().nth(1).unwrap().split(',').skip(2);
        row.map(|v| v.parse().unwrap()).collect()
    };
    let (a, b) = (values(&exported_csv), values(checkpoint_csv));
    assert_eq!(a.len(), 14);
    for (a, b) in a.iter().zip(&b) {
        assert!(
            (a - b).abs() <= prob_tol,
            "predict --model {a} vs --checkpoint {b} (tolerance {prob_tol:e})"
        );
    }

    // The DICOM fixtures through the export: every readable file scored, each bad one named.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/dicom");
    let r = predict_files(
        ModelSource::Exported(&pt),
        std::slice::from_ref(&fixtures),
        &w.root.join("p_dicom.csv"),
        Some("cpu"),
        false,
    )
    .unwrap();
    assert_eq!((r.written, r.failed.len()), (8, 4), "{:?}", r.failed);
    let mut bad: Vec<String> = r
        .failed
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    bad.sort();
    for (p, stem) in bad.iter().zip([
        "dx_mono2_12bit_jpegls_lossless",
        "no_pixel_data",
        "not_dicom",
        "truncated",
    ]) {
        assert!(p.ends_with(&format!("{stem}.dcm")), "{p}");
    }
    assert!(r
        .probs
        .iter()
        .all(|(_, p)| p.iter().all(|v| (0.0..=1.0).contains(v))));

    export_targets_are_checked(w, &best, img);

    let input = w.root.join("x.safetensors");
    tch::Tensor::write_safetensors(&[("input", &x)], &input).unwrap();
    let output = w.root.join("y.safetensors");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"))
        .args(["model", "forward", "--checkpoint"])
        .arg(&best)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let y = tch::Tensor::read_safetensors(&output).unwrap();
    let logits = &y.iter().find(|(k, _)| k == "logits").unwrap().1;
    tolerance::assert_close(
        "model forward --checkpoint against the export",
        logits,
        &got,
        tolerance::MUXNET_DEMO_64,
    );
}

/// `localize` on a small synthetic run: every test-image box is scored once per source, a
/// box on a training image is ignored and counted, and `explain` writes its pictures and an
/// original-size map.
fn localize_and_explain(w: &World, run: &RunDir) {
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
    let opt = muxmed::eval::predictions::EvalOptions {
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
}

/// `compare` on two trained runs: their own evaluations, checkpoint costs, and a refusal
/// when one was not evaluated.
fn compare_two_runs(w: &World, a: &RunDir, b: &RunDir) {
    use muxmed::compare::{inputs::Source, stats::StatsOptions, CompareJob};
    let k = key(Split::Test, Checkpoint::Best, false);
    let job = CompareJob {
        sources: vec![
            Source::Run {
                dir: a.root().to_path_buf(),
                key: k,
            },
            Source::Run {
                dir: b.root().to_path_buf(),
                key: k,
            },
        ],
        names: None,
        split: Split::Test,
        out: w.root.join("cmp"),
        stats: StatsOptions {
            test: muxmed::metrics::paired::AucTest::Clustered,
            resamples: 50,
            seed: 0,
        },
        measure_cost: true,
    };
    let e = muxmed::compare::run(&job).err().unwrap().to_string();
    assert!(
        e.contains("muxmed evaluate --run") && e.contains("--split test"),
        "{e}"
    );
    let opt = muxmed::eval::predictions::EvalOptions {
        resamples: 20,
        ..Default::default()
    };
    let mdirs = w.root.join("data_manifests");
    let evals: Vec<_> = [a, b]
        .iter()
        .map(|r| {
            muxmed::eval::run_eval::evaluate_run(r.root(), &mdirs, k, &opt, Some("cpu")).unwrap()
        })
        .collect();
    let o = muxmed::compare::run(&job).unwrap();
    let c = &o.comparison;
    assert_eq!(c.inputs[0].name, "es");
    assert_eq!(c.inputs[0].protocol.as_deref(), Some("official"));
    for (inp, ev) in c.inputs.iter().zip(&evals) {
        // The same AUROCs as the run's own evaluation.
        let ours: Vec<Option<f64>> = inp.per_label.iter().map(|l| l.auroc).collect();
        let theirs: Vec<Option<f64>> = ev.evaluation.per_label.iter().map(|l| l.auroc).collect();
        assert_eq!(ours, theirs);
        assert_eq!(inp.n_images, ev.evaluation.n_images);
        let cost = inp.cost.as_ref().unwrap();
        assert!(cost.batch_1.images_per_s > 0.0 && cost.batch_32.images_per_s > 0.0);
        assert_eq!(inp.params, Some(a.info().unwrap().params as u64));
    }
    let p = &c.pairs[0];
    for l in &p.per_label {
        match (l.auroc_a, l.auroc_b) {
            (Some(x), Some(y)) => assert_eq!(l.delta, Some(x - y)),
            _ => assert_eq!((l.delta, l.p), (None, None)),
        }
    }
    assert!(o.html.is_file());
    assert!(!o.warnings.iter().any(|w| w.contains("older than")));
    // Weights written after the evaluation: the comparison says its predictions are stale.
    let best = b.checkpoint(Checkpoint::Best);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .append(true)
        .open(&best)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let o = muxmed::compare::run(&job).unwrap();
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("older than best.safetensors") && w.contains("`tta`")),
        "{:?}",
        o.warnings
    );
}

#[test]
fn train_without_the_nih_data_says_where_it_is_expected() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"))
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

/// Per-label AUROCs of a metrics file.
fn aurocs(path: &Path) -> Vec<Option<f64>> {
    muxmed::eval::predictions::Evaluation::read(path)
        .unwrap()
        .per_label
        .iter()
        .map(|m| m.auroc)
        .collect()
}

fn argmax_epoch(h: &[muxmed::run::EpochRow], f: fn(&muxmed::run::EpochRow) -> Option<f64>) -> u32 {
    h.iter()
        .filter_map(|r| Some((r.epoch, f(r)?)))
        .fold((0, f64::MIN), |b, (e, v)| if v > b.1 { (e, v) } else { b })
        .0
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
    let opt = muxmed::eval::predictions::EvalOptions {
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
        let written = muxmed::eval::predictions::Evaluation::read(&r.metrics_json).unwrap();
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

#[test]
fn a_resume_after_a_manifest_rebuild_trains_on_the_runs_own_splits() {
    let _torch = torch_lock();
    let w = world(120, "");
    let mut a = args(&w, "moved", &["train.epochs=2"]);
    a.stop_after_steps = Some(2);
    let first = train(&a, no_stop()).unwrap();
    assert_eq!(first.state.status, Status::Interrupted);
    let train_ids = first.run.split(Split::Train).unwrap().image_ids;
    let cfg = config::load(&w.pipeline, &["data.protocol=random_patient".into()])
        .unwrap()
        .config;
    let mdir = w.root.join("data_manifests/tiny");
    muxmed::data::manifest::build(&cfg.data, true)
        .unwrap()
        .write(&mdir)
        .unwrap();
    muxmed::data::cache::prepare(&mdir, &cfg.augment, &|_, _| {}).unwrap();
    // While another live process holds the run's lock, a resume is refused.
    let mut holder = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(first.run.lock_file(), format!("{}\n", holder.id())).unwrap();
    let resume = resume_args(&w, first.run.root().to_path_buf());
    let e = format!("{:#}", train(&resume, no_stop()).unwrap_err());
    assert!(
        e.contains("run.lock") && e.contains(&holder.id().to_string()),
        "{e}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let resumed = train(&resume_args(&w, first.run.root().to_path_buf()), no_stop()).unwrap();
    assert_eq!(resumed.state.status, Status::Finished);
    assert!(resumed.notice.as_deref().unwrap().contains("has changed"));
    // The run still holds (and trained on) the split it started with.
    assert_eq!(
        resumed.run.split(Split::Train).unwrap().image_ids,
        train_ids
    );
    let info = resumed.run.info().unwrap();
    assert_eq!(info.train_images, train_ids.len());
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

#[test]
fn a_failed_start_leaves_no_run_directory() {
    let _torch = torch_lock();
    let w = world(40, "");
    let broken = w.root.join("broken.json");
    std::fs::write(
        &broken,
        "{\"arch_def\": [[\"zz_r1\"]], \"stem_size\": 8, \"num_features\": 16}",
    )
    .unwrap();
    let cases: Vec<(TrainArgs, &str)> = vec![
        (
            args(
                &w,
                "w",
                &[
                    "model.from_scratch=false",
                    "model.weights=nowhere.safetensors",
                ],
            ),
            "nowhere.safetensors",
        ),
        (
            args(
                &w,
                "f",
                &[
                    "model.from_scratch=false",
                    &format!("model.weights={}", w.root.display()),
                ],
            ),
            "is a folder, not a weights file",
        ),
        (
            TrainArgs {
                device: Some("tpu".into()),
                ..args(&w, "d", &[])
            },
            "unknown device",
        ),
        (
            TrainArgs {
                device: Some("cuda".into()),
                ..args(&w, "c", &[])
            },
            "CUDA is not available",
        ),
        (
            args(&w, "a", &[&format!("model.arch={}", broken.display())]),
            "broken.json",
        ),
        (
            TrainArgs {
                run_name: Some("../../escape".into()),
                ..args(&w, "x", &[])
            },
            "--run-name",
        ),
    ];
    for (a, want) in cases {
        let e = format!("{:#}", train(&a, no_stop()).unwrap_err());
        assert!(e.contains(want), "{want}: {e}");
    }
    let left: Vec<_> = std::fs::read_dir(w.root.join("reports"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(!w.root.join("escape").exists() && !w.root.parent().unwrap().join("escape").exists());
    // A source image replaced after `prepare`: training refuses the stale cache by name.
    let test = muxmed::data::dataset::load_split(&w.root.join("data_manifests/tiny"), Split::Train)
        .unwrap();
    let (a, b) = (
        test.paths[0].clone().unwrap(),
        test.paths[1].clone().unwrap(),
    );
    std::fs::copy(&b, &a).unwrap();
    let e = format!(
        "{:#}",
        train(&args(&w, "stale", &[]), no_stop()).unwrap_err()
    );
    assert!(
        e.contains("stale") && e.contains("1 source image") && e.contains(&test.image_ids[0]),
        "{e}"
    );
    assert!(!w.root.join("reports/stale").exists());
}

#[test]
fn resume_refuses_options_it_would_ignore() {
    for extra in [
        &["--set", "train.lr=0.1"][..],
        &["--pipeline", "chestxray-demo"][..],
        &["--overwrite"][..],
        &["--run-name", "other"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"))
            .args(["train", "--resume", "reports/some-run"])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot be used with"), "{extra:?}: {err}");
    }
}

#[test]
fn a_killed_run_resumes_from_its_mid_epoch_checkpoint_without_duplicate_events() {
    let w = world(200, "");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"))
        .current_dir(&w.root)
        .args(["train", "--pipeline"])
        .arg(&w.pipeline)
        .args([
            "--run-name",
            "killed",
            "--set",
            "train.epochs=2",
            "--set",
            "train.checkpoint_every_steps=3",
            "--set",
            "train.log_every=1",
            // Small batches: an epoch is ~30 steps, so the kill lands well inside epoch 1.
            "--set",
            "train.batch_size=4",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a mid-epoch checkpoint, then SIGKILL (no chance to save anything).
    let run = muxmed::run::RunDir::new(w.root.join("reports/killed"));
    let t = std::time::Instant::now();
    while !run.checkpoint(Checkpoint::Last).is_file() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let meta = muxmed::run::CheckpointMeta::from_metadata(
        &muxmed::model::weights::read_metadata(&run.checkpoint(Checkpoint::Last)).unwrap(),
    )
    .unwrap();
    let saved = meta.state.unwrap();
    assert!(
        saved.opt_step >= 3 && saved.opt_step.is_multiple_of(3),
        "{}",
        saved.opt_step
    );
    assert_eq!(saved.status, Status::Running);
    assert!(saved.epoch == 0 && saved.batch_in_epoch > 0, "{saved:?}");
    let _torch = torch_lock();
    let resumed = train(&resume_args(&w, run.root().to_path_buf()), no_stop()).unwrap();
    assert_eq!(resumed.state.status, Status::Finished);
    let steps: Vec<u64> = std::fs::read_to_string(run.events_file())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<muxmed::run::Event>(l).unwrap().step)
        .collect();
    let expected: Vec<u64> = (1..=resumed.state.opt_step).collect();
    assert_eq!(steps, expected);
}

/// A tiny search on the tiny world: a search stopped mid-way (Ctrl-C's flag) and resumed
/// ends with the archive of an uninterrupted one (proxy training is deterministic), writes
/// its figures and table, and the architecture `search select` chooses trains unchanged.
#[test]
fn a_small_search_resumes_exactly_and_its_choice_trains_unchanged() {
    use muxmed::search::engine::End;
    use muxmed::search::run::{run, SearchArgs};
    let _g = torch_lock();
    let space = "search:\n  population: 3\n  offspring: 2\n  generations: 1\n  proxy:\n    resolution: 32\n    epochs: 1\n    train_images: 48\n    batch_size: 16\n  space:\n    stem: 16\n    widths: [[16], [24], [32, 40], [40], [48, 64]]\n    sp_depths: [1, 2]\n    ir_kernels: [\"3\"]\n    ir_expansions: [3]\n    sp_kernels: [3]\n    sp_expansions: [3, 4]\n    sp_scales: [\"none\"]\n    se_ratios: [0.25]\n    split_ratios: [0.5]\n    heads: [64]\n    out_channels: 64\n";
    let w = world(160, space);
    let loaded = config::load(&w.pipeline, &[]).unwrap();
    let sargs = |name: &str, resume: bool| SearchArgs {
        pipeline: loaded.clone(),
        dir: w.root.join("reports").join(name),
        resume,
        overwrite: false,
        manifests_dir: w.root.join("data_manifests"),
        device: Some("cpu".into()),
        progress: false,
    };
    let whole = run(&sargs("whole", false), no_stop()).unwrap();
    assert_eq!(whole.end, End::Finished);
    assert_eq!(whole.archive.candidates.len(), 5);
    assert_eq!(whole.archive.generations.len(), 2);
    for f in [
        "front.png",
        "front.svg",
        "hypervolume.png",
        "front.md",
        "front.csv",
    ] {
        assert!(whole.dir.root().join(f).is_file(), "{f}");
    }
    // A second start without --resume or --overwrite is refused and changes nothing.
    let before = std::fs::read(whole.dir.archive()).unwrap();
    let err = run(&sargs("whole", false), no_stop())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
    assert_eq!(std::fs::read(whole.dir.archive()).unwrap(), before);

    // Stop once two candidates are in the archive, then resume.
    let stop = no_stop();
    let watch = {
        let (stop, archive) = (stop.clone(), w.root.join("reports/parts/archive.json"));
        std::thread::spawn(move || loop {
            let n = std::fs::read_to_string(&archive)
                .map(|t| t.matches("\"finished_at\"").count())
                .unwrap_or(0);
            if n >= 2 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        })
    };
    let first = run(&sargs("parts", false), stop).unwrap();
    watch.join().unwrap();
    assert_eq!(first.end, End::Interrupted);
    assert!(first.archive.candidates.len() < 5);
    let resumed = run(&sargs("parts", true), no_stop()).unwrap();
    assert_eq!(resumed.end, End::Finished);
    let strip = |a: &muxmed::search::archive::Archive| {
        a.candidates
            .iter()
            .map(|c| {
                (
                    c.key(),
                    c.val_auroc,
                    c.status,
                    c.params,
                    c.madds,
                    c.seed,
                    c.generation,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&resumed.archive), strip(&whole.archive));
    assert_eq!(resumed.archive.generations, whole.archive.generations);
    assert!(whole
        .archive
        .candidates
        .iter()
        .all(|c| c.val_auroc.is_some_and(|a| (0.0..=1.0).contains(&a))));

    // A learning rate that blows training up: every candidate is recorded as failed with its
    // reason, and a generation with no survivor stops the search naming the archive.
    let blown = SearchArgs {
        pipeline: config::load(&w.pipeline, &["search.proxy.lr=1e12".to_string()]).unwrap(),
        ..sargs("blown", false)
    };
    let err = run(&blown, no_stop()).err().unwrap().to_string();
    assert!(
        err.contains("every candidate failed") && err.contains("archive.json"),
        "{err}"
    );
    let failed =
        muxmed::search::archive::read_archive(&w.root.join("reports/blown/archive.json")).unwrap();
    assert_eq!(failed.candidates.len(), 3);
    for c in &failed.candidates {
        assert_eq!(c.status, muxmed::search::archive::CandidateStatus::Failed);
        let why = c.reason.as_deref().unwrap_or("");
        // The recipe's own non-finite checks, as `muxmed train` words them.
        let non_finite = ["the loss became", "the gradient norm became", "not finite"];
        assert!(non_finite.iter().any(|m| why.contains(m)), "{why}");
    }

    // The chosen architecture trains with `muxmed train` unchanged.
    let picks = muxmed::search::outputs::select(&whole.dir, &whole.archive, 1, 0.125).unwrap();
    let arch = picks[0].arch.clone();
    assert!(picks[0]
        .command
        .contains(&format!("model.arch={}", arch.display())));
    let set = format!("model.arch={}", arch.display());
    let out = train(&args(&w, "chosen", &[&set, "train.epochs=1"]), no_stop()).unwrap();
    assert_eq!(out.state.status, Status::Finished);
    assert!(out.run.checkpoint(Checkpoint::Best).is_file());
    let spec = muxmed::model::spec::ArchSpec::from_json_file(&arch).unwrap();
    let chosen = &whole.archive.candidates[picks[0].id];
    assert_eq!(&spec.arch_def, &chosen.arch_def);
}

/// A folder of 24 DICOM files for 12 patients, copied from the readable fixtures with new
/// Patient IDs and SOP Instance UIDs, and a labels CSV keyed by UID without patient ids.
fn dicom_world(dir: &Path) -> (PathBuf, PathBuf) {
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
fn generic_run_report_shows_no_published_numbers(root: &Path, run: &Path) {
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
    let opt = muxmed::eval::predictions::EvalOptions {
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

/// The search's proxy trains by `muxmed train`'s own recipe: a proxy training and a `train`
/// run with the same settings on the same images give the same loss at every optimiser step,
/// bit for bit (one process, one kernel family: the same float operations in the same order).
#[test]
fn a_proxy_training_and_train_with_the_same_settings_have_identical_losses() {
    let _torch = torch_lock();
    use muxmed::search::proxy::{ProxyData, ProxyTrainer};
    let same = [
        "train.epochs=2",
        "train.log_every=1",
        "train.seed=5",
        "train.backbone_lr_factor=1.0",
        "train.weight_decay=0.0001",
        "search.proxy.resolution=64",
        "search.proxy.epochs=2",
        "search.proxy.train_images=100000",
        "search.proxy.batch_size=16",
        "search.proxy.lr=0.003",
        "search.proxy.weight_decay=0.0001",
        "search.proxy.drop_rate=0.1",
    ];
    let w = world_with(120, "", &same, |_| {});
    let out = train(&args(&w, "recipe", &same), no_stop()).unwrap();
    let events = std::fs::read_to_string(out.run.events_file()).unwrap();
    let trained: Vec<f64> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let cfg = config::load(&w.pipeline, &same.map(String::from))
        .unwrap()
        .config;
    let mdir = w.root.join("data_manifests/tiny");
    let data = ProxyData::load(&cfg, &mdir, 0).unwrap();
    assert_eq!(
        data.train_images(),
        out.run.split(Split::Train).unwrap().len()
    );
    let trainer = ProxyTrainer {
        data,
        stop: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        device: tch::Device::Cpu,
    };
    let spec = muxmed::model::ArchSpec::from_json_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json"),
    )
    .unwrap();
    let proxied = trainer.train(&spec, 5);
    assert!(
        matches!(proxied.outcome, muxmed::search::engine::Outcome::Scored(_)),
        "{:?}",
        proxied.outcome
    );
    assert!(trained.len() >= 8, "{}", trained.len());
    assert_eq!(proxied.losses, trained);
}
