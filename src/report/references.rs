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

/// A published mean AUROC on NIH's official test list (25,596 images).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OfficialSplitMean {
    pub who: &'static str,
    pub mean: f64,
    /// A peer-reviewed paper, or a public model card (not peer-reviewed).
    pub peer_reviewed: bool,
}

impl OfficialSplitMean {
    /// How reports name it: model cards say so.
    pub fn source(&self) -> String {
        if self.peer_reviewed {
            self.who.to_string()
        } else {
            format!("{} (model card, not peer-reviewed)", self.who)
        }
    }
}

/// Peer-reviewed sources first, then model cards.
pub const OFFICIAL_SPLIT_MEANS: [OfficialSplitMean; 5] = [
    OfficialSplitMean {
        who: "Gündel et al. 2018, DenseNet-121 + location",
        mean: 0.807,
        peer_reviewed: true,
    },
    OfficialSplitMean {
        who: "XProtoNet, CVPR 2021",
        mean: 0.822,
        peer_reviewed: true,
    },
    OfficialSplitMean {
        who: "nessi10, DenseNet-121",
        mean: 0.805,
        peer_reviewed: false,
    },
    OfficialSplitMean {
        who: "Yzaza, DenseNet-121 at 320",
        mean: 0.8106,
        peer_reviewed: false,
    },
    OfficialSplitMean {
        who: "Yzaza, Swin-T at 320",
        mean: 0.8184,
        peer_reviewed: false,
    },
];

#[cfg(test)]
mod tests {
    #[test]
    fn peer_reviewed_references_come_first() {
        let r = super::OFFICIAL_SPLIT_MEANS;
        let first_card = r.iter().position(|m| !m.peer_reviewed).unwrap();
        assert!(r[first_card..].iter().all(|m| !m.peer_reviewed));
        assert!(r[first_card].source().contains("model card"));
    }
}
