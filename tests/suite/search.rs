//! `muxmed search` without libtorch: Pareto ranks, crowding and hypervolume against pymoo
//! (`../shared/fixtures/moo/moo_cases.json`, 1e-9), and the search loop with a scripted
//! evaluator: resume equals an uninterrupted run, failures are recorded, over-budget
//! candidates are never trained, and every candidate's arch file builds the counted model.

use std::cell::Cell;
use std::rc::Rc;

use crate::muxmed;
use muxmed::config::SearchConfig;
use muxmed::model::count::count;
use muxmed::model::spec::ArchSpec;
use muxmed::search::archive::{read_archive, CandidateStatus, Evaluated, SearchDir};
use muxmed::search::engine::{new_archive, End, Engine, Evaluator, Outcome};
use muxmed::search::pareto::{crowding_all, hypervolume, non_dominated_ranks};
use muxmed::search::space::Candidate;

fn moo_cases() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/moo/moo_cases.json"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn ranks_crowding_and_hypervolume_agree_with_pymoo() {
    let cases = moo_cases();
    assert_eq!(cases.len(), 24);
    let mut crowding_checked = 0;
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let points: Vec<Vec<f64>> = c["points"].as_array().unwrap().iter().map(floats).collect();
        let ranks = non_dominated_ranks(&points, None);
        let want: Vec<usize> = c["rank"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(ranks, want, "{name}: ranks");
        let hv = hypervolume(&points, &floats(&c["ref"]));
        let want_hv = c["hv"].as_f64().unwrap();
        assert!(
            (hv - want_hv).abs() < 1e-9,
            "{name}: hv {hv} vs pymoo {want_hv}"
        );
        if c["crowding"].is_null() {
            continue;
        }
        let crowd = crowding_all(&points, &ranks);
        for (i, (ours, theirs)) in crowd
            .iter()
            .zip(c["crowding"].as_array().unwrap())
            .enumerate()
        {
            match theirs.as_f64() {
                None => assert!(ours.is_infinite(), "{name} point {i}: {ours} vs infinite"),
                Some(t) => assert!((ours - t).abs() < 1e-9, "{name} point {i}: {ours} vs {t}"),
            }
        }
        crowding_checked += 1;
    }
    assert!(crowding_checked >= 12, "{crowding_checked}");
}

/// Scores a candidate from its size, with a seed-dependent wobble; "runs out of memory" on
/// every candidate with a 32-wide first stage; stops (as Ctrl-C would) after `stop_after`.
struct Scripted {
    calls: Rc<Cell<usize>>,
    stop_after: Option<usize>,
    max_madds_trained: Rc<Cell<u64>>,
}

impl Evaluator for Scripted {
    fn evaluate(&mut self, c: &Candidate, seed: u64) -> Outcome {
        if self.stop_after.is_some_and(|n| self.calls.get() >= n) {
            return Outcome::Abandoned;
        }
        self.calls.set(self.calls.get() + 1);
        let n = count(&c.spec, 14, 224).unwrap();
        self.max_madds_trained
            .set(self.max_madds_trained.get().max(n.madds));
        if c.spec.arch_def[1][0].contains("_c32_") {
            return Outcome::Failed("out of memory (scripted)".into());
        }
        let size = n.madds as f64 / 1e8;
        Outcome::Scored(0.6 + 0.3 * (1.0 - (-size).exp()) + (seed % 1000) as f64 * 1e-5)
    }
}

fn config() -> SearchConfig {
    SearchConfig {
        population: 8,
        offspring: 6,
        generations: 4,
        max_madds: Some(300_000_000),
        seed: 7,
        ..SearchConfig::default()
    }
}

