//! Published numbers the reports compare against (`../shared/docs/reference_results.md`).
//! Always shown with the split they come from: official-split and random-split AUROCs are
//! not comparable.

/// CheXNet (Rajpurkar et al. 2017, arXiv:1711.05225, Table 2): DenseNet-121, random 70/10/20
/// patient split (not published). In the order of `data::LABELS`.
pub const CHEXNET: [f64; 14] = [
    0.8094, 0.9248, 0.8638, 0.7345, 0.8676, 0.7802, 0.7680, 0.8887, 0.7901, 0.8878, 0.9371, 0.8047,
    0.8062, 0.9164,
];
pub const CHEXNET_MEAN: f64 = 0.841;
pub const CHEXNET_SPLIT: &str = "random 70/10/20 patient split (CheXNet's own, unpublished)";

/// Wang et al. 2017 (ChestX-ray8), as quoted in CheXNet's Table 2; same label order.
pub const WANG2017: [f64; 14] = [
    0.716, 0.807, 0.784, 0.609, 0.706, 0.671, 0.633, 0.806, 0.708, 0.835, 0.815, 0.769, 0.708,
    0.767,
];

/// Mean AUROCs on NIH's official test list (25,596 images).
pub const OFFICIAL_SPLIT_MEANS: [(&str, f64); 5] = [
    ("Gündel et al. 2018, DenseNet-121 + location", 0.807),
    ("public model card (nessi10), DenseNet-121", 0.805),
    ("public model card (Yzaza), DenseNet-121 at 320", 0.8106),
    ("public model card (Yzaza), Swin-T at 320", 0.8184),
    ("XProtoNet, CVPR 2021", 0.822),
];
