//! `jdop sync`: keep a local mirror of many datasets fresh from one config file.
//!
//! For each dataset the total and update date are fetched first; when both equal
//! those of the latest snapshot, no page is fetched. Otherwise a new snapshot is
//! exported to `<root>/<id>/<snapshot-id>/` (the fetch time in UTC, sortable),
//! published atomically, and `<root>/<id>/latest` (a symlink) and
//! `<root>/<id>/latest.json` move to it. Datasets run concurrently under one limit
//! on requests in flight; one failing dataset does not stop the others. A lock in
//! the root (`.jdop-sync.lock`, an OS file lock released when its process dies)
//! stops two runs from colliding. `catalog.json` and `views.sql` describe the mirror.

pub mod config;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub use config::{ConfigError, Job, SchemaPolicy, SecretSource, SyncConfig};

use crate::error::{Error, Result};
use crate::export::{self, ExportConfig};
use crate::fetch::{Limits, RateLimit, RetryPolicy};
use crate::manifest::Manifest;
use crate::platform::{Client, ClientConfig, Secret, Target, UpdateDate};
use crate::progress::{Reporter, Silent};
use crate::sink::{Format, ParquetOptions};

pub const LOCK_FILE: &str = ".jdop-sync.lock";
pub const LATEST_JSON: &str = "latest.json";
pub const LATEST_LINK: &str = "latest";
/// Per dataset: the staging folder (kept after a kill so the next sync resumes).
pub const STAGING: &str = ".jdop-staging";
/// Per dataset: the version a `freeze` refused, so it is not fetched again.
pub const FROZEN: &str = ".jdop-frozen.json";

/// Reads the config file and resolves its paths against its folder.
pub fn load(path: &Path) -> std::result::Result<SyncConfig, Vec<ConfigError>> {
    let text = fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            line: 0,
            message: format!("cannot read `{}`: {e}", path.display()),
        }]
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    config::parse(&text, dir)
}

/// Reads the appsecret from the configured source.
pub fn secret(cfg: &SyncConfig) -> Result<Secret> {
    match &cfg.secret {
        SecretSource::Env(name) => match std::env::var(name) {
            Ok(s) if !s.trim().is_empty() => Secret::new(s),
            _ => Err(Error::usage(format!(
                "no appsecret: the environment variable `{name}` (appsecret_env) is not set"
            ))),
        },
        SecretSource::File(p) => {
            let text = fs::read_to_string(p).map_err(|e| {
                Error::usage(format!(
                    "cannot read the appsecret file `{}`: {e}",
                    p.display()
                ))
            })?;
            Secret::new(
                text.trim_start_matches('\u{feff}')
                    .lines()
                    .next()
                    .unwrap_or(""),
            )
        }
    }
}

/// What became of one dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Exported,
    Unchanged,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub dataset: String,
    pub status: Status,
    pub rows: Option<u64>,
    pub update_date: Option<String>,
    /// The snapshot that is latest after this run.
    pub snapshot: Option<String>,
    pub duration_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_changes: Option<String>,
    /// Snapshots removed by `keep`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub pruned: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub root: PathBuf,
    pub started_at: String,
    pub duration_secs: f64,
    pub exported: usize,
    pub unchanged: usize,
    pub failed: usize,
    /// Set when a lock left by a dead process was taken over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub took_over_lock_of_pid: Option<String>,
    pub datasets: Vec<Outcome>,
}

/// The pointer to a dataset's latest snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latest {
    pub dataset: String,
    pub snapshot: String,
    /// Relative to the dataset folder.
    pub path: String,
    pub format: Format,
    pub rows: u64,
    pub total: u64,
    pub update_date: UpdateDate,
    pub files: Vec<String>,
    pub exported_at: String,
}

