//! Small file helpers shared by every module that writes outputs.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
/// A crash at any moment leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a little-endian f32 array in NumPy's `.npy` format (version 1.0, C order), which
/// `numpy.load` reads directly. Atomic like [`write_atomic`].
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header += &" ".repeat(unpadded.next_multiple_of(64) - unpadded);
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_atomic(path, &bytes)
}

/// sha256 of a file's bytes, as lowercase hex (provenance in manifests, reports, metadata).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    Ok(format!("{:x}", Sha256::digest(std::fs::read(path)?)))
}

/// An exclusive lock file holding its owner's pid: two `train --resume` of one run, or two
/// `prepare` of one cache, refuse to run at once. A lock left by a process that no longer
/// exists is taken over. Removed when dropped.
#[derive(Debug)]
pub struct Lock {
    path: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is held by process {pid} ({what} is in use): wait for it to finish, or remove the file if that process is gone", path.display())]
    Held {
        path: std::path::PathBuf,
        pid: u32,
        what: String,
    },
    #[error("{}: cannot take the lock: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Lock {
    /// Takes the lock at `path`; `what` names the locked thing in the error.
    pub fn acquire(path: &Path, what: &str) -> Result<Lock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(io)?;
                    return Ok(Lock {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match pid {
                        Some(pid) if process_alive(pid) => {
                            return Err(LockError::Held {
                                path: path.to_path_buf(),
                                pid,
                                what: what.to_string(),
                            })
                        }
                        // Stale (its process is gone) or unreadable: take it over.
                        _ => {
                            let _ = std::fs::remove_file(path);
                        }
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other("the lock file keeps reappearing")))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An error and its causes on one line, each said once: library errors often already
/// include their cause's text ("…: No such file or directory (os error 2)"), which a plain
/// `{:#}` would repeat.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out += ": ";
        }
        out += &s;
    }
    out
}

/// One CSV record: its 1-based line in the text and its fields (unquoted, not trimmed).
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRecord {
    pub line: usize,
    pub fields: Vec<String>,
}

/// One CSV record as [`for_each_csv_record`] lends it: its 1-based line and its fields
/// (unquoted, not trimmed, a leading byte-order mark removed), borrowed from the reader's
/// one reused buffer.
pub struct CsvRow<'r> {
    pub line: usize,
    record: &'r csv::StringRecord,
}

impl<'r> CsvRow<'r> {
    pub fn len(&self) -> usize {
        self.record.len()
    }

    pub fn is_empty(&self) -> bool {
        self.record.is_empty()
    }

    /// Field `i`, if the record has it.
    pub fn get(&self, i: usize) -> Option<&'r str> {
        self.record.get(i).map(|f| f.trim_start_matches('\u{feff}'))
    }

    pub fn fields(&self) -> impl Iterator<Item = &'r str> + 'r {
        self.record.iter().map(|f| f.trim_start_matches('\u{feff}'))
    }

    /// The fields as they were in the file, joined by commas (for error messages).
    pub fn joined(&self) -> String {
        self.fields().collect::<Vec<_>>().join(",")
    }

    pub fn to_record(&self) -> CsvRecord {
        CsvRecord {
            line: self.line,
            fields: self.fields().map(str::to_string).collect(),
        }
    }
}

/// Every record of CSV text, header included, through `f`: the one CSV reader of muxmed.
/// Quoted fields may hold commas and quotes (RFC 4180); blank lines are skipped; records may
/// differ in length (callers check counts and name the line). A malformed record gives
/// `syntax(line, message)`; the first error of `f` stops the reading. One record buffer is
/// reused, so a 112,120-row file costs no allocation per field.
pub fn for_each_csv_record<E>(
    text: &str,
    mut f: impl FnMut(CsvRow<'_>) -> Result<(), E>,
    syntax: impl Fn(usize, String) -> E,
) -> Result<(), E> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    // Line numbers from byte offsets: the csv crate's own line count skips blank lines.
    let bytes = text.as_bytes();
    let (mut at, mut line_at) = (0usize, 1usize);
    let mut line_of = |byte: usize| {
        // A record's position can point at blank lines skipped before it.
        let mut byte = byte.min(bytes.len());
        while byte < bytes.len() && (bytes[byte] == b'\n' || bytes[byte] == b'\r') {
            byte += 1;
        }
        if byte >= at {
            line_at += bytes[at..byte].iter().filter(|b| **b == b'\n').count();
            at = byte;
        }
        line_at
    };
    let mut record = csv::StringRecord::new();
    loop {
        match r.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map_or(0, |p| line_of(p.byte() as usize));
                f(CsvRow {
                    line,
                    record: &record,
                })?;
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| line_of(p.byte() as usize));
                return Err(syntax(line, e.to_string()));
            }
        }
    }
}

