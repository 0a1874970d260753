//! DICOM decoding against pydicom's display images in `../shared/fixtures/dicom/`
//! (`expected.safetensors`, tolerances from its README), the named errors for the bad files,
//! and 12-bit-in-16 PNGs with an sBIT chunk.

use std::path::{Path, PathBuf};

use muxmed::data::dicom::{decode, decode_with_modality, DicomError};
use muxmed::data::image::{decode_bytes, decode_file, ImageError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/dicom")
        .join(name)
}

/// `expected.safetensors`: key → [128, 128] float32 values, and its metadata.
fn expected() -> (
    std::collections::HashMap<String, Vec<f32>>,
    std::collections::HashMap<String, String>,
) {
    let bytes = std::fs::read(fixture("expected.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = std::collections::HashMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(view.shape(), &[128, 128], "{name}");
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, v);
    }
    (out, meta.metadata().clone().unwrap_or_default())
}

const LOSSLESS: [&str; 7] = [
    "cr_mono2_8bit_explicit",
    "dx_mono1_12bit_implicit",
    "dx_mono2_16bit_rescale_window",
    "dx_mono2_12bit_rle",
    "dx_mono2_12bit_j2k_lossless",
    "dx_deflated",
    "multiframe_2",
];

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn decode_fixture(stem: &str) -> muxmed::data::dicom::DicomImage {
    let p = fixture(&format!("{stem}.dcm"));
    decode_with_modality(&std::fs::read(&p).unwrap(), &p).unwrap_or_else(|e| panic!("{e}"))
}

/// The Modality LUT output of an image decoded with it.
fn raw(d: &muxmed::data::dicom::DicomImage) -> &[f32] {
    d.modality
        .as_deref()
        .expect("decoded with the modality values")
}

#[test]
fn lossless_fixtures_match_pydicom_display_and_modality_values() {
    let (exp, _) = expected();
    for stem in LOSSLESS {
        let d = decode_fixture(stem);
        assert_eq!((d.width, d.height), (128, 128), "{stem}");
        // README: the modality values are integers and must match exactly.
        assert_eq!(raw(&d), exp[&format!("raw.{stem}")], "{stem}: raw");
        // README: 1e-6 absolute on the display image.
        let diff = max_abs_diff(&d.display, &exp[stem]);
        assert!(diff <= 1e-6, "{stem}: display differs by {diff}");
    }
}

