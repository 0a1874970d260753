//! Image files named on a command line (`predict`, `explain`, `decode`): gathering them from
//! files and folders, and `muxmed decode`, which writes what muxmed sees of each.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::dicom::Voi;
use super::image::{decode_with_origin, is_image_file, Gray, Origin};
use super::nih::{files_under, regular_file, NihError};

/// Inputs that could not be used, with the reason.
pub type Failures = Vec<(PathBuf, String)>;

/// The image files named by `inputs` (folders are scanned for PNG, JPEG and DICOM files),
/// each once; inputs that do not exist, and image names in a folder that are no regular file
/// (a FIFO, a dangling link), are failures, so the other files are still used.
pub fn gather(inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, Failures), NihError> {
    let (mut files, mut failed) = (Vec::new(), Vec::new());
    for p in inputs {
        if p.is_dir() {
            let mut found = Vec::new();
            for e in files_under(p)? {
                let f = e.path();
                if !is_image_file(&f) {
                    continue;
                }
                match regular_file(&f) {
                    Ok(()) => found.push(f),
                    Err(why) => failed.push((f, why)),
                }
            }
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else if std::fs::symlink_metadata(p).is_ok() {
            let why = regular_file(p)
                .err()
                .unwrap_or_else(|| "is not a file".into());
            failed.push((p.clone(), why));
        } else {
            failed.push((p.clone(), "does not exist".to_string()));
        }
    }
    let mut seen = HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    Ok((files, failed))
}

/// One decoded input of `muxmed decode`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub source: PathBuf,
    pub safetensors: PathBuf,
    pub png: PathBuf,
    pub width: u32,
    pub height: u32,
    /// What kind of file it was and how its values became [0, 1].
    pub how: String,
    /// A doubt about the decoded values (see [`Origin::warning`]).
    pub warning: Option<String>,
}

/// What `muxmed decode` did.
#[derive(Debug, Default)]
pub struct DecodeOutcome {
    pub written: Vec<Decoded>,
    pub failed: Failures,
}

/// The safetensors key of the display image.
pub const DECODE_KEY: &str = "image";

/// For each input, `<stem>.safetensors` (key `image`: [H, W] float32 in [0, 1], before any
/// resize) and `<stem>.png` (16-bit grey) in `out`. A file that cannot be read, or whose stem
/// another input already took, is a failure and the others are still written.
pub fn decode_to(inputs: &[PathBuf], out: &Path) -> Result<DecodeOutcome, std::io::Error> {
    use rayon::prelude::*;
    let (files, mut failed) = gather(inputs).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(out)?;
    let out_real = out.canonicalize()?;
    // Every input, as the file system names it: no output may be written over one.
    let sources: HashSet<PathBuf> = files.iter().filter_map(|f| f.canonicalize().ok()).collect();
    let mut owner: HashMap<String, PathBuf> = HashMap::new();
    let mut jobs = Vec::new();
    for f in files {
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let over_input = ["safetensors", "png"]
            .map(|ext| out_real.join(format!("{stem}.{ext}")))
            .into_iter()
            .find(|o| sources.contains(o));
        if let Some(o) = over_input {
            failed.push((
                f.clone(),
                format!(
                    "its output {} would overwrite an input (decode into another folder)",
                    o.display()
                ),
            ));
            continue;
        }
        match owner.get(&stem) {
            Some(first) => failed.push((
                f.clone(),
                format!(
                    "its output name `{stem}` is taken by {} (decode them into separate folders)",
                    first.display()
                ),
            )),
            None => {
                owner.insert(stem.clone(), f.clone());
                jobs.push((f, stem));
            }
        }
    }
    let results: Vec<Result<Decoded, (PathBuf, String)>> = jobs
        .into_par_iter()
        .map(|(f, stem)| decode_one(&f, &stem, out).map_err(|e| (f, e)))
        .collect();
    let mut outcome = DecodeOutcome {
        written: Vec::new(),
        failed,
    };
    for r in results {
        match r {
            Ok(d) => outcome.written.push(d),
            Err(e) => outcome.failed.push(e),
        }
    }
    Ok(outcome)
}

fn decode_one(f: &Path, stem: &str, out: &Path) -> Result<Decoded, String> {
    let bytes = std::fs::read(f).map_err(|e| format!("cannot read: {e}"))?;
    let (g, origin) = decode_with_origin(&bytes, f).map_err(|e| e.to_string())?;
    let st = out.join(format!("{stem}.safetensors"));
    let png = out.join(format!("{stem}.png"));
    crate::io::write_atomic(&st, &safetensors_bytes(&g, f)?).map_err(|e| e.to_string())?;
    crate::io::write_atomic(&png, &png_bytes(&g)?).map_err(|e| e.to_string())?;
    Ok(Decoded {
        source: f.to_path_buf(),
        safetensors: st,
        png,
        width: g.width,
        height: g.height,
        how: describe(&origin),
        warning: origin.warning(),
    })
}

fn describe(origin: &Origin) -> String {
    match origin {
        Origin::Raster {
            bits,
            significant: Some(s),
            ..
        } => format!("{bits}-bit image, {s} significant bits (sBIT)"),
        Origin::Raster { bits, .. } => format!("{bits}-bit image"),
        Origin::Dicom {
            bits_stored,
            voi,
            frames,
        } => {
            let voi = match voi {
                Voi::BitRange { low, high } => format!("no window, range {low}..{high}"),
                Voi::Window {
                    center,
                    width,
                    function,
                } => format!("window {center}/{width} {function}"),
                Voi::LutSequence { entries, bits } => {
                    format!("VOI LUT of {entries} {bits}-bit entries")
                }
            };
            let frames = if *frames > 1 {
                format!(", frame 0 of {frames}")
            } else {
                String::new()
            };
            format!("DICOM {bits_stored}-bit, {voi}{frames}")
        }
    }
}

fn safetensors_bytes(g: &Gray, source: &Path) -> Result<Vec<u8>, String> {
    let data: Vec<u8> = g.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![g.height as usize, g.width as usize],
        &data,
    )
    .map_err(|e| e.to_string())?;
    let meta = HashMap::from([("source".to_string(), source.display().to_string())]);
    safetensors::serialize([(DECODE_KEY, view)], Some(meta)).map_err(|e| e.to_string())
}

fn png_bytes(g: &Gray) -> Result<Vec<u8>, String> {
    let px: Vec<u16> = g
        .data
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 65535.0).round() as u16)
        .collect();
    let buf = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(g.width, g.height, px)
        .ok_or("image size does not match its pixels")?;
    let mut out = Vec::new();
    image::DynamicImage::ImageLuma16(buf)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out)
}
