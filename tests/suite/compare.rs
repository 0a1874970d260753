//! `muxmed compare` as a user runs it: on a published model's real predictions, on small
//! hand-made predictions, and the cost of MUXNet-m against DenseNet-121.

use std::path::{Path, PathBuf};
use std::process::Output;

use muxmed::compare::stats::Comparison;

fn nih(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/nih")
        .join(p)
}

fn muxmed(args: &[&str]) -> Output {
    crate::muxmed().args(args).output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read(dir: &Path) -> Comparison {
    serde_json::from_str(&std::fs::read_to_string(dir.join("compare.json")).unwrap()).unwrap()
}

/// A metadata CSV in NIH's format for `n` images of n/2 patients, and the truth of each.
/// No image has Hernia, so that label has one class only.
fn metadata(dir: &Path, n: usize) -> (PathBuf, Vec<(String, Vec<bool>)>) {
    let labels = muxmed::labels::LABELS;
    let mut text = String::from("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n");
    let mut truth = vec![];
    for i in 0..n {
        let pid = i / 2 + 1;
        let id = format!("{pid:08}_{:03}.png", i % 2);
        let y: Vec<bool> = (0..14)
            .map(|k| k != 13 && (i * 7 + k * 3) % 5 == 0)
            .collect();
        let found: Vec<&str> = (0..14).filter(|&k| y[k]).map(|k| labels[k]).collect();
        let finding = if found.is_empty() {
            "No Finding".to_string()
        } else {
            found.join("|")
        };
        text += &format!(
            "{id},{finding},{},{pid},50,M,PA,1024,1024,0.143,0.143\n",
            i % 2
        );
        truth.push((id, y));
    }
    let p = dir.join("meta.csv");
    std::fs::write(&p, text).unwrap();
    (p, truth)
}

/// A predictions CSV whose scores follow the truth with `signal` and noise from `seed`.
fn predictions(
    dir: &Path,
    name: &str,
    truth: &[(String, Vec<bool>)],
    signal: f64,
    seed: u64,
) -> PathBuf {
    let mut text = String::from("Image Index");
    for l in muxmed::labels::LABELS {
        text += &format!(",prob_{l}");
    }
    text += "\n";
    for (i, (id, y)) in truth.iter().enumerate() {
        text += id;
        for (k, t) in y.iter().enumerate() {
            let noise =
                ((i as u64 * 2654435761 + k as u64 * 97 + seed * 7919) % 1000) as f64 / 1000.0;
            let p = (signal * (*t as u8 as f64) + (1.0 - signal) * noise).clamp(0.0, 1.0);
            text += &format!(",{p}");
        }
        text += "\n";
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_model_against_itself_differs_by_exactly_zero_and_one_class_labels_are_null() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, truth) = metadata(dir.path(), 120);
    let a = predictions(dir.path(), "a.csv", &truth, 0.3, 1);
    let out = dir.path().join("cmp");
    ok(&muxmed(&[
        "compare",
        s(&a),
        s(&a),
        "--names",
        "first,second",
        "--labels",
        s(&meta),
        "--bootstrap",
        "200",
        "--no-cost",
        "--out",
        s(&out),
    ]));
    let c = read(&out);
    assert_eq!(c.n_images, 120);
    assert_eq!(c.n_patients, 60);
    let p = &c.pairs[0];
    assert_eq!((p.a.as_str(), p.b.as_str()), ("first", "second"));
    assert_eq!(p.mean.delta, Some(0.0));
    assert_eq!(p.mean.delta_ci, Some([0.0, 0.0]));
    for l in &p.per_label {
        if l.label == "Hernia" {
            // One class on these images: nulls, never a number.
            assert_eq!(
                (l.auroc_a, l.delta, l.delta_ci, l.z, l.p, l.p_holm),
                (None, None, None, None, None, None)
            );
        } else {
            assert_eq!(l.delta, Some(0.0), "{}", l.label);
            assert_eq!(l.delta_ci, Some([0.0, 0.0]), "{}", l.label);
            // Identical rankings: DeLong's variance of the difference is 0, no test.
            assert_eq!(l.z, None, "{}", l.label);
        }
    }
    for f in [
        "compare.md",
        "compare.html",
        "compare_auroc.png",
        "compare_delta_1.png",
        "compare_roc.png",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // Markdown tables: the delimiter row has as many cells as the header.
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    let lines: Vec<&str> = md.lines().collect();
    let mut tables = 0;
    for w in lines.windows(2) {
        if w[1].starts_with("|---") {
            assert_eq!(
                w[0].matches('|').count(),
                w[1].matches('|').count(),
                "{}\n{}",
                w[0],
                w[1]
            );
            tables += 1;
        }
    }
    assert_eq!(tables, 2);
    // Without an architecture there is nothing to put on the cost axis.
    assert!(!out.join("compare_cost.png").exists());
    let json = std::fs::read_to_string(out.join("compare.json")).unwrap();
    assert!(json.contains("\"p\": null"));
}

#[test]
fn a_large_difference_is_found_with_delong_and_holm_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, truth) = metadata(dir.path(), 400);
    let good = predictions(dir.path(), "good.csv", &truth, 0.5, 1);
    let poor = predictions(dir.path(), "poor.csv", &truth, 0.02, 2);
    let out = dir.path().join("cmp");
    ok(&muxmed(&[
        "compare",
        s(&good),
        s(&poor),
        "--labels",
        s(&meta),
        "--bootstrap",
        "300",
        "--no-cost",
        "--out",
        s(&out),
    ]));
    let c = read(&out);
    let p = &c.pairs[0];
    assert_eq!((p.a.as_str(), p.b.as_str()), ("good", "poor"));
    let d = p.mean.delta.unwrap();
    let ci = p.mean.delta_ci.unwrap();
    assert!(
        d > 0.3 && ci[0] > 0.2 && ci[0] <= d && d <= ci[1],
        "{d} {ci:?}"
    );
    let defined: Vec<_> = p.per_label.iter().filter(|l| l.p.is_some()).collect();
    assert_eq!(defined.len(), 13);
    for l in &defined {
        // delta is a − b, and each input's own AUROC is the one in its summary.
        let a = c.inputs[0]
            .per_label
            .iter()
            .find(|x| x.label == l.label)
            .unwrap();
        assert_eq!(l.auroc_a, a.auroc);
        assert!((l.delta.unwrap() - (l.auroc_a.unwrap() - l.auroc_b.unwrap())).abs() < 1e-15);
        assert!(l.z.unwrap() > 3.0, "{}: {:?}", l.label, l.z);
        // Holm never lowers a p-value and multiplies the smallest by the family size.
        assert!(l.p_holm.unwrap() >= l.p.unwrap());
    }
    let smallest = defined.iter().map(|l| l.p.unwrap()).fold(1.0f64, f64::min);
    let smallest_holm = defined
        .iter()
        .map(|l| l.p_holm.unwrap())
        .fold(1.0f64, f64::min);
    assert!((smallest_holm - (13.0 * smallest).min(1.0)).abs() < 1e-15);
    let line = &c.headlines()[0];
    assert!(
        line.starts_with("poor vs good:") && line.contains("ΔAUROC −"),
        "{line}"
    );
}