/// A file meta group without its (0002,0000) group length (optional in practice; pydicom
/// reads such files) decodes to pydicom's values, and its header is read, from memory and
/// from the file; a meta element that runs past the end is named.
#[test]
fn a_meta_group_without_its_length_element_is_read() {
    let (exp, _) = expected();
    let dir = tempfile::tempdir().unwrap();
    for stem in LOSSLESS {
        let bytes = std::fs::read(fixture(&format!("{stem}.dcm"))).unwrap();
        // The group length element: tag (0002,0000), VR UL, 2-byte length 4, the value.
        assert_eq!(&bytes[132..140], b"\x02\x00\x00\x00UL\x04\x00", "{stem}");
        let cut = [&bytes[..132], &bytes[144..]].concat();
        let p = dir.path().join(format!("{stem}.dcm"));
        std::fs::write(&p, &cut).unwrap();
        let d = decode_with_modality(&cut, &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(raw(&d), exp[&format!("raw.{stem}")], "{stem}: raw");
        assert!(max_abs_diff(&d.display, &exp[stem]) <= 1e-6, "{stem}");
        let whole = fixture(&format!("{stem}.dcm"));
        assert_eq!(
            muxmed::data::dicom::read_header(&p).unwrap(),
            muxmed::data::dicom::read_header(&whole).unwrap(),
            "{stem}"
        );
    }
    let bytes = std::fs::read(fixture("cr_mono2_8bit_explicit.dcm")).unwrap();
    let mut cut = [&bytes[..132], &bytes[144..]].concat();
    // The first meta element, File Meta Information Version (0002,0001) OB, given a 4-byte
    // length of 16 MiB: named, not read past the end.
    assert_eq!(&cut[132..138], b"\x02\x00\x01\x00OB");
    cut[140..144].copy_from_slice(&(16u32 << 20).to_le_bytes());
    cut.truncate(400);
    let e = decode_with_modality(&cut, Path::new("x.dcm"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("x.dcm: truncated or corrupt DICOM: file meta element (0002,"),
        "{e}"
    );
}

#[test]
fn jpeg_baseline_fixture_is_within_two_grey_levels() {
    let (exp, meta) = expected();
    let tol: f32 = meta["jpeg_baseline_tolerance"].parse().unwrap();
    assert!(
        (tol - 2.0 / 255.0).abs() < 1e-4,
        "README says 2/255, file says {tol}"
    );
    let stem = "cr_mono2_8bit_jpeg_baseline";
    let d = decode_fixture(stem);
    // Lossy: decoders differ by a grey level or two (README), hence the looser tolerance.
    let diff = max_abs_diff(&d.display, &exp[stem]);
    assert!(diff <= tol, "display differs by {diff}");
    let r = max_abs_diff(raw(&d), &exp[&format!("raw.{stem}")]);
    assert!(r <= 2.0, "raw differs by {r}");
}

#[test]
fn multiframe_reads_frame_zero_not_frame_one() {
    let (exp, _) = expected();
    let d = decode_fixture("multiframe_2");
    assert_eq!(d.frames, 2);
    // Frame 1 holds cr_mono2_8bit_explicit's pixels: frame 0 must differ from them.
    assert!(max_abs_diff(&d.display, &exp["cr_mono2_8bit_explicit"]) > 0.1);
    assert!(max_abs_diff(&d.display, &exp["multiframe_2"]) <= 1e-6);
}

#[test]
fn monochrome1_is_inverted_once() {
    let d = decode_fixture("dx_mono1_12bit_implicit");
    // Stored = 4095 - (v·16 + noise) and MONOCHROME1: the display must correlate positively
    // with the source PNG's grey values, i.e. bright where the stored values are low.
    let (lo, hi) = raw(&d)
        .iter()
        .zip(&d.display)
        .fold((0.0f32, 0.0f32), |(lo, hi), (m, x)| {
            if *m < 1000.0 {
                (lo.max(*x), hi)
            } else if *m > 3000.0 {
                (lo, hi.max(1.0 - *x))
            } else {
                (lo, hi)
            }
        });
    assert!(
        lo > 0.9 && hi > 0.9,
        "low stored values must show bright: {lo} {hi}"
    );
}

#[test]
fn bad_files_give_their_named_errors() {
    let read = |stem: &str| {
        let p = fixture(&format!("{stem}.dcm"));
        decode(&std::fs::read(&p).unwrap(), &p).unwrap_err()
    };
    assert!(matches!(read("not_dicom"), DicomError::NotDicom { .. }));
    assert!(matches!(
        read("no_pixel_data"),
        DicomError::NoPixelData { .. }
    ));
    let t = read("truncated");
    assert!(matches!(t, DicomError::Corrupt { .. }), "{t}");
    let ls = read("dx_mono2_12bit_jpegls_lossless");
    match &ls {
        DicomError::UnsupportedTransferSyntax { uid, name, .. } => {
            assert_eq!(uid, "1.2.840.10008.1.2.4.80");
            assert!(name.contains("JPEG-LS"), "{name}");
        }
        other => panic!("expected an unsupported transfer syntax, got {other}"),
    }
    // Every message names the file.
    for (stem, e) in [("truncated", t), ("dx_mono2_12bit_jpegls_lossless", ls)] {
        assert!(e.to_string().contains(&format!("{stem}.dcm")), "{e}");
    }
    // Through the generic image reader, by extension and by marker.
    let e = decode_file(&fixture("not_dicom.dcm")).unwrap_err();
    assert!(
        matches!(e, ImageError::Dicom(DicomError::NotDicom { .. })),
        "{e}"
    );
}

#[test]
fn a_colour_dicom_is_refused_as_colour() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    // The 8-bit fixture turned into RGB: three samples per pixel, interleaved.
    let src = fixture("cr_mono2_8bit_explicit.dcm");
    let mut obj = dicom_object::open_file(&src).unwrap();
    let grey: Vec<u8> = obj
        .element(tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .to_vec();
    let rgb: Vec<u8> = grey.iter().flat_map(|&v| [v, v, v]).collect();
    obj.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(3u16),
    ));
    obj.put(DataElement::new(
        tags::PLANAR_CONFIGURATION,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from("RGB"),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(rgb),
    ));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("colour.dcm");
    obj.write_to_file(&p).unwrap();
    let e = decode(&std::fs::read(&p).unwrap(), &p).unwrap_err();
    assert!(matches!(e, DicomError::Colour { samples: 3, .. }), "{e}");
    assert!(
        e.to_string().contains("colour.dcm") && e.to_string().contains("RGB"),
        "{e}"
    );
}

