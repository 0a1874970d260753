//! Ground-level names every module shares: the 14 ChestX-Ray14 findings, the data splits,
//! and the datasets with their label vocabulary ([`vocabulary`]).

/// The 14 ChestX-Ray14 findings in the order published models use (CheXNet, Wang et al. 2017).
pub const LABELS: [&str; 14] = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
];

/// The metadata's marker for an image with none of the 14 findings.
pub const NO_FINDING: &str = "No Finding";

/// A split of a manifest (and of a run, which keeps its own copy of the manifest's splits).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Reads `train`, `val` or `test`.
    pub fn parse(s: &str) -> Option<Split> {
        Split::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Split::parse(s).ok_or_else(|| format!("unknown split `{s}`: expected train, val or test"))
    }
}

pub mod vocabulary;
pub use vocabulary::Dataset;
