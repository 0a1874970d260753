//! Where a run report's numbers come from: the run's facts (data, protocol, weights,
//! training, the manifest it was trained on) and the warnings a reader must see first.

use crate::config::PipelineConfig;
use crate::data::manifest_dir::ManifestInfo;
use crate::eval::scoring::Evaluation;
use crate::labels::Split;
use crate::run::{Checkpoint, EpochRow, EvalKey, RunDir, RunInfo};

/// The `evaluate --run` flags that write `key`'s files.
pub(super) fn eval_flags(key: &EvalKey) -> String {
    let mut f = format!(" --split {}", key.split);
    if key.checkpoint != Checkpoint::Best {
        f += &format!(" --checkpoint {}", key.checkpoint.as_str());
    }
    if key.tta {
        f += " --tta";
    }
    f
}

pub(super) fn run_facts(
    run: &RunDir,
    cfg: &PipelineConfig,
    info: &RunInfo,
    manifest: &ManifestInfo,
    history: &[EpochRow],
    key: &EvalKey,
    ev: &Evaluation,
) -> Vec<(String, String)> {
    let r = cfg.train.resolution;
    let mut facts = vec![
        ("run".to_string(), run.root().display().to_string()),
        (
            "model".into(),
            format!(
                "{} ({} parameters, {} multiply-adds per image at {r}x{r})",
                info.arch,
                info.params,
                info.madds
                    .map(|m| format!("{:.1}M", m as f64 / 1e6))
                    .unwrap_or("n/a".into()),
            ),
        ),
        (
            "weights".into(),
            match (&info.weights.path, &info.weights.sha256) {
                (Some(p), Some(h)) => format!("{p} (sha256 {h})"),
                _ => "none: trained from scratch".into(),
            },
        ),
        (
            "data".into(),
            format!(
                "the run's own splits ({}), copied from {} (manifest.json sha256 {}); protocol {}, seed {}",
                run.splits_dir().display(),
                info.manifest_dir,
                info.manifest_sha256,
                manifest.protocol,
                manifest.seed
            ),
        ),
    ];
    facts.push(("dataset".into(), manifest.data_credit()));
    for (k, v) in &manifest.sources {
        facts.push((
            format!("source: {k}"),
            format!("{} (sha256 {})", v.path, v.sha256),
        ));
    }
    let total_s: f64 = history.iter().map(|r| r.epoch_time_s).sum();
    facts.push((
        "training".into(),
        format!(
            "{} epochs, {:.0} s, seed {}, device {}",
            history.len(),
            total_s,
            cfg.train.seed,
            info.device
        ),
    ));
    facts.push((
        "evaluated".into(),
        format!(
            "{}, {} images from {} patients",
            key.describe(),
            ev.n_images,
            ev.n_patients
        ),
    ));
    facts
}

/// The images `prepare` could not read, by name, when a run left any out.
pub(super) fn skipped_warning(skipped: &[crate::run::SkippedImage]) -> Option<String> {
    (!skipped.is_empty()).then(|| {
        format!(
            "{} image(s) of the manifest could not be read by `prepare` (skip_bad_images) and are left out of this run's splits: {}.",
            skipped.len(),
            skipped
                .iter()
                .map(|s| format!("{} ({} split: {})", s.image_id, s.split, s.error))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

pub(super) fn run_warnings(
    cfg: &PipelineConfig,
    manifest: &ManifestInfo,
    key: &EvalKey,
    notice: Option<&str>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if manifest.synthetic {
        warnings.push("synthetic data (made by `muxmed synth`): these numbers say nothing about real chest X-rays, so no published numbers are shown beside them.".to_string());
    }
    if !manifest.synthetic && !manifest.published_references_apply() {
        warnings.push(format!(
            "not NIH ChestX-Ray14 under the official or random-patient protocol (sources: {}; protocol {}): published ChestX-Ray14 numbers do not apply, so none are shown.",
            manifest.sources.keys().cloned().collect::<Vec<_>>().join(", "),
            manifest.protocol
        ));
    }
    if cfg.train.class_balanced {
        warnings.push(format!(
            "trained with class-balanced sampling ({} weighting{}): rare labels were drawn more often than they occur, so the probabilities are shifted towards them. Read the reliability curves with that in mind; calibration and operating thresholds must come from validation (evaluate chooses thresholds on val).",
            match cfg.train.balance_weighting {
                crate::config::BalanceWeighting::Sqrt => "1/√frequency",
                crate::config::BalanceWeighting::Inverse => "1/frequency",
            },
            cfg.train.max_repeat.map(|m| format!(", at most {m} draws per image per epoch")).unwrap_or_default()
        ));
    }
    if cfg.model.from_scratch {
        warnings.push("trained from scratch, without pretrained weights.".into());
    }
    if let Some(n) = notice {
        warnings.push(n.trim_start_matches("note: ").to_string());
    }
    if manifest.protocol != "official" {
        warnings.push(format!(
            "split protocol {}: not comparable with the official-split references.",
            manifest.protocol
        ));
    } else if key.split != Split::Test {
        warnings.push(format!("evaluated on the {} split, which was used to choose the checkpoint: optimistic, and not comparable with published test numbers.", key.split));
    }
    warnings
}
