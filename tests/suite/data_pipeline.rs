//! Decoding, the prepared cache and the loader on the real NIH images in
//! `../shared/data/nih/` (grayscale, RGBA, 512x512) plus generated 16-bit and broken files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use muxmed::config::augment::CacheDtype;
use muxmed::config::BalanceWeighting;
use muxmed::config::{AugmentConfig, DataConfig};
use muxmed::data::cache::{prepare_in_chunks, Cache};
use muxmed::data::dataset::load_split;
use muxmed::data::image::decode_file;
use muxmed::data::loader::{start_epoch, Balance, LoaderOptions, Source};
use muxmed::data::manifest::build;

fn nih(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/nih")
        .join(p)
}

const RGBA: [&str; 6] = [
    "00000100_000.png",
    "00001369_000.png",
    "00002578_000.png",
    "00004934_000.png",
    "00005224_000.png",
    "00005813_000.png",
];

#[test]
fn real_gray_rgba_and_downsampled_images_decode_to_one_channel() {
    for name in ["00000211_000.png", RGBA[0], RGBA[3]] {
        let g = decode_file(&nih("images").join(name)).unwrap();
        assert_eq!((g.width, g.height, g.bits), (1024, 1024, 8), "{name}");
        assert!(
            g.data.iter().any(|v| *v > 0.5) && g.data.iter().any(|v| *v < 0.2),
            "{name}"
        );
    }
    // The RGBA files have R = G = B, so luma equals the first channel.
    let raw = image::open(nih("images").join(RGBA[0])).unwrap().to_rgba8();
    let g = decode_file(&nih("images").join(RGBA[0])).unwrap();
    for (i, p) in raw.pixels().enumerate().step_by(997) {
        assert_eq!(p.0[0], p.0[1]);
        assert!((g.data[i] - p.0[0] as f32 / 255.0).abs() < 1e-6);
    }
    for name in ["00000001_000.png", "00027426_000.png"] {
        let g = decode_file(&nih("downsampled").join(name)).unwrap();
        assert_eq!((g.width, g.height), (512, 512));
    }
}

#[test]
fn truncated_and_corrupt_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(nih("images/00000211_000.png")).unwrap();
    let t = dir.path().join("truncated.png");
    std::fs::write(&t, &bytes[..bytes.len() / 3]).unwrap();
    let e = decode_file(&t).unwrap_err().to_string();
    assert!(
        e.contains("truncated.png") && e.contains("cannot decode"),
        "{e}"
    );
    let c = dir.path().join("corrupt.png");
    let mut bad = bytes.clone();
    for b in bad.iter_mut().skip(2000).take(5000) {
        *b ^= 0x5a;
    }
    std::fs::write(&c, &bad).unwrap();
    let e = decode_file(&c).unwrap_err().to_string();
    assert!(e.contains("corrupt.png"), "{e}");
}

