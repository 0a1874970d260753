//! What `muxmed search` writes and prints besides the archive: the front as a table
//! (Markdown and CSV) and figures, `search front`'s ranks/crowding/hypervolume of any archive
//! or points CSV, and `search select`'s chosen architectures with their train commands.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::archive::{candidate_name, Archive, Evaluated, SearchDir};
use super::pareto::{crowding_all, hypervolume, non_dominated_ranks};
use super::select::high_tradeoff;
use crate::io::{csv_records, write_atomic};
use crate::plot::human;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Dir(#[from] super::archive::SearchDirError),
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn write(path: &Path, text: &str) -> Result<(), OutputError> {
    write_atomic(path, text.as_bytes()).map_err(|source| OutputError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// `search front --json`: one entry per point in input order; an infinite crowding
/// distance is `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontStats {
    pub rank: Vec<usize>,
    pub crowding: Vec<Option<f64>>,
    pub hypervolume: f64,
}

pub fn front_stats(points: &[Vec<f64>], reference: &[f64]) -> FrontStats {
    let rank = non_dominated_ranks(points, None);
    let crowding = crowding_all(points, &rank)
        .into_iter()
        .map(|c| c.is_finite().then_some(c))
        .collect();
    FrontStats {
        rank,
        crowding,
        hypervolume: hypervolume(points, reference),
    }
}

/// A points CSV: a header naming the objectives, one numeric column each (all minimised),
/// one row per point.
pub fn read_points_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<f64>>), OutputError> {
    let bad = |message: String| OutputError::Input {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let recs = csv_records(&text).map_err(|(line, m)| bad(format!("line {line}: {m}")))?;
    let (header, rows) = recs.split_first().ok_or_else(|| bad("empty file".into()))?;
    if header
        .fields
        .iter()
        .any(|h| h.trim().parse::<f64>().is_ok())
    {
        return Err(bad(
            "line 1 must be a header naming the objectives, not numbers".into(),
        ));
    }
    let m = header.fields.len();
    let mut points = vec![];
    for r in rows {
        if r.fields.len() != m {
            return Err(bad(format!(
                "line {}: {} fields, the header has {m}",
                r.line,
                r.fields.len()
            )));
        }
        let p = r
            .fields
            .iter()
            .zip(&header.fields)
            .map(|(f, h)| {
                f.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        bad(format!(
                            "line {}: column `{h}`: `{f}` is not a finite number",
                            r.line
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        points.push(p);
    }
    if points.is_empty() {
        return Err(bad("no points below the header".into()));
    }
    Ok((header.fields.clone(), points))
}

/// What `search front` ranks: named points and the reference point.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontInput {
    /// `cNNNN` for an archive's candidates, `row N` for a points CSV's rows.
    pub names: Vec<String>,
    pub points: Vec<Vec<f64>>,
    pub reference: Vec<f64>,
}

/// Reads an archive (reference 1,1,1 in its normalised units unless given) or a points CSV
/// (reference required), and checks the reference has one value per objective.
pub fn front_input(
    archive: Option<&Path>,
    points: Option<&Path>,
    reference: Option<Vec<f64>>,
) -> Result<FrontInput, OutputError> {
    let (names, pts, default_ref) = match (archive, points) {
        (Some(a), _) => {
            let (ids, pts) = archive_points(&super::archive::read_archive(a)?);
            let names = ids.iter().map(|&i| candidate_name(i)).collect();
            (names, pts, Some(vec![1.0; 3]))
        }
        (None, Some(p)) => {
            let (_, pts) = read_points_csv(p)?;
            (
                (1..=pts.len()).map(|i| format!("row {i}")).collect(),
                pts,
                None,
            )
        }
        (None, None) => return Err(OutputError::Usage("give --archive or --points".into())),
    };
    let reference = reference.or(default_ref).ok_or_else(|| {
        OutputError::Usage("--points needs --ref r1,r2[,r3] (one value per objective)".into())
    })?;
    if let Some(v) = reference.iter().find(|v| !v.is_finite()) {
        return Err(OutputError::Usage(format!(
            "--ref {v}: every reference value must be a finite number (the hypervolume is measured up to it)"
        )));
    }
    let dims = pts.first().map_or(reference.len(), Vec::len);
    if reference.len() != dims {
        return Err(OutputError::Usage(format!(
            "--ref has {} values, the points have {dims} objectives",
            reference.len()
        )));
    }
    Ok(FrontInput {
        names,
        points: pts,
        reference,
    })
}

/// `search front`'s table: one line per point, then the hypervolume.
pub fn front_lines(input: &FrontInput, s: &FrontStats) -> Vec<String> {
    let mut out = vec![format!("{:<10} {:>5} {:>10}", "point", "rank", "crowding")];
    for (i, n) in input.names.iter().enumerate() {
        let cd = s.crowding[i].map_or("inf".to_string(), |v| format!("{v:.4}"));
        out.push(format!("{n:<10} {:>5} {cd:>10}", s.rank[i]));
    }
    out.push(format!(
        "hypervolume {} (reference {:?})",
        s.hypervolume, input.reference
    ));
    out
}

/// The archive's scored, feasible candidates as `search front` sees them: their ids and
/// their objectives divided by the archive's bounds (so the default reference is 1, 1, 1).
pub fn archive_points(a: &Archive) -> (Vec<usize>, Vec<Vec<f64>>) {
    let (idx, pts) = a.normalised();
    (idx.iter().map(|&i| a.candidates[i].id).collect(), pts)
}

fn front_rows(a: &Archive) -> Vec<&Evaluated> {
    let mut rows: Vec<&Evaluated> = a.front().into_iter().map(|i| &a.candidates[i]).collect();
    rows.sort_by_key(|c| c.madds);
    rows
}

fn blocks_summary(c: &Evaluated) -> String {
    let depths: Vec<String> = c.arch_def[1..c.arch_def.len() - 1]
        .iter()
        .map(|s| (s.len() - 1).to_string())
        .collect();
    let widths: Vec<String> = c.arch_def[1..c.arch_def.len() - 1]
        .iter()
        .filter_map(|s| {
            s[0].split('_')
                .find(|o| o.starts_with('c'))
                .map(|o| o[1..].to_string())
        })
        .collect();
    format!(
        "sp blocks {}; widths {}; head {}",
        depths.join("-"),
        widths.join("-"),
        c.head
    )
}

/// Writes `front.md`, `front.csv` and the two figures; returns the paths written.
pub fn write_outputs(dir: &SearchDir, a: &Archive) -> Result<Vec<PathBuf>, OutputError> {
    let rows = front_rows(a);
    let taus = a.surrogate_taus();
    let surrogate = if taus.is_empty() {
        String::new()
    } else {
        format!(
            "Accuracy surrogate (RBF), cross-validated Kendall τ per generation: {}.\n",
            taus.join(", ")
        )
    };
    let mut md = format!(
        "# Front of search `{}`\n\n{} candidates evaluated, {} on the front; hypervolume {:.4} (normalised).\n{surrogate}\
         Val mean AUROC after proxy training ({}², {} epochs, {} train images); parameters and multiply-adds at {}².\n\n\
         | id | val AUROC | params | MAdds | architecture | arch file |\n|---|---|---|---|---|---|\n",
        a.pipeline,
        a.candidates.len(),
        rows.len(),
        a.hypervolume(),
        a.config.proxy.resolution,
        a.config.proxy.epochs,
        a.config.proxy.train_images,
        a.count_resolution,
    );
    let mut csv = String::from("id,generation,val_auroc,params,madds,arch_file\n");
    for c in &rows {
        let file = dir.arch_file(c.id);
        let rel = file
            .strip_prefix(dir.root())
            .unwrap_or(&file)
            .display()
            .to_string();
        md += &format!(
            "| {} | {:.4} | {} | {} | {} | `{rel}` |\n",
            c.id,
            c.val_auroc.unwrap_or(f64::NAN),
            human(c.params as f64, ""),
            human(c.madds as f64, ""),
            blocks_summary(c),
        );
        csv += &format!(
            "{},{},{},{},{},{rel}\n",
            c.id,
            c.generation,
            c.val_auroc.map_or(String::new(), |v| format!("{v:.6}")),
            c.params,
            c.madds
        );
    }
    write(&dir.front_table(), &md)?;
    write(&dir.front_csv(), &csv)?;
    let mut out = vec![dir.front_table(), dir.front_csv()];
    if !a.generations.is_empty() {
        for f in [
            super::figures::front_chart(dir, a)?,
            super::figures::hypervolume_chart(dir, a)?,
        ] {
            out.push(f.png);
        }
    }
    Ok(out)
}

/// One architecture `search select` chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub id: usize,
    pub val_auroc: f64,
    pub params: u64,
    pub madds: u64,
    pub why: String,
    pub arch: PathBuf,
    pub command: String,
}

/// The `n` high trade-off points of the front (ε = `eps` in objectives normalised over the
/// front) and the most accurate point, each copied to `selected/` as an arch JSON.
pub fn select(
    dir: &SearchDir,
    a: &Archive,
    n: usize,
    eps: f64,
) -> Result<Vec<Selected>, OutputError> {
    let front = a.front();
    let pts: Vec<Vec<f64>> = front
        .iter()
        .filter_map(|&i| a.candidates[i].objectives().map(|o| o.to_vec()))
        .collect();
    let mu = super::select::tradeoffs(&pts, eps);
    let picks = high_tradeoff(&pts, n, eps);
    let mut out = vec![];
    for (rank, k) in picks.iter().enumerate() {
        let c = &a.candidates[front[*k]];
        let src = dir.arch_file(c.id);
        let dst = dir.selected_arch(c.id);
        let text = std::fs::read_to_string(&src).map_err(|e| OutputError::Input {
            path: src.clone(),
            message: e.to_string(),
        })?;
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|source| OutputError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        write(&dst, &text)?;
        let why = if rank < n.min(pts.len()) {
            format!("high trade-off (μ = {:.3})", mu[*k])
        } else {
            "most accurate".to_string()
        };
        out.push(Selected {
            id: c.id,
            val_auroc: c.val_auroc.unwrap_or(f64::NAN),
            params: c.params,
            madds: c.madds,
            why,
            command: format!(
                "muxmed train --pipeline {} --set model.arch={} --set model.weights=null --set model.from_scratch=true --run-name {}-{}",
                a.pipeline,
                dst.display(),
                a.pipeline,
                c.name()
            ),
            arch: dst,
        });
    }
    Ok(out)
}
