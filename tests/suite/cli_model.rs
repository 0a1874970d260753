//! The `muxmed model` and `doctor` commands, run as a user runs them.
#![cfg(feature = "torch")]

use std::path::Path;

use crate::muxmed;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/muxnet")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn model_info_prints_the_reference_counts() {
    let out = muxmed()
        .args(["model", "info", "--arch", "muxnet_m", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Architecture doc, section 8: MUXNet-m with 14 classes.
    assert_eq!(v["params_total"], 2_091_210);
    assert_eq!((v["madds"].as_f64().unwrap() / 1e5).round() / 10.0, 215.5);
    // DenseNet-121 with a 14-way head: 6.968M (torchvision count in the same doc).
    let out = muxmed()
        .args(["model", "info", "--arch", "densenet121", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["params_total"].as_f64().unwrap() / 1e3).round() / 1e3,
        6.968
    );
    // Its analytic counter agrees with the built model (info refuses otherwise), and the
    // same doc's hook counter gives 2833M multiply-adds at 224.
    assert!(out.status.success());
    assert_eq!((v["madds"].as_f64().unwrap() / 1e6).round(), 2833.0);
}

#[test]
fn unknown_or_unreleased_arch_is_refused() {
    for arch in ["muxnet_s", "resnet9"] {
        let out = muxmed()
            .args(["model", "info", "--arch", arch])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(arch), "{err}");
    }
}

#[test]
fn import_then_forward_reproduces_the_golden_features() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let out = muxmed()
        .args([
            "model",
            "import",
            &fixture("timm_style_muxnet_m_imagenet.pth"),
        ])
        .args(["--arch", "muxnet_m", "--out"])
        .arg(&w)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = muxmed::model::weights::read_metadata(&w).unwrap();
    assert_eq!(meta["state_dict"], "state_dict_ema");
    assert_eq!(meta["num_classes"], "1000");
    assert_eq!(meta["source_sha256"].len(), 64);

    let o = dir.path().join("out.safetensors");
    let golden = fixture("timm_style_muxnet_m_imagenet_golden.safetensors");
    let out = muxmed()
        .args([
            "model",
            "forward",
            "--arch",
            "muxnet_m",
            "--num-classes",
            "1000",
            "--weights",
        ])
        .arg(&w)
        .args(["--input", &golden, "--output"])
        .arg(&o)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = muxmed::model::weights::read_safetensors(&o).unwrap();
    let want = muxmed::model::weights::read_safetensors(Path::new(&golden)).unwrap();
    crate::tolerance::assert_close(
        "logits_1000",
        &ours["logits"],
        &want["logits_1000"],
        crate::tolerance::MUXNET_M,
    );
}

#[test]
fn import_into_the_wrong_arch_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("l.safetensors");
    let out = muxmed()
        .args([
            "model",
            "import",
            &fixture("timm_style_muxnet_m_imagenet.pth"),
        ])
        .args(["--arch", "muxnet_l", "--out"])
        .arg(&w)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a muxnet_l checkpoint") && err.contains("missing:"),
        "{err}"
    );
    // Summarised: counts and the first ten mismatches, not hundreds of lines.
    assert!(
        err.contains("same architecture?") && err.contains("more"),
        "{err}"
    );
    assert!(err.lines().count() <= 16, "{} lines", err.lines().count());
    assert!(!w.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn doctor_runs_a_tensor_op() {
    let out = muxmed().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("tensor op (cpu)        ok"), "{text}");
    assert!(text.contains("libtorch version       2.13.0"), "{text}");
}

#[test]
fn import_of_a_file_that_is_not_a_checkpoint_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("notes.pth");
    std::fs::write(&src, "not a checkpoint").unwrap();
    let out = muxmed()
        .args(["model", "import"])
        .arg(&src)
        .args(["--arch", "muxnet_m", "--out"])
        .arg(dir.path().join("o.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notes.pth") && err.contains("not a PyTorch checkpoint"),
        "{err}"
    );
    assert!(!err.contains("(and:"), "{err}");
}

#[test]
fn os_errors_are_said_once() {
    let out = muxmed()
        .args([
            "evaluate",
            "--predictions",
            "/nonexistent/p.csv",
            "--labels",
            "/nonexistent/l.csv",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/p.csv"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

/// torchvision's DenseNet-121 in its 2017 checkpoint format (old `norm.1` key names, legacy
/// serialisation): `model import` reads it, and the pooled features and logits of muxmed's
/// DenseNet-121 equal torchvision's (`../shared/fixtures/densenet/`) within DenseNet-121's
/// float32 reordering bound.
#[test]
fn torchvision_densenet121_imports_and_matches_its_golden_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("d.safetensors");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/densenet");
    let out = muxmed()
        .args(["model", "import"])
        .arg(src.join("densenet121_c14_seed0_legacy.pth"))
        .args(["--arch", "densenet121", "--out"])
        .arg(&w)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        muxmed::model::weights::read_metadata(&w).unwrap()["num_classes"],
        "14"
    );
    let golden = src.join("densenet121_c14_seed0_golden.safetensors");
    let o = dir.path().join("out.safetensors");
    let out = muxmed()
        .args([
            "model",
            "forward",
            "--arch",
            "densenet121",
            "--num-classes",
            "14",
            "--weights",
        ])
        .arg(&w)
        .arg("--input")
        .arg(&golden)
        .arg("--output")
        .arg(&o)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = muxmed::model::weights::read_safetensors(&o).unwrap();
    let want = muxmed::model::weights::read_safetensors(&golden).unwrap();
    for key in ["features", "logits"] {
        crate::tolerance::assert_close(key, &ours[key], &want[key], crate::tolerance::DENSENET121);
    }
}

/// A libtorch failure inside a command (here a 0x0 input a convolution cannot take) is one
/// line of error and exit status 1, never a panic's backtrace and status 101.
#[test]
fn a_libtorch_failure_is_one_line_of_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("empty.safetensors");
    let header = br#"{"input":{"dtype":"F32","shape":[1,3,0,0],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(&input, bytes).unwrap();
    let weights = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/muxnet/muxnet_m_c14_seed0.safetensors");
    let o = crate::muxmed()
        .args(["model", "forward", "--arch", "muxnet_m", "--weights"])
        .arg(&weights)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("out.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: libtorch failed: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        !err.contains("frame #") && !err.contains("panicked"),
        "{err}"
    );
}
