//! The `{status, msg, data}` envelope, the records of a page and the update date.
//!
//! Records are read as ordered lists of `(key, raw JSON value)` so that key order
//! is the order in the page whatever serde_json's `preserve_order` feature says, and
//! numbers keep their exact text (no float round trip before we decide a type).

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{CallError, PageError};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A parsed envelope; `data` is borrowed raw JSON.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub msg: Option<String>,
    pub data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    status: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    msg: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// `Some` for any value that is present, `null` included (a missing field is
/// `None` through `default`): `"data": null` and no `data` are different answers.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Parses the envelope of any endpoint. `status` may be `1` or `"1"`; anything else
/// is a rejection carrying the platform's `msg`.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, CallError> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    let not_envelope = |reason: String| CallError::NotEnvelope {
        reason,
        snippet: super::snippet(body),
    };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(not_envelope("empty body".into()));
    }
    if nesting_exceeds(body, MAX_NESTING) {
        // serde_json would recurse once per level while skipping the value:
        // refuse before parsing rather than overflow the stack.
        return Err(CallError::BadData(format!(
            "JSON nested deeper than {MAX_NESTING} levels"
        )));
    }
    // One UTF-8 check of the whole body; serde_json then reads it as `str` and
    // does not check every string (and raw value) again.
    let text = super::records::utf8(body).map_err(|_| {
        let e = std::str::from_utf8(body).expect_err("simdutf8 and std agree");
        not_envelope(format!("invalid JSON: the body is not UTF-8 ({e})"))
    })?;
    let raw: RawEnvelope<'_> = serde_json::from_str(text).map_err(|e| {
        let reason = if e.is_eof() {
            "truncated JSON".to_string()
        } else {
            format!("invalid JSON: {e}")
        };
        not_envelope(reason)
    })?;
    let Some(status) = raw.status else {
        return Err(not_envelope("no `status` field".into()));
    };
    let msg = raw.msg.and_then(
        |m| match serde_json::from_str::<serde_json::Value>(m.get()) {
            Ok(serde_json::Value::String(s)) => Some(s),
            Ok(serde_json::Value::Null) | Err(_) => None,
            Ok(other) => Some(other.to_string()),
        },
    );
    let status_text = match serde_json::from_str::<serde_json::Value>(status.get()) {
        Ok(serde_json::Value::String(s)) => s.trim().to_string(),
        Ok(v) => v.to_string(),
        Err(_) => status.get().to_string(),
    };
    if status_text != "1" {
        return Err(CallError::Rejected {
            status: status_text,
            msg: msg.unwrap_or_else(|| "(no message)".into()),
        });
    }
    Ok(Envelope {
        msg,
        data: raw.data,
    })
}

/// The deepest nesting of arrays and objects accepted in a response.
pub const MAX_NESTING: usize = 128;

