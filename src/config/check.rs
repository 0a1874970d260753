//! Each section's `check()`: the rules a parsed config must meet beyond its types, each
//! failure naming the key (`train.lr`) and why. [`PipelineConfig::validate`] calls them.

use super::augment::{self, AugmentConfig};
use super::{
    closest, parse_device, DataConfig, ModelConfig, RuntimeConfig, SplitProtocol, TrainConfig,
};
use crate::labels::{vocabulary, Dataset, LABELS};

/// A rule a config breaks: the key, and why.
pub type Invalid = (String, String);

/// The failure for `key`.
pub(super) fn invalid(key: &str, why: String) -> Result<(), Invalid> {
    Err((key.to_string(), why))
}

/// The concepts a single-source config gives, in its order.
pub fn entry_concepts(d: &DataConfig) -> Vec<String> {
    match (&d.generic, d.dataset()) {
        (Some(g), _) => g.labels.clone(),
        (None, Dataset::Nih) => LABELS.iter().map(|l| l.to_string()).collect(),
        (None, ds) => vocabulary::concepts_of(ds)
            .into_iter()
            .map(|m| m.concept.clone())
            .collect(),
    }
}

impl DataConfig {
    /// Split fractions, the protocol's files, generic labels, filters.
    pub fn check(&self) -> Result<(), Invalid> {
        let d = self;
        if !(d.val_fraction > 0.0 && d.val_fraction < 1.0) {
            return invalid(
                "data.val_fraction",
                format!(
                    "must be between 0 and 1 (exclusive), got {}",
                    d.val_fraction
                ),
            );
        }
        if let Some(t) = d.test_fraction {
            if d.generic.is_none() && d.protocol != SplitProtocol::RandomPatient {
                return invalid(
                "data.test_fraction",
                format!("protocol `{}` takes its test split from its files: test_fraction applies to `random_patient` (and a generic CSV without a split column) only", serde_json::to_value(d.protocol).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()),
            );
            }
            if !(t > 0.0 && t + d.val_fraction < 1.0) {
                return invalid(
                "data.test_fraction",
                format!("must be above 0 and leave patients for training: test_fraction {t} + val_fraction {} must be below 1", d.val_fraction),
            );
            }
        }
        if d.protocol == SplitProtocol::SplitFile && d.split_file.is_none() {
            return invalid(
                "data.split_file",
                "protocol `split_file` needs data.split_file (a CSV of image id and split)".into(),
            );
        }
        if let Some(g) = &d.generic {
            if g.labels.is_empty() {
                return invalid("data.generic.labels", "give at least one label name".into());
            }
            let mut seen = std::collections::BTreeSet::new();
            for (i, l) in g.labels.iter().enumerate() {
                if l.trim().is_empty() || l.contains('|') || !seen.insert(l) {
                    return invalid(
                        &format!("data.generic.labels[{i}]"),
                        format!("`{l}` is empty, contains `|` or repeats an earlier label"),
                    );
                }
            }
        }
        if !self.sources.is_empty() {
            return self.check_sources();
        }
        self.check_source()?;
        self.check_filters()
    }

