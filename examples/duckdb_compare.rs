//! Side-by-side conversion of the same records, as NDJSON, to Parquet (zstd) by
//! jdop's conversion path and by DuckDB
//! (`COPY (FROM read_json('f.ndjson')) TO 'o.parquet' (FORMAT parquet, COMPRESSION zstd)`),
//! in one run, with the time and size ratios.
//!
//! `cargo build --release --example duckdb_compare && target/release/examples/duckdb_compare [N] [THREADS] [RUNS]`
//!
//! N records (default 500,000) of the simulator's mixed-typing credit dataset are
//! written as NDJSON into a temp dir. jdop's path is timed from opening that file to
//! the closed, hashed and synced Parquet file: a reader thread maps the file and
//! groups its lines into pages of 200 records (`[r1,r2,...]`, the spooled form),
//! which `jdop::export::pages_to_parquet`, the exporter's own path, consumes as they
//! come (pages spooled and inferred on rayon, row groups encoded as soon as their
//! pages are in, the file assembled). jdop runs at zstd 1 and
//! 3; DuckDB (from PyPI: `pip install duckdb`) runs at its default zstd level (3)
//! and, for reference, at level 1 and with `read_json(..., sample_size=-1)` (schema
//! from every record, as jdop), with `SET threads=THREADS` (default 2) inside Python
//! (connection setup not timed, reading the NDJSON timed; see
//! benches/duckdb_compare.py, embedded here). Each configuration runs RUNS times
//! (default 3), interleaved; the table shows the best time (and the median). All
//! outputs are read back with DuckDB to check the row count, the column types are
//! printed side by side, and jdop's and DuckDB's values are compared row by row.
//! With `DUCKDB_COMPARE_KEEP=1` the temp dir is kept (and printed);
//! with `JDOP_ONLY=1` only jdop's path runs, at zstd 1 (`JDOP_ONLY=all`: 1 and 3; for profiling:
//! `JDOP_ONLY=1 perf record --call-graph dwarf target/release/examples/duckdb_compare 200000`);
//! with `ENCODE_VARIANTS=1` jdop's decoded batches are only encoded, with writer
//! variants jdop does not use (dictionary off for high-cardinality columns, columns
//! encoded in parallel), to size the profile's suggestions; `ENCODE_LEVELS=1,-1,3`
//! picks the zstd levels of that table (negative levels are zstd's fast modes).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use jdop::convert::Converter;
use jdop::platform::split_records;
use jdop::schema::{InferredSchema, Inferrer};
use jdop::sim::{DatasetSpec, Typing};
use jdop::sink::ParquetOptions;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;

const PAGE_SIZE: usize = 200;
/// Pages per decoded batch, as `PAGES_PER_BATCH` in src/export.rs.
const PAGES_PER_BATCH: usize = 8;
/// Runs per configuration (default; the third argument).
const RUNS: usize = 3;
const DUCKDB_PY: &str = include_str!("../benches/duckdb_compare.py");

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill in.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is valid for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Wall time per stage of one jdop run.
#[derive(Debug, Default, Clone)]
struct Stages {
    /// The reader thread: the mapped NDJSON's lines into pages.
    pages: Duration,
    /// `jdop::export::pages_to_parquet`: spool, inference, row groups, file.
    convert: Duration,
    /// From the end of the pages (pages_to_parquet asked for one more and there was
    /// none) to the closed file: what is left once the last page is in.
    tail: Duration,
}

#[derive(Debug, Clone)]
struct Run {
    secs: f64,
    cpu: f64,
    bytes: u64,
    stages: Option<Stages>,
}

fn generate(path: &Path, n: u64) -> Result<u64> {
    let spec = DatasetSpec::credit("cata_1", n).with_typing(Typing::Mixed);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut buf = String::with_capacity(2048);
    let mut bytes = 0u64;
    for i in 0..n {
        buf.clear();
        spec.write_record(i, &mut buf);
        buf.push('\n');
        bytes += buf.len() as u64;
        w.write_all(buf.as_bytes())?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(bytes)
}

/// The NDJSON lines as pages of 200 records (`[r1,r2,...]`), as the exporter spools.
#[inline(never)]
fn to_pages(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    lines
        .par_chunks(PAGE_SIZE)
        .map(|c| {
            let len: usize = c.iter().map(|l| l.len() + 1).sum();
            let mut s = String::with_capacity(len + 1);
            s.push('[');
            for (i, l) in c.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(l);
            }
            s.push(']');
            s
        })
        .collect()
}

