//! The command line: clap derive structs only, turned into validated settings in
//! one place ([`ExportArgs::settings`], [`SimArgs::config`]). Nothing below the CLI
//! sees clap types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use jdop::detect::TypeSpec;
use jdop::error::{Error, Result};
use jdop::export::ExportConfig;
use jdop::fetch::{Limits, RetryPolicy};
use jdop::platform::{ClientConfig, Method, Secret, Target, MAX_PAGE_SIZE};
use jdop::schema::{DetectOptions, OnMismatch, TypeSource};
use jdop::sim::{DatasetSpec, FailMode, Oversize, PastEnd, SimConfig, Throttle};
use jdop::sink::{CsvEncoding, CsvOptions, Format, ParquetOptions};

pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    unexpected internal failure
  2    bad command line or settings (unknown flag, bad dataset id, no appsecret, ...)
  3    the platform refused a call (status 0: wrong appsecret, unknown dataset, ...)
  4    the platform could not be reached or kept failing after all retries
  5    the platform answered something that is not its JSON envelope or a page of records
  6    the snapshot could not be written (disk full, permissions, ...)
  7    the dataset changed during the export (rerun, or --allow-inconsistent)
  8    the schema changed and the dataset's policy is freeze (sync), or a value
       does not fit a type asked for (--type, --schema, pin_types)
  9    sync: at least one dataset failed
  10   another jdop run holds the lock (of the sync root, or of the same --out)
  130  interrupted (Ctrl-C, SIGTERM); nothing was published; the same command resumes

The appsecret is read from JDOP_APPSECRET or --appsecret-file FILE; it never appears
in output, logs, errors, manifests or file names.";

