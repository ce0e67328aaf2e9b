//! One export, end to end: total and update date, the page plan fetched into the
//! spool, the whole-dataset schema, the data files, the manifest, the publish.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use chrono::{SecondsFormat, Utc};
use rayon::prelude::*;

use crate::convert::Converter;
use crate::detect::{self, value_text, Detector};
use crate::error::{Error, Op, Result};
use crate::fetch::{self, Counters, Limits};
use crate::manifest::{Manifest, SpoolState, Staging, MANIFEST_VERSION};
use crate::platform::{
    parse_total, split_records, Client, ClientConfig, Secret, Target, UpdateDate,
};
use crate::progress::Reporter;
use crate::schema::{DetectOptions, InferredSchema, Kind, Mismatch, SchemaChanges, SchemaPolicy};
use crate::sink::assemble::{Assembler, EncodedGroup, GroupEncoder, SpillFactory, SpillFile};
use crate::sink::{
    cell_text, hive, CsvOptions, CsvPage, CsvSink, FileEntry, Format, ParquetOptions, ParquetSink,
};
use crate::spool::Spool;

/// Everything one export needs; built from the CLI or by library users.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub target: Target,
    pub secret: Secret,
    pub out: PathBuf,
    pub format: Format,
    pub limits: Limits,
    pub client: ClientConfig,
    /// Split the data into files of at most this many rows.
    pub rows_per_file: Option<u64>,
    /// CSV encoding and line ending.
    pub csv: CsvOptions,
    pub parquet: ParquetOptions,
    /// Publish even when the total or update date moved during the export.
    pub allow_inconsistent: bool,
    /// Columns of the previous snapshot: the manifest lists what changed.
    pub previous_columns: Option<Vec<crate::schema::ColumnInfo>>,
    /// With `Freeze`, a schema that differs from `previous_columns` fails the export.
    pub schema_policy: crate::schema::SchemaPolicy,
    /// Passes started over when the dataset changed during a pass.
    pub consistency_retries: u32,
    /// Report repeated values of this column in the manifest (rows are kept).
    pub key: Option<String>,
    /// Where to stage (default: `.<name>.jdop-staging` next to `out`).
    pub staging: Option<PathBuf>,
    /// Type detection and asked types.
    pub detect: DetectOptions,
    /// Hive-partition the files by this column.
    pub partition_by: Option<String>,
}

/// The result of a successful export.
#[derive(Debug, Clone)]
pub struct Summary {
    pub out: PathBuf,
    pub manifest: Manifest,
}

/// Fetches the total (with retries).
pub async fn total(client: &Client, cfg: &Limits, reporter: &dyn Reporter) -> Result<u64> {
    let counters = Counters::default();
    let body = fetch::call(client, Op::Total, None, cfg, &counters, reporter).await?;
    parse_total(&body).map_err(|e| bad_answer(client, Op::Total, e))
}

/// Fetches the update date (with retries).
pub async fn update_date(
    client: &Client,
    cfg: &Limits,
    reporter: &dyn Reporter,
) -> Result<UpdateDate> {
    let counters = Counters::default();
    let body = fetch::call(client, Op::UpdateDate, None, cfg, &counters, reporter).await?;
    UpdateDate::from_body(&body).map_err(|e| bad_answer(client, Op::UpdateDate, e))
}

fn bad_answer(client: &Client, op: Op, e: crate::error::CallError) -> Error {
    Error::Call {
        dataset: client.target().dataset.to_string(),
        op,
        page: None,
        url: client.target().endpoint(op).to_string(),
        retries: 0,
        elapsed: Default::default(),
        source: Box::new(client.redact_err(e)),
    }
}

