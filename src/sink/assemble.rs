//! Row groups encoded while pages still arrive, assembled into one Parquet file at
//! the end.
//!
//! A dataset's schema is final only after its last page, but waiting for it to
//! start encoding leaves all the CPU work after the network work. So each row
//! group ("window" of pages) is encoded as soon as its pages and all pages before
//! it are in, under the schema inferred from that prefix (provisional). Column
//! chunks are encoded per top-level column and their pages spilled to a file in the
//! staging folder ([`SpillFactory`]), so memory does not grow with the dataset.
//!
//! At the end, each row group of the output takes, column by column, the chunk
//! encoded under the same Arrow type as the final schema's, or encodes the
//! column again: all nulls for a column that first appeared later (no decoding),
//! or from the spooled pages for a column whose type changed. A chunk's bytes
//! depend only on the column's type and values, so the file is the same whether a
//! chunk was encoded early or late, at any concurrency.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::{new_null_array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::column::page_store::{PageKey, PageStore, PageStoreArgs, PageStoreFactory};
use parquet::errors::ParquetError;
use parquet::file::properties::{WriterProperties, WriterPropertiesPtr};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;

/// Encoded pages of column chunks, appended to one file, read back once.
#[derive(Debug)]
pub struct SpillFile {
    file: File,
    end: Mutex<u64>,
    path: std::path::PathBuf,
}

impl SpillFile {
    pub fn create(path: &Path) -> std::io::Result<Arc<SpillFile>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(SpillFile {
            file,
            end: Mutex::new(0),
            path: path.to_path_buf(),
        }))
    }

    fn put(&self, bytes: &[u8]) -> std::io::Result<u64> {
        let mut end = self.end.lock().expect("spill lock");
        let at = *end;
        self.file.write_all_at(bytes, at)?;
        *end += bytes.len() as u64;
        Ok(at)
    }

    fn get(&self, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
        crate::spool::read_exact_at_uninit(&self.file, len, at)
    }

    pub fn bytes(&self) -> u64 {
        *self.end.lock().expect("spill lock")
    }
}

/// Column chunks whose pages live in a [`SpillFile`].
#[derive(Debug, Clone)]
pub struct SpillFactory(pub Arc<SpillFile>);

struct SpillStore {
    file: Arc<SpillFile>,
    pages: Vec<(u64, usize)>,
}

impl PageStore for SpillStore {
    fn put(&mut self, value: Bytes) -> parquet::errors::Result<PageKey> {
        let at = self
            .file
            .put(&value)
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        self.pages.push((at, value.len()));
        Ok(PageKey::new(self.pages.len() as u64 - 1))
    }

    fn take(&mut self, key: PageKey) -> parquet::errors::Result<Bytes> {
        let (at, len) = *self
            .pages
            .get(key.get() as usize)
            .ok_or_else(|| ParquetError::General(format!("no spilled page {}", key.get())))?;
        let bytes = self
            .file
            .get(at, len)
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        Ok(Bytes::from(bytes))
    }
}

impl PageStoreFactory for SpillFactory {
    fn create(&self, _: &PageStoreArgs<'_>) -> parquet::errors::Result<Box<dyn PageStore>> {
        Ok(Box::new(SpillStore {
            file: self.0.clone(),
            pages: Vec::new(),
        }))
    }
}

/// Whether more than half of a column's first sampled non-null values differ.
fn mostly_distinct(arrays: &[ArrayRef]) -> bool {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    let hasher = RandomState::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut n = 0usize;
    'arrays: for a in arrays {
        for i in 0..a.len() {
            if a.is_null(i) {
                continue;
            }
            let h = match a.data_type() {
                DataType::Utf8 => hasher.hash_one(a.as_string::<i32>().value(i)),
                DataType::Int64 => hasher.hash_one(a.as_primitive::<Int64Type>().value(i)),
                DataType::Decimal128(..) => {
                    hasher.hash_one(a.as_primitive::<Decimal128Type>().value(i))
                }
                DataType::Float64 => {
                    hasher.hash_one(a.as_primitive::<Float64Type>().value(i).to_bits())
                }
                DataType::Date32 => hasher.hash_one(a.as_primitive::<Date32Type>().value(i)),
                DataType::Timestamp(..) => {
                    hasher.hash_one(a.as_primitive::<TimestampMillisecondType>().value(i))
                }
                _ => return false,
            };
            seen.insert(h);
            n += 1;
            if n >= DICTIONARY_SAMPLE {
                break 'arrays;
            }
        }
    }
    n > 0 && seen.len() * 2 > n
}

