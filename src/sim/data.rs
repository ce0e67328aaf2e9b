//! Seeded, deterministic datasets for the simulator. A record is a pure function of
//! `(seed, index)`, so a dataset of any size costs no memory and every test can ask
//! for the exact records the simulator served.
//!
//! Records are built as JSON text with a deliberate key order (not sorted), the way
//! a Java back end writes them.

use std::fmt::Write;
use std::sync::Arc;

use chrono::{Duration as ChronoDuration, NaiveDate, NaiveDateTime};

use crate::error::{Error, Result};

/// How the back end types scalar values (unknown for the real platform).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typing {
    /// Every scalar is a string, as `Map<String, String>` back ends write them.
    Strings,
    /// Numbers are JSON numbers.
    Typed,
    /// Each value picks one of the two at random (seeded).
    Mixed,
}

/// The shape of the update date answered by `get_dataupdate_date.do`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFormat {
    Date,
    DateTime,
    DateTimeMs,
    EpochMs,
}

/// What kind of records a dataset holds.
#[derive(Debug, Clone)]
pub enum Shape {
    /// Enterprise penalty records (flat; codes, amounts, dates, sparse columns).
    Credit,
    /// Hydrology stations with nested objects and arrays, and shape conflicts.
    Nested,
    /// Records given as JSON texts (tests of exact schema rules).
    Fixed(Arc<Vec<String>>),
}

#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub id: String,
    pub rows: u64,
    pub shape: Shape,
    pub typing: Typing,
    pub date_format: DateFormat,
    pub seed: u64,
    /// The update date (served in `date_format`).
    pub updated: NaiveDateTime,
    /// Rows inserted at the front after the dataset was first served (a mutation):
    /// records `0..front` are new, record `front + i` is the original record `i`.
    pub front: u64,
}

impl DatasetSpec {
    pub fn credit(id: &str, rows: u64) -> DatasetSpec {
        DatasetSpec {
            id: id.to_string(),
            rows,
            shape: Shape::Credit,
            typing: Typing::Strings,
            date_format: DateFormat::DateTime,
            seed: 42,
            updated: NaiveDate::from_ymd_opt(2024, 5, 17)
                .and_then(|d| d.and_hms_opt(10, 25, 0))
                .expect("valid date"),
            front: 0,
        }
    }

    pub fn nested(id: &str, rows: u64) -> DatasetSpec {
        DatasetSpec {
            shape: Shape::Nested,
            typing: Typing::Typed,
            ..DatasetSpec::credit(id, rows)
        }
    }

    /// A dataset serving exactly these records (each a JSON object text).
    pub fn fixed(id: &str, records: Vec<String>) -> DatasetSpec {
        DatasetSpec {
            rows: records.len() as u64,
            shape: Shape::Fixed(Arc::new(records)),
            ..DatasetSpec::credit(id, 0)
        }
    }

    pub fn with_typing(mut self, typing: Typing) -> Self {
        self.typing = typing;
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn with_date_format(mut self, f: DateFormat) -> Self {
        self.date_format = f;
        self
    }

    /// Parses `ID[:key=value,...]` with keys `rows`, `shape` (`credit`, `nested`),
    /// `typing` (`strings`, `typed`, `mixed`), `date` (`date`, `datetime`,
    /// `datetime-ms`, `epoch-ms`), `seed`, `updated` (`YYYY-MM-DD`).
    pub fn parse(s: &str) -> Result<DatasetSpec> {
        let (id, opts) = s.split_once(':').unwrap_or((s, ""));
        let id = crate::platform::DatasetId::parse(id)?.to_string();
        let mut spec = DatasetSpec::credit(&id, 10_000);
        for kv in opts.split(',').filter(|x| !x.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Error::usage(format!("dataset option `{kv}` is not KEY=VALUE")))?;
            let bad = || Error::usage(format!("invalid value `{v}` for dataset option `{k}`"));
            match k {
                "rows" => spec.rows = v.replace('_', "").parse().map_err(|_| bad())?,
                "seed" => spec.seed = v.parse().map_err(|_| bad())?,
                "shape" | "kind" => {
                    spec.shape = match v {
                        "credit" => Shape::Credit,
                        "nested" => Shape::Nested,
                        _ => return Err(bad()),
                    }
                }
                "typing" => {
                    spec.typing = match v {
                        "strings" => Typing::Strings,
                        "typed" => Typing::Typed,
                        "mixed" => Typing::Mixed,
                        _ => return Err(bad()),
                    }
                }
                "date" => {
                    spec.date_format = match v {
                        "date" => DateFormat::Date,
                        "datetime" => DateFormat::DateTime,
                        "datetime-ms" => DateFormat::DateTimeMs,
                        "epoch-ms" => DateFormat::EpochMs,
                        _ => return Err(bad()),
                    }
                }
                "updated" => {
                    spec.updated = NaiveDate::parse_from_str(v, "%Y-%m-%d")
                        .map_err(|_| bad())?
                        .and_hms_opt(10, 25, 0)
                        .expect("valid time")
                }
                _ => {
                    return Err(Error::usage(format!(
                        "unknown dataset option `{k}` (rows, shape, typing, date, seed, updated)"
                    )))
                }
            }
        }
        Ok(spec)
    }

