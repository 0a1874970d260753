//! DICOM images through dicom-rs, turned into the display image a radiologist's viewer shows:
//! stored values → Modality LUT (rescale slope/intercept) → VOI LUT (a VOI LUT Sequence, else
//! the first window with its VOI LUT Function, else the stored bit range) → [0, 1] →
//! inverted for MONOCHROME1 (DICOM PS3.3 C.11.1, C.11.2, C.7.6.3.1.2).
//!
//! A multi-frame object gives its frame 0 (the others are never decoded). Every failure is a
//! named [`DicomError`] that carries the file.

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, FileMetaTable, OpenFileOptions};
use dicom_pixeldata::{PixelDecoder, PixelRepresentation, VoiLutFunction};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("{}: not a DICOM file (no `DICM` marker at byte 128)", path.display())]
    NotDicom { path: PathBuf },
    #[error("{}: truncated or corrupt DICOM: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{}: DICOM object without pixel data (7FE0,0010){}", path.display(), modality.as_ref().map(|m| format!(" (modality {m})")).unwrap_or_default())]
    NoPixelData {
        path: PathBuf,
        modality: Option<String>,
    },
    #[error("{}: unsupported transfer syntax {uid} ({name}): muxmed decodes uncompressed, deflated, RLE, JPEG baseline/extended/lossless and JPEG 2000 pixel data", path.display())]
    UnsupportedTransferSyntax {
        path: PathBuf,
        uid: String,
        name: String,
    },
    #[error("{}: colour DICOM ({photometric}, {samples} samples per pixel) where a grey X-ray is expected", path.display())]
    Colour {
        path: PathBuf,
        photometric: String,
        samples: u16,
    },
    #[error("{}: unsupported DICOM pixel layout: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
}

/// Frame 0 of a grey DICOM image.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomImage {
    pub width: u32,
    pub height: u32,
    /// The display image in [0, 1], row-major.
    pub display: Vec<f32>,
    /// The Modality LUT output (stored value · slope + intercept), before windowing; only
    /// from [`decode_with_modality`] (the image path needs the display image alone).
    pub modality: Option<Vec<f32>>,
    pub bits_stored: u16,
    /// Frames in the object (only frame 0 is read).
    pub frames: u32,
    /// How the values were mapped to [0, 1], for `decode` to report.
    pub voi: Voi,
}

/// The VOI transform that was applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Voi {
    /// No window: the stored bit range (after the Modality LUT) spans [0, 1].
    BitRange {
        low: f64,
        high: f64,
    },
    Window {
        center: f64,
        width: f64,
        function: String,
    },
    LutSequence {
        entries: usize,
        bits: u8,
    },
}

/// The header fields a manifest needs, read without the pixel data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomHeader {
    pub patient_id: Option<String>,
    pub sop_instance_uid: Option<String>,
}

/// Whether `bytes` start like a DICOM Part 10 file (128-byte preamble, then `DICM`).
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM".as_slice())
}

/// Whether a file name says DICOM (`.dcm`, `.dicom`, any case).
pub fn has_dicom_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm") || e.eq_ignore_ascii_case("dicom"))
}

