//! Lossless type detection for columns whose values arrive as text.
//!
//! The platform sends most values as strings (`"5000.00"`, `"2019-01-29"`,
//! `"01425"`). Every scalar value of a top-level column is observed (all pages, not a
//! sample) by a [`Detector`], which keeps the set of types that *every* non-empty
//! value converts to and prints back from exactly. Detectors of pages merge in any
//! order with the same result.
//!
//! # Rules (the name is what the manifest records as the column's `rule`)
//! - `bool-text`: every value is `true` or `false`.
//! - `int-text`: every value is a canonical integer (no `+`, no leading zero, no
//!   `-0`) of at most 15 digits, so it also survives any reader that goes through a
//!   float (2^53 is 16 digits) -> `Int64`.
//! - `digit-code`: integers only, but some have more than 15 digits (credit codes,
//!   ID numbers, long serials) -> stays `Utf8`. `--type COL=int64` still types them.
//! - `decimal-text`: canonical decimals (`12.5`, `-0.25`, `5000`), at least one with
//!   a fraction, at most 38 digits -> `Decimal128(p, s)`, `s` the largest number of
//!   fraction digits, `p` 18 (or 38 when 18 is too small). The lossless rule for
//!   decimals: a value prints back as its text with its fraction padded with zeros to
//!   the column's scale (`12.5` in a scale-2 column prints `12.50`): the same number,
//!   digit for digit.
//! - `float-text`: numbers in exponent form (`1e-7`) that print back exactly as
//!   Rust's shortest form -> `Float64` (only when no decimal type fits).
//! - `date-text`: one date shape for the whole column: `yyyy-MM-dd`, `yyyy/MM/dd`,
//!   `yyyy年MM月dd日` (zero-padded), and `yyyyMMdd` only when asked
//!   (`--type COL=date`) -> `Date32`. The manifest records the shape (`format`), and
//!   a value prints back exactly in it.
//! - `datetime-text`: one shape for the whole column: `yyyy-MM-dd HH:mm:ss`, with
//!   `.SSS`, with `T` instead of the space, `yyyy/MM/dd HH:mm:ss[.SSS]`, or
//!   `yyyy-MM-dd HH:mm` -> `Timestamp(ms)` without a time zone, or with
//!   UTC+8 when asked (`--timezone Asia/Shanghai`: `Timestamp(ms, "+08:00")`). A date-only value in a
//!   datetime column, or a column mixing shapes, stays `Utf8`.
//! - `text`: anything else stays `Utf8`, exactly as sent.
//!
//! Empty strings do not stop a column from being typed: they become nulls, and the
//! manifest counts them per column (`empty_as_null`); with `--empty-as-null=false` a
//! column holding empty strings stays `Utf8` (`empty-strings-kept`). A column with no
//! non-empty value stays `Utf8` (`no-values`).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use chrono::{Datelike, NaiveDate};

/// The zone label of datetimes read as China Standard Time (`--timezone
/// Asia/Shanghai`): a fixed UTC+8, so that every value reads back as written
/// (the IANA zone's 1986-1991 summer time would move those years by an hour).
pub const SHANGHAI: &str = "+08:00";
const SHANGHAI_OFFSET_MS: i64 = 8 * 3_600_000;

/// Date shapes, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateFmt {
    Dash,
    Slash,
    Chinese,
    Compact,
}

pub const DATE_FORMATS: [DateFmt; 4] = [
    DateFmt::Dash,
    DateFmt::Slash,
    DateFmt::Chinese,
    DateFmt::Compact,
];

impl DateFmt {
    pub fn pattern(self) -> &'static str {
        match self {
            DateFmt::Dash => "yyyy-MM-dd",
            DateFmt::Slash => "yyyy/MM/dd",
            DateFmt::Chinese => "yyyy年MM月dd日",
            DateFmt::Compact => "yyyyMMdd",
        }
    }

    fn bit(self) -> u32 {
        1 << (DATE_SHIFT + self as u32)
    }

    /// Parses exactly this shape (fixed width, zero-padded, a real calendar day).
    pub fn parse(self, s: &str) -> Option<NaiveDate> {
        let b = s.as_bytes();
        let (y, m, d) = match self {
            DateFmt::Dash | DateFmt::Slash => {
                let sep = if self == DateFmt::Dash { b'-' } else { b'/' };
                if b.len() != 10 || b[4] != sep || b[7] != sep {
                    return None;
                }
                (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?)
            }
            DateFmt::Compact => {
                if b.len() != 8 {
                    return None;
                }
                (digits(&b[0..4])?, digits(&b[4..6])?, digits(&b[6..8])?)
            }
            DateFmt::Chinese => {
                // yyyy年MM月dd日: 4 + 3 + 2 + 3 + 2 + 3 bytes
                if b.len() != 17
                    || s.get(4..7) != Some("年")
                    || s.get(9..12) != Some("月")
                    || s.get(14..17) != Some("日")
                {
                    return None;
                }
                (digits(&b[0..4])?, digits(&b[7..9])?, digits(&b[12..14])?)
            }
        };
        NaiveDate::from_ymd_opt(y as i32, m, d)
    }

    pub fn format(self, d: NaiveDate, out: &mut String) {
        let (y, m, dd) = (d.year(), d.month(), d.day());
        let _ = match self {
            DateFmt::Dash => write!(out, "{y:04}-{m:02}-{dd:02}"),
            DateFmt::Slash => write!(out, "{y:04}/{m:02}/{dd:02}"),
            DateFmt::Chinese => write!(out, "{y:04}年{m:02}月{dd:02}日"),
            DateFmt::Compact => write!(out, "{y:04}{m:02}{dd:02}"),
        };
    }

    pub fn from_pattern(p: &str) -> Option<DateFmt> {
        DATE_FORMATS.into_iter().find(|f| f.pattern() == p)
    }
}

/// Datetime shapes, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TsFmt {
    pub slash: bool,
    pub t: bool,
    pub seconds: bool,
    pub millis: bool,
}

