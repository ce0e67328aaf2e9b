//! The records of a page, read in one pass without building a tree.
//!
//! A page's data is a JSON array of flat objects. [`scan`] walks it once and hands
//! each record to a callback as `(key, raw value text)` entries, reusing one buffer,
//! so inference and conversion read a page without allocating per record or
//! parsing it through serde_json. It checks what it walks as strictly as
//! serde_json does (structure, literals, number grammar, string escapes and control
//! characters; nested values are checked by serde_json itself), and anything it does
//! not accept is read again by serde_json for the exact error.

use std::borrow::Cow;

use memchr::memchr2;

/// One entry of a record: the key (unescaped) and the value's raw JSON text.
pub type Entry<'a> = (Cow<'a, str>, &'a str);

/// Per key position in a record, the column the key there was last time. Records
/// of a page share their key order, so checking this hint by name usually saves a
/// lookup of the name.
#[derive(Debug, Clone, Default)]
pub struct KeyHints(Vec<usize>);

impl KeyHints {
    /// The column last seen at `pos` (check that the name matches).
    #[inline]
    pub fn get(&self, pos: usize) -> Option<usize> {
        self.0.get(pos).copied().filter(|&h| h != usize::MAX)
    }

    /// Remembers that the key at `pos` was column `column`.
    #[inline]
    pub fn set(&mut self, pos: usize, column: usize) {
        if pos >= self.0.len() {
            self.0.resize(pos + 1, usize::MAX);
        }
        self.0[pos] = column;
    }
}

/// A page's records as [`scan`] found them, kept by inference for conversion to
/// walk the same bytes again without scanning: per record its number of entries,
/// per entry its key (a number into `keys`) and its value's byte span. Valid only
/// for the exact bytes it was made from: [`Tape::fits`] checks their length and
/// xxh3 hash before use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tape {
    pub hash: u64,
    pub len: usize,
    /// Key names (unescaped) by number.
    pub keys: Vec<String>,
    /// Per record, its number of entries.
    pub records: Vec<u32>,
    /// Per entry, its key's number.
    pub key_of: Vec<u32>,
    /// Per entry, the value's raw JSON text as a byte span of the page.
    pub spans: Vec<(u32, u32)>,
}

impl Tape {
    /// Starts the tape of `text` (too long a page gets none).
    pub fn of(text: &str) -> Option<Tape> {
        (text.len() < u32::MAX as usize).then(|| Tape {
            len: text.len(),
            ..Tape::default()
        })
    }

    /// Records one entry: its key's number and its raw value (a slice of the page
    /// the tape is made of, at `base`).
    #[inline]
    pub(crate) fn push(&mut self, base: &str, key: usize, raw: &str) {
        debug_assert!(
            raw.as_ptr() >= base.as_ptr()
                && raw.as_ptr() as usize + raw.len() <= base.as_ptr() as usize + base.len(),
            "a value outside its page"
        );
        let at = raw.as_ptr() as usize - base.as_ptr() as usize;
        self.key_of.push(key as u32);
        self.spans.push((at as u32, (at + raw.len()) as u32));
    }

    /// Whether `text` is the page this tape was made of.
    pub fn fits(&self, text: &str) -> bool {
        text.len() == self.len && twox_hash::XxHash3_64::oneshot(text.as_bytes()) == self.hash
    }

    /// Memory held.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Tape>()
            + self.records.capacity() * 4
            + self.key_of.capacity() * 4
            + self.spans.capacity() * 8
            + self.keys.iter().map(|k| k.capacity() + 24).sum::<usize>()
    }
}

/// A page that the fast reader does not accept (serde_json says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

type Scan<T> = Result<T, Unreadable>;

