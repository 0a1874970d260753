//! Decoding chest X-rays into one gray channel, keeping 16-bit precision: PNG (8/16-bit gray,
//! gray+alpha, RGB, RGBA: about 1% of NIH images are RGBA with equal channels), JPEG and DICOM
//! (through [`super::dicom`], as its display image). Every failure names the file.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader};

use super::dicom::{self, DicomError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot decode image (truncated or corrupt?): {message}", path.display())]
    Decode { path: PathBuf, message: String },
    #[error(transparent)]
    Dicom(#[from] DicomError),
}

/// Whether a file name is one muxmed reads as an image: PNG, JPEG or DICOM (any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["png", "jpg", "jpeg"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    }) || dicom::has_dicom_extension(path)
}

/// A gray image with values in [0, 1] (16-bit sources keep their precision).
#[derive(Debug, Clone, PartialEq)]
pub struct Gray {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
    /// Bits per sample of the source (8 or 16).
    pub bits: u8,
}

/// Where a decoded image came from, for `muxmed decode` to report.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// PNG or JPEG with this many bits per sample (16-bit PNGs: `significant` from sBIT).
    Raster { bits: u8, significant: Option<u8> },
    /// A DICOM display image: bits stored, the VOI transform, frames in the object.
    Dicom {
        bits_stored: u16,
        voi: dicom::Voi,
        frames: u32,
    },
}

/// Decodes bytes already read from `path` (the path is only used in messages). A file with
/// the DICOM marker, or named `.dcm`/`.dicom`, is read as DICOM.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<Gray, ImageError> {
    decode_with_origin(bytes, path).map(|(g, _)| g)
}

/// [`decode_bytes`], also saying how the values were obtained.
pub fn decode_with_origin(bytes: &[u8], path: &Path) -> Result<(Gray, Origin), ImageError> {
    if dicom::is_dicom(bytes) || dicom::has_dicom_extension(path) {
        let d = dicom::decode(bytes, path)?;
        // A window or rescale gives values between 8-bit steps: keep 16-bit precision.
        let eight = d.bits_stored <= 8 && matches!(d.voi, dicom::Voi::BitRange { .. });
        let g = Gray {
            width: d.width,
            height: d.height,
            data: d.display,
            bits: if eight { 8 } else { 16 },
        };
        let origin = Origin::Dicom {
            bits_stored: d.bits_stored,
            voi: d.voi,
            frames: d.frames,
        };
        return Ok((g, origin));
    }
    let derr = |message: String| ImageError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let img = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| derr(e.to_string()))?
        .decode()
        .map_err(|e| derr(e.to_string()))?;
    let mut g = to_gray(img);
    let significant = if g.bits == 16 {
        png_significant_bits(bytes)
    } else {
        None
    };
    if let Some(s) = significant {
        honour_sbit(&mut g.data, s);
    }
    let origin = Origin::Raster {
        bits: g.bits,
        significant,
    };
    Ok((g, origin))
}

/// The grey (or first colour) channel's significant bits from a PNG's sBIT chunk, when the
/// file is a PNG that has one with fewer than 16.
fn png_significant_bits(bytes: &[u8]) -> Option<u8> {
    if !bytes.starts_with(b"\x89PNG") {
        return None;
    }
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .ok()?;
    let s = *reader.info().sbit.as_ref()?.first()?;
    (1..16).contains(&s).then_some(s)
}

/// Rescales 16-bit samples (as fractions of 65535) that carry only `s` significant bits.
/// The PNG specification has an encoder scale such samples to the full 16-bit range (sBIT then
/// only says how many bits are real), but many medical exporters store the raw values, e.g.
/// 12-bit data as 0..4095, which divided by 65535 look nearly black. The rule: when no sample
/// exceeds 2^s − 1 the values are raw and are divided by 2^s − 1; otherwise they were scaled
/// as the specification says and the top `s` bits are kept (v >> (16 − s)), then divided by
/// 2^s − 1. Either way a full-range s-bit image spans [0, 1].
fn honour_sbit(data: &mut [f32], s: u8) {
    let top = ((1u32 << s) - 1) as f32;
    let raw = |v: f32| (v * 65535.0).round() as u32;
    let max = data.iter().map(|&v| raw(v)).max().unwrap_or(0);
    if max as f32 <= top {
        data.iter_mut().for_each(|v| *v = raw(*v) as f32 / top);
    } else {
        data.iter_mut()
            .for_each(|v| *v = (raw(*v) >> (16 - s)) as f32 / top);
    }
}

/// Reads and decodes one file.
pub fn decode_file(path: &Path) -> Result<Gray, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_bytes(&bytes, path)
}

fn to_gray(img: DynamicImage) -> Gray {
    let (width, height) = (img.width(), img.height());
    let (data, bits): (Vec<f32>, u8) = match img {
        DynamicImage::ImageLuma8(b) => (
            b.into_raw().into_iter().map(|v| v as f32 / 255.0).collect(),
            8,
        ),
        DynamicImage::ImageLuma16(b) => (
            b.into_raw()
                .into_iter()
                .map(|v| v as f32 / 65535.0)
                .collect(),
            16,
        ),
        // Gray + alpha: the gray channel.
        DynamicImage::ImageLumaA8(b) => (
            b.into_raw()
                .chunks(2)
                .map(|p| p[0] as f32 / 255.0)
                .collect(),
            8,
        ),
        DynamicImage::ImageLumaA16(b) => (
            b.into_raw()
                .chunks(2)
                .map(|p| p[0] as f32 / 65535.0)
                .collect(),
            16,
        ),
        // Colour (NIH's RGBA files have R = G = B): Rec. 601 luma, which equals the channel
        // value when the channels are equal.
        DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_) => (
            img.to_luma16()
                .into_raw()
                .into_iter()
                .map(|v| v as f32 / 65535.0)
                .collect(),
            16,
        ),
        other => (
            other
                .to_luma8()
                .into_raw()
                .into_iter()
                .map(|v| v as f32 / 255.0)
                .collect(),
            8,
        ),
    };
    Gray {
        width,
        height,
        data,
        bits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_keeps_precision() {
        let vals: Vec<u16> = vec![0, 1, 2, 65535];
        let buf = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(2, 2, vals).unwrap();
        let mut png = Vec::new();
        DynamicImage::ImageLuma16(buf)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let g = decode_bytes(&png, Path::new("x.png")).unwrap();
        assert_eq!(g.bits, 16);
        // 1 and 2 differ at 16 bits but would collapse to the same 8-bit value.
        assert!(g.data[1] > 0.0 && g.data[2] > g.data[1]);
        assert_eq!(g.data[3], 1.0);
    }

    #[test]
    fn corrupt_bytes_name_the_file() {
        let e = decode_bytes(b"\x89PNG\r\n\x1a\nnot really", Path::new("bad.png")).unwrap_err();
        assert!(e.to_string().starts_with("bad.png: cannot decode"), "{e}");
    }
}
