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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    hashing: Hashing,
    bytes: u64,
    path: PathBuf,
}

enum Hashing {
    /// Hashed as written, through a buffer.
    Inline {
        inner: BufWriter<File>,
        hasher: Sha256,
    },
    Aside(Aside),
}

/// Written in chunks of `cap` bytes: the caller fills one while a thread of
/// its own writes the one before and another hashes the one before that. Where
/// the file system takes it (Linux), the chunks are written with direct I/O, from
/// buffers recycled once hashed: a large file written once and read by others
/// later has no use for the page cache, and filling fresh page-cache pages is
/// what costs most when memory is cold (on virtual machines that hand freed
/// memory back to their host it ran at 0.4 GB/s here, against 2 GB/s written
/// directly). Elsewhere, and when the file system refuses direct I/O, each
/// chunk's writeback to disk is started at once, so the final sync has less to
/// wait for.
struct Aside {
    buf: AlignedBuf,
    /// Chunks to the writing thread (`true`: the file's last).
    tx: Option<std::sync::mpsc::SyncSender<(AlignedBuf, bool)>>,
    /// Buffers the hashing thread is done with.
    back: std::sync::mpsc::Receiver<AlignedBuf>,
    writer: Option<std::thread::JoinHandle<std::io::Result<File>>>,
    hasher: Option<std::thread::JoinHandle<Sha256>>,
    /// Whether chunks are still written directly.
    direct: Arc<AtomicBool>,
}

impl Drop for Aside {
    /// Not finished (an error): the threads end once the chunks queued are
    /// written, before the file is given up on.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(h) = self.hasher.take() {
            let _ = h.join();
        }
    }
}

/// The writing thread's end of [`Aside`].
struct ChunkWriter {
    file: File,
    path: PathBuf,
    /// Shared with [`Aside`], which logs it.
    direct: Arc<AtomicBool>,
    /// Bytes written to `file` so far.
    at: u64,
}

