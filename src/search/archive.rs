//! [`SearchDir`]: every file of a search directory (`reports/<search>/`), and the typed
//! archive it holds. The archive is rewritten atomically after every evaluated candidate,
//! so an interrupted search loses at most the candidate that was training.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::SearchConfig;
use crate::io::write_atomic;
use crate::model::spec::ArchSpec;

use super::pareto::hypervolume;

pub const ARCHIVE_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SearchDirError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
}

/// `cNNNN`, the name of archive candidate `id` in file names, tables and messages.
pub fn candidate_name(id: usize) -> String {
    format!("c{id:04}")
}

/// What happened to a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateStatus {
    /// Proxy-trained and scored on val.
    Ok,
    /// Over a budget: counted, never trained (constrained domination ranks it by violation).
    Infeasible,
    /// Training failed (non-finite loss, out of memory, invalid shape); `reason` says how.
    Failed,
}

/// One row of the archive: one evaluated candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluated {
    pub id: usize,
    /// 0 = the initial design.
    pub generation: u32,
    pub genome: Vec<usize>,
    /// The block strings, one list per stage (the arch JSON's `arch_def`).
    pub arch_def: Vec<Vec<String>>,
    pub head: i64,
    pub params: u64,
    pub madds: u64,
    pub status: CandidateStatus,
    /// Mean val AUROC after proxy training (status `ok` only).
    pub val_auroc: Option<f64>,
    pub reason: Option<String>,
    /// Relative budget excess (0 = feasible): Σ max(0, value / budget − 1).
    pub violation: f64,
    /// Seed of the candidate's proxy training.
    pub seed: u64,
    pub seconds: f64,
    pub finished_at: String,
}

impl Evaluated {
    /// The phenotype key candidates are deduplicated on (as `Candidate::key`).
    pub fn key(&self) -> String {
        super::space::phenotype_key(&self.arch_def, self.head)
    }

    /// `cNNNN`: how files, tables and messages name the candidate.
    pub fn name(&self) -> String {
        candidate_name(self.id)
    }

    pub fn f1(&self) -> Option<f64> {
        self.val_auroc.map(|a| 1.0 - a)
    }

    /// (1 − val AUROC, parameters, multiply-adds) of a scored candidate.
    pub fn objectives(&self) -> Option<[f64; 3]> {
        Some([self.f1()?, self.params as f64, self.madds as f64])
    }
}

/// Fixed normalisation bounds: objective / bound, so the hypervolume against (1, 1, 1) is
/// comparable across generations and resumptions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// 1 − AUROC of a random ranker.
    pub f1: f64,
    pub params: f64,
    pub madds: f64,
}

/// One generation's end: the surviving population and the archive's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    pub generation: u32,
    /// Archive ids of the μ survivors.
    pub population: Vec<usize>,
    /// Candidates in the archive at this point.
    pub evaluated: usize,
    /// Normalised hypervolume of the scored, feasible candidates so far.
    pub hypervolume: f64,
    pub front_size: usize,
    /// Kendall's τ of the accuracy surrogate (cross-validated on the archive) when it chose
    /// this generation's candidates.
    #[serde(default)]
    pub surrogate_tau: Option<f64>,
    /// Whether the surrogate chose them (it does only when τ > 0; otherwise plain NSGA-II).
    #[serde(default)]
    pub surrogate_used: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchStatus {
    Running,
    Interrupted,
    Finished,
}

/// `archive.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Archive {
    pub format: u32,
    pub pipeline: String,
    /// The `search:` section the archive was made with (proxy settings and seed included).
    pub config: SearchConfig,
    /// The resolution parameters and multiply-adds are counted at.
    pub count_resolution: u32,
    pub labels: Vec<String>,
    pub bounds: Bounds,
    pub status: SearchStatus,
    pub candidates: Vec<Evaluated>,
    pub generations: Vec<Generation>,
}

/// `what` is a finite number in `range`, or an error naming it.
fn in_range(what: &str, v: f64, range: std::ops::RangeInclusive<f64>) -> Result<(), String> {
    if v.is_finite() && range.contains(&v) {
        return Ok(());
    }
    Err(format!(
        "{what} = {v} is outside [{}, {}]",
        range.start(),
        range.end()
    ))
}