/// A dataset folder with the first `n` real images (under images_001/images) and the
/// matching metadata rows.
fn real_subset(dir: &Path, n: usize, edit: impl Fn(&str, &Path)) -> DataConfig {
    let mut names: Vec<String> = std::fs::read_dir(nih("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.truncate(n);
    let imgs = dir.join("images_001/images");
    std::fs::create_dir_all(&imgs).unwrap();
    for name in &names {
        let dst = imgs.join(name);
        std::fs::copy(nih("images").join(name), &dst).unwrap();
        edit(name, &dst);
    }
    let meta = muxmed::data::nih::read_text(&nih("Data_Entry_2017_v2020.csv.gz")).unwrap();
    let mut lines = meta.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for l in lines {
        if names.iter().any(|n| l.starts_with(n.as_str())) {
            out += &format!("{l}\n");
        }
    }
    std::fs::write(dir.join("Data_Entry_2017_v2020.csv"), out).unwrap();
    // Patient-disjoint lists: patients with an even id go to test.
    let (mut tv, mut test) = (Vec::new(), Vec::new());
    for nm in &names {
        let p: u32 = nm[..8].parse().unwrap();
        if p.is_multiple_of(2) {
            test.push(nm.clone())
        } else {
            tv.push(nm.clone())
        }
    }
    std::fs::write(dir.join("train_val_list.txt"), tv.join("\n")).unwrap();
    std::fs::write(dir.join("test_list.txt"), test.join("\n")).unwrap();
    DataConfig {
        root: dir.to_path_buf(),
        val_fraction: 0.2,
        ..Default::default()
    }
}

fn small_augment() -> AugmentConfig {
    use muxmed::config::augment::Stage;
    AugmentConfig {
        working_size: 64,
        train: vec![
            Stage::RandomResizedCrop {
                size: 32,
                scale: [0.7, 1.0],
                ratio: [0.9, 1.1],
            },
            Stage::RandomAffine {
                degrees: 5.0,
                translate: 0.05,
                scale: [0.95, 1.05],
            },
            Stage::ToRgb,
            Stage::NormalizeImagenet,
        ],
        ..Default::default()
    }
}

#[test]
fn prepare_resumes_after_an_interruption_and_matches_a_clean_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 24, |_, _| {});
    let a = small_augment();
    let clean_dir = dir.path().join("clean");
    build(&d, true).unwrap().write(&clean_dir).unwrap();
    let clean = prepare_in_chunks(&clean_dir, &a, 5, &|_, _| {}).unwrap();
    assert_eq!(
        (clean.images, clean.resumed_from, clean.reused),
        (24, 0, false)
    );

    let m = dir.path().join("m");
    build(&d, true).unwrap().write(&m).unwrap();
    // Interrupt after two chunks (the progress callback panics, as a crash would).
    let r = std::panic::catch_unwind(|| {
        prepare_in_chunks(&m, &a, 5, &|done, _| {
            if done >= 10 {
                panic!("interrupted");
            }
        })
    });
    assert!(r.is_err());
    assert!(
        Cache::open(&m, &a).is_err(),
        "a half-written cache must not be used"
    );
    let resumed = prepare_in_chunks(&m, &a, 5, &|_, _| {}).unwrap();
    assert_eq!(resumed.resumed_from, 10);
    let c1 = Cache::open(&clean_dir, &a).unwrap();
    let c2 = Cache::open(&m, &a).unwrap();
    assert_eq!(c1.index.entries, c2.index.entries);
    for i in 0..24 {
        assert_eq!(c1.image(i), c2.image(i));
    }
    // Reused the second time; refused when the working size changes.
    assert!(prepare_in_chunks(&m, &a, 5, &|_, _| {}).unwrap().reused);
    let other = AugmentConfig {
        working_size: 48,
        ..a.clone()
    };
    assert!(Cache::open(&m, &other).is_err());
    // The cached pixels are the decoded image, resized.
    let e = &c1.index.entries[3];
    let g = decode_file(Path::new(&e.source)).unwrap();
    let want = muxmed::data::cache::to_working(&g, 64);
    let got = c1.image(3);
    let max = want
        .iter()
        .zip(&got.data)
        .map(|(w, g)| (*w as f32 / 65535.0 - g).abs())
        .fold(0.0f32, f32::max);
    assert!(max <= 0.5 / 255.0 + 1e-6, "{max}");
    assert_eq!(e.sha256.len(), 64);
}

#[test]
fn a_corrupt_image_stops_prepare_or_is_skipped_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 6, |name, p| {
        if name == "00000100_000.png" {
            let b = std::fs::read(p).unwrap();
            std::fs::write(p, &b[..b.len() / 4]).unwrap();
        }
    });
    let m = dir.path().join("m");
    build(&d, true).unwrap().write(&m).unwrap();
    let a = small_augment();
    let e = prepare_in_chunks(&m, &a, 4, &|_, _| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("00000100_000.png"), "{e}");
    let a = AugmentConfig {
        skip_bad_images: true,
        ..a
    };
    let r = prepare_in_chunks(&m, &a, 4, &|_, _| {}).unwrap();
    assert_eq!(r.skipped.len(), 1);
    assert!(r.skipped[0].starts_with("00000100_000.png"));
    let c = Cache::open(&m, &a).unwrap();
    assert!(c.slot("00000100_000.png").is_none());
}

