//! Raw pages on disk, so memory stays bounded whatever the dataset's size.
//!
//! Each page's record array is written as it arrives to `p{page:07}.json` (the
//! exact `data` text of the response). A page file is written under a temporary name
//! and renamed, so a page that exists is complete; this is what lets a later run
//! reuse pages. The spool lives inside the export's staging folder and is removed
//! with it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn create(dir: impl Into<PathBuf>) -> Result<Spool> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create the spool folder", &dir, e))?;
        Ok(Spool { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn page_path(&self, page: u64) -> PathBuf {
        self.dir.join(format!("p{page:07}.json"))
    }

    /// Writes one page's record array (atomically: temporary file, then rename).
    pub fn write_page(&self, page: u64, array: &str) -> Result<()> {
        let path = self.page_path(page);
        let tmp = self.dir.join(format!("p{page:07}.json.tmp"));
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create spool file", &tmp, e))?;
        f.write_all(array.as_bytes())
            .map_err(|e| Error::io("write spool file", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename spool file", &path, e))
    }

    pub fn has_page(&self, page: u64) -> bool {
        self.page_path(page).is_file()
    }

    pub fn read_page(&self, page: u64) -> std::io::Result<String> {
        fs::read_to_string(self.page_path(page))
    }

    pub fn remove_page(&self, page: u64) {
        let _ = fs::remove_file(self.page_path(page));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::create(dir.path().join("spool")).unwrap();
        s.write_page(3, r#"[{"a":"地市"}]"#).unwrap();
        assert_eq!(s.read_page(3).unwrap(), r#"[{"a":"地市"}]"#);
        let names: Vec<_> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["p0000003.json"]);
    }
}
