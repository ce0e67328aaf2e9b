//! Hive-style partition directory names: `--partition-by 地市` writes
//! `地市=杭州市/part-00000.parquet`. [`partition_dir`] makes that one path component.
//!
//! **Encoding.** The column name and the value are each escaped the same way: every char
//! of `"#%'*/:<=>?[\]^{|}~`, every control char (C0, DEL, C1), U+2028/U+2029, the bidi
//! controls and U+FEFF becomes `%XX` for each of its UTF-8 bytes (uppercase hex). Every
//! other char, non-ASCII text such as `杭州市` included, is written as it is. So a
//! component never holds `/`, `\`, NUL or a control char, and is never `.` or `..`.
//! DuckDB, pyarrow and polars URL-decode partition *values* and read back the original
//! text; [`unescape`] is the inverse. Only pyarrow decodes the column *name*: DuckDB and
//! polars show it escaped (`a%3Db`), so partition by columns whose names need no escaping.
//!
//! **Null and empty.** Null is written `column=__HIVE_DEFAULT_PARTITION__`, read as NULL
//! by all three readers. The empty string is `column=`, read back as `""` by all three, so
//! it stays distinct from null. A value that is literally `__HIVE_DEFAULT_PARTITION__` is
//! written `%5F_HIVE_DEFAULT_PARTITION__`, a directory of its own: DuckDB reads it back as
//! that text, pyarrow and polars decode before comparing and read it as NULL.
//!
//! **Long values.** A component is at most [`NAME_MAX`] (255) bytes. When `column=value`
//! would be longer, the value, and a column name over 127 bytes, is cut after a whole
//! (escaped) char and followed by `~` and the first 16 hex digits of the SHA-256 of the
//! full text. As `~` is escaped everywhere else, a shortened component never equals an
//! unshortened one and distinct values keep distinct directories, but readers then see
//! `prefix~hash`: the original value is not recoverable from the path. [`is_lossless`]
//! tells whether that happens.
//!
//! **Types.** Readers infer types from the names unless told otherwise: DuckDB casts
//! `200` to BIGINT and `2024-01-02` to DATE (when every value casts back unchanged, so
//! `01425` stays text), pyarrow reads `01425` as int32 1425, polars casts integers,
//! floats, booleans and dates (and reads `""` as null in a numeric column). These
//! options keep every value a string (`out` is the snapshot folder):
//! - DuckDB: `read_parquet('out/**/*.parquet', hive_partitioning = true,
//!   hive_types_autocast = false)`, or `hive_types = {'地市': VARCHAR}`;
//! - pyarrow: `pyarrow.dataset.dataset('out', format='parquet',
//!   partitioning=ds.partitioning(pa.schema([('地市', pa.string())]), flavor='hive'))`;
//! - polars: `pl.scan_parquet('out/**/*.parquet', hive_partitioning=True,
//!   hive_schema={'地市': pl.String})`.

use sha2::{Digest, Sha256};

/// The value Hive, Spark, DuckDB, pyarrow and polars use for a null partition.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Longest file name, in bytes, on Linux file systems (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// A column name longer than this, escaped, is shortened when the component is too long.
const MAX_COLUMN: usize = 127;
/// Hex digits of the SHA-256 that end a shortened part.
const HASH_HEX: usize = 16;
/// Marks a shortened part; always escaped in ordinary text.
const SHORTENED_MARK: char = '~';

/// `escape(column)=escape(value)`, or `escape(column)=__HIVE_DEFAULT_PARTITION__` for
/// null: one path component of at most [`NAME_MAX`] bytes, safe for any input.
///
/// Over-long parts are shortened (see the module doc); [`is_lossless`] tells when.
/// An empty `column` gives `=value`, which readers disagree on (DuckDB drops it, pyarrow
/// and polars name the column `""`): callers must refuse empty partition column names.
pub fn partition_dir(column: &str, value: Option<&str>) -> String {
    let (name, _) = build(column, value);
    name
}

/// Whether [`partition_dir`] keeps `column` and `value` whole, so that
/// [`parse_partition_dir`] and the readers recover them exactly (but for the cases the
/// module doc names); false when a part was shortened.
pub fn is_lossless(column: &str, value: Option<&str>) -> bool {
    !build(column, value).1
}

