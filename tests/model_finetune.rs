//! Fine-tuning support: a frozen backbone keeps its weights and BatchNorm statistics while
//! the head trains; parameter groups separate backbone, head and no-decay parameters.
#![cfg(feature = "torch")]

use muxmed::model::muxnet::{HeadInit, MuxNet};
use muxmed::model::network::{param_groups, set_backbone_trainable};
use muxmed::model::spec::ArchSpec;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Reduction, Tensor};

fn small() -> ArchSpec {
    let mut s = ArchSpec::muxnet_m();
    s.arch_def.truncate(4);
    s.num_features = 64;
    s
}

#[test]
fn frozen_backbone_keeps_weights_and_bn_statistics() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = MuxNet::new(&vs.root(), &small(), 3, 0.0, HeadInit::PytorchDefault).unwrap();
    let before: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    set_backbone_trainable(&vs, false);
    let mut opt = nn::Sgd::default().build(&vs, 0.1).unwrap();
    let x = Tensor::randn([4, 3, 64, 64], tch::kind::FLOAT_CPU);
    let y = Tensor::from_slice(&[1f32, 0., 1., 0., 1., 0., 1., 1., 0., 0., 0., 1.]).view([4, 3]);
    for _ in 0..3 {
        let loss = net
            .forward_frozen_backbone(&x, true)
            .binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Mean);
        opt.backward_step(&loss);
    }
    let after = vs.variables();
    let mut head_moved = false;
    for (name, old) in &before {
        let d = (&after[name] - old).abs().max().double_value(&[]);
        if name.starts_with("classifier.") {
            head_moved |= d > 0.0;
        } else {
            assert_eq!(d, 0.0, "{name} changed while frozen");
        }
    }
    assert!(head_moved, "the head should train");

    // Unfrozen, a training-mode step moves the backbone and its BN statistics.
    set_backbone_trainable(&vs, true);
    let loss = net
        .forward_t(&x, true)
        .binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Mean);
    opt.backward_step(&loss);
    let after = vs.variables();
    for name in ["conv_stem.weight", "bn1.running_mean"] {
        let old = &before.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(
            (&after[name] - old).abs().max().double_value(&[]) > 0.0,
            "{name}"
        );
    }
}

#[test]
fn parameter_groups_split_backbone_head_and_no_decay() {
    let vs = nn::VarStore::new(Device::Cpu);
    MuxNet::new(
        &vs.root(),
        &ArchSpec::muxnet_m(),
        14,
        0.0,
        HeadInit::PytorchDefault,
    )
    .unwrap();
    let g = param_groups(&vs, 0.1, 0.05);
    let names = |backbone: bool, decay: bool| -> Vec<String> {
        g.iter()
            .filter(|g| g.backbone == backbone && (g.weight_decay > 0.0) == decay)
            .flat_map(|g| g.params.iter().map(|(n, _)| n.clone()))
            .collect()
    };
    assert_eq!(names(false, true), vec!["classifier.weight".to_string()]);
    assert_eq!(names(false, false), vec!["classifier.bias".to_string()]);
    let nd = names(true, false);
    assert!(
        nd.contains(&"bn1.weight".to_string()) && nd.contains(&"blocks.3.0.bn2.bias".to_string())
    );
    assert!(nd.contains(&"blocks.0.0.se.conv_reduce.bias".to_string()));
    assert!(!nd.iter().any(|n| n.ends_with("conv_pw.weight")));
    let bb = names(true, true);
    assert!(bb.contains(&"blocks.0.0.se.conv_reduce.weight".to_string()));
    // Every trainable parameter is in exactly one group: 248 in MUXNet-m.
    assert_eq!(g.iter().map(|g| g.params.len()).sum::<usize>(), 248);
    assert!(!bb.iter().any(|n| n.contains("running")));
    // Factors and decay are set per group, once.
    for grp in &g {
        assert_eq!(grp.lr_factor, if grp.backbone { 0.1 } else { 1.0 });
        assert!(grp.weight_decay == 0.0 || grp.weight_decay == 0.05);
    }
}