/// Leaf columns of a field in the Parquet schema.
fn leaves(t: &DataType) -> usize {
    match t {
        DataType::Struct(fields) => fields.iter().map(|f| leaves(f.data_type())).sum(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            leaves(f.data_type())
        }
        _ => 1,
    }
}

/// One row group's encoded columns: per top-level field of `schema`, its leaf
/// chunks (`None`: not encoded).
pub struct EncodedGroup {
    pub schema: SchemaRef,
    pub rows: usize,
    pub fields: Vec<Option<Vec<ArrowColumnChunk>>>,
}

/// Encodes columns of row groups with the snapshot's writer properties.
#[derive(Clone)]
pub struct GroupEncoder {
    base: WriterProperties,
    /// The properties once the dictionary choice is made (from the first row group).
    decided: Arc<OnceLock<WriterPropertiesPtr>>,
    spill: SpillFactory,
}

/// Values sampled per column to choose its dictionary encoding.
const DICTIONARY_SAMPLE: usize = 10_000;

impl GroupEncoder {
    pub fn new(props: WriterProperties, spill: SpillFactory) -> GroupEncoder {
        GroupEncoder {
            base: props,
            decided: Arc::new(OnceLock::new()),
            spill,
        }
    }

    /// The same encoder for a new pass: no dictionary choice made yet, and an
    /// empty spill file (the earlier pass's row groups are dropped).
    pub fn fresh(&self) -> std::io::Result<GroupEncoder> {
        // A new file, not the old one truncated: whatever still holds the old one
        // cannot write into the new pass's.
        match std::fs::remove_file(&self.spill.0.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(GroupEncoder {
            base: self.base.clone(),
            decided: Arc::new(OnceLock::new()),
            spill: SpillFactory(SpillFile::create(&self.spill.0.path)?),
        })
    }

    /// Chooses, once, which columns skip dictionary encoding: those whose first
    /// 10,000 values in the first row group are more than half distinct (codes,
    /// ids, amounts). A dictionary there costs time and makes the file larger.
    /// `None` (no first row group to look at) keeps dictionaries everywhere.
    pub fn decide(&self, first: Option<(&SchemaRef, &[Vec<ArrayRef>])>) {
        self.decided.get_or_init(|| {
            let mut b = self.base.clone().into_builder();
            if let Some((schema, columns)) = first {
                for (f, arrays) in schema.fields().iter().zip(columns) {
                    if mostly_distinct(arrays) {
                        b = b.set_column_dictionary_enabled(
                            ColumnPath::from(f.name().as_str()),
                            false,
                        );
                    }
                }
            }
            Arc::new(b.build())
        });
    }

    /// The properties in force (dictionaries everywhere if nothing was decided).
    pub fn props(&self) -> WriterPropertiesPtr {
        self.decide(None);
        self.decided.get().expect("decided above").clone()
    }

    fn writers(&self, schema: &SchemaRef) -> parquet::errors::Result<Vec<ArrowColumnWriter>> {
        let props = self.props();
        let descr = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(schema)?;
        let dummy = SerializedFileWriter::new(std::io::sink(), descr.root_schema_ptr(), props)?;
        ArrowRowGroupWriterFactory::new(&dummy, schema.clone())
            .with_page_store_factory(Arc::new(self.spill.clone()))
            .create_column_writers(0)
    }

    /// Encodes the fields `which` (all when `None`) of `columns` (per field, the
    /// arrays of consecutive batches, in order) in parallel.
    pub fn encode(
        &self,
        schema: &SchemaRef,
        columns: &[Vec<ArrayRef>],
        rows: usize,
        which: Option<&[usize]>,
    ) -> parquet::errors::Result<EncodedGroup> {
        let mut writers = self.writers(schema)?.into_iter();
        let mut per_field: Vec<(usize, Vec<ArrowColumnWriter>)> = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            let ws: Vec<ArrowColumnWriter> = writers.by_ref().take(leaves(f.data_type())).collect();
            if which.is_none_or(|w| w.contains(&i)) {
                per_field.push((i, ws));
            }
        }
        let encoded: Vec<(usize, Vec<ArrowColumnChunk>)> = per_field
            .into_par_iter()
            .map(|(i, mut ws)| {
                let field = schema.field(i);
                for array in &columns[i] {
                    for (w, leaf) in ws.iter_mut().zip(compute_leaves(field, array)?) {
                        w.write(&leaf)?;
                    }
                }
                let chunks = ws
                    .into_iter()
                    .map(|w| w.close())
                    .collect::<parquet::errors::Result<Vec<_>>>()?;
                Ok((i, chunks))
            })
            .collect::<parquet::errors::Result<_>>()?;
        let mut fields: Vec<Option<Vec<ArrowColumnChunk>>> =
            (0..schema.fields().len()).map(|_| None).collect();
        for (i, c) in encoded {
            fields[i] = Some(c);
        }
        Ok(EncodedGroup {
            schema: schema.clone(),
            rows,
            fields,
        })
    }

