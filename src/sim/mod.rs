//! The built-in platform simulator: the classic interface over real HTTP on
//! 127.0.0.1, with seeded datasets, the platform's unknowns as switches, injected
//! latency and faults, and counters of the calls it served.
//!
//! It backs the tests, the examples, the benchmarks and `jdop demo`; `jdop sim`
//! serves it for other tools.

pub mod data;

pub use data::{DatasetSpec, DateFormat, Shape, Typing};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// The secret the simulator accepts unless told otherwise.
pub const DEFAULT_SECRET: &str = "jdop-sim-secret";

/// What a `pageSize` above 200 gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    Error,
    Clamp,
}

/// What a page past the end gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PastEnd {
    Empty,
    LastPage,
}

/// How a failing page fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// HTTP 200 with `status: 0` and a Chinese message.
    Status0,
    /// HTTP 500 with an HTML body (retried, then given up).
    Http500,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub secret: String,
    pub datasets: Vec<DatasetSpec>,
    /// Added to every answer.
    pub latency: Duration,
    /// Up to this much more, seeded per request.
    pub jitter: Duration,
    pub oversize: Oversize,
    pub past_end: PastEnd,
    /// Pages (1-based) of data calls that always fail.
    pub fail_pages: Vec<u64>,
    pub fail_mode: FailMode,
    /// Fraction of calls answered with HTTP 500, 502 or 504 and an HTML body.
    pub error_rate: f64,
    /// Fraction of calls whose connection is closed without a complete reply.
    pub drop_rate: f64,
    /// Fraction of calls that stall for `stall` before answering (longer than the
    /// client's timeout).
    pub stall_rate: f64,
    pub stall: Duration,
    /// Fraction of calls answered with a truncated JSON body.
    pub truncate_rate: f64,
    /// Fraction of calls answered with a 302 redirect to an HTML page.
    pub redirect_rate: f64,
    /// Requests in flight above this are throttled.
    pub max_in_flight: Option<u64>,
    /// Requests per second above this are throttled.
    pub max_per_sec: Option<u64>,
    /// How throttling is answered.
    pub throttle: Throttle,
    /// `Retry-After` seconds sent with HTTP 429.
    pub retry_after_secs: u64,
    /// After this many data calls, `mutate_rows` rows are inserted at the front of
    /// the dataset being read: its total grows and its update date moves a day.
    pub mutate_after: Option<u64>,
    pub mutate_rows: u64,
    /// Faults are decided from this seed, the endpoint, the page and how many times
    /// that page was asked for, so a run can be replayed whatever the timing.
    pub seed: u64,
}

/// How the simulator answers a throttled call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// HTTP 429 with `Retry-After`.
    Http429,
    /// HTTP 200 with `status: 0` and a Chinese message, the platform's style.
    Status0,
}

/// The message of a throttled call in the platform's style.
pub const THROTTLE_MSG: &str = "访问过于频繁，请稍后再试";

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            secret: DEFAULT_SECRET.into(),
            datasets: default_datasets(),
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            oversize: Oversize::Error,
            past_end: PastEnd::Empty,
            fail_pages: Vec::new(),
            fail_mode: FailMode::Status0,
            error_rate: 0.0,
            drop_rate: 0.0,
            stall_rate: 0.0,
            stall: Duration::from_secs(120),
            truncate_rate: 0.0,
            redirect_rate: 0.0,
            max_in_flight: None,
            max_per_sec: None,
            throttle: Throttle::Http429,
            retry_after_secs: 1,
            mutate_after: None,
            mutate_rows: 0,
            seed: 7,
        }
    }
}

/// The datasets served when none are named: the manual's `cata_3820` (8,021
/// penalty records, strings), `cata_5769` (50,000, typed numbers) and `cata_9001`
/// (2,000 nested station records).
pub fn default_datasets() -> Vec<DatasetSpec> {
    vec![
        DatasetSpec::credit("cata_3820", 8021),
        DatasetSpec::credit("cata_5769", 50_000)
            .with_typing(Typing::Typed)
            .with_seed(5769),
        DatasetSpec::nested("cata_9001", 2000),
    ]
}