impl ChunkWriter {
    /// Writes a chunk (the file's last if `last`).
    fn write(&mut self, chunk: &mut AlignedBuf, last: bool) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let len = chunk.len as u64;
        if len == 0 {
            return Ok(());
        }
        let mut written = false;
        if self.direct.load(Ordering::Relaxed) {
            // Whole chunks are whole blocks; the last is padded, then cut back.
            let data = if last { chunk.padded() } else { chunk.bytes() };
            match self.file.write_all_at(data, self.at) {
                Ok(()) => written = true,
                // Direct I/O refused (some file systems, or a short write that
                // left an unaligned rest): the page cache from here, this chunk
                // whole again.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
                    self.direct.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        if !written {
            self.file.write_all_at(chunk.bytes(), self.at)?;
            start_writeback(&self.file, self.at, len);
        }
        self.at += len;
        if last {
            // Nothing past the data: not the padding, nor a direct write's
            // padded bytes before a fallback.
            self.file.set_len(self.at)?;
        }
        Ok(())
    }
}

/// The block size direct I/O is aligned to (a multiple of every device's).
const DIRECT_ALIGN: usize = 4096;

/// A buffer whose bytes start on a [`DIRECT_ALIGN`] boundary, as direct I/O needs.
struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A placeholder with no room, while a chunk is handed over.
    fn none() -> AlignedBuf {
        AlignedBuf {
            mem: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    fn new(cap: usize) -> AlignedBuf {
        debug_assert!(cap.is_multiple_of(DIRECT_ALIGN), "whole blocks");
        let mem = vec![0u8; cap + DIRECT_ALIGN];
        let addr = mem.as_ptr() as usize;
        let start = (DIRECT_ALIGN - addr % DIRECT_ALIGN) % DIRECT_ALIGN;
        AlignedBuf { mem, start, len: 0 }
    }

    fn room(&self) -> usize {
        self.mem.len().saturating_sub(DIRECT_ALIGN + self.len)
    }

    fn push(&mut self, data: &[u8]) {
        let at = self.start + self.len;
        self.mem[at..at + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    /// The bytes, zero-padded to whole blocks (the end of a file written directly,
    /// cut back to its length afterwards).
    fn padded(&mut self) -> &[u8] {
        let end = self.start + self.len.next_multiple_of(DIRECT_ALIGN);
        self.mem[self.start + self.len..end].fill(0);
        &self.mem[self.start..end]
    }
}

impl Aside {
    /// Hands the chunk (the file's last if `last`) to the writing thread.
    fn flush_chunk(&mut self, last: bool) -> std::io::Result<()> {
        if self.buf.len == 0 && !last {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, AlignedBuf::none());
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send((chunk, last)).is_ok());
        if sent {
            // A buffer back from the hashing thread if one is (sent first: the
            // chunks in memory stay at five).
            self.buf = match self.back.try_recv() {
                Ok(mut b) => {
                    b.len = 0;
                    b
                }
                Err(_) => AlignedBuf::new(ASIDE_CHUNK),
            };
            return Ok(());
        }
        // The writing thread stopped: its error.
        Err(self
            .join_writer()
            .err()
            .unwrap_or_else(|| std::io::Error::other("the writing thread stopped")))
    }

    /// Waits for the writing thread: the file, or what went wrong.
    fn join_writer(&mut self) -> std::io::Result<File> {
        drop(self.tx.take());
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            _ => Err(std::io::Error::other("the writing thread stopped")),
        }
    }
}

/// Opens `path` for writing with direct I/O where the system has it; `false` if
/// it was opened without.
fn create_direct(path: &Path, direct: bool) -> std::io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    if direct {
        use std::os::unix::fs::OpenOptionsExt;
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        match opened {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = direct;
    Ok((File::create(path)?, false))
}

/// Chunk size of [`HashingFile::create_hashed_aside`]. At most five chunks are in
/// memory: one filling, one waiting for and one in the writing thread, the same
/// for the hashing thread (deeper queues raised the peak RSS of a 2M-record
/// export by about 10 MiB and gained nothing; 2 MiB chunks cost 3% in time).
const ASIDE_CHUNK: usize = 4 << 20;

impl HashingFile {
    pub fn create(path: &Path) -> Result<HashingFile> {
        HashingFile::create_with_buffer(path, 1 << 20)
    }

    pub fn create_with_buffer(path: &Path, buffer: usize) -> Result<HashingFile> {
        let f = File::create(path).map_err(|e| Error::io("create", path, e))?;
        Ok(HashingFile {
            hashing: Hashing::Inline {
                inner: BufWriter::with_capacity(buffer, f),
                hasher: Sha256::new(),
            },
            bytes: 0,
            path: path.to_path_buf(),
        })
    }

    /// For one large file written at the end of an export: hashing on a thread of
    /// its own and writeback started as each chunk is written take the sha256 and
    /// most of the final sync off the export's last moments.
    pub fn create_hashed_aside(path: &Path) -> Result<HashingFile> {
        HashingFile::create_aside(path, true)
    }

    fn create_aside(path: &Path, direct: bool) -> Result<HashingFile> {
        let (file, direct) =
            create_direct(path, direct).map_err(|e| Error::io("create", path, e))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(AlignedBuf, bool)>(1);
        let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<AlignedBuf>(1);
        let (back_tx, back) = std::sync::mpsc::sync_channel::<AlignedBuf>(4);
        let hasher = std::thread::Builder::new()
            .name("jdop-sha256".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for chunk in hash_rx {
                    hasher.update(chunk.bytes());
                    // Back for reuse: its memory is already the process's.
                    let _ = back_tx.try_send(chunk);
                }
                hasher
            })
            .map_err(|e| Error::io("start a thread for", path, e))?;
        let direct = Arc::new(AtomicBool::new(direct));
        let mut w = ChunkWriter {
            file,
            path: path.to_path_buf(),
            direct: direct.clone(),
            at: 0,
        };
        let writer = std::thread::Builder::new()
            .name("jdop-write".into())
            .spawn(move || {
                for (mut chunk, last) in rx {
                    w.write(&mut chunk, last)?;
                    if hash_tx.send(chunk).is_err() {
                        return Err(std::io::Error::other("the hashing thread stopped"));
                    }
                }
                Ok(w.file)
            })
            .map_err(|e| Error::io("start a thread for", path, e))?;
        Ok(HashingFile {
            hashing: Hashing::Aside(Aside {
                buf: AlignedBuf::new(ASIDE_CHUNK),
                tx: Some(tx),
                back,
                writer: Some(writer),
                hasher: Some(hasher),
                direct,
            }),
            bytes: 0,
            path: path.to_path_buf(),
        })
    }

    /// Flushes, syncs to disk and returns `(bytes, sha256 hex)`.
    pub fn finish(self) -> Result<(u64, String)> {
        let HashingFile {
            hashing,
            bytes,
            path,
        } = self;
        let (f, hasher) = match hashing {
            Hashing::Inline { inner, hasher } => {
                let f = inner
                    .into_inner()
                    .map_err(|e| Error::io("flush", &path, e.into_error()))?;
                (f, hasher)
            }
            Hashing::Aside(mut a) => {
                a.flush_chunk(true)
                    .map_err(|e| Error::io("write", &path, e))?;
                let file = a.join_writer().map_err(|e| Error::io("write", &path, e))?;
                tracing::debug!(
                    "{} written {}",
                    path.display(),
                    if a.direct.load(Ordering::Relaxed) {
                        "directly"
                    } else {
                        "through the page cache"
                    }
                );
                let hasher =
                    a.hasher.take().and_then(|w| w.join().ok()).ok_or_else(|| {
                        Error::Internal(format!("hashing {} failed", path.display()))
                    })?;
                (file, hasher)
            }
        };
        f.sync_all().map_err(|e| Error::io("sync", &path, e))?;
        Ok((bytes, hex::encode(hasher.finalize())))
    }
}

/// Asks the kernel to start writing a range of `file` to disk (not waiting), so the
/// final sync has less left to wait for.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, at: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor and a plain range; the call only schedules
    // writeback and its failure (e.g. unsupported) changes nothing but timing.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            at as _,
            len as _,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Elsewhere the final sync does all the waiting.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _at: u64, _len: u64) {}

impl Write for HashingFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = match &mut self.hashing {
            Hashing::Inline { inner, hasher } => {
                let n = inner.write(data)?;
                hasher.update(&data[..n]);
                n
            }
            Hashing::Aside(a) => {
                let n = data.len().min(a.buf.room());
                a.buf.push(&data[..n]);
                if a.buf.room() == 0 {
                    a.flush_chunk(false)?;
                }
                n
            }
        };
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.hashing {
            Hashing::Inline { inner, .. } => inner.flush(),
            // Chunks go out whole; the last one at `finish`.
            Hashing::Aside(_) => Ok(()),
        }
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