    /// The `data` JSON of `get_dataupdate_date.do`.
    pub fn update_date_json(&self) -> String {
        match self.date_format {
            DateFormat::Date => format!("\"{}\"", self.updated.format("%Y-%m-%d")),
            DateFormat::DateTime => format!("\"{}\"", self.updated.format("%Y-%m-%d %H:%M:%S")),
            DateFormat::DateTimeMs => {
                format!("\"{}\"", self.updated.format("%Y-%m-%d %H:%M:%S%.3f"))
            }
            DateFormat::EpochMs => {
                (self.updated.and_utc().timestamp_millis() - 8 * 3600 * 1000).to_string()
            }
        }
    }

    /// The JSON text of record `i` (0-based).
    pub fn record(&self, i: u64) -> String {
        let mut out = String::with_capacity(1024);
        self.write_record(i, &mut out);
        out
    }

    pub fn write_record(&self, i: u64, out: &mut String) {
        if i < self.front {
            // Inserted rows: another seed, ids after every original one.
            let inserted = DatasetSpec {
                seed: self.seed ^ 0x5EED_F00D,
                front: 0,
                ..self.clone()
            };
            return inserted.write_original(self.rows + i, out);
        }
        self.write_original(i - self.front, out)
    }

    fn write_original(&self, i: u64, out: &mut String) {
        match &self.shape {
            Shape::Credit => credit(self, i, out),
            Shape::Nested => nested(self, i, out),
            Shape::Fixed(recs) => out.push_str(&recs[(i as usize) % recs.len().max(1)]),
        }
    }

    /// The record as a `serde_json::Value` (for tests comparing by key).
    pub fn record_value(&self, i: u64) -> serde_json::Value {
        serde_json::from_str(&self.record(i)).expect("the simulator writes valid JSON")
    }
}

