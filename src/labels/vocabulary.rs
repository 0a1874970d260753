//! One label vocabulary across datasets: `vocabulary.csv` (shipped in the binary) maps each
//! dataset's label names onto shared concepts, only where two names are the same finding,
//! each line with where the correspondence comes from. A run's labels are concepts; a
//! concept a dataset does not annotate is missing for its images, never negative.
//! Concepts shared with ChestX-Ray14 are named as ChestX-Ray14 names them (`Effusion`),
//! the others as the dataset that has them does (`Lung Opacity`).

use std::sync::OnceLock;

/// A dataset muxmed reads (`data.source`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// NIH ChestX-Ray14.
    #[default]
    Nih,
    /// Stanford CheXpert v1.0 / v1.0-small.
    Chexpert,
    /// MIMIC-CXR-JPG 2.x.
    MimicCxr,
    /// PadChest (Hospital San Juan, Alicante).
    Padchest,
    /// VinDr-CXR as the Kaggle VinBigData release ships it.
    VindrCxr,
    /// RSNA Pneumonia Detection Challenge (Kaggle).
    RsnaPneumonia,
    /// A CSV of path, labels and patient (your own dataset).
    Generic,
}

impl Dataset {
    pub const ALL: [Dataset; 7] = [
        Dataset::Nih,
        Dataset::Chexpert,
        Dataset::MimicCxr,
        Dataset::Padchest,
        Dataset::VindrCxr,
        Dataset::RsnaPneumonia,
        Dataset::Generic,
    ];

    /// The name `data.source` takes.
    pub fn key(self) -> &'static str {
        match self {
            Dataset::Nih => "nih",
            Dataset::Chexpert => "chexpert",
            Dataset::MimicCxr => "mimic_cxr",
            Dataset::Padchest => "padchest",
            Dataset::VindrCxr => "vindr_cxr",
            Dataset::RsnaPneumonia => "rsna_pneumonia",
            Dataset::Generic => "generic",
        }
    }

    /// The dataset as papers name it.
    pub fn title(self) -> &'static str {
        match self {
            Dataset::Nih => "NIH Clinical Center ChestX-ray14",
            Dataset::Chexpert => "Stanford CheXpert",
            Dataset::MimicCxr => "MIMIC-CXR-JPG (Beth Israel Deaconess, Boston)",
            Dataset::Padchest => "PadChest (Hospital San Juan, Alicante)",
            Dataset::VindrCxr => "VinDr-CXR (Hanoi)",
            Dataset::RsnaPneumonia => "RSNA Pneumonia Detection Challenge",
            Dataset::Generic => "your own dataset (generic CSV)",
        }
    }

    /// Where the dataset was published, for a report's credit line.
    pub fn citation(self) -> &'static str {
        match self {
            Dataset::Nih => "Wang et al., CVPR 2017",
            Dataset::Chexpert => "Irvin et al., AAAI 2019",
            Dataset::MimicCxr => "Johnson et al., Scientific Data 2019",
            Dataset::Padchest => "Bustos et al., Medical Image Analysis 2020",
            Dataset::VindrCxr => "Nguyen et al., Scientific Data 2022",
            Dataset::RsnaPneumonia => "Shih et al., Radiology: AI 2019",
            Dataset::Generic => "",
        }
    }

    pub fn parse(s: &str) -> Option<Dataset> {
        Dataset::ALL.into_iter().find(|d| d.key() == s)
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// One line of the vocabulary: a dataset's label name and the concept it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub concept: String,
    pub dataset: Dataset,
    /// The label as the dataset's files spell it.
    pub name: String,
    /// Where the correspondence comes from.
    pub basis: String,
}

const TABLE: &str = include_str!("vocabulary.csv");

/// The shipped vocabulary, parsed once. A malformed line is a build defect, caught by the
/// tests below; it is skipped rather than panicking at run time.
pub fn vocabulary() -> &'static [Mapping] {
    static V: OnceLock<Vec<Mapping>> = OnceLock::new();
    V.get_or_init(|| {
        crate::io::csv_records(TABLE)
            .unwrap_or_default()
            .into_iter()
            .skip(1)
            .filter_map(|r| match &r.fields[..] {
                [c, d, n, b] => Some(Mapping {
                    concept: c.clone(),
                    dataset: Dataset::parse(d)?,
                    name: n.clone(),
                    basis: b.clone(),
                }),
                _ => None,
            })
            .collect()
    })
}

/// The concepts `dataset` annotates, in the vocabulary's order.
pub fn concepts_of(dataset: Dataset) -> Vec<&'static Mapping> {
    vocabulary()
        .iter()
        .filter(|m| m.dataset == dataset)
        .collect()
}

/// The concept `name` of `dataset` is, if the vocabulary has it.
pub fn concept(dataset: Dataset, name: &str) -> Option<&'static str> {
    vocabulary()
        .iter()
        .find(|m| m.dataset == dataset && m.name == name)
        .map(|m| m.concept.as_str())
}

/// Whether `dataset` annotates `concept`.
pub fn annotates(dataset: Dataset, concept: &str) -> bool {
    vocabulary()
        .iter()
        .any(|m| m.dataset == dataset && m.concept == concept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::LABELS;
    use std::collections::HashSet;

    #[test]
    fn every_line_of_the_vocabulary_parses_and_names_its_basis() {
        let lines = TABLE.lines().filter(|l| !l.trim().is_empty()).count() - 1;
        assert_eq!(vocabulary().len(), lines);
        assert!(vocabulary().iter().all(|m| !m.basis.is_empty()));
        let (mut names, mut concepts) = (HashSet::new(), HashSet::new());
        for m in vocabulary() {
            assert!(names.insert((m.dataset, &m.name)), "{m:?} twice");
            // One name per concept and dataset: a union of two names would need a rule.
            assert!(
                concepts.insert((m.dataset, &m.concept)),
                "{m:?}: concept twice"
            );
        }
    }

    #[test]
    fn nih_concepts_are_the_14_labels_and_shared_findings_meet() {
        let nih: Vec<&str> = concepts_of(Dataset::Nih)
            .iter()
            .map(|m| m.concept.as_str())
            .collect();
        assert_eq!(nih, LABELS);
        for d in [
            Dataset::Chexpert,
            Dataset::MimicCxr,
            Dataset::Padchest,
            Dataset::VindrCxr,
        ] {
            let name = concepts_of(d)
                .iter()
                .find(|m| m.concept == "Effusion")
                .map(|m| m.name.to_lowercase());
            assert_eq!(name.as_deref(), Some("pleural effusion"), "{d}");
        }
        // CheXpert's Lung Opacity is not NIH's Infiltration.
        assert_eq!(
            concept(Dataset::Chexpert, "Lung Opacity"),
            Some("Lung Opacity")
        );
        assert!(!annotates(Dataset::Chexpert, "Infiltration"));
        assert_eq!(concept(Dataset::RsnaPneumonia, "Target"), Some("Pneumonia"));
    }
}
