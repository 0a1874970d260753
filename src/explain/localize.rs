//! `muxmed localize --run R [--split test]`: the ChestX-ray8 box benchmark. Every image of
//! the split with boxes in the run's box list is explained for each boxed finding; the map
//! in original coordinates is thresholded, its 8-connected components are the detections,
//! and the model's accuracy is set beside a centre prior's and a seeded random map's on the
//! same boxes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::figures::{accuracy_chart, gallery, Case};
use super::{centre_prior, prepare, random_map, Explainer, Prepared};
use crate::data::boxes::{self, BoxFormat, GroundBox};
use crate::data::manifest_dir::ManifestInfo;
use crate::labels::Split;
use crate::metrics::localization::{
    detect, score, Accuracy, BoxOutcome, Detections, Rect, IOBB_THRESHOLDS, IOU_THRESHOLDS,
};
use crate::model::device::pick_device;
use crate::run::{
    Checkpoint, FindingAccuracy, Localization, LocalizationFiles, MapSource, RunDir, SourceAccuracy,
};

pub struct LocalizeArgs<'a> {
    pub run: &'a Path,
    pub split: Split,
    pub checkpoint: Checkpoint,
    /// The box list; default: the one the scored manifest was built from.
    pub boxes: Option<&'a Path>,
    /// Score another pipeline's split instead of the run's own (external localization).
    pub on: Option<OtherPipeline<'a>>,
    /// Maps are thresholded at this value into detections.
    pub threshold: f64,
    pub seed: u64,
    pub device: Option<&'a str>,
}

/// Another pipeline's manifest (`localize --on`): its name and folder.
#[derive(Clone, Copy)]
pub struct OtherPipeline<'a> {
    pub name: &'a str,
    pub manifest_dir: &'a Path,
}

/// What `localize` wrote.
pub struct LocalizeOutcome {
    pub localization: Localization,
    pub json: PathBuf,
    pub csv: PathBuf,
    pub figures: Vec<PathBuf>,
    /// Set when the manifest's box list has changed since the manifest was built.
    pub notice: Option<String>,
}

/// One ground-truth box of an image in the split, with the class it is scored on.
struct Target {
    image: usize,
    class: usize,
    truth: Rect,
    /// The box file's line.
    line: usize,
}

/// Every box's outcome under each map source.
struct Scored {
    target: Target,
    outcomes: [BoxOutcome; 3],
}

/// The boxes on images of the split, and the split rows of those images in split order.
struct Targets {
    /// Split rows of the boxed images; `Target::image` indexes this.
    images: Vec<usize>,
    targets: Vec<Target>,
    /// Boxes on images outside the split.
    outside: usize,
    /// Boxes of findings the model has no class for.
    without_class: usize,
}

fn targets(image_ids: &[String], boxes: &[GroundBox], labels: &[String]) -> Targets {
    let row_of: HashMap<&str, usize> = image_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut t = Targets {
        images: Vec::new(),
        targets: Vec::new(),
        outside: 0,
        without_class: 0,
    };
    let mut slot: HashMap<usize, usize> = HashMap::new();
    for b in boxes {
        let Some(&row) = row_of.get(b.image_id.as_str()) else {
            t.outside += 1;
            continue;
        };
        let Some(class) = labels.iter().position(|l| *l == b.concept) else {
            t.without_class += 1;
            continue;
        };
        let image = *slot.entry(row).or_insert_with(|| {
            t.images.push(row);
            t.images.len() - 1
        });
        t.targets.push(Target {
            image,
            class,
            truth: Rect::from_xywh(b.x, b.y, b.w, b.h),
            line: b.line,
        });
    }
    t
}

/// The box file and its format: `--boxes` (in the format of the manifest's dataset, NIH's
/// box list for a dataset without one), or the one the manifest was built from, with the
/// sha256 recorded then.
fn box_file(
    m: &ManifestInfo,
    manifest: &Path,
    given: Option<&Path>,
) -> Result<(PathBuf, BoxFormat, Option<String>)> {
    if let Some(p) = given {
        let format = m
            .dataset
            .and_then(BoxFormat::of)
            .unwrap_or(BoxFormat::NihBboxList);
        return Ok((p.to_path_buf(), format, None));
    }
    match boxes::of_manifest(m)? {
        Some(b) => Ok((b.path, b.format, Some(b.sha256))),
        None => bail!(
            "the manifest {} was built without a box file (NIH's BBox_List_2017.csv, VinDr-CXR's train.csv or RSNA's stage_2_train_labels.csv); pass --boxes FILE",
            manifest.display()
        ),
    }
}

