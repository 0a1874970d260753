//! `subgroups_<key>.json`: one evaluation's per-label AUROC within each group of sex, age
//! band, view and (for a mix) dataset, with patient-bootstrap intervals and the largest gap
//! per label ([`crate::metrics::subgroups`]). An attribute the data does not give is named
//! and skipped.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::join::Joined;
use super::predictions::EvalError;
use crate::config::SubgroupConfig;
use crate::data::dataset::{SplitAttributes, SplitData};
use crate::metrics::subgroups::{score_groups, AttributeResult, Grouping, SubgroupOptions};

/// What subgroups are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    Sex,
    AgeBand,
    View,
    Dataset,
}

impl Attribute {
    pub const ALL: [Attribute; 4] = [
        Attribute::Sex,
        Attribute::AgeBand,
        Attribute::View,
        Attribute::Dataset,
    ];

    /// As people read it.
    pub fn title(self) -> &'static str {
        match self {
            Attribute::Sex => "sex",
            Attribute::AgeBand => "age band",
            Attribute::View => "view",
            Attribute::Dataset => "dataset",
        }
    }
}

/// One attribute's groups and gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeSubgroups {
    pub attribute: Attribute,
    /// Images of the split with no value for the attribute (in no group).
    pub unknown: usize,
    #[serde(flatten)]
    pub result: AttributeResult,
}

/// An attribute left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedAttribute {
    pub attribute: Attribute,
    pub why: String,
}

/// `subgroups_<key>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subgroups {
    pub split: String,
    pub images: usize,
    pub labels: Vec<String>,
    pub min_positives: usize,
    pub resamples: usize,
    pub seed: u64,
    pub age_bands: Vec<u32>,
    pub attributes: Vec<AttributeSubgroups>,
    pub skipped: Vec<SkippedAttribute>,
}

impl Subgroups {
    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        super::predictions::write_json(path, self)
    }

    pub fn read(path: &Path) -> Result<Subgroups, EvalError> {
        super::predictions::read_json(path, "a subgroups file")
    }

    /// One line per attribute: its groups and the label with the largest gap; one per
    /// skipped attribute with why.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.attributes {
            let names: Vec<&str> = a.result.groups.iter().map(|g| g.group.as_str()).collect();
            let widest = a
                .result
                .gaps
                .iter()
                .filter_map(|g| g.gap.map(|v| (v, g)))
                .max_by(|x, y| x.0.total_cmp(&y.0));
            let gap = match widest {
                Some((v, g)) => format!(
                    "; largest gap {} {v:.3}{} ({} over {})",
                    g.label,
                    g.ci.map(|[l, h]| format!(" [{l:.3}, {h:.3}]"))
                        .unwrap_or_default(),
                    g.high.as_deref().unwrap_or(""),
                    g.low.as_deref().unwrap_or("")
                ),
                None => "; no label has two groups with enough positives and negatives".into(),
            };
            out.push(format!(
                "subgroups by {}: {}{gap}",
                a.attribute.title(),
                names.join(", ")
            ));
        }
        for s in &self.skipped {
            out.push(format!(
                "subgroups by {}: skipped, {}",
                s.attribute.title(),
                s.why
            ));
        }
        out
    }

    pub fn attribute(&self, a: Attribute) -> Option<&AttributeSubgroups> {
        self.attributes.iter().find(|x| x.attribute == a)
    }
}

/// The age band names of `edges` ([20, 40] → `0–20`, `20–40`, `40+`) and the band of `age`.
pub fn age_band(edges: &[u32], age: f64) -> usize {
    edges.iter().take_while(|&&e| age >= e as f64).count()
}

fn age_band_names(edges: &[u32]) -> Vec<String> {
    let mut out = Vec::with_capacity(edges.len() + 1);
    let mut lo = 0;
    for &e in edges {
        out.push(format!("{lo}–{e}"));
        lo = e;
    }
    out.push(format!("{lo}+"));
    out
}

/// Every group name of one attribute and each image's group; None when `attrs` lacks the
/// attribute.
fn groups_of(
    a: Attribute,
    attrs: &SplitAttributes,
    cfg: &SubgroupConfig,
) -> Option<(Vec<String>, Vec<Option<usize>>)> {
    let by_value = |col: &Option<Vec<Option<String>>>, keep: &dyn Fn(&str) -> bool| {
        let col = col.as_ref()?;
        let mut names: Vec<String> = col.iter().flatten().filter(|v| keep(v)).cloned().collect();
        names.sort();
        names.dedup();
        let member: Vec<Option<usize>> = col
            .iter()
            .map(|v| v.as_ref().and_then(|v| names.iter().position(|n| n == v)))
            .collect();
        Some((names, member))
    };
    match a {
        Attribute::Sex => by_value(&attrs.sex, &|v| v == "F" || v == "M"),
        Attribute::View => by_value(&attrs.view, &|_| true),
        Attribute::Dataset => by_value(&attrs.dataset, &|_| true),
        Attribute::AgeBand => attrs.age.as_ref().map(|ages| {
            let names = age_band_names(&cfg.age_bands);
            let member = ages
                .iter()
                .map(|v| v.map(|x| age_band(&cfg.age_bands, x)))
                .collect();
            (names, member)
        }),
    }
}

