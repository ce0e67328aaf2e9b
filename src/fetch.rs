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
use crate::platform::{parse_page, Client};
use crate::progress::Reporter;
use crate::schema::Inferrer;
use crate::spool::Spool;

/// Retry policy for transient failures: exponential backoff with full jitter
/// (each delay drawn uniformly from zero to the exponential bound), `Retry-After`
/// honoured as a minimum.
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
    /// A cap on requests per second (`--rate-limit`), shared by every call.
    pub rate: Option<Arc<RateLimit>>,
}

/// Requests per second at most (a governor token bucket with a burst of one).
pub struct RateLimit {
    limiter: governor::DefaultDirectRateLimiter,
    per_sec: f64,
}

impl RateLimit {
    pub fn new(per_sec: f64) -> Option<RateLimit> {
        if !(per_sec.is_finite() && per_sec > 0.0) {
            return None;
        }
        let quota = governor::Quota::with_period(Duration::from_secs_f64(1.0 / per_sec))?;
        Some(RateLimit {
            limiter: governor::RateLimiter::direct(quota),
            per_sec,
        })
    }

    async fn wait(&self) {
        self.limiter.until_ready().await;
    }
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RateLimit({}/s)", self.per_sec)
    }
}

/// Adaptive concurrency (AIMD): the number of requests allowed in flight grows by
/// about one per round of successes and halves on throttling, between 1 and the
/// configured `--concurrency`. At most one decrease per second, so a burst of 429s
/// answering one round counts once.
pub struct Adaptive {
    sem: Arc<tokio::sync::Semaphore>,
    state: std::sync::Mutex<AimdState>,
}

struct AimdState {
    limit: f64,
    max: usize,
    /// Permits that exist (in the semaphore or held), minus those owed.
    permits: usize,
    /// Permits to forget as they come back (after a decrease).
    debt: usize,
    last_decrease: Option<Instant>,
    decreases: u64,
}

/// A permit of [`Adaptive`]; returned (or forgotten, after a decrease) on drop.
pub struct AdaptivePermit<'a> {
    permit: Option<tokio::sync::SemaphorePermit<'a>>,
    owner: &'a Adaptive,
}

impl Drop for AdaptivePermit<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            let mut st = self.owner.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.debt > 0 {
                st.debt -= 1;
                p.forget();
            }
        }
    }
}

impl Adaptive {
    pub fn new(max: usize) -> Adaptive {
        let max = max.max(1);
        Adaptive {
            sem: Arc::new(tokio::sync::Semaphore::new(max)),
            state: std::sync::Mutex::new(AimdState {
                limit: max as f64,
                max,
                permits: max,
                debt: 0,
                last_decrease: None,
                decreases: 0,
            }),
        }
    }

    pub async fn acquire(&self) -> AdaptivePermit<'_> {
        let permit = self.sem.acquire().await.ok();
        AdaptivePermit {
            permit,
            owner: self,
        }
    }

    /// The current limit on requests in flight.
    pub fn limit(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).permits
    }

    pub fn decreases(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decreases
    }

    pub fn on_success(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.permits >= st.max {
            return;
        }
        st.limit = (st.limit + 1.0 / st.limit).min(st.max as f64);
        if st.limit.floor() as usize > st.permits {
            st.permits += 1;
            if st.debt > 0 {
                st.debt -= 1;
            } else {
                self.sem.add_permits(1);
            }
        }
    }

    pub fn on_throttle(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st
            .last_decrease
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        st.last_decrease = Some(Instant::now());
        st.decreases += 1;
        let new = (st.permits / 2).max(1);
        let cut = st.permits - new;
        let forgotten = self.sem.forget_permits(cut);
        st.debt += cut - forgotten;
        st.permits = new;
        st.limit = new as f64;
    }
}

/// A uniform number in [0, 1) without a random-number crate: the clock and a
/// counter mixed (jitter only needs to spread clients apart).
fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = crate::sim::data::mix(nanos ^ crate::sim::data::mix(n));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Calls made and retries spent, for the manifest.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
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

/// One call with retries (total, update date). The envelope is checked inside the
/// retry loop so that HTML or truncated bodies are retried like any transient failure.
pub async fn call(
    client: &Client,
    op: Op,
    page: Option<(u64, u32)>,
    policy: &Limits,
    counters: &Counters,
    reporter: &dyn Reporter,
) -> Result<Vec<u8>> {
    let check = |body: Vec<u8>| {
        let ok = match op {
            Op::Data => parse_page(&body).map(|_| ()),
            _ => crate::platform::parse_envelope(&body).map(|_| ()),
        };
        ok.map(|_| body)
    };
    call_checked(client, op, page, policy, None, counters, reporter, check).await
}

/// A page's record array (the envelope checked once, inside the retry loop).
pub async fn call_page(
    client: &Client,
    page: (u64, u32),
    policy: &Limits,
    adaptive: Option<&Adaptive>,
    counters: &Counters,
    reporter: &dyn Reporter,
) -> Result<String> {
    let check = |body: Vec<u8>| parse_page(&body).map(std::borrow::Cow::into_owned);
    call_checked(
        client,
        Op::Data,
        Some(page),
        policy,
        adaptive,
        counters,
        reporter,
        check,
    )
    .await
}

