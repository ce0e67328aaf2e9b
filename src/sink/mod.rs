//! Writers for the snapshot's data files: Parquet and CSV, with file rolling.
//!
//! A writer's lifecycle: `write` batches or pages, files roll at `rows_per_file`,
//! `close()` returns one [`FileEntry`] per file (sorted by path) with rows, bytes and
//! sha256 computed while writing. File names come from [`part_name`] only, so no
//! value from the platform ever becomes part of a path.

pub mod assemble;
mod csv;
pub mod hive;
mod parquet;

pub use self::csv::{cell_text, CsvFormatter, CsvPage, CsvSink, WriteOrPage};
pub use self::parquet::{writer_props, ParquetOptions, ParquetSink};

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Output format of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Parquet,
    Csv,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

/// Text encoding of CSV files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsvEncoding {
    #[default]
    Utf8,
    /// UTF-8 starting with a byte-order mark (Excel recognises UTF-8 by it).
    Utf8Bom,
    /// GB18030 (covers all of Unicode), for Excel on Chinese Windows.
    Gb18030,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvOptions {
    pub encoding: CsvEncoding,
    /// `\r\n` line endings (else `\n`).
    pub crlf: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            encoding: CsvEncoding::Utf8,
            crlf: true,
        }
    }
}

/// One written file as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the snapshot folder, `/`-separated.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The name of the `index`-th data file: `part-00000.parquet`, `part-00001.csv`, …
pub fn part_name(index: usize, format: Format) -> String {
    format!("part-{index:05}.{}", format.extension())
}

/// A file writer that hashes and counts what passes through it.
pub struct HashingFile {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
    path: PathBuf,
}

impl HashingFile {
    pub fn create(path: &Path) -> Result<HashingFile> {
        HashingFile::create_with_buffer(path, 1 << 20)
    }

    pub fn create_with_buffer(path: &Path, buffer: usize) -> Result<HashingFile> {
        let f = File::create(path).map_err(|e| Error::io("create", path, e))?;
        Ok(HashingFile {
            inner: BufWriter::with_capacity(buffer, f),
            hasher: Sha256::new(),
            bytes: 0,
            path: path.to_path_buf(),
        })
    }

    /// Flushes, syncs to disk and returns `(bytes, sha256 hex)`.
    pub fn finish(self) -> Result<(u64, String)> {
        let path = self.path;
        let f = self
            .inner
            .into_inner()
            .map_err(|e| Error::io("flush", &path, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("sync", &path, e))?;
        Ok((self.bytes, hex::encode(self.hasher.finalize())))
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Computes the sha256 of a file (used by tests and verification).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut HashWriter(&mut h))?;
    Ok(hex::encode(h.finalize()))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Splits `rows` rows into `(take, roll_after)` given the current file's fill.
pub(crate) fn room(limit: Option<u64>, in_file: u64) -> u64 {
    match limit {
        Some(l) => l.saturating_sub(in_file),
        None => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_zero_padded_and_sortable() {
        assert_eq!(part_name(0, Format::Parquet), "part-00000.parquet");
        assert_eq!(part_name(12, Format::Csv), "part-00012.csv");
        assert!(part_name(9, Format::Csv) < part_name(10, Format::Csv));
    }

    #[test]
    fn hashing_file_matches_a_fresh_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let mut w = HashingFile::create(&p).unwrap();
        w.write_all(b"hello").unwrap();
        let (bytes, sha) = w.finish().unwrap();
        assert_eq!(bytes, 5);
        assert_eq!(sha, sha256_file(&p).unwrap());
    }
}
