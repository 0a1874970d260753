//! Memory layout: channels-last tensors stay channels-last through MUXNet's rearrangements
//! (no silent conversion back to NCHW), with values identical to the NCHW path; the folded
//! DenseNet-121 computes what the unfolded one computes; and after `tune_malloc` a large
//! tensor comes from malloc's heap, not from a mapping of its own.
#![cfg(feature = "torch")]

use muxmed::config::Arch;
use muxmed::model::blocks::{cat_shuffle, channel_shuffle};
use muxmed::model::folded::FoldedNetwork;
use muxmed::model::layers::{channel_to_space, space_to_channel};
use muxmed::model::layout::{self, is_dense_channels_last, MemoryFormat};
use muxmed::model::muxnet::HeadInit;
use muxmed::model::network::Network;
use tch::{nn, Device, Kind, Tensor};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape");
    (a - b).abs().max().double_value(&[])
}

fn channels_last(x: &Tensor) -> Tensor {
    layout::to_format(x, MemoryFormat::ChannelsLast)
}

#[test]
fn the_permute_trick_gives_nhwc_strides_and_keeps_values() {
    let x = Tensor::randn([2, 6, 4, 8], (Kind::Float, Device::Cpu));
    assert!(x.is_contiguous());
    assert!(!is_dense_channels_last(&x));
    let y = channels_last(&x);
    assert_eq!(y.size(), x.size());
    assert_eq!(y.stride(), vec![6 * 4 * 8, 1, 8 * 6, 6]);
    assert!(!y.is_contiguous());
    assert!(is_dense_channels_last(&y));
    assert_eq!(max_abs_diff(&x, &y), 0.0);
    let back = layout::to_format(&y, MemoryFormat::Contiguous);
    assert!(back.is_contiguous());
    assert_eq!(max_abs_diff(&back, &x), 0.0);
}

/// Each rearrangement on a channels-last input: the same values as on NCHW, and a dense
/// channels-last output. Inputs include a channel slice (what the MUX block's split and a
/// MUXConv branch see), whose strides are channels-last but not dense.
#[test]
fn rearrangements_keep_channels_last_and_match_nchw() {
    let full = Tensor::randn([2, 24, 8, 12], (Kind::Float, Device::Cpu));
    let cl_full = channels_last(&full);
    let cases: [(&str, Tensor, Tensor); 2] = [
        (
            "dense",
            full.narrow(1, 0, 16),
            channels_last(&full.narrow(1, 0, 16)),
        ),
        (
            "channel slice",
            full.narrow(1, 8, 16),
            cl_full.narrow(1, 8, 16),
        ),
    ];
    for (what, nchw, cl) in &cases {
        assert!(!nchw.is_contiguous() || *what == "dense");
        type Op = fn(&Tensor) -> Tensor;
        let ops: [(&str, Op); 4] = [
            ("space_to_channel", space_to_channel),
            ("channel_to_space", channel_to_space),
            ("channel_shuffle 2", |x| channel_shuffle(x, 2)),
            ("channel_shuffle 4", |x| channel_shuffle(x, 4)),
        ];
        for (name, op) in ops {
            let want = op(&nchw.contiguous());
            let got = op(cl);
            assert_eq!(max_abs_diff(&got, &want), 0.0, "{name} on a {what} input");
            assert!(
                is_dense_channels_last(&got),
                "{name} on a {what} input returned strides {:?}",
                got.stride()
            );
            let nchw_out = op(nchw);
            assert!(nchw_out.is_contiguous(), "{name} on NCHW stays NCHW");
        }
    }
}