    /// `data.sources`: each entry checked as a single-source config of its own, the keys
    /// it replaces left unset, filters checked against the union of the entries' concepts.
    fn check_sources(&self) -> Result<(), Invalid> {
        let d = self;
        let replaced = [
            ("data.source", d.source.is_some()),
            ("data.generic", d.generic.is_some()),
            ("data.metadata", d.metadata.is_some()),
            ("data.uncertain", d.uncertain.is_some()),
            (
                "data.uncertain_per_label",
                !d.uncertain_per_label.is_empty(),
            ),
            ("data.blank", d.blank.is_some()),
            ("data.readers", d.readers.is_some()),
            ("data.labeler", d.labeler.is_some()),
        ];
        if let Some((key, _)) = replaced.iter().find(|(_, set)| *set) {
            return invalid(
                key,
                "is set per entry when data.sources is given: move it into the entries".into(),
            );
        }
        let mut union: Vec<String> = Vec::new();
        for (i, e) in d.sources.iter().enumerate() {
            let at = |k: &str, why: String| invalid(&format!("data.sources[{i}].{k}"), why);
            if e.source.is_none() {
                return at("source", "each entry needs its source (nih, chexpert, mimic_cxr, padchest, vindr_cxr, rsna_pneumonia or generic)".into());
            }
            if e.root.as_os_str().is_empty() && e.generic.is_none() {
                return at("root", "each entry needs the folder of its dataset".into());
            }
            if d.sources[..i].iter().any(|o| o.name() == e.name()) {
                return at(
                    "name",
                    format!(
                        "`{}` names an earlier entry too; give each entry its own name",
                        e.name()
                    ),
                );
            }
            if let Some(w) = e.weight {
                if !(w.is_finite() && w > 0.0) {
                    return at("weight", format!("{w} is not a positive number"));
                }
            }
            let mut c = d.for_entry(e);
            c.filters.labels.clear();
            c.check().map_err(|(k, why)| {
                (k.replacen("data.", &format!("data.sources[{i}]."), 1), why)
            })?;
            for l in entry_concepts(&c) {
                if !union.contains(&l) {
                    union.push(l);
                }
            }
        }
        check_filter_labels(&d.filters.labels, &union)
    }

    /// Each dataset's own options are refused for a source that cannot honour them.
    fn check_source(&self) -> Result<(), Invalid> {
        let d = self;
        let ds = d.dataset();
        if ds == Dataset::Generic && d.generic.is_none() {
            return invalid(
                "data.generic",
                "data.source: generic needs data.generic (csv and labels)".into(),
            );
        }
        if ds != Dataset::Generic && d.generic.is_some() {
            return invalid(
                "data.source",
                format!("data.generic is given but data.source is `{ds}`: remove one"),
            );
        }
        if !matches!(ds, Dataset::Nih | Dataset::Generic) && d.root == DataConfig::default().root {
            return invalid(
                "data.root",
                format!(
                    "is NIH's default folder ({}); set it to the folder of the `{ds}` files",
                    d.root.display()
                ),
            );
        }
        let only = |key: &str, set: bool, for_: &[Dataset]| -> Result<(), Invalid> {
            if set && !for_.contains(&ds) {
                let names: Vec<&str> = for_.iter().map(|d| d.key()).collect();
                return invalid(
                    key,
                    format!(
                        "applies to data.source {} only; `{ds}` has no such labels",
                        names.join(", ")
                    ),
                );
            }
            Ok(())
        };
        let chexpert_like = [Dataset::Chexpert, Dataset::MimicCxr];
        only("data.uncertain", d.uncertain.is_some(), &chexpert_like)?;
        only(
            "data.uncertain_per_label",
            !d.uncertain_per_label.is_empty(),
            &chexpert_like,
        )?;
        only("data.blank", d.blank.is_some(), &chexpert_like)?;
        only("data.readers", d.readers.is_some(), &[Dataset::VindrCxr])?;
        only("data.labeler", d.labeler.is_some(), &[Dataset::MimicCxr])?;
        for c in d.uncertain_per_label.keys() {
            if !vocabulary::annotates(ds, c) {
                return invalid(
                    &format!("data.uncertain_per_label.{c}"),
                    format!("`{c}` is not a concept `{ds}` annotates"),
                );
            }
        }
        if d.protocol == SplitProtocol::Official
            && matches!(ds, Dataset::VindrCxr | Dataset::RsnaPneumonia)
        {
            return invalid(
                "data.protocol",
                format!("`{ds}` ships no labelled official test split: use random_patient or split_file"),
            );
        }
        // Views, ages and one image per patient need columns the source has.
        let f = &d.filters;
        let no_meta = [Dataset::VindrCxr, Dataset::RsnaPneumonia];
        if no_meta.contains(&ds)
            && (!f.views.is_empty()
                || f.min_age.is_some()
                || f.max_age.is_some()
                || f.one_per_patient)
        {
            return invalid(
                "data.filters",
                format!("`{ds}`'s label file gives no view or age, and each image is its own patient: views, min_age, max_age and one_per_patient cannot apply"),
            );
        }
        Ok(())
    }

