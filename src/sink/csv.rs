//! The CSV writer: header row, RFC 4180 quoting, UTF-8 (optional BOM), one row per
//! record in page order. It writes from the raw records, so every value keeps its
//! exact text: strings unescaped, numbers and booleans as sent, nested values as
//! JSON text, `null` and missing keys as empty fields.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use super::{part_name, room, FileEntry, Format, HashingFile};
use crate::error::{Error, PageError, Result};
use crate::platform::RawRecord;

pub struct CsvSink {
    dir: PathBuf,
    header: Vec<String>,
    index: HashMap<String, usize>,
    bom: bool,
    rows_per_file: Option<u64>,
    current: Option<(csv::Writer<HashingFile>, String, u64)>,
    files: Vec<FileEntry>,
    dataset: String,
    cells: Vec<String>,
}

impl CsvSink {
    pub fn new(
        dir: PathBuf,
        header: Vec<String>,
        bom: bool,
        rows_per_file: Option<u64>,
        dataset: &str,
    ) -> CsvSink {
        let index = header
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let n = header.len();
        CsvSink {
            dir,
            header,
            index,
            bom,
            rows_per_file: rows_per_file.filter(|&n| n > 0),
            current: None,
            files: Vec::new(),
            dataset: dataset.to_string(),
            cells: vec![String::new(); n],
        }
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
        if self.bom {
            file.write_all(b"\xEF\xBB\xBF")
                .map_err(|e| Error::io("write", &path, e))?;
        }
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(file);
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
                path: name,
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
            for c in self.cells.iter_mut() {
                c.clear();
            }
            for (k, v) in rec {
                let Some(&i) = self.index.get(k.as_ref()) else {
                    continue;
                };
                // A key repeated in one record: the last value wins (as in serde_json).
                self.cells[i].clear();
                cell_text(v.get(), &mut self.cells[i]).map_err(WriteOrPage::Page)?;
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
fn cell_text(raw: &str, out: &mut String) -> Result<(), PageError> {
    match raw.as_bytes().first() {
        Some(b'n') => {}
        Some(b'"') => {
            let s: String = serde_json::from_str(raw)?;
            out.push_str(&s);
        }
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
            true,
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
}