pub const TS_FORMATS: [TsFmt; 7] = [
    TsFmt::new(false, false, true, false),
    TsFmt::new(false, false, true, true),
    TsFmt::new(false, true, true, false),
    TsFmt::new(false, true, true, true),
    TsFmt::new(true, false, true, false),
    TsFmt::new(true, false, true, true),
    TsFmt::new(false, false, false, false),
];

impl TsFmt {
    const fn new(slash: bool, t: bool, seconds: bool, millis: bool) -> TsFmt {
        TsFmt {
            slash,
            t,
            seconds,
            millis,
        }
    }

    pub fn pattern(self) -> String {
        let mut p = String::from(if self.slash {
            "yyyy/MM/dd"
        } else {
            "yyyy-MM-dd"
        });
        p.push_str(if self.t { "'T'HH:mm" } else { " HH:mm" });
        if self.seconds {
            p.push_str(":ss");
        }
        if self.millis {
            p.push_str(".SSS");
        }
        p
    }

    pub fn from_pattern(p: &str) -> Option<TsFmt> {
        TS_FORMATS
            .into_iter()
            .find(|f| f.pattern() == p || f.pattern().replace("'T'", "T") == p)
    }

    fn index(self) -> u32 {
        TS_FORMATS
            .iter()
            .position(|f| *f == self)
            .expect("a listed format") as u32
    }

    fn bit(self) -> u32 {
        1 << (TS_SHIFT + self.index())
    }

    fn len(self) -> usize {
        16 + if self.seconds { 3 } else { 0 } + if self.millis { 4 } else { 0 }
    }

    /// Parses exactly this shape into milliseconds since 1970-01-01 00:00 (naive).
    pub fn parse(self, s: &str) -> Option<i64> {
        let b = s.as_bytes();
        if b.len() != self.len() || !s.is_char_boundary(10) {
            return None;
        }
        let date = if self.slash {
            DateFmt::Slash
        } else {
            DateFmt::Dash
        }
        .parse(&s[..10])?;
        if b[10] != if self.t { b'T' } else { b' ' } || b[13] != b':' {
            return None;
        }
        let h = digits(&b[11..13])?;
        let mi = digits(&b[14..16])?;
        let mut sec = 0;
        let mut ms = 0;
        if self.seconds {
            if b[16] != b':' {
                return None;
            }
            sec = digits(&b[17..19])?;
        }
        if self.millis {
            if b[19] != b'.' {
                return None;
            }
            ms = digits(&b[20..23])?;
        }
        if h > 23 || mi > 59 || sec > 59 {
            return None;
        }
        let days = days_since_epoch(date) as i64;
        Some(
            days * 86_400_000
                + h as i64 * 3_600_000
                + mi as i64 * 60_000
                + sec as i64 * 1000
                + ms as i64,
        )
    }

    pub fn format(self, ms: i64, out: &mut String) {
        let days = ms.div_euclid(86_400_000);
        let rest = ms.rem_euclid(86_400_000);
        let date = NaiveDate::from_num_days_from_ce_opt((days + EPOCH_DAYS_FROM_CE) as i32)
            .unwrap_or_default();
        if self.slash {
            DateFmt::Slash.format(date, out);
        } else {
            DateFmt::Dash.format(date, out);
        }
        out.push(if self.t { 'T' } else { ' ' });
        let (h, mi, s, milli) = (
            rest / 3_600_000,
            rest / 60_000 % 60,
            rest / 1000 % 60,
            rest % 1000,
        );
        let _ = write!(out, "{h:02}:{mi:02}");
        if self.seconds {
            let _ = write!(out, ":{s:02}");
        }
        if self.millis {
            let _ = write!(out, ".{milli:03}");
        }
    }
}

const EPOCH_DAYS_FROM_CE: i64 = 719_163;

fn days_since_epoch(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - EPOCH_DAYS_FROM_CE as i32
}

/// Up to 4 ASCII digits as a number.
fn digits(b: &[u8]) -> Option<u32> {
    let mut n = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (c - b'0') as u32;
    }
    Some(n)
}

const BOOL: u32 = 1 << 0;
/// Canonical integer that fits i64.
const INT: u32 = 1 << 1;
/// ... of at most 15 digits.
const INT_SHORT: u32 = 1 << 2;
/// Canonical decimal of at most 38 digits.
const DECIMAL: u32 = 1 << 3;
/// Prints back exactly as Rust's shortest f64 form.
const FLOAT_EXACT: u32 = 1 << 4;
/// Parses as a finite f64 (what `--type COL=float64` asks).
const FLOAT_PARSE: u32 = 1 << 5;
const DATE_SHIFT: u32 = 6;
const DATE_BITS: u32 = 0b1111 << DATE_SHIFT;
const TS_SHIFT: u32 = 10;
const TS_BITS: u32 = 0b111_1111 << TS_SHIFT;
const NUMERIC: u32 = INT | INT_SHORT | DECIMAL | FLOAT_EXACT | FLOAT_PARSE;
const ALL: u32 = BOOL | NUMERIC | DATE_BITS | TS_BITS;

/// Digits above which an integer is treated as a code, not a quantity.
pub const MAX_INT_DIGITS: u8 = 15;

/// What the values of one column allow so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detector {
    mask: u32,
    /// Non-empty scalar values observed.
    values: u64,
    /// Largest number of integer digits of a decimal (leading `0` not counted).
    int_digits: u8,
    /// Largest number of fraction digits.
    scale: u8,
    /// Some decimal had a fraction.
    fraction: bool,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            mask: ALL,
            values: 0,
            int_digits: 0,
            scale: 0,
            fraction: false,
        }
    }
}

/// A decimal's shape: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, not negative zero.
struct DecShape {
    int_digits: usize,
    frac_digits: usize,
    /// Significant digits (leading zeros of `0.00x` not counted).
    trailing_zero: bool,
    negative: bool,
}