    /// `data.filters`: known views and labels, an age range that is not empty.
    fn check_filters(&self) -> Result<(), Invalid> {
        let d = self;
        for (i, v) in d.filters.views.iter().enumerate() {
            if v != "PA" && v != "AP" {
                return invalid(
                    &format!("data.filters.views[{i}]"),
                    format!("unknown view `{v}`: expected PA or AP"),
                );
            }
        }
        if let (Some(lo), Some(hi)) = (d.filters.min_age, d.filters.max_age) {
            if lo > hi {
                return invalid(
                    "data.filters.min_age",
                    format!("min_age {lo} is above max_age {hi}"),
                );
            }
        }
        check_filter_labels(&d.filters.labels, &entry_concepts(d))
    }
}

/// Each of `data.filters.labels` must be one of `known`; an unknown one is named, with the
/// closest known label as a hint.
fn check_filter_labels(labels: &[String], known: &[String]) -> Result<(), Invalid> {
    for (i, l) in labels.iter().enumerate() {
        if !known.iter().any(|k| k == l) {
            let hint = closest(l, known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return invalid(
                &format!("data.filters.labels[{i}]"),
                format!(
                    "unknown label `{l}`{hint}; the labels are {}",
                    known.join(", ")
                ),
            );
        }
    }
    Ok(())
}

impl ModelConfig {
    /// Dropout rates; weights given unless training from scratch.
    pub fn check(&self) -> Result<(), Invalid> {
        let m = self;
        if !(0.0..1.0).contains(&m.drop()) {
            return invalid(
                "model.drop_rate",
                format!("must be in [0, 1), got {}", m.drop()),
            );
        }
        if let Some(r) = m.drop_path_rate {
            if !(0.0..1.0).contains(&r) {
                return invalid(
                    "model.drop_path_rate",
                    format!("must be in [0, 1), got {r}"),
                );
            }
        }
        if !m.from_scratch && m.weights.is_none() {
            return invalid(
            "model.weights",
            "no weights given: set model.weights to an imported safetensors file, or model.from_scratch: true".into(),
        );
        }
        Ok(())
    }
}

impl TrainConfig {
    /// Resolution, epochs, batch, learning rates and the schedule.
    pub fn check(&self) -> Result<(), Invalid> {
        let t = self;
        if t.resolution < 32 || !t.resolution.is_multiple_of(32) {
            return invalid(
                "train.resolution",
                format!(
                    "must be a multiple of 32 and at least 32 (MUXNet's output stride), got {}",
                    t.resolution
                ),
            );
        }
        if t.epochs == 0 {
            return invalid("train.epochs", "must be at least 1".into());
        }
        if t.batch_size == 0 {
            return invalid("train.batch_size", "must be at least 1".into());
        }
        for (k, v) in [
            ("train.lr", t.lr),
            ("train.backbone_lr_factor", t.backbone_lr_factor),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return invalid(k, format!("must be a positive number, got {v}"));
            }
        }
        for (k, v) in [
            ("train.weight_decay", t.weight_decay),
            ("train.warmup_epochs", t.warmup_epochs),
            ("train.unfreeze_warmup_epochs", t.unfreeze_warmup_epochs),
            ("train.min_lr", t.min_lr),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return invalid(k, format!("must be zero or positive, got {v}"));
            }
        }
        if t.min_lr > t.lr {
            return invalid(
                "train.min_lr",
                format!("min_lr {} is above lr {}", t.min_lr, t.lr),
            );
        }
        if t.accum_steps == 0 {
            return invalid("train.accum_steps", "must be at least 1".into());
        }
        self.check_steps()
    }

    /// Checkpoints, logging, loss, EMA, freezing, sampling and clipping.
    fn check_steps(&self) -> Result<(), Invalid> {
        let t = self;
        if t.checkpoint_every_steps == Some(0) {
            return invalid(
                "train.checkpoint_every_steps",
                "must be at least 1 (or unset: every 10 minutes)".into(),
            );
        }
        if t.log_every == 0 {
            return invalid("train.log_every", "must be at least 1".into());
        }
        if !(t.focal_gamma.is_finite() && t.focal_gamma >= 0.0) {
            return invalid(
                "train.focal_gamma",
                format!("must be zero or positive, got {}", t.focal_gamma),
            );
        }
        if let Some(d) = t.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return invalid("train.ema_decay", format!("must be in [0, 1), got {d}"));
            }
        }
        if t.freeze_backbone_epochs >= t.epochs && t.freeze_backbone_epochs > 0 {
            return invalid(
                "train.freeze_backbone_epochs",
                format!(
                    "{} frozen epochs leave none of the {} epochs to fine-tune the backbone",
                    t.freeze_backbone_epochs, t.epochs
                ),
            );
        }
        if let Some(m) = t.max_repeat {
            if !(m >= 1.0 && m.is_finite()) {
                return invalid(
                "train.max_repeat",
                format!("must be at least 1 (an epoch draws as many images as the split has), got {m}"),
            );
            }
        }
        if t.pos_weight && t.class_balanced {
            return invalid(
            "train.pos_weight",
            "pos_weight and class_balanced both correct the label imbalance (one by weighting positives in the loss, the other by drawing rare images more often): together they correct it twice. Use one of them".into(),
        );
        }
        if let Some(c) = t.grad_clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return invalid("train.grad_clip_norm", format!("must be positive, got {c}"));
            }
        }
        Ok(())
    }
}