#[test]
fn cat_shuffle_equals_a_concatenation_then_a_shuffle_in_one_copy() {
    let a = Tensor::randn([3, 10, 5, 7], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([3, 10, 5, 7], (Kind::Float, Device::Cpu));
    let want = channel_shuffle(&Tensor::cat(&[&a, &b], 1), 2);
    let got = cat_shuffle(&a, &b, 2);
    assert_eq!(max_abs_diff(&got, &want), 0.0);
    assert!(got.is_contiguous());
    let got_cl = cat_shuffle(&channels_last(&a), &channels_last(&b), 2);
    assert_eq!(max_abs_diff(&got_cl, &want), 0.0);
    assert!(is_dense_channels_last(&got_cl));
    // Unequal halves or other group counts fall back to cat + shuffle.
    let c = Tensor::randn([3, 6, 5, 7], (Kind::Float, Device::Cpu));
    let want = channel_shuffle(&Tensor::cat(&[&a, &c], 1), 2);
    assert_eq!(max_abs_diff(&cat_shuffle(&a, &c, 2), &want), 0.0);
}

/// `layout::apply` re-lays the VarStore's conv weights in place: the tensors a training
/// step holds (optimiser, EMA) see the new layout, and a later `copy_` load keeps it.
#[test]
fn apply_relays_weights_in_place() {
    let vs = nn::VarStore::new(Device::Cpu);
    let arch = Arch::Json(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/archs/muxnet_demo.json"),
    );
    let net = Network::build(&vs.root(), &arch, 14, 0.0, HeadInit::Reference).unwrap();
    let held = vs.variables()["conv_stem.weight"].shallow_clone();
    let before = held.copy();
    assert_eq!(net.memory_format(), MemoryFormat::Contiguous);
    net.set_memory_format(&vs, MemoryFormat::ChannelsLast);
    assert_eq!(net.memory_format(), MemoryFormat::ChannelsLast);
    assert!(is_dense_channels_last(&held) && !held.is_contiguous());
    assert_eq!(max_abs_diff(&held, &before), 0.0);
    assert!(held.requires_grad());
    let convs = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.dim() == 4)
        .collect::<Vec<_>>();
    assert!(convs.len() > 10);
    for (name, t) in &convs {
        assert!(is_dense_channels_last(t), "{name}: {:?}", t.stride());
    }
    let ones = Tensor::ones_like(&held);
    tch::no_grad(|| held.shallow_clone().copy_(&ones));
    assert!(is_dense_channels_last(&held));
    assert_eq!(held.sum(Kind::Float).double_value(&[]), held.numel() as f64);
}

/// DenseNet-121 has no reference output fixture, so the folded model (norm0 and each
/// layer's norm2 folded into the conv before them) is checked against the unfolded network
/// in eval mode, with BatchNorm statistics and affine parameters randomised so that folding
/// matters. Tolerance: DenseNet-121's float32 reordering bound relative to the largest logit
/// (tests/common/tolerance.rs); folded weights round once more per layer, inside it.
#[test]
fn folded_densenet_equals_unfolded_eval_in_both_formats() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::build(&vs.root(), &Arch::Densenet121, 14, 0.0, HeadInit::Reference).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with("running_var") {
                t.copy_(&(Tensor::rand_like(&t) + 0.5));
            } else if name.ends_with("running_mean") || name.contains("norm") {
                t.copy_(
                    &(Tensor::randn_like(&t) * 0.1
                        + if name.ends_with("weight") { 1.0 } else { 0.0 }),
                );
            }
        }
    });
    let x = Tensor::randn([2, 3, 96, 96], (Kind::Float, Device::Cpu));
    let want = tch::no_grad(|| net.forward_t(&x, false));
    let scale = want.abs().max().double_value(&[]);
    assert!(
        scale > 0.1,
        "the logits are too small to tell anything: {scale}"
    );
    for f in [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
        let folded = FoldedNetwork::new(&net, f);
        assert_eq!(folded.memory_format(), f);
        let got = tch::no_grad(|| folded.forward(&x));
        crate::tolerance::assert_close(
            &format!("folded logits ({f})"),
            &got,
            &want,
            crate::tolerance::DENSENET121,
        );
        let map = tch::no_grad(|| folded.feature_map(&x));
        if f == MemoryFormat::ChannelsLast {
            assert!(
                is_dense_channels_last(&map),
                "feature map strides {:?}",
                map.stride()
            );
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn after_tune_malloc_a_large_tensor_is_not_mmapped() {
    if std::env::var_os(muxmed::model::device::MALLOC_DEFAULTS_ENV).is_some() {
        return;
    }
    muxmed::model::device::tune_malloc();
    // 16 MiB: above glibc's starting mmap threshold (128 KiB); below 64 MiB, the largest
    // block a test thread's own arena can serve without a mapping (see `tune_malloc`).
    let bytes = 16usize << 20;
    // SAFETY: mallinfo2 only reads glibc's allocator statistics.
    let before = unsafe { libc::mallinfo2() };
    let t = Tensor::ones([(bytes / 4) as i64], (Kind::Float, Device::Cpu));
    let during = unsafe { libc::mallinfo2() };
    assert_eq!(t.sum(Kind::Double).double_value(&[]), (bytes / 4) as f64);
    // glibc's default would map such a block on its own (hblkhd counts mapped bytes).
    assert!(
        during.hblkhd < before.hblkhd + bytes,
        "mapped bytes went {} -> {}",
        before.hblkhd,
        during.hblkhd
    );
    // Other test threads allocate meanwhile, so only a lower bound on the heap's growth.
    assert!(
        during.uordblks + during.fordblks >= bytes,
        "heap {} + {} bytes cannot hold the tensor",
        during.uordblks,
        during.fordblks
    );
}