fn decimal_shape(s: &str) -> Option<DecShape> {
    let b = s.as_bytes();
    let (negative, body) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let dot = body.iter().position(|&c| c == b'.');
    let (int, frac) = match dot {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &body[body.len()..]),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if dot.is_some() && (frac.is_empty() || !frac.iter().all(u8::is_ascii_digit)) {
        return None;
    }
    if int.len() > 1 && int[0] == b'0' {
        return None;
    }
    if negative && int.iter().chain(frac).all(|&c| c == b'0') {
        return None;
    }
    let int_digits = if int == b"0" { 0 } else { int.len() };
    Some(DecShape {
        int_digits,
        frac_digits: frac.len(),
        trailing_zero: frac.last() == Some(&b'0'),
        negative,
    })
}

fn float_prints_back(s: &str) -> bool {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => format!("{f}") == s || format!("{f:?}") == s,
        _ => false,
    }
}

impl Detector {
    /// Observes one raw JSON value (a string, number, boolean, null, or nested).
    pub fn observe_raw(&mut self, raw: &str) {
        if self.mask == 0 {
            // Nothing can be typed any more; `values` only matters while it can.
            return;
        }
        match raw.as_bytes().first() {
            Some(b'n') => {}
            Some(b'{') | Some(b'[') => self.mask = 0,
            Some(b'"') => match crate::platform::records::string_content(raw) {
                Some(s) if s.is_empty() => {}
                Some(s) => self.observe(&s),
                None => self.mask = 0,
            },
            Some(_) => self.observe(raw),
            None => {}
        }
    }

    /// Observes one non-empty value's text.
    pub fn observe(&mut self, s: &str) {
        self.values += 1;
        let mut m = self.mask;
        if m == 0 {
            return;
        }
        if m & BOOL != 0 && s != "true" && s != "false" {
            m &= !BOOL;
        }
        if m & NUMERIC != 0 {
            match decimal_shape(s) {
                Some(d) => {
                    let digits = d.int_digits + d.frac_digits;
                    if d.frac_digits > 0 {
                        self.fraction = true;
                        m &= !(INT | INT_SHORT);
                    } else if m & INT != 0 {
                        if s.parse::<i64>().is_err() {
                            m &= !(INT | INT_SHORT);
                        } else if d.int_digits > MAX_INT_DIGITS as usize {
                            m &= !INT_SHORT;
                        }
                    }
                    if digits > 38 {
                        m &= !DECIMAL;
                    } else {
                        self.int_digits = self.int_digits.max(d.int_digits as u8);
                        self.scale = self.scale.max(d.frac_digits as u8);
                    }
                    if m & FLOAT_EXACT != 0 && (d.trailing_zero || digits > 15) {
                        // Shortest f64 forms never end a fraction with 0; longer
                        // values need the full check.
                        if d.trailing_zero || !float_prints_back(s) {
                            m &= !FLOAT_EXACT;
                        }
                    }
                    let _ = d.negative;
                }
                None => {
                    m &= !(INT | INT_SHORT | DECIMAL);
                    if m & FLOAT_EXACT != 0 && !float_prints_back(s) {
                        m &= !FLOAT_EXACT;
                    }
                    if m & FLOAT_PARSE != 0 && !matches!(s.parse::<f64>(), Ok(f) if f.is_finite()) {
                        m &= !FLOAT_PARSE;
                    }
                }
            }
        }
        if m & DATE_BITS != 0 {
            for f in DATE_FORMATS {
                if m & f.bit() != 0 && f.parse(s).is_none() {
                    m &= !f.bit();
                }
            }
        }
        if m & TS_BITS != 0 {
            for f in TS_FORMATS {
                if m & f.bit() != 0 && f.parse(s).is_none() {
                    m &= !f.bit();
                }
            }
        }
        self.mask = m;
    }

    /// Combines two detectors (of two pages): the types both allow.
    pub fn merge(&mut self, other: &Detector) {
        self.mask &= other.mask;
        self.values += other.values;
        self.int_digits = self.int_digits.max(other.int_digits);
        self.scale = self.scale.max(other.scale);
        self.fraction |= other.fraction;
    }

    pub fn values(&self) -> u64 {
        self.values
    }

    /// The type detection picks (no options), with its rule name; `None` = `Utf8`.
    pub fn detect(&self) -> (Option<Target>, &'static str) {
        let m = self.mask;
        if self.values == 0 {
            return (None, "no-values");
        }
        if m & BOOL != 0 {
            return (Some(Target::Bool), "bool-text");
        }
        if m & INT_SHORT != 0 {
            return (Some(Target::Int64), "int-text");
        }
        if m & INT != 0 {
            return (None, "digit-code");
        }
        if m & DECIMAL != 0 && self.fraction {
            return (Some(self.decimal()), "decimal-text");
        }
        if m & DECIMAL != 0 {
            // Integers beyond i64: never through a float.
            return (None, "digit-code");
        }
        if m & FLOAT_EXACT != 0 {
            return (Some(Target::Float64), "float-text");
        }
        for f in DATE_FORMATS {
            if f != DateFmt::Compact && m & f.bit() != 0 {
                return (Some(Target::Date(f)), "date-text");
            }
        }
        for f in TS_FORMATS {
            if m & f.bit() != 0 {
                return (
                    Some(Target::Timestamp {
                        format: f,
                        tz: false,
                    }),
                    "datetime-text",
                );
            }
        }
        (None, "text")
    }

    fn decimal(&self) -> Target {
        let needed = (self.int_digits + self.scale).max(1);
        Target::Decimal {
            precision: if needed <= 18 { 18 } else { 38 },
            scale: self.scale,
        }
    }