fn corrupt(path: &Path, message: impl ToString) -> DicomError {
    DicomError::Corrupt {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The longest file meta element value muxmed reads while measuring a group that lacks its
/// length: meta values are UIDs and short names, so more means a corrupt file.
const MAX_META_VALUE: u32 = 1 << 16;

/// The file from `DICM` up to the end of its file meta group, read from `r` (positioned just
/// after `DICM`), with the File Meta Information Group Length (0002,0000) inserted when the
/// file lacks it (pydicom reads such files; dicom-rs needs the element). Elements of the
/// group are Explicit VR Little Endian (PS3.10 7.1). The caller chains the rest of `r`.
fn meta_prefix<R: std::io::Read>(r: &mut R) -> Result<Vec<u8>, String> {
    let mut tag = [0u8; 4];
    r.read_exact(&mut tag)
        .map_err(|e| format!("file meta group: {e}"))?;
    if tag == [2, 0, 0, 0] {
        return Ok([b"DICM".as_slice(), &tag].concat());
    }
    let mut group = Vec::new();
    while tag[..2] == [2, 0] {
        let mut vr = [0u8; 2];
        r.read_exact(&mut vr)
            .map_err(|e| format!("file meta group ends inside an element header: {e}"))?;
        let long = matches!(
            &vr,
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"SV"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"UV"
        );
        let mut len = [0u8; 6];
        let n = if long { 6 } else { 2 };
        r.read_exact(&mut len[..n])
            .map_err(|e| format!("file meta group ends inside an element header: {e}"))?;
        let value_len = if long {
            u32::from_le_bytes([len[2], len[3], len[4], len[5]])
        } else {
            u32::from(u16::from_le_bytes([len[0], len[1]]))
        };
        let element = u16::from_le_bytes([tag[2], tag[3]]);
        if value_len > MAX_META_VALUE {
            return Err(format!(
                "file meta element (0002,{element:04X}) declares {value_len} bytes"
            ));
        }
        let mut value = vec![0u8; value_len as usize];
        r.read_exact(&mut value)
            .map_err(|e| format!("file meta element (0002,{element:04X}) ends early: {e}"))?;
        group.extend_from_slice(&tag);
        group.extend_from_slice(&vr);
        group.extend_from_slice(&len[..n]);
        group.extend_from_slice(&value);
        r.read_exact(&mut tag)
            .map_err(|e| format!("the file ends after its file meta group: {e}"))?;
    }
    let mut out = b"DICM\x02\x00\x00\x00UL\x04\x00".to_vec();
    out.extend_from_slice(&(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The file's bytes from `DICM` on, with its meta group's length element present.
fn from_dicm<'a>(bytes: &'a [u8], path: &Path) -> Result<std::borrow::Cow<'a, [u8]>, DicomError> {
    let mut rest = bytes.get(132..).unwrap_or_default();
    let prefix = meta_prefix(&mut rest).map_err(|m| corrupt(path, m))?;
    if prefix.len() == 8 {
        return Ok(std::borrow::Cow::Borrowed(&bytes[128..]));
    }
    Ok(std::borrow::Cow::Owned([prefix.as_slice(), rest].concat()))
}

/// Checks the marker and the transfer syntax (from the file meta group) before the data set
/// is parsed, so an unknown syntax is named instead of surfacing as a parse error.
fn check_meta(bytes: &[u8], path: &Path) -> Result<(), DicomError> {
    if !is_dicom(bytes) {
        return Err(DicomError::NotDicom {
            path: path.to_path_buf(),
        });
    }
    let meta =
        FileMetaTable::from_reader(&*from_dicm(bytes, path)?).map_err(|e| corrupt(path, e))?;
    let uid = meta
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let unsupported = |name: &str| DicomError::UnsupportedTransferSyntax {
        path: path.to_path_buf(),
        uid: uid.clone(),
        name: name.to_string(),
    };
    match TransferSyntaxRegistry.get(&uid) {
        None => Err(unsupported("not a transfer syntax muxmed knows")),
        Some(ts) if !ts.can_decode_all() => Err(unsupported(ts.name())),
        Some(_) => Ok(()),
    }
}

fn parse(bytes: &[u8], path: &Path) -> Result<DefaultDicomObject, DicomError> {
    check_meta(bytes, path)?;
    OpenFileOptions::new()
        .from_reader(&*from_dicm(bytes, path)?)
        .map_err(|e| corrupt(path, error_chain(&e)))
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok()??;
    let s = e.to_str().ok()?;
    let s = s.trim_matches(['\0', ' ']);
    (!s.is_empty()).then(|| s.to_string())
}

/// Patient ID and SOP Instance UID, reading the file only up to its pixel data.
pub fn read_header(path: &Path) -> Result<DicomHeader, DicomError> {
    use std::io::Read;
    let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| corrupt(path, e))?);
    let mut preamble = [0u8; 132];
    if f.read_exact(&mut preamble).is_err() || !is_dicom(&preamble) {
        return Err(DicomError::NotDicom {
            path: path.to_path_buf(),
        });
    }
    // dicom-object's reader starts at `DICM`.
    let prefix = meta_prefix(&mut f).map_err(|m| corrupt(path, m))?;
    let rest = std::io::Cursor::new(prefix).chain(f);
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(rest)
        .map_err(|e| corrupt(path, error_chain(&e)))?;
    Ok(DicomHeader {
        patient_id: text(&obj, tags::PATIENT_ID),
        sop_instance_uid: text(&obj, tags::SOP_INSTANCE_UID),
    })
}

/// Decodes frame 0 of the DICOM file held in `bytes` (`path` names it in errors).
pub fn decode(bytes: &[u8], path: &Path) -> Result<DicomImage, DicomError> {
    decode_frame(bytes, path, false)
}

/// [`decode`], also keeping the Modality LUT output.
pub fn decode_with_modality(bytes: &[u8], path: &Path) -> Result<DicomImage, DicomError> {
    decode_frame(bytes, path, true)
}

fn decode_frame(bytes: &[u8], path: &Path, keep_modality: bool) -> Result<DicomImage, DicomError> {
    let obj = parse(bytes, path)?;
    let px = grey_frame(&obj, path)?;
    let (width, height) = (px.columns(), px.rows());
    let signed = px.pixel_representation() == PixelRepresentation::Signed;
    let bits_stored = px.bits_stored();
    let data = px
        .frame_data(0)
        .map_err(|e| corrupt(path, error_chain(&e)))?;
    let mut values = stored_values(data, px.bits_allocated(), bits_stored, signed, path)?;
    let expected = width as usize * height as usize;
    if values.len() != expected {
        return Err(corrupt(
            path,
            format!(
                "pixel data holds {} values, {width}×{height} needs {expected}",
                values.len()
            ),
        ));
    }
    // Modality LUT, in place (f64: a fractional slope must not cost display precision).
    let attr = |e: dicom_pixeldata::Error| corrupt(path, error_chain(&e));
    let rescale = px
        .rescale()
        .map_err(attr)?
        .first()
        .copied()
        .filter(|_| has_rescale(&obj));
    if let Some(r) = rescale {
        values
            .iter_mut()
            .for_each(|v| *v = *v * r.slope + r.intercept);
    }
    let lut = px
        .voi_lut_sequence()
        .map_err(attr)?
        .and_then(|s| s.first())
        .map(|l| VoiLut {
            first: l.min_pixel_value as i64,
            bits: l.bits_stored,
            data: l.data.clone(),
        });
    let window = px.window().map_err(attr)?.and_then(|w| w.first().copied());
    let function = px
        .voi_lut_function()
        .map_err(attr)?
        .and_then(|f| f.first().copied())
        .unwrap_or_default();
    let range = output_range(bits_stored, signed, rescale.map(|r| (r.slope, r.intercept)));
    let voi = VoiTransform::of(lut, window, function, range);
    // MONOCHROME1 shows low values bright. Presentation LUT Shape INVERSE states the same
    // inversion (the DX IOD requires it with MONOCHROME1), so it is applied once.
    let inverse = text(&obj, tags::PRESENTATION_LUT_SHAPE).as_deref() == Some("INVERSE");
    let invert = px.photometric_interpretation().as_str() == "MONOCHROME1" || inverse;
    let display = values
        .iter()
        .map(|&m| {
            let x = voi.unit(m);
            (if invert { 1.0 - x } else { x }) as f32
        })
        .collect();
    Ok(DicomImage {
        width,
        height,
        display,
        modality: keep_modality.then(|| values.iter().map(|&m| m as f32).collect()),
        bits_stored,
        frames: frames(&obj),
        voi: voi.describe(),
    })
}

/// Frame 0's decoded pixels, refused unless the object has pixel data and is grey.
fn grey_frame<'a>(
    obj: &'a DefaultDicomObject,
    path: &Path,
) -> Result<dicom_pixeldata::DecodedPixelData<'a>, DicomError> {
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(DicomError::NoPixelData {
            path: path.to_path_buf(),
            modality: text(obj, tags::MODALITY),
        });
    }
    let px = obj
        .decode_pixel_data_frame(0)
        .map_err(|e| corrupt(path, error_chain(&e)))?;
    let photometric = px.photometric_interpretation().as_str().to_string();
    let samples = px.samples_per_pixel();
    if samples != 1 || !photometric.starts_with("MONOCHROME") {
        return Err(DicomError::Colour {
            path: path.to_path_buf(),
            photometric,
            samples,
        });
    }
    Ok(px)
}