/// SplitMix64: a tiny, fast, well-distributed hash for seeded values.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A per-record random source.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, i: u64) -> Rng {
        Rng(mix(seed ^ mix(i)))
    }
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A JSON object written in order.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        json_str(self.out, k);
        self.out.push(':');
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        json_str(self.out, v);
    }
    fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.push_str(v);
    }
    /// A numeric value, typed or as a string according to `typing`.
    fn num(&mut self, k: &str, text: &str, typing: Typing, rng: &mut Rng) {
        let quoted = match typing {
            Typing::Strings => true,
            Typing::Typed => false,
            Typing::Mixed => rng.below(2) == 0,
        };
        if quoted {
            self.str(k, text)
        } else {
            self.raw(k, text)
        }
    }
    fn end(self) {
        self.out.push('}');
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const CITIES: &[&str] = &[
    "杭州市",
    "宁波市",
    "温州市",
    "嘉兴市",
    "湖州市",
    "绍兴市",
    "金华市",
    "衢州市",
    "舟山市",
    "台州市",
    "丽水市",
];
const WORDS: &[&str] = &[
    "华信",
    "东方",
    "恒达",
    "新材料",
    "建设",
    "电子",
    "纺织",
    "食品",
    "医药",
    "物流",
    "科技",
    "五金",
];
const SUFFIX: &[&str] = &["有限公司", "股份有限公司", "商行", "个体工商户"];
const FACTS: &[&str] = &[
    "未按规定公示年度报告",
    "生产销售不符合保障人体健康的国家标准的产品",
    "在产品中掺杂、掺假，以假充真，以次充好",
    "伪造产品的产地，伪造或者冒用他人的厂名、厂址",
    "未取得营业执照擅自从事经营活动",
    "使用未经检验的特种设备",
];
const RARE: &[&str] = &["𠀀", "𪚥", "𡈼", "🏭", "😀", "龘"];
const DEPTS: &[&str] = &["市场监督管理局", "综合行政执法局", "生态环境局"];

fn two(n: u64) -> String {
    format!("{n:02}")
}

fn credit(spec: &DatasetSpec, i: u64, out: &mut String) {
    let mut r = Rng::new(spec.seed, i);
    let t = spec.typing;
    let mut o = Obj::new(out);
    let mut buf = String::with_capacity(64);

    buf.clear();
    let _ = write!(buf, "{}", i + 1);
    o.num("ID", &buf, t, &mut r);

    let city = r.pick(CITIES);
    buf.clear();
    let _ = write!(
        buf,
        "{}{}{}",
        &city[..city.len() - 3],
        r.pick(WORDS),
        r.pick(SUFFIX)
    );
    if r.below(200) == 0 {
        buf.insert_str(0, r.pick(RARE));
    }
    o.str("ENTNAME", &buf);

    const ALNUM: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    buf.clear();
    buf.push_str("9133");
    for _ in 0..14 {
        buf.push(ALNUM[r.below(ALNUM.len() as u64) as usize] as char);
    }
    o.str("USCC", &buf);

    buf.clear();
    let _ = write!(buf, "{:015}", r.below(1_000_000_000_000_000) / 10);
    o.str("REGNO", &buf);

    buf.clear();
    let _ = write!(buf, "{:016x}{:016x}", r.next(), r.next());
    o.str("pripid", &buf);

    o.str("地市", city);

    buf.clear();
    let _ = write!(buf, "{:05}", r.below(3000));
    o.str("ORGCODE", &buf);

    // Amounts: whole numbers and decimals mixed (int + float in typed mode).
    buf.clear();
    let cents = r.below(5_000_000);
    if cents.is_multiple_of(3) {
        let _ = write!(buf, "{}", cents / 100);
    } else {
        let _ = write!(buf, "{}.{:02}", cents / 100, cents % 100);
    }
    o.num("PENAM", &buf, t, &mut r);

    // candate: date, with nulls as null, "" and missing.
    let day = NaiveDate::from_ymd_opt(2015, 1, 1).expect("valid")
        + ChronoDuration::days(r.below(3000) as i64);
    match r.below(20) {
        0 => o.raw("candate", "null"),
        1 => o.str("candate", ""),
        2 => {}
        _ => o.str("candate", &day.format("%Y-%m-%d").to_string()),
    }

    let secs = r.below(86_400);
    let dt = day
        .and_hms_opt(
            (secs / 3600) as u32,
            ((secs / 60) % 60) as u32,
            (secs % 60) as u32,
        )
        .expect("valid");
    let text = match r.below(100) {
        0 => dt.format("%Y-%m-%d").to_string(),
        1..=40 => dt.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        _ => dt.format("%Y-%m-%d %H:%M:%S").to_string(),
    };
    o.str("PENDECISSDATE", &text);

    buf.clear();
    let reps = 1 + r.below(12);
    for _ in 0..reps {
        buf.push_str(r.pick(FACTS));
        buf.push('；');
    }
    let _ = write!(
        buf,
        "依据《中华人民共和国产品质量法》第{}条处罚。",
        10 + r.below(60)
    );
    o.str("ILLEGFACT", &buf);

    buf.clear();
    let _ = write!(buf, "{}.{:06}", 118 + r.below(5), r.below(1_000_000));
    o.num("LNG", &buf, t, &mut r);
    buf.clear();
    let _ = write!(buf, "{}.{:06}", 27 + r.below(4), r.below(1_000_000));
    o.num("LAT", &buf, t, &mut r);

    // RAIN changes JSON type between blocks of records (and so between pages).
    buf.clear();
    let _ = write!(buf, "{}.{:02}", r.below(80), r.below(100));
    if (i / 1000) % 2 == 1 {
        o.str("RAIN", &buf);
    } else {
        o.raw("RAIN", &buf);
    }

    if r.below(33) == 0 {
        buf.clear();
        let _ = write!(
            buf,
            "备注: 当事人已整改, 罚款已缴纳 \"{}\"\n联系人: {}",
            r.pick(DEPTS),
            two(r.below(100))
        );
        o.str("REMARK", &buf);
    }

    buf.clear();
    let _ = write!(buf, "{}", 1_000_000 + i);
    o.num("dts_cmf_id", &buf, t, &mut r);
    o.str(
        "dts_cmf_create_time",
        &(dt + ChronoDuration::days(1))
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
    );
    o.num("dts_cmf_deleted", "0", t, &mut r);

    if r.below(2) == 0 {
        o.raw("ALLNULL", "null");
    }

    // A key only in the last tenth of the original rows (a late key).
    let base = spec.rows - spec.front;
    if base >= 10 && i >= base - base / 10 && i < base {
        o.str("LATECOL", r.pick(DEPTS));
    }
    o.end();
}

const STATIONS: &[&str] = &[
    "钱塘江闸口",
    "富春江水库",
    "新安江大坝",
    "瓯江温溪",
    "曹娥江上浦",
    "椒江三江口",
];

fn nested(spec: &DatasetSpec, i: u64, out: &mut String) {
    let mut r = Rng::new(spec.seed, i);
    let t = spec.typing;
    let mut o = Obj::new(out);
    let mut buf = String::with_capacity(256);

    buf.clear();
    let _ = write!(buf, "{:08}", 63_000_000 + r.below(1_000_000));
    o.str("STCD", &buf);
    o.str("STNM", r.pick(STATIONS));

    // Water level: ints and floats (Float64).
    buf.clear();
    if r.below(4) == 0 {
        let _ = write!(buf, "{}", r.below(30));
    } else {
        let _ = write!(buf, "{}.{:02}", r.below(30), r.below(100));
    }
    o.num("up_water_level", &buf, t, &mut r);

    if r.below(10) == 0 {
        o.raw("location", "null");
    } else {
        buf.clear();
        let _ = write!(
            buf,
            "{{\"lng\":{}.{:06},\"lat\":{}.{:06},\"addr\":\"浙江省{}\"}}",
            119 + r.below(3),
            r.below(1_000_000),
            28 + r.below(3),
            r.below(1_000_000),
            r.pick(CITIES)
        );
        o.raw("location", &buf);
    }

    buf.clear();
    buf.push('[');
    for k in 0..r.below(4) {
        if k > 0 {
            buf.push(',');
        }
        json_str(&mut buf, r.pick(&["水文", "雨量", "水位", "流量"]));
    }
    buf.push(']');
    o.raw("tags", &buf);

    buf.clear();
    buf.push('[');
    for k in 0..r.below(3) {
        if k > 0 {
            buf.push(',');
        }
        let q = if r.below(3) == 0 {
            "null".to_string()
        } else {
            format!("{}.{}", r.below(500), r.below(10))
        };
        let _ = write!(
            buf,
            "{{\"TM\":\"2022-08-29 {:02}:{:02}:00.000\",\"Z\":{}.{:02},\"Q\":{q}}}",
            r.below(24),
            r.below(60),
            r.below(30),
            r.below(100)
        );
    }
    buf.push(']');
    o.raw("readings", &buf);

    // A field whose shape conflicts: an object or a string (JSON text column).
    if r.below(2) == 0 {
        o.raw("extra", "{\"source\":\"自动站\",\"quality\":1}");
    } else {
        o.str("extra", "人工观测");
    }
    o.raw("meta", "{}");
    buf.clear();
    let _ = write!(buf, "{}", i.is_multiple_of(2));
    o.raw("online", &buf);
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_and_valid_json() {
        let a = DatasetSpec::credit("cata_1", 2000);
        let b = DatasetSpec::credit("cata_1", 2000);
        for i in [0, 1, 999, 1000, 1999] {
            assert_eq!(a.record(i), b.record(i));
            let v: serde_json::Value = serde_json::from_str(&a.record(i)).unwrap();
            assert!(v.is_object());
        }
        let n = DatasetSpec::nested("cata_2", 10);
        for i in 0..10 {
            let v: serde_json::Value = serde_json::from_str(&n.record(i)).unwrap();
            assert!(v["meta"].is_object());
        }
    }

    #[test]
    fn keys_come_in_declared_order_not_sorted() {
        let rec = DatasetSpec::credit("cata_1", 10).record(0);
        assert!(rec.starts_with("{\"ID\":"), "{rec}");
        assert!(rec.find("\"ENTNAME\"").unwrap() < rec.find("\"USCC\"").unwrap());
    }

    #[test]
    fn spec_parses_options() {
        let s = DatasetSpec::parse("cata_7:rows=1_000,typing=typed,date=epoch-ms,shape=nested")
            .unwrap();
        assert_eq!(s.id, "cata_7");
        assert_eq!(s.rows, 1000);
        assert_eq!(s.typing, Typing::Typed);
        assert!(matches!(s.shape, Shape::Nested));
        assert!(DatasetSpec::parse("cata_7:rows=x").is_err());
        assert!(DatasetSpec::parse("../x").is_err());
    }

    #[test]
    fn update_date_formats() {
        let s = DatasetSpec::credit("c", 1);
        assert_eq!(
            s.clone()
                .with_date_format(DateFormat::Date)
                .update_date_json(),
            "\"2024-05-17\""
        );
        assert_eq!(
            s.clone()
                .with_date_format(DateFormat::DateTimeMs)
                .update_date_json(),
            "\"2024-05-17 10:25:00.000\""
        );
        let ms = s.with_date_format(DateFormat::EpochMs).update_date_json();
        let d = crate::platform::UpdateDate::from_value(serde_json::from_str(&ms).unwrap());
        assert_eq!(d.iso.as_deref(), Some("2024-05-17T10:25:00"));
    }
}
