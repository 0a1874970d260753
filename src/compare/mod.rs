//! `muxmed compare`: two or more models scored on the same images, side by side: AUROC with
//! patient-bootstrap intervals, paired ΔAUROC intervals, the patient-clustered (or DeLong's) test with Holm's
//! adjustment, parameters, multiply-adds and measured inference cost, with figures,
//! `compare.md`, a self-contained `compare.html` and `compare.json`.

#[cfg(feature = "torch")]
pub mod cost;
pub mod document;
pub mod figures;
pub mod inputs;
pub mod stats;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::config::Arch;
use crate::labels::Split;
use crate::run::RunDir;
use inputs::{align, Scored, Source};
use stats::{Comparison, StatsOptions};

/// The files `compare` writes into its output folder.
pub const JSON_FILE: &str = "compare.json";
pub const MD_FILE: &str = "compare.md";
pub const HTML_FILE: &str = "compare.html";

/// What to compare and how.
#[derive(Debug, Clone)]
pub struct CompareJob {
    pub sources: Vec<Source>,
    /// One name per source; default: the run folder's name or the CSV's stem.
    pub names: Option<Vec<String>>,
    pub split: Split,
    pub out: PathBuf,
    pub stats: StatsOptions,
    /// Measure inference speed and memory (needs libtorch).
    pub measure_cost: bool,
    /// `--where`: compare on one subgroup's images only (age bands: the first run's
    /// `eval.subgroups.age_bands`, or the defaults for predictions CSVs only).
    pub filter: Option<crate::eval::subgroups::GroupFilter>,
}

/// What the command reports back.
pub struct CompareOutcome {
    pub comparison: Comparison,
    pub html: PathBuf,
    pub warnings: Vec<String>,
}

fn default_name(s: &Source) -> String {
    let p = match s {
        Source::Run { dir, .. } => dir.as_path(),
        Source::Predictions { csv, .. } => csv.as_path(),
        Source::External { run, pipeline, .. } => {
            let r = run.file_name().map(|n| n.to_string_lossy().into_owned());
            return format!(
                "{}@{pipeline}",
                r.unwrap_or_else(|| run.display().to_string())
            );
        }
    };
    p.file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The input names a job uses: `--names`, or the defaults; distinct.
pub fn input_names(job: &CompareJob) -> Result<Vec<String>> {
    let names = match &job.names {
        Some(n) if n.len() != job.sources.len() => bail!(
            "--names gives {} names for {} inputs",
            n.len(),
            job.sources.len()
        ),
        Some(n) => n.clone(),
        None => job.sources.iter().map(default_name).collect(),
    };
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            bail!("two inputs are named `{n}`: give distinct names with --names");
        }
    }
    Ok(names)
}

/// Architecture, resolution, parameters and multiply-adds of an input, where known: a run
/// records them; an external predictions file has them when its architecture is given.
fn model_facts(s: &Source) -> Result<Option<(Arch, i64, u64, u64)>> {
    match s {
        Source::Run { dir, .. } | Source::External { run: dir, .. } => {
            let run = RunDir::open(dir)?;
            let info = run.info()?;
            let res = run.config()?.train.resolution as i64;
            let madds = match info.madds {
                Some(m) => m,
                None => {
                    crate::model::count::count_arch(&info.arch, info.labels.len() as i64, res)?
                        .madds
                }
            };
            Ok(Some((info.arch, res, info.params as u64, madds)))
        }
        Source::Predictions {
            arch: Some((arch, res)),
            ..
        } => {
            let c =
                crate::model::count::count_arch(arch, crate::labels::LABELS.len() as i64, *res)?;
            Ok(Some((arch.clone(), *res, c.total_params, c.madds)))
        }
        Source::Predictions { arch: None, .. } => Ok(None),
    }
}

/// Loads every input that has a model (runs, predictions with `--arch`) and measures them
/// together; `None` for the others.
#[cfg(feature = "torch")]
fn measure(sources: &[Source], names: &[String]) -> Result<Vec<Option<stats::Cost>>> {
    let mut candidates = Vec::new();
    let mut slot = Vec::new();
    for (s, name) in sources.iter().zip(names) {
        let c = match s {
            Source::Run { dir, key } | Source::External { run: dir, key, .. } => Some(
                cost::Candidate::checkpoint(&RunDir::open(dir)?.checkpoint(key.checkpoint)),
            ),
            Source::Predictions {
                arch: Some((arch, res)),
                ..
            } => Some(cost::Candidate::arch(
                arch,
                crate::labels::LABELS.len() as i64,
                *res,
            )),
            Source::Predictions { arch: None, .. } => None,
        };
        slot.push(match c {
            Some(c) => {
                candidates.push(c.with_context(|| format!("loading `{name}` to measure it"))?);
                Some(candidates.len() - 1)
            }
            None => None,
        });
    }
    let costs = cost::measure_all(&candidates);
    Ok(slot
        .into_iter()
        .map(|i| i.map(|i| costs[i].clone()))
        .collect())
}

#[cfg(not(feature = "torch"))]
fn measure(sources: &[Source], _: &[String]) -> Result<Vec<Option<stats::Cost>>> {
    Ok(vec![None; sources.len()])
}

/// The CPU model and thread count the cost figures come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores available")
}