#[test]
fn inputs_on_different_images_are_refused_with_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, truth) = metadata(dir.path(), 100);
    let a = predictions(dir.path(), "a.csv", &truth[..90], 0.3, 1);
    let b = predictions(dir.path(), "b.csv", &truth[5..], 0.3, 2);
    let out = dir.path().join("cmp");
    let o = muxmed(&[
        "compare",
        s(&a),
        s(&b),
        "--labels",
        s(&meta),
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not scored on the same images"), "{err}");
    assert!(
        err.contains("5 images only in `a`, 10 only in `b`"),
        "{err}"
    );
    assert!(err.contains("85 in common"), "{err}");
    assert!(!out.join("compare.json").exists());
    // A predictions CSV without its labels file is named.
    let o = muxmed(&["compare", s(&a), s(&b), "--out", s(&out)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --labels"));
    // --names must name every input.
    let o = muxmed(&[
        "compare",
        s(&a),
        s(&b),
        "--labels",
        s(&meta),
        "--names",
        "x",
        "--out",
        s(&out),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--names gives 1 names for 2 inputs"));
    // A value out of range is named by file and line, the file once.
    let text = std::fs::read_to_string(&a).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = lines[2].replacen(",", ",1.7,", 1);
    let cells = lines[2].split(',').count();
    lines[2] = lines[2]
        .split(',')
        .take(cells - 1)
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(&a, lines.join("\n") + "\n").unwrap();
    let o = muxmed(&[
        "compare",
        s(&a),
        s(&b),
        "--labels",
        s(&meta),
        "--out",
        s(&out),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("line 3"), "{err}");
    assert_eq!(err.matches("a.csv").count(), 1, "{err}");
}

#[test]
fn a_published_models_predictions_compare_with_the_published_aurocs() {
    let dir = tempfile::tempdir().unwrap();
    let zech = nih("reference_predictions/zech_densenet121/preds.csv");
    // The same model with its probabilities squared: the same ranking, so the same AUROCs.
    let text = std::fs::read_to_string(&zech).unwrap();
    let mut lines = text.lines();
    let mut sq = format!("{}\n", lines.next().unwrap());
    for l in lines {
        let mut f = l.split(',');
        sq += f.next().unwrap();
        for v in f {
            let p: f64 = v.parse().unwrap();
            sq += &format!(",{}", p * p);
        }
        sq += "\n";
    }
    let squared = dir.path().join("squared.csv");
    std::fs::write(&squared, sq).unwrap();
    let out = dir.path().join("cmp");
    ok(&muxmed(&[
        "compare",
        s(&zech),
        s(&squared),
        "--names",
        "zech,squared",
        "--labels",
        s(&nih("Data_Entry_2017_v2020.csv.gz")),
        "--bootstrap",
        "50",
        "--no-cost",
        "--out",
        s(&out),
    ]));
    let c = read(&out);
    assert_eq!(c.n_images, 22_433);
    let published =
        std::fs::read_to_string(nih("reference_predictions/zech_densenet121/aucs.csv")).unwrap();
    for line in published.lines().skip(1) {
        let (label, auc) = line.split_once(',').unwrap();
        let auc: f64 = auc.parse().unwrap();
        let ours = c.inputs[0]
            .per_label
            .iter()
            .find(|l| l.label == label)
            .unwrap();
        assert!((ours.auroc.unwrap() - auc).abs() < 1e-9, "{label}");
        let pl = c.pairs[0]
            .per_label
            .iter()
            .find(|l| l.label == label)
            .unwrap();
        // Squaring keeps the order (ties included), so the difference is exactly 0.
        assert_eq!(pl.delta, Some(0.0), "{label}");
    }
    assert_eq!(c.inputs[0].protocol, None);
    compare_within_one_view(&zech, &squared, dir.path());
}

/// `compare --where view=AP|PA`: the comparison on one view's images only. Cardiomegaly's
/// AUROC by view is scikit-learn's (tests/suite/subgroups.rs has the script): AP 8,847
/// images 0.8516423217946864, PA 13,586 images 0.9403402964959569.
fn compare_within_one_view(zech: &Path, squared: &Path, dir: &Path) {
    let labels = nih("Data_Entry_2017_v2020.csv.gz");
    let compare_where = |filter: &str, out: &Path| {
        muxmed(&[
            "compare",
            s(zech),
            s(squared),
            "--labels",
            s(&labels),
            "--where",
            filter,
            "--bootstrap",
            "20",
            "--no-cost",
            "--out",
            s(out),
        ])
    };
    for (view, n, cardiomegaly) in [
        ("AP", 8_847, 0.8516423217946864),
        ("PA", 13_586, 0.9403402964959569),
    ] {
        let out = dir.join(format!("cmp_{view}"));
        ok(&compare_where(&format!("view={view}"), &out));
        let c = read(&out);
        assert_eq!(c.n_images, n, "{view}");
        assert_eq!(c.restricted_to.as_deref(), Some(&*format!("view {view}")));
        let l = c.inputs[0]
            .per_label
            .iter()
            .find(|l| l.label == "Cardiomegaly")
            .unwrap();
        assert!((l.auroc.unwrap() - cardiomegaly).abs() < 1e-12, "{view}");
        let html = std::fs::read_to_string(out.join("compare.html")).unwrap();
        assert!(html.contains(&format!(
            "restricted to one subgroup, view {view}: {n} of the 22433 images"
        )));
    }
    // A group that is not there, and an attribute the predictions' metadata lacks.
    for (filter, says) in [
        ("view=LL", "no view group `LL` (the groups are AP, PA)"),
        ("dataset=chexpert", "the data has no dataset for its images"),
        ("colour=red", "`colour` is not an attribute"),
    ] {
        let o = compare_where(filter, &dir.join("cmp_bad"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{filter}: {err}");
    }
}

/// Speed and memory of MUXNet-m and DenseNet-121 measured in one process, with their
/// analytic counts, as the issue asks: present, positive, and the ratios in the right
/// direction.
#[cfg(feature = "torch")]
#[test]
fn cost_figures_for_muxnet_m_and_densenet121() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, truth) = metadata(dir.path(), 60);
    let a = predictions(dir.path(), "dn.csv", &truth, 0.3, 1);
    let b = predictions(dir.path(), "mux.csv", &truth, 0.3, 2);
    let out = dir.path().join("cmp");
    // 112² keeps the test short; the counts scale with the square of the side.
    ok(&muxmed(&[
        "compare",
        s(&a),
        s(&b),
        "--labels",
        s(&meta),
        "--bootstrap",
        "20",
        "--arch",
        "dn=densenet121@112",
        "--arch",
        "mux=muxnet_m@112",
        "--out",
        s(&out),
    ]));
    let c = read(&out);
    let (dn, mux) = (&c.inputs[0], &c.inputs[1]);
    assert_eq!(dn.params, Some(6_968_206));
    assert_eq!(mux.params, Some(2_091_210));
    for i in [dn, mux] {
        let cost = i.cost.as_ref().unwrap();
        for sp in [&cost.batch_1, &cost.batch_32] {
            assert!(sp.images_per_s > 0.0 && sp.ms_per_image > 0.0 && sp.iterations >= 3);
            assert!((sp.images_per_s * sp.ms_per_image / 1e3 - 1.0).abs() < 1e-9);
        }
        assert!(cost.peak_rss_mb.unwrap() > 0.0);
    }
    let r = mux.vs_first.as_ref().unwrap();
    assert!((r.params_fewer.unwrap() - 6_968_206.0 / 2_091_210.0).abs() < 1e-12);
    assert!(r.madds_fewer.unwrap() > 10.0);
    assert!(r.faster_batch_32.unwrap() > 0.0);
    assert!(c.machine.is_some());
}
