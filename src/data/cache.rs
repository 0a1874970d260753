//! `muxmed prepare`: every image of the manifests decoded once, shorter side resized to the
//! working size and centre-cropped square, stored in one memory-mapped file of u8 or u16
//! samples, with an index recording each source file's size and sha256.
//!
//! Written in chunks into `<cache>.partial/`, with progress saved after each chunk, so an
//! interrupted `prepare` resumes; the folder is renamed into place only when complete, so a
//! half-written cache is never used.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fast_image_resize as fir;
use rayon::prelude::*;

use super::dataset::load_split;
use super::image::{decode_with_origin, Gray};
use super::manifest_dir::{CacheDir, ManifestDir};
use crate::config::augment::CacheDtype;
use crate::config::AugmentConfig;
use crate::labels::Split;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Manifest(#[from] super::manifest_dir::ManifestError),
    #[error(transparent)]
    Image(#[from] super::image::ImageError),
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// One slot of the cache.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub image_id: String,
    pub split: String,
    pub source: String,
    pub bytes: u64,
    /// Modification time of the source when it was read (ns since the epoch; 0 unknown).
    #[serde(default)]
    pub mtime_ns: u64,
    pub sha256: String,
    /// True when the source could not be decoded and `skip_bad_images` was set.
    pub skipped: bool,
    pub error: Option<String>,
    /// A doubt about the decoded values, e.g. likely 12-bit data in a 16-bit PNG without sBIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `index.json`: what the cache holds and what it was made from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Index {
    /// sha256 of the manifest.json the cache was built from.
    pub manifest_sha256: String,
    pub working_size: u32,
    pub dtype: CacheDtype,
    pub entries: Vec<Entry>,
}

/// The folder of a cache for a manifest folder and augment settings.
pub fn cache_dir(manifest_dir: &Path, a: &AugmentConfig) -> PathBuf {
    ManifestDir::new(manifest_dir).cache(a).root().to_path_buf()
}

const CHUNK: usize = 256;

#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq)]
struct Progress {
    chunk: usize,
    manifest_sha256: String,
    working_size: u32,
    dtype: CacheDtype,
    total: usize,
    done_chunks: usize,
}

/// A 16-bit working sample rounded to 8 bits, as a u8 cache stores it.
pub fn narrow_to_u8(v: u16) -> u8 {
    ((v as u32 * 255 + 32767) / 65535) as u8
}

/// Shorter side to `size`, centre crop to a square, samples as u16 in [0, 65535] (u8 data is
/// scaled the same way and narrowed when written).
pub fn to_working(g: &Gray, size: u32) -> Vec<u16> {
    let (w, h) = (g.width, g.height);
    let s = w.min(h);
    let (left, top) = ((w - s) / 2, (h - s) / 2);
    let mut src: Vec<u16> = Vec::with_capacity((s * s) as usize);
    for y in top..top + s {
        let row = (y * w) as usize;
        src.extend(
            g.data[row + left as usize..row + (left + s) as usize]
                .iter()
                .map(|v| (v * 65535.0).round() as u16),
        );
    }
    if s == size {
        return src;
    }
    let mut dst = vec![0u16; (size * size) as usize];
    let s_img = fir::images::Image::from_slice_u8(
        s,
        s,
        bytemuck::cast_slice_mut(&mut src),
        fir::PixelType::U16,
    )
    .expect("sized buffer");
    let mut d_img = fir::images::Image::from_slice_u8(
        size,
        size,
        bytemuck::cast_slice_mut(&mut dst),
        fir::PixelType::U16,
    )
    .expect("sized buffer");
    fir::Resizer::new()
        .resize(
            &s_img,
            &mut d_img,
            &fir::ResizeOptions::new()
                .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear)),
        )
        .expect("same pixel type");
    dst
}

fn mtime_ns(path: &Path) -> std::io::Result<u64> {
    let t = std::fs::metadata(path)?.modified()?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64))
}

