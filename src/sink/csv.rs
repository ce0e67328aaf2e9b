//! The CSV writer: header row, RFC 4180 quoting, UTF-8 (optional BOM) or GB18030,
//! CRLF or LF, one row per record in page order. It writes from the raw records, so
//! every value keeps its exact text: strings unescaped, numbers and booleans as sent,
//! nested values as JSON text, `null` and missing keys as empty fields. Values of a
//! typed column are written in their canonical text instead (ISO dates,
//! `yyyy-MM-dd HH:mm:ss[.SSS]`, decimals at the column's scale; see
//! [`crate::detect::Target::canonical`]), empty strings there as empty fields.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use super::{part_name, room, CsvEncoding, CsvOptions, FileEntry, Format, HashingFile};
use crate::detect::Target;
use crate::error::{Error, PageError, Result};
use crate::platform::RawRecord;

/// The file under the CSV writer: UTF-8 as is, or re-encoded to GB18030.
pub struct CsvOut {
    file: HashingFile,
    gb18030: bool,
    /// Bytes of a UTF-8 char split across two writes.
    pending: Vec<u8>,
}

impl CsvOut {
    fn finish(self) -> Result<(u64, String)> {
        self.file.finish()
    }
}

impl Write for CsvOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.gb18030 {
            return self.file.write(buf);
        }
        self.pending.extend_from_slice(buf);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        };
        let text = std::str::from_utf8(&self.pending[..valid]).expect("checked above");
        let (bytes, _, _) = encoding_rs::GB18030.encode(text);
        self.file.write_all(&bytes)?;
        self.pending.drain(..valid);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

pub struct CsvSink {
    dir: PathBuf,
    /// Path of the folder under the snapshot (`地市=杭州市/`), or empty.
    prefix: String,
    opts: CsvOptions,
    rows_per_file: Option<u64>,
    current: Option<(CsvOut, String, u64)>,
    files: Vec<FileEntry>,
    dataset: String,
    /// Formats this sink's own records (`write_record`).
    fmt: CsvFormatter,
    page: CsvPage,
}

/// Records formatted as CSV rows (UTF-8), with the end of each row: formatted on
/// any thread, written in order by [`CsvSink::write_page`].
#[derive(Debug, Default)]
pub struct CsvPage {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl CsvPage {
    pub fn rows(&self) -> usize {
        self.ends.len()
    }
}

/// Formats records into CSV rows for one header (cheap to clone, one per thread).
#[derive(Clone)]
pub struct CsvFormatter {
    header: std::sync::Arc<Vec<String>>,
    index: std::sync::Arc<HashMap<String, usize>>,
    targets: std::sync::Arc<Vec<Option<Target>>>,
    crlf: bool,
    cells: Vec<String>,
    scratch: String,
    hints: crate::platform::records::KeyHints,
}

impl CsvFormatter {
    fn new(header: Vec<String>, targets: Vec<Option<Target>>, crlf: bool) -> CsvFormatter {
        let index = header
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let n = header.len();
        let mut targets = targets;
        targets.resize(n, None);
        CsvFormatter {
            header: std::sync::Arc::new(header),
            index: std::sync::Arc::new(index),
            targets: std::sync::Arc::new(targets),
            crlf,
            cells: vec![String::new(); n],
            scratch: String::new(),
            hints: Default::default(),
        }
    }

    /// A writer into `out`; `buffer`: its buffer (rows are flushed one at a time,
    /// so a small one is enough, and cheap to set up for a single record).
    fn writer(&self, out: Vec<u8>, buffer: usize) -> csv::Writer<Vec<u8>> {
        csv::WriterBuilder::new()
            .buffer_capacity(buffer)
            .terminator(if self.crlf {
                csv::Terminator::CRLF
            } else {
                csv::Terminator::Any(b'\n')
            })
            .from_writer(out)
    }

    /// The header row.
    fn header_row(&self) -> Vec<u8> {
        let mut w = self.writer(Vec::new(), 1024);
        w.write_record(self.header.iter())
            .expect("writing to memory");
        w.into_inner().expect("writing to memory")
    }

