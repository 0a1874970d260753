//! The numbers of a comparison and `compare.json`'s shape: per-input AUROC with patient
//! bootstrap intervals, and for every pair the paired ΔAUROC interval, the paired test's z and p (clustered by patient by default), and
//! Holm-adjusted p across labels. `delta` is always auroc_a − auroc_b.

use serde::{Deserialize, Serialize};

use super::inputs::{Aligned, Source};
use crate::eval::scoring::BootstrapSettings;
use crate::metrics::paired::{holm, paired_bootstrap, AucTest};
use crate::metrics::{auroc, bootstrap_auroc, known_column, mean_defined};
use crate::plot::human;

/// `compare.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub split: String,
    pub n_images: usize,
    pub n_patients: usize,
    /// Labels compared (every input has them), in the first input's order.
    pub labels: Vec<String>,
    /// Labels some input lacks, left out.
    pub dropped_labels: Vec<String>,
    pub bootstrap: BootstrapSettings,
    /// The paired test behind every pair's z and p.
    pub test: AucTest,
    pub inputs: Vec<InputSummary>,
    pub pairs: Vec<Pair>,
    /// Where the cost figures were measured (CPU, threads); None without cost.
    pub machine: Option<String>,
    /// `--where`: the one subgroup compared on ("sex F").
    #[serde(default)]
    pub restricted_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    Run,
    Predictions,
    /// A run's external evaluation (`RUN/external/<pipeline>`).
    External,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSummary {
    pub name: String,
    /// The run directory or the predictions CSV.
    pub source: String,
    pub kind: InputKind,
    pub split: String,
    /// The run's split protocol; None for external predictions.
    pub protocol: Option<String>,
    pub synthetic: bool,
    pub n_images: usize,
    pub arch: Option<String>,
    /// Input side the cost figures are for.
    pub resolution: Option<i64>,
    pub params: Option<u64>,
    /// Conv + linear multiply-adds per image at `resolution`.
    pub madds: Option<u64>,
    pub mean_auroc: Option<f64>,
    pub mean_auroc_ci: Option<[f64; 2]>,
    pub per_label: Vec<InputLabel>,
    /// Measured inference speed and memory; None when not measured.
    pub cost: Option<Cost>,
    /// Against the first input; None for the first itself.
    pub vs_first: Option<Ratios>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputLabel {
    pub label: String,
    pub positives: usize,
    pub auroc: Option<f64>,
    pub auroc_ci: Option<[f64; 2]>,
}

/// Inference cost measured in one process: models warmed up, then timed in turns (see
/// `compare::cost`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub batch_1: Speed,
    pub batch_32: Speed,
    /// Growth of the process's resident memory during batch-32 inference, over what it was
    /// with the model loaded (activations and workspace); None where the kernel's peak mark
    /// could not be reset.
    pub inference_memory_mb: Option<f64>,
    /// The process's peak resident memory during batch-32 inference.
    pub peak_rss_mb: Option<f64>,
    pub threads: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speed {
    pub batch: i64,
    pub images_per_s: f64,
    pub ms_per_image: f64,
    /// Timed iterations (the median is reported).
    pub iterations: usize,
}

/// `fewer` ratios are first / this (3.3 means 3.3× fewer than the first); `faster` ratios are
/// this / first images per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    pub params_fewer: Option<f64>,
    pub madds_fewer: Option<f64>,
    pub faster_batch_1: Option<f64>,
    pub faster_batch_32: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub mean: MeanDelta,
    pub per_label: Vec<PairLabel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanDelta {
    pub auroc_a: Option<f64>,
    pub auroc_b: Option<f64>,
    pub delta: Option<f64>,
    pub delta_ci: Option<[f64; 2]>,
}

/// One label of a pair; every number is null for a label with one class on these images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairLabel {
    pub label: String,
    pub auroc_a: Option<f64>,
    pub auroc_b: Option<f64>,
    pub delta: Option<f64>,
    pub delta_ci: Option<[f64; 2]>,
    /// The paired test's statistic and two-sided p (`Comparison::test` says which test).
    pub z: Option<f64>,
    pub p: Option<f64>,
    /// That p adjusted with Holm's method across this pair's labels.
    pub p_holm: Option<f64>,
}

/// Bootstrap settings of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct StatsOptions {
    pub resamples: usize,
    pub seed: u64,
    pub test: AucTest,
}