    /// Hashed aside, in chunks: the same bytes and hash as written inline, for
    /// sizes around the chunk size and writes of every size.
    #[test]
    fn hashing_aside_matches_a_fresh_hash() {
        let dir = tempfile::tempdir().unwrap();
        // Whether this file system takes direct writes (tmpfs, some overlays do not).
        let direct_io_works = {
            use std::os::unix::fs::FileExt;
            let (f, direct) = create_direct(&dir.path().join("probe"), true).unwrap();
            let mut block = AlignedBuf::new(DIRECT_ALIGN);
            block.push(&[7; DIRECT_ALIGN]);
            direct && f.write_all_at(block.bytes(), 0).is_ok()
        };
        for len in [
            0,
            1,
            ASIDE_CHUNK - 1,
            ASIDE_CHUNK,
            ASIDE_CHUNK + DIRECT_ALIGN,
            ASIDE_CHUNK + 1,
            3 * ASIDE_CHUNK + 77,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            for direct in [true, false] {
                let p = dir.path().join(format!("x{len}-{direct}"));
                let mut w = HashingFile::create_aside(&p, direct).unwrap();
                let Hashing::Aside(a) = &w.hashing else {
                    unreachable!()
                };
                let written_directly = a.direct.clone();
                let mut rest = &data[..];
                let mut step = 1;
                while !rest.is_empty() {
                    let n = step.min(rest.len());
                    w.write_all(&rest[..n]).unwrap();
                    rest = &rest[n..];
                    step = step * 3 + 1;
                }
                let (bytes, sha) = w.finish().unwrap();
                assert_eq!(bytes, len as u64);
                assert_eq!(std::fs::read(&p).unwrap(), data);
                assert_eq!(sha, sha256_file(&p).unwrap(), "{len} bytes");
                // Directly to the end where the file system takes direct I/O.
                assert_eq!(
                    written_directly.load(Ordering::Relaxed),
                    direct && direct_io_works,
                    "{len} bytes, direct asked: {direct}"
                );
            }
        }
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
