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
    #[error(
        "{}: the header declares {width}×{height} pixels, more than the decoder's memory limit of {limit_mib} MiB allows (a chest X-ray is at most about 4,300 pixels a side)",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit_mib: u64,
    },
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
    /// `dim_max`: the largest sample of a 16-bit file without sBIT when it is at most
    /// [`TWELVE_BIT_MAX`], a sign of 12-bit (or fewer) data stored raw, which decodes nearly
    /// black.
    Raster {
        bits: u8,
        significant: Option<u8>,
        dim_max: Option<u16>,
    },
    /// A DICOM display image: bits stored, the VOI transform, frames in the object.
    Dicom {
        bits_stored: u16,
        voi: dicom::Voi,
        frames: u32,
    },
}

/// The largest value of 12-bit data: a 16-bit PNG without sBIT whose samples stay at or
/// below it is most likely such data stored raw.
pub const TWELVE_BIT_MAX: u16 = 4095;

impl Origin {
    /// What the user should know about how this file decoded, if anything.
    pub fn warning(&self) -> Option<String> {
        match self {
            Origin::Raster {
                dim_max: Some(m), ..
            } => Some(format!(
                "16-bit PNG without an sBIT chunk whose largest sample is {m} (at most {TWELVE_BIT_MAX}): \
                 likely 12-bit data stored raw, which decodes nearly black (max {:.3}); \
                 an sBIT chunk of 12 makes muxmed scale it to the full range",
                f32::from(*m) / 65535.0
            )),
            _ => None,
        }
    }
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
    let img = if is_jpeg(bytes) {
        decode_jpeg(bytes).map_err(derr)?
    } else {
        decode_raster(bytes, path)?
    };
    let mut g = to_gray(img);
    let significant = if g.bits == 16 {
        png_significant_bits(bytes)
    } else {
        None
    };
    if let Some(s) = significant {
        honour_sbit(&mut g.data, s);
    }
    let dim_max = if g.bits == 16 && significant.is_none() {
        let max = g.data.iter().fold(0.0f32, |m, &v| m.max(v));
        let raw = (max * 65535.0).round() as u16;
        (raw <= TWELVE_BIT_MAX).then_some(raw)
    } else {
        None
    };
    let origin = Origin::Raster {
        bits: g.bits,
        significant,
        dim_max,
    };
    Ok((g, origin))
}

/// Decodes a PNG (or another format the image crate knows) under its default memory limit; a
/// header declaring more pixels than the limit allows is refused with its size.
fn decode_raster(bytes: &[u8], path: &Path) -> Result<DynamicImage, ImageError> {
    let derr = |e: image::ImageError| ImageError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let reader = || {
        ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| derr(e.into()))
    };
    match reader()?.decode() {
        Ok(img) => Ok(img),
        Err(image::ImageError::Limits(_)) => {
            let (width, height) = reader()?.into_dimensions().map_err(derr)?;
            let limit = image::Limits::default().max_alloc.unwrap_or(0);
            Err(ImageError::TooLarge {
                path: path.to_path_buf(),
                width,
                height,
                limit_mib: limit >> 20,
            })
        }
        Err(e) => Err(derr(e)),
    }
}

/// Whether the bytes start with JPEG's start-of-image marker.
fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// The largest side muxmed decodes: a header declaring more is refused before any pixel is
/// allocated (a chest X-ray is at most about 4,300 pixels a side).
pub const MAX_SIDE: usize = 30_000;

/// Decodes a JPEG with every decoder warning an error (zune-jpeg's strict mode): a truncated
/// file, a marker inside the entropy-coded data or extra bytes between headers mean the
/// pixels are not what the file was meant to hold. The EXIF orientation is applied, so the
/// image is the way up a viewer shows it.
fn decode_jpeg(bytes: &[u8]) -> Result<DynamicImage, String> {
    use image::ImageDecoder;
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    let header = |strict: bool| {
        zune_core::options::DecoderOptions::default()
            .set_strict_mode(strict)
            .set_max_width(MAX_SIDE)
            .set_max_height(MAX_SIDE)
    };
    let mut probe = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), header(true));
    probe.decode_headers().map_err(|e| format!("JPEG: {e}"))?;
    let gray = probe.input_colorspace() == Some(ColorSpace::Luma);
    let out = if gray {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(
        ZCursor::new(bytes),
        header(true).jpeg_set_out_colorspace(out),
    );
    let pixels = dec.decode().map_err(|e| format!("JPEG: {e}"))?;
    if !ends_its_scans(bytes) {
        return Err("JPEG: the data ends before its end-of-image marker (truncated file?)".into());
    }
    let info = dec
        .info()
        .ok_or_else(|| "JPEG: no image header".to_string())?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let bad_len = format!("JPEG: {} bytes decoded for {w}x{h}", pixels.len());
    let mut img = if gray {
        image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
    } else {
        image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    }
    .ok_or(bad_len)?;
    let mut reader = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("JPEG: {e}"))?;
    let orientation = reader.orientation().map_err(|e| format!("JPEG: {e}"))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Whether an end-of-image marker (FF D9) follows the first start-of-scan. Segments before
