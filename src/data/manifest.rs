//! `muxmed manifest`: one row per image with its labels and split, read by a source (NIH's
//! own files, official split by default, or a generic CSV), cut into splits, counted, and
//! written atomically as `train/val/test.parquet`, `manifest.json` and `summary.csv`.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;

use super::manifest_dir::{ManifestDir, ManifestError, ManifestInfo, SplitCount};
use super::sources::{self, Table};
use crate::config::DataConfig;
use crate::labels::Split;

/// A built manifest, before writing.
pub struct Manifest {
    pub frames: BTreeMap<&'static str, DataFrame>,
    /// What `manifest.json` will hold (the audit included).
    pub info: ManifestInfo,
    pub summary: DataFrame,
}

/// Builds the manifest (does not write it): from NIH's files, or from `data.generic`.
pub fn build(d: &DataConfig, scan_images: bool) -> Result<Manifest, ManifestError> {
    assemble(sources::read(d, scan_images)?, d)
}

/// Splits the full table into train/val/test (a polars mask filter), counts positives per
/// label and split (column sums of each split's frame) and records everything in
/// manifest.json. Eager polars only: the lazy engine would pull polars' async and cloud IO
/// stack (tokio, reqwest, object_store) into the build for two one-line queries.
fn assemble(table: Table, d: &DataConfig) -> Result<Manifest, ManifestError> {
    let Table {
        all,
        labels,
        sources,
        protocol,
        audit,
        synthetic,
        dataset,
    } = table;
    let label_names: Vec<&str> = labels
        .iter()
        .map(String::as_str)
        .chain(["no_finding"])
        .collect();
    let split_col = all.column("split")?.str()?.clone();
    let mut frames = BTreeMap::new();
    let mut splits = BTreeMap::new();
    let mut rows_label = Vec::new();
    let mut rows_split = Vec::new();
    let mut rows_pos = Vec::new();
    let mut rows_neg = Vec::new();
    let mut rows_unc = Vec::new();
    let mut rows_miss = Vec::new();
    let mut rows_n = Vec::new();
    let mut rows_prev = Vec::new();
    for split in Split::ALL {
        let s = split.as_str();
        let df = all.filter(&split_col.equal(s))?;
        let n = df.height() as u64;
        let patients = df.column("patient_id")?.n_unique()? as u64;
        splits.insert(
            split,
            SplitCount {
                images: n,
                patients,
            },
        );
        if n > 0 {
            for l in &label_names {
                let c = count_label(&df, l)?;
                rows_label.push(l.to_string());
                rows_split.push(s.to_string());
                rows_pos.push(c.positives);
                rows_neg.push(c.negatives);
                rows_unc.push(c.uncertain);
                rows_miss.push(c.missing);
                rows_n.push(n);
                let known = c.positives + c.negatives;
                rows_prev.push(if known == 0 {
                    f64::NAN
                } else {
                    c.positives as f64 / known as f64
                });
            }
        }
        frames.insert(s, df);
    }
    let summary = DataFrame::new_infer_height(vec![
        Column::new("label".into(), rows_label),
        Column::new("split".into(), rows_split),
        Column::new("positives".into(), rows_pos),
        Column::new("negatives".into(), rows_neg),
        Column::new("uncertain".into(), rows_unc),
        Column::new("missing".into(), rows_miss),
        Column::new("images".into(), rows_n),
        Column::new("prevalence".into(), rows_prev),
    ])?;

    let info = ManifestInfo {
        tool: "muxmed".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        sources,
        protocol: protocol.to_string(),
        val_fraction: d.val_fraction,
        test_fraction: d.test_fraction,
        seed: d.seed,
        filters: d.filters.clone(),
        labels,
        splits,
        audit,
        synthetic,
        dataset,
        datasets: dataset_counts(&all)?,
    };
    Ok(Manifest {
        frames,
        info,
        summary,
    })
}