/// Holds the root's lock for the run.
/// The file is left in place when the run ends (removing it would race with a run
/// that just opened it) but emptied, so only a run that died leaves its pid in it.
/// The OS releases the lock when the file closes, also when the process dies.
pub struct Lock {
    file: fs::File,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// Takes the root's lock. Returns the pid written by an earlier holder that died
/// without releasing it, if any.
pub fn lock(root: &Path) -> Result<(Lock, Option<String>)> {
    fs::create_dir_all(root).map_err(|e| Error::io("create the mirror root", root, e))?;
    let path = root.join(LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open the lock file", &path, e))?;
    let previous = fs::read_to_string(&path).unwrap_or_default();
    let previous_pid = previous.split_whitespace().next().map(String::from);
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(Error::Locked {
                root: root.to_path_buf(),
                pid: previous_pid.unwrap_or_else(|| "?".into()),
            })
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
    }
    file.set_len(0)
        .map_err(|e| Error::io("write the lock file", &path, e))?;
    let _ = writeln!(file, "{} {}", std::process::id(), Utc::now().to_rfc3339());
    let stale = previous_pid.filter(|p| *p != std::process::id().to_string());
    Ok((Lock { file }, stale))
}

/// A new snapshot id: the current UTC time to the millisecond, sortable and
/// readable (`20261130T045159.123Z`), and greater than every snapshot already in
/// the dataset folder, so that name order is time order even when the clock
/// stepped back.
fn snapshot_id(dir: &Path) -> String {
    let newest = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_snapshot_name(n))
        .max();
    for _ in 0..50 {
        let id = Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        match &newest {
            Some(n) if n.as_str() >= id.as_str() => std::thread::sleep(Duration::from_millis(2)),
            _ => return id,
        }
    }
    format!("{}-1", newest.unwrap_or_default())
}

fn is_snapshot_name(name: &str) -> bool {
    name.len() >= 16 && name.as_bytes()[0].is_ascii_digit() && name.as_bytes()[8] == b'T'
}