#[derive(Debug, Parser)]
#[command(
    name = "jdop",
    version,
    about = "Snapshot datasets of the Zhejiang open-data platform (浙江省数据开放平台) into Parquet or CSV",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export one dataset to Parquet or CSV files plus manifest.json
    #[command(after_help = EXIT_CODES)]
    Export(ExportArgs),
    /// Print the dataset's record count (get_total.do)
    #[command(alias = "count")]
    Total(QueryArgs),
    /// Print the dataset's update date (get_dataupdate_date.do)
    #[command(alias = "update-date")]
    Updated(QueryArgs),
    /// Serve the built-in platform simulator over HTTP
    #[command(alias = "simulator")]
    Sim(SimArgs),
    /// Run the whole export against the built-in simulator (about 50,000 records)
    Demo(DemoArgs),
    /// Print the inferred schema (types, rules, null and empty counts) without writing data
    #[command(alias = "infer")]
    Schema(SchemaArgs),
    /// Keep a mirror of many datasets fresh from a TOML config (for cron)
    #[command(after_help = SYNC_HELP)]
    Sync(SyncArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Parquet,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CsvEncodingArg {
    Utf8,
    #[value(name = "utf8-bom")]
    Utf8Bom,
    Gb18030,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LineEndingArg {
    Crlf,
    Lf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnMismatchArg {
    Error,
    String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MethodArg {
    Post,
    Get,
}

/// How to reach a dataset.
#[derive(Debug, Args)]
pub struct Conn {
    /// Dataset id (`cata_3820` or `3820`) or a pasted interface URL
    /// (`http://HOST/jdop_front/interfaces/cata_3820/get_data.do`)
    pub dataset: String,

    /// Base URL of the platform, e.g. http://data.zjzwfw.gov.cn/jdop_front
    #[arg(long, env = "JDOP_BASE_URL")]
    pub base_url: Option<String>,

    /// Read the appsecret from this file (first line). Default: $JDOP_APPSECRET
    #[arg(long, value_name = "FILE")]
    pub appsecret_file: Option<PathBuf>,

    /// The appsecret itself. Discouraged: it stays in shell history and `ps`;
    /// prefer JDOP_APPSECRET or --appsecret-file
    #[arg(long, value_name = "SECRET")]
    pub appsecret: Option<String>,

    /// HTTP method; POST keeps the appsecret out of URLs
    #[arg(long, value_enum, default_value = "post")]
    pub method: MethodArg,

    /// Per-request timeout in seconds
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,

    /// Retries of a transient failure (timeouts, 5xx, 429, HTML bodies)
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub max_retries: u32,

    /// First retry delay in milliseconds (doubles up to --retry-max-delay-ms, with jitter)
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub retry_min_delay_ms: u64,

    /// Longest retry delay in milliseconds
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub retry_max_delay_ms: u64,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub conn: Conn,

    /// Output folder; replaced atomically when the export completes. An interrupted
    /// export resumes from its spool when run again
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// How text columns are typed.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Keep every text column as text (no Int64/Decimal/Date/Timestamp detection)
    #[arg(long)]
    pub no_detect: bool,

    /// The type of a column, checked against every value (repeatable):
    /// COL=string|int64|float64|bool|decimal|decimal(P,S)|date|date:PATTERN|timestamp|
    /// timestamp:PATTERN|epoch_ms (patterns: yyyy-MM-dd, yyyy/MM/dd, yyyy年MM月dd日,
    /// yyyyMMdd, yyyy-MM-dd HH:mm:ss[.SSS], ...; epoch_ms gives a UTC timestamp)
    #[arg(long = "type", value_name = "COL=TYPE")]
    pub types: Vec<String>,

    /// Empty strings in a typed column become null; with =false such a column stays text
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub empty_as_null: bool,

    /// Read datetime text as China Standard Time: Asia/Shanghai (or +08:00) gives
    /// Timestamp(ms, "+08:00"), a fixed UTC+8 so values read back as written;
    /// default: timestamps without a time zone
    #[arg(long, value_name = "ZONE", value_parser = ["Asia/Shanghai", "+08:00", "none"])]
    pub timezone: Option<String>,

    /// Pin column types from a file: a previous snapshot's manifest.json, the output
    /// of `jdop schema --json`, or a JSON object {"COL": "TYPE", ...}; --type wins over it
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,

    /// A value that does not fit a pinned type (--type, --schema): fail, or keep the
    /// column as text (the manifest says so)
    #[arg(long, value_enum, default_value = "error")]
    pub on_mismatch: OnMismatchArg,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub conn: Conn,

    /// Read only the first K pages (a quick look; types may differ on the rest)
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample_pages: Option<u64>,

    /// Requests in flight at most
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,

    /// Print {"dataset", "rows", "columns": [...]} as JSON (usable as --schema FILE)
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub detect: DetectArgs,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// File format of the data
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: FormatArg,

    /// Requests in flight at most (be polite to the platform)
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,

    /// Records per page (the platform allows at most 200)
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE_SIZE as i64))]
    pub page_size: u32,

    /// Split the data into part-00000, part-00001, ... of at most N rows each
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rows_per_file: Option<u64>,

    /// Start CSV files with a UTF-8 BOM so Excel shows Chinese correctly
    /// (the same as --csv-encoding utf8-bom)
    #[arg(long)]
    pub csv_bom: bool,

    /// Text encoding of CSV files (gb18030 for older Excel on Chinese Windows)
    #[arg(long, value_enum, default_value = "utf8", value_name = "ENCODING")]
    pub csv_encoding: CsvEncodingArg,

    /// Line ending of CSV files
    #[arg(long, value_enum, default_value = "crlf")]
    pub csv_line_ending: LineEndingArg,

    #[command(flatten)]
    pub detect: DetectArgs,

    /// Hive-partition the files by this column: COL=value/part-00000.parquet
    #[arg(long, value_name = "COLUMN")]
    pub partition_by: Option<String>,

    /// Rows per Parquet row group (rounded to whole pages); smaller groups let
    /// readers skip more, larger ones compress better
    #[arg(long, default_value_t = 65_536, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub row_group_rows: u64,

    /// zstd level for Parquet (1 = fastest, up to 22)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,

    /// Report repeated values of this column (a primary key) in the manifest;
    /// rows are never dropped
    #[arg(long, value_name = "COLUMN")]
    pub key: Option<String>,

    /// Start over this many times when the dataset changes during the export
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub consistency_retries: u32,

    /// Requests per second at most (e.g. 5 or 0.5); default: no cap besides --concurrency
    #[arg(long, value_name = "R", value_parser = positive_f64)]
    pub rate_limit: Option<f64>,

    /// Publish even if the total or update date moved during the export
    /// (the manifest then says "consistent": false)
    #[arg(long)]
    pub allow_inconsistent: bool,

    /// No progress output (errors and warnings still go to stderr)
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Print the manifest summary as JSON on stdout (human output stays on stderr)
    #[arg(long)]
    pub json: bool,
}

fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Port on 127.0.0.1 (0 picks a free one)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,

    /// A dataset to serve: `ID[:rows=N,shape=credit|nested,typing=strings|typed|mixed,date=date|datetime|datetime-ms|epoch-ms,seed=N,updated=YYYY-MM-DD]`.
    /// Repeat for several. Default: cata_3820, cata_5769, cata_9001
    #[arg(long = "dataset", value_name = "SPEC")]
    pub datasets: Vec<String>,

    /// The appsecret the simulator accepts
    #[arg(long, default_value = jdop::sim::DEFAULT_SECRET)]
    pub secret: String,

    /// Latency added to every answer, in milliseconds
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Up to this much more latency, seeded per request
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,

    /// Answer to pageSize above 200
    #[arg(long, value_enum, default_value = "error")]
    pub oversize: OversizeArg,

    /// Answer to a page past the end
    #[arg(long, value_enum, default_value = "empty")]
    pub past_end: PastEndArg,

    /// Fraction of calls answered with HTTP 500 and an HTML body (0..1)
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,

    /// Fraction of calls whose connection closes without a complete reply
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,

    /// Fraction of calls that stall for --stall-ms before answering
    #[arg(long, default_value_t = 0.0)]
    pub stall_rate: f64,

    /// How long a stall lasts, in milliseconds
    #[arg(long, default_value_t = 120_000)]
    pub stall_ms: u64,

    /// Fraction of calls answered with truncated JSON
    #[arg(long, default_value_t = 0.0)]
    pub truncate_rate: f64,

    /// Fraction of calls answered with a 302 redirect to an HTML login page
    #[arg(long, default_value_t = 0.0)]
    pub redirect_rate: f64,

    /// Throttle calls beyond this many in flight
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u64>,

    /// Throttle calls beyond this many per second
    #[arg(long, value_name = "N")]
    pub max_per_sec: Option<u64>,

    /// How throttled calls are answered: HTTP 429 with Retry-After, or status 0 with a Chinese message
    #[arg(long, value_enum, default_value = "http429")]
    pub throttle: ThrottleArg,

    /// Retry-After seconds sent with HTTP 429
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,

    /// After this many data calls, insert --mutate-rows rows at the front of the
    /// dataset being read (its total grows, its update date moves a day)
    #[arg(long, value_name = "N")]
    pub mutate_after: Option<u64>,

    /// Rows inserted by the mutation
    #[arg(long, default_value_t = 10)]
    pub mutate_rows: u64,

    /// A page number whose data calls always fail (repeatable)
    #[arg(long = "fail-page", value_name = "N")]
    pub fail_pages: Vec<u64>,

    /// How a --fail-page fails
    #[arg(long, value_enum, default_value = "status0")]
    pub fail_mode: FailModeArg,

    /// Seed of the injected faults
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OversizeArg {
    Error,
    Clamp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PastEndArg {
    Empty,
    Last,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ThrottleArg {
    Http429,
    Status0,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FailModeArg {
    Status0,
    Http500,
}

pub const SYNC_HELP: &str = "\
Exit codes: 0 every dataset exported or unchanged; 2 the config has errors (each is
listed with its line); 9 at least one dataset failed (the others were still synced);
10 another sync holds the root's lock. See `jdop export --help` for the rest.";

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The jobs file (TOML)
    pub config: PathBuf,

    /// Only validate the config file and report every error with its line
    #[arg(long)]
    pub check: bool,

    /// Export every dataset even if its total and update date are unchanged
    #[arg(long)]
    pub force: bool,

    /// Print the run's report as JSON on stdout (the table stays on stderr)
    #[arg(long)]
    pub json: bool,

    /// No per-dataset lines and no table (errors still go to stderr)
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// First retry delay in milliseconds
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub retry_min_delay_ms: u64,

    /// Longest retry delay in milliseconds
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub retry_max_delay_ms: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output folder
    #[arg(long, short = 'o', default_value = "demo-out")]
    pub out: PathBuf,

    /// Records in the simulated dataset
    #[arg(long, default_value_t = 50_000)]
    pub rows: u64,

    /// Simulated platform latency per request, in milliseconds
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,

    #[command(flatten)]
    pub output: OutputArgs,
}

impl Conn {
    pub fn target(&self) -> Result<Target> {
        Target::parse(&self.dataset, self.base_url.as_deref())
    }

    /// The appsecret from --appsecret-file, --appsecret or JDOP_APPSECRET.
    pub fn secret(&self) -> Result<Secret> {
        if let Some(path) = &self.appsecret_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::usage(format!(
                    "cannot read the appsecret file `{}`: {e}",
                    path.display()
                ))
            })?;
            let first = text
                .trim_start_matches('\u{feff}')
                .lines()
                .next()
                .unwrap_or("");
            return Secret::new(first).map_err(|_| {
                Error::usage(format!("the appsecret file `{}` is empty", path.display()))
            });
        }
        if let Some(s) = &self.appsecret {
            return Secret::new(s.clone());
        }
        match std::env::var("JDOP_APPSECRET") {
            Ok(s) if !s.trim().is_empty() => Secret::new(s),
            _ => Err(Error::usage(
                "no appsecret: set JDOP_APPSECRET or pass --appsecret-file FILE (the secret is shown in the platform's 个人中心 > 我的应用)",
            )),
        }
    }

    pub fn client(&self) -> Result<ClientConfig> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(Error::usage(
                "--timeout must be a positive number of seconds",
            ));
        }
        Ok(ClientConfig {
            method: match self.method {
                MethodArg::Post => Method::Post,
                MethodArg::Get => Method::Get,
            },
            timeout: Duration::from_secs_f64(self.timeout),
            ..ClientConfig::default()
        })
    }

    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            min_delay: Duration::from_millis(self.retry_min_delay_ms),
            max_delay: Duration::from_millis(self.retry_max_delay_ms.max(self.retry_min_delay_ms)),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            concurrency: 1,
            page_size: MAX_PAGE_SIZE,
            retry: self.retry(),
            gate: None,
            rate: None,
        }
    }
}