/// Calls served, by kind.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct SimStats {
    pub total_calls: u64,
    pub data_calls: u64,
    pub update_date_calls: u64,
    pub rejected: u64,
    pub http_errors: u64,
    pub throttled: u64,
    pub dropped: u64,
    pub stalled: u64,
    pub truncated: u64,
    pub redirected: u64,
    pub mutations: u64,
    pub max_in_flight: u64,
    /// Data calls per page number (all datasets).
    pub pages: BTreeMap<u64, u64>,
}

struct Shared {
    cfg: SimConfig,
    datasets: RwLock<HashMap<String, DatasetSpec>>,
    seq: AtomicU64,
    in_flight: AtomicU64,
    stats: Mutex<SimStats>,
    /// Calls per (endpoint, page): the attempt number used to decide faults.
    attempts: Mutex<HashMap<(u8, u64), u64>>,
    /// Start of the current one-second window and the calls in it.
    window: Mutex<(std::time::Instant, u64)>,
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Simulator {
    /// Starts on `127.0.0.1:port` (0 picks a free port) on the current runtime.
    pub async fn start(cfg: SimConfig, port: u16) -> Result<Simulator> {
        Self::start_on(cfg, SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    pub async fn start_on(cfg: SimConfig, addr: SocketAddr) -> Result<Simulator> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::usage(format!("cannot listen on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let datasets = cfg
            .datasets
            .iter()
            .map(|d| (d.id.clone(), d.clone()))
            .collect();
        let shared = Arc::new(Shared {
            cfg,
            datasets: RwLock::new(datasets),
            seq: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            stats: Mutex::new(SimStats::default()),
            attempts: Mutex::new(HashMap::new()),
            window: Mutex::new((std::time::Instant::now(), 0)),
        });
        let app = Router::new()
            .route("/jdop_front/interfaces/{dataset}/{endpoint}", any(handle))
            .route("/__sim/stats", get(stats_handler))
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Simulator {
            addr,
            shared,
            stop: Some(tx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/jdop_front`
    pub fn base_url(&self) -> String {
        format!("http://{}/jdop_front", self.addr)
    }

    pub fn secret(&self) -> &str {
        &self.shared.cfg.secret
    }

    pub fn stats(&self) -> SimStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn reset_stats(&self) {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()) = SimStats::default();
        self.shared
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn dataset(&self, id: &str) -> Option<DatasetSpec> {
        self.shared
            .datasets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Replaces (or adds) a dataset while serving: tests use it to change data.
    pub fn set_dataset(&self, spec: DatasetSpec) {
        self.shared
            .datasets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.id.clone(), spec);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn stats_handler(State(st): State<Arc<Shared>>) -> Response {
    let stats = st.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&stats).unwrap_or_default(),
    )
        .into_response()
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn envelope_fail(msg: &str) -> Response {
    json_response(format!(
        "{{\"status\":0,\"msg\":{},\"data\":null}}",
        serde_json::to_string(msg).unwrap_or_default()
    ))
}

fn json_response(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn html(status: StatusCode) -> Response {
    let body = format!(
        "<html><head><title>{0}</title></head><body><h1>{0}</h1><hr>nginx</body></html>",
        status
    );
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}

/// A response whose connection is closed before the body completes.
fn dropped() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped by the simulator"))
    });
    (
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// A fault roll in [0, 1) from the seed, the fault, the endpoint, the page and the
/// attempt: the same run replays the same faults whatever the timing.
fn roll(seed: u64, salt: u64, kind: u8, page: u64, attempt: u64) -> f64 {
    let h = data::mix(
        seed ^ data::mix(salt ^ data::mix(((kind as u64) << 56) ^ page ^ data::mix(attempt))),
    );
    (h >> 11) as f64 / (1u64 << 53) as f64
}

async fn handle(
    State(st): State<Arc<Shared>>,
    Path((dataset, endpoint)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let seq = st.seq.fetch_add(1, Ordering::SeqCst);
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&st);
    {
        let mut s = st.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.max_in_flight = s.max_in_flight.max(now);
    }
    let cfg = &st.cfg;

    let mut params: HashMap<String, String> = HashMap::new();
    if let Some(q) = query.as_deref() {
        params.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    params.extend(form_urlencoded::parse(&body).into_owned());

    let kind: u8 = match endpoint.as_str() {
        "get_total.do" => 0,
        "get_data.do" => 1,
        "get_dataupdate_date.do" => 2,
        _ => return html(StatusCode::NOT_FOUND),
    };
    let page_num = params.get("pageNum").and_then(|p| p.parse::<u64>().ok());
    let page_key = if kind == 1 { page_num.unwrap_or(0) } else { 0 };
    let attempt = {
        let mut a = st.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let n = a.entry((kind, page_key)).or_default();
        *n += 1;
        *n
    };
    let data_calls = {
        let mut s = st.stats.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            0 => s.total_calls += 1,
            1 => {
                s.data_calls += 1;
                if let Some(p) = page_num {
                    *s.pages.entry(p).or_default() += 1;
                }
            }
            _ => s.update_date_calls += 1,
        }
        s.data_calls
    };
    let count = |f: fn(&mut SimStats)| f(&mut st.stats.lock().unwrap_or_else(|e| e.into_inner()));

    // Throttling: too many in flight, or too many in this second.
    let over_rate = cfg.max_per_sec.is_some_and(|cap| {
        let mut w = st.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (std::time::Instant::now(), 0);
        }
        w.1 += 1;
        w.1 > cap
    });
    if cfg.max_in_flight.is_some_and(|cap| now > cap) || over_rate {
        count(|s| s.throttled += 1);
        return match cfg.throttle {
            Throttle::Http429 => (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (header::RETRY_AFTER, cfg.retry_after_secs.to_string()),
                    (header::CONTENT_TYPE, "text/html".to_string()),
                ],
                "<html><body>429 Too Many Requests</body></html>",
            )
                .into_response(),
            Throttle::Status0 => envelope_fail(THROTTLE_MSG),
        };
    }

    let mut delay = cfg.latency;
    if !cfg.jitter.is_zero() {
        let j = data::mix(cfg.seed ^ seq.wrapping_mul(31)) % (cfg.jitter.as_micros() as u64 + 1);
        delay += Duration::from_micros(j);
    }
    let r = |salt: u64| roll(cfg.seed, salt, kind, page_key, attempt);
    if cfg.stall_rate > 0.0 && r(1) < cfg.stall_rate {
        count(|s| s.stalled += 1);
        delay += cfg.stall;
    }
    // The answer leaves `delay` after the request came in, whatever the time spent
    // building it (a server's own work is part of its response time).
    let deadline = tokio::time::Instant::now() + delay;
    // Counters of what the answer is (a fault, a rejection...) count answers
    // sent: applied after the wait, so a request the client gave up on during it
    // counts as stalled only, as before. The data is read at arrival (a change
    // of the dataset, `mutate_after`, happens when the N-th call comes in).
    let answered = std::sync::Mutex::new(Vec::<fn(&mut SimStats)>::new());
    let count = |f: fn(&mut SimStats)| answered.lock().unwrap_or_else(|e| e.into_inner()).push(f);
    let response = async {
        if cfg.error_rate > 0.0 && r(2) < cfg.error_rate {
            count(|s| s.http_errors += 1);
            let status = [
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::BAD_GATEWAY,
                StatusCode::GATEWAY_TIMEOUT,
            ][(r(3) * 3.0) as usize % 3];
            return html(status);
        }
        if cfg.drop_rate > 0.0 && r(4) < cfg.drop_rate {
            count(|s| s.dropped += 1);
            return dropped();
        }
        if cfg.redirect_rate > 0.0 && r(5) < cfg.redirect_rate {
            count(|s| s.redirected += 1);
            return (
                StatusCode::FOUND,
                [
                    (header::LOCATION, "/jdop_front/login.do"),
                    (header::CONTENT_TYPE, "text/html"),
                ],
                "<html><body>请先登录</body></html>",
            )
                .into_response();
        }
        let truncate = cfg.truncate_rate > 0.0 && r(6) < cfg.truncate_rate;

        if params.get("appsecret").map(String::as_str) != Some(cfg.secret.as_str()) {
            count(|s| s.rejected += 1);
            return envelope_fail("appsecret无效或已过期，请检查应用的appsecret");
        }
        if kind == 1 && cfg.mutate_after == Some(data_calls) && cfg.mutate_rows > 0 {
            let mut sets = st.datasets.write().unwrap_or_else(|e| e.into_inner());
            if let Some(spec) = sets.get_mut(&dataset) {
                spec.front += cfg.mutate_rows;
                spec.rows += cfg.mutate_rows;
                spec.updated += chrono::Duration::days(1);
                count(|s| s.mutations += 1);
            }
        }
        let Some(spec) = st
            .datasets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dataset)
            .cloned()
        else {
            count(|s| s.rejected += 1);
            return envelope_fail("接口不存在或未申请该接口权限");
        };

        let mut out = match kind {
            0 => format!(
                "{{\"status\":1,\"msg\":\"查询成功\",\"data\":{}}}",
                spec.rows
            ),
            2 => format!(
                "{{\"status\":1,\"msg\":\"查询成功\",\"data\":{}}}",
                spec.update_date_json()
            ),
            _ => {
                let (Some(num), Some(size)) = (
                    page_num,
                    params.get("pageSize").and_then(|p| p.parse::<u64>().ok()),
                ) else {
                    count(|s| s.rejected += 1);
                    return envelope_fail("参数错误：pageNum和pageSize为必填的正整数");
                };
                if num == 0 || size == 0 {
                    count(|s| s.rejected += 1);
                    return envelope_fail("参数错误：pageNum和pageSize为必填的正整数");
                }
                if cfg.fail_pages.contains(&num) {
                    return match cfg.fail_mode {
                        FailMode::Status0 => {
                            count(|s| s.rejected += 1);
                            envelope_fail(FAIL_MSG)
                        }
                        FailMode::Http500 => {
                            count(|s| s.http_errors += 1);
                            html(StatusCode::INTERNAL_SERVER_ERROR)
                        }
                    };
                }
                let size = if size > 200 {
                    match cfg.oversize {
                        Oversize::Error => {
                            count(|s| s.rejected += 1);
                            return envelope_fail("每页条数不能超过200");
                        }
                        Oversize::Clamp => 200,
                    }
                } else {
                    size
                };
                let pages = spec.rows.div_ceil(size);
                let num = if num > pages && cfg.past_end == PastEnd::LastPage && pages > 0 {
                    pages
                } else {
                    num
                };
                let start = (num - 1).saturating_mul(size);
                let end = (start + size).min(spec.rows);
                let mut out =
                    String::with_capacity((end.saturating_sub(start) as usize) * 900 + 64);
                out.push_str("{\"status\":1,\"msg\":\"查询成功\",\"data\":[");
                for i in start..end {
                    if i > start {
                        out.push(',');
                    }
                    spec.write_record(i, &mut out);
                }
                out.push_str("]}");
                out
            }
        };
        if truncate {
            count(|s| s.truncated += 1);
            let mut cut = out.len() / 2;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
        json_response(out)
    }
    .await;
    if !delay.is_zero() {
        tokio::time::sleep_until(deadline).await;
    }
    let mut stats = st.stats.lock().unwrap_or_else(|e| e.into_inner());
    for f in answered.into_inner().unwrap_or_else(|e| e.into_inner()) {
        f(&mut stats);
    }
    response
}

/// The message of a `--fail-page` in `status0` mode: a terminal platform error.
pub const FAIL_MSG: &str = "查询失败：数据源连接异常";
