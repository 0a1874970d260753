//! Resuming and interrupting: exact resume, SIGINT/SIGTERM, the run lock, mid-epoch
//! checkpoints, options a resume would ignore, a start that fails.

use std::path::Path;

use muxmed::config;
use muxmed::labels::Split;
use muxmed::model::weights::read_safetensors;
use muxmed::run::{Checkpoint, Status};
use muxmed::train::{train, TrainArgs};

use super::support::{args, model_only, no_stop, resume_args, torch_lock, world};
use crate::bin::muxmed;

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
fn sigint_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume() {
    let w = world(200, "");
    // The shell's convention: 128 + the signal's number.
    for (sig, code) in [("INT", 130), ("TERM", 143)] {
        let name = format!("sig{sig}");
        let mut child = muxmed()
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
        let out = muxmed()
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
    let mut child = muxmed()
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
