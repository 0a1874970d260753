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

#[test]
fn drop_path_acts_in_training_only() {
    // As upstream, only `ir`/`ds` blocks with a residual apply it, at rate * i / n: that is
    // none of MUXNet-m's or -l's (their IR blocks have no residual, the DS block is block 0),
    // so the test uses a net with residual IR blocks at i = 1, 2.
    tch::manual_seed(0);
    let mut spec = ArchSpec::muxnet_m();
    spec.arch_def = vec![
        vec!["ds_r1_k3_s1_e1_c24".into()],
        vec!["ir_r2_k3_s1_e4_c24_se0.25".into()],
    ];
    spec.num_features = 64;
    let vs = nn::VarStore::new(Device::Cpu);
    let mut net = MuxNet::new(&vs.root(), &spec, 14, 0.0, HeadInit::Reference).unwrap();
    let x = Tensor::randn([16, 3, 32, 32], tch::kind::FLOAT_CPU);
    let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    // Without stochastic depth, training-mode passes are deterministic (batch statistics).
    let t0 = net.forward_t(&x, true);
    assert_eq!(diff(&t0, &net.forward_t(&x, true)), 0.0);
    let e0 = net.forward_t(&x, false);
    // Rates 0.9 * 1/3 and 0.9 * 2/3 over 16 samples: two passes draw the same 32 masks
    // with negligible probability.
    net.set_drop_path_rate(0.9);
    // Eval is unchanged; training passes now drop residual branches at random.
    assert_eq!(diff(&e0, &net.forward_t(&x, false)), 0.0);
    let a = net.forward_t(&x, true);
    let b = net.forward_t(&x, true);
    assert!(diff(&a, &b) > 1e-4);
}

#[test]
fn the_head_width_scales_with_the_channel_multiplier() {
    let mut spec = ArchSpec::muxnet_m();
    spec.channel_multiplier = 0.75;
    // The authors' generator: num_features = round_channels(1280 * 0.75) = 960.
    assert_eq!(spec.head_channels(), 960);
    let vs = nn::VarStore::new(Device::Cpu);
    MuxNet::new(&vs.root(), &spec, 14, 0.0, HeadInit::Reference).unwrap();
    let v = vs.variables();
    assert_eq!(v["conv_head.weight"].size()[0], 960);
    assert_eq!(v["classifier.weight"].size(), vec![14, 960]);
    let built: u64 = v
        .iter()
        .filter(|(n, _)| !n.contains("running_"))
        .map(|(_, t)| t.numel() as u64)
        .sum();
    let counted = muxmed::model::count::count(&spec, 14, 224).unwrap();
    assert_eq!(counted.total_params, built);
}

#[test]
fn densenet121_runs_at_any_accepted_resolution() {
    use muxmed::config::Arch;
    use muxmed::model::network::Network;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::build(&vs.root(), &Arch::Densenet121, 14, 0.0, HeadInit::Reference).unwrap();
    for r in [64, 128, 224] {
        let x = Tensor::randn([1, 3, r, r], tch::kind::FLOAT_CPU);
        assert_eq!(net.forward_t(&x, false).size(), vec![1, 14], "{r}");
    }
    // CheXNet's parameter count with a 14-class head.
    let n: i64 = vs
        .variables()
        .iter()
        .filter(|(n, _)| !n.contains("running_"))
        .map(|(_, t)| t.numel() as i64)
        .sum();
    assert_eq!(n, 6_968_206);
}

#[test]
fn ema_averages_batchnorm_statistics_and_warms_up_its_decay() {
    use muxmed::config::Arch;
    use muxmed::train::ema::Ema;
    let arch = Arch::Json(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json"),
    );
    let live = nn::VarStore::new(Device::Cpu);
    let live_net =
        muxmed::model::network::Network::build(&live.root(), &arch, 14, 0.0, HeadInit::Reference)
            .unwrap();
    let ema = Ema::new(&live, &live_net, &arch, 14, 0.999).unwrap();
    assert!((ema.decay_at(0) - 0.1).abs() < 1e-15);
    assert!((ema.decay_at(90) - 0.91).abs() < 1e-15);
    assert_eq!(ema.decay_at(1_000_000), 0.999);
    let key = "bn1.running_mean";
    let before = ema.vs.variables()[key].copy();
    tch::no_grad(|| {
        let mut v = live.variables()[key].shallow_clone();
        let _ = v.fill_(2.0);
    });
    ema.update(&live, 0);
    // d = 0.1 at update 0: 0.1 * old + 0.9 * 2.
    let want = &before * 0.1 + 2.0 * 0.9;
    let got = &ema.vs.variables()[key];
    assert!((got - want).abs().max().double_value(&[]) < 1e-6);
}
