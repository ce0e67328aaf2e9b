//! The manifest of a snapshot (`manifest.json`, written last) and the atomic
//! publish of a staging folder onto `--out`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::platform::UpdateDate;
use crate::schema::{ColumnInfo, SchemaChanges};
use crate::sink::{FileEntry, Format};

/// Bumped when a field changes meaning or disappears (adding fields does not).
pub const MANIFEST_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub manifest_version: u32,
    pub jdop_version: String,
    pub dataset: String,
    /// The `.../jdop_front` base URL; never holds the appsecret.
    pub base_url: String,
    pub format: Format,
    /// The update date reported before the export (raw value and ISO form).
    pub update_date: UpdateDate,
    /// The update date re-checked after the last page.
    pub update_date_after: UpdateDate,
    pub total_before: u64,
    pub total_after: u64,
    pub rows: u64,
    /// False when the total or update date moved, or page sizes did not add up.
    pub consistent: bool,
    pub warnings: Vec<String>,
    pub page_size: u32,
    pub pages: u64,
    pub requests: u64,
    pub retries: u64,
    /// Calls the platform answered with throttling (429 or its throttling message).
    #[serde(default)]
    pub throttled: u64,
    /// Passes over the dataset: more than one when it changed during a pass.
    #[serde(default = "one")]
    pub passes: u32,
    /// Pages taken from the spool of an interrupted earlier run.
    #[serde(default)]
    pub pages_reused: u64,
    pub started_at: String,
    pub finished_at: String,
    pub duration_secs: f64,
    pub files: Vec<FileEntry>,
    pub columns: Vec<ColumnInfo>,
    /// Against the previous snapshot, when there is one (`jdop sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_changes: Option<SchemaChanges>,
    /// Repeated values of the `--key` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<crate::keys::KeyReport>,
    /// The files are in Hive folders `COLUMN=value/` (the column is not in them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_by: Option<String>,
    /// CSV files: their encoding and line ending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<crate::sink::CsvOptions>,
}

fn one() -> u32 {
    1
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::io(
                "parse",
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let mut text = serde_json::to_string_pretty(self).expect("manifest serializes");
        text.push('\n');
        let tmp = dir.join(".manifest.json.tmp");
        fs::write(&tmp, text).map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
    }
}

/// The staging folder of an export: `.<name>.jdop-staging` next to `--out`, on the
/// same file system so that publishing is a rename. It holds `spool/` (raw pages,
/// kept across a kill or Ctrl-C so the next run resumes), `snapshot/` (the files
/// being written) and `state.json` (what the spool belongs to). An OS lock on
/// `lock` stops two runs from sharing it. On error it is removed when dropped.
pub struct Staging {
    root: PathBuf,
    out: PathBuf,
    keep: bool,
    _lock: fs::File,
}

/// What a spool holds: pages of this dataset version, fetched with this page size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolState {
    pub dataset: String,
    pub base_url: String,
    pub total: u64,
    pub update_date: serde_json::Value,
    pub page_size: u32,
}

impl Staging {
    pub fn create(out: &Path) -> Result<Staging> {
        Staging::create_in(out, None)
    }

