//! `eval:`: what `evaluate --run` reports beyond the per-label metrics.

use serde::{Deserialize, Serialize};

use super::check::{invalid, Invalid};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub subgroups: SubgroupConfig,
}

/// Per-label AUROC within subgroups (sex, age band, view, dataset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubgroupConfig {
    /// A group with fewer positives or negatives of a label says "too few" for it.
    pub min_positives: usize,
    /// Inner edges of the age bands, in years, increasing: [20, 40, 60, 80] gives 0–20,
    /// 20–40, 40–60, 60–80 and 80+ (a band holds its lower edge).
    pub age_bands: Vec<u32>,
}

impl Default for SubgroupConfig {
    fn default() -> Self {
        SubgroupConfig {
            min_positives: 10,
            age_bands: vec![20, 40, 60, 80],
        }
    }
}

impl EvalConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        let s = &self.subgroups;
        if s.min_positives == 0 {
            return invalid(
                "eval.subgroups.min_positives",
                "must be at least 1 (an AUROC needs a positive and a negative)".into(),
            );
        }
        if s.age_bands.is_empty()
            || s.age_bands.windows(2).any(|w| w[0] >= w[1])
            || s.age_bands[0] == 0
        {
            return invalid(
                "eval.subgroups.age_bands",
                format!(
                    "must be one or more increasing ages above 0, got {:?}",
                    s.age_bands
                ),
            );
        }
        Ok(())
    }
}