/// A record of a CSV text with a header, as [`for_each_csv_line`] hands it over.
pub enum CsvLine<'a, 'r> {
    /// The first record's fields (none for an empty text): always handed over first.
    Header(&'a [&'r str]),
    Row(&'a CsvRow<'r>),
}

/// [`for_each_csv_record`] for a text whose first record is its header: `f` gets the header,
/// then every data record.
pub fn for_each_csv_line<E>(
    text: &str,
    mut f: impl FnMut(CsvLine<'_, '_>) -> Result<(), E>,
    syntax: impl Fn(usize, String) -> E,
) -> Result<(), E> {
    let mut header_seen = false;
    for_each_csv_record(
        text,
        |row| {
            if std::mem::replace(&mut header_seen, true) {
                return f(CsvLine::Row(&row));
            }
            let fields: Vec<&str> = row.fields().collect();
            f(CsvLine::Header(&fields))
        },
        syntax,
    )?;
    if !header_seen {
        f(CsvLine::Header(&[]))?;
    }
    Ok(())
}

/// Every record of CSV text, header included, owned ([`for_each_csv_record`] collected).
/// `Err` is (line, message).
pub fn csv_records(text: &str) -> Result<Vec<CsvRecord>, (usize, String)> {
    let mut out = Vec::new();
    for_each_csv_record(
        text,
        |row| {
            out.push(row.to_record());
            Ok(())
        },
        |line, message| (line, message),
    )?;
    Ok(out)
}

/// Every key that occurs more than once, in order of its first line, with each of its lines,
/// as "KEY (lines 2, 7)" parts; empty when every key is unique.
pub fn repeated_keys<'a>(keyed: impl Iterator<Item = (&'a str, usize)>) -> Vec<String> {
    let mut lines: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (key, line) in keyed {
        match at.get(key) {
            Some(&i) => lines[i].1.push(line),
            None => {
                at.insert(key, lines.len());
                lines.push((key, vec![line]));
            }
        }
    }
    lines
        .into_iter()
        .filter(|(_, l)| l.len() > 1)
        .map(|(key, l)| {
            let l: Vec<String> = l.iter().map(usize::to_string).collect();
            format!("{key} (lines {})", l.join(", "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lock_is_exclusive_while_its_process_lives_and_taken_over_after() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("thing.lock");
        // Held by another live process.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&p, format!("{}\n", child.id())).unwrap();
        let e = super::Lock::acquire(&p, "the run").unwrap_err().to_string();
        assert!(
            e.contains("thing.lock") && e.contains(&child.id().to_string()),
            "{e}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // Its process is gone: the stale lock is taken over, and removed when dropped.
        let l = super::Lock::acquire(&p, "the run").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(l);
        assert!(!p.exists());
    }

    #[test]
    fn error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone (os error 2)");
        #[derive(Debug, thiserror::Error)]
        #[error("reading x.csv: {source}")]
        struct E {
            source: std::io::Error,
        }
        let e = anyhow::Error::from(E { source: io }).context("loading labels");
        let s = super::error_chain(&e);
        assert_eq!(s, "loading labels: reading x.csv: gone (os error 2)");
        assert_eq!(s.matches("os error 2").count(), 1);
    }

    #[test]
    fn csv_quoted_fields_and_line_numbers() {
        let text = "a,b\n\n\"x, y\",2\r\n\"he said \"\"hi\"\"\",3\n";
        let r = super::csv_records(text).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].fields, vec!["x, y", "2"]);
        assert_eq!(r[1].line, 3);
        assert_eq!(r[2].fields, vec!["he said \"hi\"", "3"]);
        assert_eq!(r[2].line, 4);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.txt");
        super::write_atomic(&p, b"one").unwrap();
        super::write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
