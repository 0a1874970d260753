//! `muxmed compare` of two trained runs.

use muxmed::labels::Split;
use muxmed::run::{Checkpoint, RunDir};

use super::support::{key, World};

/// `compare` on two trained runs: their own evaluations, checkpoint costs, and a refusal
/// when one was not evaluated.
pub fn compare_two_runs(w: &World, a: &RunDir, b: &RunDir) {
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
        filter: None,
    };
    let e = muxmed::compare::run(&job).err().unwrap().to_string();
    assert!(
        e.contains("muxmed evaluate --run") && e.contains("--split test"),
        "{e}"
    );
    let opt = muxmed::eval::scoring::EvalOptions {
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
    compare_women_only(w, &job, c);
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

/// `--where sex=F` on two runs: the images are the test split's women, counted from the
/// synthetic metadata CSV, and each input's AUROC is a pair count over its predictions file
/// on those images.
fn compare_women_only(
    w: &World,
    job: &muxmed::compare::CompareJob,
    all: &muxmed::compare::stats::Comparison,
) {
    let meta = std::fs::read_to_string(w.root.join("synth/Data_Entry_2017_v2020.csv")).unwrap();
    let women: std::collections::HashSet<&str> = meta
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(5) == Some("F"))
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let mut job = job.clone();
    job.filter = Some(muxmed::eval::subgroups::GroupFilter::parse("sex=F").unwrap());
    job.out = w.root.join("cmp_women");
    let c = muxmed::compare::run(&job).unwrap().comparison;
    let muxmed::compare::inputs::Source::Run { dir, key } = &job.sources[0] else {
        unreachable!()
    };
    let pred = std::fs::read_to_string(RunDir::open(dir).unwrap().predictions(key)).unwrap();
    let mut lines = pred.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| women.contains(r[0]))
        .collect();
    assert_eq!(c.n_images, rows.len());
    assert!(c.n_images > 0 && c.n_images < all.n_images);
    assert_eq!(c.restricted_to.as_deref(), Some("sex F"));
    let labels: std::collections::HashMap<&str, &str> = meta
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0], f[1])
        })
        .collect();
    let mut checked = 0;
    for l in &c.inputs[0].per_label {
        let col = header.iter().position(|h| *h == l.label).unwrap();
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for r in &rows {
            let p: f64 = r[col].parse().unwrap();
            if labels[r[0]].split('|').any(|x| x == l.label) {
                pos.push(p);
            } else {
                neg.push(p);
            }
        }
        let want = super::external::pairs_auroc(&pos, &neg);
        match (l.auroc, want) {
            (Some(a), Some(b)) => {
                assert!((a - b).abs() < 1e-12, "{}: {a} {b}", l.label);
                checked += 1;
            }
            (a, b) => assert_eq!(a.is_some(), b.is_some(), "{}", l.label),
        }
    }
    assert!(
        checked >= 3,
        "{checked} labels with both classes among the women"
    );
}

/// `compare` of two runs' external evaluations on one CheXpert-format pipeline
/// (`RUN/external/<pipeline>` inputs): the images are valid.csv's, the labels the scored
/// concepts, and each input's AUROC is recounted from its predictions file and valid.csv's
/// cells. A run's own evaluation beside an external one is refused (other images).
pub fn compare_external_evaluations(w: &World, a: &RunDir, b: &RunDir) {
    use super::external::{chexpert_pipeline, recount_auroc, score_on, valid_cells};
    use muxmed::compare::{inputs::Source, stats::StatsOptions, CompareJob};
    let (cx, other) = chexpert_pipeline(w, "cmp-cx", 120, 4, 0.5);
    let mdirs = w.root.join("data_manifests");
    let k = key(Split::Test, Checkpoint::Best, false);
    let ek = muxmed::run::ExternalKey {
        eval: k,
        all: false,
    };
    let opt = muxmed::eval::scoring::EvalOptions {
        resamples: 20,
        ..Default::default()
    };
    for r in [a, b] {
        score_on(r, &mdirs, &other, ek, &opt).unwrap();
    }
    let ext = |r: &RunDir| {
        Source::classify(&r.root().join("external/cmp-cx"), k, None, None, &mdirs).unwrap()
    };
    let mut job = CompareJob {
        sources: vec![ext(a), ext(b)],
        names: None,
        split: Split::Test,
        out: w.root.join("cmp-ext"),
        stats: StatsOptions {
            test: muxmed::metrics::paired::AucTest::Clustered,
            resamples: 50,
            seed: 0,
        },
        measure_cost: false,
        filter: None,
    };
    let c = muxmed::compare::run(&job).unwrap().comparison;
    let cells = valid_cells(&cx);
    assert_eq!(c.n_images, cells.len());
    assert_eq!(
        c.inputs[0].name,
        format!("{}@cmp-cx", a.root().file_name().unwrap().to_string_lossy())
    );
    assert_eq!(
        c.inputs[0].kind,
        muxmed::compare::stats::InputKind::External
    );
    assert!(c.labels.contains(&"Effusion".to_string()) && !c.labels.contains(&"Mass".to_string()));
    for (inp, r) in c.inputs.iter().zip([a, b]) {
        for l in &inp.per_label {
            let pred = r.external("cmp-cx").predictions(&ek);
            match (recount_auroc(&pred, &cells, &l.label).0, l.auroc) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-12, "{}: {x} {y}", l.label),
                (x, y) => assert_eq!(x, y, "{}", l.label),
            }
        }
    }
    job.sources[1] = Source::Run {
        dir: b.root().to_path_buf(),
        key: k,
    };
    let e = muxmed::compare::run(&job).err().unwrap().to_string();
    assert!(
        e.contains("on pipeline `cmp-cx`'s data (an external evaluation)")
            && e.contains("compare models on the same data"),
        "{e}"
    );
    let e = Source::classify(
        &a.root().join("external/cmp-cx"),
        key(Split::Val, Checkpoint::Best, false),
        None,
        None,
        &mdirs,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("compare with --split test"), "{e}");
}