    /// The target for a type the user asked for, if every value fits it.
    pub fn fit(&self, spec: &TypeSpec, tz: bool) -> Option<Target> {
        let m = self.mask;
        Some(match spec {
            TypeSpec::Utf8 => return None,
            TypeSpec::Int64 => (m & INT != 0).then_some(Target::Int64)?,
            TypeSpec::Float64 => (m & FLOAT_PARSE != 0).then_some(Target::Float64)?,
            TypeSpec::Bool => (m & BOOL != 0).then_some(Target::Bool)?,
            TypeSpec::Decimal(None) => (m & DECIMAL != 0).then(|| self.decimal())?,
            TypeSpec::Decimal(Some((p, s))) => (m & DECIMAL != 0
                && self.scale <= *s
                && self.int_digits as u16 + *s as u16 <= *p as u16)
                .then_some(Target::Decimal {
                    precision: *p,
                    scale: *s,
                })?,
            TypeSpec::Date(Some(f)) => (m & f.bit() != 0).then_some(Target::Date(*f))?,
            TypeSpec::Date(None) => DATE_FORMATS
                .into_iter()
                .find(|f| m & f.bit() != 0)
                .map(Target::Date)?,
            TypeSpec::Timestamp(Some(f)) => {
                (m & f.bit() != 0).then_some(Target::Timestamp { format: *f, tz })?
            }
            TypeSpec::Timestamp(None) => TS_FORMATS
                .into_iter()
                .find(|f| m & f.bit() != 0)
                .map(|format| Target::Timestamp { format, tz })?,
            TypeSpec::EpochMs => (m & INT != 0).then_some(Target::EpochMs { tz })?,
        })
    }

    /// Whether one value's text fits `spec` (used to find the value that does not).
    pub fn value_fits(s: &str, spec: &TypeSpec) -> bool {
        let mut d = Detector::default();
        d.observe(s);
        matches!(spec, TypeSpec::Utf8) || d.fit(spec, false).is_some()
    }
}

/// A type asked for by the user (`--type COL=TYPE`, `--schema FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeSpec {
    Utf8,
    Int64,
    Float64,
    Bool,
    /// `decimal` (precision and scale from the data) or `decimal(p,s)`.
    Decimal(Option<(u8, u8)>),
    /// `date` (any shape, `yyyyMMdd` included) or `date:yyyy/MM/dd`.
    Date(Option<DateFmt>),
    Timestamp(Option<TsFmt>),
    /// Epoch milliseconds (JSON numbers or digit strings) -> a UTC timestamp.
    EpochMs,
}

impl std::fmt::Display for TypeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TypeSpec::Utf8 => write!(f, "string"),
            TypeSpec::Int64 => write!(f, "int64"),
            TypeSpec::Float64 => write!(f, "float64"),
            TypeSpec::Bool => write!(f, "bool"),
            TypeSpec::Decimal(None) => write!(f, "decimal"),
            TypeSpec::Decimal(Some((p, s))) => write!(f, "decimal({p},{s})"),
            TypeSpec::Date(None) => write!(f, "date"),
            TypeSpec::Date(Some(d)) => write!(f, "date:{}", d.pattern()),
            TypeSpec::Timestamp(None) => write!(f, "timestamp"),
            TypeSpec::Timestamp(Some(t)) => write!(f, "timestamp:{}", t.pattern()),
            TypeSpec::EpochMs => write!(f, "epoch_ms"),
        }
    }
}

impl TypeSpec {
    pub const HELP: &'static str = "string, int64, float64, bool, decimal, decimal(P,S), date, \
date:yyyy-MM-dd|yyyy/MM/dd|yyyy年MM月dd日|yyyyMMdd, timestamp, timestamp:PATTERN, epoch_ms";

    pub fn parse(s: &str) -> Result<TypeSpec, String> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let (head, arg) = match t.split_once(':') {
            Some((h, a)) => (h.trim().to_ascii_lowercase(), Some(a.trim())),
            None => (lower.clone(), None),
        };
        let bad = || format!("unknown type `{s}`; use one of: {}", TypeSpec::HELP);
        Ok(match (head.as_str(), arg) {
            ("string" | "utf8" | "text" | "varchar" | "str", None) => TypeSpec::Utf8,
            ("int64" | "int" | "bigint" | "integer", None) => TypeSpec::Int64,
            ("float64" | "float" | "double", None) => TypeSpec::Float64,
            ("bool" | "boolean", None) => TypeSpec::Bool,
            ("decimal", None) => TypeSpec::Decimal(None),
            ("date" | "date32", None) => TypeSpec::Date(None),
            ("date" | "date32", Some(p)) => {
                TypeSpec::Date(Some(DateFmt::from_pattern(p).ok_or_else(|| {
                    format!(
                        "unknown date shape `{p}`; use {}",
                        DATE_FORMATS.map(|f| f.pattern()).join(", ")
                    )
                })?))
            }
            ("timestamp" | "datetime", None) => TypeSpec::Timestamp(None),
            ("timestamp" | "datetime", Some(p)) => {
                TypeSpec::Timestamp(Some(TsFmt::from_pattern(p).ok_or_else(|| {
                    format!(
                        "unknown datetime shape `{p}`; use {}",
                        TS_FORMATS.map(|f| f.pattern()).join(", ")
                    )
                })?))
            }
            ("epoch_ms" | "epoch-ms" | "timestamp_ms", None) => TypeSpec::EpochMs,
            _ if lower.starts_with("decimal(") && lower.ends_with(')') => {
                let inner = &lower["decimal(".len()..lower.len() - 1];
                let (p, sc) = inner.split_once(',').ok_or_else(bad)?;
                let p: u8 = p.trim().parse().map_err(|_| bad())?;
                let sc: u8 = sc.trim().parse().map_err(|_| bad())?;
                if p == 0 || p > 38 || sc > p {
                    return Err(format!(
                        "`{s}`: precision must be 1..=38 and scale at most the precision"
                    ));
                }
                TypeSpec::Decimal(Some((p, sc)))
            }
            _ => return Err(bad()),
        })
    }

    /// The spec that reproduces a column of a previous snapshot (`--schema`), from
    /// its manifest type and format; `None` for types detection does not produce.
    pub fn from_manifest(arrow_type: &str, format: Option<&str>) -> Option<TypeSpec> {
        let dt: DataType = arrow_type.parse().ok()?;
        Some(match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => TypeSpec::Utf8,
            DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => TypeSpec::Int64,
            DataType::Float64 | DataType::Float32 => TypeSpec::Float64,
            DataType::Boolean => TypeSpec::Bool,
            DataType::Decimal128(p, s) if s >= 0 && (1..=38).contains(&p) && s as u8 <= p => {
                TypeSpec::Decimal(Some((p, s as u8)))
            }
            DataType::Date32 => TypeSpec::Date(format.and_then(DateFmt::from_pattern)),
            DataType::Timestamp(_, _) if format == Some("epoch_ms") => TypeSpec::EpochMs,
            DataType::Timestamp(_, _) => TypeSpec::Timestamp(format.and_then(TsFmt::from_pattern)),
            _ => return None,
        })
    }
}

