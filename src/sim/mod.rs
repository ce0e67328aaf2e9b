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
    /// Fraction of calls answered with HTTP 500 + HTML, decided from the seed and
    /// the call's sequence number.
    pub error_rate: f64,
    pub seed: u64,
}

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

fn html_500() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><head><title>500 Internal Server Error</title></head><body><h1>500 Internal Server Error</h1><hr>nginx</body></html>",
    )
        .into_response()
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
    let mut delay = cfg.latency;
    if !cfg.jitter.is_zero() {
        let j = data::mix(cfg.seed ^ seq.wrapping_mul(31)) % (cfg.jitter.as_micros() as u64 + 1);
        delay += Duration::from_micros(j);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut params: HashMap<String, String> = HashMap::new();
    if let Some(q) = query.as_deref() {
        params.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    params.extend(form_urlencoded::parse(&body).into_owned());

    let kind = match endpoint.as_str() {
        "get_total.do" => 0,
        "get_data.do" => 1,
        "get_dataupdate_date.do" => 2,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>404 Not Found</body></html>",
            )
                .into_response()
        }
    };
    let page_num = params.get("pageNum").and_then(|p| p.parse::<u64>().ok());
    {
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
    }
    let reject = |msg: &str| {
        st.stats.lock().unwrap_or_else(|e| e.into_inner()).rejected += 1;
        envelope_fail(msg)
    };
    let http_error = || {
        st.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .http_errors += 1;
        html_500()
    };

    if cfg.error_rate > 0.0 {
        let roll = (data::mix(cfg.seed.wrapping_add(seq)) % 1_000_000) as f64 / 1_000_000.0;
        if roll < cfg.error_rate {
            return http_error();
        }
    }
    if params.get("appsecret").map(String::as_str) != Some(cfg.secret.as_str()) {
        return reject("appsecret无效或已过期，请检查应用的appsecret");
    }
    let Some(spec) = st
        .datasets
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&dataset)
        .cloned()
    else {
        return reject("接口不存在或未申请该接口权限");
    };

    match kind {
        0 => json_response(format!(
            "{{\"status\":1,\"msg\":\"查询成功\",\"data\":{}}}",
            spec.rows
        )),
        2 => json_response(format!(
            "{{\"status\":1,\"msg\":\"查询成功\",\"data\":{}}}",
            spec.update_date_json()
        )),
        _ => {
            let (Some(num), Some(size)) = (
                page_num,
                params.get("pageSize").and_then(|p| p.parse::<u64>().ok()),
            ) else {
                return reject("参数错误：pageNum和pageSize为必填的正整数");
            };
            if num == 0 || size == 0 {
                return reject("参数错误：pageNum和pageSize为必填的正整数");
            }
            if cfg.fail_pages.contains(&num) {
                return match cfg.fail_mode {
                    FailMode::Status0 => reject("系统繁忙，请稍后再试"),
                    FailMode::Http500 => http_error(),
                };
            }
            let size = if size > 200 {
                match cfg.oversize {
                    Oversize::Error => return reject("每页条数不能超过200"),
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
            let mut out = String::with_capacity(((end.saturating_sub(start)) as usize) * 900 + 64);
            out.push_str("{\"status\":1,\"msg\":\"查询成功\",\"data\":[");
            for i in start..end {
                if i > start {
                    out.push(',');
                }
                spec.write_record(i, &mut out);
            }
            out.push_str("]}");
            json_response(out)
        }
    }
}
