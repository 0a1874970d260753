//! The set-up every end-to-end test shares: a tiny synthetic world (synth → manifest →
//! prepare, with a hook to damage files between), training arguments, the libtorch lock.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use muxmed::config;
use muxmed::data::synth::{write, SynthOptions};
use muxmed::labels::Split;
use muxmed::run::{Checkpoint, EvalKey};
use muxmed::train::TrainArgs;

/// libtorch's random generator is global to the process and the tests of this file run in
/// parallel threads: training tests take this lock so their seeded draws do not interleave.
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn torch_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct World {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub pipeline: PathBuf,
}

pub fn world(images: usize, extra_yaml: &str) -> World {
    world_with(images, extra_yaml, &[], |_| {})
}

/// A tiny world whose manifest is built, then `edit` runs on the manifest folder (to damage
/// files, say), then `prepare` runs with the pipeline and `overrides`.
pub fn world_with(
    images: usize,
    extra_yaml: &str,
    overrides: &[&str],
    edit: impl Fn(&Path),
) -> World {
    world_of_size(images, 64, extra_yaml, overrides, edit)
}

/// `world_with` on synthetic images of `size` × `size` pixels.
pub fn world_of_size(
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

pub fn args(w: &World, run: &str, overrides: &[&str]) -> TrainArgs {
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
pub fn demo_net(drop_rate: f64, head: muxmed::model::muxnet::HeadInit) -> tch::nn::VarStore {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let arch = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json");
    let arch = muxmed::config::Arch::Json(arch);
    muxmed::model::network::Network::build(&vs.root(), &arch, 14, drop_rate, head).unwrap();
    vs
}

/// Arguments that resume the run at `run` of world `w`.
pub fn resume_args(w: &World, run: PathBuf) -> TrainArgs {
    resume_args_in(&w.root, run)
}

/// Arguments that resume `run` with reports/ and data_manifests/ under `root`.
pub fn resume_args_in(root: &Path, run: PathBuf) -> TrainArgs {
    TrainArgs {
        resume: Some(run),
        reports_dir: root.join("reports"),
        manifests_dir: root.join("data_manifests"),
        ..Default::default()
    }
}

pub fn key(split: Split, checkpoint: Checkpoint, tta: bool) -> EvalKey {
    EvalKey {
        split,
        checkpoint,
        tta,
    }
}

pub fn no_stop() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

pub fn model_only(
    t: &std::collections::BTreeMap<String, tch::Tensor>,
) -> Vec<(&String, &tch::Tensor)> {
    t.iter()
        .filter(|(k, _)| !k.starts_with("optim.") && !k.starts_with("ema."))
        .collect()
}

/// Per-label AUROCs of a metrics file.
pub fn aurocs(path: &Path) -> Vec<Option<f64>> {
    muxmed::eval::scoring::Evaluation::read(path)
        .unwrap()
        .per_label
        .iter()
        .map(|m| m.auroc)
        .collect()
}

pub fn argmax_epoch(
    h: &[muxmed::run::EpochRow],
    f: fn(&muxmed::run::EpochRow) -> Option<f64>,
) -> u32 {
    h.iter()
        .filter_map(|r| Some((r.epoch, f(r)?)))
        .fold((0, f64::MIN), |b, (e, v)| if v > b.1 { (e, v) } else { b })
        .0
}