/// Whether a source file still is what the cache was built from: size and modification
/// time first, the sha256 only when one of them differs.
fn source_unchanged(e: &Entry) -> bool {
    use sha2::{Digest, Sha256};
    let p = Path::new(&e.source);
    let Ok(m) = std::fs::metadata(p) else {
        return false;
    };
    if m.len() == e.bytes && mtime_ns(p).ok() == Some(e.mtime_ns) {
        return true;
    }
    std::fs::read(p).is_ok_and(|b| format!("{:x}", Sha256::digest(&b)) == e.sha256)
}

/// A slot's index entry and its pixels (None when the image was skipped).
type Prepared = (Entry, Option<Vec<u8>>);

/// Reads, hashes, decodes and resizes one image.
fn prepare_item(
    id: &str,
    split: &str,
    path: &Path,
    a: &AugmentConfig,
) -> Result<Prepared, CacheError> {
    use sha2::{Digest, Sha256};
    let mtime_ns = mtime_ns(path).map_err(|e| io_err(path, e))?;
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let mut entry = Entry {
        image_id: id.to_string(),
        split: split.to_string(),
        source: path.display().to_string(),
        bytes: bytes.len() as u64,
        mtime_ns,
        sha256: format!("{:x}", Sha256::digest(&bytes)),
        skipped: false,
        error: None,
        warning: None,
    };
    match decode_with_origin(&bytes, path) {
        Ok((g, origin)) => {
            entry.warning = origin.warning();
            let px = to_working(&g, a.working_size);
            let out = match a.cache_dtype {
                CacheDtype::U8 => px.iter().map(|v| narrow_to_u8(*v)).collect(),
                CacheDtype::U16 => px.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            Ok((entry, Some(out)))
        }
        Err(e) if a.skip_bad_images => {
            entry.skipped = true;
            entry.error = Some(e.to_string());
            Ok((entry, None))
        }
        Err(e) => Err(e.into()),
    }
}

/// A ready cache, memory-mapped.
pub struct Cache {
    pub index: Index,
    map: memmap2::Mmap,
    slot_of: HashMap<String, usize>,
}

impl Cache {
    /// Opens the cache if it is complete and was built from this manifest with these settings.
    pub fn open(manifest_dir: &Path, a: &AugmentConfig) -> Result<Cache, CacheError> {
        let mdir = ManifestDir::new(manifest_dir);
        let cdir = mdir.cache(a);
        let dir = cdir.root();
        let name = mdir.name();
        let hint = format!("run `muxmed prepare --pipeline {name}` to build it");
        if !cdir.complete_marker().is_file() {
            return Err(CacheError::Invalid(format!(
                "no complete prepared cache at {}: {hint}",
                dir.display()
            )));
        }
        let ip = cdir.index_json();
        let index: Index =
            serde_json::from_str(&std::fs::read_to_string(&ip).map_err(|e| io_err(&ip, e))?)
                .map_err(|e| io_err(&ip, e))?;
        let msha = crate::io::sha256_file(&ManifestDir::new(manifest_dir).manifest_json())
            .map_err(|e| io_err(manifest_dir, e))?;
        if index.working_size != a.working_size || index.dtype != a.cache_dtype {
            return Err(CacheError::Invalid(format!(
                "the prepared cache at {} was built with other settings (working size {}, {:?}; the pipeline asks {}, {:?}): {hint}",
                dir.display(),
                index.working_size,
                index.dtype,
                a.working_size,
                a.cache_dtype
            )));
        }
        // A manifest rebuilt over the same files (another seed or split) needs no new cache:
        // the pixels of an image do not depend on its split.
        if index.manifest_sha256 != msha && !holds_the_images_of(&index, manifest_dir)? {
            return Err(CacheError::Invalid(format!(
                "the prepared cache at {} was built from a manifest with other images: {hint}",
                dir.display()
            )));
        }
        let bp = cdir.images_bin();
        let f = File::open(&bp).map_err(|e| io_err(&bp, e))?;
        // Safety of the mapping: the file is only ever written inside `.partial` folders
        // before it is renamed here, so nothing writes to it while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io_err(&bp, e))?;
        let sample = match a.cache_dtype {
            CacheDtype::U8 => 1,
            CacheDtype::U16 => 2,
        };
        let need = index.entries.len() * (a.working_size as usize).pow(2) * sample;
        if map.len() != need {
            return Err(CacheError::Invalid(format!(
                "{} has {} bytes, expected {need}: {hint}",
                bp.display(),
                map.len()
            )));
        }
        let slot_of = index
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.image_id.clone(), i))
            .collect();
        Ok(Cache {
            index,
            map,
            slot_of,
        })
    }

    /// The entries `prepare` skipped as unreadable (with `skip_bad_images`).
    pub fn skipped(&self) -> impl Iterator<Item = &Entry> {
        self.index.entries.iter().filter(|e| e.skipped)
    }

    /// Whether `prepare` skipped this image as unreadable.
    pub fn was_skipped(&self, image_id: &str) -> bool {
        self.slot_of
            .get(image_id)
            .is_some_and(|&i| self.index.entries[i].skipped)
    }

    pub fn slot(&self, image_id: &str) -> Option<usize> {
        self.slot_of
            .get(image_id)
            .copied()
            .filter(|&i| !self.index.entries[i].skipped)
    }

    /// Image ids whose source file changed (or vanished) since the cache was built.
    pub fn changed_sources(&self) -> Vec<String> {
        self.index
            .entries
            .par_iter()
            .filter(|e| !e.skipped && !source_unchanged(e))
            .map(|e| e.image_id.clone())
            .collect()
    }

    /// An error naming how many sources changed since `prepare`, and the first of them.
    pub fn check_sources(&self) -> Result<(), CacheError> {
        let changed = self.changed_sources();
        if changed.is_empty() {
            return Ok(());
        }
        Err(CacheError::Invalid(format!(
            "the prepared cache is stale: {} source image(s) changed since it was built (first: {}): rerun `muxmed prepare`",
            changed.len(),
            changed.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )))
    }

    /// The working-size image in slot `i`, values in [0, 1].
    pub fn image(&self, i: usize) -> super::augment::Img {
        let s = self.index.working_size as usize;
        let n = s * s;
        let data = match self.index.dtype {
            CacheDtype::U8 => self.map[i * n..(i + 1) * n]
                .iter()
                .map(|&v| v as f32 / 255.0)
                .collect(),
            CacheDtype::U16 => self.map[i * n * 2..(i + 1) * n * 2]
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as f32 / 65535.0)
                .collect(),
        };
        super::augment::Img::gray(s, s, data)
    }
}