impl Archive {
    /// The ranges types cannot say: AUROCs in [0, 1], finite non-negative violations,
    /// seconds and hypervolumes, positive bounds, a score for every `ok` candidate. A
    /// hand-edited value outside them would be ranked and plotted as if it were measured.
    pub fn check(&self) -> Result<(), String> {
        let b = &self.bounds;
        for (what, v) in [
            ("bounds.f1", b.f1),
            ("bounds.params", b.params),
            ("bounds.madds", b.madds),
        ] {
            in_range(what, v, f64::MIN_POSITIVE..=f64::MAX)?;
        }
        for c in &self.candidates {
            let name = c.name();
            if let Some(a) = c.val_auroc {
                in_range(&format!("candidate {name}: val_auroc"), a, 0.0..=1.0)?;
            }
            if c.status == CandidateStatus::Ok && c.val_auroc.is_none() {
                return Err(format!("candidate {name}: status ok without a val_auroc"));
            }
            in_range(
                &format!("candidate {name}: violation"),
                c.violation,
                0.0..=f64::MAX,
            )?;
            in_range(
                &format!("candidate {name}: seconds"),
                c.seconds,
                0.0..=f64::MAX,
            )?;
        }
        for g in &self.generations {
            let what = format!("generation {}: hypervolume", g.generation);
            in_range(&what, g.hypervolume, 0.0..=1.0)?;
            if let Some(t) = g.surrogate_tau {
                in_range(
                    &format!("generation {}: surrogate_tau", g.generation),
                    t,
                    -1.0..=1.0,
                )?;
            }
        }
        Ok(())
    }

    /// A finished search whose every candidate broke the budget has no front: an error that
    /// gives the smallest candidate's counts against the budget, so the budget or the space
    /// can be changed.
    pub fn require_feasible(&self) -> Result<(), String> {
        if self.candidates.iter().any(|c| c.violation == 0.0) {
            return Ok(());
        }
        let Some(small) = self.candidates.iter().min_by_key(|c| (c.madds, c.params)) else {
            return Err("the search evaluated no candidate".into());
        };
        let budget = |v: Option<u64>| v.map_or("none".to_string(), |b| b.to_string());
        Err(format!(
            "no candidate meets the budget: the smallest, {}, has {} parameters (search.max_params: {}) and {} multiply-adds (search.max_madds: {}) at {} pixels; raise the budget or narrow search.space",
            small.name(),
            small.params,
            budget(self.config.max_params),
            small.madds,
            budget(self.config.max_madds),
            self.count_resolution
        ))
    }

    /// Normalised objectives of the scored, feasible candidates, with their indices.
    pub fn normalised(&self) -> (Vec<usize>, Vec<Vec<f64>>) {
        let b = self.bounds;
        self.candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.status == CandidateStatus::Ok && c.violation == 0.0)
            .filter_map(|(i, c)| {
                let o = c.objectives()?;
                Some((i, vec![o[0] / b.f1, o[1] / b.params, o[2] / b.madds]))
            })
            .unzip()
    }

    /// Hypervolume of the scored, feasible candidates against (1, 1, 1) in normalised units.
    pub fn hypervolume(&self) -> f64 {
        hypervolume(&self.normalised().1, &[1.0, 1.0, 1.0])
    }

    /// One line: candidates by status, front size, hypervolume, and the surrogate's τ.
    pub fn summary(&self) -> String {
        let n = |st: CandidateStatus| self.candidates.iter().filter(|c| c.status == st).count();
        let taus = self.surrogate_taus();
        format!(
            "{} candidates ({} scored, {} over budget, {} failed); front {} architectures; hypervolume {:.4}{}",
            self.candidates.len(),
            n(CandidateStatus::Ok),
            n(CandidateStatus::Infeasible),
            n(CandidateStatus::Failed),
            self.front().len(),
            self.hypervolume(),
            if taus.is_empty() {
                String::new()
            } else {
                format!(
                    "; surrogate Kendall τ per generation (cross-validated on the archive): {}",
                    taus.join(", ")
                )
            }
        )
    }

    /// The surrogate's Kendall τ of every generation it chose candidates for, as text.
    pub fn surrogate_taus(&self) -> Vec<String> {
        self.generations
            .iter()
            .filter_map(|g| {
                let used = if g.surrogate_used { "" } else { " (not used)" };
                Some(format!("{:.2}{used}", g.surrogate_tau?))
            })
            .collect()
    }

    /// Indices of the non-dominated scored, feasible candidates.
    pub fn front(&self) -> Vec<usize> {
        let (idx, pts) = self.normalised();
        let ranks = super::pareto::non_dominated_ranks(&pts, None);
        idx.into_iter()
            .zip(ranks)
            .filter(|(_, r)| *r == 0)
            .map(|(i, _)| i)
            .collect()
    }
}