/// Schema over every record: pages inferred on rayon, merged in page order.
#[inline(never)]
fn infer(pages: &[String]) -> Result<InferredSchema> {
    let per_page: Vec<Inferrer> = pages
        .par_iter()
        .enumerate()
        .map(|(i, p)| {
            split_records(p)
                .map(|r| Inferrer::observe_page(&r))
                .map_err(|e| anyhow!("page {}: {e}", i + 1))
        })
        .collect::<Result<_>>()?;
    let mut inf = Inferrer::default();
    for p in per_page {
        inf.merge(p);
    }
    Ok(inf.finish())
}

/// The NDJSON reader thread; it returns its time spent building pages (reading the
/// mapped file included).
type Reader = std::thread::JoinHandle<Result<Duration>>;

/// A page handed to the conversion. Its buffer goes back to the reader when the
/// conversion drops it, so pages are not allocated (and faulted in) afresh.
struct Page {
    text: String,
    back: std::sync::mpsc::SyncSender<String>,
}

impl AsRef<str> for Page {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.back.try_send(std::mem::take(&mut self.text));
    }
}

/// Reads NDJSON (mapped into memory, 8 MiB at a time) on a thread of its own and
/// hands over pages of `PAGE_SIZE` records (`[r1,r2,...]`, the spooled form)
/// through a bounded channel, so reading overlaps the conversion and the pages in
/// memory are a few, not the file. A page's lines are copied at once and their
/// newlines turned into commas.
/// The returned handle gives the thread's busy time (reading, and building pages).
fn stream_pages(ndjson: &Path) -> Result<(std::sync::mpsc::Receiver<Page>, Reader)> {
    let file = File::open(ndjson)?;
    // SAFETY: the benchmark's own temp file, not changed while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let _ = map.advise(memmap2::Advice::Sequential);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Page>(128);
    let (back, returned) = std::sync::mpsc::sync_channel::<String>(256);
    let handle = std::thread::spawn(move || -> Result<Duration> {
        let mut build = Duration::ZERO;
        let mut page = String::new();
        let mut in_page = 0usize;
        let mut last_len = 0usize;
        let start_page = |page: &mut String, last_len: usize| {
            if let Ok(mut buf) = returned.try_recv() {
                buf.clear();
                *page = buf;
            }
            // The size of the last page: no growth by doubling.
            page.reserve(last_len + 4096);
            page.push('[');
        };
        let mut at = 0usize;
        while at < map.len() {
            let t = Instant::now();
            // Whole lines only; the rest waits for the next block.
            let block = &map[at..(at + (8 << 20)).min(map.len())];
            let cut = if at + block.len() == map.len() {
                block.len()
            } else {
                match memchr::memrchr(b'\n', block) {
                    Some(p) => p + 1,
                    // A line longer than a block: up to its end.
                    None => memchr::memchr(b'\n', &map[at..]).map_or(map.len() - at, |p| p + 1),
                }
            };
            let text = simdutf8::basic::from_utf8(&map[at..at + cut])
                .map_err(|_| anyhow!("the NDJSON file is not UTF-8"))?;
            at += cut;
            let mut rest = text;
            let mut newlines: Vec<usize> = Vec::with_capacity(PAGE_SIZE);
            while !rest.is_empty() {
                // The lines this page still needs.
                let need = PAGE_SIZE - in_page;
                newlines.clear();
                newlines.extend(memchr::memchr_iter(b'\n', rest.as_bytes()).take(need));
                let end = match newlines.last() {
                    Some(&nl) if newlines.len() == need => nl + 1,
                    _ => rest.len(),
                };
                let (chunk, tail) = rest.split_at(end);
                rest = tail;
                let body = chunk.strip_suffix('\n').unwrap_or(chunk);
                let b = body.as_bytes();
                let inner = &newlines[..newlines.partition_point(|&nl| nl < body.len())];
                let empty_line = body.is_empty()
                    || b[0] == b'\n'
                    || b[b.len() - 1] == b'\n'
                    || inner.iter().any(|&nl| b[nl - 1] == b'\n');
                if !empty_line {
                    // All lines at once, their newlines then turned into commas.
                    if in_page == 0 {
                        start_page(&mut page, last_len);
                    } else {
                        page.push(',');
                    }
                    let at = page.len();
                    page.push_str(body);
                    // SAFETY: ASCII newlines become ASCII commas: still UTF-8.
                    let bytes = unsafe { page.as_mut_vec() };
                    for &nl in inner {
                        bytes[at + nl] = b',';
                    }
                    in_page += inner.len() + 1;
                } else {
                    // Line by line, skipping the empty ones.
                    let mut start = 0;
                    for &nl in newlines.iter().chain(std::iter::once(&chunk.len())) {
                        if nl > chunk.len() || start > nl {
                            break;
                        }
                        let line = &chunk[start..nl];
                        start = nl + 1;
                        if line.is_empty() {
                            continue;
                        }
                        if in_page == 0 {
                            start_page(&mut page, last_len);
                        } else {
                            page.push(',');
                        }
                        page.push_str(line);
                        in_page += 1;
                    }
                }
                if in_page == PAGE_SIZE {
                    page.push(']');
                    last_len = page.len();
                    // Time blocked on a full channel is not the reader's work.
                    let blocked = Instant::now();
                    let text = std::mem::take(&mut page);
                    if tx
                        .send(Page {
                            text,
                            back: back.clone(),
                        })
                        .is_err()
                    {
                        return Ok(build);
                    }
                    build = build.saturating_sub(blocked.elapsed());
                    in_page = 0;
                }
            }
            build += t.elapsed();
        }
        if in_page > 0 {
            page.push(']');
            let _ = tx.send(Page { text: page, back });
        }
        Ok(build)
    });
    Ok((rx, handle))
}

