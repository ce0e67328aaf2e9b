//! The page plan and the bounded, retrying fetch of every page.
//!
//! One [`Limits`] value holds the limits. Pages are fetched with at most
//! `concurrency` requests in flight (`buffer_unordered`); each page's CPU work
//! (record split, inference, spool write) runs on rayon, and page results are merged
//! in page order as they complete, so only a window of out-of-order results is held.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, TryStreamExt};

use crate::error::{CallError, Error, Op, PageError, Result};
use crate::platform::{parse_page, split_records, Client};
use crate::progress::Reporter;
use crate::schema::Inferrer;
use crate::spool::Spool;

/// Retry policy for transient failures: exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Limits of one export.
#[derive(Debug, Clone)]
pub struct Limits {
    pub concurrency: usize,
    pub page_size: u32,
    pub retry: RetryPolicy,
    /// A limit on requests in flight shared with other exports (`jdop sync`).
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

/// Calls made and retries spent, for the manifest.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

/// ceil(total / page_size) pages, numbered from 1.
pub fn page_count(total: u64, page_size: u32) -> u64 {
    total.div_ceil(page_size.max(1) as u64)
}

/// Runs `f` on rayon and awaits its result without blocking the runtime.
pub async fn on_rayon<F, R>(f: F) -> Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| Error::Internal("a worker thread stopped without an answer".into()))
}

/// One call with retries. The envelope is checked inside the retry loop so that
/// HTML or truncated bodies are retried like any transient failure.
pub async fn call(
    client: &Client,
    op: Op,
    page: Option<(u64, u32)>,
    policy: &Limits,
    counters: &Counters,
    reporter: &dyn Reporter,
) -> Result<Vec<u8>> {
    let started = Instant::now();
    let retries = AtomicU32::new(0);
    let gate = policy.gate.clone();
    let what = match page {
        Some((p, _)) => format!("page {p} of `{}`", client.target().dataset),
        None => format!("{} of `{}`", op.endpoint(), client.target().dataset),
    };
    let attempt = || async {
        let _permit = match &gate {
            Some(g) => Some(
                g.acquire()
                    .await
                    .map_err(|_| CallError::Transport("the request gate was closed".into()))?,
            ),
            None => None,
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let body = client.call_raw(op, page).await?;
        drop(_permit);
        let checked = match op {
            Op::Data => parse_page(&body).map(|_| ()),
            _ => crate::platform::parse_envelope(&body).map(|_| ()),
        };
        checked.map_err(|e| client.redact_err(e))?;
        Ok::<_, CallError>(body)
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.retry.min_delay)
        .with_max_delay(policy.retry.max_delay)
        .with_max_times(policy.retry.max_retries as usize)
        .with_jitter();
    let result = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &CallError| e.is_transient())
        .notify(|e: &CallError, delay: Duration| {
            let n = retries.fetch_add(1, Ordering::Relaxed);
            counters.retries.fetch_add(1, Ordering::Relaxed);
            reporter.on_retry(&what, n + 1, delay, &e.to_string());
        })
        .await;
    let dataset = client.target().dataset.to_string();
    result.map_err(|source| match source {
        CallError::Rejected { msg, .. } => Error::Rejected {
            dataset,
            op,
            page: page.map(|p| p.0),
            msg,
        },
        source => Error::Call {
            dataset,
            op,
            page: page.map(|p| p.0),
            url: client.target().endpoint(op).to_string(),
            retries: retries.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
            source: Box::new(source),
        },
    })
}

/// What the fetch of all pages produced.
pub struct Fetched {
    pub inferrer: Inferrer,
    /// Rows per page, index 0 = page 1.
    pub page_rows: Vec<u32>,
}

/// Fetches pages `1..=pages` into the spool and infers the schema over them.
pub async fn fetch_pages(
    client: &Client,
    pages: u64,
    limits: &Limits,
    spool: &Spool,
    counters: &Counters,
    reporter: &dyn Reporter,
) -> Result<Fetched> {
    let dataset = client.target().dataset.to_string();
    let page_size = limits.page_size;
    let mut stream = futures::stream::iter(1..=pages)
        .map(|p| {
            let dataset = dataset.clone();
            let spool = spool.clone();
            async move {
                let body = call(
                    client,
                    Op::Data,
                    Some((p, page_size)),
                    limits,
                    counters,
                    reporter,
                )
                .await?;
                let (rows, inf) = on_rayon(move || process_page(&spool, p, &body))
                    .await?
                    .map_err(|source| Error::Page {
                        dataset: dataset.clone(),
                        page: p,
                        source: Box::new(source),
                    })?;
                reporter.on_page(p, rows as u64);
                Ok::<_, Error>((p, rows, inf))
            }
        })
        .buffer_unordered(limits.concurrency.max(1));

    let mut inferrer = Inferrer::default();
    let mut page_rows = Vec::with_capacity(pages.min(1 << 20) as usize);
    let mut pending: BTreeMap<u64, (u32, Inferrer)> = BTreeMap::new();
    let mut next = 1u64;
    while let Some((p, rows, inf)) = stream.try_next().await? {
        pending.insert(p, (rows, inf));
        while let Some((rows, inf)) = pending.remove(&next) {
            inferrer.merge(inf);
            page_rows.push(rows);
            next += 1;
        }
    }
    debug_assert!(pending.is_empty());
    Ok(Fetched {
        inferrer,
        page_rows,
    })
}

/// Splits a page, infers its schema and spools its record array.
fn process_page(spool: &Spool, page: u64, body: &[u8]) -> Result<(u32, Inferrer), PageError> {
    let array =
        parse_page(body).map_err(|e| PageError::Spool(std::io::Error::other(e.to_string())))?;
    let records = split_records(&array)?;
    let inf = Inferrer::observe_page(&records);
    spool
        .write_page(page, &array)
        .map_err(|e| PageError::Spool(std::io::Error::other(e.to_string())))?;
    Ok((records.len() as u32, inf))
}

/// Shared handle type for counters.
pub type SharedCounters = Arc<Counters>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_count_rounds_up() {
        assert_eq!(page_count(0, 200), 0);
        assert_eq!(page_count(1, 200), 1);
        assert_eq!(page_count(200, 200), 1);
        assert_eq!(page_count(201, 200), 2);
        assert_eq!(page_count(8021, 200), 41);
    }
}