/// A typed column's Arrow type and how its text converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Int64,
    Float64,
    Bool,
    Decimal { precision: u8, scale: u8 },
    Date(DateFmt),
    Timestamp { format: TsFmt, tz: bool },
    EpochMs { tz: bool },
}

impl Target {
    pub fn data_type(&self) -> DataType {
        match self {
            Target::Int64 => DataType::Int64,
            Target::Float64 => DataType::Float64,
            Target::Bool => DataType::Boolean,
            Target::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
            Target::Date(_) => DataType::Date32,
            Target::Timestamp { tz, .. } => {
                DataType::Timestamp(TimeUnit::Millisecond, tz.then(|| Arc::from(SHANGHAI)))
            }
            Target::EpochMs { tz } => DataType::Timestamp(
                TimeUnit::Millisecond,
                Some(Arc::from(if *tz { SHANGHAI } else { "UTC" })),
            ),
        }
    }

    /// The shape the values were written in (for the manifest).
    pub fn format(&self) -> Option<String> {
        match self {
            Target::Date(f) => Some(f.pattern().to_string()),
            Target::Timestamp { format, .. } => Some(format.pattern()),
            Target::EpochMs { .. } => Some("epoch_ms".into()),
            _ => None,
        }
    }

    /// Converts a column of texts (empty = null) into this type. The error gives
    /// the row and the text that does not fit.
    pub fn convert(&self, texts: &dyn Array) -> Result<ArrayRef, (usize, String)> {
        let texts = texts.as_string::<i32>();
        let mut b = TypedBuilder::new(*self, texts.len());
        for i in 0..texts.len() {
            let text = (!texts.is_null(i)).then(|| texts.value(i));
            if !b.push(text) {
                return Err((i, texts.value(i).to_string()));
            }
        }
        Ok(b.finish())
    }

    /// The canonical text of a value given as its original text (CSV cells,
    /// partition values): ISO dates, `yyyy-MM-dd HH:mm:ss[.SSS]` datetimes,
    /// decimals at the column's scale. `None` when the text does not fit.
    pub fn canonical(&self, s: &str, out: &mut String) -> Option<()> {
        match *self {
            Target::Int64 | Target::Bool | Target::Float64 => out.push_str(s),
            Target::Decimal { scale, .. } => {
                let (_, frac) = s.split_once('.').unwrap_or((s, ""));
                out.push_str(s);
                if frac.is_empty() && scale > 0 {
                    out.push('.');
                }
                for _ in frac.len()..scale as usize {
                    out.push('0');
                }
            }
            Target::Date(f) => DateFmt::Dash.format(f.parse(s)?, out),
            Target::Timestamp { format, tz } => local_text(format, format.parse(s)?, tz, out),
            Target::EpochMs { tz } => {
                let ms: i64 = s.parse().ok()?;
                let shift = if tz { SHANGHAI_OFFSET_MS } else { 0 };
                TsFmt::new(false, false, true, true).format(ms + shift, out);
                out.push_str(if tz { "+08:00" } else { "Z" });
            }
        }
        Some(())
    }
}

/// The canonical text of a datetime given as local (naive) milliseconds:
/// `yyyy-MM-dd HH:mm[:ss[.SSS]]` as the column's shape has them, `+08:00` when zoned.
fn local_text(format: TsFmt, local_ms: i64, tz: bool, out: &mut String) {
    TsFmt {
        slash: false,
        t: false,
        ..format
    }
    .format(local_ms, out);
    if tz {
        out.push_str(SHANGHAI);
    }
}

/// The canonical text of row `i` of a written column (partition folder names):
/// the same text [`Target::canonical`] gives for the value's original text.
/// `None` for null; nested columns are not supported (`None`).
pub fn value_text(array: &dyn Array, i: usize, target: Option<Target>) -> Option<String> {
    use arrow_array::types::*;
    if array.is_null(i) {
        return None;
    }
    let mut out = String::new();
    match array.data_type() {
        DataType::Utf8 => out.push_str(array.as_string::<i32>().value(i)),
        DataType::Int64 => out = array.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float64 => out = format!("{}", array.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => out = array.as_boolean().value(i).to_string(),
        DataType::Decimal128(_, scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(i);
            let d = 10i128.pow(*scale as u32);
            let sign = if v < 0 { "-" } else { "" };
            let (ip, fp) = (v.unsigned_abs() / d as u128, v.unsigned_abs() % d as u128);
            out = if *scale > 0 {
                format!("{sign}{ip}.{fp:0w$}", w = *scale as usize)
            } else {
                format!("{sign}{ip}")
            };
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(i);
            let d = NaiveDate::from_num_days_from_ce_opt(days + EPOCH_DAYS_FROM_CE as i32)?;
            DateFmt::Dash.format(d, &mut out);
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let ms = array.as_primitive::<TimestampMillisecondType>().value(i);
            match target? {
                Target::Timestamp { format, tz } => {
                    let shift = if tz { SHANGHAI_OFFSET_MS } else { 0 };
                    local_text(format, ms + shift, tz, &mut out);
                }
                t @ Target::EpochMs { .. } => {
                    t.canonical(&ms.to_string(), &mut out)?;
                }
                _ => return None,
            }
        }
        _ => return None,
    }
    Some(out)
}

/// `s` (a canonical decimal) as an integer scaled to `scale` fraction digits.
fn parse_decimal(s: &str, scale: u8) -> Option<i128> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if frac.len() > scale as usize
        || int.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut v: i128 = 0;
    for c in int.bytes().chain(frac.bytes()) {
        v = v.checked_mul(10)?.checked_add((c - b'0') as i128)?;
    }
    for _ in frac.len()..scale as usize {
        v = v.checked_mul(10)?;
    }
    Some(if neg { -v } else { v })
}