/// What `prepare` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrepareReport {
    pub dir: PathBuf,
    /// Images in the manifest, the skipped ones included.
    pub images: usize,
    /// Each skipped image with its error.
    pub skipped: Vec<String>,
    /// Each image that decoded with a doubt, with the doubt.
    pub warnings: Vec<String>,
    pub resumed_from: usize,
    pub reused: bool,
}

/// Whether the cache holds exactly the images (id and source file) of the manifest's splits.
fn holds_the_images_of(index: &Index, manifest_dir: &Path) -> Result<bool, CacheError> {
    let mut want: Vec<(String, String)> = Vec::with_capacity(index.entries.len());
    for s in Split::ALL {
        let d = load_split(manifest_dir, s)?;
        for (id, p) in d.image_ids.into_iter().zip(d.paths) {
            let Some(p) = p else { return Ok(false) };
            want.push((id, p.display().to_string()));
        }
    }
    let mut have: Vec<(String, String)> = index
        .entries
        .iter()
        .map(|e| (e.image_id.clone(), e.source.clone()))
        .collect();
    want.sort_unstable();
    have.sort_unstable();
    Ok(want == have)
}

/// The skipped images with their errors, and the images that decoded with a doubt.
fn notes(entries: &[Entry]) -> (Vec<String>, Vec<String>) {
    let skipped = entries
        .iter()
        .filter(|e| e.skipped)
        .map(|e| format!("{} ({})", e.image_id, e.error.as_deref().unwrap_or("")))
        .collect();
    let warnings = entries
        .iter()
        .filter_map(|e| Some(format!("{}: {}", e.source, e.warning.as_deref()?)))
        .collect();
    (skipped, warnings)
}

/// Builds (or resumes, or reuses) the cache for the manifests in `manifest_dir`.
pub fn prepare(
    manifest_dir: &Path,
    a: &AugmentConfig,
    progress: &dyn Fn(usize, usize),
) -> Result<PrepareReport, CacheError> {
    prepare_in_chunks(manifest_dir, a, CHUNK, progress)
}

