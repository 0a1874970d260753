//! Grad-CAM against the reference maps made with the authors' PyTorch MUXNet-m
//! (`../shared/fixtures/gradcam/`; tolerances: the float32 reordering bound, tests/common), through
//! `muxmed model gradcam` as a user runs it; DenseNet-121's maps on their own shapes.
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};

use muxmed::config::Arch;
use muxmed::model::gradcam::{gradcam, min_max};
use muxmed::model::muxnet::HeadInit;
use muxmed::model::network::Network;
use muxmed::model::weights::read_safetensors;
use tch::{nn, Device, Kind, Tensor};

use crate::tolerance::{self, assert_close, Path as SumPath};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn muxnet_m_gradcam_matches_the_reference_maps() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("gradcam/muxnet_m_c14_seed0_gradcam.safetensors");
    let out = dir.path().join("cam.safetensors");
    let o = crate::muxmed()
        .args([
            "model",
            "gradcam",
            "--arch",
            "muxnet_m",
            "--num-classes",
            "14",
        ])
        .arg("--weights")
        .arg(fixtures().join("muxnet/muxnet_m_c14_seed0.safetensors"))
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = read_safetensors(&out).unwrap();
    let want = read_safetensors(&input).unwrap();
    // The logits (up to |226|) and the head: MUXNet-m's forward path. The maps also go back
    // through the classifier to the head (α = mean of ∂logit/∂head over 7² positions), so
    // their path is the forward one and two more reductions; min-max scaling divides by
    // the map's range, which keeps the relative error.
    assert_close(
        "logits",
        &ours["logits"],
        &want["logits"],
        tolerance::MUXNET_M,
    );
    let cam_path = SumPath {
        depth: tolerance::MUXNET_M.depth + 2,
        ..tolerance::MUXNET_M
    };
    for key in ["gradcam.raw", "gradcam.map"] {
        assert_close(key, &ours[key], &want[key], cam_path);
    }
    // The reference maps are not trivial: 27 of the 28 (image, class) maps span [0, 1]; one
    // (image 2, Consolidation) has ReLU(Σ α A) = 0 everywhere, so it is all zeros, the
    // max = min case, which ours matches too.
    let peaks = Vec::<f32>::try_from(
        want["gradcam.map"]
            .amax([2i64, 3].as_slice(), false)
            .flatten(0, -1),
    )
    .unwrap();
    assert_eq!(peaks.iter().filter(|&&p| p == 1.0).count(), 27);
    assert_eq!(peaks[14 + 8], 0.0);
}

#[test]
fn densenet121_gradcam_has_its_shapes_and_equals_the_class_weighted_map() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::build(&vs.root(), &Arch::Densenet121, 5, 0.0, HeadInit::Reference).unwrap();
    let x = Tensor::randn([2, 3, 96, 64], tch::kind::FLOAT_CPU);
    let g = gradcam(&net, &x);
    assert_eq!(g.raw.size(), [2, 5, 3, 2]);
    assert_eq!(g.map.size(), [2, 5, 96, 64]);
    assert_eq!(g.logits.size(), [2, 5]);
    // With global average pooling and a linear classifier, ∂logit_k/∂A_c is W[k, c] / (h w)
    // at every position: Grad-CAM is then ReLU(Σ_c W[k, c] A_c / (h w)), computed here
    // without autograd.
    let a = tch::no_grad(|| net.feature_map_t(&x, false));
    let w = vs.variables().remove("classifier.weight").unwrap().detach();
    let want = Tensor::einsum("kc,nchw->nkhw", &[&w, &a], None::<i64>).relu() / 6.0;
    // The same feature map both ways; only the last reduction differs (einsum over 1,024
    // channels against autograd's gradient times the map, then the sum over channels).
    let head_only = SumPath {
        depth: 2,
        fan_in: 1024,
    };
    assert_close("raw map", &g.raw, &want, head_only);
    let logits = tch::no_grad(|| net.forward_t(&x, false));
    // Same kernels, same order: Grad-CAM's forward is the network's forward.
    assert_eq!(max_abs_diff(&g.logits, &logits), 0.0);
    // Each map is in [0, 1] and reaches 1 (or is all zeros where the raw map is flat).
    let hi = g.map.amax([2i64, 3].as_slice(), false);
    let lo = g.map.amin([2i64, 3].as_slice(), false);
    for (h, l) in Vec::<f32>::try_from(hi.flatten(0, -1))
        .unwrap()
        .into_iter()
        .zip(Vec::<f32>::try_from(lo.flatten(0, -1)).unwrap())
    {
        assert!(l == 0.0 && (h == 1.0 || h == 0.0), "{h} {l}");
    }
}

#[test]
fn min_max_of_a_flat_map_is_zero() {
    let t = Tensor::from_slice(&[2.0f32, 2.0, 2.0, 2.0, 0.0, 1.0, 3.0, 5.0]).view([1, 2, 2, 2]);
    let m = min_max(&t);
    let v = Vec::<f32>::try_from(m.flatten(0, -1)).unwrap();
    assert_eq!(v, [0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.6, 1.0]);
    assert_eq!(m.kind(), Kind::Float);
}
