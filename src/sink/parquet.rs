//! The Parquet writer: zstd, page statistics, bounded row groups, rolling files.

use std::path::PathBuf;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::{part_name, room, FileEntry, Format, HashingFile};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct ParquetOptions {
    pub zstd_level: i32,
    /// Rows per row group: bounds the writer's memory (it buffers a whole group).
    pub row_group_rows: usize,
    /// Key-value metadata written into every file (dataset id, update date).
    pub metadata: Vec<(String, String)>,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            zstd_level: 1,
            row_group_rows: 64 * 1024,
            metadata: Vec::new(),
        }
    }
}

/// The writer properties of every Parquet file jdop writes.
pub fn writer_props(opts: &ParquetOptions) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(opts.zstd_level)
        .map_err(|e| Error::usage(format!("invalid zstd level {}: {e}", opts.zstd_level)))?;
    let kv = opts
        .metadata
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        .set_created_by(format!("jdop version {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(kv))
        .build())
}

pub struct ParquetSink {
    dir: PathBuf,
    /// Path of the folder under the snapshot (`地市=杭州市/`), or empty.
    prefix: String,
    /// Write buffer of each file.
    buffer: usize,
    schema: SchemaRef,
    props: WriterProperties,
    rows_per_file: Option<u64>,
    current: Option<(ArrowWriter<HashingFile>, String, u64)>,
    files: Vec<FileEntry>,
    dataset: String,
}

impl ParquetSink {
    pub fn new(
        dir: PathBuf,
        schema: SchemaRef,
        rows_per_file: Option<u64>,
        opts: &ParquetOptions,
        dataset: &str,
    ) -> Result<ParquetSink> {
        let props = writer_props(opts)?;
        Ok(ParquetSink {
            dir,
            prefix: String::new(),
            buffer: 1 << 20,
            schema,
            props,
            rows_per_file: rows_per_file.filter(|&n| n > 0),
            current: None,
            files: Vec::new(),
            dataset: dataset.to_string(),
        })
    }

    /// Writes into `sub` (a partition folder, created) under `dir`, with a small
    /// write buffer (many partitions are open at once).
    pub fn in_subdir(mut self, sub: &str) -> Result<ParquetSink> {
        self.dir = self.dir.join(sub);
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        self.prefix = format!("{sub}/");
        self.buffer = 64 << 10;
        Ok(self)
    }

    /// Bytes buffered for the row group being built.
    pub fn in_progress_bytes(&self) -> usize {
        self.current
            .as_ref()
            .map(|c| c.0.in_progress_size())
            .unwrap_or(0)
    }

    /// Ends the row group being built (bounds memory with many open partitions).
    pub fn flush(&mut self) -> Result<()> {
        if let Some((w, name, _)) = self.current.as_mut() {
            if let Err(e) = w.flush() {
                let what = format!("Parquet file `{name}`");
                return Err(self.err(&what, e));
            }
        }
        Ok(())
    }

    fn err(&self, what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Write {
            dataset: self.dataset.clone(),
            what: what.to_string(),
            source: Box::new(e),
        }
    }

    fn open(&mut self) -> Result<()> {
        let name = part_name(self.files.len(), Format::Parquet);
        let file = HashingFile::create_with_buffer(&self.dir.join(&name), self.buffer)?;
        let w = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
            .map_err(|e| self.err(&format!("Parquet file `{name}`"), e))?;
        self.current = Some((w, name, 0));
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        if let Some((w, name, rows)) = self.current.take() {
            let file = w
                .into_inner()
                .map_err(|e| self.err(&format!("Parquet file `{name}`"), e))?;
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

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0usize;
        while offset < batch.num_rows() {
            if self.current.is_none() {
                self.open()?;
            }
            let in_file = self.current.as_ref().map(|c| c.2).unwrap_or(0);
            let take =
                room(self.rows_per_file, in_file).min((batch.num_rows() - offset) as u64) as usize;
            let slice = batch.slice(offset, take);
            let (w, name, rows) = self.current.as_mut().expect("opened above");
            if let Err(e) = w.write(&slice) {
                let what = format!("Parquet file `{name}`");
                return Err(self.err(&what, e));
            }
            *rows += take as u64;
            offset += take;
            if Some(*rows) == self.rows_per_file {
                self.roll()?;
            }
        }
        Ok(())
    }

    /// Finishes the last file; returns the files in path order.
    pub fn close(mut self) -> Result<Vec<FileEntry>> {
        self.roll()?;
        Ok(self.files)
    }
}
