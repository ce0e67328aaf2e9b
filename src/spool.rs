//! Raw pages on disk, so memory stays bounded whatever the dataset's size.
//!
//! Each page's record array (the exact `data` text of the response) is appended to
//! `pages.bin` as it arrives; then a line `page offset length` is appended to
//! `index.txt`. A page is in the spool only once its index line is: a run killed
//! between the two writes leaves bytes no line points at, and the page is fetched
//! again. Two files instead of one per page: creating thousands of small files
//! cost a quarter of an export's CPU in the file system. A later run reuses the
//! indexed pages (a page whose bytes no longer parse is fetched again). The spool
//! lives inside the export's staging folder and is removed with it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::platform::records::Tape;

const DATA: &str = "pages.bin";
const INDEX: &str = "index.txt";

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    data: File,
    /// The index file, and where the next page's bytes go.
    index: Mutex<(File, u64)>,
    pages: Mutex<HashMap<u64, (u64, u64)>>,
    tapes: Mutex<Tapes>,
}

/// Tapes of pages not converted yet, within a memory budget (none by default).
#[derive(Debug, Default)]
struct Tapes {
    budget: usize,
    used: usize,
    map: HashMap<u64, Tape>,
}

#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl Spool {
    /// Opens the spool in `dir` (created if needed), keeping the pages it holds.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Spool> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create the spool folder", &dir, e))?;
        let data_path = dir.join(DATA);
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(|e| Error::io("open", &data_path, e))?;
        let size = data
            .metadata()
            .map_err(|e| Error::io("read", &data_path, e))?
            .len();
        let index_path = dir.join(INDEX);
        let pages = read_index(&index_path, size);
        let mut index = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&index_path)
            .map_err(|e| Error::io("open", &index_path, e))?;
        // A line cut by a kill must not run into the next one (`7` + `12 0 5` would
        // read as page 712): end it, so it is dropped as malformed.
        if fs::read(&index_path).is_ok_and(|t| t.last().is_some_and(|&b| b != b'\n')) {
            index
                .write_all(b"\n")
                .map_err(|e| Error::io("write", &index_path, e))?;
        }
        Ok(Spool {
            inner: Arc::new(Inner {
                dir,
                data,
                index: Mutex::new((index, size)),
                pages: Mutex::new(pages),
                tapes: Mutex::new(Tapes::default()),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Pages the spool in `dir` holds (0 if there is none).
    pub fn count(dir: &Path) -> u64 {
        let size = fs::metadata(dir.join(DATA)).map(|m| m.len()).unwrap_or(0);
        read_index(&dir.join(INDEX), size).len() as u64
    }

    /// Appends one page's record array, then its index line.
    pub fn write_page(&self, page: u64, array: &str) -> Result<()> {
        let len = array.len() as u64;
        let at = {
            let mut ix = self.inner.index.lock().expect("spool lock");
            let at = ix.1;
            ix.1 += len;
            at
        };
        let data_path = || self.inner.dir.join(DATA);
        self.inner
            .data
            .write_all_at(array.as_bytes(), at)
            .map_err(|e| Error::io("write spool file", data_path(), e))?;
        {
            let mut ix = self.inner.index.lock().expect("spool lock");
            ix.0.write_all(format!("{page} {at} {len}\n").as_bytes())
                .map_err(|e| Error::io("write spool file", self.inner.dir.join(INDEX), e))?;
        }
        self.inner
            .pages
            .lock()
            .expect("spool lock")
            .insert(page, (at, len));
        Ok(())
    }

    /// Keeps the [`Tape`]s of pages written from now on, up to `budget` bytes of
    /// them (0: none, and the ones kept are dropped), for [`Spool::take_tape`].
    pub fn keep_tapes(&self, budget: usize) {
        let mut t = self.inner.tapes.lock().expect("spool lock");
        t.budget = budget;
        if budget == 0 {
            t.map = HashMap::new();
            t.used = 0;
        }
    }

    /// Whether a tape would be kept now.
    pub fn wants_tapes(&self) -> bool {
        let t = self.inner.tapes.lock().expect("spool lock");
        t.used < t.budget
    }

    /// Keeps the tape of `page` if the budget allows.
    pub fn put_tape(&self, page: u64, tape: Tape) {
        let mut t = self.inner.tapes.lock().expect("spool lock");
        let size = tape.heap_bytes();
        if t.budget == 0 || t.used + size > t.budget {
            return;
        }
        t.used += size;
        if let Some(old) = t.map.insert(page, tape) {
            t.used -= old.heap_bytes();
        }
    }

    /// The tape of `page`, if one is kept (it is kept no longer).
    pub fn take_tape(&self, page: u64) -> Option<Tape> {
        let mut t = self.inner.tapes.lock().expect("spool lock");
        let tape = t.map.remove(&page)?;
        t.used -= tape.heap_bytes();
        Some(tape)
    }

    pub fn has_page(&self, page: u64) -> bool {
        self.inner
            .pages
            .lock()
            .expect("spool lock")
            .contains_key(&page)
    }

    pub fn read_page(&self, page: u64) -> std::io::Result<String> {
        let buf = self.read_page_bytes(page)?;
        String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// A page's bytes, not checked for UTF-8 (for readers that check as they go).
    pub fn read_page_bytes(&self, page: u64) -> std::io::Result<Vec<u8>> {
        let Some((at, len)) = self
            .inner
            .pages
            .lock()
            .expect("spool lock")
            .get(&page)
            .copied()
        else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("page {page} is not in the spool"),
            ));
        };
        read_exact_at_uninit(&self.inner.data, len as usize, at)
    }

    /// Lets every page go, and the file's cached pages with them (truncating a
    /// few hundred MB of them takes tens of ms), for a spool nothing will read
    /// again and nothing resumes from.
    pub fn release(&self) -> std::io::Result<()> {
        self.inner.pages.lock().expect("spool lock").clear();
        self.keep_tapes(0);
        self.inner.data.set_len(0)
    }

    /// Forgets a page (a damaged one, fetched again).
    pub fn remove_page(&self, page: u64) {
        self.inner.pages.lock().expect("spool lock").remove(&page);
        self.take_tape(page);
    }
}

/// `len` bytes of `file` from `at`, read straight into a new buffer's spare
/// capacity (zero-filling it first cost a pass over every page read back, and
/// over every encoded page of the final assembly).
pub(crate) fn read_exact_at_uninit(file: &File, len: usize, at: u64) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let (done, want) = (buf.len(), len - buf.len());
        let offset = libc::off_t::try_from(at + done as u64).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "offset beyond what this system's pread takes",
            )
        })?;
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is valid for writes of `want` bytes (capacity is `len`);
        // pread writes at most that many and says how many it wrote, and only
        // those are taken into the vector's length below.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, offset) };
        match n {
            n if n > 0 => {
                // SAFETY: pread initialized the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n as usize) };
            }
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the spool file ends inside a page",
                ))
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(buf)
}