/// A search directory and its file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchDir {
    root: PathBuf,
}

pub const FRONT_CHART: &str = "front";
pub const HYPERVOLUME_CHART: &str = "hypervolume";

impl SearchDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SearchDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn archive(&self) -> PathBuf {
        self.root.join("archive.json")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("search.jsonl")
    }
    pub fn arch_file(&self, id: usize) -> PathBuf {
        self.root
            .join("archs")
            .join(format!("{}.json", candidate_name(id)))
    }
    pub fn front_table(&self) -> PathBuf {
        self.root.join("front.md")
    }
    pub fn front_csv(&self) -> PathBuf {
        self.root.join("front.csv")
    }
    pub fn selected_dir(&self) -> PathBuf {
        self.root.join("selected")
    }
    pub fn selected_arch(&self, id: usize) -> PathBuf {
        self.selected_dir()
            .join(format!("{}.json", candidate_name(id)))
    }

    /// The search directory of a folder or of the archive file inside it.
    pub fn of(path: &Path) -> Self {
        if path.is_file() {
            SearchDir::new(path.parent().map(Path::to_path_buf).unwrap_or_default())
        } else {
            SearchDir::new(path)
        }
    }

    pub fn exists(&self) -> bool {
        self.archive().is_file()
    }

    fn io<'a>(&self, path: &'a Path) -> impl FnOnce(std::io::Error) -> SearchDirError + 'a {
        move |source| SearchDirError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn read_archive(&self) -> Result<Archive, SearchDirError> {
        read_archive(&self.archive())
    }

    pub fn write_archive(&self, a: &Archive) -> Result<(), SearchDirError> {
        let p = self.archive();
        write_json(&p, a).map_err(self.io(&p))
    }

    /// A candidate's architecture as an arch JSON `muxmed train` accepts unchanged.
    pub fn write_arch(&self, path: &Path, spec: &ArchSpec) -> Result<(), SearchDirError> {
        write_json(path, spec).map_err(self.io(path))
    }

    /// Appends one JSON line to the search log.
    pub fn log_line(&self, value: &impl Serialize) -> Result<(), SearchDirError> {
        use std::io::Write;
        let p = self.log();
        let line = serde_json::to_string(value).map_err(|e| SearchDirError::Format {
            path: p.clone(),
            message: e.to_string(),
        })?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(self.io(&p))
    }
}

/// Reads an archive file (for `search front --archive` the path may be anywhere).
pub fn read_archive(path: &Path) -> Result<Archive, SearchDirError> {
    let text = std::fs::read_to_string(path).map_err(|source| SearchDirError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let a: Archive = serde_json::from_str(&text).map_err(|e| SearchDirError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    a.check().map_err(|message| SearchDirError::Format {
        path: path.to_path_buf(),
        message,
    })?;
    if a.format != ARCHIVE_FORMAT {
        return Err(SearchDirError::Format {
            path: path.to_path_buf(),
            message: format!(
                "archive format {} (this muxmed reads {ARCHIVE_FORMAT})",
                a.format
            ),
        });
    }
    Ok(a)
}

fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(path, format!("{text}\n").as_bytes())
}