/// A manifest rebuilt over the same files with another seed keeps its cache (the pixels do
/// not depend on the split); one over other files is refused, naming the pipeline to prepare.
#[test]
fn a_cache_outlives_a_reshuffled_manifest_but_not_other_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 24, |_, _| {});
    let m = dir.path().join("m");
    build(&d, true).unwrap().write(&m).unwrap();
    let a = small_augment();
    prepare_in_chunks(&m, &a, 8, &|_, _| {}).unwrap();
    let val_before = load_split(&m, muxmed::labels::Split::Val)
        .unwrap()
        .image_ids;
    let reseeded = DataConfig {
        protocol: muxmed::config::SplitProtocol::RandomPatient,
        seed: 7,
        ..d.clone()
    };
    build(&reseeded, true).unwrap().write(&m).unwrap();
    let val_after = load_split(&m, muxmed::labels::Split::Val)
        .unwrap()
        .image_ids;
    assert_ne!(
        val_before, val_after,
        "the rebuild must move images between splits"
    );
    assert!(Cache::open(&m, &a).is_ok());
    assert!(prepare_in_chunks(&m, &a, 8, &|_, _| {}).unwrap().reused);
    // One image fewer: the cache no longer matches.
    let first = load_split(&m, muxmed::labels::Split::Train).unwrap().paths[0]
        .clone()
        .unwrap();
    std::fs::remove_file(&first).unwrap();
    let fewer = DataConfig {
        allow_missing_images: true,
        ..reseeded
    };
    build(&fewer, true).unwrap().write(&m).unwrap();
    let e = Cache::open(&m, &a)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("a manifest with other images") && e.contains("`muxmed prepare --pipeline m`"),
        "{e}"
    );
}

/// The first image of a u16 cache prepared from 4 real X-rays, each rewritten as a 16-bit grey
/// PNG with `sbit`, its samples `sample(grey, i)` of the 8-bit grey value at pixel `i`.
fn first_of_u16_cache(
    sample: fn(u16, usize) -> u16,
    sbit: Option<u8>,
) -> muxmed::data::augment::Img {
    u16_cache(sample, sbit).0
}

/// [`first_of_u16_cache`], with what `prepare` reported.
fn u16_cache(
    sample: fn(u16, usize) -> u16,
    sbit: Option<u8>,
) -> (
    muxmed::data::augment::Img,
    muxmed::data::cache::PrepareReport,
) {
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 4, |_, p| {
        let g = image::open(p).unwrap().to_luma8();
        let (w, h) = g.dimensions();
        let v: Vec<u16> = g
            .pixels()
            .enumerate()
            .map(|(i, px)| sample(px.0[0] as u16, i))
            .collect();
        std::fs::write(p, crate::dicom::png16(&v, w, h, sbit)).unwrap();
    });
    let m = dir.path().join("m");
    build(&d, true).unwrap().write(&m).unwrap();
    let a = AugmentConfig {
        cache_dtype: CacheDtype::U16,
        working_size: 1024,
        ..small_augment()
    };
    let r = prepare_in_chunks(&m, &a, 4, &|_, _| {}).unwrap();
    (Cache::open(&m, &a).unwrap().image(0), r)
}

#[test]
fn raw_twelve_bit_pngs_without_sbit_are_warned_about_once_each() {
    // 12-bit data stored raw (0..4095) with no sBIT chunk: decodes nearly black, so each of
    // the 4 files gets one warning naming sBIT; with sBIT, or with full-range 16-bit data
    // (grey * 257 reaches 65535), none.
    let (img, r) = u16_cache(|v, i| v * 16 + (i % 16) as u16, None);
    let max = img.data.iter().fold(0.0f32, |a, v| a.max(*v));
    assert!(max <= 4095.0 / 65535.0 + 1e-6, "{max}");
    assert_eq!(r.warnings.len(), 4, "{:?}", r.warnings);
    for w in &r.warnings {
        assert!(
            w.contains(".png: ") && w.contains("sBIT") && w.contains("12-bit"),
            "{w}"
        );
    }
    assert!(u16_cache(|v, i| v * 16 + (i % 16) as u16, Some(12))
        .1
        .warnings
        .is_empty());
    assert!(u16_cache(|v, _| v * 257, None).1.warnings.is_empty());
    // `decode` says it too, once, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("raw12.png");
    let v: Vec<u16> = (0..64 * 64).map(|i| (i % 4000) as u16).collect();
    std::fs::write(&f, crate::dicom::png16(&v, 64, 64, None)).unwrap();
    let o = crate::muxmed()
        .arg("decode")
        .arg(&f)
        .arg("--output")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(
        warned[0].contains("raw12.png") && warned[0].contains("largest sample is 3999"),
        "{stderr}"
    );
}