/// The cache already built for these settings, when its sources are unchanged; a stale one
/// is removed (it is derived from the manifest, and built again from the files).
fn reuse(manifest_dir: &Path, a: &AugmentConfig) -> Result<Option<PrepareReport>, CacheError> {
    let dir = ManifestDir::new(manifest_dir).cache(a).root().to_path_buf();
    match Cache::open(manifest_dir, a) {
        Ok(c) if c.changed_sources().is_empty() => {
            let (skipped, warnings) = notes(&c.index.entries);
            Ok(Some(PrepareReport {
                dir,
                images: c.index.entries.len(),
                skipped,
                warnings,
                resumed_from: 0,
                reused: true,
            }))
        }
        Ok(c) => {
            drop(c);
            std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}

/// Every image of the manifest's splits, in split order: (image id, split, file).
fn manifest_items(manifest_dir: &Path) -> Result<Vec<(String, String, PathBuf)>, CacheError> {
    let mut items = Vec::new();
    for split in Split::ALL {
        let s = load_split(manifest_dir, split)?;
        for (id, p) in s.image_ids.iter().zip(&s.paths) {
            let p = p.clone().ok_or_else(|| {
                CacheError::Invalid(format!(
                    "the manifest has no path for {id}: rebuild it with the images present"
                ))
            })?;
            items.push((id.clone(), split.to_string(), p));
        }
    }
    Ok(items)
}

/// The chunks a `.partial` folder already holds for exactly these settings (0, with the
/// folder emptied, when it holds none or was made for other settings).
fn resume_point(pdir: &CacheDir, want: &Progress) -> Result<usize, CacheError> {
    let done = std::fs::read_to_string(pdir.progress_json())
        .ok()
        .and_then(|t| serde_json::from_str::<Progress>(&t).ok())
        .filter(|p| {
            p.chunk == want.chunk
                && p.manifest_sha256 == want.manifest_sha256
                && p.working_size == want.working_size
                && p.dtype == want.dtype
                && p.total == want.total
        })
        .map(|p| p.done_chunks)
        .unwrap_or(0);
    if done == 0 {
        let partial = pdir.root();
        let _ = std::fs::remove_dir_all(partial);
        std::fs::create_dir_all(partial).map_err(|e| io_err(partial, e))?;
    }
    Ok(done)
}

/// A cache being written into its `.partial` folder.
struct Build<'a> {
    pdir: CacheDir,
    bin: File,
    slot_bytes: usize,
    want: Progress,
    a: &'a AugmentConfig,
}

impl Build<'_> {
    /// Decodes and writes chunk `c` of `items` (its pixels into `images.bin`, synced, then
    /// its entries), then records it in `progress.json`.
    fn write_chunk(
        &self,
        items: &[(String, String, PathBuf)],
        c: usize,
    ) -> Result<usize, CacheError> {
        let (chunk, total) = (self.want.chunk, self.want.total);
        let lo = c * chunk;
        let hi = (lo + chunk).min(total);
        let results: Vec<Result<Prepared, CacheError>> = items[lo..hi]
            .par_iter()
            .map(|(id, split, path)| prepare_item(id, split, path, self.a))
            .collect();
        let bp = self.pdir.images_bin();
        let mut entries = Vec::with_capacity(hi - lo);
        for (k, r) in results.into_iter().enumerate() {
            let (entry, px) = r?;
            if let Some(px) = px {
                self.bin
                    .write_all_at(&px, ((lo + k) * self.slot_bytes) as u64)
                    .map_err(|e| io_err(&bp, e))?;
            }
            entries.push(entry);
        }
        self.bin.sync_data().map_err(|e| io_err(&bp, e))?;
        let ep = self.pdir.chunk_entries(c);
        let text = serde_json::to_string(&entries).unwrap_or_default();
        crate::io::write_atomic(&ep, text.as_bytes()).map_err(|e| io_err(&ep, e))?;
        let p = Progress {
            done_chunks: c + 1,
            ..self.want.clone()
        };
        let pp = self.pdir.progress_json();
        let text = serde_json::to_string(&p).unwrap_or_default();
        crate::io::write_atomic(&pp, text.as_bytes()).map_err(|e| io_err(&pp, e))?;
        Ok(hi)
    }

    /// Gathers the chunks' entries into `index.json`, marks the folder complete and renames
    /// it over `dir`; returns the entries.
    fn finish(self, n_chunks: usize, dir: &Path) -> Result<Vec<Entry>, CacheError> {
        let mut entries = Vec::with_capacity(self.want.total);
        for c in 0..n_chunks {
            let ep = self.pdir.chunk_entries(c);
            let text = std::fs::read_to_string(&ep).map_err(|e| io_err(&ep, e))?;
            let chunk: Vec<Entry> = serde_json::from_str(&text).map_err(|e| io_err(&ep, e))?;
            entries.extend(chunk);
        }
        let index = Index {
            manifest_sha256: self.want.manifest_sha256.clone(),
            working_size: self.a.working_size,
            dtype: self.a.cache_dtype,
            entries,
        };
        let ip = self.pdir.index_json();
        let text = serde_json::to_string(&index).unwrap_or_default();
        crate::io::write_atomic(&ip, text.as_bytes()).map_err(|e| io_err(&ip, e))?;
        // The index is written: the per-chunk files and the progress are no longer needed.
        for c in 0..n_chunks {
            let _ = std::fs::remove_file(self.pdir.chunk_entries(c));
        }
        let _ = std::fs::remove_file(self.pdir.progress_json());
        let partial = self.pdir.root();
        crate::io::write_atomic(&self.pdir.complete_marker(), b"ok\n")
            .map_err(|e| io_err(partial, e))?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::rename(partial, dir).map_err(|e| io_err(dir, e))?;
        Ok(index.entries)
    }
}

