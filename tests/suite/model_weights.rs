//! Weight files: strict loading errors, backbone-only loading, and importing the authors'
//! `torch.save` checkpoint format without Python.
#![cfg(feature = "torch")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use muxmed::model::muxnet::{HeadInit, MuxNet};
use muxmed::model::spec::ArchSpec;
use muxmed::model::weights::{
    load_backbone, load_strict, read_safetensors, read_torch_checkpoint, write_safetensors,
    WeightsError,
};
use tch::{nn, Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/muxnet")
        .join(name)
}

fn m_store(classes: i64) -> (nn::VarStore, MuxNet) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = MuxNet::new(
        &vs.root(),
        &ArchSpec::muxnet_m(),
        classes,
        0.0,
        HeadInit::PytorchDefault,
    )
    .unwrap();
    (vs, net)
}

/// The m fixture's weights, edited, written to a temporary file.
fn edited(edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) -> (tempfile::TempDir, PathBuf) {
    let mut t = read_safetensors(&fixture("muxnet_m_c14_seed0.safetensors")).unwrap();
    edit(&mut t);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    let list: Vec<(String, Tensor)> = t.into_iter().collect();
    write_safetensors(&p, &list, &BTreeMap::new()).unwrap();
    (dir, p)
}

#[test]
fn missing_key_is_listed() {
    let (_d, p) = edited(|t| {
        t.remove("blocks.5.0.conv_dw.weight");
        t.remove("bn2.running_var");
    });
    let (vs, _) = m_store(14);
    let err = load_strict(&vs, &p).unwrap_err().to_string();
    assert!(err.contains("missing: blocks.5.0.conv_dw.weight"), "{err}");
    assert!(err.contains("missing: bn2.running_var"), "{err}");
}

#[test]
fn extra_key_is_listed() {
    let (_d, p) = edited(|t| {
        t.insert(
            "blocks.99.0.conv_pw.weight".into(),
            Tensor::zeros([2], tch::kind::FLOAT_CPU),
        );
    });
    let (vs, _) = m_store(14);
    let err = load_strict(&vs, &p).unwrap_err().to_string();
    assert!(
        err.contains("unexpected: blocks.99.0.conv_pw.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_listed_and_nothing_is_loaded() {
    let (_d, p) = edited(|t| {
        t.insert(
            "conv_head.weight".into(),
            Tensor::zeros([1280, 100, 1, 1], tch::kind::FLOAT_CPU),
        );
    });
    let (vs, _) = m_store(14);
    let before = vs.variables()["conv_stem.weight"].copy();
    let err = load_strict(&vs, &p).unwrap_err().to_string();
    assert!(
        err.contains(
            "wrong shape: conv_head.weight: file [1280, 100, 1, 1], model [1280, 200, 1, 1]"
        ),
        "{err}"
    );
    // A failed load leaves the model untouched.
    let after = &vs.variables()["conv_stem.weight"];
    assert_eq!((after - &before).abs().max().double_value(&[]), 0.0);
}

#[test]
fn strict_load_refuses_another_head_size_backbone_load_replaces_it() {
    let (vs, _) = m_store(5);
    let p = fixture("muxnet_m_c14_seed0.safetensors");
    let err = load_strict(&vs, &p).unwrap_err().to_string();
    assert!(err.contains("wrong shape: classifier.weight"), "{err}");
    let report = load_backbone(&vs, &p).unwrap();
    assert_eq!(report.loaded, 356);
    assert_eq!(report.replaced.len(), 2);
    assert!(
        report
            .replaced
            .iter()
            .any(|r| r == "classifier.weight (file [14, 1280] -> model [5, 1280])"),
        "{:?}",
        report.replaced
    );
}

#[test]
fn timm_checkpoint_imports_ema_weights_and_reproduces_golden_features() {
    let golden =
        read_safetensors(&fixture("timm_style_muxnet_m_imagenet_golden.safetensors")).unwrap();
    for file in [
        "timm_style_muxnet_m_imagenet.pth",
        "timm_style_muxnet_m_imagenet_legacy.pth",
    ] {
        let ck = read_torch_checkpoint(&fixture(file)).unwrap();
        assert_eq!(ck.source_key, "state_dict_ema", "{file}");
        assert!(ck.tensors.iter().all(|(n, _)| !n.starts_with("module.")));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        write_safetensors(&p, &ck.tensors, &BTreeMap::new()).unwrap();
        let (vs, net) = m_store(1000);
        load_strict(&vs, &p).unwrap();
        let taps = tch::no_grad(|| net.forward_taps(&golden["input"], false));
        for (name, ours) in [("features", &taps.features), ("logits_1000", &taps.logits)] {
            crate::tolerance::assert_close(
                &format!("{file} {name}"),
                ours,
                &golden[name],
                crate::tolerance::MUXNET_M,
            );
        }
    }
}

#[test]
fn raw_weights_differ_from_ema_so_the_choice_matters() {
    let ck = read_torch_checkpoint(&fixture("timm_style_muxnet_m_imagenet.pth")).unwrap();
    let raw = pytorch_raw("conv_stem.weight");
    let ema = &ck
        .tensors
        .iter()
        .find(|(n, _)| n == "conv_stem.weight")
        .unwrap()
        .1;
    assert!((ema - raw).abs().max().double_value(&[]) > 0.0);
}

fn pytorch_raw(name: &str) -> Tensor {
    let r = pytorch_reader::PytorchReader::with_top_level_key(
        fixture("timm_style_muxnet_m_imagenet.pth"),
        "state_dict",
    )
    .unwrap();
    let t = r.get(&format!("module.{name}")).unwrap();
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    Tensor::from_data_size(&t.read().unwrap(), &shape, tch::Kind::Float)
}

#[test]
fn truncated_checkpoint_is_a_clear_error() {
    let bytes = std::fs::read(fixture("timm_style_muxnet_m_imagenet.pth")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in [
        ("truncated.pth", &bytes[..bytes.len() / 2]),
        ("garbage.pth", b"this is not a checkpoint".as_slice()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        match read_torch_checkpoint(&p) {
            Err(e @ WeightsError::Checkpoint { .. }) => {
                assert!(e.to_string().contains(name), "{e}")
            }
            Err(e) => panic!("unexpected error kind: {e}"),
            Ok(_) => panic!("{name} should not load"),
        }
    }
}

#[test]
fn checkpoint_without_state_dict_is_a_clear_error() {
    // A legacy-format-free plain pickle of {"epoch": 3} (protocol 2): no tensors anywhere.
    let pickle: &[u8] = b"\x80\x02}q\x00X\x05\x00\x00\x00epochq\x01K\x03s.";
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no_weights.pth");
    std::fs::write(&p, pickle).unwrap();
    let err = read_torch_checkpoint(&p)
        .err()
        .expect("should fail")
        .to_string();
    assert!(err.contains("no_weights.pth"), "{err}");
}
