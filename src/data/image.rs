//! Decoding chest X-rays into one gray channel, keeping 16-bit precision: PNG (8/16-bit gray,
//! gray+alpha, RGB, RGBA: about 1% of NIH images are RGBA with equal channels) and JPEG.
//! Every failure names the file.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot decode image (truncated or corrupt?): {message}", path.display())]
    Decode { path: PathBuf, message: String },
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

/// Decodes bytes already read from `path` (the path is only used in messages).
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<Gray, ImageError> {
    let derr = |message: String| ImageError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let img = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| derr(e.to_string()))?
        .decode()
        .map_err(|e| derr(e.to_string()))?;
    Ok(to_gray(img))
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