fn labels() -> Vec<String> {
    muxmed::labels::LABELS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn run(dir: &SearchDir, stop_after: Option<usize>) -> (End, usize, u64) {
    run_with(dir, stop_after, &config())
}

fn run_with(dir: &SearchDir, stop_after: Option<usize>, cfg: &SearchConfig) -> (End, usize, u64) {
    let archive = if dir.exists() {
        dir.read_archive().unwrap()
    } else {
        new_archive("test", cfg, &labels(), 224).unwrap()
    };
    let calls = Rc::new(Cell::new(0));
    let biggest = Rc::new(Cell::new(0));
    let eval = Scripted {
        calls: calls.clone(),
        stop_after,
        max_madds_trained: biggest.clone(),
    };
    let end = Engine::new(dir, archive, eval).run().unwrap();
    (end, calls.get(), biggest.get())
}

fn without_times(rows: &[Evaluated]) -> Vec<Evaluated> {
    rows.iter()
        .map(|r| Evaluated {
            seconds: 0.0,
            finished_at: String::new(),
            ..r.clone()
        })
        .collect()
}

/// A search no candidate of which meets the budget has no front: it is an error giving the
/// smallest candidate's counts against the budget, never an empty success.
#[test]
fn a_budget_no_candidate_meets_is_an_error_with_the_smallest_count() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = SearchDir::new(tmp.path().join("tight"));
    let cfg = SearchConfig {
        max_madds: Some(1000),
        generations: 1,
        ..config()
    };
    let (end, calls, _) = run_with(&dir, None, &cfg);
    assert_eq!((end, calls), (End::Finished, 0));
    let a = dir.read_archive().unwrap();
    let smallest = a.candidates.iter().map(|c| c.madds).min().unwrap();
    let e = a.require_feasible().unwrap_err();
    assert!(e.starts_with("no candidate meets the budget"), "{e}");
    assert!(
        e.contains(&format!(
            "{smallest} multiply-adds (search.max_madds: 1000)"
        )),
        "{e}"
    );
    // With the default budget the same check passes.
    let ok = SearchDir::new(tmp.path().join("ok"));
    run(&ok, None);
    ok.read_archive().unwrap().require_feasible().unwrap();
}

#[test]
fn a_resumed_search_equals_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = SearchDir::new(tmp.path().join("whole"));
    let (end, calls, biggest) = run(&whole, None);
    assert_eq!(end, End::Finished);
    assert!(
        biggest <= 300_000_000,
        "trained a candidate over budget: {biggest}"
    );
    let a = whole.read_archive().unwrap();
    assert_eq!(a.generations.len(), 5);
    assert_eq!(a.candidates.len(), 8 + 4 * 6);
    // Every scored or failed candidate was trained exactly once; infeasible ones never.
    let trained = a
        .candidates
        .iter()
        .filter(|c| c.status != CandidateStatus::Infeasible)
        .count();
    assert_eq!(calls, trained);
    // MUXNet-m and -l are in the initial design; -l (314.9M MAdds) is over the 300M budget.
    let flat = |s: &ArchSpec| s.arch_def.iter().flatten().cloned().collect::<Vec<_>>();
    let find = |spec: ArchSpec| {
        a.candidates
            .iter()
            .find(|c| c.arch_def.iter().flatten().cloned().collect::<Vec<_>>() == flat(&spec))
            .unwrap()
            .clone()
    };
    let m = find(ArchSpec::muxnet_m());
    assert_eq!((m.params, m.status), (2_091_210, CandidateStatus::Ok));
    assert!((215_000_000..216_000_000).contains(&m.madds), "{}", m.madds);
    let l = find(ArchSpec::muxnet_l());
    assert_eq!(l.status, CandidateStatus::Infeasible);
    assert!(l.violation > 0.0 && l.val_auroc.is_none());
    // Failures are recorded with their reason and never survive.
    let failed: Vec<&Evaluated> = a
        .candidates
        .iter()
        .filter(|c| c.status == CandidateStatus::Failed)
        .collect();
    assert!(!failed.is_empty());
    assert!(failed
        .iter()
        .all(|c| c.reason.as_deref() == Some("out of memory (scripted)")));
    for g in &a.generations {
        assert_eq!(g.population.len(), 8);
        assert!(g
            .population
            .iter()
            .all(|&i| a.candidates[i].status != CandidateStatus::Failed));
    }
    // Hypervolume never falls: the archive only grows.
    assert!(a
        .generations
        .windows(2)
        .all(|w| w[1].hypervolume >= w[0].hypervolume));
    assert!(a.generations[4].hypervolume > 0.0);
    // Distinct phenotypes.
    let mut keys: Vec<String> = a.candidates.iter().map(Evaluated::key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), a.candidates.len());

    // Interrupted twice (once inside the initial design, once in generation 2), then resumed.
    let parts = SearchDir::new(tmp.path().join("parts"));
    assert_eq!(run(&parts, Some(3)).0, End::Interrupted);
    let first = parts.read_archive().unwrap();
    assert_eq!(
        first
            .candidates
            .iter()
            .filter(|c| c.status != CandidateStatus::Infeasible)
            .count(),
        3
    );
    assert_eq!(run(&parts, Some(9)).0, End::Interrupted);
    assert_eq!(run(&parts, None).0, End::Finished);
    let b = read_archive(&parts.archive()).unwrap();
    assert_eq!(without_times(&b.candidates), without_times(&a.candidates));
    assert_eq!(b.generations, a.generations);

    // Every candidate's arch file is an arch JSON whose counts are the archive's.
    for c in &a.candidates {
        let spec = ArchSpec::from_json_file(&whole.arch_file(c.id)).unwrap();
        let n = count(&spec, 14, 224).unwrap();
        assert_eq!((n.total_params, n.madds), (c.params, c.madds));
    }
}

