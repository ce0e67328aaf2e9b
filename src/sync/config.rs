//! The `jobs.toml` of `jdop sync`: defaults plus a list of datasets, each
//! overriding what it needs. Every error found is reported with its line, not just
//! the first one; the appsecret is never read from this file.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::platform::{parse_base, DatasetId, MAX_PAGE_SIZE};
pub use crate::schema::SchemaPolicy;
use crate::sink::Format;

/// Where the appsecret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// Settings a dataset inherits from the top level and may override.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    pub base_url: Option<String>,
    pub format: Format,
    pub rows_per_file: Option<u64>,
    pub page_size: u32,
    pub concurrency: usize,
    pub csv_bom: bool,
    pub zstd_level: i32,
    pub keep: Option<usize>,
    pub schema: SchemaPolicy,
    /// Report repeated values of this column in the manifest.
    pub key: Option<String>,
    /// Publish even when the dataset never held still (`"consistent": false`).
    pub allow_inconsistent: bool,
    /// Detect types of text columns.
    pub detect: bool,
    /// Pin the column types of the previous snapshot (its manifest as `--schema`).
    pub pin_types: bool,
    pub partition_by: Option<String>,
    pub csv_encoding: crate::sink::CsvEncoding,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            base_url: None,
            format: Format::Parquet,
            rows_per_file: None,
            page_size: MAX_PAGE_SIZE,
            concurrency: 4,
            csv_bom: false,
            zstd_level: 1,
            keep: None,
            schema: SchemaPolicy::Evolve,
            key: None,
            allow_inconsistent: false,
            detect: true,
            pin_types: false,
            partition_by: None,
            csv_encoding: crate::sink::CsvEncoding::Utf8,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: DatasetId,
    pub settings: JobSettings,
    /// Line of the dataset's `[[dataset]]` entry (for messages).
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// Absolute, or relative to the current folder (resolved from the config's folder).
    pub root: PathBuf,
    pub secret: SecretSource,
    /// Requests in flight at most, over all datasets together.
    pub concurrency: usize,
    /// Datasets exported at the same time.
    pub parallel: usize,
    pub max_retries: u32,
    pub timeout_secs: f64,
    /// Requests per second at most, over all datasets together.
    pub rate_limit: Option<f64>,
    /// Passes started over when a dataset changes during its export.
    pub consistency_retries: u32,
    pub jobs: Vec<Job>,
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

const TOP_KEYS: &[&str] = &[
    "root",
    "base_url",
    "appsecret_env",
    "appsecret_file",
    "format",
    "concurrency",
    "parallel",
    "rows_per_file",
    "page_size",
    "csv_bom",
    "zstd_level",
    "keep",
    "schema",
    "max_retries",
    "timeout",
    "rate_limit",
    "consistency_retries",
    "key",
    "allow_inconsistent",
    "detect",
    "pin_types",
    "partition_by",
    "csv_encoding",
    "dataset",
];
const JOB_KEYS: &[&str] = &[
    "id",
    "base_url",
    "format",
    "rows_per_file",
    "page_size",
    "concurrency",
    "csv_bom",
    "zstd_level",
    "keep",
    "schema",
    "key",
    "allow_inconsistent",
    "detect",
    "pin_types",
    "partition_by",
    "csv_encoding",
];

