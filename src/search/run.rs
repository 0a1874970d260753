//! `muxmed search run`: opens (or resumes) a search directory, loads the proxy data once, and
//! drives the [`Engine`] with proxy training, showing progress and writing the outputs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use super::archive::{Archive, CandidateStatus, SearchDir};
use super::engine::{new_archive, End, Engine};
use super::outputs::write_outputs;
use super::proxy::{ProxyData, ProxyTrainer};
use crate::config::LoadedPipeline;
use crate::data::dataset::manifest_labels;
use crate::model::device::pick_device;

pub struct SearchArgs {
    pub pipeline: LoadedPipeline,
    /// The search directory (default `reports/search-<pipeline>`).
    pub dir: PathBuf,
    pub resume: bool,
    pub overwrite: bool,
    pub manifests_dir: PathBuf,
    pub device: Option<String>,
    pub progress: bool,
}

pub struct SearchOutcome {
    pub dir: SearchDir,
    pub archive: Archive,
    pub end: End,
    pub written: Vec<PathBuf>,
    pub seconds: f64,
}

fn open_archive(a: &SearchArgs, dir: &SearchDir, labels: &[String]) -> Result<Archive> {
    let cfg = &a.pipeline.config;
    let count_res = cfg.search.count_resolution.unwrap_or(cfg.train.resolution);
    if dir.exists() && a.resume {
        let archive = dir.read_archive()?;
        if archive.config != cfg.search || archive.pipeline != cfg.name {
            bail!(
                "{} was made with a different pipeline or `search:` section than {} (with the --set options given): resume with the ones it was made with, or start a new search with --name",
                dir.archive().display(),
                a.pipeline.source.display()
            );
        }
        if archive.labels != labels {
            bail!(
                "the manifest's labels changed since {} was made",
                dir.archive().display()
            );
        }
        return Ok(archive);
    }
    if dir.exists() && !a.overwrite {
        bail!(
            "{} already holds a search: --resume continues it, --overwrite starts again, --name picks another folder",
            dir.root().display()
        );
    }
    if a.resume {
        bail!("--resume: there is no search at {}", dir.root().display());
    }
    if dir.root().exists() {
        std::fs::remove_dir_all(dir.root())
            .with_context(|| format!("removing {}", dir.root().display()))?;
    }
    Ok(new_archive(&cfg.name, &cfg.search, labels, count_res)?)
}

pub fn run(a: &SearchArgs, stop: Arc<AtomicBool>) -> Result<SearchOutcome> {
    let started = std::time::Instant::now();
    let cfg = &a.pipeline.config;
    let manifest_dir = crate::data::manifest_dir::ManifestDir::of(&a.manifests_dir, &cfg.name)
        .root()
        .to_path_buf();
    let labels = manifest_labels(&manifest_dir).map_err(|e| {
        anyhow!(
            "{e}\n{}",
            crate::data::manifest_dir::missing_data_message(cfg, &a.pipeline.source, &manifest_dir)
        )
    })?;
    let dir = SearchDir::new(&a.dir);
    let archive = open_archive(a, &dir, &labels)?;
    let device = pick_device(a.device.as_deref().unwrap_or(&cfg.runtime.device))?;
    if cfg.runtime.torch_threads > 0 {
        tch::set_num_threads(cfg.runtime.torch_threads as i32);
    }
    let data = ProxyData::load(cfg, &manifest_dir, cfg.search.seed).map_err(|e| anyhow!(e))?;
    if a.progress {
        eprintln!(
            "proxy data: {} train images ({} patients), {} val images ({} patients) at {}²; test split not read",
            data.train_images(),
            data.train_patients,
            data.val_images(),
            data.val_patients,
            cfg.search.proxy.resolution
        );
    }
    let trainer = ProxyTrainer {
        data,
        stop: stop.clone(),
        device,
    };
    let bar = a
        .progress
        .then(|| crate::progress::Progress::new(0, "search"));
    let mut engine = Engine::new(&dir, archive, trainer);
    let bar_ref = bar.as_ref();
    engine.on_row = Box::new(move |row, planned| {
        if let Some(b) = bar_ref {
            let what = match row.status {
                CandidateStatus::Ok => {
                    format!("val AUROC {:.4}", row.val_auroc.unwrap_or(f64::NAN))
                }
                CandidateStatus::Infeasible => "over budget".into(),
                CandidateStatus::Failed => {
                    format!("failed: {}", row.reason.as_deref().unwrap_or(""))
                }
            };
            b.set(
                row.id as u64 + 1,
                planned as u64,
                &format!(
                    "gen {} {} {what} ({:.0} s)",
                    row.generation,
                    row.name(),
                    row.seconds
                ),
            );
        }
    });
    let end = engine.run()?;
    if let Some(b) = &bar {
        b.finish();
    }
    let archive = engine.archive;
    let written = write_outputs(&dir, &archive)?;
    if end == End::Finished {
        archive.require_feasible().map_err(|m| anyhow!(m))?;
    }
    Ok(SearchOutcome {
        dir: dir.clone(),
        archive,
        end,
        written,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The default search directory of a pipeline.
pub fn default_dir(reports: &Path, pipeline: &str) -> PathBuf {
    reports.join(format!("search-{pipeline}"))
}