#[test]
fn the_surrogate_reports_its_kendall_tau_and_resumes_exactly() {
    let mut cfg = config();
    cfg.surrogate.enabled = true;
    cfg.surrogate.folds = 3;
    cfg.population = 12;
    // No scripted failures (32-wide first stages) and no budget: every candidate is scored.
    cfg.space.widths[0] = vec![16, 24];
    cfg.max_madds = None;
    let tmp = tempfile::tempdir().unwrap();
    let whole = SearchDir::new(tmp.path().join("whole"));
    assert_eq!(run_with(&whole, None, &cfg).0, End::Finished);
    let a = whole.read_archive().unwrap();
    assert_eq!(a.candidates.len(), 12 + 4 * 6);
    assert_eq!(a.generations[0].surrogate_tau, None);
    for g in &a.generations[1..] {
        let scored = a
            .candidates
            .iter()
            .filter(|c| c.generation < g.generation && c.val_auroc.is_some())
            .count();
        let tau = g
            .surrogate_tau
            .unwrap_or_else(|| panic!("generation {}: no τ with {scored} scored", g.generation));
        // The scripted accuracy is a smooth function of the multiply-adds, which the genome
        // determines: held-back points must be ranked better than by chance.
        assert!(
            tau > 0.2 && tau <= 1.0,
            "generation {}: τ {tau}",
            g.generation
        );
    }
    let parts = SearchDir::new(tmp.path().join("parts"));
    assert_eq!(run_with(&parts, Some(15), &cfg).0, End::Interrupted);
    assert_eq!(run_with(&parts, None, &cfg).0, End::Finished);
    let b = parts.read_archive().unwrap();
    assert_eq!(without_times(&b.candidates), without_times(&a.candidates));
    assert_eq!(b.generations, a.generations);
}

