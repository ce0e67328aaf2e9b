//! The library's error type and the stable exit codes the CLI maps it to.
//!
//! Every variant names what the user needs to act: the dataset, the page, the
//! operation, the file. Messages never contain the appsecret: URLs are stored
//! already redacted and platform messages pass through [`crate::platform::Secret::redact`].

use std::path::PathBuf;
use std::time::Duration;

/// Stable process exit codes (documented in the README and `jdop --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    /// Anything not covered below (a bug, an unexpected internal failure).
    Failure = 1,
    /// Bad command line or bad settings (clap uses 2 as well).
    Usage = 2,
    /// The platform answered `status: 0`: wrong secret, unknown dataset, refused call.
    Platform = 3,
    /// The platform could not be reached or kept failing after all retries.
    Network = 4,
    /// The platform answered something that is not a valid envelope or page.
    Protocol = 5,
    /// Writing the snapshot failed (disk full, permissions, encoder error).
    Output = 6,
    /// The dataset changed while it was exported (total or update date moved).
    Inconsistent = 7,
    /// The schema changed and the dataset's policy is `freeze`, or a value does
    /// not fit a type asked for (`--type`, `--schema`).
    SchemaChanged = 8,
    /// `jdop sync`: at least one dataset failed (the others went on).
    SyncPartial = 9,
    /// `jdop sync`: another sync holds the root folder's lock.
    Locked = 10,
    /// Interrupted by Ctrl-C / SIGTERM; nothing was published.
    Interrupted = 130,
}

/// What a call to the platform was for; used in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Total,
    Data,
    UpdateDate,
}

impl Op {
    pub fn endpoint(self) -> &'static str {
        match self {
            Op::Total => "get_total.do",
            Op::Data => "get_data.do",
            Op::UpdateDate => "get_dataupdate_date.do",
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Op::Total => "fetch the total",
            Op::Data => "fetch page",
            Op::UpdateDate => "fetch the update date",
        }
    }
}

/// Formats "fetch page 17" / "fetch the total" for messages.
pub fn op_text(op: Op, page: Option<u64>) -> String {
    match page {
        Some(p) => format!("{} {p}", op.describe()),
        None => op.describe().to_string(),
    }
}

/// One failed call, classified once as transient (worth retrying) or terminal.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("request timed out after {:.1}s (--timeout)", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("HTTP status {status}{}{}", if *.status == 404 { " (is the base URL right? it usually ends with `/jdop_front`)" } else { "" }, snippet_suffix(.snippet))]
    HttpStatus { status: u16, snippet: String },
    #[error("throttled by the platform ({detail})")]
    Throttled {
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("HTTP {status} redirect to `{location}`")]
    Redirect { status: u16, location: String },
    #[error("response is not the JSON envelope ({reason}){}", snippet_suffix(.snippet))]
    NotEnvelope { reason: String, snippet: String },
    #[error("platform answered status {status}: {msg}")]
    Rejected { status: String, msg: String },
    #[error("unexpected `data` in the response: {0}")]
    BadData(String),
}

fn snippet_suffix(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; body starts with `{s}`")
    }
}

impl CallError {
    /// Transient failures are retried with backoff; terminal ones end the export.
    ///
    /// Transient: timeouts, connection and transport errors, HTTP 408/425/429/5xx,
    /// throttling (429, or `status: 0` with a throttling message), bodies that are
    /// not the JSON envelope (proxies and overloaded gateways answer with HTML or
    /// truncated bodies), redirects. Terminal: other `status: 0` answers (the
    /// platform said no), other 4xx, `data` of the wrong shape.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Timeout(_) | CallError::Connect(_) | CallError::Transport(_) => true,
            CallError::HttpStatus { status, .. } => {
                matches!(status, 408 | 425 | 429) || (500..600).contains(status)
            }
            // A redirect leads to a login or error page: retried a few times in
            // case it was a passing gateway hiccup, then reported.
            CallError::NotEnvelope { .. }
            | CallError::Throttled { .. }
            | CallError::Redirect { .. } => true,
            CallError::Rejected { .. } | CallError::BadData(_) => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Usage { message: String },

    #[error("failed to {} of `{dataset}`: the platform said `{msg}`", op_text(*.op, *.page))]
    Rejected {
        dataset: String,
        op: Op,
        page: Option<u64>,
        msg: String,
    },

    #[error("failed to {} of `{dataset}` from `{url}` after {retries} {} in {:.1}s", op_text(*.op, *.page), if *.retries == 1 { "retry" } else { "retries" }, .elapsed.as_secs_f64())]
    Call {
        dataset: String,
        op: Op,
        page: Option<u64>,
        /// Already redacted: never holds the appsecret.
        url: String,
        retries: u32,
        elapsed: Duration,
        #[source]
        source: Box<CallError>,
    },