/// Warnings shown at the top of the report: the inputs' own notes, then the comparison's.
fn warnings(c: &Comparison, notes: Vec<String>) -> Vec<String> {
    let mut w = notes;
    if c.inputs.iter().any(|i| i.synthetic) {
        w.push("synthetic data (made by `muxmed synth`): these numbers say nothing about real chest X-rays.".to_string());
    }
    if c.inputs.iter().any(|i| i.protocol.is_none()) {
        w.push("external predictions carry no split protocol: only their image ids were checked against the other inputs.".to_string());
    }
    if !c.dropped_labels.is_empty() {
        w.push(format!(
            "labels not present in every input were left out: {}; the means are over the {} compared labels.",
            c.dropped_labels.join(", "),
            c.labels.len()
        ));
    }
    if c.inputs.iter().any(|i| i.cost.is_none()) && c.machine.is_some() {
        w.push("inputs without a known architecture have no cost figures (give one with --arch NAME=ARCH@RES).".to_string());
    }
    w
}

/// The `eval.subgroups` settings `--where` groups by (its age bands): the first run's among
/// the inputs (a run's own, or the run behind an external evaluation), else the defaults.
fn subgroup_config(sources: &[Source]) -> Result<crate::config::SubgroupConfig> {
    for s in sources {
        let dir = match s {
            Source::Run { dir, .. } => dir,
            Source::External { run, .. } => run,
            Source::Predictions { .. } => continue,
        };
        return Ok(crate::run::RunDir::open(dir)?.config()?.eval.subgroups);
    }
    Ok(crate::config::SubgroupConfig::default())
}

/// Reads, aligns and compares the inputs, measures their cost, and writes the figures,
/// `compare.json`, `compare.md` and `compare.html` into `job.out`.
pub fn run(job: &CompareJob) -> Result<CompareOutcome> {
    if job.out.exists() && !job.out.is_dir() {
        bail!("--out {} is a file, not a folder", job.out.display());
    }
    let names = input_names(job)?;
    let scored = job
        .sources
        .iter()
        .zip(&names)
        .map(|(s, n)| Scored::read(n.clone(), s.clone(), job.split))
        .collect::<Result<Vec<_>, _>>()?;
    let mut notes: Vec<String> = scored.iter().flat_map(|s| s.notes.clone()).collect();
    let mut scored = scored;
    if let Some(f) = &job.filter {
        let all = scored.first().map_or(0, |s| s.image_ids.len());
        let cfg = subgroup_config(&job.sources)?;
        for s in &mut scored {
            s.restrict(f, &cfg)?;
        }
        let kept = scored.first().map_or(0, |s| s.image_ids.len());
        notes.push(format!(
            "restricted to one subgroup, {f}: {kept} of the {all} images; every number below is on that group only."
        ));
    }
    let aligned = align(scored)?;
    let mut c = stats::compare(&aligned, job.stats);
    c.restricted_to = job.filter.as_ref().map(|f| f.to_string());
    for (inp, src) in c.inputs.iter_mut().zip(&job.sources) {
        if let Some((arch, res, params, madds)) = model_facts(src)? {
            inp.arch = Some(arch.short_name());
            inp.resolution = Some(res);
            inp.params = Some(params);
            inp.madds = Some(madds);
        }
    }
    if job.measure_cost && cfg!(feature = "torch") {
        c.machine = Some(format!("{}, {} torch threads", machine(), torch_threads()));
        let costs = measure(&job.sources, &names)?;
        for (inp, cost) in c.inputs.iter_mut().zip(costs) {
            inp.cost = cost;
        }
    }
    c.fill_ratios();
    std::fs::create_dir_all(&job.out).with_context(|| format!("creating {}", job.out.display()))?;
    let json = serde_json::to_string_pretty(&c)? + "\n";
    crate::io::write_atomic(&job.out.join(JSON_FILE), json.as_bytes())
        .with_context(|| format!("writing {}", job.out.join(JSON_FILE).display()))?;
    let warnings = warnings(&c, notes);
    let figs = figures::figures(&job.out, &aligned, &c)?;
    let html = document::write(&job.out, &c, &warnings, &figs)?;
    Ok(CompareOutcome {
        comparison: c,
        html,
        warnings,
    })
}

#[cfg(feature = "torch")]
fn torch_threads() -> i32 {
    tch::get_num_threads()
}

#[cfg(not(feature = "torch"))]
fn torch_threads() -> i32 {
    0
}

/// `NAME=ARCH@RES` (or `NAME=ARCH`, resolution 224): the architecture an external
/// predictions input ran, for its cost figures.
pub fn parse_arch_flag(s: &str) -> Result<(String, Arch, i64), String> {
    let (name, rest) = s.split_once('=').ok_or_else(|| {
        format!("`{s}`: expected NAME=ARCH@RESOLUTION, e.g. zech=densenet121@224")
    })?;
    let (arch, res) = match rest.split_once('@') {
        Some((a, r)) => (
            a,
            r.parse::<i64>()
                .ok()
                .filter(|r| *r >= 32)
                .ok_or_else(|| format!("`{s}`: resolution `{r}` is not a whole number ≥ 32"))?,
        ),
        None => (rest, 224),
    };
    let arch: Arch = arch.parse()?;
    Ok((name.to_string(), arch, res))
}

/// Attaches `--arch NAME=ARCH@RES` flags to the predictions inputs they name.
pub fn attach_archs(
    sources: &mut [Source],
    names: &[String],
    archs: &[(String, Arch, i64)],
) -> Result<()> {
    for (name, arch, res) in archs {
        let i = names.iter().position(|n| n == name).with_context(|| {
            format!(
                "--arch names `{name}`, which is not an input name ({})",
                names.join(", ")
            )
        })?;
        match &mut sources[i] {
            Source::Predictions { arch: a, .. } => *a = Some((arch.clone(), *res)),
            Source::Run { .. } | Source::External { .. } => {
                bail!("--arch `{name}`: a run records its own architecture")
            }
        }
    }
    Ok(())
}
