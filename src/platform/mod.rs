//! The platform's classic interface: dataset ids and targets, the appsecret,
//! the three endpoints over GET or POST, and the `{status, msg, data}` envelope.
//!
//! Classification of failures (transient or terminal) lives in
//! [`crate::error::CallError::is_transient`]; this module only reports what happened.
//! The secret is sent in the POST form by default so it never appears in a URL, and
//! every text that could echo it (platform messages, transport errors) is redacted here.

mod envelope;
pub mod records;

pub use envelope::{
    object_entries, parse_date_text, parse_envelope, parse_page, parse_total, split_records,
    Envelope, PageRecords, RawRecord, UpdateDate,
};

use std::fmt;
use std::time::Duration;

use reqwest::Url;

use crate::error::{CallError, Error, Op, Result};

/// The platform's maximum page size, stated in its manual.
pub const MAX_PAGE_SIZE: u32 = 200;

/// A dataset id such as `cata_3820`. Only ASCII letters, digits, `_` and `-` are
/// allowed, at most 64 characters and not starting with `-`, so an id can be used as
/// a path segment and a URL segment without escaping and can never climb out of a folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetId(String);

impl DatasetId {
    /// Accepts `cata_3820`, `3820` (taken as `cata_3820`) and other safe ids.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(DatasetId(format!("cata_{s}")));
        }
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(DatasetId(s.to_string()))
        } else {
            Err(Error::usage(format!(
                "invalid dataset id `{}`: expected `cata_N`, `N` or an interface URL (letters, digits, `_` and `-`, at most 64 characters)",
                s.escape_debug()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The user's appsecret. `Debug` and `Display` never print it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into().trim().to_string();
        if s.is_empty() {
            return Err(Error::usage("the appsecret is empty"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(Error::usage("the appsecret contains control characters"));
        }
        Ok(Secret(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces the secret, and its URL-encoded form, by `***` in any text.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.replace(&self.0, "***");
        let encoded: String = form_urlencoded::byte_serialize(self.0.as_bytes()).collect();
        if encoded != self.0 {
            out = out.replace(&encoded, "***");
        }
        out
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How parameters are sent. POST keeps the secret out of URLs, proxies' logs and
/// shell history; GET exists because some deployments only answer GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Post,
    Get,
}

/// Where a dataset lives: the `.../jdop_front` base URL and the dataset id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub base: Url,
    pub dataset: DatasetId,
}

impl Target {
    /// Builds a target from what the user typed: an id plus a base URL, or a pasted
    /// interface URL such as `http://host/jdop_front/interfaces/cata_3820/get_data.do`
    /// (any query string, which may hold an appsecret, is dropped).
    pub fn parse(dataset_or_url: &str, base_url: Option<&str>) -> Result<Target> {
        let s = dataset_or_url.trim();
        if s.starts_with("http://") || s.starts_with("https://") {
            let url =
                Url::parse(s).map_err(|e| Error::usage(format!("invalid interface URL: {e}")))?;
            let path = url.path().to_string();
            let Some(pos) = path.find("/interfaces/") else {
                return Err(Error::usage(
                    "the URL does not look like an interface address: expected `.../interfaces/cata_N/get_data.do`",
                ));
            };
            let rest = &path[pos + "/interfaces/".len()..];
            let id = rest.split('/').next().unwrap_or("");
            let dataset = DatasetId::parse(id)?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err(Error::usage(
                    "the interface URL must not carry credentials: pass the appsecret with JDOP_APPSECRET or --appsecret-file",
                ));
            }
            let mut base = url.clone();
            base.set_query(None);
            base.set_fragment(None);
            base.set_path(&path[..pos]);
            // A pasted interface URL carries its own base: it wins over
            // --base-url / JDOP_BASE_URL (which may be set for other datasets).
            let _ = base_url;
            return Ok(Target { base, dataset });
        }
        let dataset = DatasetId::parse(s)?;
        let Some(b) = base_url else {
            return Err(Error::usage(format!(
                "no base URL for `{dataset}`: pass `--base-url http://HOST/jdop_front` (or set JDOP_BASE_URL), or paste the interface URL"
            )));
        };
        Ok(Target {
            base: parse_base(b)?,
            dataset,
        })
    }

    /// The endpoint URL, without any parameter (safe to print).
    pub fn endpoint(&self, op: Op) -> Url {
        let mut url = self.base.clone();
        let path = format!(
            "{}/interfaces/{}/{}",
            self.base.path().trim_end_matches('/'),
            self.dataset,
            op.endpoint()
        );
        url.set_path(&path);
        url
    }
}

/// Parses a base URL such as `http://data.zjzwfw.gov.cn/jdop_front`.
pub fn parse_base(s: &str) -> Result<Url> {
    let mut url = Url::parse(s.trim())
        .map_err(|e| Error::usage(format!("invalid base URL `{}`: {e}", s.trim())))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(Error::usage(format!(
            "invalid base URL `{url}`: only http and https are supported"
        )));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(Error::usage(
            "the base URL must not carry a query string or credentials: pass the appsecret with JDOP_APPSECRET or --appsecret-file",
        ));
    }
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

/// Client settings shared by every call.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub method: Method,
    /// Per-request timeout (connect + response).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            method: Method::Post,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            user_agent: format!("jdop/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The HTTP client for one target. Cheap to clone (reqwest pools connections).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    target: Target,
    secret: Secret,
    method: Method,
    timeout: Duration,
}

/// Installs the ring crypto provider for rustls once per process.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Client {
    pub fn new(target: Target, secret: Secret, cfg: &ClientConfig) -> Result<Client> {
        install_crypto();
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .user_agent(cfg.user_agent.clone())
            // A redirect on this API leads to a login or error page, never to data.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            target,
            secret,
            method: cfg.method,
            timeout: cfg.timeout,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// One call, no retry: returns the body of a successful (`status: 1`) envelope
    /// after checking it is one. `page` is `(pageNum, pageSize)` for `get_data.do`.
    pub async fn call_raw(&self, op: Op, page: Option<(u64, u32)>) -> Result<Vec<u8>, CallError> {
        let url = self.target.endpoint(op);
        let mut params: Vec<(&str, String)> = vec![("appsecret", self.secret.expose().to_string())];
        if let Some((num, size)) = page {
            params.push(("pageNum", num.to_string()));
            params.push(("pageSize", size.to_string()));
        }
        let req = match self.method {
            Method::Post => self.http.post(url).form(&params),
            Method::Get => self.http.get(url).query(&params),
        };
        let resp = req.send().await.map_err(|e| self.classify(e))?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            return Err(CallError::Redirect {
                status: status.as_u16(),
                location: self.secret.redact(&location),
            });
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(600)));
        let body = resp.bytes().await.map_err(|e| self.classify(e))?;
        if status.as_u16() == 429 {
            return Err(CallError::Throttled {
                detail: "HTTP 429".into(),
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(CallError::HttpStatus {
                status: status.as_u16(),
                snippet: self.secret.redact(&snippet(&body)),
            });
        }
        Ok(body.to_vec())
    }

    /// Maps a reqwest error to a classified error whose text holds no URL (a GET URL
    /// carries the secret) and no secret.
    fn classify(&self, e: reqwest::Error) -> CallError {
        let timeout = e.is_timeout();
        let connect = e.is_connect();
        let text = self.secret.redact(&chain_text(&e.without_url()));
        if timeout {
            CallError::Timeout(self.timeout)
        } else if connect {
            CallError::Connect(text)
        } else {
            CallError::Transport(text)
        }
    }

    /// Checks the envelope and returns the redacted message of a `status: 0` answer.
    pub fn check(&self, body: &[u8]) -> Result<(), CallError> {
        parse_envelope(body)
            .map(|_| ())
            .map_err(|e| self.redact_err(e))
    }

    pub fn redact_err(&self, e: CallError) -> CallError {
        match e {
            CallError::Rejected { status, msg } if is_throttle_message(&msg) => {
                CallError::Throttled {
                    detail: format!("status {status}: {}", self.secret.redact(&msg)),
                    retry_after: None,
                }
            }
            CallError::Rejected { status, msg } => CallError::Rejected {
                status,
                msg: self.secret.redact(&msg),
            },
            CallError::NotEnvelope { reason, snippet } => CallError::NotEnvelope {
                reason,
                snippet: self.secret.redact(&snippet),
            },
            CallError::BadData(s) => CallError::BadData(self.secret.redact(&s)),
            other => other,
        }
    }
}

/// Whether a `status: 0` message says "too many requests" rather than "no".
/// The platform's wording is unknown; these are the usual Chinese and English ones.
pub fn is_throttle_message(msg: &str) -> bool {
    const WORDS: &[&str] = &[
        "频繁",
        "限流",
        "过于频繁",
        "请求过多",
        "访问过快",
        "次数超",
        "超过访问",
        "稍后再试",
        "繁忙",
        "too many",
        "rate limit",
        "throttl",
    ];
    let lower = msg.to_lowercase();
    WORDS.iter().any(|w| lower.contains(w))
}

/// The error and its sources on one line, as the final message of a call.
fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cur = s.source();
    }
    text
}

/// The first characters of a body, on one line, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(240)]);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(80)
        .collect();
    one_line.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_number_becomes_cata_id() {
        assert_eq!(DatasetId::parse("3820").unwrap().as_str(), "cata_3820");
        assert_eq!(DatasetId::parse("cata_3820").unwrap().as_str(), "cata_3820");
    }

    #[test]
    fn ids_that_could_escape_a_folder_are_rejected() {
        for bad in [
            "../x",
            "a/b",
            "",
            ".",
            "..",
            "a\0b",
            "-rf",
            &"x".repeat(65),
            "数据",
        ] {
            assert!(DatasetId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pasted_interface_url_gives_base_and_id() {
        let t = Target::parse(
            "http://data.zjzwfw.gov.cn/jdop_front/interfaces/cata_3820/get_data.do?pageNum=1&appsecret=abc",
            None,
        )
        .unwrap();
        assert_eq!(t.base.as_str(), "http://data.zjzwfw.gov.cn/jdop_front");
        assert_eq!(t.dataset.as_str(), "cata_3820");
        assert!(!t.base.as_str().contains("abc"));
        assert_eq!(
            t.endpoint(Op::Total).as_str(),
            "http://data.zjzwfw.gov.cn/jdop_front/interfaces/cata_3820/get_total.do"
        );
    }

    #[test]
    fn id_without_base_url_is_a_usage_error() {
        let e = Target::parse("cata_1", None).unwrap_err();
        assert!(e.to_string().contains("--base-url"), "{e}");
    }

    #[test]
    fn base_url_with_trailing_slash_is_normalised() {
        let t = Target::parse("cata_1", Some("http://127.0.0.1:9/jdop_front/")).unwrap();
        assert_eq!(
            t.endpoint(Op::Data).as_str(),
            "http://127.0.0.1:9/jdop_front/interfaces/cata_1/get_data.do"
        );
    }

    #[test]
    fn base_url_with_query_is_refused() {
        assert!(parse_base("http://h/jdop_front?appsecret=x").is_err());
    }

    #[test]
    fn secret_is_redacted_plain_and_url_encoded() {
        let s = Secret::new("a b+c/秘").unwrap();
        let enc: String = form_urlencoded::byte_serialize("a b+c/秘".as_bytes()).collect();
        let text = format!("x a b+c/秘 y {enc} z");
        let red = s.redact(&text);
        assert!(!red.contains("a b+c/秘") && !red.contains(&enc), "{red}");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }
}