/// Images per value of the `dataset` column (empty without one: NIH's own reader).
fn dataset_counts(all: &DataFrame) -> Result<BTreeMap<String, usize>, ManifestError> {
    let mut out = BTreeMap::new();
    if let Ok(c) = all.column("dataset") {
        for v in c.cast(&DataType::String)?.str()?.iter().flatten() {
            *out.entry(v.to_string()).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// One label's counts in one split. `uncertain` counts the images whose files said
/// uncertain, whatever `data.uncertain` made of them (a one, a zero or missing);
/// `missing` counts the other unknown labels (not annotated by the dataset, or blank under
/// `data.blank: missing`). Prevalence is positives over known labels.
struct LabelCount {
    positives: u64,
    negatives: u64,
    uncertain: u64,
    missing: u64,
}

fn count_label(df: &DataFrame, label: &str) -> Result<LabelCount, ManifestError> {
    let col = df.column(label)?.cast(&DataType::Float64)?;
    let values = col.f64()?;
    let (mut positives, mut negatives, mut unknown) = (0u64, 0u64, 0u64);
    for v in values.iter() {
        match v {
            Some(x) if x.is_nan() => unknown += 1,
            Some(x) if x > 0.5 => positives += 1,
            Some(_) => negatives += 1,
            None => unknown += 1,
        }
    }
    let mut uncertain = 0u64;
    let mut uncertain_unknown = 0u64;
    if let Ok(unc) = df.column("uncertain") {
        for (u, v) in unc.str()?.iter().zip(values.iter()) {
            if u.is_some_and(|u| u.split('|').any(|c| c == label)) {
                uncertain += 1;
                if v.is_none_or(f64::is_nan) {
                    uncertain_unknown += 1;
                }
            }
        }
    }
    Ok(LabelCount {
        positives,
        negatives,
        uncertain,
        missing: unknown - uncertain_unknown,
    })
}

/// Times [`build`] (image scan excluded) `runs` times: (rows, median s, min s).
pub fn bench_build(d: &DataConfig, runs: usize) -> Result<(usize, f64, f64), ManifestError> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..runs.max(1) {
        let t = std::time::Instant::now();
        let m = build(d, false)?;
        times.push(t.elapsed().as_secs_f64());
        rows = m.info.audit.images;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((rows, times[times.len() / 2], times[0]))
}

impl Manifest {
    /// What `muxmed manifest` prints: prevalence per split, split sizes, dropped and
    /// flagged images.
    pub fn summary(&self) -> Result<String, ManifestError> {
        let mut out = self.prevalence_table()?;
        out += &self.counts_table()?;
        for (s, df) in Split::ALL
            .iter()
            .filter_map(|s| Some((s, self.frames.get(s.as_str())?)))
        {
            let patients = df.column("patient_id")?.n_unique()?;
            out += &format!("{s:<6} {} images, {patients} patients\n", df.height());
        }
        let a = &self.info.audit;
        for (filter, n) in &a.dropped {
            out += &match filter.as_str() {
                "missing_images" => format!(
                    "dropped {n} images missing on disk (first: {})\n",
                    a.missing_examples.join(", ")
                ),
                "one_per_patient" => format!(
                    "one_per_patient dropped {n} later images of patients (each keeps its first image present)\n"
                ),
                f => format!("filters.{f} dropped {n} images\n"),
            };
        }
        if a.list_names_not_in_metadata > 0 {
            out += &format!(
                "{} names in the split lists are not in the metadata (first: {}); they are ignored\n",
                a.list_names_not_in_metadata,
                a.list_names_not_in_metadata_examples.join(", ")
            );
        }
        if !a.ages_outside_0_120.is_empty() {
            out += &format!(
                "flagged {} ages outside 0..120 (listed in manifest.json)\n",
                a.ages_outside_0_120.len()
            );
        }
        Ok(out)
    }

    /// Positives, negatives, uncertain and missing labels per label, all splits together.
    pub fn counts_table(&self) -> Result<String, ManifestError> {
        let label = self.summary.column("label")?.str()?.clone();
        let cols = ["positives", "negatives", "uncertain", "missing"];
        let mut values = Vec::new();
        for c in cols {
            values.push(self.summary.column(c)?.u64()?.clone());
        }
        let mut rows: Vec<(String, [u64; 4])> = Vec::new();
        for i in 0..self.summary.height() {
            let Some(l) = label.get(i) else { continue };
            let idx = match rows.iter().position(|(name, _)| name == l) {
                Some(k) => k,
                None => {
                    rows.push((l.to_string(), [0; 4]));
                    rows.len() - 1
                }
            };
            for (k, v) in values.iter().enumerate() {
                rows[idx].1[k] += v.get(i).unwrap_or(0);
            }
        }
        let w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(20);
        let mut out = format!(
            "{:<w$} {:>9} {:>9} {:>9} {:>9}\n",
            "labels (all splits)", cols[0], cols[1], cols[2], cols[3]
        );
        for (l, c) in rows {
            out += &format!(
                "{:<w$} {:>9} {:>9} {:>9} {:>9}\n",
                l, c[0], c[1], c[2], c[3]
            );
        }
        Ok(out)
    }

    /// Positives as a percentage of known labels, per label (rows) and split (columns).
    pub fn prevalence_table(&self) -> Result<String, ManifestError> {
        let label = self.summary.column("label")?.str()?.clone();
        let split = self.summary.column("split")?.str()?.clone();
        let prev = self.summary.column("prevalence")?.f64()?.clone();
        let mut rows: Vec<(String, [Option<f64>; 3])> = Vec::new();
        for i in 0..self.summary.height() {
            let (Some(l), Some(s), Some(p)) = (label.get(i), split.get(i), prev.get(i)) else {
                continue;
            };
            let col = Split::parse(s).map_or(0, |k| k as usize);
            match rows.iter_mut().find(|(name, _)| name == l) {
                Some((_, cells)) => cells[col] = Some(p),
                None => {
                    let mut cells = [None; 3];
                    cells[col] = Some(p);
                    rows.push((l.to_string(), cells));
                }
            }
        }
        let w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(20);
        let mut out = format!(
            "{:<w$} {:>8} {:>8} {:>8}\n",
            "prevalence", "train", "val", "test"
        );
        for (l, cells) in rows {
            let c = |v: Option<f64>| {
                v.filter(|p| p.is_finite())
                    .map(|p| format!("{:.2}%", 100.0 * p))
                    .unwrap_or("-".into())
            };
            out += &format!(
                "{:<w$} {:>8} {:>8} {:>8}\n",
                l,
                c(cells[0]),
                c(cells[1]),
                c(cells[2])
            );
        }
        Ok(out)
    }

    /// Writes the five files into a temporary folder beside `out`, then renames it into
    /// place, so a failure never leaves a half-written manifest. Everything else in `out`
    /// (the prepared caches) is kept: a cache whose manifest is unchanged stays usable, and
    /// a stale one is refused by name when opened. A symlinked `out` stays a symlink: the
    /// files are renamed into its target one by one, `manifest.json` last.
    /// The splits without an image.
    pub fn empty_splits(&self) -> Vec<Split> {
        Split::ALL
            .into_iter()
            .filter(|s| self.frames.get(s.as_str()).is_none_or(|f| f.height() == 0))
            .collect()
    }

    pub fn write(&mut self, out: &Path) -> Result<(), ManifestError> {
        let werr = |message: String| ManifestError::Write {
            path: out.to_path_buf(),
            message,
        };
        // A manifest without images (a header-only metadata file, filters that drop
        // everything) is refused before anything is written, so a good manifest is never
        // replaced by it. One empty split is allowed (a test-only set to score a model on)
        // and named by `empty_splits`; `train` refuses an empty train or val split.
        if self.empty_splits().len() == Split::ALL.len() {
            let from: Vec<String> = self
                .info
                .sources
                .values()
                .map(|src| src.path.clone())
                .collect();
            return Err(ManifestError::Audit(format!(
                "every split would be empty (built from {}); nothing was written to {}",
                from.join(", "),
                out.display()
            )));
        }
        let link = std::fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_symlink());
        if out.exists() && !out.is_dir() {
            return Err(werr("is a file, not a folder: give --out a folder".into()));
        }
        let parent = if link {
            out.to_path_buf()
        } else {
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        };
        std::fs::create_dir_all(&parent).map_err(|e| werr(e.to_string()))?;
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| werr(e.to_string()))?;
        if let Err(e) = self.write_files(&tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if link {
            // Into the symlink's target, file by file; manifest.json (what caches and runs
            // check) last.
            let (from, to) = (ManifestDir::new(&tmp), ManifestDir::new(out));
            for (a, b) in from.manifest_files().into_iter().zip(to.manifest_files()) {
                std::fs::rename(a, b).map_err(|e| werr(e.to_string()))?;
            }
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(());
        }
        // Keep what else the folder holds (prepared caches): move it into the new folder.
        if out.is_dir() {
            for e in std::fs::read_dir(out)
                .map_err(|e| werr(e.to_string()))?
                .flatten()
            {
                let n = e.file_name();
                if !tmp.join(&n).exists() {
                    std::fs::rename(e.path(), tmp.join(&n)).map_err(|e| werr(e.to_string()))?;
                }
            }
        }
        // Swap in: old folder aside, new one in, old one removed.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        if out.exists() {
            std::fs::rename(out, &old).map_err(|e| werr(e.to_string()))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| werr(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    fn write_files(&mut self, dir: &Path) -> Result<(), ManifestError> {
        let werr = |message: String| ManifestError::Write {
            path: dir.to_path_buf(),
            message,
        };
        let files = ManifestDir::new(dir);
        for (s, df) in self.frames.iter_mut() {
            let split = Split::parse(s).ok_or_else(|| werr(format!("no split `{s}`")))?;
            let f = std::fs::File::create(files.split(split)).map_err(|e| werr(e.to_string()))?;
            ParquetWriter::new(f).finish(df)?;
        }
        let f = std::fs::File::create(files.summary_csv()).map_err(|e| werr(e.to_string()))?;
        CsvWriter::new(f).finish(&mut self.summary)?;
        let text = serde_json::to_string_pretty(&self.info).map_err(|e| werr(e.to_string()))?;
        std::fs::write(files.manifest_json(), text + "\n").map_err(|e| werr(e.to_string()))
    }
}
