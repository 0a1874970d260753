//! `muxmed explain --checkpoint C IMAGES... [--labels L1,L2 | --top K] --out DIR`: per image
//! and label, the X-ray at its original resolution with the Grad-CAM map over it, and the map
//! itself in original-image coordinates (`.npy`, NaN where the network saw nothing).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::figures::overlay;
use super::Explainer;
use crate::model::device::pick_device;

/// Which labels to explain.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// These labels, by name.
    Labels(Vec<String>),
    /// The K most probable labels of each image.
    Top(usize),
}

pub struct ExplainArgs<'a> {
    pub checkpoint: &'a Path,
    pub images: &'a [PathBuf],
    pub choice: Choice,
    pub out: &'a Path,
    pub device: Option<&'a str>,
}

/// One written explanation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explained {
    pub image: String,
    pub label: String,
    pub probability: f64,
    pub picture: String,
    pub map: String,
}

/// What `explain` did: its explanations and each image that failed, with the reason.
#[derive(Debug)]
pub struct ExplainOutcome {
    pub explained: Vec<Explained>,
    pub failed: Vec<(PathBuf, String)>,
    pub index: PathBuf,
}

/// The label indices to explain for one image's probabilities.
fn chosen(choice: &Choice, labels: &[String], probs: &[f64]) -> Result<Vec<usize>> {
    match choice {
        Choice::Labels(names) => names
            .iter()
            .map(|n| {
                labels.iter().position(|l| l == n).with_context(|| {
                    format!(
                        "--labels: `{n}` is not a label of this checkpoint ({})",
                        labels.join(", ")
                    )
                })
            })
            .collect(),
        Choice::Top(k) => {
            let mut order: Vec<usize> = (0..labels.len()).collect();
            order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
            order.truncate(*k);
            Ok(order)
        }
    }
}

/// A file-name-safe stem for an image path.
fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// The name each image's outputs start with: its stem when no other input shares it, else
/// the stem and extension (`good_png`, `good_jpg`), and when even that is shared (one name
/// in two folders) a number after it. Every input gets a name of its own.
fn output_stems(images: &[PathBuf]) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let mut per_stem: HashMap<String, usize> = HashMap::new();
    for p in images {
        *per_stem.entry(stem(p)).or_default() += 1;
    }
    let mut taken: HashSet<String> = HashSet::new();
    let mut names = Vec::with_capacity(images.len());
    for p in images {
        let base = if per_stem[&stem(p)] == 1 {
            stem(p)
        } else {
            let ext = p.extension().map(|e| e.to_string_lossy().into_owned());
            format!("{}_{}", stem(p), ext.unwrap_or_default())
        };
        let mut name = base.clone();
        let mut k = 2;
        while !taken.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        names.push(name);
    }
    names
}

pub fn explain(a: &ExplainArgs) -> Result<ExplainOutcome> {
    if let Choice::Top(0) = a.choice {
        bail!("--top must be at least 1");
    }
    let ex = Explainer::load(a.checkpoint, pick_device(a.device.unwrap_or("auto"))?)?;
    let labels = ex.meta.labels.clone();
    // Unknown label names stop before any image is read.
    chosen(&a.choice, &labels, &vec![0.0; labels.len()])?;
    std::fs::create_dir_all(a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut explained = Vec::new();
    let mut failed = Vec::new();
    let bar = crate::progress::Progress::new(a.images.len() as u64, "explain");
    let names = output_stems(a.images);
    for (i, (path, name)) in a.images.iter().zip(&names).enumerate() {
        bar.set(i as u64, a.images.len() as u64, &path.display().to_string());
        match explain_one(&ex, path, name, &a.choice, a.out) {
            Ok(mut e) => explained.append(&mut e),
            Err(e) => failed.push((path.clone(), format!("{e:#}"))),
        }
    }
    bar.finish();
    if explained.is_empty() {
        let first = failed
            .first()
            .map(|(p, e)| format!(": {}: {e}", p.display()))
            .unwrap_or_default();
        bail!("no image could be explained{first}");
    }
    let index = a.out.join("explanations.json");
    crate::io::write_atomic(&index, serde_json::to_string_pretty(&explained)?.as_bytes())
        .with_context(|| format!("writing {}", index.display()))?;
    Ok(ExplainOutcome {
        explained,
        failed,
        index,
    })
}

fn explain_one(
    ex: &Explainer,
    path: &Path,
    name: &str,
    choice: &Choice,
    out: &Path,
) -> Result<Vec<Explained>> {
    let p = ex.prepare(path)?;
    let cams = ex.cams(&[&p.input])?;
    let (maps, probs) = (&cams.maps[0], &cams.probs[0]);
    let (w, h) = p.geometry.original;
    let mut done = Vec::new();
    for k in chosen(choice, &ex.meta.labels, probs)? {
        let label = &ex.meta.labels[k];
        let original = p.geometry.to_original(&maps[k]);
        let name = format!("{name}_{label}");
        let picture = out.join(format!("{name}.png"));
        let npy = out.join(format!("{name}_map.npy"));
        let title = format!("{label}: p = {:.3}", probs[k]);
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let subtitle = format!("{file}, {w}x{h}");
        overlay(&picture, &p.original, &original, &title, &subtitle, &[])?;
        crate::io::write_npy_f32(&npy, &[h, w], &original)
            .with_context(|| format!("writing {}", npy.display()))?;
        done.push(Explained {
            image: path.display().to_string(),
            label: label.clone(),
            probability: probs[k],
            picture: picture.display().to_string(),
            map: npy.display().to_string(),
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_sharing_a_stem_get_names_of_their_own() {
        let images: Vec<PathBuf> = [
            "imgs/good.png",
            "imgs/good.jpg",
            "imgs/good.dcm",
            "a/x.png",
            "b/x.png",
            "solo.png",
        ]
        .map(PathBuf::from)
        .to_vec();
        assert_eq!(
            output_stems(&images),
            ["good_png", "good_jpg", "good_dcm", "x_png", "x_png_2", "solo"]
        );
    }

    #[test]
    fn top_k_takes_the_most_probable_and_names_are_checked() {
        let labels: Vec<String> = ["A", "B", "C"].map(String::from).to_vec();
        assert_eq!(
            chosen(&Choice::Top(2), &labels, &[0.1, 0.9, 0.5]).unwrap(),
            [1, 2]
        );
        assert_eq!(
            chosen(
                &Choice::Labels(vec!["C".into(), "A".into()]),
                &labels,
                &[0.0; 3]
            )
            .unwrap(),
            [2, 0]
        );
        let e = chosen(&Choice::Labels(vec!["Nodle".into()]), &labels, &[0.0; 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--labels: `Nodle` is not a label of this checkpoint (A, B, C)"
        );
    }
}