    /// Splits batches of one row group into per-field arrays.
    pub fn columns(batches: &[RecordBatch], n_fields: usize) -> Vec<Vec<ArrayRef>> {
        (0..n_fields)
            .map(|i| batches.iter().map(|b| b.column(i).clone()).collect())
            .collect()
    }

    /// Completes `group` for the final `schema`: chunks encoded under another type
    /// (or not at all) are encoded again, from nulls for a field the group's schema
    /// lacks, else from `decode(fields)` (per needed field, its arrays in order).
    pub fn complete(
        &self,
        group: Option<EncodedGroup>,
        schema: &SchemaRef,
        rows: usize,
        decode: impl FnOnce(&[usize]) -> crate::Result<Vec<Vec<ArrayRef>>>,
    ) -> crate::Result<Vec<Vec<ArrowColumnChunk>>> {
        let n = schema.fields().len();
        let mut out: Vec<Option<Vec<ArrowColumnChunk>>> = (0..n).map(|_| None).collect();
        let mut nulls = Vec::new();
        let mut redo = Vec::new();
        let mut old = group;
        for (i, f) in schema.fields().iter().enumerate() {
            let reuse = old.as_mut().and_then(|g| {
                let j = g.schema.index_of(f.name()).ok()?;
                (g.schema.field(j).data_type() == f.data_type())
                    .then(|| g.fields[j].take())
                    .flatten()
            });
            match reuse {
                Some(chunks) => out[i] = Some(chunks),
                None => {
                    let absent = old
                        .as_ref()
                        .is_some_and(|g| g.schema.index_of(f.name()).is_err() && g.rows == rows);
                    if absent {
                        nulls.push(i);
                    } else {
                        redo.push(i);
                    }
                }
            }
        }
        let mut columns: Vec<Vec<ArrayRef>> = vec![Vec::new(); n];
        for &i in &nulls {
            columns[i] = vec![new_null_array(schema.field(i).data_type(), rows)];
        }
        if !redo.is_empty() {
            for (i, arrays) in redo.iter().zip(decode(&redo)?) {
                columns[*i] = arrays;
            }
        }
        let todo: Vec<usize> = nulls.iter().chain(&redo).copied().collect();
        if !todo.is_empty() {
            let enc = self
                .encode(schema, &columns, rows, Some(&todo))
                .map_err(write_err)?;
            for (i, c) in enc.fields.into_iter().enumerate() {
                if c.is_some() {
                    out[i] = c;
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|c| c.expect("every field reused or encoded"))
            .collect())
    }
}

fn write_err(e: ParquetError) -> crate::Error {
    crate::Error::Write {
        dataset: String::new(),
        what: "a Parquet row group".into(),
        source: Box::new(e),
    }
}

/// The output file: row groups of complete column chunks, in order.
pub struct Assembler<W: Write + Send> {
    writer: SerializedFileWriter<W>,
}

impl<W: Write + Send> Assembler<W> {
    pub fn new(
        out: W,
        schema: &SchemaRef,
        props: &WriterProperties,
    ) -> parquet::errors::Result<Assembler<W>> {
        let mut props = props.clone();
        let descr = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(schema)?;
        add_encoded_arrow_schema_to_metadata(schema, &mut props);
        let writer = SerializedFileWriter::new(out, descr.root_schema_ptr(), Arc::new(props))?;
        Ok(Assembler { writer })
    }

    /// Appends one row group (per field, its leaf chunks in order).
    pub fn push(&mut self, fields: Vec<Vec<ArrowColumnChunk>>) -> parquet::errors::Result<()> {
        let mut rg = self.writer.next_row_group()?;
        for chunks in fields {
            for c in chunks {
                c.append_to_row_group(&mut rg)?;
            }
        }
        rg.close()?;
        Ok(())
    }

    pub fn finish(self) -> parquet::errors::Result<W> {
        self.writer.into_inner()
    }
}
