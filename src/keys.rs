//! Duplicate keys (`--key COLUMN`): real datasets repeat primary keys. jdop never
//! drops such rows; it counts them and names a few in the manifest.
//!
//! One pass over the spool hashes every key (8 bytes per row, sorted to find
//! repeats); only when repeats exist does a second pass collect their values.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::error::{Error, PageError, Result};
use crate::platform::split_records;
use crate::spool::Spool;

/// How many repeated keys the manifest names.
const EXAMPLES: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    pub column: String,
    /// Rows whose key is missing or null.
    pub missing: u64,
    pub distinct: u64,
    /// Rows beyond the first for each repeated key.
    pub duplicate_rows: u64,
    /// Distinct keys that appear more than once.
    pub duplicated_keys: u64,
    pub examples: Vec<KeyExample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyExample {
    /// The key's JSON text as sent (`"01425"` keeps its quotes).
    pub value: String,
    pub rows: u64,
}

fn key_hash(raw: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    raw.hash(&mut h);
    h.finish()
}

fn page_keys(
    spool: &Spool,
    dataset: &str,
    page: u64,
    column: &str,
    mut f: impl FnMut(Option<&str>),
) -> Result<()> {
    let err = |source: PageError| Error::Page {
        dataset: dataset.to_string(),
        page,
        source: Box::new(source),
    };
    let text = spool
        .read_page(page)
        .map_err(|e| err(PageError::Spool(e)))?;
    let records = split_records(&text).map_err(err)?;
    for r in &records {
        // The last occurrence wins, as in the data files.
        let v = r.iter().rev().find(|(k, _)| k == column).map(|(_, v)| *v);
        f(v.filter(|v| *v != "null"));
    }
    Ok(())
}

/// Counts repeated values of `column` over pages `1..=pages` of the spool.
pub fn report(spool: &Spool, dataset: &str, pages: u64, column: &str) -> Result<KeyReport> {
    let mut hashes = Vec::new();
    let mut missing = 0u64;
    for p in 1..=pages {
        page_keys(spool, dataset, p, column, |v| match v {
            Some(v) => hashes.push(key_hash(v)),
            None => missing += 1,
        })?;
    }
    hashes.sort_unstable();
    let mut distinct = 0u64;
    let mut duplicate_rows = 0u64;
    let mut repeated: Vec<u64> = Vec::new();
    let mut i = 0;
    while i < hashes.len() {
        let mut j = i + 1;
        while j < hashes.len() && hashes[j] == hashes[i] {
            j += 1;
        }
        distinct += 1;
        if j - i > 1 {
            duplicate_rows += (j - i - 1) as u64;
            repeated.push(hashes[i]);
        }
        i = j;
    }
    let duplicated_keys = repeated.len() as u64;
    let mut examples = Vec::new();
    if !repeated.is_empty() {
        let wanted: HashSet<u64> = repeated.iter().take(EXAMPLES).copied().collect();
        let mut found: HashMap<u64, (String, u64)> = HashMap::new();
        for p in 1..=pages {
            page_keys(spool, dataset, p, column, |v| {
                if let Some(v) = v {
                    let h = key_hash(v);
                    if wanted.contains(&h) {
                        found.entry(h).or_insert_with(|| (v.to_string(), 0)).1 += 1;
                    }
                }
            })?;
        }
        examples = found
            .into_values()
            .map(|(value, rows)| KeyExample { value, rows })
            .collect();
        examples.sort_by(|a, b| b.rows.cmp(&a.rows).then(a.value.cmp(&b.value)));
    }
    Ok(KeyReport {
        column: column.to_string(),
        missing,
        distinct,
        duplicate_rows,
        duplicated_keys,
        examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_counted_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path().join("s")).unwrap();
        spool
            .write_page(1, r#"[{"k":"01425"},{"k":"7"},{"k":null},{"x":1}]"#)
            .unwrap();
        spool
            .write_page(2, r#"[{"k":"01425"},{"k":7},{"k":"01425"},{"k":"8"}]"#)
            .unwrap();
        let r = report(&spool, "cata_1", 2, "k").unwrap();
        assert_eq!(r.missing, 2);
        assert_eq!(r.distinct, 4, "\"7\" and 7 are different values as sent");
        assert_eq!(r.duplicate_rows, 2);
        assert_eq!(r.duplicated_keys, 1);
        assert_eq!(
            r.examples,
            [KeyExample {
                value: "\"01425\"".into(),
                rows: 3
            }]
        );
    }
}