/// The first item of a VOI LUT Sequence: the value its first entry maps, the entries' bits.
struct VoiLut {
    first: i64,
    bits: u8,
    data: Vec<u16>,
}

/// The VOI stage (PS3.3 C.11.2) with what it needs, mapping a modality value to [0, 1].
enum VoiTransform {
    Lut(VoiLut),
    Window {
        center: f64,
        width: f64,
        function: VoiLutFunction,
    },
    Range {
        low: f64,
        high: f64,
    },
}

impl VoiTransform {
    /// A VOI LUT Sequence first (as pydicom prefers it), then the first window with a
    /// positive width, else the stored bit range (`range`, after the rescale).
    fn of(
        lut: Option<VoiLut>,
        window: Option<dicom_pixeldata::WindowLevel>,
        function: VoiLutFunction,
        range: (f64, f64),
    ) -> Self {
        if let Some(l) = lut.filter(|l| !l.data.is_empty()) {
            return VoiTransform::Lut(l);
        }
        match window.filter(|w| w.width > 0.0) {
            Some(w) => VoiTransform::Window {
                center: w.center,
                width: w.width,
                function,
            },
            None => VoiTransform::Range {
                low: range.0,
                high: range.1,
            },
        }
    }

    fn unit(&self, m: f64) -> f64 {
        match self {
            VoiTransform::Lut(l) => lut_unit(m, l),
            VoiTransform::Window {
                center,
                width,
                function,
            } => window_unit(m, *center, *width, *function),
            VoiTransform::Range { low, high } => {
                ((m - low) / (high - low).max(f64::MIN_POSITIVE)).clamp(0.0, 1.0)
            }
        }
    }