/// The split scored, the manifest it comes from and where the benchmark goes: the run's
/// own, or another pipeline's (after checking the run was not trained on its label files).
fn scored_split(
    run: &RunDir,
    a: &LocalizeArgs,
) -> Result<(
    crate::data::dataset::SplitData,
    ManifestInfo,
    PathBuf,
    LocalizationFiles,
)> {
    let Some(o) = a.on else {
        return Ok((
            run.split(a.split)?,
            run.manifest()?,
            run.manifest_json(),
            run.localization_files(a.split),
        ));
    };
    let dir = crate::data::manifest_dir::ManifestDir::new(o.manifest_dir);
    if !dir.manifest_json().is_file() {
        bail!(
            "no manifest for pipeline `{}` at {}: run `muxmed manifest --pipeline <its yaml>` first",
            o.name,
            o.manifest_dir.display()
        );
    }
    let m = ManifestInfo::read(o.manifest_dir)?;
    crate::eval::external::not_trained_on(&run.manifest()?, &m, o.name)?;
    let split = crate::data::dataset::load_split_file(
        &crate::data::dataset::split_path(o.manifest_dir, a.split),
        &m.labels,
    )?;
    let files = run.external(o.name).localization_files(a.split);
    Ok((split, m, dir.manifest_json(), files))
}

pub fn localize(a: &LocalizeArgs) -> Result<LocalizeOutcome> {
    if !(0.0..=1.0).contains(&a.threshold) {
        bail!("--threshold must be in [0, 1], got {}", a.threshold);
    }
    let run = RunDir::open(a.run)?;
    let (split, manifest, manifest_json, files) = scored_split(&run, a)?;
    let (boxes_path, format, recorded_sha) = box_file(&manifest, &manifest_json, a.boxes)?;
    let boxes: Vec<GroundBox> = boxes::read(format, &boxes_path)?;
    let ex = Explainer::load(
        &run.checkpoint(a.checkpoint),
        pick_device(a.device.unwrap_or("auto"))?,
    )?;
    let labels = &ex.meta.labels;

    let Targets {
        images,
        targets,
        outside,
        without_class,
    } = targets(&split.image_ids, &boxes, labels);
    if targets.is_empty() {
        bail!(
            "no box of {} is on an image of the {} split ({} boxes on other images, {} of findings the model has no class for)",
            boxes_path.display(),
            a.split,
            outside,
            without_class
        );
    }
    let paths: Vec<PathBuf> = images
        .iter()
        .map(|&r| {
            split.paths[r].clone().with_context(|| {
                format!(
                    "image {} of the {} split has no file (it was missing when the manifest was built)",
                    split.image_ids[r], a.split
                )
            })
        })
        .collect::<Result<_>>()?;

    let scored = score_all(&ex, &paths, targets, a)
        .with_context(|| format!("scoring the boxes of {}", boxes_path.display()))?;
    let localization = summarise(
        a,
        &boxes_path,
        images.len(),
        outside,
        without_class,
        &scored,
        labels,
    )?;
    files.write(&localization)?;
    let dir = files.dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let chart = accuracy_chart(&dir, &localization)?;
    let gallery_png = files.gallery();
    draw_gallery(
        &ex,
        &paths,
        &split.image_ids,
        &images,
        &scored,
        labels,
        &gallery_png,
        a,
    )?;
    let notice = recorded_sha
        .filter(|sha| *sha != localization.boxes_sha256)
        .map(|_| {
            format!(
                "note: {} has changed since the run's manifest was built from it; the file as it is now was used",
                boxes_path.display()
            )
        });
    Ok(LocalizeOutcome {
        notice,
        json: files.json(),
        csv: files.csv(),
        figures: vec![chart.png, chart.svg, gallery_png],
        localization,
    })
}