#[test]
fn search_front_cli_prints_pymoo_numbers_for_a_points_csv() {
    let tmp = tempfile::tempdir().unwrap();
    for c in moo_cases()
        .iter()
        .filter(|c| !c["crowding"].is_null())
        .take(4)
    {
        let points: Vec<Vec<f64>> = c["points"].as_array().unwrap().iter().map(floats).collect();
        let m = points[0].len();
        let mut csv = (1..=m)
            .map(|k| format!("f{k}"))
            .collect::<Vec<_>>()
            .join(",")
            + "\n";
        for p in &points {
            csv += &(p
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(",")
                + "\n");
        }
        let path = tmp.path().join("points.csv");
        std::fs::write(&path, csv).unwrap();
        let r = floats(&c["ref"])
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(",");
        let out = muxmed()
            .args(["search", "front", "--points"])
            .arg(&path)
            .args(["--ref", &r, "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["rank"], c["rank"], "{}", c["name"]);
        let hv = got["hypervolume"].as_f64().unwrap();
        assert!((hv - c["hv"].as_f64().unwrap()).abs() < 1e-9);
        for (a, b) in got["crowding"]
            .as_array()
            .unwrap()
            .iter()
            .zip(c["crowding"].as_array().unwrap())
        {
            match (a.as_f64(), b.as_f64()) {
                (None, None) => assert!(a.is_null() && b.is_null()),
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9, "{x} vs {y}"),
                _ => panic!("{a} vs {b} in {}", c["name"]),
            }
        }
    }
    // Bad input names the line and the column; a missing --ref is named.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "acc,madds\n0.1,3\n0.2,x\n").unwrap();
    let out = muxmed()
        .args(["search", "front", "--points"])
        .arg(&bad)
        .args(["--ref", "1,10"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("line 3") && err.contains("`madds`") && err.contains("`x`"),
        "{err}"
    );
    std::fs::write(&bad, "acc,madds\n0.1,3\n").unwrap();
    let out = muxmed()
        .args(["search", "front", "--points"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ref"));
    // A reference that is not a finite number would give a hypervolume of 0 or infinity.
    for r in ["NaN,1", "1,inf"] {
        let out = muxmed()
            .args(["search", "front", "--points"])
            .arg(&bad)
            .args(["--ref", r])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{r}: {err}");
        assert!(err.contains("must be a finite number"), "{r}: {err}");
    }
}

#[test]
fn search_select_and_front_read_an_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = SearchDir::new(tmp.path().join("s"));
    run(&dir, None);
    let a = dir.read_archive().unwrap();
    let out = muxmed()
        .args(["search", "front", "--json", "--archive"])
        .arg(dir.archive())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hv = got["hypervolume"].as_f64().unwrap();
    assert!((hv - a.hypervolume()).abs() < 1e-12);
    assert!((hv - a.generations.last().unwrap().hypervolume).abs() < 1e-12);
    let on_front = got["rank"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.as_u64() == Some(0))
        .count();
    assert_eq!(on_front, a.front().len());

    let out = muxmed()
        .args(["search", "select", "-n", "2"])
        .arg(dir.root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.matches("high trade-off").count() == 2, "{text}");
    // The most accurate scored candidate is always chosen.
    let best = a
        .candidates
        .iter()
        .filter(|c| c.val_auroc.is_some() && c.violation == 0.0)
        .max_by(|x, y| x.val_auroc.partial_cmp(&y.val_auroc).unwrap())
        .unwrap();
    assert!(text.contains(&format!("c{:04}", best.id)), "{text}");
    let chosen = std::fs::read_dir(dir.selected_dir()).unwrap().count();
    assert!((2..=3).contains(&chosen));
    assert!(text.contains("muxmed train --pipeline test --set model.arch="));

    // A hand-edited AUROC outside [0, 1] is refused by name when the archive is read, by
    // `search front` and `search select` alike.
    let mut edited: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.archive()).unwrap()).unwrap();
    let scored = edited["candidates"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["val_auroc"].is_f64())
        .unwrap();
    scored["val_auroc"] = serde_json::json!(1.7);
    let id = scored["id"].as_u64().unwrap();
    std::fs::write(dir.archive(), serde_json::to_string(&edited).unwrap()).unwrap();
    for args in [
        vec![
            "search".into(),
            "front".into(),
            "--archive".into(),
            dir.archive(),
        ],
        vec!["search".into(), "select".into(), dir.root().to_path_buf()],
    ] {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let out = muxmed().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!(
                "candidate c{id:04}: val_auroc = 1.7 is outside [0, 1]"
            )),
            "{err}"
        );
    }
}

/// Every decoded candidate builds, runs a forward pass, and has the counted parameters.
#[cfg(feature = "torch")]
mod built {
    use muxmed::config::SearchConfig;
    use muxmed::model::count::count;
    use muxmed::model::muxnet::{HeadInit, MuxNet};
    use muxmed::search::space::Space;
    use rand::SeedableRng;
    use tch::{nn, Device, Kind, Tensor};

    fn check(space: &Space, n: usize, seed: u64) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut genomes = vec![space.corner(false), space.corner(true)];
        genomes.extend((0..n).map(|_| space.random_genome(&mut rng)));
        for g in genomes {
            let c = space.decode(&g).unwrap();
            let vs = nn::VarStore::new(Device::Cpu);
            let net = MuxNet::new(&vs.root(), &c.spec, 14, 0.0, HeadInit::Reference).unwrap();
            let built: u64 = vs
                .variables()
                .iter()
                .filter(|(n, _)| !n.contains("running_"))
                .map(|(_, t)| t.numel() as u64)
                .sum();
            assert_eq!(
                count(&c.spec, 14, space.resolution).unwrap().total_params,
                built,
                "{}",
                c.key()
            );
            let y = tch::no_grad(|| {
                net.forward_t(
                    &Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu)),
                    false,
                )
            });
            assert_eq!(y.size(), vec![2, 14]);
            assert!(bool::try_from(y.isfinite().all()).unwrap());
        }
    }

    #[test]
    fn every_decoded_candidate_builds_runs_and_has_its_counted_parameters() {
        check(&Space::new(SearchConfig::default().space, 224), 12, 5);
        let demo = muxmed::config::load(
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/pipelines/chestxray-demo.yaml"
            )),
            &[],
        )
        .unwrap()
        .config;
        check(&Space::new(demo.search.space, 96), 12, 6);
    }
}