/// Whether arrays/objects nest deeper than `limit` (brackets inside strings ignored).
/// String contents are skipped with `memchr` (most of a page is strings).
fn nesting_exceeds(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // Skip to the closing quote, stepping over escapes.
                i += 1;
                loop {
                    if i >= body.len() {
                        return false;
                    }
                    match memchr::memchr2(b'"', b'\\', &body[i..]) {
                        None => return false,
                        Some(k) if body[i + k] == b'\\' => i += k + 2,
                        Some(k) => {
                            i += k;
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Returns the JSON text of the page's record array. `data: null` is an empty page;
/// `data` as a string holding a JSON array (gateway style) is unwrapped.
pub fn parse_page(body: &[u8]) -> Result<Cow<'_, str>, CallError> {
    // The plain case in one pass (a page is read on the thread that drives the
    // requests); anything else by serde_json, which also explains what is wrong.
    let plain = body.strip_prefix(BOM).unwrap_or(body);
    if let Some(array) = super::records::utf8(plain)
        .ok()
        .and_then(super::records::page_array)
    {
        return Ok(Cow::Borrowed(array));
    }
    parse_page_serde(body)
}

fn parse_page_serde(body: &[u8]) -> Result<Cow<'_, str>, CallError> {
    let env = parse_envelope(body)?;
    let Some(data) = env.data else {
        return Err(CallError::BadData("no `data` field".into()));
    };
    let text = data.get().trim_start();
    match text.as_bytes().first() {
        Some(b'[') => Ok(Cow::Borrowed(data.get())),
        Some(b'n') => Ok(Cow::Borrowed("[]")),
        Some(b'"') => {
            let inner: String = serde_json::from_str(text)
                .map_err(|e| CallError::BadData(format!("`data` string is not valid: {e}")))?;
            if inner.trim_start().starts_with('[') {
                Ok(Cow::Owned(inner))
            } else {
                Err(CallError::BadData(
                    "`data` is a string, expected an array of records".into(),
                ))
            }
        }
        Some(b'{') => Err(CallError::BadData(
            "`data` is an object, expected an array of records".into(),
        )),
        _ => Err(CallError::BadData(format!(
            "`data` is `{}`, expected an array of records",
            super::snippet(text.as_bytes())
        ))),
    }
}

/// Parses the `data` of `get_total.do`: a non-negative integer, or such an integer
/// as a string.
pub fn parse_total(body: &[u8]) -> Result<u64, CallError> {
    let env = parse_envelope(body)?;
    let Some(data) = env.data else {
        return Err(CallError::BadData("no `data` field in the total".into()));
    };
    let text = data.get().trim();
    let digits = text.trim_matches('"').trim();
    digits.parse::<u64>().map_err(|_| {
        CallError::BadData(format!(
            "the total `{}` is not a non-negative integer",
            super::snippet(text.as_bytes())
        ))
    })
}

/// One record: keys in page order with their raw values' JSON text.
pub type RawRecord<'a> = Vec<super::records::Entry<'a>>;

/// The records of one page.
pub type PageRecords<'a> = Vec<RawRecord<'a>>;

struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object read as an ordered list of entries.
pub struct Ordered<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Ordered<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push((k.0, v));
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// Splits a record array into ordered records, with the one-pass reader of
/// [`super::records`]; a page it refuses is read by serde_json for the exact error
/// (and a second time to say which record is not an object).
pub fn split_records(array: &str) -> Result<PageRecords<'_>, PageError> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    if super::records::scan(array, &mut buf, |r| {
        out.push(r.to_vec());
        true
    })
    .is_ok()
    {
        return Ok(out);
    }
    if let Ok(records) = serde_json::from_str::<Vec<Ordered<'_>>>(array) {
        return Ok(records.into_iter().map(|o| flat(o.0)).collect());
    }
    let items: Vec<&RawValue> = serde_json::from_str(array)?;
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        if !item.get().starts_with('{') {
            return Err(PageError::NotAnObject { index });
        }
        let Ordered(rec) = serde_json::from_str(item.get())?;
        out.push(flat(rec));
    }
    Ok(out)
}

fn flat<'a>(rec: Vec<(Cow<'a, str>, &'a RawValue)>) -> RawRecord<'a> {
    rec.into_iter().map(|(k, v)| (k, v.get())).collect()
}

/// Reads an object value's entries in order (used for nested objects).
pub fn object_entries(raw: &str) -> Result<RawRecord<'_>, serde_json::Error> {
    serde_json::from_str::<Ordered<'_>>(raw).map(|o| flat(o.0))
}