/// Runs one export and publishes it atomically onto `cfg.out`.
pub async fn export(cfg: &ExportConfig, reporter: Arc<dyn Reporter>) -> Result<Summary> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let dataset = cfg.target.dataset.to_string();
    if cfg.limits.page_size == 0 || cfg.limits.page_size > crate::platform::MAX_PAGE_SIZE {
        return Err(Error::usage(format!(
            "page size {} is outside 1..={}",
            cfg.limits.page_size,
            crate::platform::MAX_PAGE_SIZE
        )));
    }
    let client = Client::new(cfg.target.clone(), cfg.secret.clone(), &cfg.client)?;
    let counters = Counters::default();
    let rep: &dyn Reporter = reporter.as_ref();

    let (total_before, date_before) = total_and_date(&client, &cfg.limits, &counters, rep).await?;
    let staging = Staging::create_in(&cfg.out, cfg.staging.as_deref())?;
    // One Parquet file: row groups are encoded while later pages still arrive.
    let group_pages = (cfg.parquet.row_group_rows as u64 / cfg.limits.page_size as u64).max(1);
    let mut parquet = cfg.parquet.clone();
    parquet
        .metadata
        .push(("jdop.dataset".into(), dataset.clone()));
    let encoder = (cfg.format == Format::Parquet
        && cfg.rows_per_file.is_none()
        && cfg.partition_by.is_none())
    .then(|| -> Result<GroupEncoder> {
        let spill = SpillFile::create(&staging.root().join("spill.bin"))
            .map_err(|e| Error::io("create", staging.root().join("spill.bin"), e))?;
        Ok(GroupEncoder::new(
            crate::sink::writer_props(&parquet)?,
            SpillFactory(spill),
        ))
    })
    .transpose()?;
    let mut groups: Option<EncodedGroups>;
    let mut pass_encoder: Option<GroupEncoder>;
    let mut total_before = total_before;
    let mut date_before = date_before;
    let mut attempts = 0u32;
    let mut pages_reused = 0u64;
    let (fetched, pages, total_after, date_after, reasons, spool) = loop {
        attempts += 1;
        let state = SpoolState {
            dataset: dataset.clone(),
            base_url: cfg.target.base.to_string(),
            total: total_before,
            update_date: date_before.raw.clone(),
            page_size: cfg.limits.page_size,
        };
        let kept = staging.prepare_spool(&state)?;
        let spool = Spool::create(staging.spool())?;
        if kept > 0 {
            rep.warn(&format!(
                "`{dataset}`: resuming an interrupted export: {kept} pages already fetched"
            ));
        }
        let pages = fetch::page_count(total_before, cfg.limits.page_size);
        rep.on_plan(&dataset, total_before, pages);
        // Each pass chooses its dictionaries afresh (from its own first row group).
        pass_encoder = encoder
            .as_ref()
            .map(GroupEncoder::fresh)
            .transpose()
            .map_err(|e| Error::io("create", staging.root().join("spill.bin"), e))?;
        let mut early = pass_encoder.as_ref().map(|enc| {
            EarlyGroups::start(
                enc.clone(),
                spool.clone(),
                pages,
                group_pages,
                cfg.detect.clone(),
            )
        });
        // A type asked for that the pages in so far already refute is refuted for
        // good: stop there rather than after the last page.
        let mut refuted: Option<Mismatch> = None;
        let check_types = !cfg.detect.types.is_empty()
            && cfg.detect.on_mismatch == crate::schema::OnMismatch::Error;
        let mut checked = 0u64;
        let fetched = {
            let mut hook = |n: u64, inf: &crate::schema::Inferrer, rows: &[u32]| {
                if let Some(e) = early.as_mut() {
                    e.on_prefix(n, inf, rows);
                }
                if check_types && (n >= checked + group_pages.min(16) || n == pages) {
                    checked = n;
                    if let Err(m) = inf.clone().finish_with(&cfg.detect) {
                        refuted = Some(m);
                        return false;
                    }
                }
                true
            };
            fetch::fetch_pages(
                &client,
                pages,
                &cfg.limits,
                &spool,
                &counters,
                rep,
                Some(&mut hook),
            )
            .await?
        };
        let fetch_done = clock.elapsed();
        // The worker goes on with the last row groups while the totals are checked;
        // the file's assembly takes each group as soon as it is done.
        groups = early.map(EarlyGroups::finish);
        if let Some(m) = refuted {
            let (sp, ds, empty_ok) = (spool.clone(), dataset.clone(), cfg.detect.empty_as_null);
            let e = fetch::on_rayon(move || mismatch_error(&sp, &ds, pages, m, empty_ok)).await?;
            staging.keep_spool();
            return Err(e);
        }
        tracing::debug!(
            "pass {attempts}: pages in at {:.2}s",
            fetch_done.as_secs_f64(),
        );
        pages_reused += fetched.reused;
        let (total_after, date_after) =
            total_and_date(&client, &cfg.limits, &counters, rep).await?;
        let mut reasons = consistency(
            total_before,
            total_after,
            &date_before,
            &date_after,
            &fetched.page_rows,
            cfg.limits.page_size,
        );
        reasons.extend(identical_pages(&fetched.page_hashes, &fetched.page_rows));
        if reasons.is_empty() || attempts > cfg.consistency_retries {
            break (fetched, pages, total_after, date_after, reasons, spool);
        }
        rep.warn(&format!(
            "`{dataset}` changed during the export ({}); starting over ({} of {} retries)",
            reasons.join("; "),
            attempts,
            cfg.consistency_retries
        ));
        // The pass's worker may still encode its queued row groups: it must be
        // gone before the next pass reuses the staging folder.
        if let Some(g) = groups.take() {
            let _ = tokio::task::spawn_blocking(move || g.stop()).await;
        }
        staging.clear_spool()?;
        total_before = total_after;
        date_before = date_after;
    };
    if !reasons.is_empty() {
        if !cfg.allow_inconsistent {
            return Err(Error::Inconsistent {
                dataset,
                reasons: format!(
                    "{} (after {attempts} passes; nothing published; --allow-inconsistent publishes anyway)",
                    reasons.join("; ")
                ),
            });
        }
        for r in &reasons {
            rep.warn(&format!("`{dataset}`: {r}"));
        }
    }

    let schema = match fetched.inferrer.finish_with(&cfg.detect) {
        Ok(s) => s,
        Err(m) => {
            let (sp, ds, empty_ok) = (spool.clone(), dataset.clone(), cfg.detect.empty_as_null);
            let e = fetch::on_rayon(move || mismatch_error(&sp, &ds, pages, m, empty_ok)).await?;
            staging.keep_spool();
            return Err(e);
        }
    };
    for col in schema.missing_flag_types(&cfg.detect) {
        rep.warn(&format!("`{dataset}` has no column `{col}` (--type)"));
    }
    for c in &schema.columns {
        if c.rule == "schema-file" && c.stats.present == 0 && schema.rows > 0 {
            rep.warn(&format!(
                "`{dataset}`: column `{}` of the schema file is not in the data; written as nulls",
                c.name
            ));
        }
    }
    let mut fallbacks = Vec::new();
    for c in &schema.columns {
        if let Some(spec) = &c.fallback {
            // Say which value did not fit, as the error would have.
            let m = Mismatch {
                column: c.name.clone(),
                spec: spec.clone(),
                source: crate::schema::TypeSource::Flag,
                nested: false,
            };
            let (sp, ds, empty_ok) = (spool.clone(), dataset.clone(), cfg.detect.empty_as_null);
            let why = match fetch::on_rayon(move || mismatch_error(&sp, &ds, pages, m, empty_ok))
                .await?
            {
                Error::TypeMismatch(t) => format!("page {} value {}", t.page, t.value),
                other => other.to_string(),
            };
            let text = format!(
                "column `{}` does not fit {spec} ({why}); kept as text (--on-mismatch string)",
                c.name
            );
            rep.warn(&format!("`{dataset}`: {text}"));
            fallbacks.push(text);
        }
    }
    let rows = schema.rows;
    if let Some(col) = &cfg.partition_by {
        match schema.columns.iter().find(|c| &c.name == col) {
            None if rows > 0 => {
                let e = Error::usage(format!(
                    "--partition-by `{col}`: `{dataset}` has no such column (columns: {})",
                    schema
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                staging.keep_spool();
                return Err(e);
            }
            Some(c) if matches!(c.kind, Kind::Struct(_) | Kind::List(_)) => {
                staging.keep_spool();
                return Err(Error::usage(format!(
                    "--partition-by `{col}`: a nested column cannot name a folder"
                )));
            }
            _ => {}
        }
    }
    let keys = match &cfg.key {
        Some(column) => {
            if !schema.columns.iter().any(|c| &c.name == column) && rows > 0 {
                rep.warn(&format!("`{dataset}` has no column `{column}` (--key)"));
            }
            let (spool, ds, column) = (spool.clone(), dataset.clone(), column.clone());
            let report =
                fetch::on_rayon(move || crate::keys::report(&spool, &ds, pages, &column)).await??;
            if report.duplicate_rows > 0 {
                rep.warn(&format!(
                    "`{dataset}`: {} rows repeat {} values of `{}` (kept; see the manifest)",
                    report.duplicate_rows, report.duplicated_keys, report.column
                ));
            }
            Some(report)
        }
        None => None,
    };
    let columns = schema.describe();
    let schema_changes = cfg
        .previous_columns
        .as_ref()
        .map(|prev| SchemaChanges::between(prev, &columns));
    if let Some(changes) = &schema_changes {
        if cfg.schema_policy == SchemaPolicy::Freeze && !changes.is_empty() {
            return Err(Error::SchemaChanged {
                dataset,
                changes: changes.describe(),
            });
        }
    }
    rep.on_writing(rows);
    parquet.metadata.push((
        "jdop.update_date".into(),
        match &date_before.raw {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    ));
    parquet
        .metadata
        .push(("jdop.snapshot_time".into(), snapshot_time(started_at)));
    let job = WriteJob {
        dataset: dataset.clone(),
        format: cfg.format,
        rows_per_file: cfg.rows_per_file,
        csv: cfg.csv,
        partition_by: cfg.partition_by.clone().filter(|_| rows > 0),
        parquet,
        schema: schema.clone(),
        pages,
        spool: spool.clone(),
        dir: staging.snapshot(),
        reporter: reporter.clone(),
        early: std::sync::Mutex::new(
            pass_encoder
                .zip(groups)
                .map(|(e, g)| (e, g, group_pages, fetched.page_rows.clone())),
        ),
        // Kept until the snapshot is published: a failed write resumes from it.
        release_spool: false,
    };
    let files = match tokio::task::spawn_blocking(move || job.run())
        .await
        .map_err(|e| Error::Internal(format!("the writer stopped: {e}")))?
    {
        Ok(f) => f,
        Err(e @ Error::Usage { .. }) => {
            staging.keep_spool();
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    tracing::debug!("files written at {:.2}s", clock.elapsed().as_secs_f64());
    let written: u64 = files.iter().map(|f| f.rows).sum();
    if written != rows && !schema.columns.is_empty() {
        return Err(Error::Internal(format!(
            "wrote {written} rows of `{dataset}` but fetched {rows}"
        )));
    }

    let finished_at = Utc::now();
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        jdop_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: dataset.clone(),
        base_url: client.secret().redact(cfg.target.base.as_str()),
        format: cfg.format,
        update_date: date_before,
        update_date_after: date_after,
        total_before,
        total_after,
        rows,
        consistent: reasons.is_empty(),
        warnings: reasons.into_iter().chain(fallbacks).collect(),
        page_size: cfg.limits.page_size,
        pages,
        requests: counters.requests.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
        throttled: counters.throttled.load(Ordering::Relaxed),
        passes: attempts,
        pages_reused,
        started_at: started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished_at: finished_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        duration_secs: (clock.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        files,
        columns,
        schema_changes,
        keys,
        partition_by: cfg.partition_by.clone(),
        csv: (cfg.format == Format::Csv).then_some(cfg.csv),
    };
    manifest.write(&staging.snapshot())?;
    if !manifest.files.is_empty() {
        let sql = query_sql(&manifest, &final_path(&cfg.out));
        let path = staging.snapshot().join(QUERY_FILE);
        std::fs::write(&path, sql).map_err(|e| Error::io("write", &path, e))?;
    }
    let out = staging.publish()?;
    rep.finish();
    Ok(Summary { out, manifest })
}

/// The bytes-of-pages -> Parquet path of an export, without the network (for
/// benchmarks and conversions of saved pages): record arrays in page order are
/// spooled and inferred on rayon, row groups encoded as soon as their pages are in,
/// the file assembled as `dir/part-00000.parquet`. `dir` gets a `.jdop-work` folder
/// for the spool, removed at the end. `pages` is consumed as it goes (64 pages at
/// a time), so a caller that reads them from a file or a channel holds only those
/// in memory, and its reading overlaps the conversion.
pub fn pages_to_parquet<S: AsRef<str> + Send + Sync>(
    pages: impl IntoIterator<Item = S>,
    dir: &std::path::Path,
    parquet: &ParquetOptions,
    detect: &DetectOptions,
    page_size: u32,
) -> Result<(InferredSchema, Vec<FileEntry>)> {
    let work = dir.join(".jdop-work");
    std::fs::create_dir_all(&work).map_err(|e| Error::io("create", &work, e))?;
    let result = (|| {
        let spool = Spool::create(work.join("spool"))?;
        let spill = SpillFile::create(&work.join("spill.bin"))
            .map_err(|e| Error::io("create", work.join("spill.bin"), e))?;
        let encoder = GroupEncoder::new(crate::sink::writer_props(parquet)?, SpillFactory(spill));
        let group_pages = (parquet.row_group_rows as u64 / page_size.max(1) as u64).max(1);
        // The number of pages is known at the end: until then, full row groups only.
        let mut early = EarlyGroups::start(
            encoder.clone(),
            spool.clone(),
            u64::MAX,
            group_pages,
            detect.clone(),
        );
        let mut inferrer = crate::schema::Inferrer::default();
        let mut rows: Vec<u32> = Vec::new();
        let mut pages = pages.into_iter();
        loop {
            let chunk: Vec<S> = pages.by_ref().take(64).collect();
            if chunk.is_empty() {
                break;
            }
            let base = rows.len() as u64;
            let outs: Vec<Result<(u32, crate::schema::Inferrer, u64)>> = chunk
                .par_iter()
                .enumerate()
                .map(|(j, a)| {
                    fetch::process_array(&spool, "", base + j as u64 + 1, a.as_ref(), true)
                })
                .collect();
            for o in outs {
                let (r, inf, _) = o?;
                inferrer.merge(inf);
                rows.push(r);
                early.on_prefix(rows.len() as u64, &inferrer, &rows);
            }
        }
        let n = rows.len() as u64;
        early.end(n, &inferrer, &rows);
        let groups = early.finish();
        let schema = inferrer
            .finish_with(detect)
            .map_err(|m| Error::usage(format!("column `{}` does not fit {}", m.column, m.spec)))?;
        let job = WriteJob {
            dataset: String::new(),
            format: Format::Parquet,
            rows_per_file: None,
            csv: CsvOptions::default(),
            partition_by: None,
            parquet: parquet.clone(),
            schema: schema.clone(),
            pages: n,
            spool,
            dir: dir.to_path_buf(),
            reporter: Arc::new(crate::progress::Silent),
            early: std::sync::Mutex::new(Some((encoder, groups, group_pages, rows))),
            // A temporary folder: nothing resumes from it.
            release_spool: true,
        };
        let files = job.run()?;
        Ok((schema, files))
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// A schema inferred without writing data (`jdop schema`).
pub struct SchemaReport {
    pub schema: InferredSchema,
    pub total: u64,
    pub pages: u64,
    pub pages_read: u64,
}

/// Fetches the dataset (or its first `sample_pages` pages) into a temporary spool
/// and infers its schema with `detect`.
pub async fn infer_schema(
    client: &Client,
    limits: &Limits,
    sample_pages: Option<u64>,
    detect: &DetectOptions,
    rep: &dyn Reporter,
) -> Result<SchemaReport> {
    let dataset = client.target().dataset.to_string();
    let total = total(client, limits, rep).await?;
    let pages = fetch::page_count(total, limits.page_size);
    let read = sample_pages.map_or(pages, |k| k.min(pages));
    let tmp = tempfile::Builder::new()
        .prefix("jdop-schema-")
        .tempdir()
        .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
    let spool = Spool::create(tmp.path().join("spool"))?;
    let counters = Counters::default();
    let fetched = fetch::fetch_pages(client, read, limits, &spool, &counters, rep, None).await?;
    let schema = match fetched.inferrer.finish_with(detect) {
        Ok(s) => s,
        Err(m) => {
            let empty_ok = detect.empty_as_null;
            return Err(fetch::on_rayon(move || {
                mismatch_error(&spool, &dataset, read, m, empty_ok)
            })
            .await?);
        }
    };
    Ok(SchemaReport {
        schema,
        total,
        pages,
        pages_read: read,
    })
}

/// The analyst hand-off next to the manifest: a DuckDB view over the files.
pub const QUERY_FILE: &str = "query.sql";

/// The time written into each Parquet file (`jdop.snapshot_time`): the export's
/// start, or `SOURCE_DATE_EPOCH` (seconds) when set, for byte-identical rebuilds.
fn snapshot_time(started_at: chrono::DateTime<Utc>) -> String {
    let t = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or(started_at);
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `out` as an absolute path (where the snapshot is published).
fn final_path(out: &std::path::Path) -> PathBuf {
    std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf())
}

/// The DuckDB type of a written column.
pub fn duckdb_type(t: &arrow_schema::DataType) -> String {
    use arrow_schema::DataType as D;
    match t {
        D::Utf8 => "VARCHAR".into(),
        D::Int64 => "BIGINT".into(),
        D::Float64 => "DOUBLE".into(),
        D::Boolean => "BOOLEAN".into(),
        D::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        D::Date32 => "DATE".into(),
        D::Timestamp(_, None) => "TIMESTAMP".into(),
        D::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        _ => "VARCHAR".into(),
    }
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A `CREATE VIEW` over the snapshot's files, with the types DuckDB must not guess.
fn query_sql(m: &Manifest, out: &std::path::Path) -> String {
    let dir = out.to_string_lossy().replace('\\', "/");
    format!(
        "-- {dataset} (update date {date}), {rows} rows: a DuckDB view over this snapshot.\n\
         -- duckdb -init query.sql, or in DuckDB: .read query.sql; then SELECT * FROM \"{dataset}\";\n\
         -- Written by jdop {version}; the path is where the snapshot was published.\n\
         {encodings}CREATE OR REPLACE VIEW \"{dataset}\" AS\nSELECT * FROM {reader};\n",
        encodings = encodings_sql(m),
        dataset = m.dataset,
        date = m.update_date.iso.as_deref().unwrap_or("unknown"),
        rows = m.rows,
        version = m.jdop_version,
        reader = duckdb_reader(m, &dir, ",\n    "),
    )
}

/// GB18030 CSV needs DuckDB's `encodings` extension (downloaded once by INSTALL).
pub fn encodings_sql(m: &Manifest) -> &'static str {
    if m.csv
        .is_some_and(|c| c.encoding == crate::sink::CsvEncoding::Gb18030)
    {
        "-- GB18030 text: DuckDB reads it with its encodings extension.\nINSTALL encodings;\nLOAD encodings;\n"
    } else {
        ""
    }
}

/// The DuckDB table function that reads a snapshot in `dir` (as DuckDB will see
/// the path) with the snapshot's types: Hive partitions with their column's type,
/// CSV with every column's type (DuckDB must not guess: `01425` stays text).
pub fn duckdb_reader(m: &Manifest, dir: &str, sep: &str) -> String {
    let part = m.partition_by.as_deref();
    let glob = if part.is_some() { "**/*" } else { "*" };
    let files = sql_str(&format!("{dir}/{glob}.{}", m.format.extension()));
    let ty = |t: &str| {
        t.parse::<arrow_schema::DataType>()
            .map(|t| duckdb_type(&t))
            .unwrap_or_else(|_| "VARCHAR".into())
    };
    let mut opts = Vec::new();
    if let Some(col) = part {
        let t = m
            .columns
            .iter()
            .find(|c| c.name == col)
            .map(|c| ty(&c.arrow_type))
            .unwrap_or_else(|| "VARCHAR".into());
        opts.push("hive_partitioning = true".to_string());
        opts.push(format!("hive_types = {{{}: '{t}'}}", sql_str(col)));
    }
    let reader = match m.format {
        Format::Parquet => "read_parquet",
        Format::Csv => {
            let cols: Vec<String> = m
                .columns
                .iter()
                .filter(|c| Some(c.name.as_str()) != part)
                .map(|c| format!("{}: '{}'", sql_str(&c.name), ty(&c.arrow_type)))
                .collect();
            opts.push("header = true".into());
            opts.push("auto_detect = false".into());
            if m.csv
                .is_some_and(|c| c.encoding == crate::sink::CsvEncoding::Gb18030)
            {
                opts.push("encoding = 'gb18030'".into());
            }
            opts.push(format!("columns = {{{}}}", cols.join(", ")));
            "read_csv"
        }
    };
    let args = std::iter::once(files)
        .chain(opts)
        .collect::<Vec<_>>()
        .join(sep);
    let open = if sep.contains('\n') { "(\n    " } else { "(" };
    let close = if sep.contains('\n') { "\n)" } else { ")" };
    format!("{reader}{open}{args}{close}")
}

/// The first value (page order) that does not fit the type asked for.
fn mismatch_error(spool: &Spool, dataset: &str, pages: u64, m: Mismatch, empty_ok: bool) -> Error {
    let (source_name, hint) = match m.source {
        crate::schema::TypeSource::Flag => (
            "--type",
            "fix the type, or --on-mismatch string keeps the column as text",
        ),
        crate::schema::TypeSource::SchemaFile => (
            "--schema",
            "fix the type, or --on-mismatch string keeps the column as text",
        ),
        crate::schema::TypeSource::Previous => (
            "the previous snapshot, pin_types",
            "the dataset's values changed type; pin_types = false lets the type follow them",
        ),
    };
    let (source_name, hint) = (source_name.to_string(), hint.to_string());
    let wanted = m.spec.to_string();
    let err = |page: u64, value: String| {
        Error::TypeMismatch(Box::new(crate::error::TypeMismatch {
            dataset: dataset.to_string(),
            column: m.column.clone(),
            page,
            value,
            wanted: wanted.clone(),
            source_name: source_name.clone(),
            hint: hint.clone(),
        }))
    };
    let mut text = String::new();
    for page in 1..=pages {
        let Ok(body) = spool.read_page(page) else {
            continue;
        };
        let Ok(records) = split_records(&body) else {
            continue;
        };
        for rec in &records {
            for (k, v) in rec {
                if k.as_ref() != m.column {
                    continue;
                }
                let raw = *v;
                let bad = match raw.as_bytes().first() {
                    Some(b'n') => false,
                    Some(b'{') | Some(b'[') => true,
                    _ if raw == "\"\"" => !empty_ok,
                    _ => {
                        text.clear();
                        cell_text(raw, &mut text).is_err() || !Detector::value_fits(&text, &m.spec)
                    }
                };
                if bad {
                    let shown = if raw.starts_with('"') {
                        text.clear();
                        let _ = cell_text(raw, &mut text);
                        crate::error::quote_value(&text)
                    } else {
                        crate::error::quote_value(raw)
                    };
                    return err(page, shown);
                }
            }
        }
    }
    // Every value fits on its own, but not together (two date shapes, ...).
    err(
        0,
        "(every value fits alone, but they mix shapes or scales)".into(),
    )
}

/// Fetches the total and the update date (in that order).
async fn total_and_date(
    client: &Client,
    limits: &Limits,
    counters: &Counters,
    rep: &dyn Reporter,
) -> Result<(u64, UpdateDate)> {
    let body = fetch::call(client, Op::Total, None, limits, counters, rep).await?;
    let total = parse_total(&body).map_err(|e| bad_answer(client, Op::Total, e))?;
    let body = fetch::call(client, Op::UpdateDate, None, limits, counters, rep).await?;
    let date = UpdateDate::from_body(&body).map_err(|e| bad_answer(client, Op::UpdateDate, e))?;
    Ok((total, date))
}

/// Pages whose records are byte-identical to an earlier page's: the platform
/// served a page twice (rows shifted, or a page past the end answered with the
/// last page again).
pub fn identical_pages(hashes: &[u64], rows: &[u32]) -> Vec<String> {
    let mut first: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, (&h, &n)) in hashes.iter().zip(rows).enumerate() {
        if n == 0 {
            continue;
        }
        if let Some(&j) = first.get(&h) {
            out.push(format!("page {} is identical to page {}", i + 1, j + 1));
            if out.len() >= 10 {
                break;
            }
        } else {
            first.insert(h, i);
        }
    }
    out
}

/// Why a fetched dataset is not one consistent version (empty when it is).
pub fn consistency(
    total_before: u64,
    total_after: u64,
    date_before: &UpdateDate,
    date_after: &UpdateDate,
    page_rows: &[u32],
    page_size: u32,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if total_before != total_after {
        reasons.push(format!(
            "the total moved from {total_before} to {total_after} during the export"
        ));
    }
    if date_before.raw != date_after.raw {
        reasons.push(format!(
            "the update date moved from {} to {} during the export",
            date_before.raw, date_after.raw
        ));
    }
    let n = page_rows.len();
    for (i, &rows) in page_rows.iter().enumerate() {
        let expected = if i + 1 < n {
            page_size as u64
        } else {
            total_before - (n as u64 - 1) * page_size as u64
        };
        if rows as u64 != expected {
            reasons.push(format!(
                "page {} returned {rows} records, expected {expected}",
                i + 1
            ));
            if reasons.len() > 20 {
                reasons.push("…".into());
                break;
            }
        }
    }
    reasons
}

/// The writing phase; runs on a blocking thread, converts on rayon.
struct WriteJob {
    dataset: String,
    format: Format,
    rows_per_file: Option<u64>,
    csv: CsvOptions,
    partition_by: Option<String>,
    parquet: ParquetOptions,
    schema: InferredSchema,
    pages: u64,
    spool: Spool,
    dir: PathBuf,
    reporter: Arc<dyn Reporter>,
    /// One Parquet file from row groups encoded during the fetch: the encoder, the
    /// groups, pages per group, rows per page.
    early: std::sync::Mutex<Option<EarlyParts>>,
    /// Whether the spool may be let go before the file is finished (not when a
    /// later run may resume from it).
    release_spool: bool,
}

type EarlyParts = (GroupEncoder, EncodedGroups, u64, Vec<u32>);

/// The row groups encoded early, taken in order by the file's assembly as the
/// worker finishes them: once the last page is in, the earlier groups are
/// assembled while the worker still encodes the last ones. Dropped before the
/// worker is done (an error), it stops the worker after its current group,
/// without waiting for it; a pass that starts over waits for it
/// ([`EncodedGroups::stop`]).
struct EncodedGroups {
    done: Option<std::sync::mpsc::Receiver<(usize, Option<EncodedGroup>)>>,
    /// Groups received, by index (`Some(None)`: left for the end).
    got: Vec<Option<Option<EncodedGroup>>>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
    spool: Spool,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl EncodedGroups {
    /// Row group `k` once the worker is done with it; `None` if it was left for
    /// the end (or never handed to the worker).
    fn take(&mut self, k: usize) -> Option<EncodedGroup> {
        while self.got.get(k).is_none_or(Option::is_none) {
            match self.done.as_ref().and_then(|rx| rx.recv().ok()) {
                Some((i, group)) => {
                    if self.got.len() <= i {
                        self.got.resize_with(i + 1, || None);
                    }
                    self.got[i] = Some(group);
                }
                // The worker is gone: nothing more comes.
                None => break,
            }
        }
        self.got.get_mut(k).and_then(Option::take).flatten()
    }
}

impl EncodedGroups {
    /// Stops the worker after its current group and waits for it: nothing of
    /// this pass touches the staging folder afterwards.
    fn stop(mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        // Its next send fails: it ends even with groups still queued.
        drop(self.done.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for EncodedGroups {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.spool.keep_tapes(0);
    }
}

/// Row groups encoded while the fetch goes on, on a thread of their own: each as
/// soon as its pages and every page before them are in, under the schema of
/// those pages (see [`crate::sink::assemble`]).
struct EarlyGroups {
    tx: Option<std::sync::mpsc::Sender<GroupJob>>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// Row groups as the worker finishes them (see [`EncodedGroups`]).
    done: Option<std::sync::mpsc::Receiver<(usize, Option<EncodedGroup>)>>,
    pages: u64,
    group_pages: u64,
    sent: u64,
    detect: DetectOptions,
    /// Set when the export gives up (dropped without `finish`): the worker stops.
    cancel: Arc<std::sync::atomic::AtomicBool>,
    /// Batches decoded as their pages come in (see [`Predecoded`]).
    pre: Arc<Predecoded>,
    spool: Spool,
    /// The first page of the next batch to decode ahead.
    next_batch: u64,
    /// The converter of the last batch decoded ahead (kept while the schema of the
    /// pages in converts alike, so its text reservations carry over).
    conv: Option<Arc<Converter>>,
}

/// A batch decoded ahead, by its first page.
enum Slot {
    Queued,
    Running,
    Done(Arc<Converter>, RecordBatch),
    /// Failed: the row group decodes it again, for the error.
    Failed,
}

/// Batches (of [`PAGES_PER_BATCH`] pages, aligned on their row group's first
/// page), decoded on rayon as soon as their pages are in, under the schema of the
/// pages in by then, so little is left to decode when a group's last page comes in
/// (above all the last group's, which used to be decoded after the last page).
/// Batches are decoded ahead only while the worker has caught up with the groups
/// handed to it, so a worker that falls behind the pages does not pile decoded
/// batches up in memory: it decodes the batches skipped meanwhile itself.
/// The row group takes a batch as it is if it was decoded as the group's schema
/// converts, widened with null columns if the group only has keys first seen
/// later ([`Converter::widen`]); otherwise (a type changed) it decodes it again.
/// So the bytes written do not depend on timing.
#[derive(Default)]
struct Predecoded {
    slots: std::sync::Mutex<std::collections::HashMap<u64, Slot>>,
    changed: std::sync::Condvar,
    /// Row groups the worker has finished with (encoded or left for the end).
    groups_done: std::sync::atomic::AtomicU64,
}

impl Predecoded {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// On rayon: decodes pages `first..=last`, unless the row group took them first.
    /// The decoding must not use rayon itself: a rayon thread waiting in
    /// [`Predecoded::take`] relies on a running decode never stealing its work.
    fn run(&self, spool: &Spool, conv: Arc<Converter>, first: u64, last: u64) {
        match self.lock().get_mut(&first) {
            Some(slot @ Slot::Queued) => *slot = Slot::Running,
            _ => return,
        }
        let nums: Vec<u64> = (first..=last).collect();
        // A panic here would abort the process (rayon::spawn) and leave the slot
        // running: the row group decodes the batch again and meets it itself.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decode_batch(&conv, spool, "", &nums)
        }));
        let result = match decoded {
            Ok(Ok(b)) => Slot::Done(conv, b),
            _ => Slot::Failed,
        };
        // Kept only if still wanted (not dropped with its row group meanwhile).
        if let Some(slot @ Slot::Running) = self.lock().get_mut(&first) {
            *slot = result;
        }
        self.changed.notify_all();
    }

    /// The batch from page `first` if it was decoded as `conv` decodes, or can be
    /// widened to it ([`Converter::widen`]), waiting for one being decoded; `None`
    /// if the caller must decode it. Either way the slot
    /// is gone: a queued decode of it does nothing.
    fn take(&self, first: u64, conv: &Converter) -> Option<RecordBatch> {
        let mut slots = self.lock();
        while let Some(Slot::Running) = slots.get(&first) {
            slots = self.changed.wait(slots).unwrap_or_else(|e| e.into_inner());
        }
        let slot = slots.remove(&first);
        drop(slots);
        match slot {
            Some(Slot::Done(c, b)) => conv.widen(&c, b),
            _ => None,
        }
    }

    /// Forgets the batches of pages `first..=last` (a row group not encoded early,
    /// or whose encoding failed).
    fn drop_range(&self, first: u64, last: u64) {
        self.lock().retain(|&p, _| p < first || p > last);
    }

    /// Forgets every batch (the worker is gone).
    fn clear(&self) {
        self.lock().clear();
    }
}

impl Drop for EarlyGroups {
    fn drop(&mut self) {
        // Handed on by `finish`: the worker goes on.
        if self.done.is_some() {
            self.cancel.store(true, Ordering::Relaxed);
            self.spool.keep_tapes(0);
        }
    }
}

/// Memory for the tapes of pages in but not converted yet (see
/// [`crate::platform::records::Tape`]); a page past it is scanned again. A tape
/// is about a third of its page's size: 16 MiB cover the pages of a 64k-row
/// group waiting for a busy encoder (4 MiB left about half the pages of the
/// DuckDB comparison without one, and cost 5% more CPU).
const TAPE_BUDGET: usize = 16 << 20;

struct GroupJob {
    index: usize,
    first: u64,
    last: u64,
    rows: usize,
    schema: InferredSchema,
}

impl EarlyGroups {
    fn start(
        encoder: GroupEncoder,
        spool: Spool,
        pages: u64,
        group_pages: u64,
        detect: DetectOptions,
    ) -> EarlyGroups {
        let (tx, rx) = std::sync::mpsc::channel::<GroupJob>();
        let (done_tx, done) = std::sync::mpsc::channel::<(usize, Option<EncodedGroup>)>();
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = cancel.clone();
        let pre = Arc::new(Predecoded::default());
        let (worker_pre, worker_spool) = (pre.clone(), spool.clone());
        let worker = std::thread::Builder::new()
            .name("jdop-row-groups".into())
            .spawn(move || {
                for job in rx {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let index = job.index;
                    let group = encode_group(&encoder, &worker_spool, &worker_pre, &job)
                        .map_err(|e| {
                            worker_pre.drop_range(job.first, job.last);
                            for p in job.first..=job.last {
                                worker_spool.take_tape(p);
                            }
                            tracing::debug!("row group {index} left for the end: {e}")
                        })
                        .ok();
                    worker_pre
                        .groups_done
                        .store(index as u64 + 1, Ordering::Release);
                    if done_tx.send((index, group)).is_err() {
                        break;
                    }
                }
            })
            .ok();
        if worker.is_some() {
            // Pages are converted soon after they come in: their tapes spare the
            // conversion a second scan of the JSON.
            spool.keep_tapes(TAPE_BUDGET);
        }
        EarlyGroups {
            tx: worker.as_ref().map(|_| tx),
            worker,
            done: Some(done),
            pages,
            group_pages,
            sent: 0,
            detect,
            cancel,
            pre,
            spool,
            next_batch: 1,
            conv: None,
        }
    }

    /// Pages `1..=n` are in: decodes ahead (on rayon) every batch of the row group
    /// being filled that they complete.
    fn decode_ahead(&mut self, n: u64, inf: &crate::schema::Inferrer) {
        if self.tx.is_none() {
            return;
        }
        // The converter of the pages in (`None` inside: their schema has none).
        let mut conv: Option<Option<Arc<Converter>>> = None;
        loop {
            let first = self.next_batch;
            let group = (first - 1) / self.group_pages;
            let group_last = ((group + 1) * self.group_pages).min(self.pages);
            let last = (first + PAGES_PER_BATCH as u64 - 1).min(group_last);
            if first > self.pages || last > n {
                return;
            }
            self.next_batch = last + 1;
            // Only while the worker has caught up (every group handed over is
            // done): batches decoded while it still encodes an earlier group would
            // pile up in memory. It decodes the batches skipped here itself.
            if self.pre.groups_done.load(Ordering::Acquire) < self.sent {
                continue;
            }
            let c = conv.get_or_insert_with(|| {
                let schema = inf.clone().finish_with(&self.detect).ok()?;
                let fresh = Converter::new(&schema);
                if !fresh.converts_in_one_pass() {
                    // Nested columns: arrow-json decodes, tapes would go unused.
                    self.spool.keep_tapes(0);
                }
                let c = match self.conv.take() {
                    Some(c) if c.converts_like(&fresh) => c,
                    _ => Arc::new(fresh),
                };
                self.conv = Some(c.clone());
                Some(c)
            });
            let Some(c) = c.clone() else { continue };
            self.pre.lock().insert(first, Slot::Queued);
            let (pre, spool, cancel) = (self.pre.clone(), self.spool.clone(), self.cancel.clone());
            rayon::spawn(move || {
                if !cancel.load(Ordering::Relaxed) {
                    pre.run(&spool, c, first, last);
                }
            });
        }
    }

    /// Pages `1..=n` are in: hands over every row group they complete.
    fn on_prefix(&mut self, n: u64, inf: &crate::schema::Inferrer, rows: &[u32]) {
        self.decode_ahead(n, inf);
        let Some(tx) = &self.tx else { return };
        loop {
            let first = self.sent * self.group_pages + 1;
            let last = ((self.sent + 1) * self.group_pages).min(self.pages);
            if first > self.pages || last > n {
                return;
            }
            // The provisional schema: of the pages in so far (in order).
            if let Ok(schema) = inf.clone().finish_with(&self.detect) {
                let rows = rows[(first - 1) as usize..last as usize]
                    .iter()
                    .map(|&r| r as usize)
                    .sum();
                let job = GroupJob {
                    index: self.sent as usize,
                    first,
                    last,
                    rows,
                    schema,
                };
                if tx.send(job).is_err() {
                    // The worker is gone: nothing is encoded early any more.
                    self.tx = None;
                    self.pre.clear();
                    self.spool.keep_tapes(0);
                    return;
                }
            } else {
                self.pre.drop_range(first, last);
                for p in first..=last {
                    self.spool.take_tape(p);
                }
            }
            self.sent += 1;
        }
    }

    /// The number of pages is now known to be `n` (all in): hands over the last,
    /// partial row group.
    fn end(&mut self, n: u64, inf: &crate::schema::Inferrer, rows: &[u32]) {
        self.pages = n;
        self.on_prefix(n, inf, rows);
    }

    /// No more row groups: the worker ends once those handed over are done, and
    /// the file's assembly takes them as they come.
    fn finish(mut self) -> EncodedGroups {
        drop(self.tx.take());
        EncodedGroups {
            done: self.done.take(),
            got: Vec::new(),
            cancel: self.cancel.clone(),
            spool: self.spool.clone(),
            worker: self.worker.take(),
        }
    }
}

/// Decodes pages `first..=last` with `conv`, 8 pages per batch, in parallel;
/// batches `pre` decoded ahead are taken when they convert as `conv` does, or
/// widen to it ([`Predecoded::take`]).
fn decode_pages(
    conv: &Converter,
    spool: &Spool,
    dataset: &str,
    first: u64,
    last: u64,
    pre: Option<&Predecoded>,
) -> Result<Vec<RecordBatch>> {
    let nums: Vec<u64> = (first..=last).collect();
    nums.par_chunks(PAGES_PER_BATCH)
        .map(|group| match pre.and_then(|p| p.take(group[0], conv)) {
            Some(batch) => Ok(batch),
            None => decode_batch(conv, spool, dataset, group),
        })
        .collect()
}

/// Decodes the pages `nums` (in this order) into one batch.
fn decode_batch(
    conv: &Converter,
    spool: &Spool,
    dataset: &str,
    nums: &[u64],
) -> Result<RecordBatch> {
    // Taken first, so that a page that cannot be read does not keep its tape.
    let tapes: Vec<_> = nums.iter().map(|&p| spool.take_tape(p)).collect();
    let texts = nums
        .iter()
        .map(|&p| {
            spool.read_page_bytes(p).map_err(|e| Error::Page {
                dataset: dataset.to_string(),
                page: p,
                source: Box::new(crate::error::PageError::Spool(e)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    conv.decode_taped(&texts, &tapes)
        .map_err(|(i, source)| Error::Page {
            dataset: dataset.to_string(),
            page: nums[i],
            source: Box::new(source),
        })
}

fn encode_group(
    encoder: &GroupEncoder,
    spool: &Spool,
    pre: &Predecoded,
    job: &GroupJob,
) -> Result<EncodedGroup> {
    let conv = Converter::new(&job.schema);
    let batches = match decode_pages(&conv, spool, "", job.first, job.last, Some(pre)) {
        Ok(b) => b,
        Err(e) => {
            encoder.decide(None);
            return Err(e);
        }
    };
    let n = conv.schema().fields().len();
    let columns = GroupEncoder::columns(&batches, n);
    // The first row group chooses the dictionary encodings of all of them.
    encoder.decide((job.index == 0).then_some((conv.schema(), &columns[..])));
    encoder
        .encode(conv.schema(), &columns, job.rows, None)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// A thread joined when this is dropped.
struct JoinedOnDrop<T>(Option<std::thread::JoinHandle<T>>);

impl<T> Drop for JoinedOnDrop<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

/// Pages decoded into one batch (a few thousand rows).
const PAGES_PER_BATCH: usize = 8;

/// Pages formatted as CSV at a time (in parallel) before they are written in order.
const CSV_WINDOW: usize = 64;

impl WriteJob {
    fn run(self) -> Result<Vec<FileEntry>> {
        if self.schema.columns.is_empty() {
            if self.schema.rows > 0 {
                self.reporter.warn(&format!(
                    "`{}`: the records have no fields; no data file written",
                    self.dataset
                ));
            }
            return Ok(Vec::new());
        }
        match self.format {
            Format::Parquet => self.parquet(),
            Format::Csv => self.csv(),
        }
    }

    fn read(&self, page: u64) -> Result<String> {
        self.spool.read_page(page).map_err(|e| Error::Page {
            dataset: self.dataset.clone(),
            page,
            source: Box::new(crate::error::PageError::Spool(e)),
        })
    }

    /// One file from the row groups encoded during the fetch, completed for the
    /// final schema.
    fn assemble(
        &self,
        encoder: GroupEncoder,
        mut groups: EncodedGroups,
        group_pages: u64,
        page_rows: &[u32],
    ) -> Result<Vec<FileEntry>> {
        let conv = Converter::new(&self.schema);
        let schema = conv.schema().clone();
        let name = crate::sink::part_name(0, Format::Parquet);
        let path = self.dir.join(&name);
        let werr = |e: parquet::errors::ParquetError| Error::Write {
            dataset: self.dataset.clone(),
            what: format!("Parquet file `{name}`"),
            source: Box::new(e),
        };
        let file = crate::sink::HashingFile::create_hashed_aside(&path)?;
        // File-level properties (key-value metadata); the chunks bring their own.
        let props = crate::sink::writer_props(&self.parquet)?;
        let mut asm = Assembler::new(file, &schema, &props).map_err(werr)?;
        let n_groups = self.pages.div_ceil(group_pages);
        // Joined before returning, also on an error.
        let mut released = JoinedOnDrop(None);
        for k in 0..n_groups as usize {
            let group = groups.take(k);
            let first = k as u64 * group_pages + 1;
            let last = ((k as u64 + 1) * group_pages).min(self.pages);
            let rows: usize = page_rows[(first - 1) as usize..last as usize]
                .iter()
                .map(|&r| r as usize)
                .sum();
            let fields = encoder.complete(group, &schema, rows, |needed| {
                let names: Vec<&str> = needed
                    .iter()
                    .map(|&i| schema.field(i).name().as_str())
                    .collect();
                let sub = Converter::columns(&self.schema, &names);
                let batches = decode_pages(&sub, &self.spool, &self.dataset, first, last, None)?;
                Ok(names
                    .iter()
                    .map(|n| {
                        let j = sub.schema().index_of(n).expect("a column of the schema");
                        batches.iter().map(|b| b.column(j).clone()).collect()
                    })
                    .collect())
            })?;
            if k + 1 == n_groups as usize && self.release_spool {
                // No page is read again: the spool's cached pages are let go on
                // a thread of their own while the file is finished.
                let spool = self.spool.clone();
                released.0 = Some(std::thread::spawn(move || spool.release()));
            }
            asm.push(fields).map_err(werr)?;
            self.reporter.on_written(rows as u64);
        }
        let (bytes, sha256) = asm.finish().map_err(werr)?.finish()?;
        if let Some(Ok(Err(e))) = released.0.take().map(|t| t.join()) {
            tracing::debug!("letting the spool go: {e}");
        }
        Ok(vec![FileEntry {
            path: name,
            rows: page_rows.iter().map(|&r| r as u64).sum(),
            bytes,
            sha256,
        }])
    }

    fn parquet(self) -> Result<Vec<FileEntry>> {
        let early = self.early.lock().expect("not poisoned").take();
        if let Some((encoder, groups, group_pages, page_rows)) = early {
            return self.assemble(encoder, groups, group_pages, &page_rows);
        }
        let conv = Converter::new(&self.schema);
        let mut sink = match &self.partition_by {
            None => ParquetOut::Single(Box::new(ParquetSink::new(
                self.dir.clone(),
                conv.schema().clone(),
                self.rows_per_file,
                &self.parquet,
                &self.dataset,
            )?)),
            Some(col) => {
                ParquetOut::Partitioned(Box::new(Partitions::new(&self, conv.schema(), col)))
            }
        };
        let page_nums: Vec<u64> = (1..=self.pages).collect();
        let window = PAGES_PER_BATCH * rayon::current_num_threads().max(1) * 2;
        for chunk in page_nums.chunks(window) {
            let batches: Vec<Result<RecordBatch>> = chunk
                .par_chunks(PAGES_PER_BATCH)
                .map(|group| {
                    let texts = group
                        .iter()
                        .map(|&p| self.read(p))
                        .collect::<Result<Vec<_>>>()?;
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    conv.decode(&refs).map_err(|(i, source)| Error::Page {
                        dataset: self.dataset.clone(),
                        page: group[i],
                        source: Box::new(source),
                    })
                })
                .collect();
            for b in batches {
                let b = b?;
                if b.num_rows() > 0 {
                    sink.write(&b)?;
                    self.reporter.on_written(b.num_rows() as u64);
                }
            }
        }
        sink.close()
    }

    fn csv(self) -> Result<Vec<FileEntry>> {
        let (header, targets): (Vec<String>, Vec<Option<detect::Target>>) = self
            .schema
            .columns
            .iter()
            .filter(|c| Some(&c.name) != self.partition_by.as_ref())
            .map(|c| (c.name.clone(), c.typed))
            .unzip();
        let new_sink = || {
            CsvSink::new(
                self.dir.clone(),
                header.clone(),
                targets.clone(),
                self.csv,
                self.rows_per_file,
                &self.dataset,
            )
        };
        if let Some(col) = &self.partition_by {
            return self.csv_partitioned(col, new_sink);
        }
        let mut sink = new_sink();
        let fmt = sink.formatter();
        // Pages are formatted on all cores a window at a time, while the window
        // before is written (in order) to the file.
        let format_window = |window: &[u64]| -> Vec<Result<CsvPage>> {
            window
                .par_iter()
                .map_init(
                    || fmt.clone(),
                    |fmt, &page| {
                        let page_err = |source| Error::Page {
                            dataset: self.dataset.clone(),
                            page,
                            source: Box::new(source),
                        };
                        let bytes = self
                            .spool
                            .read_page_bytes(page)
                            .map_err(|e| page_err(crate::error::PageError::Spool(e)))?;
                        let text = crate::platform::records::utf8(&bytes).map_err(|_| {
                            let e = std::str::from_utf8(&bytes).expect_err("not UTF-8");
                            page_err(crate::error::PageError::Spool(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                e,
                            )))
                        })?;
                        let records = split_records(text).map_err(page_err)?;
                        let mut rows = CsvPage::default();
                        fmt.format(&records, &mut rows).map_err(page_err)?;
                        Ok(rows)
                    },
                )
                .collect()
        };
        let nums: Vec<u64> = (1..=self.pages).collect();
        let windows: Vec<&[u64]> = nums.chunks(CSV_WINDOW).collect();
        let mut ready = windows.first().map(|w| format_window(w));
        for k in 0..windows.len() {
            let current = ready.take().unwrap_or_default();
            let (next, written) = rayon::join(
                || windows.get(k + 1).map(|w| format_window(w)),
                || -> Result<()> {
                    for rows in current {
                        let rows = rows?;
                        sink.write_page(&rows)?;
                        self.reporter.on_written(rows.rows() as u64);
                    }
                    Ok(())
                },
            );
            written?;
            ready = next;
        }
        sink.close()
    }

    /// CSV files in one folder per value of `col` (its canonical text).
    fn csv_partitioned(&self, col: &str, new_sink: impl Fn() -> CsvSink) -> Result<Vec<FileEntry>> {
        let column = self.schema.columns.iter().find(|c| c.name == col);
        let target = column.and_then(|c| c.typed);
        let float = column.is_some_and(|c| c.kind == Kind::Float);
        let mut sinks: Vec<CsvSink> = Vec::new();
        let mut index: std::collections::HashMap<Option<String>, usize> = Default::default();
        let mut text = String::new();
        let mut canon = String::new();
        for page in 1..=self.pages {
            let body = self.read(page)?;
            let page_err = |source| Error::Page {
                dataset: self.dataset.clone(),
                page,
                source: Box::new(source),
            };
            let records = split_records(&body).map_err(page_err)?;
            for rec in &records {
                let mut key: Option<String> = None;
                for (k, v) in rec {
                    if k.as_ref() == col {
                        text.clear();
                        cell_text(v, &mut text).map_err(page_err)?;
                        key = match (*v, target) {
                            ("null", _) => None,
                            (_, Some(_)) if text.is_empty() => None,
                            (_, Some(t)) => {
                                canon.clear();
                                t.canonical(&text, &mut canon).map(|_| canon.clone())
                            }
                            (_, None) if float => text.parse::<f64>().ok().map(|f| format!("{f}")),
                            _ => Some(text.clone()),
                        };
                    }
                }
                let i = match index.get(&key) {
                    Some(&i) => i,
                    None => {
                        if sinks.len() >= MAX_PARTITIONS {
                            return Err(too_many_partitions(&self.dataset, col));
                        }
                        let sub = partition_folder(col, key.as_deref())?;
                        sinks.push(new_sink().in_subdir(&sub)?);
                        index.insert(key, sinks.len() - 1);
                        sinks.len() - 1
                    }
                };
                sinks[i].write_record(rec).map_err(|e| match e {
                    crate::sink::WriteOrPage::Write(e) => e,
                    crate::sink::WriteOrPage::Page(source) => page_err(source),
                })?;
            }
            self.reporter.on_written(records.len() as u64);
        }
        let mut files = Vec::new();
        for s in sinks {
            files.extend(s.close()?);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

/// The folder of a partition value. A value too long for a folder name would be
/// cut: readers could not recover it from the path, and the column is not in the
/// files. Refused (the spool is kept).
fn partition_folder(col: &str, value: Option<&str>) -> Result<String> {
    if hive::is_lossless(col, value) {
        return Ok(hive::partition_dir(col, value));
    }
    Err(Error::usage(format!(
        "--partition-by `{col}`: the value {} ({} bytes) is too long for a folder name; \
         readers could not get it back from the path. Partition by a column with short values \
         (the fetched pages are kept: the next run does not download them again)",
        crate::error::quote_value(value.unwrap_or_default()),
        value.map_or(0, str::len)
    )))
}

/// Distinct values of a `--partition-by` column at most (each is an open file).
pub const MAX_PARTITIONS: usize = 1000;

/// Bytes of row groups being built across partitions before the largest is flushed.
const PARTITION_BUFFER_BYTES: usize = 256 << 20;

fn too_many_partitions(dataset: &str, col: &str) -> Error {
    Error::usage(format!(
        "--partition-by `{col}`: `{dataset}` has more than {MAX_PARTITIONS} distinct values; \
         partition by a column with fewer values"
    ))
}

enum ParquetOut {
    Single(Box<ParquetSink>),
    Partitioned(Box<Partitions>),
}

impl ParquetOut {
    fn write(&mut self, b: &RecordBatch) -> Result<()> {
        match self {
            ParquetOut::Single(s) => s.write(b),
            ParquetOut::Partitioned(p) => p.write(b),
        }
    }

    fn close(self) -> Result<Vec<FileEntry>> {
        match self {
            ParquetOut::Single(s) => s.close(),
            ParquetOut::Partitioned(p) => p.close(),
        }
    }
}

/// One Parquet writer per value of the partition column, which the files leave
/// out (the folder names hold it), so every file has the same schema.
struct Partitions {
    dir: PathBuf,
    column: String,
    col: usize,
    target: Option<detect::Target>,
    file_schema: arrow_schema::SchemaRef,
    keep: Vec<usize>,
    opts: ParquetOptions,
    rows_per_file: Option<u64>,
    dataset: String,
    sinks: Vec<ParquetSink>,
    index: std::collections::HashMap<Option<String>, usize>,
}

impl Partitions {
    fn new(job: &WriteJob, schema: &arrow_schema::SchemaRef, column: &str) -> Partitions {
        let col = schema.index_of(column).expect("checked before writing");
        let keep: Vec<usize> = (0..schema.fields().len()).filter(|&i| i != col).collect();
        let file_schema = Arc::new(schema.project(&keep).expect("indices in range"));
        Partitions {
            dir: job.dir.clone(),
            column: column.to_string(),
            col,
            target: job.schema.columns[col].typed,
            file_schema,
            keep,
            opts: job.parquet.clone(),
            rows_per_file: job.rows_per_file,
            dataset: job.dataset.clone(),
            sinks: Vec::new(),
            index: Default::default(),
        }
    }

    fn write(&mut self, b: &RecordBatch) -> Result<()> {
        let part = b.column(self.col);
        let mut groups: Vec<(Option<String>, Vec<u32>)> = Vec::new();
        let mut seen: std::collections::HashMap<Option<String>, usize> = Default::default();
        for row in 0..b.num_rows() {
            let key = value_text(part.as_ref(), row, self.target);
            let g = *seen.entry(key.clone()).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(row as u32);
        }
        let rest = b.project(&self.keep).map_err(|e| self.err(e))?;
        for (key, rows) in groups {
            let idx = arrow_array::UInt32Array::from(rows);
            let sub =
                arrow_select::take::take_record_batch(&rest, &idx).map_err(|e| self.err(e))?;
            let i = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    if self.sinks.len() >= MAX_PARTITIONS {
                        return Err(too_many_partitions(&self.dataset, &self.column));
                    }
                    let sub_dir = partition_folder(&self.column, key.as_deref())?;
                    let sink = ParquetSink::new(
                        self.dir.clone(),
                        self.file_schema.clone(),
                        self.rows_per_file,
                        &self.opts,
                        &self.dataset,
                    )?
                    .in_subdir(&sub_dir)?;
                    self.sinks.push(sink);
                    self.index.insert(key, self.sinks.len() - 1);
                    self.sinks.len() - 1
                }
            };
            self.sinks[i].write(&sub)?;
        }
        // Bound memory: flush the biggest row groups being built.
        let mut total: usize = self.sinks.iter().map(|s| s.in_progress_bytes()).sum();
        while total > PARTITION_BUFFER_BYTES {
            let (i, bytes) = self
                .sinks
                .iter()
                .map(|s| s.in_progress_bytes())
                .enumerate()
                .max_by_key(|&(i, b)| (b, std::cmp::Reverse(i)))
                .expect("some sink");
            self.sinks[i].flush()?;
            total -= bytes;
        }
        Ok(())
    }

    fn err(&self, e: arrow_schema::ArrowError) -> Error {
        Error::Write {
            dataset: self.dataset.clone(),
            what: format!("partitions by `{}`", self.column),
            source: Box::new(e),
        }
    }

    fn close(self) -> Result<Vec<FileEntry>> {
        let mut files = Vec::new();
        for s in self.sinks {
            files.extend(s.close()?);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> UpdateDate {
        UpdateDate::from_value(serde_json::json!(s))
    }

    /// A batch decoded ahead under an earlier schema is used when the row group's
    /// schema converts alike or only adds keys (then the spool is not read at all),
    /// and decoded again when a type changed; the result is always the batch the
    /// group's own converter builds.
    #[test]
    fn batches_decoded_ahead_are_used_only_when_they_convert_alike() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path().join("spool")).unwrap();
        let pages = [
            r#"[{"a":1,"d":"2024-01-02","s":"x"}]"#,
            r#"[{"a":2,"d":"2024-01-03","s":"y"}]"#,
            r#"[{"a":3,"d":"2024-01-04","s":"z","late":"L"}]"#,
            r#"[{"a":4.5,"d":"2024-01-05","s":"w"}]"#,
            r#"[{"a":5,"d":"soon","s":"v"}]"#,
        ];
        let conv_of = |upto: &[usize]| {
            let mut inf = crate::schema::Inferrer::default();
            for &i in upto {
                inf.merge(crate::schema::Inferrer::observe_array(pages[i]).unwrap().1);
            }
            Converter::new(&inf.finish())
        };
        let write = |spool: &Spool| {
            for (i, p) in pages[..2].iter().enumerate() {
                spool.write_page(i as u64 + 1, p).unwrap();
            }
        };
        write(&spool);
        let early = Arc::new(conv_of(&[0, 1]));
        let ahead = decode_batch(&early, &spool, "", &[1, 2]).unwrap();
        // (pages whose schema the row group has, whether the batch decoded ahead fits)
        let cases: [(&[usize], bool); 4] = [
            (&[0, 1], true),
            (&[0, 1, 2], true),
            (&[0, 1, 3], false),
            (&[0, 1, 4], false),
        ];
        for (upto, fits) in cases {
            let conv = conv_of(upto);
            write(&spool);
            let fresh = decode_pages(&conv, &spool, "", 1, 2, None).unwrap();
            if fits {
                // Taken without reading the spool.
                spool.remove_page(1);
                spool.remove_page(2);
            }
            let pre = Predecoded::default();
            pre.lock()
                .insert(1, Slot::Done(early.clone(), ahead.clone()));
            let got = decode_pages(&conv, &spool, "", 1, 2, Some(&pre)).unwrap();
            assert_eq!(got, fresh, "row group of pages {upto:?}");
            assert!(pre.lock().is_empty(), "the slot is taken");
        }
    }

    /// A spool and a row-group encoder in `dir`.
    fn spool_and_encoder(dir: &std::path::Path) -> (Spool, GroupEncoder) {
        let spool = Spool::create(dir.join("spool")).unwrap();
        let spill = SpillFile::create(&dir.join("spill.bin")).unwrap();
        let encoder = GroupEncoder::new(
            crate::sink::writer_props(&ParquetOptions::default()).unwrap(),
            SpillFactory(spill),
        );
        (spool, encoder)
    }

    /// While row groups are encoded early, each page processed keeps its tape and
    /// the conversion takes it (the batch is the one scanning builds); once early
    /// row groups end, tapes are off.
    #[test]
    fn early_row_groups_keep_tapes_that_the_conversion_takes() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, encoder) = spool_and_encoder(dir.path());
        let early = EarlyGroups::start(encoder, spool.clone(), 10, 4, DetectOptions::default());
        assert!(spool.wants_tapes());
        let page = r#"[{"a":1,"s":"x\"y"},{"s":"z","a":2,"d":"2024-01-02"}]"#;
        let (_, inf, _) = fetch::process_array(&spool, "", 1, page, true).unwrap();
        let mut whole = crate::schema::Inferrer::default();
        whole.merge(inf);
        let conv = Converter::new(&whole.finish());
        let batch = decode_batch(&conv, &spool, "", &[1]).unwrap();
        assert_eq!(batch, conv.decode(&[page]).unwrap());
        assert!(spool.take_tape(1).is_none(), "taken by the conversion");
        fetch::process_array(&spool, "", 2, page, true).unwrap();
        assert!(spool.take_tape(2).is_some(), "kept for the conversion");
        drop(early);
        assert!(!spool.wants_tapes());
        fetch::process_array(&spool, "", 3, page, true).unwrap();
        assert!(
            spool.take_tape(3).is_none(),
            "no tapes without early row groups"
        );
    }

    /// Batches are decoded ahead while the worker has caught up with the groups
    /// handed to it, and not while it still encodes one.
    #[test]
    fn batches_are_decoded_ahead_only_while_the_worker_has_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, encoder) = spool_and_encoder(dir.path());
        let mut early =
            EarlyGroups::start(encoder, spool.clone(), 64, 32, DetectOptions::default());
        let page = r#"[{"a":1,"s":"x"}]"#;
        let mut inf = crate::schema::Inferrer::default();
        let mut rows = Vec::new();
        for p in 1..=8u64 {
            let (r, i, _) = fetch::process_array(&spool, "", p, page, true).unwrap();
            inf.merge(i);
            rows.push(r);
        }
        early.on_prefix(8, &inf, &rows);
        assert!(
            early.pre.lock().contains_key(&1),
            "caught up: pages 1-8 decoded ahead"
        );
        // As if the worker were still encoding a group handed to it.
        early.sent = 1;
        for p in 9..=16u64 {
            let (r, i, _) = fetch::process_array(&spool, "", p, page, true).unwrap();
            inf.merge(i);
            rows.push(r);
        }
        early.decode_ahead(16, &inf);
        assert!(
            !early.pre.lock().contains_key(&9),
            "busy: pages 9-16 left to the worker"
        );
        early.sent = 0;
    }

    /// The assembly takes each row group as soon as the worker sends it, in any
    /// order, without waiting for the worker to end; a group never sent is
    /// `None` once the worker is gone.
    #[test]
    fn encoded_groups_are_taken_as_they_come() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = spool_and_encoder(dir.path());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut groups = EncodedGroups {
            done: Some(rx),
            got: Vec::new(),
            cancel: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            spool,
            worker: None,
        };
        let group = |rows| EncodedGroup {
            schema: Arc::new(arrow_schema::Schema::empty()),
            rows,
            fields: Vec::new(),
        };
        tx.send((1, Some(group(11)))).unwrap();
        tx.send((0, Some(group(10)))).unwrap();
        // The worker is still there (`tx` alive): taking group 0 does not wait for it.
        let (got_tx, got_rx) = std::sync::mpsc::channel();
        let taker = std::thread::spawn(move || {
            let first = groups.take(0).map(|g| g.rows);
            got_tx.send(first).unwrap();
            let second = groups.take(1).map(|g| g.rows);
            (groups, second)
        });
        let first = got_rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(first, Ok(Some(10)), "group 0 taken while the worker runs");
        let (mut groups, second) = taker.join().unwrap();
        assert_eq!(second, Some(11));
        tx.send((3, None)).unwrap();
        drop(tx);
        assert!(groups.take(2).is_none(), "never sent");
        assert!(groups.take(3).is_none(), "left for the end");
        assert!(groups.take(1).is_none(), "taken once");
        drop(groups);
    }

    /// Stopping the groups of a pass that starts over cancels the worker and
    /// waits for it, even with groups still to send.
    #[test]
    fn stopped_groups_wait_for_their_worker() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = spool_and_encoder(dir.path());
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Option<EncodedGroup>)>();
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = cancel.clone();
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ended_w = ended.clone();
        let worker = std::thread::spawn(move || {
            // A worker with endless groups: it ends when cancelled or unheard.
            for i in 0.. {
                if seen.load(Ordering::Relaxed) || tx.send((i, None)).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            ended_w.store(true, Ordering::Relaxed);
        });
        let groups = EncodedGroups {
            done: Some(rx),
            got: Vec::new(),
            cancel: cancel.clone(),
            spool,
            worker: Some(worker),
        };
        groups.stop();
        assert!(cancel.load(Ordering::Relaxed));
        assert!(
            ended.load(Ordering::Relaxed),
            "stop returned before the worker ended"
        );
    }

    /// A row group that needs a batch being decoded waits for it; a queued one it
    /// takes over (the queued decode then does nothing).
    #[test]
    fn taking_a_batch_waits_for_a_running_decode_and_takes_over_a_queued_one() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path().join("spool")).unwrap();
        let page = r#"[{"a":1}]"#;
        spool.write_page(1, page).unwrap();
        let mut inf = crate::schema::Inferrer::default();
        inf.merge(crate::schema::Inferrer::observe_array(page).unwrap().1);
        let conv = Arc::new(Converter::new(&inf.finish()));
        let want = decode_batch(&conv, &spool, "", &[1]).unwrap();
        let pre = Arc::new(Predecoded::default());
        pre.lock().insert(1, Slot::Running);
        let (p, c, b) = (pre.clone(), conv.clone(), want.clone());
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            p.lock().insert(1, Slot::Done(c, b));
            p.changed.notify_all();
        });
        assert_eq!(pre.take(1, &conv), Some(want));
        finisher.join().unwrap();
        pre.lock().insert(1, Slot::Queued);
        assert_eq!(pre.take(1, &conv), None, "queued: the caller decodes it");
        pre.run(&spool, conv.clone(), 1, 1);
        assert!(
            pre.lock().is_empty(),
            "a decode taken over leaves nothing behind"
        );
    }

    #[test]
    fn consistent_when_nothing_moved() {
        assert!(consistency(
            401,
            401,
            &d("2024-01-01"),
            &d("2024-01-01"),
            &[200, 200, 1],
            200
        )
        .is_empty());
    }

    #[test]
    fn short_page_in_the_middle_is_inconsistent() {
        let r = consistency(
            401,
            401,
            &d("2024-01-01"),
            &d("2024-01-01"),
            &[200, 199, 1],
            200,
        );
        assert_eq!(r, ["page 2 returned 199 records, expected 200"]);
    }

    #[test]
    fn moved_total_and_date_are_reported() {
        let r = consistency(
            400,
            410,
            &d("2024-01-01"),
            &d("2024-01-02"),
            &[200, 200],
            200,
        );
        assert_eq!(r.len(), 2, "{r:?}");
    }
}