/// Percent-encodes the chars of the module doc's set; keeps every other char.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// Inverse of [`escape`] for one part (column or value, without the `=`): decodes each
/// `%XX` (either case of hex); a `%` not followed by two hex digits stays as it is.
/// Bytes that decode to invalid UTF-8 (never produced by [`escape`]) become U+FFFD.
pub fn unescape(component_part: &str) -> String {
    let bytes = component_part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Splits a component made by [`partition_dir`] back into column and value (`None` for
/// null). Exact for lossless components; `None` when there is no `=`.
pub fn parse_partition_dir(component: &str) -> Option<(String, Option<String>)> {
    // Escaped parts never hold a raw '=', so the first one is the separator.
    let (column, value) = component.split_once('=')?;
    let value = (value != NULL_PARTITION).then(|| unescape(value));
    Some((unescape(column), value))
}

/// The component and whether a part was shortened.
fn build(column: &str, value: Option<&str>) -> (String, bool) {
    let mut col = escape(column);
    let mut val = match value {
        None => NULL_PARTITION.to_owned(),
        Some(v) => {
            let e = escape(v);
            if e == NULL_PARTITION {
                // Keep the literal text apart from null: `%5F_HIVE_DEFAULT_PARTITION__`.
                format!("%5F{}", &e[1..])
            } else {
                e
            }
        }
    };
    if col.len() + 1 + val.len() <= NAME_MAX {
        return (format!("{col}={val}"), false);
    }
    if col.len() > MAX_COLUMN {
        col = shorten(column, MAX_COLUMN);
    }
    // `col` is at most MAX_COLUMN bytes now, so `budget` >= 127: null (26 bytes) fits.
    let budget = NAME_MAX - col.len() - 1;
    if val.len() > budget {
        if let Some(v) = value {
            val = shorten(v, budget);
        }
    }
    (format!("{col}={val}"), true)
}

/// The escaped longest prefix of whole chars of `text` that, followed by `~` and
/// [`HASH_HEX`] hex digits of SHA-256(`text`), fits in `limit` bytes. Cutting between
/// whole chars keeps every `%XX` sequence complete and the decoded prefix valid UTF-8.
fn shorten(text: &str, limit: usize) -> String {
    let keep = limit - 1 - HASH_HEX;
    let mut out = String::with_capacity(limit);
    for c in text.chars() {
        let len = if needs_escape(c) {
            3 * c.len_utf8()
        } else {
            c.len_utf8()
        };
        if out.len() + len > keep {
            break;
        }
        push_escaped(&mut out, c);
    }
    out.push(SHORTENED_MARK);
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    out.push_str(&digest[..HASH_HEX]);
    out
}

fn needs_escape(c: char) -> bool {
    match c {
        // Hive's escapePathName set, its Windows additions and `}`; `~` marks shortening.
        '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '<' | '=' | '>' | '?' | '[' | '\\' | ']'
        | '^' | '{' | '|' | '}' | '~' => true,
        // Invisible chars that break lines or reorder how a listing reads.
        '\u{2028}'
        | '\u{2029}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}' => true,
        c => c.is_control(),
    }
}

fn push_escaped(out: &mut String, c: char) {
    if needs_escape(c) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut buf = [0u8; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    } else {
        out.push(c);
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every invariant a component must hold, whatever went in.
    fn assert_safe(component: &str) {
        assert!(!component.is_empty());
        assert!(
            component.len() <= NAME_MAX,
            "{} bytes: {component}",
            component.len()
        );
        assert!(component != "." && component != "..");
        assert!(!component.contains(['/', '\\', '\0']), "{component:?}");
        assert!(!component.chars().any(char::is_control), "{component:?}");
        assert_eq!(component.matches('=').count(), 1, "{component:?}");
    }

    fn is_shortened(component: &str) -> bool {
        component.contains(SHORTENED_MARK)
    }

    /// (value, expected component under column `地市`); `None` is null.
    const TABLE: &[(Option<&str>, &str)] = &[
        (Some("杭州市"), "地市=杭州市"),
        (Some("a/b"), "地市=a%2Fb"),
        (Some(".."), "地市=.."),
        (Some("."), "地市=."),
        (Some("a=b"), "地市=a%3Db"),
        (Some("%"), "地市=%25"),
        (Some("%2F"), "地市=%252F"),
        (Some(" "), "地市= "),
        (Some("a b"), "地市=a b"),
        (Some("\""), "地市=%22"),
        (Some("'"), "地市=%27"),
        (Some("#"), "地市=%23"),
        (Some("?"), "地市=%3F"),
        (Some("*"), "地市=%2A"),
        (Some(":"), "地市=%3A"),
        (Some("\\"), "地市=%5C"),
        (Some("\n"), "地市=%0A"),
        (Some("\t"), "地市=%09"),
        (Some("\u{1}"), "地市=%01"),
        (Some("\0"), "地市=%00"),
        (Some("\u{7f}"), "地市=%7F"),
        (Some("\u{85}"), "地市=%C2%85"),
        (Some("\u{2028}"), "地市=%E2%80%A8"),
        (Some("\u{202E}"), "地市=%E2%80%AE"),
        (Some(""), "地市="),
        (None, "地市=__HIVE_DEFAULT_PARTITION__"),
        (
            Some("__HIVE_DEFAULT_PARTITION__"),
            "地市=%5F_HIVE_DEFAULT_PARTITION__",
        ),
        (
            Some("__hive_default_partition__"),
            "地市=__hive_default_partition__",
        ),
        (Some("🙂"), "地市=🙂"),
        (Some("~"), "地市=%7E"),
        (Some("a+b"), "地市=a+b"),
        (Some("<|>"), "地市=%3C%7C%3E"),
        (Some("[{^}]"), "地市=%5B%7B%5E%7D%5D"),
        (Some("01425"), "地市=01425"),
        (Some("2024-01-02"), "地市=2024-01-02"),
    ];

    #[test]
    fn awkward_values_table() {
        for &(value, expected) in TABLE {
            let got = partition_dir("地市", value);
            assert_eq!(got, expected, "value {value:?}");
            assert_safe(&got);
            assert!(is_lossless("地市", value));
            let parsed = parse_partition_dir(&got).unwrap();
            assert_eq!(parsed, ("地市".to_owned(), value.map(str::to_owned)));
        }
        let components: std::collections::HashSet<_> = TABLE
            .iter()
            .map(|&(v, _)| partition_dir("地市", v))
            .collect();
        assert_eq!(components.len(), TABLE.len());
    }

    #[test]
    fn column_is_escaped_like_values() {
        assert_eq!(partition_dir("a=b/c", Some("v")), "a%3Db%2Fc=v");
        assert_eq!(partition_dir("地 市", Some("v")), "地 市=v");
        assert_eq!(partition_dir(".", None), ".=__HIVE_DEFAULT_PARTITION__");
        assert_eq!(
            parse_partition_dir("a%3Db%2Fc=v").unwrap(),
            ("a=b/c".to_owned(), Some("v".to_owned()))
        );
        assert_safe(&partition_dir("", Some("")));
    }

    #[test]
    fn long_chinese_value_is_shortened_deterministically() {
        let value: String = "杭州市西湖区".chars().cycle().take(300).collect();
        let got = partition_dir("地市", Some(&value));
        assert_safe(&got);
        assert!(!is_lossless("地市", Some(&value)));
        assert_eq!(got, partition_dir("地市", Some(&value)));
        let (prefix, hash) = got.rsplit_once('~').unwrap();
        assert!(prefix.starts_with("地市=杭州市西湖区"));
        assert_eq!(hash.len(), HASH_HEX);
        let full = hex::encode(Sha256::digest(value.as_bytes()));
        assert_eq!(hash, &full[..HASH_HEX]);
        // 255 - 1 - 16 = 238 bytes at most before `~`, cut between 3-byte chars.
        assert!(prefix.len() <= NAME_MAX - 1 - HASH_HEX);
        assert!(prefix.len() > NAME_MAX - 1 - HASH_HEX - 3);
        let mut other = value.clone();
        other.push('市');
        assert_ne!(got, partition_dir("地市", Some(&other)));
    }

    #[test]
    fn shortening_never_splits_an_escape() {
        // \u{85} escapes to 6 bytes, '/' to 3: every cut position gets exercised.
        for pad in 0..8 {
            let value = format!("{}{}", "x".repeat(pad), "\u{85}/".repeat(100));
            let got = partition_dir("c", Some(&value));
            assert_safe(&got);
            let (_, v) = parse_partition_dir(&got).unwrap();
            let v = v.unwrap();
            assert!(!v.contains('\u{FFFD}'), "{got}");
            let (prefix, _) = v.rsplit_once('~').unwrap();
            assert!(value.starts_with(prefix), "{got}");
        }
    }

    #[test]
    fn length_boundary() {
        // "c=" is 2 bytes.
        let fits = "v".repeat(NAME_MAX - 2);
        assert_eq!(partition_dir("c", Some(&fits)), format!("c={fits}"));
        assert!(is_lossless("c", Some(&fits)));
        let over = "v".repeat(NAME_MAX - 1);
        let got = partition_dir("c", Some(&over));
        assert!(!is_lossless("c", Some(&over)));
        assert_eq!(got.len(), NAME_MAX);
        assert_safe(&got);
        // Escaping counts: 84 '/' are 252 bytes escaped, plus "c=" is 254.
        assert!(is_lossless("c", Some(&"/".repeat(84))));
        assert!(!is_lossless("c", Some(&"/".repeat(85))));
    }

    #[test]
    fn long_column_is_shortened_too() {
        let column = "列".repeat(100);
        for value in [None, Some(""), Some("v"), Some(&*"值".repeat(100))] {
            let got = partition_dir(&column, value);
            assert_safe(&got);
            assert!(!is_lossless(&column, value));
            let (col, _) = got.split_once('=').unwrap();
            assert!(col.len() <= MAX_COLUMN && col.contains('~'));
        }
        assert_eq!(
            partition_dir(&column, None).split_once('=').unwrap().1,
            NULL_PARTITION
        );
    }

    #[test]
    fn unescape_is_lenient() {
        assert_eq!(unescape("%zz%2"), "%zz%2");
        assert_eq!(unescape("%e6%9d%ad"), "杭");
        assert_eq!(unescape("%"), "%");
        assert_eq!(unescape("%FF"), "\u{FFFD}");
        assert_eq!(parse_partition_dir("novalue"), None);
    }

    fn awkward_string(max: usize) -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            'a', '0', '.', '_', '~', '%', '/', '\\', '=', ' ', '\n', '\0', '\u{85}', '\u{2028}',
            '杭', '🙂', 'F', '2',
        ]);
        prop::collection::vec(chars, 0..max).prop_map(|v| v.into_iter().collect())
    }

    fn any_string() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            awkward_string(40),
            awkward_string(200),
            ".{0,300}"
        ]
    }

    proptest! {
        #[test]
        fn always_safe(
            column in any_string(),
            value in proptest::option::of(any_string()),
        ) {
            assert_safe(&partition_dir(&column, value.as_deref()));
        }

        #[test]
        fn lossless_round_trip(
            column in any_string(),
            value in proptest::option::of(any_string()),
        ) {
            let got = partition_dir(&column, value.as_deref());
            prop_assert_eq!(is_lossless(&column, value.as_deref()), !is_shortened(&got));
            if is_lossless(&column, value.as_deref()) {
                prop_assert_eq!(unescape(&escape(&column)), column.clone());
                prop_assert_eq!(parse_partition_dir(&got), Some((column, value)));
            }
        }

        #[test]
        fn distinct_values_distinct_components(
            column in any_string(),
            a in proptest::option::of(any_string()),
            b in proptest::option::of(any_string()),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(
                partition_dir(&column, a.as_deref()),
                partition_dir(&column, b.as_deref())
            );
        }

        #[test]
        fn shared_long_prefix_stays_distinct(
            prefix in awkward_string(400),
            a in any_string(),
            b in any_string(),
        ) {
            prop_assume!(a != b);
            let (a, b) = (format!("{prefix}{a}"), format!("{prefix}{b}"));
            prop_assert_ne!(partition_dir("c", Some(&a)), partition_dir("c", Some(&b)));
        }
    }
}