/// jdop's path: NDJSON file -> pages (streamed) -> `pages_to_parquet`, the
/// exporter's own pages -> Parquet path.
fn jdop_convert(
    ndjson: &Path,
    out: &Path,
    level: i32,
    _threads: usize,
) -> Result<(Run, SchemaRef, u64)> {
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut st = Stages::default();

    let (pages, reader) = stream_pages(ndjson)?;

    // The exporter's path: pages spooled and inferred on rayon, row groups encoded
    // (columns in parallel) as soon as their pages are in, the file assembled.
    let t = Instant::now();
    let opts = ParquetOptions {
        zstd_level: level,
        ..Default::default()
    };
    let mut ended: Option<Instant> = None;
    let pages = pages.into_iter().chain(std::iter::from_fn(|| {
        ended.get_or_insert_with(Instant::now);
        None
    }));
    let (schema, files) =
        jdop::export::pages_to_parquet(pages, out, &opts, &Default::default(), PAGE_SIZE as u32)?;
    st.convert = t.elapsed();
    st.tail = ended.map_or(Duration::ZERO, |e| e.elapsed());
    st.pages = reader
        .join()
        .map_err(|_| anyhow!("the NDJSON reader panicked"))??;

    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let bytes = files.iter().map(|f| f.bytes).sum();
    let rows = files.iter().map(|f| f.rows).sum();
    Ok((
        Run {
            secs,
            cpu,
            bytes,
            stages: Some(st),
        },
        schema.arrow(),
        rows,
    ))
}