/// A 16-bit grey PNG of `values`, with an sBIT chunk when `sbit` is given.
pub fn png16(values: &[u16], w: u32, h: u32, sbit: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Sixteen);
    let mut wr = enc.write_header().unwrap();
    if let Some(s) = sbit {
        wr.write_chunk(png::chunk::sBIT, &[s]).unwrap();
    }
    let be: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    wr.write_image_data(&be).unwrap();
    wr.finish().unwrap();
    out
}

#[test]
fn twelve_bit_png_with_sbit_spans_the_full_range() {
    let values: Vec<u16> = vec![0, 1, 2048, 4095];
    let p = Path::new("twelve.png");
    // Raw 12-bit values with sBIT = 12: 4095 is white, not 4095/65535 (nearly black).
    let g = decode_bytes(&png16(&values, 2, 2, Some(12)), p).unwrap();
    assert_eq!(g.bits, 16);
    let want: Vec<f32> = values.iter().map(|&v| v as f32 / 4095.0).collect();
    assert!(max_abs_diff(&g.data, &want) <= 1e-7, "{:?}", g.data);
    // The same image scaled as the PNG specification asks (left shift with bit replication)
    // decodes to the same values.
    let scaled: Vec<u16> = values.iter().map(|&v| (v << 4) | (v >> 8)).collect();
    let s = decode_bytes(&png16(&scaled, 2, 2, Some(12)), p).unwrap();
    assert!(max_abs_diff(&s.data, &want) <= 1e-7, "{:?}", s.data);
    // Without sBIT the 16-bit values are taken as they are.
    let n = decode_bytes(&png16(&values, 2, 2, None), p).unwrap();
    assert!((n.data[3] - 4095.0 / 65535.0).abs() <= 1e-7);
}

