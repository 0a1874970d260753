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

/// sha256 of a file's bytes, as lowercase hex (provenance in manifests, reports, metadata).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    Ok(format!("{:x}", Sha256::digest(std::fs::read(path)?)))
}

/// One CSV record: its 1-based line in the text and its fields (unquoted, not trimmed).
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRecord {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Every record of CSV text, header included: the one CSV reader of muxmed. Quoted fields
/// may hold commas and quotes (RFC 4180); blank lines are skipped; records may differ in
/// length (callers check counts and name the line). `Err` is (line, message).
pub fn csv_records(text: &str) -> Result<Vec<CsvRecord>, (usize, String)> {
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
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                let line = e.position().map_or(0, |p| line_of(p.byte() as usize));
                return Err((line, e.to_string()));
            }
        };
        let line = rec.position().map_or(0, |p| line_of(p.byte() as usize));
        out.push(CsvRecord {
            line,
            fields: rec
                .iter()
                .map(|f| f.trim_start_matches('\u{feff}').to_string())
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
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