impl OutputArgs {
    pub fn format(&self) -> Format {
        match self.format {
            FormatArg::Parquet => Format::Parquet,
            FormatArg::Csv => Format::Csv,
        }
    }

    pub fn detect(&self) -> Result<DetectOptions> {
        self.detect.options()
    }
}

impl DetectArgs {
    /// Type detection settings: flags, then the schema file under them.
    pub fn options(&self) -> Result<DetectOptions> {
        let mut opts = DetectOptions {
            detect: !self.no_detect,
            empty_as_null: self.empty_as_null,
            shanghai: matches!(self.timezone.as_deref(), Some("Asia/Shanghai" | "+08:00")),
            on_mismatch: match self.on_mismatch {
                OnMismatchArg::Error => OnMismatch::Error,
                OnMismatchArg::String => OnMismatch::String,
            },
            ..DetectOptions::default()
        };
        for t in &self.types {
            let (col, ty) = t
                .split_once('=')
                .filter(|(c, _)| !c.is_empty())
                .ok_or_else(|| {
                    Error::usage(format!(
                        "--type `{t}`: expected COL=TYPE, e.g. 金额=decimal"
                    ))
                })?;
            let spec =
                TypeSpec::parse(ty).map_err(|e| Error::usage(format!("--type `{t}`: {e}")))?;
            opts.types.push((col.to_string(), spec, TypeSource::Flag));
        }
        if let Some(path) = &self.schema {
            let file = jdop::schema::SchemaFile::load(path)?;
            // A zoned timestamp in the file pins the zone too.
            opts.shanghai |= file.shanghai;
            for (col, spec) in file.types {
                if opts.asked(&col).is_none() {
                    opts.types.push((col, spec, TypeSource::SchemaFile));
                }
            }
            opts.order = file.order;
        }
        Ok(opts)
    }
}