/// Builds a column of one detected type from value texts, one at a time (the
/// one-pass conversion and [`Target::convert`] share it).
#[derive(Debug)]
pub struct TypedBuilder {
    target: Target,
    values: TypedValues,
}

#[derive(Debug)]
enum TypedValues {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Decimal(Decimal128Builder),
    Date(Date32Builder),
    Millis(TimestampMillisecondBuilder),
}

impl TypedBuilder {
    pub fn new(target: Target, capacity: usize) -> TypedBuilder {
        let values = match target {
            Target::Int64 => TypedValues::Int(Int64Builder::with_capacity(capacity)),
            Target::Float64 => TypedValues::Float(Float64Builder::with_capacity(capacity)),
            Target::Bool => TypedValues::Bool(BooleanBuilder::with_capacity(capacity)),
            Target::Decimal { .. } => {
                TypedValues::Decimal(Decimal128Builder::with_capacity(capacity))
            }
            Target::Date(_) => TypedValues::Date(Date32Builder::with_capacity(capacity)),
            Target::Timestamp { .. } | Target::EpochMs { .. } => {
                TypedValues::Millis(TimestampMillisecondBuilder::with_capacity(capacity))
            }
        };
        TypedBuilder { target, values }
    }

    pub fn len(&self) -> usize {
        match &self.values {
            TypedValues::Int(b) => b.len(),
            TypedValues::Float(b) => b.len(),
            TypedValues::Bool(b) => b.len(),
            TypedValues::Decimal(b) => b.len(),
            TypedValues::Date(b) => b.len(),
            TypedValues::Millis(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn append_nulls(&mut self, n: usize) {
        match &mut self.values {
            TypedValues::Int(b) => b.append_nulls(n),
            TypedValues::Float(b) => b.append_nulls(n),
            TypedValues::Bool(b) => b.append_nulls(n),
            TypedValues::Decimal(b) => b.append_nulls(n),
            TypedValues::Date(b) => b.append_nulls(n),
            TypedValues::Millis(b) => b.append_nulls(n),
        }
    }

    /// Appends one value given as its text (`None` or empty: null). False when the
    /// text does not fit the type (nothing is appended then).
    pub fn push(&mut self, text: Option<&str>) -> bool {
        let Some(s) = text.filter(|s| !s.is_empty()) else {
            self.append_nulls(1);
            return true;
        };
        match (&mut self.values, self.target) {
            (TypedValues::Int(b), _) => match s.parse() {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            (TypedValues::Float(b), _) => match s.parse::<f64>() {
                Ok(f) if f.is_finite() => b.append_value(f),
                _ => return false,
            },
            (TypedValues::Bool(b), _) => match s {
                "true" => b.append_value(true),
                "false" => b.append_value(false),
                _ => return false,
            },
            (TypedValues::Decimal(b), Target::Decimal { scale, .. }) => {
                match parse_decimal(s, scale) {
                    Some(v) => b.append_value(v),
                    None => return false,
                }
            }
            (TypedValues::Date(b), Target::Date(f)) => match f.parse(s) {
                Some(d) => b.append_value(days_since_epoch(d)),
                None => return false,
            },
            (TypedValues::Millis(b), Target::Timestamp { format, tz }) => match format.parse(s) {
                Some(ms) => b.append_value(ms - if tz { SHANGHAI_OFFSET_MS } else { 0 }),
                None => return false,
            },
            (TypedValues::Millis(b), Target::EpochMs { .. }) => match s.parse() {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            _ => unreachable!("values are built for their target"),
        }
        true
    }

    pub fn finish(self) -> ArrayRef {
        match (self.values, self.target) {
            (TypedValues::Int(mut b), _) => Arc::new(b.finish()),
            (TypedValues::Float(mut b), _) => Arc::new(b.finish()),
            (TypedValues::Bool(mut b), _) => Arc::new(b.finish()),
            (TypedValues::Decimal(mut b), Target::Decimal { precision, scale }) => Arc::new(
                b.finish()
                    .with_precision_and_scale(precision, scale as i8)
                    .expect("precision and scale are checked when detected or parsed"),
            ),
            (TypedValues::Date(mut b), _) => Arc::new(b.finish()),
            (TypedValues::Millis(mut b), Target::Timestamp { tz, .. }) => {
                Arc::new(b.finish().with_timezone_opt(tz.then_some(SHANGHAI)))
            }
            (TypedValues::Millis(mut b), Target::EpochMs { tz }) => {
                Arc::new(b.finish().with_timezone(if tz { SHANGHAI } else { "UTC" }))
            }
            _ => unreachable!("values are built for their target"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;
    use proptest::prelude::*;

    fn detect(values: &[&str]) -> (Option<Target>, &'static str) {
        let mut d = Detector::default();
        for v in values {
            d.observe(v);
        }
        d.detect()
    }

    #[test]
    fn amounts_with_different_scales_become_one_decimal() {
        let (t, rule) = detect(&["5000.00", "12.5", "-3"]);
        assert_eq!(
            t,
            Some(Target::Decimal {
                precision: 18,
                scale: 2
            })
        );
        assert_eq!(rule, "decimal-text");
    }

    #[test]
    fn codes_stay_text() {
        assert_eq!(detect(&["01425", "12"]).0, None);
        assert_eq!(detect(&["913300001234567890"]), (None, "digit-code"));
        assert_eq!(detect(&["91330000MA2XXXXX1A"]).0, None);
        assert_eq!(detect(&["1234567890123456789012345"]), (None, "digit-code"));
        assert_eq!(detect(&["+5"]).0, None);
        // `-0` is no integer; as a float it prints back exactly.
        assert_eq!(detect(&["-0", "5"]).0, Some(Target::Float64));
        assert_eq!(detect(&["1.5", "1.5 "]).0, None);
    }

    #[test]
    fn short_integers_become_int64() {
        assert_eq!(
            detect(&["0", "-17", "123456789012345"]),
            (Some(Target::Int64), "int-text")
        );
    }

    #[test]
    fn dates_and_datetimes_need_one_shape() {
        assert_eq!(
            detect(&["2019-01-29", "2020-02-29"]).0,
            Some(Target::Date(DateFmt::Dash))
        );
        assert_eq!(
            detect(&["2023年01月05日"]).0,
            Some(Target::Date(DateFmt::Chinese))
        );
        assert_eq!(detect(&["2019-02-29"]).0, None, "not a real day");
        assert_eq!(detect(&["2019-01-29", "2019/01/29"]).0, None);
        let ts = detect(&["2022-08-29 15:44:46.000", "2022-08-29 15:44:47.123"]).0;
        assert_eq!(
            ts,
            Some(Target::Timestamp {
                format: TsFmt::new(false, false, true, true),
                tz: false
            })
        );
        assert_eq!(detect(&["2019-01-29 13:57:00", "2019-01-29"]).0, None);
        // yyyyMMdd only when asked: alone it is an integer.
        assert_eq!(detect(&["20190129"]).0, Some(Target::Int64));
        let mut d = Detector::default();
        d.observe("20190129");
        assert_eq!(
            d.fit(&TypeSpec::Date(None), false),
            Some(Target::Date(DateFmt::Compact))
        );
    }

    #[test]
    fn booleans_and_floats() {
        assert_eq!(detect(&["true", "false"]).0, Some(Target::Bool));
        assert_eq!(detect(&["1e-7", "2.5e-8"]).0, Some(Target::Float64));
        assert_eq!(detect(&["1E-7"]).0, None, "does not print back");
    }

    #[test]
    fn merge_is_order_independent() {
        let vals = ["1", "2.50", "x", "2019-01-01"];
        for split in 0..vals.len() {
            let mut a = Detector::default();
            let mut b = Detector::default();
            vals[..split].iter().for_each(|v| a.observe(v));
            vals[split..].iter().for_each(|v| b.observe(v));
            let mut ab = a;
            ab.merge(&b);
            let mut ba = b;
            ba.merge(&a);
            assert_eq!(ab, ba);
        }
    }

    #[test]
    fn raw_values_are_unescaped_and_empty_skipped() {
        let mut d = Detector::default();
        for raw in [r#""2019\/01\/29""#, r#""""#, "null", r#""2020/12/31""#] {
            d.observe_raw(raw);
        }
        assert_eq!(d.detect().0, Some(Target::Date(DateFmt::Slash)));
        assert_eq!(d.values(), 2);
        let mut d = Detector::default();
        d.observe_raw("12.50");
        d.observe_raw(r#""7""#);
        assert_eq!(d.detect().1, "decimal-text");
        d.observe_raw("{}");
        assert_eq!(d.detect().0, None);
    }

    #[test]
    fn type_specs_parse() {
        assert_eq!(
            TypeSpec::parse("decimal(10, 2)").unwrap(),
            TypeSpec::Decimal(Some((10, 2)))
        );
        assert_eq!(
            TypeSpec::parse("date:yyyyMMdd").unwrap(),
            TypeSpec::Date(Some(DateFmt::Compact))
        );
        assert_eq!(
            TypeSpec::parse("timestamp:yyyy-MM-ddTHH:mm:ss").unwrap(),
            TypeSpec::Timestamp(Some(TsFmt::new(false, true, true, false)))
        );
        assert!(TypeSpec::parse("decimal(40,2)").is_err());
        assert!(TypeSpec::parse("money").is_err());
        for t in [
            Target::Int64,
            Target::Decimal {
                precision: 18,
                scale: 2,
            },
            Target::Date(DateFmt::Chinese),
            Target::Timestamp {
                format: TsFmt::new(true, false, true, true),
                tz: true,
            },
            Target::EpochMs { tz: false },
        ] {
            let spec =
                TypeSpec::from_manifest(&t.data_type().to_string(), t.format().as_deref()).unwrap();
            assert!(
                !matches!(spec, TypeSpec::Utf8),
                "{t:?} -> {}",
                t.data_type()
            );
        }
    }

    #[test]
    fn overrides_check_every_value() {
        let mut d = Detector::default();
        for v in ["913300001234567890", "1"] {
            d.observe(v);
        }
        assert_eq!(d.fit(&TypeSpec::Int64, false), Some(Target::Int64));
        assert_eq!(d.fit(&TypeSpec::Decimal(Some((5, 2))), false), None);
        assert!(Detector::value_fits(
            "12.5",
            &TypeSpec::Decimal(Some((5, 2)))
        ));
        assert!(!Detector::value_fits(
            "12.555",
            &TypeSpec::Decimal(Some((5, 2)))
        ));
        assert!(!Detector::value_fits("x", &TypeSpec::Int64));
    }

    #[test]
    fn conversion_and_canonical_text() {
        let texts = StringArray::from(vec![Some("5000.00"), Some(""), None, Some("-12.5")]);
        let t = Target::Decimal {
            precision: 18,
            scale: 2,
        };
        let a = t.convert(&texts).unwrap();
        let a = a.as_primitive::<arrow_array::types::Decimal128Type>();
        assert_eq!(a.value(0), 500000);
        assert!(a.is_null(1) && a.is_null(2));
        assert_eq!(a.value(3), -1250);
        let mut s = String::new();
        t.canonical("-12.5", &mut s).unwrap();
        assert_eq!(s, "-12.50");
        s.clear();
        Target::Date(DateFmt::Chinese)
            .canonical("2023年01月05日", &mut s)
            .unwrap();
        assert_eq!(s, "2023-01-05");
        let ts = Target::Timestamp {
            format: TsFmt::new(false, false, true, false),
            tz: true,
        };
        let a = ts
            .convert(&StringArray::from(vec!["1970-01-01 08:00:00"]))
            .unwrap();
        assert_eq!(
            a.as_primitive::<arrow_array::types::TimestampMillisecondType>()
                .value(0),
            0
        );
        assert!(Target::Int64
            .convert(&StringArray::from(vec!["1", "x"]))
            .is_err());
    }

    /// Text of a typed value, printed back the way the column's rule says.
    fn print_back(t: &Target, a: &ArrayRef, i: usize) -> String {
        use arrow_array::types::*;
        let mut s = String::new();
        match t {
            Target::Int64 => s = a.as_primitive::<Int64Type>().value(i).to_string(),
            Target::Float64 => {
                // Shortest form, plain or in exponent form (the rule allows both).
                let f = a.as_primitive::<Float64Type>().value(i);
                s = format!("{f}");
                if s.len() > format!("{f:?}").len() {
                    s = format!("{f:?}");
                }
            }
            Target::Bool => s = a.as_boolean().value(i).to_string(),
            Target::Decimal { scale, .. } => {
                let v = a.as_primitive::<Decimal128Type>().value(i);
                let d = 10i128.pow(*scale as u32);
                let sign = if v < 0 { "-" } else { "" };
                let (ip, fp) = (v.abs() / d, v.abs() % d);
                s = if *scale > 0 {
                    format!("{sign}{ip}.{fp:0w$}", w = *scale as usize)
                } else {
                    format!("{sign}{ip}")
                };
            }
            Target::Date(f) => {
                let days = a.as_primitive::<Date32Type>().value(i);
                let d =
                    NaiveDate::from_num_days_from_ce_opt(days + EPOCH_DAYS_FROM_CE as i32).unwrap();
                f.format(d, &mut s);
            }
            Target::Timestamp { format, .. } => format.format(
                a.as_primitive::<TimestampMillisecondType>().value(i),
                &mut s,
            ),
            Target::EpochMs { .. } => {
                s = a
                    .as_primitive::<TimestampMillisecondType>()
                    .value(i)
                    .to_string()
            }
        }
        s
    }

    /// Pads a decimal text to `scale` fraction digits (the documented rule).
    fn padded(v: &str, scale: u8) -> String {
        let mut s = String::new();
        Target::Decimal {
            precision: 38,
            scale,
        }
        .canonical(v, &mut s)
        .unwrap();
        s
    }

    /// Values of one of the platform's shapes (`kind`), or of any shape.
    fn platform_value(kind: usize) -> BoxedStrategy<String> {
        let date = || (1900i32..2100, 1u32..13, 1u32..32);
        match kind {
            0 => (-99_999i64..99_999).prop_map(|n| n.to_string()).boxed(),
            1 => "[0-9]{1,20}".boxed(),
            2 => "-?[0-9]{1,6}\\.[0-9]{1,4}".boxed(),
            3 => "0[0-9]{1,5}".boxed(),
            4 => date()
                .prop_map(|(y, m, d)| format!("{y}-{m:02}-{d:02}"))
                .boxed(),
            5 => date()
                .prop_map(|(y, m, d)| format!("{y}/{m:02}/{d:02}"))
                .boxed(),
            6 => date()
                .prop_map(|(y, m, d)| format!("{y}年{m:02}月{d:02}日"))
                .boxed(),
            7 => (date(), 0u32..25, 0u32..61, 0u32..1000)
                .prop_map(|((y, m, d), h, mi, ms)| {
                    format!("{y}-{m:02}-{d:02} {h:02}:{mi:02}:{:02}.{ms:03}", mi % 60)
                })
                .boxed(),
            8 => (date(), 0u32..24, 0u32..60)
                .prop_map(|((y, m, d), h, mi)| format!("{y}-{m:02}-{d:02}T{h:02}:{mi:02}:00"))
                .boxed(),
            9 => prop_oneof![Just("true".to_string()), Just("false".to_string())].boxed(),
            10 => "-?[0-9]\\.[0-9]{1,3}e-?[0-9]{1,2}".boxed(),
            11 => "[0-9.eE+-]{1,8}".boxed(),
            _ => "\\PC{0,6}".boxed(),
        }
    }

    fn column() -> impl Strategy<Value = Vec<String>> {
        (0usize..13).prop_flat_map(|k| {
            (
                proptest::collection::vec(platform_value(k), 1..40),
                proptest::collection::vec((0usize..13).prop_flat_map(platform_value), 0..2),
                proptest::collection::vec(Just(String::new()), 0..3),
            )
                .prop_map(|(mut v, noise, empty)| {
                    v.extend(noise);
                    v.extend(empty);
                    v
                })
        })
    }

    proptest! {
        /// A typed column printed back equals the input exactly (decimals: padded
        /// to the column's scale), or the column stayed Utf8.
        #[test]
        fn typed_columns_print_back_exactly(column in column()) {
            // Columns of one shape, sometimes with another shape and empties mixed in.
            let mut d = Detector::default();
            for v in &column {
                if !v.is_empty() {
                    d.observe(v);
                }
            }
            let (target, _) = d.detect();
            let Some(t) = target else { return Ok(()); };
            let arr = StringArray::from(column.iter().map(String::as_str).collect::<Vec<_>>());
            let typed = t.convert(&arr).expect("detected types convert");
            for (i, v) in column.iter().enumerate() {
                if v.is_empty() {
                    prop_assert!(typed.is_null(i));
                    continue;
                }
                let back = print_back(&t, &typed, i);
                match t {
                    Target::Decimal { scale, .. } => prop_assert_eq!(back, padded(v, scale)),
                    _ => prop_assert_eq!(&back, v),
                }
            }
        }
    }
}
