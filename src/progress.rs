//! Progress reporting through a trait; indicatif lives only here.
//!
//! The library calls the [`Reporter`] as work happens; the CLI picks a bar when
//! stderr is a terminal, plain lines otherwise, and nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub trait Reporter: Send + Sync {
    /// The page plan is known.
    fn on_plan(&self, _dataset: &str, _total: u64, _pages: u64) {}
    /// A page was fetched and spooled.
    fn on_page(&self, _page: u64, _rows: u64) {}
    /// A call failed and will be retried after `delay`.
    fn on_retry(&self, _what: &str, _attempt: u32, _delay: Duration, _cause: &str) {}
    /// Writing the files started.
    fn on_writing(&self, _rows: u64) {}
    /// Rows were written.
    fn on_written(&self, _rows: u64) {}
    /// Something the user should know that does not stop the export.
    fn warn(&self, _msg: &str) {}
    /// The export ended (successfully or not): remove any bar.
    fn finish(&self) {}
}

/// Reports nothing (tests, `--quiet`, library use).
pub struct Silent;

impl Reporter for Silent {}

/// Which reporter fits: a bar on a terminal, plain lines otherwise, none when quiet.
pub fn for_stderr(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(Quiet)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bar::new())
    } else {
        Box::new(Plain::default())
    }
}

/// Only warnings, for `--quiet`.
struct Quiet;

impl Reporter for Quiet {
    fn warn(&self, msg: &str) {
        crate::say!("warning: {msg}");
    }
}

/// Plain lines on stderr: the plan, every 10% of pages, retries, warnings.
#[derive(Default)]
pub struct Plain {
    pages: AtomicU64,
    done: AtomicU64,
    rows: AtomicU64,
    last_tenth: AtomicU64,
}

impl Reporter for Plain {
    fn on_plan(&self, dataset: &str, total: u64, pages: u64) {
        self.pages.store(pages, Ordering::Relaxed);
        crate::say!("{dataset}: {total} records in {pages} pages");
    }
    fn on_page(&self, _page: u64, rows: u64) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let rows = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let pages = self.pages.load(Ordering::Relaxed).max(1);
        let tenth = done * 10 / pages;
        if self.last_tenth.fetch_max(tenth, Ordering::Relaxed) < tenth {
            crate::say!("fetched {done}/{pages} pages ({rows} rows)");
        }
    }
    fn on_retry(&self, what: &str, attempt: u32, delay: Duration, cause: &str) {
        crate::say!(
            "retrying {what} (attempt {}) in {:.1}s: {cause}",
            attempt + 1,
            delay.as_secs_f64()
        );
    }
    fn on_writing(&self, rows: u64) {
        crate::say!("writing {rows} rows");
    }
    fn warn(&self, msg: &str) {
        crate::say!("warning: {msg}");
    }
}

/// An indicatif bar: pages, rows, rate, retries, ETA.
pub struct Bar {
    bar: ProgressBar,
    rows: AtomicU64,
    retries: AtomicU64,
    started: std::time::Instant,
}

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("asking the platform for the total and update date");
        Bar {
            bar,
            rows: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    fn message(&self) -> String {
        let rows = self.rows.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let retries = self.retries.load(Ordering::Relaxed);
        let mut m = format!("{rows} rows, {:.0} rows/s", rows as f64 / secs);
        if retries > 0 {
            m.push_str(&format!(", {retries} retries"));
        }
        m
    }
}

impl Reporter for Bar {
    fn on_plan(&self, dataset: &str, total: u64, pages: u64) {
        self.bar.set_length(pages);
        self.bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} pages, {msg}, eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        self.bar.set_prefix(format!("{dataset} ({total} records)"));
        self.bar.set_message(self.message());
        self.bar.set_position(0);
    }
    fn on_page(&self, _page: u64, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bar.inc(1);
        self.bar.set_message(self.message());
    }
    fn on_retry(&self, what: &str, attempt: u32, delay: Duration, cause: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.bar.println(format!(
            "retrying {what} (attempt {}) in {:.1}s: {cause}",
            attempt + 1,
            delay.as_secs_f64()
        ));
    }
    fn on_writing(&self, rows: u64) {
        self.bar.set_length(rows);
        self.bar.set_position(0);
        self.bar.set_style(
            ProgressStyle::with_template("{prefix} writing [{bar:30}] {pos}/{len} rows eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
    }
    fn on_written(&self, rows: u64) {
        self.bar.inc(rows);
    }
    fn warn(&self, msg: &str) {
        self.bar.println(format!("warning: {msg}"));
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
        let _ = std::io::stderr().flush();
    }
}