fn input_summary(al: &Aligned, m: usize, opt: StatsOptions) -> InputSummary {
    let inp = &al.inputs[m];
    let s = &al.scores[m];
    let ci = bootstrap_auroc(&al.y, s, &al.groups, opt.resamples, opt.seed, 0.95);
    let per_label: Vec<InputLabel> = al
        .labels
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let (y, sk, _) = known_column(&al.y, s, k);
            InputLabel {
                label: l.clone(),
                positives: y.iter().filter(|v| **v).count(),
                auroc: auroc(&y, &sk),
                auroc_ci: ci.per_label[k],
            }
        })
        .collect();
    let aurocs: Vec<Option<f64>> = per_label.iter().map(|l| l.auroc).collect();
    let (source, kind) = match &inp.source {
        Source::Run { dir, .. } => (dir.display().to_string(), InputKind::Run),
        Source::Predictions { csv, .. } => (csv.display().to_string(), InputKind::Predictions),
        Source::External { run, pipeline, .. } => (
            run.join("external").join(pipeline).display().to_string(),
            InputKind::External,
        ),
    };
    InputSummary {
        name: inp.name.clone(),
        source,
        kind,
        split: inp.split.to_string(),
        protocol: inp.protocol.clone(),
        synthetic: inp.synthetic,
        n_images: al.image_ids.len(),
        arch: None,
        resolution: None,
        params: None,
        madds: None,
        mean_auroc: mean_defined(&aurocs),
        mean_auroc_ci: ci.mean,
        per_label,
        cost: None,
        vs_first: None,
    }
}

fn pair(al: &Aligned, a: usize, b: usize, opt: StatsOptions) -> Pair {
    let (sa, sb) = (&al.scores[a], &al.scores[b]);
    let pb = paired_bootstrap(&al.y, sa, sb, &al.groups, opt.resamples, opt.seed, 0.95);
    let mut per_label: Vec<PairLabel> = al
        .labels
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let (y, a, rows) = known_column(&al.y, sa, k);
            let b: Vec<f64> = rows.iter().map(|&i| sb[i][k]).collect();
            let groups: Vec<usize> = rows.iter().map(|&i| al.groups[i]).collect();
            let d = opt.test.run(&y, &a, &b, &groups);
            PairLabel {
                label: l.clone(),
                auroc_a: d.map(|d| d.auc_a),
                auroc_b: d.map(|d| d.auc_b),
                delta: d.map(|d| d.auc_a - d.auc_b),
                delta_ci: pb.per_label[k],
                z: d.and_then(|d| d.z),
                p: d.and_then(|d| d.p),
                p_holm: None,
            }
        })
        .collect();
    let adjusted = holm(&per_label.iter().map(|l| l.p).collect::<Vec<_>>());
    for (l, p) in per_label.iter_mut().zip(adjusted) {
        l.p_holm = p;
    }
    let mean_a = mean_defined(&per_label.iter().map(|l| l.auroc_a).collect::<Vec<_>>());
    let mean_b = mean_defined(&per_label.iter().map(|l| l.auroc_b).collect::<Vec<_>>());
    Pair {
        a: al.inputs[a].name.clone(),
        b: al.inputs[b].name.clone(),
        mean: MeanDelta {
            auroc_a: mean_a,
            auroc_b: mean_b,
            delta: mean_a.zip(mean_b).map(|(a, b)| a - b),
            delta_ci: pb.mean,
        },
        per_label,
    }
}