pub fn read_latest(dataset_dir: &Path) -> Option<(Latest, Manifest)> {
    let text = fs::read_to_string(dataset_dir.join(LATEST_JSON)).ok()?;
    let latest: Latest = serde_json::from_str(&text).ok()?;
    if !is_snapshot_name(&latest.snapshot) {
        return None;
    }
    let manifest = Manifest::read(&dataset_dir.join(&latest.snapshot)).ok()?;
    Some((latest, manifest))
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(|e| Error::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

/// Moves `latest` and `latest.json` to `snapshot`.
fn point_latest(dataset_dir: &Path, snapshot: &str, m: &Manifest) -> Result<()> {
    let latest = Latest {
        dataset: m.dataset.clone(),
        snapshot: snapshot.to_string(),
        path: snapshot.to_string(),
        format: m.format,
        rows: m.rows,
        total: m.total_before,
        update_date: m.update_date.clone(),
        files: m.files.iter().map(|f| f.path.clone()).collect(),
        exported_at: m.finished_at.clone(),
    };
    #[cfg(unix)]
    {
        let tmp = dataset_dir.join(".latest.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(snapshot, &tmp)
            .map_err(|e| Error::io("create the latest link", &tmp, e))?;
        fs::rename(&tmp, dataset_dir.join(LATEST_LINK))
            .map_err(|e| Error::io("move the latest link", dataset_dir.join(LATEST_LINK), e))?;
    }
    let mut text = serde_json::to_string_pretty(&latest).expect("serializes");
    text.push('\n');
    write_atomic(&dataset_dir.join(LATEST_JSON), &text)
}

/// Removes the oldest snapshots beyond `keep`, never the latest one.
fn prune(dataset_dir: &Path, keep: usize, latest: &str) -> Vec<String> {
    let mut snaps: Vec<String> = fs::read_dir(dataset_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir() && !e.path().is_symlink())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_snapshot_name(n))
        .collect();
    snaps.sort();
    let mut removed = Vec::new();
    let excess = snaps.len().saturating_sub(keep);
    for name in snaps.into_iter().take(excess) {
        if name == latest {
            continue;
        }
        if fs::remove_dir_all(dataset_dir.join(&name)).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Export even when total and update date are unchanged.
    pub force: bool,
    /// Faster retries (tests).
    pub retry: Option<RetryPolicy>,
}

/// Runs the sync. Errors that concern one dataset are in its [`Outcome`]; the
/// `Err` case is for the run as a whole (lock held, root not writable).
pub async fn run(
    cfg: &SyncConfig,
    secret: Secret,
    opts: &RunOptions,
    on_done: &(dyn Fn(&Outcome) + Sync),
) -> Result<Report> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let (_lock, stale) = lock(&cfg.root)?;
    let gate = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency));
    let rate = cfg.rate_limit.and_then(RateLimit::new).map(Arc::new);
    let retry = opts.retry.clone().unwrap_or(RetryPolicy {
        max_retries: cfg.max_retries,
        ..RetryPolicy::default()
    });
    let client_cfg = ClientConfig {
        timeout: Duration::from_secs_f64(cfg.timeout_secs),
        ..ClientConfig::default()
    };
    let ctx = RunCtx {
        secret,
        gate,
        rate,
        retry,
        client_cfg,
        force: opts.force,
    };
    let mut outcomes: Vec<(usize, Outcome)> = futures::stream::iter(cfg.jobs.iter().enumerate())
        .map(|(i, job)| {
            let ctx = &ctx;
            async move {
                let t = Instant::now();
                let o = match one(cfg, job, ctx).await {
                    Ok(mut o) => {
                        o.duration_secs = round3(t.elapsed().as_secs_f64());
                        o
                    }
                    Err(e) => {
                        let dir = cfg.root.join(job.id.as_str());
                        // A dataset that never succeeded leaves no empty folder behind.
                        let _ = fs::remove_dir(&dir);
                        let latest = read_latest(&dir);
                        Outcome {
                            dataset: job.id.to_string(),
                            status: Status::Failed,
                            rows: latest.as_ref().map(|l| l.0.rows),
                            update_date: latest.as_ref().and_then(|l| l.0.update_date.iso.clone()),
                            snapshot: latest.map(|l| l.0.snapshot),
                            duration_secs: round3(t.elapsed().as_secs_f64()),
                            error: Some(error_chain(&e)),
                            exit_code: Some(e.exit_code() as u8),
                            schema_changes: None,
                            pruned: Vec::new(),
                        }
                    }
                };
                on_done(&o);
                (i, o)
            }
        })
        .buffer_unordered(cfg.parallel.max(1))
        .collect()
        .await;
    outcomes.sort_by_key(|(i, _)| *i);
    let datasets: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    write_catalog(cfg)?;
    let count = |s: Status| datasets.iter().filter(|o| o.status == s).count();
    Ok(Report {
        root: cfg.root.clone(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        duration_secs: round3(clock.elapsed().as_secs_f64()),
        exported: count(Status::Exported),
        unchanged: count(Status::Unchanged),
        failed: count(Status::Failed),
        took_over_lock_of_pid: stale,
        datasets,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn error_chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// What every dataset of a run shares.
struct RunCtx {
    secret: Secret,
    gate: Arc<tokio::sync::Semaphore>,
    rate: Option<Arc<RateLimit>>,
    retry: RetryPolicy,
    client_cfg: ClientConfig,
    force: bool,
}

async fn one(cfg: &SyncConfig, job: &Job, ctx: &RunCtx) -> Result<Outcome> {
    let secret = ctx.secret.clone();
    let client_cfg = ctx.client_cfg.clone();
    let force = ctx.force;
    let s = &job.settings;
    let target = Target::parse(job.id.as_str(), s.base_url.as_deref())?;
    let dir = cfg.root.join(job.id.as_str());
    fs::create_dir_all(&dir).map_err(|e| Error::io("create the dataset folder", &dir, e))?;
    let limits = Limits {
        concurrency: s.concurrency.min(cfg.concurrency),
        page_size: s.page_size,
        retry: ctx.retry.clone(),
        gate: Some(ctx.gate.clone()),
        rate: ctx.rate.clone(),
    };
    remove_abandoned_staging(&dir);
    let previous = read_latest(&dir);
    // The version now on the platform, when there is something to compare it with.
    let mut current: Option<(u64, serde_json::Value)> = None;
    if previous.is_some() {
        let client = Client::new(target.clone(), secret.clone(), &client_cfg)?;
        let total = export::total(&client, &limits, &Silent).await?;
        let date = export::update_date(&client, &limits, &Silent).await?;
        current = Some((total, date.raw));
    }
    if !force {
        if let (Some((latest, manifest)), Some((total, date))) = (&previous, &current) {
            if *total == manifest.total_before && *date == manifest.update_date.raw {
                return Ok(Outcome {
                    dataset: job.id.to_string(),
                    status: Status::Unchanged,
                    rows: Some(latest.rows),
                    update_date: latest.update_date.iso.clone(),
                    snapshot: Some(latest.snapshot.clone()),
                    duration_secs: 0.0,
                    error: None,
                    exit_code: None,
                    schema_changes: None,
                    pruned: Vec::new(),
                });
            }
        }
    }
    // A version refused by `freeze` is not downloaded again every run.
    if s.schema == SchemaPolicy::Freeze && !force {
        if let (Some(f), Some((total, date))) = (read_frozen(&dir), &current) {
            if f.total == *total && f.update_date == *date {
                return Err(Error::SchemaChanged {
                    dataset: job.id.to_string(),
                    changes: format!(
                        "{} (this version was refused before; not fetched again)",
                        f.changes
                    ),
                });
            }
        }
    }
    let id = snapshot_id(&dir);
    let export_cfg = ExportConfig {
        target,
        secret,
        out: dir.join(&id),
        format: s.format,
        limits,
        client: client_cfg,
        rows_per_file: s.rows_per_file,
        csv: jdop_csv(s.csv_bom, s.csv_encoding),
        parquet: ParquetOptions {
            zstd_level: s.zstd_level,
            ..ParquetOptions::default()
        },
        previous_columns: previous.as_ref().map(|p| p.1.columns.clone()),
        schema_policy: s.schema,
        consistency_retries: cfg.consistency_retries,
        key: s.key.clone(),
        allow_inconsistent: s.allow_inconsistent,
        staging: Some(dir.join(STAGING)),
        detect: detect_options(s, previous.as_ref().map(|p| &p.1)),
        partition_by: s.partition_by.clone(),
    };
    let reporter: Arc<dyn Reporter> = Arc::new(Silent);
    let summary = match export::export(&export_cfg, reporter).await {
        Err(Error::SchemaChanged { dataset, changes }) => {
            if let Some((total, update_date)) = current {
                let f = Frozen {
                    total,
                    update_date,
                    changes: changes.clone(),
                };
                let _ = fs::write(
                    dir.join(FROZEN),
                    serde_json::to_string_pretty(&f).unwrap_or_default(),
                );
            }
            return Err(Error::SchemaChanged { dataset, changes });
        }
        other => other?,
    };
    let _ = fs::remove_file(dir.join(FROZEN));
    let m = &summary.manifest;
    point_latest(&dir, &id, m)?;
    let pruned = match s.keep {
        Some(k) => prune(&dir, k, &id),
        None => Vec::new(),
    };
    Ok(Outcome {
        dataset: job.id.to_string(),
        status: Status::Exported,
        rows: Some(m.rows),
        update_date: m.update_date.iso.clone(),
        snapshot: Some(id),
        duration_secs: 0.0,
        error: None,
        exit_code: None,
        schema_changes: m
            .schema_changes
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(|c| c.describe()),
        pruned,
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct Frozen {
    total: u64,
    update_date: serde_json::Value,
    changes: String,
}

fn read_frozen(dir: &Path) -> Option<Frozen> {
    serde_json::from_str(&fs::read_to_string(dir.join(FROZEN)).ok()?).ok()
}

/// Removes staging folders of exports killed in earlier syncs (each used a new
/// snapshot id, so none will be resumed). A folder whose lock is held is in use.
fn remove_abandoned_staging(dataset_dir: &Path) {
    for e in fs::read_dir(dataset_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == STAGING || !(name.starts_with('.') && name.ends_with(".jdop-staging")) {
            continue;
        }
        let free = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(e.path().join("lock"))
            .map(|f| f.try_lock().is_ok())
            .unwrap_or(true);
        if free {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Writes `<root>/catalog.json` and `<root>/views.sql` from every configured
/// dataset's latest snapshot.
pub fn write_catalog(cfg: &SyncConfig) -> Result<()> {
    let mut entries = Vec::new();
    let mut sql = String::from(
        "-- Generated by jdop sync: one view per dataset over its latest snapshot.\n-- Open the mirror from this folder with: duckdb -init views.sql\n",
    );
    for job in &cfg.jobs {
        let dir = cfg.root.join(job.id.as_str());
        let Some((latest, m)) = read_latest(&dir) else {
            continue;
        };
        let rel = format!("{}/{}", job.id, latest.snapshot);
        entries.push(serde_json::json!({
            "dataset": job.id.as_str(),
            "snapshot": latest.snapshot,
            "path": rel,
            "latest": format!("{}/{LATEST_LINK}", job.id),
            "format": m.format,
            "rows": m.rows,
            "update_date": m.update_date,
            "exported_at": m.finished_at,
            "files": m.files.iter().map(|f| format!("{rel}/{}", f.path)).collect::<Vec<_>>(),
            "columns": m.columns.iter().map(|c| serde_json::json!({"name": c.name, "arrow_type": c.arrow_type})).collect::<Vec<_>>(),
        }));
        if m.files.is_empty() {
            sql.push_str(&format!(
                "-- {}: the latest snapshot holds no rows\n",
                job.id
            ));
            continue;
        }
        let reader = crate::export::duckdb_reader(&m, &rel, ", ");
        if !crate::export::encodings_sql(&m).is_empty() && !sql.contains("LOAD encodings;") {
            sql.push_str(crate::export::encodings_sql(&m));
        }
        sql.push_str(&format!(
            "CREATE OR REPLACE VIEW \"{}\" AS SELECT * FROM {reader};\n",
            job.id
        ));
    }
    let catalog = serde_json::json!({
        "generated_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datasets": entries,
    });
    let mut text = serde_json::to_string_pretty(&catalog).expect("serializes");
    text.push('\n');
    write_atomic(&cfg.root.join("catalog.json"), &text)?;
    write_atomic(&cfg.root.join("views.sql"), &sql)
}

fn jdop_csv(bom: bool, encoding: crate::sink::CsvEncoding) -> crate::sink::CsvOptions {
    crate::sink::CsvOptions {
        encoding: match (bom, encoding) {
            (true, crate::sink::CsvEncoding::Utf8) => crate::sink::CsvEncoding::Utf8Bom,
            (_, e) => e,
        },
        crlf: true,
    }
}

/// Type detection for a dataset: `pin_types` pins the previous snapshot's types.
fn detect_options(
    s: &config::JobSettings,
    previous: Option<&crate::manifest::Manifest>,
) -> crate::schema::DetectOptions {
    let mut opts = crate::schema::DetectOptions {
        detect: s.detect,
        ..Default::default()
    };
    if let (true, Some(m)) = (s.pin_types, previous) {
        // Types only: a column gone from the data is not kept (the manifest's
        // schema_changes reports it, and `schema = "freeze"` can act on it).
        for c in &m.columns {
            if let Some(spec) =
                crate::detect::TypeSpec::from_manifest(&c.arrow_type, c.format.as_deref())
            {
                opts.types
                    .push((c.name.clone(), spec, crate::schema::TypeSource::Previous));
            }
            opts.shanghai |= crate::schema::is_zoned_datetime(&c.arrow_type, c.format.as_deref());
        }
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_sort_by_time_and_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let a = snapshot_id(dir.path());
        fs::create_dir(dir.path().join(&a)).unwrap();
        let b = snapshot_id(dir.path());
        assert!(is_snapshot_name(&a) && is_snapshot_name(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(a < b);
    }

    #[test]
    fn prune_keeps_the_newest_and_never_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "20240101T000000Z",
            "20240102T000000Z",
            "20240103T000000Z",
            "20240104T000000Z",
        ] {
            fs::create_dir(dir.path().join(n)).unwrap();
        }
        fs::create_dir(dir.path().join(".x.jdop-staging-1")).unwrap();
        let removed = prune(dir.path(), 2, "20240101T000000Z");
        assert_eq!(removed, ["20240102T000000Z"]);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".x.jdop-staging-1",
                "20240101T000000Z",
                "20240103T000000Z",
                "20240104T000000Z"
            ]
        );
    }

    #[test]
    fn a_held_lock_refuses_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (_l, stale) = lock(dir.path()).unwrap();
        assert_eq!(stale, None);
        // A second open file description conflicts even within one process.
        let e = lock(dir.path()).err().unwrap();
        assert!(matches!(e, Error::Locked { .. }), "{e}");
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(LOCK_FILE),
            "999999999 2020-01-01T00:00:00Z\n",
        )
        .unwrap();
        let (_l, stale) = lock(dir.path()).unwrap();
        assert_eq!(stale.as_deref(), Some("999999999"));
    }
}
