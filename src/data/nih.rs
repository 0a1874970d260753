//! The NIH ChestX-Ray14 files: metadata CSV (2017 or 2020 release, plain or gzipped),
//! official split lists, bounding boxes, and the image folders, with every format quirk
//! handled and every bad row reported with its file and line.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::labels::{LABELS, NO_FINDING};

#[derive(Debug, thiserror::Error)]
pub enum NihError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}, line {line}: {message}", path.display())]
    Row {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("no {what} found in {}: looked for {tried}", root.display())]
    NotFound {
        what: &'static str,
        root: PathBuf,
        tried: String,
    },
}

/// The exact header of both metadata releases (the bracketed names hold commas, so the 9
/// names cover 11 fields).
pub const METADATA_HEADER: &str = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]";

/// Standard file names inside the dataset folder, in order of preference.
pub const METADATA_NAMES: [&str; 4] = [
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
];

/// One row of the metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub image_id: String,
    /// Indices into [`LABELS`]; empty for `No Finding`.
    pub labels: Vec<usize>,
    pub follow_up: u32,
    pub patient_id: u32,
    pub age: u32,
    pub sex: String,
    pub view: String,
    pub width: u32,
    pub height: u32,
    pub spacing_x: f64,
    pub spacing_y: f64,
    /// 1-based line in the source file, for messages.
    pub line: usize,
}

/// Reads a text file, gunzipping when the name ends in `.gz`.
pub fn read_text(path: &Path) -> Result<String, NihError> {
    let io = |source| NihError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .map_err(io)?;
        Ok(s)
    } else {
        String::from_utf8(bytes).map_err(|e| NihError::File {
            path: path.to_path_buf(),
            message: format!("not UTF-8 text: {e}"),
        })
    }
}

/// The records of CSV text through the one CSV reader ([`crate::io::csv_records`]), with its
/// errors naming `path` and the line.
pub fn csv_rows(text: &str, path: &Path) -> Result<Vec<crate::io::CsvRecord>, NihError> {
    crate::io::csv_records(text).map_err(|(line, message)| NihError::Row {
        path: path.to_path_buf(),
        line,
        message,
    })
}

/// Finds the first of `names` inside `root`.
pub fn find_in(root: &Path, names: &[&str], what: &'static str) -> Result<PathBuf, NihError> {
    names
        .iter()
        .map(|n| root.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| NihError::NotFound {
            what,
            root: root.to_path_buf(),
            tried: names.join(", "),
        })
}

/// Parses the metadata CSV text. Rows have 11 fields, or 12 with an empty last one (some
/// copies of the 2017 file end every line with a comma).
pub fn parse_metadata(text: &str, path: &Path) -> Result<Vec<Record>, NihError> {
    let row_err = |line: usize, message: String| NihError::Row {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    crate::io::for_each_csv_line(
        text,
        |line| match line {
            crate::io::CsvLine::Header(h) => check_metadata_header(h, &row_err),
            crate::io::CsvLine::Row(r) => {
                out.push(parse_record(r, &row_err)?);
                Ok(())
            }
        },
        row_err,
    )?;
    Ok(out)
}

/// The metadata header, with or without a trailing empty field.
fn check_metadata_header(
    fields: &[&str],
    row_err: &impl Fn(usize, String) -> NihError,
) -> Result<(), NihError> {
    let fields = match fields {
        [rest @ .., last] if last.trim().is_empty() => rest,
        _ => fields,
    };
    let header = fields.join(",");
    if header != METADATA_HEADER {
        return Err(row_err(
            1,
            format!("unexpected header `{header}`; expected the NIH header `{METADATA_HEADER}`"),
        ));
    }
    Ok(())
}

/// One data row of the metadata.
fn parse_record(
    r: &crate::io::CsvRow<'_>,
    row_err: &impl Fn(usize, String) -> NihError,
) -> Result<Record, NihError> {
    let line = r.line;
    let mut f: Vec<&str> = r.fields().collect();
    if f.len() == 12 && f[11].trim().is_empty() {
        f.pop();
    }
    if f.len() != 11 {
        return Err(row_err(
            line,
            format!("expected 11 fields, found {}: `{}`", f.len(), r.joined()),
        ));
    }
    let image_id = f[0].trim().to_string();
    if !image_id.ends_with(".png") || image_id.len() < 12 {
        return Err(row_err(
            line,
            format!("`{image_id}` is not an image file name like 00000001_000.png"),
        ));
    }
    let mut labels = Vec::new();
    let finding = f[1].trim();
    if finding != NO_FINDING {
        for l in finding.split('|') {
            match LABELS.iter().position(|k| *k == l) {
                Some(k) => labels.push(k),
                None if l == NO_FINDING => {
                    return Err(row_err(
                        line,
                        format!("`No Finding` combined with a disease in `{finding}`"),
                    ))
                }
                None => {
                    return Err(row_err(
                        line,
                        format!(
                            "unknown label `{l}` in `{finding}`; known labels: {}, or `No Finding`",
                            LABELS.join(", ")
                        ),
                    ))
                }
            }
        }
        labels.sort_unstable();
        labels.dedup();
    }
    let int = |k: usize, name: &str| -> Result<u32, NihError> {
        f[k].trim().parse::<u32>().map_err(|_| {
            row_err(
                line,
                format!("{name} `{}` is not a non-negative integer", f[k]),
            )
        })
    };
    let float = |k: usize, name: &str| -> Result<f64, NihError> {
        f[k].trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| row_err(line, format!("{name} `{}` is not a number", f[k])))
    };
    let sex = f[5].trim().to_string();
    if sex != "M" && sex != "F" {
        return Err(row_err(
            line,
            format!("Patient Gender `{sex}` is not M or F"),
        ));
    }
    let view = f[6].trim().to_string();
    if view != "PA" && view != "AP" {
        return Err(row_err(
            line,
            format!("View Position `{view}` is not PA or AP"),
        ));
    }
    Ok(Record {
        image_id,
        labels,
        follow_up: int(2, "Follow-up #")?,
        patient_id: int(3, "Patient ID")?,
        age: int(4, "Patient Age")?,
        sex,
        view,
        width: int(7, "OriginalImage width")?,
        height: int(8, "OriginalImage height")?,
        spacing_x: float(9, "pixel spacing x")?,
        spacing_y: float(10, "pixel spacing y")?,
        line,
    })
}