fn python(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(DUCKDB_PY)
        .args(args)
        .output()
        .context("running python3 (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "python3 {args:?} failed ({}); is DuckDB installed (`pip install duckdb`)?\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(last).with_context(|| {
        format!(
            "python3 {args:?} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn duckdb_convert(
    ndjson: &Path,
    out: &Path,
    threads: usize,
    level: Option<i32>,
    sample_size: Option<i64>,
) -> Result<Run> {
    let threads = threads.to_string();
    let level = level.map_or("-".to_string(), |l| l.to_string());
    let sample = sample_size.map_or("-".to_string(), |l| l.to_string());
    let args = [
        "copy",
        ndjson.to_str().expect("UTF-8 temp path"),
        out.to_str().expect("UTF-8 temp path"),
        &threads,
        &level,
        &sample,
    ];
    let v = python(&args)?;
    Ok(Run {
        secs: v["seconds"].as_f64().context("seconds")?,
        cpu: v["cpu"].as_f64().context("cpu")?,
        bytes: v["bytes"].as_u64().context("bytes")?,
        stages: None,
    })
}

/// Who converts, and how.
#[derive(Debug, Clone, Copy)]
enum Tool {
    Jdop {
        level: i32,
    },
    DuckDb {
        level: Option<i32>,
        sample_size: Option<i64>,
    },
}

struct Config {
    tool: Tool,
    /// Output: a folder (jdop) or a file (DuckDB).
    out: PathBuf,
    runs: Vec<Run>,
}

impl Config {
    fn tool(&self) -> String {
        match self.tool {
            Tool::Jdop { .. } => "jdop".into(),
            Tool::DuckDb {
                sample_size: Some(s),
                ..
            } => format!("DuckDB, read_json sample_size={s}"),
            Tool::DuckDb { .. } => "DuckDB".into(),
        }
    }
    fn level(&self) -> String {
        match self.tool {
            Tool::Jdop { level }
            | Tool::DuckDb {
                level: Some(level), ..
            } => level.to_string(),
            Tool::DuckDb { level: None, .. } => "default (3)".into(),
        }
    }
    /// What DuckDB reads back: a glob for jdop's folder.
    fn glob(&self) -> String {
        match self.tool {
            Tool::Jdop { .. } => self.out.join("*.parquet").to_string_lossy().into_owned(),
            Tool::DuckDb { .. } => self.out.to_string_lossy().into_owned(),
        }
    }
    fn best(&self) -> &Run {
        self.runs
            .iter()
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .expect("at least one run")
    }
    fn median_secs(&self) -> f64 {
        let mut s: Vec<f64> = self.runs.iter().map(|r| r.secs).collect();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

/// Rows per row group, as `ParquetOptions::default()`.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Writer properties as `ParquetSink` builds them, with the dictionary off for `plain`.
fn sink_props(level: i32, plain: &[String]) -> Result<WriterProperties> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for c in plain {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c.as_str()), false);
    }
    Ok(b.build())
}

/// Columns whose first 10,000 values are more than half distinct (text, integers,
/// decimals, dates, timestamps).
fn high_cardinality(batch: &RecordBatch) -> Vec<String> {
    fn distinct<T: std::hash::Hash + Eq>(it: impl Iterator<Item = Option<T>>) -> usize {
        it.flatten().collect::<HashSet<T>>().len()
    }
    let n = batch.num_rows().min(10_000);
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter_map(|(f, col)| {
            let a = col.slice(0, n);
            let d = match a.data_type() {
                DataType::Utf8 => distinct(a.as_string::<i32>().iter()),
                DataType::Int64 => distinct(a.as_primitive::<Int64Type>().iter()),
                DataType::Date32 => distinct(a.as_primitive::<Date32Type>().iter()),
                DataType::Decimal128(..) => distinct(a.as_primitive::<Decimal128Type>().iter()),
                DataType::Timestamp(TimeUnit::Millisecond, _) => {
                    distinct(a.as_primitive::<TimestampMillisecondType>().iter())
                }
                _ => return None,
            };
            let present = n - a.null_count();
            (present > 0 && d * 2 > present).then(|| f.name().clone())
        })
        .collect()
}

/// Serial encoding with `ArrowWriter`, as `ParquetSink::write` does it.
fn encode_serial(path: &Path, batches: &[RecordBatch], props: WriterProperties) -> Result<u64> {
    let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut w = ArrowWriter::try_new(file, batches[0].schema(), Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(std::fs::metadata(path)?.len())
}

/// The columns of each row group encoded in parallel on rayon (flat schemas), then
/// appended in order.
fn encode_parallel(path: &Path, batches: &[RecordBatch], props: WriterProperties) -> Result<u64> {
    let schema = batches[0].schema();
    let props = Arc::new(props);
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(&schema)?;
    let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut writer = SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), props)?;
    let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
    // Row groups of ROW_GROUP_ROWS rows, as slices of the batches.
    let mut groups: Vec<Vec<RecordBatch>> = vec![vec![]];
    let mut in_group = 0;
    for b in batches {
        let mut off = 0;
        while off < b.num_rows() {
            let take = (ROW_GROUP_ROWS - in_group).min(b.num_rows() - off);
            groups
                .last_mut()
                .expect("one group")
                .push(b.slice(off, take));
            off += take;
            in_group += take;
            if in_group == ROW_GROUP_ROWS {
                groups.push(vec![]);
                in_group = 0;
            }
        }
    }
    for (g, slices) in groups.iter().filter(|g| !g.is_empty()).enumerate() {
        let writers = factory.create_column_writers(g)?;
        if writers.len() != schema.fields().len() {
            bail!("nested columns: the parallel variant handles flat schemas only");
        }
        let chunks: Vec<ArrowColumnChunk> = writers
            .into_par_iter()
            .enumerate()
            .map(|(i, mut w)| {
                for s in slices {
                    for leaf in compute_leaves(schema.field(i), s.column(i))? {
                        w.write(&leaf)?;
                    }
                }
                w.close()
            })
            .collect::<Result<_, _>>()?;
        let mut rg = writer.next_row_group()?;
        for c in chunks {
            c.append_to_row_group(&mut rg)?;
        }
        rg.close()?;
    }
    writer.close()?;
    Ok(std::fs::metadata(path)?.len())
}

/// `ENCODE_VARIANTS=1`: jdop's decoded batches encoded with writer variants (not
/// what jdop does today), to size the suggestions of the profile.
fn encode_variants(ndjson: &Path, dir: &Path, runs: usize) -> Result<()> {
    let text = std::fs::read_to_string(ndjson)?;
    let pages = to_pages(&text);
    drop(text);
    let conv = Converter::new(&infer(&pages)?);
    let batches: Vec<RecordBatch> = pages
        .par_chunks(PAGES_PER_BATCH)
        .map(|g| {
            let refs: Vec<&str> = g.iter().map(String::as_str).collect();
            conv.decode(&refs)
                .map_err(|(i, e)| anyhow!("page {i}: {e}"))
        })
        .collect::<Result<_>>()?;
    drop(pages);
    let mut sample = 0;
    let head: Vec<RecordBatch> = batches
        .iter()
        .take_while(|b| {
            let more = sample < 10_000;
            sample += b.num_rows();
            more
        })
        .cloned()
        .collect();
    let plain = high_cardinality(&arrow_select::concat::concat_batches(conv.schema(), &head)?);
    println!("\nEncoding only, jdop's batches (best of {runs}); dictionary off for {plain:?}:\n");
    println!("| variant | zstd | seconds | output bytes |");
    println!("|---|---|---|---|");
    let path = dir.join("variant.parquet");
    let levels: Vec<i32> = match std::env::var("ENCODE_LEVELS") {
        Ok(v) => v
            .split(',')
            .map(|l| {
                l.trim()
                    .parse()
                    .context("ENCODE_LEVELS: zstd levels, e.g. 1,-1,3")
            })
            .collect::<Result<_>>()?,
        Err(_) => vec![1, 3],
    };
    for level in levels {
        type Encode = fn(&Path, &[RecordBatch], WriterProperties) -> Result<u64>;
        let variants: [(&str, bool, Encode); 4] = [
            ("serial ArrowWriter (as ParquetSink)", false, encode_serial),
            (
                "serial, dictionary off for high-cardinality columns",
                true,
                encode_serial,
            ),
            ("columns in parallel (rayon)", false, encode_parallel),
            (
                "columns in parallel, dictionary off for high-cardinality",
                true,
                encode_parallel,
            ),
        ];
        for (name, no_dict, f) in variants {
            let mut best = f64::MAX;
            let mut bytes = 0;
            for _ in 0..runs.max(1) {
                let props = sink_props(level, if no_dict { &plain } else { &[] })?;
                let t = Instant::now();
                bytes = f(&path, &batches, props)?;
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("| {name} | {level} | {best:.2} | {bytes} |");
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = match args.first() {
        Some(a) => a.replace('_', "").parse().context("N: a record count")?,
        None => 500_000,
    };
    let threads: usize = match args.get(1) {
        Some(a) => a.parse().context("THREADS: a thread count")?,
        None => 2,
    };
    let runs: usize = match args.get(2) {
        Some(a) => a.parse().context("RUNS: a run count")?,
        None => RUNS,
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;

    let tmp = tempfile::tempdir()?;
    let ndjson = tmp.path().join("records.ndjson");
    let input_bytes = generate(&ndjson, n)?;
    println!(
        "{n} records, {:.1} MB of NDJSON, {threads} threads, best of {runs} runs (interleaved)\n",
        input_bytes as f64 / 1e6
    );

    let p = |name: &str| tmp.path().join(name);
    let mut configs = vec![
        Config {
            tool: Tool::Jdop { level: 1 },
            out: p("jdop-zstd1"),
            runs: vec![],
        },
        Config {
            tool: Tool::Jdop { level: 3 },
            out: p("jdop-zstd3"),
            runs: vec![],
        },
        // The baseline of the ratios: the command as given.
        Config {
            tool: Tool::DuckDb {
                level: None,
                sample_size: None,
            },
            out: p("duckdb-default.parquet"),
            runs: vec![],
        },
        Config {
            tool: Tool::DuckDb {
                level: Some(1),
                sample_size: None,
            },
            out: p("duckdb-zstd1.parquet"),
            runs: vec![],
        },
        // Like jdop, the schema from every record (the default samples 20,480).
        Config {
            tool: Tool::DuckDb {
                level: None,
                sample_size: Some(-1),
            },
            out: p("duckdb-full.parquet"),
            runs: vec![],
        },
    ];
    if std::env::var_os("ENCODE_VARIANTS").is_some() {
        return encode_variants(&ndjson, tmp.path(), runs);
    }
    let jdop_only = std::env::var_os("JDOP_ONLY").is_some();
    if jdop_only {
        configs.retain(|c| matches!(c.tool, Tool::Jdop { .. }));
        // JDOP_ONLY=1: jdop at zstd 1 only (its default); JDOP_ONLY=all: at 1 and 3.
        if std::env::var("JDOP_ONLY").as_deref() != Ok("all") {
            configs.retain(|c| matches!(c.tool, Tool::Jdop { level: 1 }));
        }
    }
    const BASE: usize = 2;
    let mut written: Option<SchemaRef> = None;
    for _ in 0..runs.max(1) {
        for c in configs.iter_mut() {
            let run = match c.tool {
                Tool::Jdop { level } => {
                    std::fs::create_dir_all(&c.out)?;
                    let (run, schema, rows) = jdop_convert(&ndjson, &c.out, level, threads)?;
                    if rows != n {
                        bail!("jdop converted {rows} rows, expected {n}");
                    }
                    written = Some(schema);
                    run
                }
                Tool::DuckDb { level, sample_size } => {
                    duckdb_convert(&ndjson, &c.out, threads, level, sample_size)?
                }
            };
            c.runs.push(run);
        }
    }
    let written = written.expect("jdop ran at least once");

    let base = configs[if jdop_only { 0 } else { BASE }].best().clone();
    println!("| tool | zstd level | seconds (best) | median s | CPU s | MB/s NDJSON | records/s | output bytes | time ratio (DuckDB/jdop) | size ratio (jdop/DuckDB) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for c in &configs {
        let b = c.best();
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0}k | {} | {:.2} | {:.3} |",
            c.tool(),
            c.level(),
            b.secs,
            c.median_secs(),
            b.cpu,
            input_bytes as f64 / b.secs / 1e6,
            n as f64 / b.secs / 1e3,
            b.bytes,
            base.secs / b.secs,
            b.bytes as f64 / base.bytes as f64,
        );
    }
    println!(
        "\nRatios against DuckDB at its default zstd level (level 3) with read_json's defaults. \
         Targets: time ratio >= 1.5, size ratio <= 1.1. CPU s: user + system seconds \
         of the best run (both sides measure their whole process)."
    );

    println!(
        "\njdop stages of the best run (ms, wall; the reader thread's page building \
         overlaps pages_to_parquet):\n"
    );
    println!("| zstd | mapped file's lines -> pages (reader thread) | pages -> Parquet (pages_to_parquet) | of which after the last page | total |");
    println!("|---|---|---|---|---|");
    for c in &configs {
        let (Tool::Jdop { level }, Some(s)) = (c.tool, c.best().stages.as_ref()) else {
            continue;
        };
        println!(
            "| {level} | {} | {} | {} | {:.0} |",
            ms(s.pages),
            ms(s.convert),
            ms(s.tail),
            c.best().secs * 1e3
        );
    }

    if jdop_only {
        return Ok(());
    }

    // Read everything back with DuckDB: row counts and column types.
    let ndjson_s = ndjson.to_str().expect("UTF-8 temp path");
    let globs: Vec<String> = configs.iter().map(Config::glob).collect();
    let mut check_args = vec!["check", ndjson_s];
    check_args.extend(globs.iter().map(String::as_str));
    let v = python(&check_args)?;
    println!("\nRows read back with DuckDB:");
    let parquet = v["parquet"].as_array().context("parquet")?;
    for (c, p) in configs.iter().zip(parquet) {
        let rows = p["rows"].as_u64().context("rows")?;
        let cols = p["types"].as_array().map_or(0, Vec::len);
        println!(
            "  {} zstd {}: {rows} rows {}, {cols} columns",
            c.tool(),
            c.level(),
            if rows == n { "(ok)" } else { "(MISMATCH)" }
        );
        if rows != n {
            bail!("{} zstd {}: {rows} rows, expected {n}", c.tool(), c.level());
        }
    }
    let type_of = |list: &serde_json::Value, name: &str| -> String {
        list.as_array()
            .into_iter()
            .flatten()
            .find(|c| c[0].as_str() == Some(name))
            .and_then(|c| c[1].as_str())
            .unwrap_or("(absent)")
            .to_string()
    };
    let cmp = python(&["compare", &globs[0], &globs[BASE]])?;
    let equal = |name: &str, i: usize| -> String {
        cmp["equal"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c[0].as_str() == Some(name))
            .and_then(|c| c[i].as_u64())
            .map(|k| k.to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "\nColumn types, and rows whose value has the same text / the same value in \
         jdop's (zstd 1) and DuckDB's (default) file ({} rows matched by position; \
         DuckDB's JSON values read by `->>'$'`, others cast to VARCHAR; same value: \
         same text or equal as DOUBLE or as TIMESTAMP):\n",
        cmp["rows"]
    );
    println!("| column | jdop writes (Arrow) | jdop file read by DuckDB | DuckDB read_json | DuckDB file | DuckDB sample_size=-1 file | same text | same value | jdop null, DuckDB \"\" |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut names: Vec<String> = written.fields().iter().map(|f| f.name().clone()).collect();
    for c in v["json_types"].as_array().into_iter().flatten() {
        if let Some(name) = c[0].as_str() {
            if !names.iter().any(|x| x == name) {
                names.push(name.to_string());
            }
        }
    }
    for name in &names {
        let arrow = written
            .field_with_name(name)
            .map(|f| f.data_type().to_string())
            .unwrap_or_else(|_| "(absent)".into());
        println!(
            "| {name} | {arrow} | {} | {} | {} | {} | {} | {} | {} |",
            type_of(&parquet[0]["types"], name),
            type_of(&v["json_types"], name),
            type_of(&parquet[BASE]["types"], name),
            type_of(&parquet[4]["types"], name),
            equal(name, 1),
            equal(name, 2),
            equal(name, 3),
        );
    }
    println!(
        "\nDuckDB {} (python3 {}).",
        python_version("duckdb.__version__")?,
        python_version("sys.version.split()[0]")?
    );
    if std::env::var_os("DUCKDB_COMPARE_KEEP").is_some() {
        println!("Files kept in {}", tmp.keep().display());
    }
    Ok(())
}

fn python_version(expr: &str) -> Result<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!("import sys, duckdb; print({expr})"))
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