    /// Formats `records` as rows appended to `page`.
    pub fn format(
        &mut self,
        records: &[RawRecord<'_>],
        page: &mut CsvPage,
    ) -> Result<(), PageError> {
        let buffer = if records.len() > 1 { 8192 } else { 1024 };
        let mut w = self.writer(std::mem::take(&mut page.bytes), buffer);
        let mut result = Ok(());
        for rec in records {
            if let Err(e) = self.row(rec) {
                result = Err(e);
                break;
            }
            w.write_record(&self.cells).expect("writing to memory");
            w.flush().expect("writing to memory");
            page.ends.push(w.get_ref().len());
        }
        page.bytes = w.into_inner().expect("writing to memory");
        result
    }

    /// Fills `cells` with the fields of one record.
    fn row(&mut self, rec: &RawRecord<'_>) -> Result<(), PageError> {
        for c in self.cells.iter_mut() {
            c.clear();
        }
        for (pos, (k, v)) in rec.iter().enumerate() {
            let i = match self.hints.get(pos) {
                Some(h) if self.header[h] == *k => h,
                _ => {
                    let Some(&i) = self.index.get(k.as_ref()) else {
                        continue;
                    };
                    self.hints.set(pos, i);
                    i
                }
            };
            // A key repeated in one record: the last value wins (as in serde_json).
            self.cells[i].clear();
            cell_text(v, &mut self.cells[i])?;
            if let (Some(t), false) = (self.targets[i], self.cells[i].is_empty()) {
                self.scratch.clear();
                if t.canonical(&self.cells[i], &mut self.scratch).is_some() {
                    std::mem::swap(&mut self.cells[i], &mut self.scratch);
                }
            }
        }
        Ok(())
    }
}

impl CsvSink {
    /// A writer of `header` columns; `targets` (same order, may be empty) says
    /// which columns are typed and written in canonical text.
    pub fn new(
        dir: PathBuf,
        header: Vec<String>,
        targets: Vec<Option<Target>>,
        opts: CsvOptions,
        rows_per_file: Option<u64>,
        dataset: &str,
    ) -> CsvSink {
        CsvSink {
            dir,
            prefix: String::new(),
            fmt: CsvFormatter::new(header, targets, opts.crlf),
            opts,
            rows_per_file: rows_per_file.filter(|&n| n > 0),
            current: None,
            files: Vec::new(),
            dataset: dataset.to_string(),
            page: CsvPage::default(),
        }
    }

    /// A formatter of rows for this sink's header, to format pages on other threads.
    pub fn formatter(&self) -> CsvFormatter {
        self.fmt.clone()
    }

    /// Writes into `sub` (a partition folder, created) under `dir`.
    pub fn in_subdir(mut self, sub: &str) -> Result<CsvSink> {
        self.dir = self.dir.join(sub);
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        self.prefix = format!("{sub}/");
        Ok(self)
    }

    fn open(&mut self) -> Result<()> {
        let name = part_name(self.files.len(), Format::Csv);
        let path = self.dir.join(&name);
        let mut file = HashingFile::create(&path)?;
        if self.opts.encoding == CsvEncoding::Utf8Bom {
            file.write_all(b"\xEF\xBB\xBF")
                .map_err(|e| Error::io("write", &path, e))?;
        }
        let mut out = CsvOut {
            file,
            gb18030: self.opts.encoding == CsvEncoding::Gb18030,
            pending: Vec::new(),
        };
        out.write_all(&self.fmt.header_row())
            .map_err(|e| Error::io("write", &path, e))?;
        self.current = Some((out, name, 0));
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        if let Some((mut out, name, rows)) = self.current.take() {
            out.flush()
                .map_err(|e| Error::io("flush", self.dir.join(&name), e))?;
            let (bytes, sha256) = out.finish()?;
            self.files.push(FileEntry {
                path: format!("{}{name}", self.prefix),
                rows,
                bytes,
                sha256,
            });
        }
        Ok(())
    }