/// Reads a split list (one image file name a line).
pub fn read_list(path: &Path) -> Result<Vec<String>, NihError> {
    Ok(read_text(path)?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// One bounding box in 1024x1024 pixel space (x, y = top-left).
#[derive(Debug, Clone, PartialEq)]
pub struct BBox {
    pub image_id: String,
    /// Index into [`LABELS`] (`Infiltrate` in the file means `Infiltration`).
    pub label: usize,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// The line of the box file it was read from.
    pub line: usize,
}

/// Reads a box list (`Image Index, Finding Label, x, y, w, h`). A box with a value that is
/// not a finite number, a negative corner or a width or height that is not positive is an
/// error naming its line: such a box cannot be scored, and NaN fields would compare as hits.
pub fn parse_bboxes(text: &str, path: &Path) -> Result<Vec<BBox>, NihError> {
    let row_err = |line: usize, message: String| NihError::Row {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    for r in csv_rows(text, path)?.iter().skip(1) {
        let line = r.line;
        let f: Vec<&str> = r.fields.iter().map(String::as_str).collect();
        if f.len() < 6 || f[6..].iter().any(|x| !x.trim().is_empty()) {
            return Err(row_err(
                line,
                format!(
                    "expected image, label, x, y, w, h: `{}`",
                    r.fields.join(",")
                ),
            ));
        }
        let name = if f[1] == "Infiltrate" {
            "Infiltration"
        } else {
            f[1]
        };
        let label = LABELS
            .iter()
            .position(|k| *k == name)
            .ok_or_else(|| row_err(line, format!("unknown label `{}`", f[1])))?;
        let num = |k: usize| {
            f[k].trim()
                .parse::<f64>()
                .map_err(|_| row_err(line, format!("`{}` is not a number", f[k])))
        };
        let b = BBox {
            image_id: f[0].trim().to_string(),
            label,
            x: num(2)?,
            y: num(3)?,
            w: num(4)?,
            h: num(5)?,
            line,
        };
        check_box(b.x, b.y, b.w, b.h).map_err(|m| row_err(line, m))?;
        out.push(b);
    }
    Ok(out)
}

/// A box that is not a box (a value that is not a finite number, a negative corner, a
/// width or height that is not positive) cannot be scored, and NaN fields would compare as
/// hits: the message says why.
pub fn check_box(x: f64, y: f64, w: f64, h: f64) -> Result<(), String> {
    let finite = [x, y, w, h].iter().all(|v| v.is_finite());
    if !finite || x < 0.0 || y < 0.0 || w <= 0.0 || h <= 0.0 {
        return Err(format!(
            "the box (x {x}, y {y}, w {w}, h {h}) is not a box: x and y must be finite and at least 0, w and h finite and positive"
        ));
    }
    Ok(())
}

/// Every entry under `dir` that is not a directory, by one recursive scan (symbolic links
/// to directories are not followed), in no particular order.
pub fn files_under(dir: &Path) -> Result<Vec<std::fs::DirEntry>, NihError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| NihError::Io {
            path: d.clone(),
            source,
        })?;
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => out.push(e),
                Err(_) => {}
            }
        }
    }
    Ok(out)
}

