//! jdop snapshots datasets of the Zhejiang open-data platform (`jdop_front`) into
//! Parquet or CSV files with a manifest.
//!
//! Data flows one way:
//! platform (HTTP) -> [`fetch`] -> [`spool`] -> [`schema`] -> [`convert`] -> [`sink`]
//! -> [`manifest`] (publish). [`export::export`] runs the whole path;
//! [`sim`] is the built-in simulator of the platform.

/// Writes a line to stderr, ignoring a closed stderr: `jdop ... 2>&1 | head`
/// must not end an export half-way.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod convert;
pub mod detect;
pub mod error;
pub mod export;
pub mod fetch;
pub mod keys;
pub mod manifest;
pub mod platform;
pub mod progress;
pub mod schema;
pub mod sim;
pub mod sink;
pub mod spool;
pub mod sync;

pub use error::{Error, ExitCode, Result};
pub use export::{export, ExportConfig, Summary};
