//! Hostile and surprising responses: each has a defined outcome (records kept, or
//! a clear error) and none panics. The outcome is checked on the whole page path:
//! envelope, records, schema, Arrow conversion and CSV cells.

use jdop::convert::Converter;
use jdop::error::CallError;
use jdop::platform::{parse_page, parse_total, split_records, UpdateDate};
use jdop::schema::Inferrer;
use proptest::prelude::*;

#[derive(Debug)]
enum Want {
    /// A page of this many records that converts to Arrow.
    Rows(usize),
    /// An error whose text contains this, transient or not.
    Err(&'static str, bool),
}

/// Runs a body through the page path; returns the record count or the error text.
fn run(body: &[u8]) -> Result<usize, (String, bool)> {
    let array = parse_page(body).map_err(|e| (e.to_string(), e.is_transient()))?;
    let records = split_records(&array).map_err(|e| (e.to_string(), false))?;
    let n = records.len();
    let schema = Inferrer::observe_page(&records).finish();
    if !schema.columns.is_empty() {
        let batch = Converter::new(&schema)
            .decode(&[array.as_bytes()])
            .map_err(|(_, e)| (format!("{e}: {:?}", std::error::Error::source(&e)), false))?;
        assert_eq!(batch.num_rows(), n);
    }
    Ok(n)
}

fn deep(levels: usize) -> String {
    format!(
        "{{\"status\":1,\"data\":[{{\"d\":{}1{}}}]}}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

#[test]
fn thirty_hostile_bodies_have_defined_outcomes() {
    let big_record = format!("{{\"t\":\"{}\"}}", "长".repeat(1000));
    let fifty_mb = format!(
        "{{\"status\":1,\"data\":[{}]}}",
        vec![big_record.as_str(); 50 * 1024 * 1024 / big_record.len()].join(",")
    );
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "html error page",
            b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            Want::Err("not the JSON envelope", true),
        ),
        ("empty body", b"".to_vec(), Want::Err("empty body", true)),
        (
            "whitespace body",
            b"  \r\n ".to_vec(),
            Want::Err("empty body", true),
        ),
        (
            "truncated json",
            br#"{"status":1,"data":[{"a":1},{"a""#.to_vec(),
            Want::Err("truncated", true),
        ),
        (
            "data as a json string",
            br#"{"status":1,"data":"[{\"a\":1},{\"a\":2}]"}"#.to_vec(),
            Want::Rows(2),
        ),
        (
            "data as a plain string",
            br#"{"status":1,"data":"oops"}"#.to_vec(),
            Want::Err("`data` is a string", false),
        ),
        (
            "status as a string",
            br#"{"status":"1","data":[{"a":1}]}"#.to_vec(),
            Want::Rows(1),
        ),
        (
            "status zero with message",
            r#"{"status":0,"msg":"无权限"}"#.as_bytes().to_vec(),
            Want::Err("无权限", false),
        ),
        (
            "status zero as string",
            r#"{"status":"0","msg":"参数错误"}"#.as_bytes().to_vec(),
            Want::Err("参数错误", false),
        ),
        (
            "status missing",
            br#"{"data":[]}"#.to_vec(),
            Want::Err("no `status`", true),
        ),
        (
            "status 2",
            br#"{"status":2,"msg":"x"}"#.to_vec(),
            Want::Err("status 2", false),
        ),
        (
            "data null",
            br#"{"status":1,"data":null}"#.to_vec(),
            Want::Rows(0),
        ),
        (
            "data missing",
            br#"{"status":1}"#.to_vec(),
            Want::Err("no `data`", false),
        ),
        (
            "data an object",
            br#"{"status":1,"data":{"a":1}}"#.to_vec(),
            Want::Err("is an object", false),
        ),
        (
            "data a number",
            br#"{"status":1,"data":5}"#.to_vec(),
            Want::Err("expected an array", false),
        ),
        (
            "records that are numbers",
            br#"{"status":1,"data":[1,2]}"#.to_vec(),
            Want::Err("record 0 is not a JSON object", false),
        ),
        (
            "a null record",
            br#"{"status":1,"data":[{"a":1},null]}"#.to_vec(),
            Want::Err("record 1 is not a JSON object", false),
        ),
        (
            "nested arrays as records",
            br#"{"status":1,"data":[[{"a":1}]]}"#.to_vec(),
            Want::Err("not a JSON object", false),
        ),
        (
            "empty records",
            br#"{"status":1,"data":[{},{}]}"#.to_vec(),
            Want::Rows(2),
        ),
        (
            "bom before the envelope",
            b"\xEF\xBB\xBF{\"status\":1,\"data\":[{\"a\":1}]}".to_vec(),
            Want::Rows(1),
        ),
        (
            "invalid utf-8 in a value",
            b"{\"status\":1,\"data\":[{\"a\":\"\xff\xfe\"}]}".to_vec(),
            Want::Err("invalid", true),
        ),
        (
            "gbk bytes",
            b"{\"status\":1,\"data\":[{\"a\":\"\xba\xbc\xd6\xdd\"}]}".to_vec(),
            Want::Err("invalid", true),
        ),
        (
            "duplicate keys in one object",
            br#"{"status":1,"data":[{"a":"1","a":"2"}]}"#.to_vec(),
            Want::Rows(1),
        ),
        (
            "integer beyond i64",
            br#"{"status":1,"data":[{"n":123456789012345678901234567890}]}"#.to_vec(),
            Want::Rows(1),
        ),
        (
            "float beyond f64",
            br#"{"status":1,"data":[{"n":1e999}]}"#.to_vec(),
            Want::Rows(1),
        ),
        (
            "negative zero and exponents",
            br#"{"status":1,"data":[{"n":-0},{"n":1E+2},{"n":2.5e-3}]}"#.to_vec(),
            Want::Rows(3),
        ),
        ("nesting 100 deep", deep(100).into_bytes(), Want::Rows(1)),
        (
            "nesting 10000 deep",
            deep(10_000).into_bytes(),
            Want::Err("nested deeper than 128", false),
        ),
        ("nesting 120 deep", deep(120).into_bytes(), Want::Rows(1)),
        (
            "control characters and escapes",
            br#"{"status":1,"data":[{"a":"\u0000\u001f\n\t\"\\"}]}"#.to_vec(),
            Want::Rows(1),
        ),
        (
            "surrogate pair emoji and rare cjk",
            r#"{"status":1,"data":[{"e":"\ud83d\ude00 𠀀 𪚥"}]}"#
                .as_bytes()
                .to_vec(),
            Want::Rows(1),
        ),
        (
            "lone surrogate",
            br#"{"status":1,"data":[{"e":"\ud800"}]}"#.to_vec(),
            Want::Err("surrogate", false),
        ),
        (
            "trailing garbage",
            br#"{"status":1,"data":[]} <html>"#.to_vec(),
            Want::Err("trailing", true),
        ),
        (
            "keys with quotes and empty key",
            br#"{"status":1,"data":[{"":"e","a\"b":"q"}]}"#.to_vec(),
            Want::Rows(1),
        ),
        (
            "mixed shapes in one column",
            br#"{"status":1,"data":[{"m":{"x":1}},{"m":[1]},{"m":"s"},{"m":5}]}"#.to_vec(),
            Want::Rows(4),
        ),
        (
            "array mixing objects and scalars",
            br#"{"status":1,"data":[{"l":[{"x":1},2,"s"]}]}"#.to_vec(),
            Want::Rows(1),
        ),
        (
            "fifty megabyte page",
            fifty_mb.into_bytes(),
            Want::Rows(50 * 1024 * 1024 / big_record.len()),
        ),
    ];
    assert!(cases.len() >= 30);
    let only = std::env::var("HOSTILE_ONLY").ok();
    for (name, body, want) in &cases {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        eprintln!("case: {name}");
        let got =
            std::panic::catch_unwind(|| run(body)).unwrap_or_else(|_| panic!("`{name}` panicked"));
        match (want, got) {
            (Want::Rows(n), Ok(m)) => assert_eq!(*n, m, "{name}"),
            (Want::Err(text, transient), Err((msg, t))) => {
                assert!(msg.contains(text), "{name}: `{msg}` lacks `{text}`");
                assert_eq!(*transient, t, "{name}: transient? `{msg}`");
            }
            (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn totals_and_update_dates_of_odd_shapes() {
    assert_eq!(parse_total(br#"{"status":1,"data":"8021"}"#).unwrap(), 8021);
    for bad in [
        &br#"{"status":1,"data":-1}"#[..],
        br#"{"status":1,"data":1.5}"#,
        br#"{"status":1,"data":null}"#,
        br#"{"status":1}"#,
    ] {
        assert!(
            matches!(parse_total(bad), Err(CallError::BadData(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let d = UpdateDate::from_body(br#"{"status":1,"data":{"date":"2024-01-01"}}"#).unwrap();
    assert_eq!(d.iso, None, "an unknown shape is kept raw, not guessed");
    assert_eq!(d.raw["date"], "2024-01-01");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Arbitrary bytes never panic the page path.
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = run(&body);
        let _ = parse_total(&body);
        let _ = UpdateDate::from_body(&body);
    }

    /// Arbitrary JSON records (any shapes, conflicts, nesting) either convert with
    /// every row kept or are refused with an error; never a panic.
    #[test]
    fn arbitrary_records_convert_or_fail_cleanly(records in proptest::collection::vec(json_object(), 0..12)) {
        let data: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        let body = format!("{{\"status\":1,\"data\":[{}]}}", data.join(","));
        match run(body.as_bytes()) {
            Ok(n) => prop_assert_eq!(n, records.len()),
            Err((msg, _)) => prop_assert!(false, "valid records refused: {msg}\n{body}"),
        }
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e12f64..1e12).prop_map(serde_json::Value::from),
        "[a-z0-9地市 ]{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-c]", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = serde_json::Value> {
    proptest::collection::btree_map("[a-e地]", json_value(), 0..5)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
}
