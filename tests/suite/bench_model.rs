//! `bench model --per-block`: one timed part per stem, block and head, in forward order, each
//! on the input shape it has inside the network.
#![cfg(feature = "torch")]

use muxmed::config::Arch;
use muxmed::model::muxnet::HeadInit;
use muxmed::model::network::Network;
use muxmed::train::bench::profile_blocks;
use tch::{nn, Device, Tensor};

#[test]
fn per_block_profile_follows_muxnet_m_block_by_block() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::build(
        &vs.root(),
        &Arch::MuxnetM,
        14,
        0.0,
        HeadInit::PytorchDefault,
    )
    .unwrap();
    let Network::MuxNet(m) = &net else {
        panic!("muxnet_m builds a MUXNet")
    };
    let x = Tensor::randn([2, 3, 64, 64], tch::kind::FLOAT_CPU);
    let parts = profile_blocks(m, &x, 1);
    // MUXNet-m: 18 blocks (muxnet_architecture.md), between the stem and the head.
    assert_eq!(parts.len(), 20);
    let kinds: Vec<&str> = parts.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            "stem", "ds", "ir", "sp", "sp", "ir", "sp", "sp", "ir", "sp", "sp", "ir", "sp", "sp",
            "ir", "sp", "sp", "sp", "ir", "head"
        ]
    );
    assert_eq!(parts[1].name, "blocks.0.0");
    assert_eq!(parts[18].name, "blocks.17.0");
    // Stem 3 -> 24 at stride 2; the head sees the last block's 200 channels at 64 / 32.
    assert_eq!(parts[0].input, [2, 3, 64, 64]);
    assert_eq!(parts[1].input, [2, 24, 32, 32]);
    assert_eq!(parts[19].input, [2, 200, 2, 2]);
    for p in &parts {
        assert!(
            p.forward_ms > 0.0 && p.backward_ms > 0.0,
            "{}: {p:?}",
            p.name
        );
    }
}