impl OutputArgs {
    pub fn csv(&self) -> Result<CsvOptions> {
        if self.csv_bom && matches!(self.csv_encoding, CsvEncodingArg::Gb18030) {
            return Err(Error::usage(
                "--csv-bom is UTF-8 with a byte-order mark; it does not go with --csv-encoding gb18030",
            ));
        }
        Ok(CsvOptions {
            encoding: match (self.csv_encoding, self.csv_bom) {
                (CsvEncodingArg::Gb18030, _) => CsvEncoding::Gb18030,
                (CsvEncodingArg::Utf8Bom, _) | (_, true) => CsvEncoding::Utf8Bom,
                (CsvEncodingArg::Utf8, false) => CsvEncoding::Utf8,
            },
            crlf: matches!(self.csv_line_ending, LineEndingArg::Crlf),
        })
    }

    /// Settings for an export of `target` into `out`.
    pub fn settings(
        &self,
        target: Target,
        secret: Secret,
        out: PathBuf,
        client: ClientConfig,
        retry: RetryPolicy,
    ) -> Result<ExportConfig> {
        if self.partition_by.as_deref() == Some("") {
            return Err(Error::usage("--partition-by needs a column name"));
        }
        Ok(ExportConfig {
            target,
            secret,
            out,
            format: self.format(),
            limits: Limits {
                concurrency: self.concurrency as usize,
                page_size: self.page_size,
                retry,
                gate: None,
                rate: self
                    .rate_limit
                    .and_then(jdop::fetch::RateLimit::new)
                    .map(std::sync::Arc::new),
            },
            client,
            rows_per_file: self.rows_per_file,
            csv: self.csv()?,
            parquet: ParquetOptions {
                zstd_level: self.zstd_level,
                row_group_rows: self.row_group_rows as usize,
                ..ParquetOptions::default()
            },
            allow_inconsistent: self.allow_inconsistent,
            previous_columns: None,
            schema_policy: Default::default(),
            consistency_retries: self.consistency_retries,
            key: self.key.clone(),
            staging: None,
            detect: self.detect()?,
            partition_by: self.partition_by.clone(),
        })
    }
}

