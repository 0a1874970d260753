//! Google's adjudicated labels for ChestX-Ray14 (Majkowska et al., Radiology 2019): four
//! findings on 4,376 NIH images, each read by three radiologists and adjudicated, with the
//! file's own `Set Id` (`test`: 1,962 images of the official test list, `val`: 2,414 of
//! train_val). The file is torchxrayvision's `google2019_nih-chest-xray-labels.csv(.gz)`.

use std::path::Path;

use super::nih::{self, NihError};
use crate::io::CsvLine;
use crate::labels::Split;

/// The file names [`find`] looks for beside NIH's metadata, in order of preference.
pub const FILE_NAMES: [&str; 2] = [
    "google2019_nih-chest-xray-labels.csv.gz",
    "google2019_nih-chest-xray-labels.csv",
];

/// The four adjudicated findings, in the file's column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Finding {
    Fracture,
    Pneumothorax,
    AirspaceOpacity,
    NoduleOrMass,
}

impl Finding {
    pub const ALL: [Finding; 4] = [
        Finding::Fracture,
        Finding::Pneumothorax,
        Finding::AirspaceOpacity,
        Finding::NoduleOrMass,
    ];

    /// The column name in Google's file.
    pub fn column(self) -> &'static str {
        match self {
            Finding::Fracture => "Fracture",
            Finding::Pneumothorax => "Pneumothorax",
            Finding::AirspaceOpacity => "Airspace opacity",
            Finding::NoduleOrMass => "Nodule or mass",
        }
    }

    /// The NIH labels a 14-label model's score for this finding is the largest of (and
    /// whose union is the NIH-label truth for it); empty when no output covers it.
    ///
    /// Airspace opacity is an opacity that fills the alveoli (with fluid, pus, blood or
    /// cells) rather than collapsing them: among NIH's labels that is Consolidation,
    /// Pneumonia, Infiltration (NIH's word for a patchy parenchymal opacity) and Edema.
    /// Atelectasis is volume loss, not airspace filling, and is left out.
    pub fn nih_sources(self) -> &'static [&'static str] {
        match self {
            Finding::Fracture => &[],
            Finding::Pneumothorax => &["Pneumothorax"],
            Finding::AirspaceOpacity => &["Consolidation", "Pneumonia", "Infiltration", "Edema"],
            Finding::NoduleOrMass => &["Nodule", "Mass"],
        }
    }
}

/// One image of Google's file.
#[derive(Debug, Clone, PartialEq)]
pub struct AdjudicatedImage {
    pub image_id: String,
    pub patient_id: u32,
    /// The file's `Set Id`.
    pub set: Split,
    /// Per [`Finding::ALL`]: the adjudicated truth.
    pub findings: [bool; 4],
    /// 1-based line in the file.
    pub line: usize,
}

/// The columns of the file, found by name in its header.
struct Columns {
    width: usize,
    image: usize,
    patient: usize,
    set: usize,
    findings: [usize; 4],
}

impl Columns {
    fn of(header: &[&str], path: &Path) -> Result<Columns, NihError> {
        let find = |name: &str| {
            header
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| NihError::Row {
                    path: path.to_path_buf(),
                    line: 1,
                    message: format!(
                        "no `{name}` column: not Google's 2019 adjudicated-label file"
                    ),
                })
        };
        let mut findings = [0; 4];
        for (slot, f) in findings.iter_mut().zip(Finding::ALL) {
            *slot = find(f.column())?;
        }
        Ok(Columns {
            width: header.len(),
            image: find("Image Index")?,
            patient: find("Patient ID")?,
            set: find("Set Id")?,
            findings,
        })
    }

    fn parse(&self, r: &crate::io::CsvRow<'_>, path: &Path) -> Result<AdjudicatedImage, NihError> {
        let err = |message: String| NihError::Row {
            path: path.to_path_buf(),
            line: r.line,
            message,
        };
        if r.len() != self.width {
            return Err(err(format!(
                "expected {} fields, found {}",
                self.width,
                r.len()
            )));
        }
        let field = |c: usize| r.get(c).unwrap_or_default().trim();
        let patient_id = field(self.patient).parse().map_err(|_| {
            err(format!(
                "Patient ID `{}` is not a number",
                field(self.patient)
            ))
        })?;
        let set = match field(self.set) {
            "test" => Split::Test,
            "val" | "validation" => Split::Val,
            other => return Err(err(format!("Set Id `{other}` is neither test nor val"))),
        };
        let mut findings = [false; 4];
        for ((v, &c), f) in findings.iter_mut().zip(&self.findings).zip(Finding::ALL) {
            *v = match field(c) {
                "YES" => true,
                "NO" => false,
                other => {
                    return Err(err(format!(
                        "{} value `{other}` is neither YES nor NO",
                        f.column()
                    )))
                }
            };
        }
        Ok(AdjudicatedImage {
            image_id: field(self.image).to_string(),
            patient_id,
            set,
            findings,
            line: r.line,
        })
    }
}

/// Reads Google's file (plain or gzipped); every bad row is an error naming its line, and
/// an image listed twice is one too.
pub fn read(path: &Path) -> Result<Vec<AdjudicatedImage>, NihError> {
    let text = nih::read_text(path)?;
    let mut columns: Option<Columns> = None;
    let mut out: Vec<AdjudicatedImage> = Vec::new();
    let mut seen: foldhash::HashMap<String, usize> = Default::default();
    crate::io::for_each_csv_line(
        &text,
        |line| match line {
            CsvLine::Header(h) => {
                columns = Some(Columns::of(h, path)?);
                Ok(())
            }
            CsvLine::Row(r) => {
                let c = columns.as_ref().ok_or_else(|| NihError::File {
                    path: path.to_path_buf(),
                    message: "no header".into(),
                })?;
                let img = c.parse(r, path)?;
                if let Some(first) = seen.insert(img.image_id.clone(), r.line) {
                    return Err(NihError::Row {
                        path: path.to_path_buf(),
                        line: r.line,
                        message: format!("image `{}` is also on line {first}", img.image_id),
                    });
                }
                out.push(img);
                Ok(())
            }
        },
        |line, message| NihError::Row {
            path: path.to_path_buf(),
            line,
            message,
        },
    )?;
    if out.is_empty() {
        return Err(NihError::File {
            path: path.to_path_buf(),
            message: "no images".into(),
        });
    }
    Ok(out)
}

/// Google's file inside `root` (the folder of NIH's metadata), by its usual names.
pub fn find(root: &Path) -> Result<std::path::PathBuf, NihError> {
    nih::find_in(root, &FILE_NAMES, "Google 2019 adjudicated-label file")
}