/// Whether `p` is a regular file (or a link to one), and why not. A FIFO would block a reader
/// forever and a dangling link fails later: only regular files count as images.
pub fn regular_file(p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err("is not a regular file (a FIFO, socket or device?)".into()),
        Err(e) => Err(format!("cannot be read ({e}); a dangling symbolic link?")),
    }
}

/// Finds every PNG/JPEG/DICOM file under `dir` by one recursive scan (NIH's `images/`, the
/// `images_001/images/...` layout, or flat), keyed by file name. A name found twice is an
/// error naming both places.
pub fn scan_images(dir: &Path) -> Result<HashMap<String, PathBuf>, NihError> {
    let mut found = HashMap::new();
    for e in files_under(dir)? {
        let p = e.path();
        if !super::image::is_image_file(&p) {
            continue;
        }
        if let Err(message) = regular_file(&p) {
            return Err(NihError::File { path: p, message });
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(prev) = found.insert(name.clone(), p.clone()) {
            return Err(NihError::File {
                path: p,
                message: format!("image `{name}` also found at {}", prev.display()),
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("meta.csv")
    }

    const ROW: &str = "00000001_000.png,Cardiomegaly|Emphysema,0,1,57,M,PA,2682,2749,0.143,0.143";

    #[test]
    fn parses_rows_and_trailing_comma() {
        let text = format!("{METADATA_HEADER}\n{ROW}\n00000002_000.png,No Finding,0,2,81,F,AP,2048,2500,0.171,0.171,\n");
        let r = parse_metadata(&text, &p()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].labels, vec![1, 10]);
        assert_eq!((r[0].width, r[0].height, r[0].age), (2682, 2749, 57));
        assert!(r[1].labels.is_empty());
        assert_eq!(r[1].line, 3);
    }

    #[test]
    fn header_with_trailing_comma_is_accepted() {
        let text = format!("{METADATA_HEADER},\n{ROW},\n");
        assert_eq!(parse_metadata(&text, &p()).unwrap().len(), 1);
    }

    fn err(row: &str) -> String {
        parse_metadata(&format!("{METADATA_HEADER}\n{ROW}\n{row}\n"), &p())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_rows_name_file_line_and_value() {
        let e = err("00000003_000.png,Effusion|Cancer,0,3,40,M,PA,1,1,0.1,0.1");
        assert!(
            e.starts_with("meta.csv, line 3:") && e.contains("`Cancer`"),
            "{e}"
        );
        let e = err("00000003_000.png,Effusion,0,3,forty,M,PA,1,1,0.1,0.1");
        assert!(e.contains("line 3") && e.contains("`forty`"), "{e}");
        let e = err("00000003_000.png,Effusion,0,3,40,M,PA,1,1,0.1");
        assert!(
            e.contains("line 3") && e.contains("expected 11 fields, found 10"),
            "{e}"
        );
        let e = err("00000003_000.png,No Finding|Effusion,0,3,40,M,PA,1,1,0.1,0.1");
        assert!(
            e.contains("line 3") && e.contains("`No Finding` combined"),
            "{e}"
        );
        let e = err("00000003_000.png,Infiltrate,0,3,40,M,PA,1,1,0.1,0.1");
        assert!(e.contains("unknown label `Infiltrate`"), "{e}");
        let e = err("00000003_000.png,Effusion,0,3,40,M,LL,1,1,0.1,0.1");
        assert!(e.contains("`LL`"), "{e}");
    }

    #[test]
    fn bbox_infiltrate_means_infiltration() {
        let text =
            "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00013118_008.png,Infiltrate,1,2,3,4\n";
        let b = parse_bboxes(text, &p()).unwrap();
        assert_eq!(LABELS[b[0].label], "Infiltration");
        assert_eq!((b[0].x, b[0].h), (1.0, 4.0));
    }

    #[test]
    fn boxes_that_are_not_boxes_are_refused_by_line() {
        let head = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00013118_008.png,Mass,1,2,3,4\n";
        for bad in ["NaN,2,3,4", "1,2,-3,4", "1,2,3,0", "-1,2,3,4", "1,inf,3,4"] {
            let text = format!("{head}00013118_008.png,Mass,{bad}\n");
            let e = parse_bboxes(&text, &p()).unwrap_err().to_string();
            assert!(
                e.contains("line 3") && e.contains("is not a box"),
                "{bad}: {e}"
            );
        }
        assert_eq!(parse_bboxes(head, &p()).unwrap()[0].line, 2);
    }
}