    #[error("failed to read page {page} of `{dataset}`")]
    Page {
        dataset: String,
        page: u64,
        #[source]
        source: Box<PageError>,
    },

    #[error("the dataset `{dataset}` changed during the export: {reasons}")]
    Inconsistent { dataset: String, reasons: String },

    #[error("failed to {action} `{}`", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to write {what} for `{dataset}`")]
    Write {
        dataset: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("the schema of `{dataset}` changed and its policy is `freeze`: {changes}")]
    SchemaChanged { dataset: String, changes: String },

    #[error("{0}")]
    TypeMismatch(Box<TypeMismatch>),

    #[error("another jdop run (pid {pid}) is using `{}`", .root.display())]
    Locked { root: PathBuf, pid: String },

    #[error("{failed} of {total} datasets failed")]
    SyncFailed { failed: usize, total: usize },

    #[error("interrupted; nothing was published")]
    Interrupted,

    #[error("internal error: {0}")]
    Internal(String),
}

/// A page body that passed the envelope check but whose records cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("record {index} is not a JSON object")]
    NotAnObject { index: usize },
    #[error("invalid JSON in the records: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a record could not be converted to Arrow")]
    Convert {
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("column `{column}`: value {} does not convert to {arrow_type}", quote_value(.value))]
    Value {
        column: String,
        arrow_type: String,
        value: String,
    },
    #[error("spooled page is missing or unreadable: {0}")]
    Spool(#[source] std::io::Error),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage { .. } => ExitCode::Usage,
            Error::Rejected { .. } => ExitCode::Platform,
            Error::Call { source, .. } => match source.as_ref() {
                CallError::Rejected { .. } => ExitCode::Platform,
                CallError::Timeout(_) | CallError::Connect(_) | CallError::Transport(_) => {
                    ExitCode::Network
                }
                CallError::HttpStatus { .. } | CallError::Throttled { .. } => ExitCode::Network,
                CallError::Redirect { .. } | CallError::NotEnvelope { .. } => ExitCode::Protocol,
                CallError::BadData(_) => ExitCode::Protocol,
            },
            Error::Page { .. } => ExitCode::Protocol,
            Error::Inconsistent { .. } => ExitCode::Inconsistent,
            Error::Io { .. } | Error::Write { .. } => ExitCode::Output,
            Error::SchemaChanged { .. } | Error::TypeMismatch(_) => ExitCode::SchemaChanged,
            Error::Locked { .. } => ExitCode::Locked,
            Error::SyncFailed { .. } => ExitCode::SyncPartial,
            Error::Interrupted => ExitCode::Interrupted,
            Error::Internal(_) => ExitCode::Failure,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
        }
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A value for a message: JSON-quoted (control characters visible), at most 80 chars.
/// A JSON number or boolean shows as itself.
pub fn quote_value(v: &str) -> String {
    let short: String = v.chars().take(80).collect();
    let mut q = serde_json::to_string(&short).unwrap_or_default();
    if short.len() < v.len() {
        q.push('…');
    }
    q
}

/// A value that does not fit a type asked for (`--type`, `--schema`).
#[derive(Debug)]
pub struct TypeMismatch {
    pub dataset: String,
    pub column: String,
    /// 0 when every value fits alone but not together.
    pub page: u64,
    /// Quoted and shortened for messages.
    pub value: String,
    pub wanted: String,
    pub source_name: String,
    /// What to do about it.
    pub hint: String,
}

impl std::fmt::Display for TypeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` page {}: column `{}` value {} does not fit {} (from {}); {}",
            self.dataset,
            self.page,
            self.column,
            self.value,
            self.wanted,
            self.source_name,
            self.hint
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_zero_is_terminal_and_5xx_transient() {
        let rejected = CallError::Rejected {
            status: "0".into(),
            msg: "appsecret错误".into(),
        };
        assert!(!rejected.is_transient());
        for status in [429, 500, 502, 503, 504] {
            let e = CallError::HttpStatus {
                status,
                snippet: String::new(),
            };
            assert!(e.is_transient(), "{status}");
        }
        assert!(!CallError::HttpStatus {
            status: 404,
            snippet: String::new()
        }
        .is_transient());
    }

    #[test]
    fn message_names_dataset_page_and_retries() {
        let e = Error::Call {
            dataset: "cata_1".into(),
            op: Op::Data,
            page: Some(17),
            url: "http://h/jdop_front/interfaces/cata_1/get_data.do".into(),
            retries: 5,
            elapsed: Duration::from_millis(1500),
            source: Box::new(CallError::Timeout(Duration::from_secs(60))),
        };
        assert_eq!(
            e.to_string(),
            "failed to fetch page 17 of `cata_1` from `http://h/jdop_front/interfaces/cata_1/get_data.do` after 5 retries in 1.5s"
        );
        assert_eq!(e.exit_code(), ExitCode::Network);
    }
}