    /// As [`Staging::create`], with the staging folder at `at` instead of next to
    /// `out` (same file system): `jdop sync` keeps one per dataset so a killed sync
    /// resumes although each snapshot gets a new name.
    pub fn create_in(out: &Path, at: Option<&Path>) -> Result<Staging> {
        let (parent, name) = split_out(out)?;
        fs::create_dir_all(&parent)
            .map_err(|e| Error::io("create the output's parent folder", &parent, e))?;
        if out.exists() && !out.is_dir() {
            return Err(Error::usage(format!(
                "`{}` exists and is not a folder",
                out.display()
            )));
        }
        if out.is_dir() {
            if let Err(why) = replaceable(out) {
                return Err(Error::usage(format!(
                    "refusing to replace `{}`: {why}",
                    out.display()
                )));
            }
        }
        restore_moved_aside(out, &parent, &name)?;
        remove_stale(&parent, &name);
        let root = match at {
            Some(p) => p.to_path_buf(),
            None => parent.join(format!(".{name}.jdop-staging")),
        };
        fs::create_dir_all(&root).map_err(|e| Error::io("create the staging folder", &root, e))?;
        let lock_path = root.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open the staging lock", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(&lock_path).unwrap_or_default();
                // Not ours to clean: keep = true via an early return before Staging exists.
                return Err(Error::Locked {
                    root: out.to_path_buf(),
                    pid: pid.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        let _ = lock.set_len(0);
        let _ = (&lock).write_all(std::process::id().to_string().as_bytes());
        let snapshot = root.join("snapshot");
        if snapshot.exists() {
            fs::remove_dir_all(&snapshot)
                .map_err(|e| Error::io("clear the staging folder", &snapshot, e))?;
        }
        fs::create_dir_all(&snapshot)
            .map_err(|e| Error::io("create the staging folder", &snapshot, e))?;
        Ok(Staging {
            root,
            out: out.to_path_buf(),
            keep: false,
            _lock: lock,
        })
    }

    /// Keeps the spool when it belongs to `state` (a resumed run) and returns how
    /// many pages it holds; otherwise empties it and records `state`.
    pub fn prepare_spool(&self, state: &SpoolState) -> Result<u64> {
        let path = self.root.join("state.json");
        let spool = self.spool();
        let previous: Option<SpoolState> = fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if previous.as_ref() == Some(state) && spool.is_dir() {
            return Ok(crate::spool::Spool::count(&spool));
        }
        self.clear_spool()?;
        let text = serde_json::to_string_pretty(state).expect("serializes");
        fs::write(&path, text).map_err(|e| Error::io("write", &path, e))?;
        Ok(0)
    }

    pub fn clear_spool(&self) -> Result<()> {
        let spool = self.spool();
        if spool.exists() {
            fs::remove_dir_all(&spool).map_err(|e| Error::io("clear the spool", &spool, e))?;
        }
        let _ = fs::remove_file(self.root.join("state.json"));
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the snapshot's files are written before publishing.
    pub fn snapshot(&self) -> PathBuf {
        self.root.join("snapshot")
    }

    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// Moves the finished snapshot onto `--out`. On Linux the two folders are
    /// swapped in one atomic `renameat2(RENAME_EXCHANGE)`, so `--out` always holds
    /// a complete snapshot. Elsewhere (or if the file system refuses) the earlier
    /// snapshot is renamed aside, the new one into place, the old one removed; a
    /// run killed between those renames is repaired by the next one (see
    /// [`Staging::create`]).
    pub fn publish(mut self) -> Result<PathBuf> {
        let snap = self.snapshot();
        let (parent, name) = split_out(&self.out)?;
        let old = parent.join(format!(".{name}.jdop-old-{}", std::process::id()));
        let had_old = self.out.exists();
        if had_old && exchange(&snap, &self.out).is_ok() {
            // `snap` now holds the earlier snapshot.
            sync_dir(&parent);
            let _ = fs::remove_dir_all(&self.root);
            self.keep = true;
            return Ok(self.out.clone());
        }
        if had_old {
            fs::rename(&self.out, &old)
                .map_err(|e| Error::io("move the earlier snapshot aside", &old, e))?;
        }
        if let Err(e) = fs::rename(&snap, &self.out) {
            if had_old {
                let _ = fs::rename(&old, &self.out);
            }
            return Err(Error::io("publish the snapshot to", &self.out, e));
        }
        sync_dir(&parent);
        if had_old {
            let _ = fs::remove_dir_all(&old);
        }
        let _ = fs::remove_dir_all(&self.root);
        self.keep = true;
        Ok(self.out.clone())
    }
}

impl Staging {
    /// After an error that a changed command line fixes (a type that does not fit,
    /// a partition column): keeps the spool so that the next run reuses every
    /// fetched page, and drops the partial files.
    pub fn keep_spool(mut self) {
        let _ = fs::remove_dir_all(self.snapshot());
        let _ = fs::remove_file(self.root.join("spill.bin"));
        self.keep = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn split_out(out: &Path) -> Result<(PathBuf, String)> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| {
            Error::usage(format!(
                "`--out {}` must name a folder (not `.`, `..` or the root)",
                out.display()
            ))
        })?
        .to_string();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// An existing `--out` may be replaced when it is empty, or a jdop snapshot that
/// holds nothing but its manifest and the files it lists; never the current folder
/// or one of its parents.
fn replaceable(out: &Path) -> std::result::Result<(), String> {
    if let (Ok(o), Ok(cwd)) = (out.canonicalize(), std::env::current_dir()) {
        if cwd
            .canonicalize()
            .map(|c| c.starts_with(&o))
            .unwrap_or(false)
        {
            return Err("it is the current folder or one of its parents".into());
        }
    }
    let entries: Vec<String> = fs::read_dir(out)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let manifest = Manifest::read(out).map_err(|_| {
        format!("it is not empty and holds no jdop {MANIFEST_FILE} (not a jdop snapshot)")
    })?;
    let listed: std::collections::HashSet<&str> = manifest
        .files
        .iter()
        .map(|f| f.path.split('/').next().unwrap_or(""))
        .chain([MANIFEST_FILE, crate::export::QUERY_FILE])
        .collect();
    match entries.iter().find(|e| !listed.contains(e.as_str())) {
        Some(extra) => Err(format!(
            "it holds `{extra}`, which is not part of its snapshot (move it away first)"
        )),
        None => Ok(()),
    }
}

/// Removes folders of earlier runs whose process is gone: snapshots moved aside
/// during a publish that was killed, and staging folders of older versions.
fn remove_stale(parent: &Path, name: &str) {
    // Liveness is read from /proc; without it, nothing is treated as stale.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefixes = [
        format!(".{name}.jdop-staging-"),
        format!(".{name}.jdop-old-"),
    ];
    for e in fs::read_dir(parent).into_iter().flatten().flatten() {
        let fname = e.file_name();
        let Some(f) = fname.to_str() else { continue };
        let Some(pid) = prefixes.iter().find_map(|p| f.strip_prefix(p.as_str())) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .map(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists())
            .unwrap_or(true);
        if !alive {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Swaps two paths atomically (Linux `renameat2` with `RENAME_EXCHANGE`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// A run killed between the two renames of a non-atomic publish leaves no
/// `--out` and the earlier snapshot moved aside: put it back.
fn restore_moved_aside(out: &Path, parent: &Path, name: &str) -> Result<()> {
    if out.exists() {
        return Ok(());
    }
    let prefix = format!(".{name}.jdop-old-");
    let mut aside: Vec<PathBuf> = fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect();
    aside.sort();
    if let Some(p) = aside.pop() {
        fs::rename(&p, out).map_err(|e| Error::io("restore the earlier snapshot to", out, e))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let d = UpdateDate::from_value(serde_json::json!("2024-01-01"));
        Manifest {
            manifest_version: MANIFEST_VERSION,
            jdop_version: "0".into(),
            dataset: "cata_1".into(),
            base_url: "http://h/jdop_front".into(),
            format: Format::Parquet,
            update_date: d.clone(),
            update_date_after: d,
            total_before: 0,
            total_after: 0,
            rows: 0,
            consistent: true,
            warnings: vec![],
            page_size: 200,
            pages: 0,
            requests: 4,
            retries: 0,
            throttled: 0,
            passes: 1,
            pages_reused: 0,
            started_at: String::new(),
            finished_at: String::new(),
            duration_secs: 0.0,
            files: vec![],
            columns: vec![],
            schema_changes: None,
            keys: None,
            partition_by: None,
            csv: None,
        }
    }

    #[test]
    fn failed_staging_leaves_nothing_and_keeps_earlier_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("snap");
        fs::create_dir(&out).unwrap();
        sample().write(&out).unwrap();
        let before = fs::read_to_string(out.join(MANIFEST_FILE)).unwrap();
        {
            let st = Staging::create(&out).unwrap();
            fs::write(st.snapshot().join("part-00000.parquet"), "x").unwrap();
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["snap"]);
        assert_eq!(fs::read_to_string(out.join(MANIFEST_FILE)).unwrap(), before);
    }

    #[test]
    fn publish_replaces_the_earlier_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("snap");
        fs::create_dir(&out).unwrap();
        sample().write(&out).unwrap();
        let st = Staging::create(&out).unwrap();
        fs::write(st.snapshot().join(MANIFEST_FILE), "new").unwrap();
        st.publish().unwrap();
        assert_eq!(fs::read_to_string(out.join(MANIFEST_FILE)).unwrap(), "new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_folder_with_a_foreign_manifest_or_extra_files_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("webapp");
        fs::create_dir(&out).unwrap();
        fs::write(out.join(MANIFEST_FILE), r#"{"name":"pwa"}"#).unwrap();
        assert!(Staging::create(&out).is_err());
        let snap = dir.path().join("snap");
        fs::create_dir(&snap).unwrap();
        sample().write(&snap).unwrap();
        fs::write(snap.join("notes.txt"), "mine").unwrap();
        let e = Staging::create(&snap).err().unwrap();
        assert!(e.to_string().contains("notes.txt"), "{e}");
    }

    #[test]
    fn an_earlier_snapshot_moved_aside_by_a_killed_publish_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let aside = dir.path().join(".snap.jdop-old-999999999");
        fs::create_dir(&aside).unwrap();
        sample().write(&aside).unwrap();
        let out = dir.path().join("snap");
        let st = Staging::create(&out).unwrap();
        assert!(
            out.join(MANIFEST_FILE).is_file(),
            "restored before the new export"
        );
        drop(st);
        assert!(out.join(MANIFEST_FILE).is_file());
    }

    #[test]
    fn a_folder_that_is_not_a_snapshot_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("thesis.docx"), "precious").unwrap();
        let e = Staging::create(dir.path()).err().unwrap();
        assert!(e.to_string().contains("refusing"), "{e}");
    }
}