/// One call with retries; `check` turns the body into the answer or a (maybe
/// transient) error.
#[allow(clippy::too_many_arguments)]
async fn call_checked<T>(
    client: &Client,
    op: Op,
    page: Option<(u64, u32)>,
    policy: &Limits,
    adaptive: Option<&Adaptive>,
    counters: &Counters,
    reporter: &dyn Reporter,
    check: impl Fn(Vec<u8>) -> std::result::Result<T, CallError>,
) -> Result<T> {
    let started = Instant::now();
    let retries = AtomicU32::new(0);
    let gate = policy.gate.clone();
    let what = match page {
        Some((p, _)) => format!("page {p} of `{}`", client.target().dataset),
        None => format!("{} of `{}`", op.endpoint(), client.target().dataset),
    };
    let attempt = || async {
        let _slot = match adaptive {
            Some(a) => Some(a.acquire().await),
            None => None,
        };
        let _permit = match &gate {
            Some(g) => Some(
                g.acquire()
                    .await
                    .map_err(|_| CallError::Transport("the request gate was closed".into()))?,
            ),
            None => None,
        };
        if let Some(rate) = &policy.rate {
            rate.wait().await;
        }
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let result = async {
            let body = client.call_raw(op, page).await?;
            check(body).map_err(|e| client.redact_err(e))
        }
        .await;
        if let Some(a) = adaptive {
            match &result {
                Ok(_) => a.on_success(),
                Err(CallError::Throttled { .. }) => {
                    counters.throttled.fetch_add(1, Ordering::Relaxed);
                    a.on_throttle()
                }
                Err(_) => {}
            }
        } else if matches!(result, Err(CallError::Throttled { .. })) {
            counters.throttled.fetch_add(1, Ordering::Relaxed);
        }
        result
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.retry.min_delay)
        .with_max_delay(policy.retry.max_delay)
        .with_max_times(policy.retry.max_retries as usize);
    let max_delay = policy.retry.max_delay;
    let result = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &CallError| e.is_transient())
        .adjust(|e: &CallError, delay: Option<Duration>| {
            // Full jitter, and never sooner than the server's Retry-After.
            let delay = delay?;
            let jittered = delay.mul_f64(unit_random());
            match e {
                CallError::Throttled {
                    retry_after: Some(ra),
                    ..
                } => Some((*ra).max(jittered).min(max_delay.max(*ra))),
                _ => Some(jittered),
            }
        })
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
    /// A hash of each page's records, to find pages served twice.
    pub page_hashes: Vec<u64>,
    /// Pages read from the spool of an interrupted run instead of fetched.
    pub reused: u64,
}

/// Told each time the pages fetched in order grow: the number of pages
/// `1..=n` in, their merged schema and their row counts. Returning `false` stops
/// the fetch (the result then covers only the pages in so far).
pub type PrefixHook<'a> = &'a mut (dyn FnMut(u64, &Inferrer, &[u32]) -> bool + Send);