/// Walks the record array `text`, calling `f` with each record's entries in page
/// order (duplicate keys kept, as serde_json's ordered reading does). `f` returns
/// false to stop early. Returns the number of records handed to `f`.
pub fn scan<'a>(
    text: &'a str,
    entries: &mut Vec<Entry<'a>>,
    f: impl FnMut(&[Entry<'a>]) -> bool,
) -> Scan<usize> {
    let b = text.as_bytes();
    let start = ws(b, 0);
    let (n, end) = scan_from(text, start, has_control(b), entries, f)?;
    if ws(b, end) != b.len() {
        return Err(Unreadable);
    }
    Ok(n)
}

/// [`scan`] of the array that starts at `i` in `text` (which may go on after it):
/// the number of records and the end of the array. `control`: whether `text` may
/// hold control characters (if not, strings are not checked for them).
/// Stopped early by `f`, the end is `text.len()`.
fn scan_from<'a>(
    text: &'a str,
    mut i: usize,
    control: bool,
    entries: &mut Vec<Entry<'a>>,
    mut f: impl FnMut(&[Entry<'a>]) -> bool,
) -> Scan<(usize, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'[') {
        return Err(Unreadable);
    }
    i = ws(b, i + 1);
    let mut n = 0;
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'{') {
                return Err(Unreadable);
            }
            entries.clear();
            i = ws(b, i + 1);
            if b.get(i) == Some(&b'}') {
                i += 1;
            } else {
                loop {
                    if b.get(i) != Some(&b'"') {
                        return Err(Unreadable);
                    }
                    let (end, escaped) = string_end(b, i, control)?;
                    let key = if escaped {
                        Cow::Owned(
                            serde_json::from_str::<String>(&text[i..=end])
                                .map_err(|_| Unreadable)?,
                        )
                    } else {
                        Cow::Borrowed(&text[i + 1..end])
                    };
                    i = ws(b, end + 1);
                    if b.get(i) != Some(&b':') {
                        return Err(Unreadable);
                    }
                    i = ws(b, i + 1);
                    let vend = value_end(text, i, control)?;
                    entries.push((key, &text[i..vend]));
                    let closed;
                    (i, closed) = comma_or(b, vend, b'}')?;
                    if closed {
                        break;
                    }
                }
            }
            n += 1;
            if !f(entries) {
                return Ok((n, b.len()));
            }
            let closed;
            (i, closed) = comma_or(b, i, b']')?;
            if closed {
                break;
            }
        }
    }
    Ok((n, i))
}

/// The record array of a page body `{"status":1,"msg":...,"data":[...]}` read
/// in one pass and checked as [`scan`] checks it: `Some` only for the plain case
/// (status `1` or `"1"`, `data` an array, no key twice, nothing after the object);
/// anything else is `None`, for serde_json to read and explain.
pub fn page_array(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let control = has_control(b);
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    let (mut status_ok, mut data) = (false, None);
    // Fields seen (status, msg, data): serde_json refuses these twice, and
    // ignores other keys however often they come.
    let mut seen = [false; 3];
    let mut entries = Vec::new();
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (end, escaped) = string_end(b, i, control).ok()?;
        if escaped {
            return None;
        }
        let key = &text[i + 1..end];
        if let Some(f) = ["status", "msg", "data"].iter().position(|k| *k == key) {
            if std::mem::replace(&mut seen[f], true) {
                return None;
            }
        }
        i = ws(b, end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        let vend = if key == "data" {
            let (_, vend) = scan_from(text, i, control, &mut entries, |_| true).ok()?;
            data = Some(&text[i..vend]);
            vend
        } else {
            value_end(text, i, control).ok()?
        };
        if key == "status" {
            status_ok = matches!(&text[i..vend], "1" | "\"1\"");
        }
        let closed;
        (i, closed) = comma_or(b, vend, b'}').ok()?;
        if closed {
            break;
        }
    }
    (status_ok && ws(b, i) == b.len()).then_some(data).flatten()
}

/// Checks UTF-8 with SIMD (several times faster than `std::str::from_utf8` on
/// Chinese text, which is most of a page's bytes).
pub fn utf8(bytes: &[u8]) -> Result<&str, Unreadable> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| Unreadable)
}