/// Group names and each image's group for one attribute, or why it is skipped.
fn grouping(
    a: Attribute,
    attrs: &SplitAttributes,
    cfg: &SubgroupConfig,
) -> Result<(Vec<String>, Vec<Option<usize>>), String> {
    let found = groups_of(a, attrs, cfg);
    let column = match a {
        Attribute::AgeBand => "age",
        other => other.title(),
    };
    let Some((names, member)) = found else {
        return Err(format!("the manifest has no `{column}` column"));
    };
    let mut used: Vec<usize> = member.iter().flatten().copied().collect();
    used.sort_unstable();
    used.dedup();
    match used.len() {
        0 => Err(format!("no image of the split has a `{column}` value")),
        1 => Err(format!(
            "every image with a `{column}` value is in one group ({})",
            names[used[0]]
        )),
        // Groups without an image in the split are left out.
        _ => Ok((
            used.iter().map(|&g| names[g].clone()).collect(),
            member
                .iter()
                .map(|m| m.and_then(|g| used.iter().position(|&u| u == g)))
                .collect(),
        )),
    }
}

/// One group of one attribute (`compare --where sex=F`): the images of that group only.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupFilter {
    pub attribute: Attribute,
    /// The group's name as subgroups name it (`F`, `AP`, `60–80`, `80+`, a dataset key).
    pub group: String,
}

impl GroupFilter {
    /// `ATTRIBUTE=GROUP` with ATTRIBUTE one of `sex`, `age_band`, `view`, `dataset`; an age
    /// band may be written with a hyphen (`60-80`).
    pub fn parse(s: &str) -> Result<GroupFilter, String> {
        let (a, g) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected ATTRIBUTE=GROUP, e.g. sex=F or view=AP"))?;
        let attribute = Attribute::ALL
            .into_iter()
            .find(|x| {
                serde_json::to_value(x)
                    .ok()
                    .and_then(|v| v.as_str().map(|v| v == a.trim()))
                    == Some(true)
            })
            .ok_or_else(|| {
                format!("`{a}` is not an attribute: use sex, age_band, view or dataset")
            })?;
        let mut group = g.trim().to_string();
        if attribute == Attribute::AgeBand {
            group = group.replace('-', "–");
        }
        if group.is_empty() {
            return Err(format!("`{s}`: no group after `=`"));
        }
        Ok(GroupFilter { attribute, group })
    }

    /// Which rows of `attrs` are in the group (age bands by `cfg`); an error names the
    /// attribute when `attrs` lacks it, and the groups there are when none matches.
    pub fn rows(&self, attrs: &SplitAttributes, cfg: &SubgroupConfig) -> Result<Vec<bool>, String> {
        let (names, member) = groups_of(self.attribute, attrs, cfg)
            .ok_or_else(|| format!("the data has no {} for its images", self.attribute.title()))?;
        let Some(g) = names.iter().position(|n| *n == self.group) else {
            return Err(format!(
                "no {} group `{}` (the groups are {})",
                self.attribute.title(),
                self.group,
                names.join(", ")
            ));
        };
        Ok(member.iter().map(|m| *m == Some(g)).collect())
    }
}

impl std::fmt::Display for GroupFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.attribute.title(), self.group)
    }
}

/// Scores every attribute of the split's rows. `attrs` is the split file's attribute
/// columns; `data` and `probs` the rows scored, matched to them by image id.
pub fn subgroups(
    attrs: &SplitAttributes,
    data: &SplitData,
    probs: &[Vec<f64>],
    split: &str,
    cfg: &SubgroupConfig,
    resamples: usize,
    seed: u64,
) -> Subgroups {
    let j = super::join::join_split(data, |i, _| probs.get(i).cloned());
    score(
        &attrs.aligned_to(&j.image_ids),
        &j,
        split,
        cfg,
        resamples,
        seed,
    )
}

/// Scores every attribute of `j`'s rows; `attrs` holds their values row by row.
pub fn score(
    attrs: &SplitAttributes,
    j: &Joined,
    split: &str,
    cfg: &SubgroupConfig,
    resamples: usize,
    seed: u64,
) -> Subgroups {
    let o = SubgroupOptions {
        min_positives: cfg.min_positives,
        resamples,
        seed,
        level: 0.95,
    };
    let mut out = Subgroups {
        split: split.to_string(),
        images: j.y.len(),
        labels: j.labels.clone(),
        min_positives: cfg.min_positives,
        resamples,
        seed,
        age_bands: cfg.age_bands.clone(),
        attributes: Vec::new(),
        skipped: Vec::new(),
    };
    for a in Attribute::ALL {
        match grouping(a, attrs, cfg) {
            Err(_) if a == Attribute::Dataset && attrs.dataset.is_none() => {
                out.skipped.push(SkippedAttribute {
                    attribute: a,
                    why: "one dataset (dataset groups need a mix, data.sources)".into(),
                })
            }
            Err(why) => out.skipped.push(SkippedAttribute { attribute: a, why }),
            Ok((names, member)) => {
                let g = Grouping {
                    names: &names,
                    member: &member,
                };
                out.attributes.push(AttributeSubgroups {
                    attribute: a,
                    unknown: member.iter().filter(|m| m.is_none()).count(),
                    result: score_groups(&j.y, &j.s, &j.patients, &j.labels, &g, &o),
                });
            }
        }
    }
    out
}