/// Pixels whose value lies between two 8-bit steps.
fn off_grid(img: &muxmed::data::augment::Img) -> usize {
    img.data
        .iter()
        .filter(|v| ((**v * 255.0) - (**v * 255.0).round()).abs() > 1e-3)
        .count()
}

#[test]
fn sixteen_bit_sources_keep_precision_in_a_u16_cache() {
    // 16-bit with a fine ramp in the low bits.
    let img = first_of_u16_cache(|v, i| v * 256 + (i % 256) as u16, None);
    // Values between 8-bit steps survive.
    let n = off_grid(&img);
    assert!(n > 1000, "{n}");
}

#[test]
fn twelve_bit_pngs_with_sbit_fill_a_u16_cache_at_full_range() {
    // 12-bit data stored raw in 16-bit PNGs (0..4095), as medical exporters write it, with
    // sBIT = 12 and a fine ramp in the low 4 bits.
    let img = first_of_u16_cache(|v, i| v * 16 + (i % 16) as u16, Some(12));
    // Read as 16-bit fractions the brightest pixel would be at most 4095/65535 = 0.0625;
    // honouring sBIT it is the source's brightest grey (0.88 for this X-ray).
    let max = img.data.iter().fold(0.0f32, |a, v| a.max(*v));
    assert!(max > 0.5, "{max}");
    let n = off_grid(&img);
    assert!(n > 1000, "{n}");
}

#[test]
fn same_seed_gives_identical_batches_with_1_and_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 60, |_, _| {});
    let m = dir.path().join("m");
    build(&d, true).unwrap().write(&m).unwrap();
    let a = small_augment();
    prepare_in_chunks(&m, &a, 16, &|_, _| {}).unwrap();
    let cache = Arc::new(Cache::open(&m, &a).unwrap());
    let split = Arc::new(load_split(&m, muxmed::labels::Split::Train).unwrap());
    let slots: Vec<usize> = split
        .image_ids
        .iter()
        .map(|id| cache.slot(id).unwrap())
        .collect();
    let run = |workers: usize, epoch: u64| -> Vec<muxmed::data::loader::Batch> {
        let o = LoaderOptions {
            batch_size: 4,
            shuffle: true,
            class_balanced: None,
            source_weights: Vec::new(),
            drop_last: false,
            seed: 9,
            epoch,
            workers,
            prefetch: 2,
        };
        start_epoch(
            split.clone(),
            Source::Cache(cache.clone(), slots.clone()),
            Arc::new(a.train.clone()),
            o,
        )
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
    };
    let one = run(1, 0);
    let four = run(4, 0);
    assert_eq!(one, four);
    assert_eq!(one[0].shape, [4, 3, 32, 32]);
    let total: usize = one.iter().map(|b| b.indices.len()).sum();
    assert_eq!(total, split.len());
    assert!(split.len() > 8, "{}", split.len());
    // Another epoch: another order and other augmentations.
    assert_ne!(run(1, 1), one);
}

#[test]
fn jpeg_decodes_like_its_png_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = image::open(nih("images/00000211_000.png"))
        .unwrap()
        .to_luma8();
    let jpg = dir.path().join("x.jpg");
    src.save(&jpg).unwrap();
    let g = decode_file(&jpg).unwrap();
    assert_eq!((g.width, g.height, g.bits), (1024, 1024, 8));
    let mean_abs: f32 = g
        .data
        .iter()
        .zip(src.pixels())
        .map(|(a, p)| (a - p.0[0] as f32 / 255.0).abs())
        .sum::<f32>()
        / g.data.len() as f32;
    assert!(mean_abs < 0.02, "{mean_abs}");
}