/// Every accuracy number of a comparison (cost fields are left empty for the caller).
pub fn compare(al: &Aligned, opt: StatsOptions) -> Comparison {
    let n = al.inputs.len();
    let inputs = (0..n).map(|m| input_summary(al, m, opt)).collect();
    let pairs = (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .map(|(a, b)| pair(al, a, b, opt))
        .collect();
    Comparison {
        split: al.inputs[0].split.to_string(),
        n_images: al.image_ids.len(),
        n_patients: al.n_patients,
        labels: al.labels.clone(),
        dropped_labels: al.dropped_labels.clone(),
        bootstrap: BootstrapSettings {
            resamples: opt.resamples,
            seed: opt.seed,
            level: 0.95,
            unit: "patient".into(),
        },
        test: opt.test,
        inputs,
        pairs,
        machine: None,
        restricted_to: None,
    }
}

impl Comparison {
    /// Fills `vs_first` from the params, MAdds and measured speeds.
    pub fn fill_ratios(&mut self) {
        let Some(first) = self.inputs.first().cloned() else {
            return;
        };
        let ratio = |num: Option<f64>, den: Option<f64>| match (num, den) {
            (Some(n), Some(d)) if d > 0.0 => Some(n / d),
            _ => None,
        };
        let speed =
            |i: &InputSummary, b: fn(&Cost) -> &Speed| i.cost.as_ref().map(|c| b(c).images_per_s);
        for inp in self.inputs.iter_mut().skip(1) {
            inp.vs_first = Some(Ratios {
                params_fewer: ratio(first.params.map(|v| v as f64), inp.params.map(|v| v as f64)),
                madds_fewer: ratio(first.madds.map(|v| v as f64), inp.madds.map(|v| v as f64)),
                faster_batch_1: ratio(speed(inp, |c| &c.batch_1), speed(&first, |c| &c.batch_1)),
                faster_batch_32: ratio(speed(inp, |c| &c.batch_32), speed(&first, |c| &c.batch_32)),
            });
        }
    }

    /// The pair (a, b) of two inputs by position, with the sign flipped when asked for (b, a).
    pub fn pair_of(&self, a: &str, b: &str) -> Option<(Pair, f64)> {
        self.pairs.iter().find_map(|p| {
            if p.a == a && p.b == b {
                Some((p.clone(), 1.0))
            } else if p.a == b && p.b == a {
                Some((p.clone(), -1.0))
            } else {
                None
            }
        })
    }

    /// One line per input after the first, as the paper words its claim: "2.09M parameters
    /// (3.3× fewer), 0.22G multiply-adds (13× fewer), ΔAUROC −0.004 [−0.011, 0.003]", where
    /// ΔAUROC is this input minus the first.
    pub fn headlines(&self) -> Vec<String> {
        let Some(first) = self.inputs.first() else {
            return vec![];
        };
        self.inputs
            .iter()
            .skip(1)
            .map(|inp| {
                let mut parts = vec![];
                let r = inp.vs_first.as_ref();
                if let Some(p) = inp.params {
                    parts.push(format!(
                        "{} parameters{}",
                        human(p as f64, ""),
                        times(r.and_then(|r| r.params_fewer), "fewer", "more")
                    ));
                }
                if let Some(m) = inp.madds {
                    parts.push(format!(
                        "{} multiply-adds{}",
                        human(m as f64, ""),
                        times(r.and_then(|r| r.madds_fewer), "fewer", "more")
                    ));
                }
                if let Some(c) = &inp.cost {
                    parts.push(format!(
                        "{:.1} img/s at batch 32{}",
                        c.batch_32.images_per_s,
                        times(r.and_then(|r| r.faster_batch_32), "faster", "slower")
                    ));
                }
                if let Some((p, sign)) = self.pair_of(&first.name, &inp.name) {
                    // pair delta is a − b; the headline states this input − the first.
                    let d = p.mean.delta.map(|d| -sign * d);
                    let ci = p
                        .mean
                        .delta_ci
                        .map(|c| if sign > 0.0 { [-c[1], -c[0]] } else { c });
                    parts.push(format!(
                        "ΔAUROC {}{}",
                        signed(d),
                        ci.map(|c| format!(" [{}, {}]", signed(Some(c[0])), signed(Some(c[1]))))
                            .unwrap_or_default()
                    ));
                }
                format!("{} vs {}: {}", inp.name, first.name, parts.join(", "))
            })
            .collect()
    }
}

/// " (3.3× fewer)" for a ratio above 1, " (1.5× more)" below it, " (the same)" within 5%.
fn times(r: Option<f64>, up: &str, down: &str) -> String {
    match r {
        Some(r) if (r - 1.0).abs() < 0.05 => " (about the same)".into(),
        Some(r) if r >= 1.0 => format!(" ({} {up})", ratio_text(r)),
        Some(r) if r > 0.0 => format!(" ({} {down})", ratio_text(1.0 / r)),
        _ => String::new(),
    }
}

fn ratio_text(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.1}×")
    }
}

/// "+0.004", "−0.011" (a real minus sign), "0.000" for exactly zero, "n/a".
pub fn signed(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 0.0 => format!("−{:.3}", -v),
        Some(v) if v > 0.0 => format!("+{v:.3}"),
        Some(_) => "0.000".into(),
        None => "n/a".into(),
    }
}
