//! `muxmed search`: exact resume, the chosen candidate trained unchanged, and the proxy
//! trained by train's own recipe.

use std::path::Path;

use muxmed::config;
use muxmed::labels::Split;
use muxmed::run::{Checkpoint, Status};
use muxmed::train::train;

use super::support::{args, no_stop, torch_lock, world, world_with};

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