/// `data.sources` weights: 30 images of `a` with weight 3 and 70 of `b` with weight 1 give
/// `a` a share of 90 / (90 + 70) = 0.5625 of every draw, alone and, with class balance,
/// multiplied into its probabilities (by hand: with one label positive on the first 10 of
/// `a` under 1/frequency weighting, each image's balanced weight is 1/10 or 1/90).
#[test]
fn source_weights_scale_each_datasets_share_of_draws() {
    use muxmed::data::dataset::SplitData;
    use muxmed::data::loader::weighted_draws;
    let n = 100;
    let split = SplitData {
        label_names: vec!["L".into()],
        image_ids: (0..n).map(|i| i.to_string()).collect(),
        paths: vec![None; n],
        patients: (0..n).map(|i| i.to_string()).collect(),
        datasets: (0..n)
            .map(|i| if i < 30 { "a" } else { "b" }.to_string())
            .collect(),
        labels: (0..n)
            .map(|i| vec![if i < 10 { 1.0 } else { 0.0 }])
            .collect(),
    };
    let mut o = LoaderOptions {
        batch_size: 10,
        shuffle: true,
        class_balanced: None,
        source_weights: Vec::new(),
        drop_last: false,
        seed: 1,
        epoch: 0,
        workers: 1,
        prefetch: 1,
    };
    assert!(weighted_draws(&split, &o).is_none(), "a plain permutation");
    o.source_weights = vec![("a".into(), 3.0), ("b".into(), 1.0)];
    let p = weighted_draws(&split, &o).unwrap();
    let share_a: f64 = p[..30].iter().sum();
    assert!((share_a - 90.0 / 160.0).abs() < 1e-12, "{share_a}");
    assert!((p[0] - 3.0 / 160.0).abs() < 1e-15 && (p[99] - 1.0 / 160.0).abs() < 1e-15);
    o.class_balanced = Some(Balance {
        weighting: BalanceWeighting::Inverse,
        max_repeat: None,
    });
    // Balanced weights 1/10 (10 images) and 1/90 (90), times 3 for a's 30 and 1 for b's 70.
    let w = |i: usize| (if i < 10 { 0.1 } else { 1.0 / 90.0 }) * if i < 30 { 3.0 } else { 1.0 };
    let total: f64 = (0..n).map(w).sum();
    let p = weighted_draws(&split, &o).unwrap();
    for i in [0, 15, 50] {
        assert!(
            (p[i] - w(i) / total).abs() < 1e-12,
            "{i}: {} vs {}",
            p[i],
            w(i) / total
        );
    }
}

#[test]
fn class_balanced_sampling_favours_rare_labels() {
    use muxmed::data::dataset::SplitData;
    use muxmed::data::loader::epoch_order;
    // 90 images without findings, 10 with the only label.
    let n = 100;
    let split = SplitData {
        label_names: vec!["Rare".into()],
        image_ids: (0..n).map(|i| i.to_string()).collect(),
        paths: vec![None; n],
        patients: (0..n).map(|i| i.to_string()).collect(),
        datasets: vec![String::new(); n],
        labels: (0..n)
            .map(|i| vec![if i < 10 { 1.0 } else { 0.0 }])
            .collect(),
    };
    let o = LoaderOptions {
        batch_size: 10,
        shuffle: true,
        class_balanced: Some(Balance {
            weighting: BalanceWeighting::Inverse,
            max_repeat: None,
        }),
        source_weights: Vec::new(),
        drop_last: false,
        seed: 1,
        epoch: 0,
        workers: 1,
        prefetch: 1,
    };
    let order = epoch_order(&split, &o);
    assert_eq!(order.len(), n);
    let rare = order.iter().filter(|&&i| i < 10).count();
    // Balanced by class frequency: about half the draws are the rare label (10% without).
    assert!((35..=65).contains(&rare), "{rare}");
    let plain = epoch_order(
        &split,
        &LoaderOptions {
            class_balanced: None,
            source_weights: Vec::new(),
            ..o
        },
    );
    let mut sorted = plain.clone();
    sorted.sort();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>());
}