/// The dataset's update date as answered by `get_dataupdate_date.do`: the raw JSON
/// value is kept; `iso` is the parsed value in ISO 8601 when the format is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateDate {
    pub raw: serde_json::Value,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.fff]` (platform local time, UTC+8, for
    /// epoch milliseconds), `None` when the value could not be read as a date.
    pub iso: Option<String>,
    /// The calendar date part of `iso`.
    pub date: Option<String>,
}

impl UpdateDate {
    pub fn from_body(body: &[u8]) -> Result<UpdateDate, CallError> {
        let env = parse_envelope(body)?;
        let raw = match env.data {
            Some(d) => serde_json::from_str(d.get())
                .map_err(|e| CallError::BadData(format!("update date: {e}")))?,
            None => serde_json::Value::Null,
        };
        Ok(UpdateDate::from_value(raw))
    }

    pub fn from_value(raw: serde_json::Value) -> UpdateDate {
        let iso = match &raw {
            serde_json::Value::String(s) => parse_date_text(s),
            serde_json::Value::Number(n) => n.as_i64().and_then(epoch_ms_to_iso),
            _ => None,
        };
        let date = iso.as_ref().map(|s| s[..10].to_string());
        UpdateDate { raw, iso, date }
    }
}

fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

fn epoch_ms_to_iso(ms: i64) -> Option<String> {
    // Plausible epoch milliseconds only (1990..2100), not a small integer.
    if !(631_152_000_000..4_102_444_800_000).contains(&ms) {
        return None;
    }
    let dt = DateTime::from_timestamp_millis(ms)?.with_timezone(&shanghai());
    Some(format_naive(dt.naive_local()))
}

fn format_naive(dt: NaiveDateTime) -> String {
    if dt.and_utc().timestamp_subsec_millis() == 0 {
        dt.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    }
}

/// Accepts `yyyy-MM-dd`, `yyyy/MM/dd`, `yyyyMMdd`, `yyyy-MM-dd HH:mm[:ss[.SSS]]`
/// (space or `T`), `2023年01月05日` and epoch milliseconds written as a string.
pub fn parse_date_text(s: &str) -> Option<String> {
    let s = s.trim();
    if s.len() == 13 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().and_then(epoch_ms_to_iso);
    }
    for fmt in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y年%m月%d日"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, fmt) {
            return Some(d.format("%Y-%m-%d").to_string());
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y/%m/%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(format_naive(dt));
        }
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|dt| format_naive(dt.with_timezone(&shanghai()).naive_local()))
}

#[cfg(test)]
mod nesting_tests {
    use super::*;

    #[test]
    fn brackets_in_strings_and_escapes_do_not_count() {
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(nesting_exceeds(deep.as_bytes(), 128));
        let quoted = format!(r#"["{}\"{}"]"#, "[".repeat(200), "{".repeat(200));
        assert!(!nesting_exceeds(quoted.as_bytes(), 128));
        assert!(!nesting_exceeds(br#"["a\\"]"#, 1));
        assert!(!nesting_exceeds(br#"["unterminated\"#, 1));
        assert!(!nesting_exceeds(br#"""#, 1));
        let after_escape = format!(r#"["\\"{}"#, "[".repeat(5));
        assert!(nesting_exceeds(after_escape.as_bytes(), 3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_as_string_is_accepted() {
        let b = br#"{"status":"1","msg":"ok","data":5}"#;
        assert_eq!(parse_total(b).unwrap(), 5);
    }

    #[test]
    fn status_zero_carries_the_message() {
        let b = r#"{"status":0,"msg":"appsecret错误","data":null}"#;
        match parse_envelope(b.as_bytes()) {
            Err(CallError::Rejected { msg, .. }) => assert_eq!(msg, "appsecret错误"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn html_is_not_an_envelope_and_is_transient() {
        let e = parse_envelope(b"<html><body>502 Bad Gateway</body></html>").unwrap_err();
        assert!(e.is_transient());
        assert!(e.to_string().contains("<html>"), "{e}");
    }

    #[test]
    fn truncated_json_is_named() {
        let e = parse_envelope(br#"{"status":1,"data":[{"a":1"#).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn one_pass_page_reading_agrees_with_serde_json() {
        let bodies = [
            r#"{"status":1,"msg":"ok","data":[{"a":1},{"b":"x"}]}"#,
            r#" { "data" : [ ] , "status" : "1" } "#,
            r#"{"status":"1","data":[{"a":{"n":[1,2]}}],"extra":{"k":[true,null]}}"#,
            r#"{"data":[{"a":1}],"status":1,"msg":null}"#,
            r#"{"status":1,"data":[{"a":1}],"status":0}"#,
            r#"{"status":0,"msg":"无权限","data":[]}"#,
            r#"{"status":" 1","data":[{"a":1}]}"#,
            r#"{"status":1.0,"data":[]}"#,
            r#"{"status":1,"data":null}"#,
            r#"{"status":1,"data":"[{"a":1}]"}"#,
            r#"{"status":1,"data":[{"a":1}]} x"#,
            r#"{"status":1,"data":[{"a":01}]}"#,
            r#"{"status":1,"data":[1,2]}"#,
            r#"{"status":1,"data":[{"a":1}]"#,
            r#"{"status":1}"#,
            r#"{"msg":"x","data":[]}"#,
            r#"{"status":1,"data":[]}"#,
        ];
        for body in bodies {
            let fast = super::super::records::page_array(body);
            let slow = parse_page_serde(body.as_bytes());
            match (fast, &slow) {
                (Some(a), Ok(b)) => assert_eq!(a, b.as_ref(), "{body}"),
                (Some(a), Err(e)) => panic!("{body}: one pass read {a}, serde_json: {e}"),
                (None, _) => {}
            }
            // Whatever path it takes, parse_page answers as serde_json does.
            assert_eq!(
                parse_page(body.as_bytes()).map_err(|e| e.to_string()),
                slow.map_err(|e| e.to_string()),
                "{body}"
            );
        }
        assert!(super::super::records::page_array(bodies[0]).is_some());
        assert!(super::super::records::page_array(bodies[1]).is_some());
    }

    #[test]
    fn bom_is_skipped() {
        let mut b = BOM.to_vec();
        b.extend_from_slice(br#"{"status":1,"data":[]}"#);
        assert_eq!(parse_page(&b).unwrap(), "[]");
    }

    #[test]
    fn data_as_json_string_is_unwrapped() {
        let b = br#"{"status":1,"data":"[{\"a\":1}]"}"#;
        let arr = parse_page(b).unwrap();
        assert_eq!(split_records(&arr).unwrap().len(), 1);
    }

    #[test]
    fn record_keys_keep_page_order() {
        let recs = split_records(r#"[{"z":1,"a":"x","中文":null,"M":{"b":1,"a":2}}]"#).unwrap();
        let keys: Vec<&str> = recs[0].iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["z", "a", "中文", "M"]);
        let nested = object_entries(recs[0][3].1).unwrap();
        assert_eq!(nested[0].0, "b");
    }

    #[test]
    fn escaped_keys_are_unescaped() {
        let recs = split_records(r#"[{"a\"b":1,"\u5730\u5e02":2}]"#).unwrap();
        assert_eq!(recs[0][0].0, "a\"b");
        assert_eq!(recs[0][1].0, "地市");
    }

    #[test]
    fn records_that_are_not_objects_are_an_error() {
        assert!(matches!(
            split_records("[{},1]"),
            Err(PageError::NotAnObject { index: 1 })
        ));
    }

    #[test]
    fn update_date_formats() {
        let cases = [
            (serde_json::json!("2022-06-08"), "2022-06-08"),
            (
                serde_json::json!("2022-08-29 15:44:46.000"),
                "2022-08-29T15:44:46",
            ),
            (
                serde_json::json!("2019-09-09 10:25:00"),
                "2019-09-09T10:25:00",
            ),
            (serde_json::json!("2023年01月05日"), "2023-01-05"),
            (serde_json::json!(1661759086000i64), "2022-08-29T15:44:46"),
            (
                serde_json::json!("1661759086123"),
                "2022-08-29T15:44:46.123",
            ),
        ];
        for (raw, iso) in cases {
            let d = UpdateDate::from_value(raw.clone());
            assert_eq!(d.iso.as_deref(), Some(iso), "{raw}");
            assert_eq!(d.date.as_deref(), Some(&iso[..10]));
        }
        assert_eq!(UpdateDate::from_value(serde_json::json!("soon")).iso, None);
    }
}
