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
        let (parent, name) = split_out(out)?;
        fs::create_dir_all(&parent)
            .map_err(|e| Error::io("create the output's parent folder", &parent, e))?;
        if out.exists() && !out.is_dir() {
            return Err(Error::usage(format!(
                "`{}` exists and is not a folder",
                out.display()
            )));
        }
        if out.is_dir() && !is_replaceable(out) {
            return Err(Error::usage(format!(
                "refusing to replace `{}`: it is not empty and holds no {MANIFEST_FILE} (not a jdop snapshot)",
                out.display()
            )));
        }
        remove_stale(&parent, &name);
        let root = parent.join(format!(".{name}.jdop-staging"));
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
            let pages = fs::read_dir(&spool)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                        .count() as u64
                })
                .unwrap_or(0);
            return Ok(pages);
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

    /// Moves the finished snapshot onto `--out`: the earlier snapshot is renamed
    /// aside, the new one renamed into place, the old one removed. If the second
    /// rename fails the earlier snapshot is put back.
    pub fn publish(mut self) -> Result<PathBuf> {
        let snap = self.snapshot();
        let (parent, name) = split_out(&self.out)?;
        let old = parent.join(format!(".{name}.jdop-old-{}", std::process::id()));
        let had_old = self.out.exists();
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

/// An existing `--out` may be replaced when it is empty or an earlier snapshot.
fn is_replaceable(out: &Path) -> bool {
    if out.join(MANIFEST_FILE).is_file() {
        return true;
    }
    fs::read_dir(out)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// Removes folders of earlier runs whose process is gone: snapshots moved aside
/// during a publish that was killed, and staging folders of older versions.
fn remove_stale(parent: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for prefix in [
        format!(".{name}.jdop-staging-"),
        format!(".{name}.jdop-old-"),
    ] {
        for e in fs::read_dir(parent).into_iter().flatten().flatten() {
            let fname = e.file_name();
            let Some(f) = fname.to_str() else { continue };
            let Some(pid) = f.strip_prefix(&prefix) else {
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
    drop(entries);
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_staging_leaves_nothing_and_keeps_earlier_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("snap");
        fs::create_dir(&out).unwrap();
        fs::write(out.join(MANIFEST_FILE), "{}").unwrap();
        {
            let st = Staging::create(&out).unwrap();
            fs::write(st.snapshot().join("part-00000.parquet"), "x").unwrap();
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["snap"]);
        assert_eq!(fs::read_to_string(out.join(MANIFEST_FILE)).unwrap(), "{}");
    }

    #[test]
    fn publish_replaces_the_earlier_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("snap");
        fs::create_dir(&out).unwrap();
        fs::write(out.join(MANIFEST_FILE), "old").unwrap();
        let st = Staging::create(&out).unwrap();
        fs::write(st.snapshot().join(MANIFEST_FILE), "new").unwrap();
        st.publish().unwrap();
        assert_eq!(fs::read_to_string(out.join(MANIFEST_FILE)).unwrap(), "new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_folder_that_is_not_a_snapshot_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("thesis.docx"), "precious").unwrap();
        let e = Staging::create(dir.path()).err().unwrap();
        assert!(e.to_string().contains("refusing"), "{e}");
    }
}