/// Draw probabilities by hand, 90 images without findings and 10 with the one label:
/// inverse weights 1/90 and 1/10 give each group half the draws (a rare image 5 times per
/// epoch of 100); square-root weights 1/√90 and 1/√10 give the rare group √10/(√90+√10) =
/// 1/4 (2.5 times each); max_repeat 2 on inverse pins the rare images at 2/100 and spreads
/// the other 0.8 over the 90 (0.8/90 each).
#[test]
fn balanced_draws_by_square_root_and_with_a_cap() {
    use muxmed::data::loader::draw_probabilities;
    let labels: Vec<Vec<f32>> = (0..100)
        .map(|i| vec![if i < 10 { 1.0 } else { 0.0 }])
        .collect();
    let p = |weighting, max_repeat| {
        draw_probabilities(
            &labels,
            Balance {
                weighting,
                max_repeat,
            },
        )
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    let inv = p(BalanceWeighting::Inverse, None);
    assert!(close(inv[0], 0.05) && close(inv[50], 0.5 / 90.0));
    let sq = p(BalanceWeighting::Sqrt, None);
    assert!(close(sq[..10].iter().sum::<f64>(), 0.25), "{}", sq[0]);
    assert!(close(sq[0] * 100.0, 2.5));
    let capped = p(BalanceWeighting::Inverse, Some(2.0));
    assert!(close(capped[0], 0.02) && close(capped[50], 0.8 / 90.0));
    assert!(close(capped.iter().sum::<f64>(), 1.0));
    // A cap above every image's repeats changes nothing.
    assert_eq!(p(BalanceWeighting::Sqrt, Some(3.0)), sq);
    assert_eq!(BalanceWeighting::default(), BalanceWeighting::Sqrt);
}

#[test]
fn repeats_of_an_image_in_a_class_balanced_epoch_are_augmented_differently() {
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 40, |_, _| {});
    let m = dir.path().join("m");
    build(&d, true).unwrap().write(&m).unwrap();
    let a = small_augment();
    prepare_in_chunks(&m, &a, 16, &|_, _| {}).unwrap();
    let cache = Arc::new(Cache::open(&m, &a).unwrap());
    let split = Arc::new(load_split(&m, muxmed::labels::Split::Train).unwrap());
    let slots: Vec<usize> = split
        .image_ids
        .iter()
        .map(|id| cache.slot(id).unwrap())
        .collect();
    let o = LoaderOptions {
        batch_size: 1,
        shuffle: true,
        class_balanced: Some(Balance {
            weighting: BalanceWeighting::Inverse,
            max_repeat: None,
        }),
        source_weights: Vec::new(),
        drop_last: false,
        seed: 3,
        epoch: 0,
        workers: 2,
        prefetch: 2,
    };
    let batches: Vec<muxmed::data::loader::Batch> = start_epoch(
        split.clone(),
        Source::Cache(cache.clone(), slots),
        Arc::new(a.train.clone()),
        o,
    )
    .unwrap()
    .map(|b| b.unwrap())
    .collect();
    // Drawing with replacement repeats some images; every repeat is another augmented copy.
    let mut repeats = 0;
    for i in 0..batches.len() {
        for j in i + 1..batches.len() {
            if batches[i].indices == batches[j].indices {
                repeats += 1;
                assert_ne!(batches[i].images, batches[j].images, "draws {i} and {j}");
            }
        }
    }
    assert!(repeats > 0, "no image was drawn twice");
}

#[test]
fn fifos_and_dangling_links_among_images_are_named_errors_in_the_scan() {
    use muxmed::data::nih::scan_images;
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("images");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::copy(
        nih("images/00000211_000.png"),
        imgs.join("00000211_000.png"),
    )
    .unwrap();
    assert_eq!(scan_images(&imgs).unwrap().len(), 1);
    let fifo = imgs.join("00000001_000.png");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let e = scan_images(&imgs).unwrap_err().to_string();
    assert!(
        e.contains("00000001_000.png") && e.contains("not a regular file"),
        "{e}"
    );
    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone.png"), imgs.join("00000002_000.png")).unwrap();
    let e = scan_images(&imgs).unwrap_err().to_string();
    assert!(
        e.contains("00000002_000.png") && e.contains("dangling"),
        "{e}"
    );
}