/// Scores the boxes of one image: each map is made, mapped back and thresholded once, the
/// centre prior once per image and the model's and random maps once per boxed class (an
/// image can hold several boxes of one finding), in [`MapSource::ALL`] order.
fn score_image(
    p: &Prepared,
    image: usize,
    model_maps: &[Vec<f32>],
    grid: (usize, usize),
    targets: Vec<Target>,
    a: &LocalizeArgs,
) -> Result<Vec<Scored>> {
    let (w, h) = p.geometry.original;
    check_inside(&targets, w, h)?;
    let (iw, ih) = p.geometry.input;
    let th = a.threshold as f32;
    let centre = detect(&p.geometry.to_original(&centre_prior(iw, ih)), w, th);
    let mut classes: Vec<usize> = targets.iter().map(|t| t.class).collect();
    classes.sort_unstable();
    classes.dedup();
    let per_class: Vec<[Detections; 2]> = classes
        .par_iter()
        .map(|&k| -> Result<[Detections; 2]> {
            let key = (image as u64) << 8 | k as u64;
            let random = random_map(grid, iw, ih, a.seed, key)?;
            Ok([&model_maps[k], &random].map(|m| detect(&p.geometry.to_original(m), w, th)))
        })
        .collect::<Result<_>>()?;
    Ok(targets
        .into_iter()
        .map(|t| {
            // Every target's class is in `classes`, which is sorted.
            let [model, random] = &per_class[classes.partition_point(|&k| k < t.class)];
            let outcomes = [model, &centre, random].map(|d| score(d, &t.truth));
            Scored {
                target: t,
                outcomes,
            }
        })
        .collect())
}

/// Boxes are in the image file's pixel coordinates: one reaching beyond the image (by more
/// than half a pixel of rounding) is an error naming its line, never a silent miss. NIH's
/// boxes are in the 1024-pixel space of its original files: images stored smaller need
/// boxes scaled to them.
fn check_inside(targets: &[Target], w: usize, h: usize) -> Result<()> {
    let (wf, hf) = (w as f64 + 0.5, h as f64 + 0.5);
    match targets.iter().find(|t| t.truth.x1 > wf || t.truth.y1 > hf) {
        None => Ok(()),
        Some(t) => bail!(
            "line {}: the box ({}, {}) to ({}, {}) reaches beyond its {w}x{h} image (boxes are in the image file's pixels; NIH's are in its 1024-pixel originals)",
            t.line,
            t.truth.x0,
            t.truth.y0,
            t.truth.x1,
            t.truth.y1
        ),
    }
}

/// Runs Grad-CAM over the boxed images in batches and scores every box under each source.
fn score_all(
    ex: &Explainer,
    paths: &[PathBuf],
    targets: Vec<Target>,
    a: &LocalizeArgs,
) -> Result<Vec<Scored>> {
    let mut by_image: Vec<Vec<Target>> = (0..paths.len()).map(|_| Vec::new()).collect();
    for t in targets {
        by_image[t.image].push(t);
    }
    let bar = crate::progress::Progress::new(paths.len() as u64, "localize");
    let mut scored = Vec::new();
    let batch = 8;
    let meta = &ex.meta;
    for (b, chunk) in paths.chunks(batch).enumerate() {
        let prepared: Vec<Prepared> = chunk
            .par_iter()
            .map(|p| prepare(meta, p))
            .collect::<Result<_>>()?;
        let cams = ex.cams(&prepared.iter().map(|p| &p.input).collect::<Vec<_>>())?;
        for (j, p) in prepared.iter().enumerate() {
            let image = b * batch + j;
            let ts = std::mem::take(&mut by_image[image]);
            scored.extend(score_image(p, image, &cams.maps[j], cams.grid, ts, a)?);
        }
        bar.set(
            ((b + 1) * batch).min(paths.len()) as u64,
            paths.len() as u64,
            "",
        );
    }
    bar.finish();
    Ok(scored)
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    a: &LocalizeArgs,
    boxes_path: &Path,
    images: usize,
    outside: usize,
    without_class: usize,
    scored: &[Scored],
    labels: &[String],
) -> Result<Localization> {
    let sources = MapSource::ALL
        .iter()
        .enumerate()
        .map(|(s, &source)| {
            let per_finding = labels
                .iter()
                .enumerate()
                .filter_map(|(k, name)| {
                    let o: Vec<&BoxOutcome> = scored
                        .iter()
                        .filter(|x| x.target.class == k)
                        .map(|x| &x.outcomes[s])
                        .collect();
                    (!o.is_empty()).then(|| FindingAccuracy {
                        finding: name.clone(),
                        accuracy: Accuracy::of(o),
                    })
                })
                .collect();
            SourceAccuracy {
                source,
                overall: Accuracy::of(scored.iter().map(|x| &x.outcomes[s])),
                per_finding,
            }
        })
        .collect();
    Ok(Localization {
        split: a.split,
        on: a.on.map(|o| o.name.to_string()),
        checkpoint: a.checkpoint,
        boxes_file: boxes_path.display().to_string(),
        boxes_sha256: crate::io::sha256_file(boxes_path)
            .with_context(|| format!("reading {}", boxes_path.display()))?,
        map_threshold: a.threshold,
        iobb_thresholds: IOBB_THRESHOLDS.to_vec(),
        iou_thresholds: IOU_THRESHOLDS.to_vec(),
        seed: a.seed,
        images,
        boxes: scored.len(),
        boxes_outside_split: outside,
        boxes_without_class: without_class,
        sources,
    })
}