impl ExportArgs {
    pub fn settings(&self) -> Result<ExportConfig> {
        let target = self.conn.target()?;
        let secret = self.conn.secret()?;
        self.output.settings(
            target,
            secret,
            self.out.clone(),
            self.conn.client()?,
            self.conn.retry(),
        )
    }
}

impl SimArgs {
    pub fn config(&self) -> Result<SimConfig> {
        let datasets = if self.datasets.is_empty() {
            jdop::sim::default_datasets()
        } else {
            self.datasets
                .iter()
                .map(|s| DatasetSpec::parse(s))
                .collect::<Result<Vec<_>>>()?
        };
        for (name, rate) in [
            ("--error-rate", self.error_rate),
            ("--drop-rate", self.drop_rate),
            ("--stall-rate", self.stall_rate),
            ("--truncate-rate", self.truncate_rate),
            ("--redirect-rate", self.redirect_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::usage(format!("{name} must be between 0 and 1")));
            }
        }
        Ok(SimConfig {
            secret: self.secret.clone(),
            datasets,
            latency: Duration::from_millis(self.latency_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            oversize: match self.oversize {
                OversizeArg::Error => Oversize::Error,
                OversizeArg::Clamp => Oversize::Clamp,
            },
            past_end: match self.past_end {
                PastEndArg::Empty => PastEnd::Empty,
                PastEndArg::Last => PastEnd::LastPage,
            },
            fail_pages: self.fail_pages.clone(),
            fail_mode: match self.fail_mode {
                FailModeArg::Status0 => FailMode::Status0,
                FailModeArg::Http500 => FailMode::Http500,
            },
            error_rate: self.error_rate,
            drop_rate: self.drop_rate,
            stall_rate: self.stall_rate,
            stall: Duration::from_millis(self.stall_ms),
            truncate_rate: self.truncate_rate,
            redirect_rate: self.redirect_rate,
            max_in_flight: self.max_in_flight,
            max_per_sec: self.max_per_sec,
            throttle: match self.throttle {
                ThrottleArg::Http429 => Throttle::Http429,
                ThrottleArg::Status0 => Throttle::Status0,
            },
            retry_after_secs: self.retry_after_secs,
            mutate_after: self.mutate_after,
            mutate_rows: self.mutate_rows,
            seed: self.seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("jdop").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn page_size_above_200_is_refused() {
        assert!(parse(&["export", "cata_1", "--out", "x", "--page-size", "201"]).is_err());
        assert!(parse(&["export", "cata_1", "--out", "x", "--page-size", "200"]).is_ok());
    }

    #[test]
    fn concurrency_zero_is_refused() {
        assert!(parse(&["export", "cata_1", "--out", "x", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn export_defaults() {
        let Cli {
            command: Command::Export(a),
        } = parse(&["export", "cata_1", "--out", "x"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.output.concurrency, 4);
        assert_eq!(a.output.page_size, 200);
        assert!(matches!(a.output.format, FormatArg::Parquet));
        assert!(matches!(a.conn.method, MethodArg::Post));
    }

    #[test]
    fn sim_dataset_spec_is_validated() {
        let Cli {
            command: Command::Sim(a),
        } = parse(&["sim", "--dataset", "cata_1:rows=oops"]).unwrap()
        else {
            panic!()
        };
        assert!(a.config().is_err());
    }

    #[test]
    fn appsecret_file_first_line_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.txt");
        std::fs::write(&f, "abc123\n").unwrap();
        let Cli {
            command: Command::Total(a),
        } = parse(&["total", "cata_1", "--appsecret-file", f.to_str().unwrap()]).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.conn.secret().unwrap().expose(), "abc123");
    }
}