impl AugmentConfig {
    /// The working size, and every stage list: deterministic outside training, ending at
    /// 3 × `resolution` × `resolution`.
    pub fn check(&self, resolution: u32) -> Result<(), Invalid> {
        let a = self;
        if a.working_size < 32 {
            return invalid(
                "augment.working_size",
                format!("must be at least 32, got {}", a.working_size),
            );
        }
        let want = (3, resolution, resolution);
        let tta_names: Vec<String> = (0..a.tta.len()).map(|i| format!("tta[{i}]")).collect();
        let mut lists: Vec<(&str, &Vec<augment::Stage>)> =
            vec![("train", &a.train), ("eval", &a.eval)];
        lists.extend(tta_names.iter().map(String::as_str).zip(&a.tta));
        for (name, stages) in lists {
            if name != "train" {
                if let Some(i) = stages.iter().position(augment::Stage::is_random) {
                    return invalid(
                    &format!("augment.{name}[{i}]"),
                    format!(
                        "`{}` is random: evaluation and TTA pipelines must be deterministic so that a score can be reproduced (use resize/center_crop, or fixed flips in TTA)",
                        stages[i].name()
                    ),
                );
                }
            }
            match augment::output_shape(stages, a.working_size) {
            Err((i, m)) => return invalid(&format!("augment.{name}[{i}]"), m),
            Ok(shape) if shape != want => {
                return invalid(
                    &format!("augment.{name}"),
                    format!(
                        "the stages end with {}x{}x{} (channels x height x width) but the model takes 3x{}x{} (train.resolution); end with a crop/resize to the resolution and to_rgb",
                        shape.0, shape.1, shape.2, resolution, resolution
                    ),
                )
            }
            Ok(_) => {}
        }
        }
        Ok(())
    }
}

impl RuntimeConfig {
    /// A device that parses; at least one data worker.
    pub fn check(&self) -> Result<(), Invalid> {
        parse_device(&self.device).map_err(|m| ("runtime.device".to_string(), m))?;
        if self.data_workers == 0 {
            return invalid("runtime.data_workers", "must be at least 1".into());
        }
        Ok(())
    }
}