    /// Writes the records of one page.
    pub fn write_records(&mut self, records: &[RawRecord<'_>]) -> Result<(), WriteOrPage> {
        let mut page = std::mem::take(&mut self.page);
        page.bytes.clear();
        page.ends.clear();
        let formatted = self.fmt.format(records, &mut page);
        // The rows before a bad record are written, as they were one by one.
        let written = self.write_page(&page).map_err(WriteOrPage::Write);
        self.page = page;
        written?;
        formatted.map_err(WriteOrPage::Page)
    }

    /// Writes one record.
    pub fn write_record(&mut self, rec: &RawRecord<'_>) -> Result<(), WriteOrPage> {
        self.write_records(std::slice::from_ref(rec))
    }

    /// Writes rows formatted by [`CsvFormatter::format`], in order, rolling to a
    /// new file every `rows_per_file` rows.
    pub fn write_page(&mut self, page: &CsvPage) -> Result<()> {
        let mut start = 0;
        let mut r = 0;
        while r < page.ends.len() {
            if self.current.is_none() {
                self.open()?;
            }
            let (out, name, rows) = self.current.as_mut().expect("opened above");
            let fit = room(self.rows_per_file, *rows).min((page.ends.len() - r) as u64) as usize;
            let end = page.ends[r + fit - 1];
            if let Err(e) = out.write_all(&page.bytes[start..end]) {
                let what = format!("CSV file `{name}`");
                return Err(Error::Write {
                    dataset: self.dataset.clone(),
                    what,
                    source: Box::new(e),
                });
            }
            *rows += fit as u64;
            r += fit;
            start = end;
            if room(self.rows_per_file, *rows) == 0 {
                self.roll()?;
            }
        }
        Ok(())
    }

    pub fn close(mut self) -> Result<Vec<FileEntry>> {
        self.roll()?;
        Ok(self.files)
    }
}

/// A CSV write can fail on the output or on a page's content.
#[derive(Debug)]
pub enum WriteOrPage {
    Write(Error),
    Page(PageError),
}

/// The CSV text of one raw JSON value.
pub fn cell_text(raw: &str, out: &mut String) -> Result<(), PageError> {
    match raw.as_bytes().first() {
        Some(b'n') => {}
        Some(b'"') => match crate::platform::records::string_content(raw) {
            Some(s) => out.push_str(&s),
            // Not a valid string: serde_json says why.
            None => out.push_str(&serde_json::from_str::<String>(raw)?),
        },
        _ => out.push_str(raw),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::split_records;

    #[test]
    fn cells_keep_exact_text_and_nested_json() {
        let mut s = String::new();
        for (raw, want) in [
            (r#""01425""#, "01425"),
            ("12.50", "12.50"),
            ("null", ""),
            (r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#""a\"b,c""#, "a\"b,c"),
        ] {
            s.clear();
            cell_text(raw, &mut s).unwrap();
            assert_eq!(s, want);
        }
    }

    #[test]
    fn gb18030_output_takes_characters_cut_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        let mut out = CsvOut {
            file: HashingFile::create(&path).unwrap(),
            gb18030: true,
            pending: Vec::new(),
        };
        let text = "杭州,🙂\n".as_bytes();
        // Cut inside 杭 (3 bytes) and inside the emoji (4 bytes).
        for part in [&text[..1], &text[1..5], &text[5..9], &text[9..]] {
            out.write_all(part).unwrap();
        }
        out.flush().unwrap();
        out.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (back, _, bad) = encoding_rs::GB18030.decode(&bytes);
        assert!(!bad);
        assert_eq!(back, "杭州,🙂\n");
    }

    #[test]
    fn rows_roll_into_numbered_files_with_headers() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = CsvSink::new(
            dir.path().to_path_buf(),
            vec!["a".into(), "地市".into()],
            Vec::new(),
            CsvOptions {
                encoding: CsvEncoding::Utf8Bom,
                crlf: true,
            },
            Some(2),
            "cata_1",
        );
        let recs = split_records(r#"[{"a":1,"地市":"杭州"},{"地市":"x,y"},{"a":"q\"q"}]"#).unwrap();
        sink.write_records(&recs).unwrap();
        let files = sink.close().unwrap();
        assert_eq!(files.iter().map(|f| f.rows).collect::<Vec<_>>(), [2, 1]);
        let first = std::fs::read(dir.path().join("part-00000.csv")).unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "\u{feff}a,地市\r\n1,杭州\r\n,\"x,y\"\r\n"
        );
        let second = std::fs::read_to_string(dir.path().join("part-00001.csv")).unwrap();
        assert_eq!(second, "\u{feff}a,地市\r\n\"q\"\"q\",\r\n");
    }

    #[test]
    fn gb18030_lf_and_canonical_typed_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = CsvSink::new(
            dir.path().to_path_buf(),
            vec!["地市".into(), "d".into(), "amt".into()],
            vec![
                None,
                Some(Target::Date(crate::detect::DateFmt::Chinese)),
                Some(Target::Decimal {
                    precision: 18,
                    scale: 2,
                }),
            ],
            CsvOptions {
                encoding: CsvEncoding::Gb18030,
                crlf: false,
            },
            None,
            "cata_1",
        );
        // Many records so that the csv writer's buffer splits a character.
        let one = r#"{"地市":"杭州市🙂","d":"2023年01月05日","amt":"12.5"}"#;
        let page = format!("[{}]", vec![one; 3000].join(","));
        sink.write_records(&split_records(&page).unwrap()).unwrap();
        sink.write_records(&split_records(r#"[{"d":"","amt":null}]"#).unwrap())
            .unwrap();
        sink.close().unwrap();
        let bytes = std::fs::read(dir.path().join("part-00000.csv")).unwrap();
        let (text, _, bad) = encoding_rs::GB18030.decode(&bytes);
        assert!(!bad);
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "地市,d,amt");
        assert_eq!(lines[1], "杭州市🙂,2023-01-05,12.50");
        assert_eq!(lines[3000], "杭州市🙂,2023-01-05,12.50");
        assert_eq!(lines[3001], ",,");
        assert_ne!(bytes, text.as_bytes(), "not UTF-8");
    }
}