/// Fetches pages `1..=pages` into the spool and infers the schema over them.
pub async fn fetch_pages(
    client: &Client,
    pages: u64,
    limits: &Limits,
    spool: &Spool,
    counters: &Counters,
    reporter: &dyn Reporter,
    mut on_prefix: Option<PrefixHook<'_>>,
) -> Result<Fetched> {
    let dataset = client.target().dataset.to_string();
    let page_size = limits.page_size;
    let adaptive = Adaptive::new(limits.concurrency);
    let adaptive = &adaptive;
    // A request's slot is free as soon as its body is in: the page is processed
    // (parsed, inferred, spooled) on rayon while the next request is on the wire.
    type Processed = Result<(u32, Inferrer, u64)>;
    enum Step {
        Reused(u64, (u32, Inferrer, u64)),
        Fetched(u64, tokio::sync::oneshot::Receiver<Processed>),
    }
    let mut stream = futures::stream::iter(1..=pages)
        .map(|p| {
            let dataset = dataset.clone();
            let spool = spool.clone();
            async move {
                if spool.has_page(p) {
                    let (ds, sp) = (dataset.clone(), spool.clone());
                    let reused = on_rayon(move || {
                        let text = sp
                            .read_page(p)
                            .map_err(|e| page_error(&ds, p, PageError::Spool(e)))?;
                        process_array(&sp, &ds, p, &text, false)
                    })
                    .await?;
                    match reused {
                        Ok(out) => return Ok::<_, Error>(Step::Reused(p, out)),
                        // A damaged spool page (a disk fault, a hand edit) is fetched again.
                        Err(e) => {
                            tracing::warn!("spooled page {p} of `{dataset}` is unusable, fetching it again: {e}");
                            spool.remove_page(p);
                        }
                    }
                }
                let array = call_page(
                    client,
                    (p, page_size),
                    limits,
                    Some(adaptive),
                    counters,
                    reporter,
                )
                .await?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                rayon::spawn(move || {
                    let _ = tx.send(process_array(&spool, &dataset, p, &array, true));
                });
                Ok(Step::Fetched(p, rx))
            }
        })
        .buffer_unordered(limits.concurrency.max(1));

    let mut inferrer = Inferrer::default();
    let mut page_rows = Vec::with_capacity(pages.min(1 << 20) as usize);
    let mut page_hashes = Vec::with_capacity(pages.min(1 << 20) as usize);
    let mut reused = 0;
    let mut pending: BTreeMap<u64, (u32, Inferrer, u64)> = BTreeMap::new();
    let mut next = 1u64;
    let mut processing = futures::stream::FuturesUnordered::new();
    // Bodies waiting for processing at most (memory bound when the CPU lags).
    let max_processing = 4 * limits.concurrency.max(1);
    let mut fetching = true;
    loop {
        let (p, out, was_reused) = tokio::select! {
            step = stream.try_next(), if fetching && processing.len() < max_processing => {
                match step? {
                    Some(Step::Reused(p, out)) => (p, out, true),
                    Some(Step::Fetched(p, rx)) => {
                        processing.push(async move { (p, rx.await) });
                        continue;
                    }
                    None => {
                        fetching = false;
                        continue;
                    }
                }
            }
            Some((p, done)) = processing.next(), if !processing.is_empty() => {
                let out = done.map_err(|_| {
                    Error::Internal("a worker thread stopped without an answer".into())
                })??;
                (p, out, false)
            }
            else => break,
        };
        reporter.on_page(p, out.0 as u64);
        reused += was_reused as u64;
        pending.insert(p, out);
        let mut stop = false;
        while let Some((rows, inf, hash)) = pending.remove(&next) {
            inferrer.merge(inf);
            page_rows.push(rows);
            page_hashes.push(hash);
            // Told of every page, so that what it sees at page n does not depend on
            // the order the pages arrived in (the output must not).
            if let Some(hook) = on_prefix.as_mut() {
                if !hook(next, &inferrer, &page_rows) {
                    stop = true;
                    break;
                }
            }
            next += 1;
        }
        if stop {
            // Pages that came in out of order are left out.
            pending.clear();
            break;
        }
    }
    debug_assert!(pending.is_empty());
    Ok(Fetched {
        inferrer,
        page_rows,
        page_hashes,
        reused,
    })
}

fn page_error(dataset: &str, page: u64, source: PageError) -> Error {
    Error::Page {
        dataset: dataset.to_string(),
        page,
        source: Box::new(source),
    }
}

/// Infers a page's schema, hashes its records and (for fetched pages) spools them.
/// A spool write error keeps its OS cause (disk full) and is an output error.
pub(crate) fn process_array(
    spool: &Spool,
    dataset: &str,
    page: u64,
    array: &str,
    write: bool,
) -> Result<(u32, Inferrer, u64)> {
    let hash = twox_hash::XxHash3_64::oneshot(array.as_bytes());
    if write && spool.wants_tapes() {
        // Conversion will walk this page's tape instead of scanning it again.
        let (rows, inf, tape) =
            Inferrer::observe_array_taped(array, hash).map_err(|e| page_error(dataset, page, e))?;
        spool.write_page(page, array)?;
        if let Some(tape) = tape {
            spool.put_tape(page, tape);
        }
        return Ok((rows, inf, hash));
    }
    let (rows, inf) = Inferrer::observe_array(array).map_err(|e| page_error(dataset, page, e))?;
    if write {
        spool.write_page(page, array)?;
    }
    Ok((rows, inf, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn aimd_halves_on_throttling_and_grows_back() {
        let a = Adaptive::new(8);
        assert_eq!(a.limit(), 8);
        {
            // Throttled while all 8 permits are held: the cut is owed and paid
            // as the permits come back.
            let mut held = Vec::new();
            for _ in 0..8 {
                held.push(a.acquire().await);
            }
            a.on_throttle();
            a.on_throttle(); // a burst within a second counts once
            assert_eq!(a.limit(), 4);
            assert_eq!(a.decreases(), 1);
        }
        assert_eq!(a.sem.available_permits(), 4);
        for _ in 0..40 {
            a.on_success();
        }
        assert_eq!(a.limit(), 8, "additive increase back to the maximum");
        assert_eq!(a.sem.available_permits(), 8);
    }

    #[test]
    fn rate_limit_refuses_nonsense() {
        assert!(RateLimit::new(0.0).is_none());
        assert!(RateLimit::new(f64::NAN).is_none());
        assert!(RateLimit::new(0.5).is_some());
    }

    #[test]
    fn page_count_rounds_up() {
        assert_eq!(page_count(0, 200), 0);
        assert_eq!(page_count(1, 200), 1);
        assert_eq!(page_count(200, 200), 1);
        assert_eq!(page_count(201, 200), 2);
        assert_eq!(page_count(8021, 200), 41);
    }
}