/// Index lines whose bytes lie inside the data file; a later line wins.
fn read_index(path: &Path, data_size: u64) -> HashMap<u64, (u64, u64)> {
    let mut pages = HashMap::new();
    let Ok(text) = fs::read_to_string(path) else {
        return pages;
    };
    for line in text.lines() {
        let mut it = line.split(' ').map(|x| x.parse::<u64>());
        if let (Some(Ok(p)), Some(Ok(at)), Some(Ok(len)), None) =
            (it.next(), it.next(), it.next(), it.next())
        {
            if at.checked_add(len).is_some_and(|end| end <= data_size) {
                pages.insert(p, (at, len));
            }
        }
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::create(dir.path().join("spool")).unwrap();
        s.write_page(3, r#"[{"a":"地市"}]"#).unwrap();
        s.write_page(1, "[]").unwrap();
        assert_eq!(s.read_page(3).unwrap(), r#"[{"a":"地市"}]"#);
        drop(s);
        let s = Spool::create(dir.path().join("spool")).unwrap();
        assert!(s.has_page(1) && s.has_page(3) && !s.has_page(2));
        assert_eq!(s.read_page(1).unwrap(), "[]");
        assert_eq!(Spool::count(&dir.path().join("spool")), 2);
    }

    /// Pages of many sizes read back byte for byte; a data file cut while the
    /// spool is open gives an error for the page it cut, not short bytes.
    #[test]
    fn pages_read_back_exactly_and_a_cut_page_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let s = Spool::create(&path).unwrap();
        let pages: Vec<String> = [0usize, 1, 4095, 4096, 4097, 1 << 20]
            .iter()
            .map(|&n| "地".repeat(n / 3 + 1))
            .collect();
        for (i, p) in pages.iter().enumerate() {
            s.write_page(i as u64 + 1, p).unwrap();
        }
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(s.read_page_bytes(i as u64 + 1).unwrap(), p.as_bytes());
        }
        let size = File::open(path.join(DATA))
            .unwrap()
            .metadata()
            .unwrap()
            .len();
        let data = File::options().write(true).open(path.join(DATA)).unwrap();
        data.set_len(size - 10).unwrap();
        let e = s.read_page_bytes(pages.len() as u64).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(s.read_page_bytes(1).unwrap(), pages[0].as_bytes());
    }

    /// A released spool holds nothing: its file is empty, its pages and tapes
    /// gone, and a page asked for is an error, not stale bytes.
    #[test]
    fn a_released_spool_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let s = Spool::create(&path).unwrap();
        s.keep_tapes(1 << 20);
        s.write_page(1, "[1]").unwrap();
        s.put_tape(1, Tape::default());
        s.release().unwrap();
        assert!(!s.has_page(1));
        assert!(s.take_tape(1).is_none());
        let e = s.read_page_bytes(1).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(std::fs::metadata(path.join(DATA)).unwrap().len(), 0);
        drop(s);
        assert_eq!(
            Spool::count(&path),
            0,
            "the index's line points past the file"
        );
    }

    /// Tapes are kept within the budget, replaced, taken once, dropped with their
    /// page and all dropped when tapes are turned off; the accounting ends at 0.
    #[test]
    fn tapes_are_kept_within_the_budget_and_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::create(dir.path().join("spool")).unwrap();
        let tape = |n: usize| Tape {
            len: n,
            records: vec![1; n],
            key_of: vec![0; n],
            spans: vec![(0, 1); n],
            ..Tape::default()
        };
        let size = tape(100).heap_bytes();
        s.put_tape(1, tape(100));
        assert!(s.take_tape(1).is_none(), "no budget, no tapes");
        s.keep_tapes(2 * size + size / 2);
        assert!(s.wants_tapes());
        s.put_tape(1, tape(100));
        s.put_tape(2, tape(100));
        s.put_tape(3, tape(100));
        assert!(s.take_tape(3).is_none(), "over the budget");
        // A replacement that would go over the budget keeps the old tape.
        s.put_tape(2, tape(101));
        assert_eq!(s.take_tape(2).map(|t| t.len), Some(100));
        assert!(s.take_tape(2).is_none(), "taken once");
        s.write_page(1, "[]").unwrap();
        s.remove_page(1);
        assert!(s.take_tape(1).is_none(), "dropped with its page");
        assert_eq!(s.inner.tapes.lock().unwrap().used, 0);
        s.put_tape(4, tape(10));
        s.keep_tapes(0);
        assert!(s.take_tape(4).is_none() && !s.wants_tapes());
        assert_eq!(s.inner.tapes.lock().unwrap().used, 0);
    }

    #[test]
    fn a_cut_data_file_or_index_line_loses_only_those_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let s = Spool::create(&path).unwrap();
        s.write_page(1, "[1]").unwrap();
        s.write_page(2, "[2222]").unwrap();
        drop(s);
        // Data cut short (a disk fault) and a half-written index line (a kill).
        let data = File::options().write(true).open(path.join(DATA)).unwrap();
        data.set_len(4).unwrap();
        let mut ix = OpenOptions::new()
            .append(true)
            .open(path.join(INDEX))
            .unwrap();
        ix.write_all(b"7").unwrap();
        let s = Spool::create(&path).unwrap();
        assert!(s.has_page(1));
        assert!(!s.has_page(2) && !s.has_page(7));
        // The cut line does not swallow the next one.
        s.write_page(12, "[12]").unwrap();
        drop(s);
        let s = Spool::create(&path).unwrap();
        assert!(s.has_page(12) && !s.has_page(712));
        // A page written after the cut goes after the data that is left.
        s.write_page(2, "[2]").unwrap();
        assert_eq!(s.read_page(2).unwrap(), "[2]");
        assert_eq!(s.read_page(1).unwrap(), "[1]");
    }
}
