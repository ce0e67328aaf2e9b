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
use crate::error::{Error, Op, Result};
use crate::fetch::{self, Counters, Limits};
use crate::manifest::{Manifest, SpoolState, Staging, MANIFEST_VERSION};
use crate::platform::{
    parse_total, split_records, Client, ClientConfig, Secret, Target, UpdateDate,
};
use crate::progress::Reporter;
use crate::schema::{InferredSchema, SchemaChanges, SchemaPolicy};
use crate::sink::{CsvSink, FileEntry, Format, ParquetOptions, ParquetSink};
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
    /// Start CSV files with a UTF-8 BOM (Excel).
    pub csv_bom: bool,
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
        let fetched =
            fetch::fetch_pages(&client, pages, &cfg.limits, &spool, &counters, rep).await?;
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

    let schema = fetched.inferrer.finish();
    let rows = schema.rows;
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
    let mut parquet = cfg.parquet.clone();
    parquet
        .metadata
        .push(("jdop.dataset".into(), dataset.clone()));
    parquet.metadata.push((
        "jdop.update_date".into(),
        match &date_before.raw {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    ));
    let job = WriteJob {
        dataset: dataset.clone(),
        format: cfg.format,
        rows_per_file: cfg.rows_per_file,
        csv_bom: cfg.csv_bom,
        parquet,
        schema: schema.clone(),
        pages,
        spool: spool.clone(),
        dir: staging.snapshot(),
        reporter: reporter.clone(),
    };
    let files = tokio::task::spawn_blocking(move || job.run())
        .await
        .map_err(|e| Error::Internal(format!("the writer stopped: {e}")))??;
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
        warnings: reasons,
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
    };
    manifest.write(&staging.snapshot())?;
    let out = staging.publish()?;
    rep.finish();
    Ok(Summary { out, manifest })
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
    csv_bom: bool,
    parquet: ParquetOptions,
    schema: InferredSchema,
    pages: u64,
    spool: Spool,
    dir: PathBuf,
    reporter: Arc<dyn Reporter>,
}

/// Pages decoded into one batch (a few thousand rows).
const PAGES_PER_BATCH: usize = 8;

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

    fn parquet(self) -> Result<Vec<FileEntry>> {
        let conv = Converter::new(&self.schema);
        let mut sink = ParquetSink::new(
            self.dir.clone(),
            conv.schema().clone(),
            self.rows_per_file,
            &self.parquet,
            &self.dataset,
        )?;
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
        let header = self.schema.columns.iter().map(|c| c.name.clone()).collect();
        let mut sink = CsvSink::new(
            self.dir.clone(),
            header,
            self.csv_bom,
            self.rows_per_file,
            &self.dataset,
        );
        for page in 1..=self.pages {
            let text = self.read(page)?;
            let page_err = |source| Error::Page {
                dataset: self.dataset.clone(),
                page,
                source: Box::new(source),
            };
            let records = split_records(&text).map_err(page_err)?;
            sink.write_records(&records).map_err(|e| match e {
                crate::sink::WriteOrPage::Write(e) => e,
                crate::sink::WriteOrPage::Page(source) => Error::Page {
                    dataset: self.dataset.clone(),
                    page,
                    source: Box::new(source),
                },
            })?;
            self.reporter.on_written(records.len() as u64);
        }
        sink.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> UpdateDate {
        UpdateDate::from_value(serde_json::json!(s))
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