struct Ctx<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.line(span);
        self.errors.push(ConfigError {
            line,
            message: message.into(),
        });
    }
    fn str(&mut self, key: &str, v: &Spanned<DeValue<'_>>) -> Option<String> {
        match v.get_ref().as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.err(
                    v.span(),
                    format!("`{key}` must be a string, found {}", v.get_ref().type_str()),
                );
                None
            }
        }
    }
    fn int(&mut self, key: &str, v: &Spanned<DeValue<'_>>, min: i64, max: i64) -> Option<i64> {
        let parsed = v
            .get_ref()
            .as_integer()
            .and_then(|i| i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok());
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.err(
                    v.span(),
                    format!("`{key}` must be between {min} and {max}, found {n}"),
                );
                None
            }
            None => {
                self.err(
                    v.span(),
                    format!(
                        "`{key}` must be an integer, found {}",
                        v.get_ref().type_str()
                    ),
                );
                None
            }
        }
    }
    fn bool(&mut self, key: &str, v: &Spanned<DeValue<'_>>) -> Option<bool> {
        let b = v.get_ref().as_bool();
        if b.is_none() {
            self.err(v.span(), format!("`{key}` must be true or false"));
        }
        b
    }
    fn float(&mut self, key: &str, v: &Spanned<DeValue<'_>>) -> Option<f64> {
        let f = match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(i) => i.as_str().replace('_', "").parse::<f64>().ok(),
            _ => None,
        };
        match f {
            Some(f) if f.is_finite() && f > 0.0 => Some(f),
            _ => {
                self.err(v.span(), format!("`{key}` must be a positive number"));
                None
            }
        }
    }

    /// Applies a setting key shared by the top level and datasets.
    fn setting(&mut self, s: &mut JobSettings, key: &str, v: &Spanned<DeValue<'_>>) {
        match key {
            "base_url" => {
                if let Some(u) = self.str(key, v) {
                    if let Err(e) = parse_base(&u) {
                        self.err(v.span(), e.to_string());
                    }
                    // Kept even when invalid: its error is reported once, here, not
                    // again as "no base_url" on every dataset.
                    s.base_url = Some(u);
                }
            }
            "key" => {
                if let Some(k) = self.str(key, v) {
                    s.key = Some(k);
                }
            }
            "detect" => {
                if let Some(b) = self.bool(key, v) {
                    s.detect = b
                }
            }
            "pin_types" => {
                if let Some(b) = self.bool(key, v) {
                    s.pin_types = b
                }
            }
            "partition_by" => match self.str(key, v) {
                Some(c) if c.is_empty() => {
                    self.err(v.span(), "`partition_by` needs a column name".to_string())
                }
                Some(c) => s.partition_by = Some(c),
                None => {}
            },
            "csv_encoding" => match self.str(key, v).as_deref() {
                Some("utf8") => s.csv_encoding = crate::sink::CsvEncoding::Utf8,
                Some("utf8-bom") => s.csv_encoding = crate::sink::CsvEncoding::Utf8Bom,
                Some("gb18030") => s.csv_encoding = crate::sink::CsvEncoding::Gb18030,
                Some(other) => self.err(
                    v.span(),
                    format!(
                        "`csv_encoding` must be \"utf8\", \"utf8-bom\" or \"gb18030\", found \"{other}\""
                    ),
                ),
                None => {}
            },
            "allow_inconsistent" => {
                if let Some(b) = self.bool(key, v) {
                    s.allow_inconsistent = b
                }
            }
            "format" => match self.str(key, v).as_deref() {
                Some("parquet") => s.format = Format::Parquet,
                Some("csv") => s.format = Format::Csv,
                Some(other) => self.err(
                    v.span(),
                    format!("`format` must be \"parquet\" or \"csv\", found \"{other}\""),
                ),
                None => {}
            },
            "rows_per_file" => {
                if let Some(n) = self.int(key, v, 1, i64::MAX) {
                    s.rows_per_file = Some(n as u64)
                }
            }
            "page_size" => {
                if let Some(n) = self.int(key, v, 1, MAX_PAGE_SIZE as i64) {
                    s.page_size = n as u32
                }
            }
            "concurrency" => {
                if let Some(n) = self.int(key, v, 1, 64) {
                    s.concurrency = n as usize
                }
            }
            "csv_bom" => {
                if let Some(b) = self.bool(key, v) {
                    s.csv_bom = b
                }
            }
            "zstd_level" => {
                if let Some(n) = self.int(key, v, 1, 22) {
                    s.zstd_level = n as i32
                }
            }
            "keep" => {
                if let Some(n) = self.int(key, v, 1, 100_000) {
                    s.keep = Some(n as usize)
                }
            }
            "schema" => match self.str(key, v).as_deref() {
                Some("evolve") => s.schema = SchemaPolicy::Evolve,
                Some("freeze") => s.schema = SchemaPolicy::Freeze,
                Some(other) => self.err(
                    v.span(),
                    format!("`schema` must be \"evolve\" or \"freeze\", found \"{other}\""),
                ),
                None => {}
            },
            _ => unreachable!("only called for setting keys"),
        }
    }
}

fn is_setting(key: &str) -> bool {
    JOB_KEYS.contains(&key) && key != "id"
}