    fn describe(&self) -> Voi {
        match self {
            VoiTransform::Lut(l) => Voi::LutSequence {
                entries: l.data.len(),
                bits: l.bits,
            },
            VoiTransform::Window {
                center,
                width,
                function,
            } => Voi::Window {
                center: *center,
                width: *width,
                function: format!("{function:?}").to_uppercase(),
            },
            VoiTransform::Range { low, high } => Voi::BitRange {
                low: *low,
                high: *high,
            },
        }
    }
}

/// A VOI LUT's entry for `m` (clamped to its first and last entries, PS3.3 C.11.2.1.1) as a
/// fraction of its output range 2^bits − 1.
fn lut_unit(m: f64, l: &VoiLut) -> f64 {
    let top = ((1u64 << l.bits.clamp(1, 31)) - 1) as f64;
    let last = l.data.len().saturating_sub(1) as i64;
    let i = (m.round() as i64 - l.first).clamp(0, last);
    (l.data[i as usize] as f64 / top).clamp(0.0, 1.0)
}

fn has_rescale(obj: &DefaultDicomObject) -> bool {
    let present = |t| obj.element_opt(t).ok().flatten().is_some();
    present(tags::RESCALE_SLOPE) && present(tags::RESCALE_INTERCEPT)
}

fn frames(obj: &DefaultDicomObject) -> u32 {
    text(obj, tags::NUMBER_OF_FRAMES)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The stored values of one frame, masked to Bits Stored and sign-extended when signed
/// (bits above Bits Stored may hold overlays; PS3.5 8.1.1).
fn stored_values(
    data: &[u8],
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    path: &Path,
) -> Result<Vec<f64>, DicomError> {
    let bits = bits_stored.clamp(1, bits_allocated.max(1)) as u32;
    let to_value = |raw: u32| -> f64 {
        let v = if bits >= 32 {
            raw
        } else {
            raw & ((1u32 << bits) - 1)
        };
        if signed && bits < 32 && v >> (bits - 1) & 1 == 1 {
            (v as i64 - (1i64 << bits)) as f64
        } else if signed && bits == 32 {
            v as i32 as f64
        } else {
            v as f64
        }
    };
    let values: Vec<f64> = match bits_allocated {
        8 => data.iter().map(|&b| to_value(b as u32)).collect(),
        16 => data
            .chunks_exact(2)
            .map(|c| to_value(u16::from_ne_bytes([c[0], c[1]]) as u32))
            .collect(),
        32 => data
            .chunks_exact(4)
            .map(|c| to_value(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        other => {
            return Err(DicomError::Unsupported {
                path: path.to_path_buf(),
                what: format!("Bits Allocated {other} (muxmed reads 8, 16 and 32)"),
            })
        }
    };
    Ok(values)
}

/// The range a windowed or unwindowed image maps to: the stored bit range, through the
/// rescale when the object has one (as pydicom's `apply_windowing` does).
fn output_range(bits_stored: u16, signed: bool, rescale: Option<(f64, f64)>) -> (f64, f64) {
    let b = bits_stored as i32;
    let (lo, hi) = if signed {
        (-(2f64.powi(b - 1)), 2f64.powi(b - 1) - 1.0)
    } else {
        (0.0, 2f64.powi(b) - 1.0)
    };
    match rescale {
        Some((slope, intercept)) => {
            let (a, z) = (lo * slope + intercept, hi * slope + intercept);
            (a.min(z), a.max(z))
        }
        None => (lo, hi),
    }
}

/// A window's output as a fraction of the output range (PS3.3 C.11.2.1.2 for LINEAR,
/// C.11.2.1.3.2 for LINEAR_EXACT, C.11.2.1.3.1 for SIGMOID).
fn window_unit(m: f64, c: f64, w: f64, f: VoiLutFunction) -> f64 {
    match f {
        VoiLutFunction::Linear if w >= 1.0 => {
            if m <= c - 0.5 - (w - 1.0) / 2.0 {
                0.0
            } else if m > c - 0.5 + (w - 1.0) / 2.0 {
                1.0
            } else {
                (m - (c - 0.5)) / (w - 1.0) + 0.5
            }
        }
        // A LINEAR window narrower than 1 is a step at the centre.
        VoiLutFunction::Linear => {
            if m < c {
                0.0
            } else {
                1.0
            }
        }
        VoiLutFunction::LinearExact => ((m - c) / w + 0.5).clamp(0.0, 1.0),
        VoiLutFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (m - c) / w).exp()),
    }
}

/// A copy of `src` with new patient and instance identifiers, for tests and examples that
/// need DICOM files from several patients.
pub fn rewrite_identity(
    src: &Path,
    dst: &Path,
    patient_id: &str,
    sop_instance_uid: &str,
) -> Result<(), DicomError> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    let bytes = std::fs::read(src).map_err(|e| corrupt(src, e))?;
    let mut obj = parse(&bytes, src)?;
    obj.put(DataElement::new(
        tags::PATIENT_ID,
        VR::LO,
        PrimitiveValue::from(patient_id),
    ));
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop_instance_uid),
    ));
    let meta = obj.meta_mut();
    meta.media_storage_sop_instance_uid = sop_instance_uid.to_string();
    meta.update_information_group_length();
    let mut out: Vec<u8> = Vec::new();
    obj.write_all(&mut out).map_err(|e| corrupt(dst, e))?;
    crate::io::write_atomic(dst, &out).map_err(|e| corrupt(dst, e))
}

