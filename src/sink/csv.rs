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
    header: Vec<String>,
    index: HashMap<String, usize>,
    targets: Vec<Option<Target>>,
    opts: CsvOptions,
    rows_per_file: Option<u64>,
    current: Option<(csv::Writer<CsvOut>, String, u64)>,
    files: Vec<FileEntry>,
    dataset: String,
    cells: Vec<String>,
    scratch: String,
    /// Per key position in a record, the column it was last time.
    hints: Vec<usize>,
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
        let index = header
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let n = header.len();
        let mut targets = targets;
        targets.resize(n, None);
        CsvSink {
            dir,
            prefix: String::new(),
            header,
            index,
            targets,
            opts,
            rows_per_file: rows_per_file.filter(|&n| n > 0),
            current: None,
            files: Vec::new(),
            dataset: dataset.to_string(),
            hints: Vec::new(),
            cells: vec![String::new(); n],
            scratch: String::new(),
        }
    }

    /// Writes into `sub` (a partition folder, created) under `dir`.
    pub fn in_subdir(mut self, sub: &str) -> Result<CsvSink> {
        self.dir = self.dir.join(sub);
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        self.prefix = format!("{sub}/");
        Ok(self)
    }

    fn err(&self, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        let name = self.current.as_ref().map(|c| c.1.as_str()).unwrap_or("");
        Error::Write {
            dataset: self.dataset.clone(),
            what: format!("CSV file `{name}`"),
            source: Box::new(e),
        }
    }

    fn open(&mut self) -> Result<()> {
        let name = part_name(self.files.len(), Format::Csv);
        let path = self.dir.join(&name);
        let mut file = HashingFile::create(&path)?;
        if self.opts.encoding == CsvEncoding::Utf8Bom {
            file.write_all(b"\xEF\xBB\xBF")
                .map_err(|e| Error::io("write", &path, e))?;
        }
        let out = CsvOut {
            file,
            gb18030: self.opts.encoding == CsvEncoding::Gb18030,
            pending: Vec::new(),
        };
        let mut w = csv::WriterBuilder::new()
            .terminator(if self.opts.crlf {
                csv::Terminator::CRLF
            } else {
                csv::Terminator::Any(b'\n')
            })
            .from_writer(out);
        w.write_record(&self.header).map_err(|e| self.err(e))?;
        self.current = Some((w, name, 0));
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        if let Some((w, name, rows)) = self.current.take() {
            let file = w.into_inner().map_err(|e| {
                let path = self.dir.join(&name);
                Error::io("flush", path, e.into_error())
            })?;
            let (bytes, sha256) = file.finish()?;
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
        for rec in records {
            self.write_record(rec)?;
        }
        Ok(())
    }

    /// Writes one record.
    pub fn write_record(&mut self, rec: &RawRecord<'_>) -> Result<(), WriteOrPage> {
        {
            for c in self.cells.iter_mut() {
                c.clear();
            }
            for (pos, (k, v)) in rec.iter().enumerate() {
                let i = match self.hints.get(pos) {
                    Some(&h) if self.header.get(h).is_some_and(|n| n == k) => h,
                    _ => {
                        let Some(&i) = self.index.get(k.as_ref()) else {
                            continue;
                        };
                        if pos < self.hints.len() {
                            self.hints[pos] = i;
                        } else {
                            self.hints.resize(pos, usize::MAX);
                            self.hints.push(i);
                        }
                        i
                    }
                };
                // A key repeated in one record: the last value wins (as in serde_json).
                self.cells[i].clear();
                cell_text(v, &mut self.cells[i]).map_err(WriteOrPage::Page)?;
                if let (Some(t), false) = (self.targets[i], self.cells[i].is_empty()) {
                    self.scratch.clear();
                    if t.canonical(&self.cells[i], &mut self.scratch).is_some() {
                        std::mem::swap(&mut self.cells[i], &mut self.scratch);
                    }
                }
            }
            if self.current.is_none() {
                self.open().map_err(WriteOrPage::Write)?;
            }
            let (w, _, rows) = self.current.as_mut().expect("opened above");
            if let Err(e) = w.write_record(&self.cells) {
                return Err(WriteOrPage::Write(self.err(e)));
            }
            *rows += 1;
            if room(self.rows_per_file, *rows) == 0 {
                self.roll().map_err(WriteOrPage::Write)?;
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