/// The `image` tensor of a `muxmed decode` output.
fn decoded_image(p: &Path) -> Vec<f32> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("image").unwrap();
    assert_eq!(v.shape(), &[128, 128]);
    v.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn decode_command_writes_every_good_file_and_names_each_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seen");
    let o = crate::muxmed()
        .arg("decode")
        .arg(fixture(""))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let (exp, _) = expected();
    for stem in LOSSLESS {
        let got = decoded_image(&out.join(format!("{stem}.safetensors")));
        assert!(max_abs_diff(&got, &exp[stem]) <= 1e-6, "{stem}");
        assert!(out.join(format!("{stem}.png")).is_file(), "{stem}");
    }
    assert!(stdout.contains("frame 0 of 2"), "{stdout}");
    for bad in [
        "not_dicom.dcm: not a DICOM file",
        "no_pixel_data.dcm: DICOM object without pixel data",
        "truncated.dcm: truncated or corrupt DICOM",
        "dx_mono2_12bit_jpegls_lossless.dcm: unsupported transfer syntax 1.2.840.10008.1.2.4.80",
    ] {
        assert_eq!(
            stderr.lines().filter(|l| l.contains(bad)).count(),
            1,
            "{bad}\n{stderr}"
        );
    }
    assert!(stdout.contains("decoded 8 of 12 inputs"), "{stdout}");
    // Only bad inputs: the exit status says so, and nothing is written for them.
    let none = dir.path().join("none");
    let o = crate::muxmed()
        .arg("decode")
        .arg(fixture("truncated.dcm"))
        .arg(fixture("not_dicom.dcm"))
        .args(["--output".as_ref(), none.as_os_str()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(std::fs::read_dir(&none).unwrap().count(), 0);
}

#[test]
fn decode_never_writes_over_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t");
    std::fs::create_dir(&t).unwrap();
    // A DICOM named .png (its output would be scan.png) and a PNG whose output name is that
    // of another input (other.dcm's output other.png).
    let scan = t.join("scan.png");
    std::fs::copy(fixture("cr_mono2_8bit_explicit.dcm"), &scan).unwrap();
    let other = t.join("other.dcm");
    std::fs::copy(fixture("cr_mono2_8bit_explicit.dcm"), &other).unwrap();
    let other_png = t.join("other.png");
    let img = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 30 + y) as u8]));
    img.save(&other_png).unwrap();
    let before: Vec<Vec<u8>> = [&scan, &other, &other_png]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let o = crate::muxmed()
        .arg("decode")
        .args([&scan, &other, &other_png])
        .arg("--output")
        .arg(&t)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    for (p, b) in [&scan, &other, &other_png].iter().zip(&before) {
        assert_eq!(
            &std::fs::read(p).unwrap(),
            b,
            "{} was overwritten",
            p.display()
        );
    }
    assert!(stderr.contains("would overwrite an input"), "{stderr}");
    assert!(stderr.contains("scan.png"), "{stderr}");
    assert!(!o.status.success(), "nothing could be decoded: {stderr}");
}

#[test]
fn a_voi_lut_sequence_comes_before_the_window() {
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    // The 8-bit fixture with a 12-bit LUT mapping v to 4095 - 16 v, and a window the LUT
    // must win over (PS3.3 C.11.2: one VOI transform; pydicom prefers the sequence).
    let src = fixture("cr_mono2_8bit_explicit.dcm");
    let mut obj = dicom_object::open_file(&src).unwrap();
    let table: Vec<u16> = (0..256u16).map(|v| 4095 - 16 * v).collect();
    let item = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::LUT_DESCRIPTOR,
            VR::US,
            PrimitiveValue::U16([256, 0, 12].as_slice().into()),
        ),
        DataElement::new(
            tags::LUT_DATA,
            VR::OW,
            PrimitiveValue::U16(table.as_slice().into()),
        ),
    ]);
    obj.put(DataElement::new(
        tags::VOILUT_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![item]),
    ));
    obj.put(DataElement::new(
        tags::WINDOW_CENTER,
        VR::DS,
        PrimitiveValue::from("128"),
    ));
    obj.put(DataElement::new(
        tags::WINDOW_WIDTH,
        VR::DS,
        PrimitiveValue::from("10"),
    ));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lut.dcm");
    obj.write_to_file(&p).unwrap();
    let d = decode_with_modality(&std::fs::read(&p).unwrap(), &p).unwrap();
    assert!(matches!(
        d.voi,
        muxmed::data::dicom::Voi::LutSequence {
            entries: 256,
            bits: 12
        }
    ));
    let want: Vec<f32> = raw(&d)
        .iter()
        .map(|&v| (4095.0 - 16.0 * v as f64) as f32 / 4095.0)
        .collect();
    // One f64 → f32 rounding apart at most.
    assert!(max_abs_diff(&d.display, &want) <= 1e-7);
    // Not a flat image: the LUT is exercised over a range of inputs.
    let (lo, hi) = raw(&d)
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(hi - lo > 100.0, "{lo}..{hi}");
}