/// the scan are skipped by their lengths (an EXIF thumbnail's own markers are inside them);
/// in scan data a 0xFF byte is stuffed as FF 00, so FF D9 there is the marker itself.
fn ends_its_scans(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if marker == 0xDA {
            return bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]);
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        i += 2 + len;
    }
    false
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

    fn jpeg_of(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        out
    }

    /// A gray gradient with structure in every 8x8 block, so each block codes bits.
    fn textured(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageLuma8(image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([((x * 7 + y * 13) % 251) as u8])
        }))
    }

    #[test]
    fn a_truncated_jpeg_is_an_error_naming_the_file() {
        let whole = jpeg_of(&textured(64, 64));
        let half = &whole[..whole.len() / 2];
        let e = decode_bytes(half, Path::new("cut.jpg")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("cut.jpg: cannot decode"), "{msg}");
        // The end-of-image marker alone missing is an early end of data too.
        let e = decode_bytes(&whole[..whole.len() - 2], Path::new("noeoi.jpg"));
        assert!(e.is_err(), "a JPEG without its end marker was accepted");
    }

    #[test]
    fn whole_jpegs_decode_as_the_image_crate_decodes_them() {
        let gray = textured(40, 24);
        let rgb = DynamicImage::ImageRgb8(image::RgbImage::from_fn(40, 24, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 10) as u8, ((x + y) * 3) as u8])
        }));
        for img in [gray, rgb] {
            let bytes = jpeg_of(&img);
            let ours = decode_bytes(&bytes, Path::new("a.jpg")).unwrap();
            let theirs = to_gray(image::load_from_memory(&bytes).unwrap());
            assert_eq!(ours, theirs);
        }
    }

    /// Inserts an EXIF APP1 segment with one IFD entry, Orientation (0x0112) = `o`, after SOI.
    fn with_exif_orientation(jpeg: &[u8], o: u16) -> Vec<u8> {
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes());
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&o.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 32 wide, 16 high: the left half black, the right half white.
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(32, 16, |x, _| {
            image::Luma([if x < 16 { 0 } else { 255 }])
        }));
        let bytes = with_exif_orientation(&jpeg_of(&img), 6);
        let g = decode_bytes(&bytes, Path::new("rot.jpg")).unwrap();
        // Orientation 6: the stored image is shown turned 90° clockwise, so it stands 16 wide
        // and 32 high, and the stored left column (black) becomes the top row.
        assert_eq!((g.width, g.height), (16, 32));
        let at = |x: u32, y: u32| g.data[(y * g.width + x) as usize];
        assert!(
            at(8, 4) < 0.1 && at(8, 28) > 0.9,
            "{} {}",
            at(8, 4),
            at(8, 28)
        );
        // Orientation 1 leaves it as stored.
        let g = decode_bytes(
            &with_exif_orientation(&jpeg_of(&img), 1),
            Path::new("a.jpg"),
        );
        assert_eq!((g.as_ref().unwrap().width, g.unwrap().height), (32, 16));
    }

    #[test]
    fn corrupt_bytes_name_the_file() {
        let e = decode_bytes(b"\x89PNG\r\n\x1a\nnot really", Path::new("bad.png")).unwrap_err();
        assert!(e.to_string().starts_with("bad.png: cannot decode"), "{e}");
    }

    /// A PNG chunk: length, type, data, CRC-32 over type and data.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&crc.sum().to_be_bytes());
        c
    }

    #[test]
    fn a_png_declaring_too_many_pixels_is_refused_with_its_size_and_the_limit() {
        // A 30000 × 30000 8-bit grey header (900 MB of pixels against the decoder's 512 MiB)
        // with one tiny data chunk: refused from the header, before any pixel is allocated.
        let mut ihdr = 30_000u32.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&30_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &ihdr));
        png.extend(chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(chunk(b"IEND", &[]));
        let e = decode_bytes(&png, Path::new("bomb.png"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bomb.png: the header declares 30000×30000 pixels")
                && e.contains("memory limit of 512 MiB"),
            "{e}"
        );
        assert!(!e.contains("truncated or corrupt"), "{e}");
    }
}