/// [`prepare`] with a chosen chunk size (images written between two progress saves).
pub fn prepare_in_chunks(
    manifest_dir: &Path,
    a: &AugmentConfig,
    chunk: usize,
    progress: &dyn Fn(usize, usize),
) -> Result<PrepareReport, CacheError> {
    let cdir = ManifestDir::new(manifest_dir).cache(a);
    let _lock = crate::io::Lock::acquire(&cdir.lock_file(), "this cache is being prepared")
        .map_err(|e| CacheError::Invalid(e.to_string()))?;
    if let Some(report) = reuse(manifest_dir, a)? {
        return Ok(report);
    }
    let manifest_sha256 = crate::io::sha256_file(&ManifestDir::new(manifest_dir).manifest_json())
        .map_err(|e| io_err(manifest_dir, e))?;
    let items = manifest_items(manifest_dir)?;
    let total = items.len();
    let chunk = chunk.max(1);
    let want = Progress {
        chunk,
        manifest_sha256,
        working_size: a.working_size,
        dtype: a.cache_dtype,
        total,
        done_chunks: 0,
    };
    let pdir = cdir.partial();
    let mut done_chunks = resume_point(&pdir, &want)?;
    let resumed_from = (done_chunks * chunk).min(total);
    let sample = match a.cache_dtype {
        CacheDtype::U8 => 1usize,
        CacheDtype::U16 => 2,
    };
    let slot_bytes = (a.working_size as usize).pow(2) * sample;
    let bp = pdir.images_bin();
    let bin = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&bp)
        .map_err(|e| io_err(&bp, e))?;
    bin.set_len((total * slot_bytes) as u64)
        .map_err(|e| io_err(&bp, e))?;
    let build = Build {
        pdir,
        bin,
        slot_bytes,
        want,
        a,
    };
    let n_chunks = total.div_ceil(chunk);
    progress(resumed_from, total);
    while done_chunks < n_chunks {
        let hi = build.write_chunk(&items, done_chunks)?;
        done_chunks += 1;
        progress(hi, total);
    }
    let entries = build.finish(n_chunks, cdir.root())?;
    let (skipped, warnings) = notes(&entries);
    Ok(PrepareReport {
        dir: cdir.root().to_path_buf(),
        images: total,
        skipped,
        warnings,
        resumed_from,
        reused: false,
    })
}