#[test]
fn rewriting_a_manifest_keeps_its_caches_and_its_symlink_and_refuses_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 12, |_, _| {});
    let a = small_augment();
    // A manifest folder that is a symlink to another disk.
    let target = dir.path().join("other_disk/m");
    std::fs::create_dir_all(&target).unwrap();
    let m = dir.path().join("m");
    std::os::unix::fs::symlink(&target, &m).unwrap();
    build(&d, true).unwrap().write(&m).unwrap();
    prepare_in_chunks(&m, &a, 5, &|_, _| {}).unwrap();
    // The same settings again: the cache stays usable, the link stays a link.
    build(&d, true).unwrap().write(&m).unwrap();
    assert!(std::fs::symlink_metadata(&m)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(Cache::open(&m, &a).is_ok());
    assert!(prepare_in_chunks(&m, &a, 5, &|_, _| {}).unwrap().reused);
    // A plain folder keeps its cache too.
    let plain = dir.path().join("plain");
    build(&d, true).unwrap().write(&plain).unwrap();
    prepare_in_chunks(&plain, &a, 5, &|_, _| {}).unwrap();
    build(&d, true).unwrap().write(&plain).unwrap();
    assert!(prepare_in_chunks(&plain, &a, 5, &|_, _| {}).unwrap().reused);
    // --out naming a file: an error, and the file is untouched.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    let e = build(&d, true)
        .unwrap()
        .write(&file)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a file"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

#[test]
fn a_source_changed_after_prepare_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 8, |_, _| {});
    let m = dir.path().join("m");
    build(&d, true).unwrap().write(&m).unwrap();
    let a = small_augment();
    prepare_in_chunks(&m, &a, 4, &|_, _| {}).unwrap();
    let c = Cache::open(&m, &a).unwrap();
    assert!(c.check_sources().is_ok());
    // Touching a file without changing it is not a change (the hash decides).
    let e0 = c.index.entries[0].clone();
    let bytes = std::fs::read(&e0.source).unwrap();
    std::fs::write(&e0.source, &bytes).unwrap();
    assert!(c.changed_sources().is_empty());
    // Another image's bytes at the same path is.
    let e1 = c.index.entries[1].clone();
    std::fs::copy(&e1.source, &e0.source).unwrap();
    assert_eq!(c.changed_sources(), vec![e0.image_id.clone()]);
    let err = c.check_sources().unwrap_err().to_string();
    assert!(
        err.contains("1 source image") && err.contains(&e0.image_id),
        "{err}"
    );
    drop(c);
    // prepare sees it, builds again, and the slot holds the new pixels.
    let r = prepare_in_chunks(&m, &a, 4, &|_, _| {}).unwrap();
    assert!(!r.reused);
    let c = Cache::open(&m, &a).unwrap();
    assert!(c.check_sources().is_ok());
    let slot0 = c.slot(&e0.image_id).unwrap();
    let slot1 = c.slot(&e1.image_id).unwrap();
    assert_eq!(c.image(slot0), c.image(slot1));
}

#[test]
fn a_second_prepare_of_the_same_cache_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 4, |_, _| {});
    let m = dir.path().join("m");
    build(&d, true).unwrap().write(&m).unwrap();
    let a = small_augment();
    let lock = muxmed::data::cache::cache_dir(&m, &a).with_extension("lock");
    let mut holder = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(&lock, format!("{}\n", holder.id())).unwrap();
    let e = prepare_in_chunks(&m, &a, 4, &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(".lock") && e.contains(&holder.id().to_string()),
        "{e}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    prepare_in_chunks(&m, &a, 4, &|_, _| {}).unwrap();
    assert!(!lock.exists());
}

/// `predict` and `explain` read the original file, the evaluation reads the cache: both must
/// hand the network the same pixels. Real 1024² X-rays resized to 64 fall between 8-bit
/// steps, which a u8 cache rounds; the file path must round them the same way (before, it
/// kept 16-bit precision and the probabilities differed by up to 5e-4).
#[test]
fn file_and_cache_give_the_same_working_image_for_both_dtypes() {
    use muxmed::data::loader::working_image;
    let dir = tempfile::tempdir().unwrap();
    let d = real_subset(dir.path(), 3, |_, _| {});
    let m = dir.path().join("m");
    build(&d, true).unwrap().write(&m).unwrap();
    for dtype in [CacheDtype::U8, CacheDtype::U16] {
        let a = AugmentConfig {
            cache_dtype: dtype,
            ..small_augment()
        };
        prepare_in_chunks(&m, &a, 4, &|_, _| {}).unwrap();
        let cache = Cache::open(&m, &a).unwrap();
        let split = load_split(&m, muxmed::labels::Split::Train)
            .or_else(|_| load_split(&m, muxmed::labels::Split::Test))
            .unwrap();
        for (id, path) in split.image_ids.iter().zip(&split.paths) {
            let from_cache = cache.image(cache.slot(id).unwrap());
            let g = decode_file(path.as_ref().unwrap()).unwrap();
            let from_file = working_image(&g, a.working_size, dtype);
            assert_eq!(from_file.data, from_cache.data, "{id} ({dtype:?})");
            // The case the rounding matters for: the 16-bit resize lands between 8-bit steps.
            if dtype == CacheDtype::U16 {
                assert!(off_grid(&from_file) > 100, "{id}");
            }
        }
    }
}
