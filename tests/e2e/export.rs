//! `muxmed export`: the targets it refuses and the round trip of an exported model.

use std::path::Path;

use muxmed::run::RunDir;

use super::support::World;
use crate::bin::muxmed;
use crate::tolerance;

/// `export --out` a folder (existing, or a path ending in `/`) writes `<stem>.pt` and its spec
/// inside and leaves no temp file; the checkpoint itself is refused as a target; `predict
/// --model` names a missing module, a missing spec and a file that is no module, each on one
/// line.
pub fn export_targets_are_checked(w: &World, best: &Path, img: &Path) {
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
        let o = muxmed()
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
pub fn export_round_trip(w: &World, run: &RunDir, img: &Path, checkpoint_csv: &Path) {
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
    // model.json carries the run's temperatures (fitted on val by `evaluate --run`).
    let temps = m.temperatures.clone().expect("model.json temperatures");
    let run_temps = muxmed::eval::calibrate::Temperatures::read(
        &muxmed::run::RunDir::open(best.parent().unwrap())
            .unwrap()
            .temperatures(&super::support::key(
                muxmed::labels::Split::Val,
                muxmed::run::Checkpoint::Best,
                false,
            )),
    )
    .unwrap()
    .map();
    assert_eq!(temps, run_temps);
    // Probabilities: p = sigmoid(z / T) has slope at most 1/(4T) in z, so a logit error of δ
    // moves a probability by at most δ/(4T).
    let t_min = temps.values().copied().fold(1.0, f64::min);
    let prob_tol =
        tolerance::MUXNET_DEMO_64.reorder_tolerance() * tolerance::scale_of(&want) / (4.0 * t_min);

    let exported_csv = w.root.join("p_exported.csv");
    predict_files(
        ModelSource::Exported(&pt),
        &[img.to_path_buf()],
        &exported_csv,
        Some("cpu"),
        (false, true),
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
        (false, true),
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
    let o = muxmed()
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