/// An image id short enough for a gallery caption: a long one (RSNA's and VinDr's hashes)
/// keeps its first 8 and last 6 characters.
fn short_id(id: &str) -> String {
    let c: Vec<char> = id.chars().collect();
    if c.len() <= 24 {
        return id.to_string();
    }
    let head: String = c[..8].iter().collect();
    let tail: String = c[c.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

/// The model's four best and four worst boxes, drawn: ranked by IoU (IoBB rewards any small
/// detection inside a box, so it would call a speck a best case), then pointing, then IoBB.
#[allow(clippy::too_many_arguments)]
fn draw_gallery(
    ex: &Explainer,
    paths: &[PathBuf],
    ids: &[String],
    images: &[usize],
    scored: &[Scored],
    labels: &[String],
    out: &Path,
    a: &LocalizeArgs,
) -> Result<()> {
    let mut order: Vec<usize> = (0..scored.len()).collect();
    let key = |i: usize| {
        let o = &scored[i].outcomes[0];
        (o.iou, o.pointing as u8 as f64, o.iobb)
    };
    order.sort_by(|&x, &y| {
        key(y)
            .partial_cmp(&key(x))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let n = order.len().min(4);
    let best = &order[..n];
    let worst: Vec<usize> = order.iter().rev().take(n).copied().collect();
    let mut rows = Vec::new();
    let mut keep = Vec::new();
    for (name, picks) in [
        ("Best cases (model)", best.to_vec()),
        ("Worst cases (model)", worst),
    ] {
        let mut cases = Vec::new();
        for i in picks {
            let t = &scored[i].target;
            let p = ex.prepare(&paths[t.image])?;
            let cams = ex.cams(&[&p.input])?;
            let map = p.geometry.to_original(&cams.maps[0][t.class]);
            cases.push((i, p, map));
        }
        keep.push((name, cases));
    }
    for (name, cases) in &keep {
        let mut row = Vec::new();
        for (i, p, map) in cases {
            let s = &scored[*i];
            let o = &s.outcomes[0];
            row.push(Case {
                gray: &p.original,
                map,
                truth: s.target.truth,
                detections: &o.detections,
                caption: format!(
                    "{} · {}\nIoBB {:.2} · IoU {:.2} · pointing {}",
                    short_id(&ids[images[s.target.image]]),
                    labels[s.target.class],
                    o.iobb,
                    o.iou,
                    if o.pointing { "hit" } else { "miss" }
                ),
            });
        }
        rows.push((name.to_string(), row));
    }
    gallery(
        out,
        &format!(
            "Grad-CAM on the {} split: truth (green), detections at map ≥ {} (orange)",
            a.split, a.threshold
        ),
        &rows,
    )?;
    Ok(())
}

/// One line: the model's pointing and IoBB > 0.25 accuracies beside the centre prior's
/// (and the random map's).
pub fn headline(l: &Localization) -> String {
    let get = |s: MapSource| {
        l.source(s)
            .map(|a| (a.overall.pointing, a.overall.iobb_025()))
    };
    let f = |v: Option<(f64, f64)>, i: usize| {
        v.map(|p| format!("{:.3}", if i == 0 { p.0 } else { p.1 }))
            .unwrap_or_else(|| "-".into())
    };
    let (m, c, r) = (
        get(MapSource::Model),
        get(MapSource::CentrePrior),
        get(MapSource::Random),
    );
    format!(
        "localization: pointing {} (centre prior {}, random {}); IoBB>0.25 {} (centre prior {}, random {}); {} boxes",
        f(m, 0), f(c, 0), f(r, 0), f(m, 1), f(c, 1), f(r, 1), l.boxes
    )
}

/// The printed summary: one line per source over all boxes, then the headline.
pub fn summary_lines(l: &Localization) -> Vec<String> {
    let mut out = vec![format!(
        "localization on the {} split: {} boxes on {} images ({} boxes on other images ignored)",
        l.split, l.boxes, l.images, l.boxes_outside_split
    )];
    for s in &l.sources {
        out.push(format!(
            "  {:<13} pointing {:.3}   IoBB>0.25 {:.3}   IoU>0.3 {:.3}",
            s.source.as_str(),
            s.overall.pointing,
            s.overall.iobb_025(),
            s.overall.iou[2]
        ));
    }
    out.push(headline(l));
    out
}