/// A grey image to write as DICOM (explicit VR little endian, uncompressed).
pub struct GreyDicom<'a> {
    pub width: u32,
    pub height: u32,
    /// Stored values, row-major; below 2^`bits_stored`.
    pub values: &'a [u16],
    /// 8 (one byte per pixel) or up to 16 (two bytes).
    pub bits_stored: u16,
    /// MONOCHROME1: the smallest value is white (the values are written as given).
    pub monochrome1: bool,
    pub patient_id: &'a str,
    pub sop_instance_uid: &'a str,
    /// (0018,5101) View Position, e.g. `PA`.
    pub view: Option<&'a str>,
}

/// Digital X-Ray Image Storage - For Presentation (PS3.4 B.5).
const DX_FOR_PRESENTATION: &str = "1.2.840.10008.5.1.4.1.1.1.1";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// A DX object holding `g` as a Part 10 file's bytes (PS3.3 A.26: the image pixel module's
/// attributes and the identifiers a reader needs; no window, so a viewer shows the stored
/// bit range).
pub fn encode_grey(g: &GreyDicom, path: &Path) -> Result<Vec<u8>, DicomError> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let n = g.width as usize * g.height as usize;
    if g.values.len() != n || !(8..=16).contains(&g.bits_stored) {
        return Err(DicomError::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "{} values for {}x{} at {} bits",
                g.values.len(),
                g.width,
                g.height,
                g.bits_stored
            ),
        });
    }
    let eight = g.bits_stored == 8;
    let pixels: Vec<u8> = if eight {
        g.values.iter().map(|&v| v.min(255) as u8).collect()
    } else {
        g.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    };
    let us = |v: u16| PrimitiveValue::from(v);
    let photometric = if g.monochrome1 {
        "MONOCHROME1"
    } else {
        "MONOCHROME2"
    };
    let mut obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(DX_FOR_PRESENTATION),
        ),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(g.sop_instance_uid),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("DX")),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(g.patient_id)),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(1)),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(photometric),
        ),
        DataElement::new(tags::ROWS, VR::US, us(g.height as u16)),
        DataElement::new(tags::COLUMNS, VR::US, us(g.width as u16)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, us(if eight { 8 } else { 16 })),
        DataElement::new(tags::BITS_STORED, VR::US, us(g.bits_stored)),
        DataElement::new(tags::HIGH_BIT, VR::US, us(g.bits_stored - 1)),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, us(0)),
        DataElement::new(
            tags::PIXEL_DATA,
            if eight { VR::OB } else { VR::OW },
            PrimitiveValue::from(pixels),
        ),
    ]);
    if let Some(v) = g.view {
        obj.put(DataElement::new(
            tags::VIEW_POSITION,
            VR::CS,
            PrimitiveValue::from(v),
        ));
    }
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(EXPLICIT_VR_LE)
        .media_storage_sop_class_uid(DX_FOR_PRESENTATION)
        .media_storage_sop_instance_uid(g.sop_instance_uid);
    let file = obj.with_meta(meta).map_err(|e| corrupt(path, e))?;
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| corrupt(path, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_matches_ps33_at_its_edges() {
        // c = 2048, w = 3000: lower edge c - 0.5 - 1499.5 = 548, upper 3547.
        let f = VoiLutFunction::Linear;
        assert_eq!(window_unit(548.0, 2048.0, 3000.0, f), 0.0);
        assert_eq!(window_unit(3548.0, 2048.0, 3000.0, f), 1.0);
        let mid = window_unit(2047.5, 2048.0, 3000.0, f);
        assert!((mid - 0.5).abs() < 1e-12, "{mid}");
    }

    #[test]
    fn linear_exact_and_sigmoid_follow_their_ps33_formulas() {
        // LINEAR_EXACT (C.11.2.1.3.2): (m - c) / w + 0.5, clipped.
        let e = VoiLutFunction::LinearExact;
        assert_eq!(window_unit(100.0, 100.0, 50.0, e), 0.5);
        assert_eq!(window_unit(87.5, 100.0, 50.0, e), 0.25);
        assert_eq!(window_unit(60.0, 100.0, 50.0, e), 0.0);
        assert_eq!(window_unit(130.0, 100.0, 50.0, e), 1.0);
        // SIGMOID (C.11.2.1.3.1): 1 / (1 + exp(-4 (m - c) / w)); at c + w/4 it is 1/(1+e^-1).
        let g = VoiLutFunction::Sigmoid;
        assert_eq!(window_unit(100.0, 100.0, 50.0, g), 0.5);
        let v = window_unit(112.5, 100.0, 50.0, g);
        assert!((v - 0.731_058_578_630_004_9).abs() < 1e-15, "{v}");
    }

    #[test]
    fn signed_values_are_sign_extended_from_bits_stored() {
        // 12 bits stored in 16: 0x0FFF is -1, 0xF800 has overlay bits above bit 11.
        let data: Vec<u8> = [0x0FFFu16, 0x0800, 0xF001]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let v = stored_values(&data, 16, 12, true, Path::new("x.dcm")).unwrap();
        assert_eq!(v, vec![-1.0, -2048.0, 1.0]);
        let u = stored_values(&data, 16, 12, false, Path::new("x.dcm")).unwrap();
        assert_eq!(u, vec![4095.0, 2048.0, 1.0]);
    }

    #[test]
    fn output_range_goes_through_a_negative_slope() {
        assert_eq!(output_range(8, false, Some((-1.0, 255.0))), (0.0, 255.0));
        assert_eq!(output_range(16, true, None), (-32768.0, 32767.0));
    }
}