/// Parses and validates `text` (the config file's content); `dir` is the config
/// file's folder, against which relative paths are resolved.
pub fn parse(text: &str, dir: &Path) -> Result<SyncConfig, Vec<ConfigError>> {
    let mut cx = Ctx {
        text,
        errors: Vec::new(),
    };
    let (table, parse_errors) = DeTable::parse_recoverable(text);
    for e in parse_errors {
        let span = e.span().unwrap_or(0..0);
        cx.err(span, e.message().trim().to_string());
    }
    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    let table = table.into_inner();

    let mut defaults = JobSettings::default();
    let mut root: Option<PathBuf> = None;
    let mut secret = SecretSource::Env("JDOP_APPSECRET".into());
    let mut secret_keys = 0;
    let mut concurrency = 4usize;
    let mut parallel: Option<usize> = None;
    let mut max_retries = 6u32;
    let mut timeout_secs = 60.0;
    let mut rate_limit = None;
    let mut consistency_retries = 2u32;
    let mut dataset_entries = None;

    for (k, v) in table.iter() {
        let key = k.get_ref().as_ref();
        match key {
            "root" => root = cx.str(key, v).map(|r| dir.join(r)),
            "appsecret_env" => {
                secret_keys += 1;
                if let Some(name) = cx.str(key, v) {
                    if name.trim().is_empty() || name.contains('=') {
                        cx.err(v.span(), "`appsecret_env` must name an environment variable");
                    }
                    secret = SecretSource::Env(name);
                }
            }
            "appsecret_file" => {
                secret_keys += 1;
                if let Some(p) = cx.str(key, v) {
                    let path = dir.join(&p);
                    if !path.is_file() {
                        cx.err(v.span(), format!("`appsecret_file` `{}` does not exist", path.display()));
                    }
                    secret = SecretSource::File(path);
                }
            }
            "rate_limit" => {
                rate_limit = cx.float(key, v);
            }
            "consistency_retries" => {
                if let Some(n) = cx.int(key, v, 0, 100) {
                    consistency_retries = n as u32
                }
            }
            "appsecret" | "secret" => cx.err(
                k.span(),
                "the appsecret must not be written in the config: name an environment variable with `appsecret_env` or a file with `appsecret_file`",
            ),
            "concurrency" => {
                if let Some(n) = cx.int(key, v, 1, 64) {
                    concurrency = n as usize;
                    defaults.concurrency = n as usize;
                }
            }
            "parallel" => parallel = cx.int(key, v, 1, 64).map(|n| n as usize),
            "max_retries" => max_retries = cx.int(key, v, 0, 100).map(|n| n as u32).unwrap_or(max_retries),
            "timeout" => timeout_secs = cx.float(key, v).unwrap_or(timeout_secs),
            "dataset" => dataset_entries = Some(v),
            k2 if is_setting(k2) => cx.setting(&mut defaults, key, v),
            other => cx.err(
                k.span(),
                format!("unknown key `{other}` (expected one of: {})", TOP_KEYS.join(", ")),
            ),
        }
    }
    if secret_keys > 1 {
        cx.err(
            0..0,
            "give either `appsecret_env` or `appsecret_file`, not both",
        );
    }
    let root = root.unwrap_or_else(|| {
        cx.errors.push(ConfigError {
            line: 1,
            message: "`root` is missing: the folder that holds the mirror".into(),
        });
        PathBuf::new()
    });

    let mut jobs = Vec::new();
    let mut seen = HashSet::new();
    match dataset_entries {
        None => cx.errors.push(ConfigError {
            line: cx.line(text.len()..text.len()),
            message: "no `[[dataset]]` entries".into(),
        }),
        Some(v) => match v.get_ref().as_array() {
            None => cx.err(
                v.span(),
                "`dataset` must be a list of tables: write `[[dataset]]` entries",
            ),
            Some(items) => {
                for item in items.iter() {
                    let line = cx.line(item.span());
                    let Some(t) = item.get_ref().as_table() else {
                        cx.err(item.span(), "a `dataset` entry must be a table");
                        continue;
                    };
                    let mut settings = defaults.clone();
                    let mut id = None;
                    let mut id_given = false;
                    for (k, v) in t.iter() {
                        let key = k.get_ref().as_ref();
                        match key {
                            "id" => {
                                id_given = true;
                                if let Some(s) = cx.str(key, v) {
                                    match DatasetId::parse(&s) {
                                        Ok(d) => {
                                            if !seen.insert(d.clone()) {
                                                cx.err(v.span(), format!("dataset `{d}` is listed twice"));
                                            }
                                            id = Some(d);
                                        }
                                        Err(e) => cx.err(v.span(), e.to_string()),
                                    }
                                }
                            }
                            k2 if is_setting(k2) => cx.setting(&mut settings, key, v),
                            "appsecret" | "secret" => cx.err(
                                k.span(),
                                "the appsecret must not be written in the config: use `appsecret_env` or `appsecret_file` at the top",
                            ),
                            other => cx.err(
                                k.span(),
                                format!("unknown key `{other}` in a dataset (expected one of: {})", JOB_KEYS.join(", ")),
                            ),
                        }
                    }
                    let Some(id) = id else {
                        if !id_given {
                            cx.err(item.span(), "this `[[dataset]]` has no `id`");
                        }
                        continue;
                    };
                    if settings.base_url.is_none() {
                        cx.err(
                            item.span(),
                            format!(
                                "no `base_url` for `{id}`: set it at the top or in the dataset"
                            ),
                        );
                    }
                    jobs.push(Job { id, settings, line });
                }
            }
        },
    }
    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|e| e.line);
        return Err(cx.errors);
    }
    Ok(SyncConfig {
        root,
        secret,
        concurrency,
        parallel: parallel.unwrap_or(concurrency.min(4)),
        max_retries,
        timeout_secs,
        rate_limit,
        consistency_retries,
        jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
root = "mirror"                          # relative to the config file's folder
base_url = "http://data.zjzwfw.gov.cn/jdop_front"
appsecret_env = "JDOP_APPSECRET"
format = "parquet"
concurrency = 4

[[dataset]]
id = "cata_3820"

[[dataset]]
id = "cata_5769"
format = "csv"
keep = 10
schema = "freeze"
"#;

    #[test]
    fn the_documented_shape_parses() {
        let c = parse(GOOD, Path::new("/etc/jdop")).unwrap();
        assert_eq!(c.root, PathBuf::from("/etc/jdop/mirror"));
        assert_eq!(c.secret, SecretSource::Env("JDOP_APPSECRET".into()));
        assert_eq!(c.jobs.len(), 2);
        assert_eq!(c.jobs[0].settings.format, Format::Parquet);
        assert_eq!(c.jobs[1].settings.format, Format::Csv);
        assert_eq!(c.jobs[1].settings.keep, Some(10));
        assert_eq!(c.jobs[1].settings.schema, SchemaPolicy::Freeze);
        assert_eq!(c.jobs[1].line, 11);
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = "root = \"m\"\nbase_url = \"http://h/jdop_front\"\nformat = \"xlsx\"\nbogus = 1\n\n[[dataset]]\nid = \"../x\"\n\n[[dataset]]\nid = \"cata_1\"\nkeep = \"ten\"\n\n[[dataset]]\nformat = \"csv\"\n";
        let errs = parse(text, Path::new(".")).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 7, 11, 13], "{errs:#?}");
        assert!(errs[0].message.contains("xlsx"));
        assert!(errs[1].message.contains("bogus"));
        assert!(errs[2].message.contains("invalid dataset id"));
        assert!(errs[4].message.contains("no `id`"));
    }

    #[test]
    fn a_secret_in_the_config_is_refused() {
        let text = "root = \"m\"\nbase_url = \"http://h/jdop_front\"\nappsecret = \"abc\"\n[[dataset]]\nid = \"cata_1\"\n";
        let errs = parse(text, Path::new(".")).unwrap_err();
        assert_eq!(errs[0].line, 3);
        assert!(!errs[0].message.contains("abc"));
    }

    #[test]
    fn syntax_errors_have_lines() {
        let errs = parse("root = \"m\"\n[[dataset]\nid = 1\n", Path::new(".")).unwrap_err();
        assert_eq!(errs[0].line, 2, "{errs:?}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let text = "root = \"m\"\nbase_url = \"http://h/jdop_front\"\n[[dataset]]\nid = \"cata_1\"\n[[dataset]]\nid = \"1\"\n";
        let errs = parse(text, Path::new(".")).unwrap_err();
        assert_eq!(errs[0].line, 6);
    }
}