/// The content of a raw JSON string value (`"..."`), unescaped only when it has to be.
pub fn string_content(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.as_bytes().contains(&b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// After a value ending at `i`: a comma (the position after it, and false) or
/// `close` (the position after it, and true).
fn comma_or(b: &[u8], i: usize, close: u8) -> Scan<(usize, bool)> {
    let i = ws(b, i);
    match b.get(i) {
        Some(b',') => Ok((ws(b, i + 1), false)),
        Some(&c) if c == close => Ok((i + 1, true)),
        _ => Err(Unreadable),
    }
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// The position of the closing quote of the string opening at `start`, and whether
/// it holds escapes.
fn string_end(b: &[u8], start: usize, control: bool) -> Scan<(usize, bool)> {
    let mut j = start + 1;
    let mut escaped = false;
    loop {
        let p = quote_or_backslash(b, j).ok_or(Unreadable)?;
        if b[p] == b'"' {
            if control && has_control(&b[start + 1..p]) {
                return Err(Unreadable);
            }
            return Ok((p, escaped));
        }
        escaped = true;
        match b.get(p + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j = p + 2,
            Some(b'u') => {
                let hex = b.get(p + 2..p + 6).ok_or(Unreadable)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(Unreadable);
                }
                j = p + 6;
            }
            _ => return Err(Unreadable),
        }
    }
}

/// The first `"` or `\\` at or after `from`: eight bytes at a time (most strings
/// are short, where memchr's setup costs more than it saves), memchr for the rest
/// of a long one.
fn quote_or_backslash(b: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut j = from;
    for _ in 0..4 {
        let Some(chunk) = b.get(j..j + 8) else { break };
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let q = w ^ (LO * b'"' as u64);
        let s = w ^ (LO * b'\\' as u64);
        // A zero byte in q or s marks a match (exact for the lowest one).
        let hit = (q.wrapping_sub(LO) & !q | s.wrapping_sub(LO) & !s) & HI;
        if hit != 0 {
            return Some(j + (hit.trailing_zeros() / 8) as usize);
        }
        j += 8;
    }
    memchr2(b'"', b'\\', b.get(j..)?).map(|k| j + k)
}

/// Raw control characters are not allowed inside JSON strings. Written without an
/// early exit so that it compiles to a vectorized pass.
fn has_control(s: &[u8]) -> bool {
    s.chunks(64)
        .any(|c| c.iter().fold(0u8, |acc, &x| acc | u8::from(x < 0x20)) != 0)
}

/// The end (exclusive) of the value starting at `i`.
fn value_end(text: &str, i: usize, control: bool) -> Scan<usize> {
    let b = text.as_bytes();
    match *b.get(i).ok_or(Unreadable)? {
        b'"' => string_end(b, i, control).map(|(e, _)| e + 1),
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        b'-' | b'0'..=b'9' => number_end(b, i),
        b'{' | b'[' => {
            // Nested values are rare in this data: measured here without recursion
            // (a hostile depth is refused before serde_json sees it), then checked
            // by serde_json.
            let end = nested_end(b, i, control)?;
            serde_json::from_str::<serde::de::IgnoredAny>(&text[i..end]).map_err(|_| Unreadable)?;
            Ok(end)
        }
        _ => Err(Unreadable),
    }
}

/// The deepest nesting read in one pass (deeper pages go to serde_json's reading,
/// which refuses them with a clear error).
const MAX_DEPTH: usize = 64;

/// The end of the array or object at `i`, brackets inside strings skipped.
fn nested_end(b: &[u8], i: usize, control: bool) -> Scan<usize> {
    let mut depth = 0usize;
    let mut j = i;
    loop {
        match *b.get(j).ok_or(Unreadable)? {
            b'"' => {
                j = string_end(b, j, control)?.0 + 1;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Unreadable);
                }
            }
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Scan<usize> {
    // Compared byte by byte: a call to memcmp costs more for four bytes.
    let end = i + word.len();
    if end <= b.len() && b[i..end].iter().zip(word).all(|(x, y)| x == y) {
        Ok(i + word.len())
    } else {
        Err(Unreadable)
    }
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Scan<usize> {
    let digits = |b: &[u8], mut i: usize| -> Scan<usize> {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            Err(Unreadable)
        } else {
            Ok(i)
        }
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i)?,
        _ => return Err(Unreadable),
    }
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records(text: &str) -> Scan<Vec<Vec<(String, String)>>> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        scan(text, &mut buf, |r| {
            out.push(
                r.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            true
        })?;
        Ok(out)
    }

    #[test]
    fn reads_entries_in_page_order_with_raw_values() {
        let recs = records(
            r#" [ {"z" : 1 , "a":"x\"y","中文":null,"M":{"b":[1,{"c":2}]},"t":true,"f":-1.5e+3},
                 {}, {"a\u0062":"\u5730"} ] "#,
        )
        .unwrap();
        assert_eq!(recs.len(), 3);
        let keys: Vec<&str> = recs[0].iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "中文", "M", "t", "f"]);
        assert_eq!(recs[0][1].1, r#""x\"y""#);
        assert_eq!(recs[0][3].1, r#"{"b":[1,{"c":2}]}"#);
        assert_eq!(recs[0][5].1, "-1.5e+3");
        assert!(recs[1].is_empty());
        assert_eq!(recs[2][0].0, "ab");
        assert_eq!(string_content(&recs[2][0].1).unwrap(), "地");
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for bad in [
            "",
            "[",
            "[{]",
            "[1]",
            "[{}",
            "[{},]",
            "[{\"a\":01}]",
            "[{\"a\":1.}]",
            "[{\"a\":-}]",
            "[{\"a\":.5}]",
            "[{\"a\":1e}]",
            "[{\"a\":tru}]",
            "[{\"a\":truex}]",
            "[{\"a\":\"x\\q\"}]",
            "[{\"a\":\"x\\u12g4\"}]",
            "[{\"a\":\"tab\there\"}]",
            "[{\"a\":{\"b\":}}]",
            "[{\"a\":1,}]",
            "[{\"a\" 1}]",
            "[{a:1}]",
            "[{}] x",
            "[{\"a\":\"unterminated}]",
            "[{\"a\":[1,2}]",
            "[{\"a\":[1,2]]}]",
            "[{\"a\":{\"b\":1]}]",
        ] {
            assert!(records(bad).is_err(), "{bad:?} accepted");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err()
                    || !bad.trim_start().starts_with("[{"),
                "{bad:?} is valid JSON"
            );
        }
    }

    #[test]
    fn finds_quotes_and_backslashes_at_every_offset() {
        for len in 0..40 {
            for mark in [b'"', b'\\'] {
                let mut b = vec![b'x'; len];
                b.push(mark);
                b.extend_from_slice(b"\"yy");
                for from in 0..=len {
                    assert_eq!(quote_or_backslash(&b, from), Some(len), "{len} {from}");
                }
            }
            let b = vec![b'x'; len];
            assert_eq!(quote_or_backslash(&b, 0), None);
        }
        assert!(has_control(b"abc\x01"));
        assert!(!has_control("地市 abc".as_bytes()));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = format!(
            "[{{\"a\":{}1{}}}]",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(records(&deep).is_err());
        let ok = format!("[{{\"a\":{}1{}}}]", "[".repeat(60), "]".repeat(60));
        assert_eq!(records(&ok).unwrap().len(), 1);
    }

    #[test]
    fn stops_when_asked() {
        let mut buf = Vec::new();
        let mut seen = 0;
        let n = scan(r#"[{"a":1},{"a":2},{"a":3}]"#, &mut buf, |_| {
            seen += 1;
            seen < 2
        })
        .unwrap();
        assert_eq!((n, seen), (2, 2));
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "[\\PC\t\n\"\\\\/]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z地市\"]{1,3}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever serde_json writes, the scanner reads back to the same values.
        #[test]
        fn agrees_with_serde_json(
            recs in prop::collection::vec(
                prop::collection::vec(("[a-z地市\"\\\\ ]{1,4}", json_value()), 0..5), 0..4),
            pretty in any::<bool>(),
        ) {
            let page: Vec<serde_json::Value> = recs
                .iter()
                .map(|r| serde_json::Value::Object(r.iter().cloned().collect()))
                .collect();
            let text = if pretty {
                serde_json::to_string_pretty(&page).unwrap()
            } else {
                serde_json::to_string(&page).unwrap()
            };
            let got = records(&text).unwrap();
            // Compared with serde_json's own reading of the same text (its float
            // parsing does not always round-trip what it wrote).
            let page: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(got.len(), page.len());
            for (rec, want) in got.iter().zip(&page) {
                let want = want.as_object().unwrap();
                prop_assert_eq!(rec.len(), want.len());
                for (k, raw) in rec {
                    let v: serde_json::Value = serde_json::from_str(raw).unwrap();
                    prop_assert_eq!(Some(&v), want.get(k));
                }
            }
        }
    }
}
