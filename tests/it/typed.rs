//! Typed columns (#6): lossless detection, asked types, schema files, time zones,
//! Hive partitions with awkward values, CSV encodings, file metadata, `jdop schema`.

use std::collections::BTreeMap;
use std::fs;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, TimestampMillisecondType};
use arrow_array::Array;
use jdop::manifest::Manifest;
use jdop::sim::DatasetSpec;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::util::*;

/// Records in the platform's shapes (one page of 2 records each at --page-size 2).
pub fn platform_records() -> Vec<String> {
    let mut recs = Vec::new();
    for i in 0..10 {
        recs.push(format!(
            r#"{{"金额":"{amt}","code":"0142{i}","uscc":"91330100{i:010}","day":"2019-01-{d:02}","cn":"2023年01月{d:02}日","at":"2022-08-29 15:44:{d:02}.{ms:03}","ok":"{ok}","empty":"{empty}","n":{n},"epoch":{epoch},"地市":"{city}"}}"#,
            amt = if i % 2 == 0 { "5000.00".to_string() } else { format!("12.{i}") },
            d = i + 1,
            ms = i * 7,
            ok = i % 3 == 0,
            empty = if i % 4 == 0 { String::new() } else { format!("{}", i * 100) },
            n = i,
            epoch = 1_700_000_000_000i64 + i as i64,
            city = ["杭州市", "宁波市"][i % 2],
        ));
    }
    recs
}

fn types(m: &Manifest) -> BTreeMap<String, (String, String, Option<String>)> {
    m.columns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                (c.arrow_type.clone(), c.rule.clone(), c.format.clone()),
            )
        })
        .collect()
}

fn fixed_env(recs: Vec<String>) -> (Env, DatasetSpec) {
    let spec = DatasetSpec::fixed("cata_1", recs);
    (Env::new(vec![spec.clone()]), spec)
}

#[test]
fn text_columns_are_typed_losslessly_and_the_manifest_says_why() {
    let (env, spec) = fixed_env(platform_records());
    env.export("cata_1", "snap", &["-q", "--page-size", "3"])
        .ok();
    let dir = env.path("snap");
    assert_parquet_matches(&dir, &spec);
    let m = manifest(&dir);
    let t = types(&m);
    let ty = |c: &str| t[c].0.as_str();
    assert_eq!(ty("金额"), "Decimal128(18, 2)");
    assert_eq!(t["金额"].1, "decimal-text");
    assert_eq!(ty("code"), "Utf8", "leading zeros stay text");
    assert_eq!(ty("uscc"), "Utf8", "18-digit codes stay text");
    assert_eq!(t["uscc"].1, "digit-code");
    assert_eq!(ty("day"), "Date32");
    assert_eq!(t["day"].2.as_deref(), Some("yyyy-MM-dd"));
    assert_eq!(ty("cn"), "Date32");
    assert_eq!(t["cn"].2.as_deref(), Some("yyyy年MM月dd日"));
    assert!(ty("at").starts_with("Timestamp("), "{}", ty("at"));
    assert_eq!(t["at"].2.as_deref(), Some("yyyy-MM-dd HH:mm:ss.SSS"));
    assert_eq!(ty("ok"), "Boolean");
    assert_eq!(ty("empty"), "Int64");
    let empty = m.columns.iter().find(|c| c.name == "empty").unwrap();
    assert_eq!((empty.empty_strings, empty.empty_as_null), (3, 3));
    assert_eq!(ty("n"), "Int64");
    assert_eq!(t["n"].1, "json-int");
    assert_eq!(ty("epoch"), "Int64", "epoch ms only when asked");
    // Exact decimal values, not floats.
    let batches = read_parquet(&dir);
    let amt = batches[0].column(0).as_primitive::<Decimal128Type>();
    assert_eq!((amt.value(0), amt.value(1)), (500_000, 1_210));
}

#[test]
fn no_detect_keeps_text_and_asked_types_are_checked_against_every_value() {
    let (env, _) = fixed_env(platform_records());
    env.export("cata_1", "plain", &["-q", "--no-detect"]).ok();
    let m = manifest(&env.path("plain"));
    for c in &m.columns {
        if c.name != "n" && c.name != "epoch" {
            assert_eq!(c.arrow_type, "Utf8", "{}", c.name);
        }
    }

    // code=int64: "01425" does not print back; the error names column, page, value.
    let r = env.export(
        "cata_1",
        "bad",
        &["-q", "--page-size", "2", "--type", "code=int64"],
    );
    r.fails_with(8)
        .stderr_has("page 1: column `code` value \"01420\" does not fit int64 (from --type)");
    assert!(!env.path("bad").exists(), "nothing published");

    // With --on-mismatch string the column stays text and the manifest says so.
    env.export(
        "cata_1",
        "fallback",
        &["-q", "--type", "code=int64", "--on-mismatch", "string"],
    )
    .ok();
    let m = manifest(&env.path("fallback"));
    let code = m.columns.iter().find(|c| c.name == "code").unwrap();
    assert_eq!(
        (code.arrow_type.as_str(), code.rule.as_str()),
        ("Utf8", "mismatch-fallback")
    );
    assert_eq!(code.asked_type.as_deref(), Some("int64"));
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("page 1 value \"01420\"")),
        "{:?}",
        m.warnings
    );

    // Codes typed on request; epoch milliseconds on request; numbers kept as text.
    env.export(
        "cata_1",
        "asked",
        &[
            "-q",
            "--type",
            "uscc=int64",
            "--type",
            "epoch=epoch_ms",
            "--type",
            "n=string",
            "--type",
            "金额=decimal(10,3)",
        ],
    )
    .ok();
    let m = manifest(&env.path("asked"));
    let t = types(&m);
    assert_eq!(t["uscc"].0, "Int64");
    assert_eq!(t["uscc"].1, "type-flag");
    assert!(t["epoch"].0.contains("UTC"), "{}", t["epoch"].0);
    assert_eq!(t["n"].0, "Utf8");
    assert_eq!(t["金额"].0, "Decimal128(10, 3)");
    let b = read_parquet(&env.path("asked"));
    let i = b[0].schema().index_of("epoch").unwrap();
    let ts = b[0].column(i).as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.value(0), 1_700_000_000_000);
}

#[test]
fn empty_strings_keep_a_column_text_when_asked() {
    let (env, _) = fixed_env(platform_records());
    env.export("cata_1", "snap", &["-q", "--empty-as-null=false"])
        .ok();
    let m = manifest(&env.path("snap"));
    let t = types(&m);
    assert_eq!(t["empty"].0, "Utf8");
    assert_eq!(t["empty"].1, "empty-strings-kept");
    assert_eq!(
        t["金额"].0, "Decimal128(18, 2)",
        "columns without empties still typed"
    );
}

#[test]
fn a_schema_file_pins_types_and_order() {
    let (env, _) = fixed_env(platform_records());
    env.export("cata_1", "first", &["-q"]).ok();
    // A previous manifest works as a schema file: same types again.
    let prev = env.path("first").join("manifest.json");
    env.export(
        "cata_1",
        "second",
        &["-q", "--schema", prev.to_str().unwrap()],
    )
    .ok();
    let a = manifest(&env.path("first"));
    let b = manifest(&env.path("second"));
    let ta: Vec<_> = a.columns.iter().map(|c| (&c.name, &c.arrow_type)).collect();
    let tb: Vec<_> = b.columns.iter().map(|c| (&c.name, &c.arrow_type)).collect();
    assert_eq!(ta, tb);
    assert!(b.columns.iter().any(|c| c.rule == "schema-file"));

    // A small {"COL": "TYPE"} file: its columns first, absent ones kept (all null).
    let file = env.path("types.json");
    fs::write(&file, r#"{"gone":"date","day":"string","ok":"int64"}"#).unwrap();
    let r = env.export(
        "cata_1",
        "pinned",
        &["-q", "--schema", file.to_str().unwrap()],
    );
    r.fails_with(8)
        .stderr_has("column `ok` value \"true\" does not fit int64 (from --schema)");
    fs::write(&file, r#"{"gone":"date","day":"string"}"#).unwrap();
    env.export(
        "cata_1",
        "pinned",
        &["-q", "--schema", file.to_str().unwrap()],
    )
    .ok();
    let m = manifest(&env.path("pinned"));
    assert_eq!(m.columns[0].name, "gone");
    assert_eq!(m.columns[0].arrow_type, "Date32");
    assert_eq!(m.columns[1].name, "day");
    assert_eq!(m.columns[1].arrow_type, "Utf8");
    let b = read_parquet(&env.path("pinned"));
    assert_eq!(b[0].column(0).null_count(), b[0].num_rows());

    fs::write(&file, r#"{"day":"money"}"#).unwrap();
    env.export("cata_1", "x", &["-q", "--schema", file.to_str().unwrap()])
        .fails_with(2)
        .stderr_has("unknown type `money`");
}

#[test]
fn shanghai_time_zone_is_applied_when_asked() {
    let (env, _) = fixed_env(vec![r#"{"at":"1970-01-01 08:00:01"}"#.to_string()]);
    env.export("cata_1", "snap", &["-q", "--timezone", "Asia/Shanghai"])
        .ok();
    let m = manifest(&env.path("snap"));
    assert!(
        m.columns[0].arrow_type.contains("+08:00"),
        "{}",
        m.columns[0].arrow_type
    );
    let b = read_parquet(&env.path("snap"));
    let ts = b[0].column(0).as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.value(0), 1000, "08:00:01 in Shanghai is 00:00:01 UTC");
    // Its manifest pins the zone as well as the type.
    let prev = env.path("snap").join("manifest.json");
    env.export(
        "cata_1",
        "again",
        &["-q", "--schema", prev.to_str().unwrap()],
    )
    .ok();
    let m = manifest(&env.path("again"));
    assert!(
        m.columns[0].arrow_type.contains("+08:00"),
        "{}",
        m.columns[0].arrow_type
    );
}

/// Values that must not escape the output folder and must come back intact.
pub fn awkward_values() -> Vec<Option<String>> {
    let mut v: Vec<Option<String>> = [
        "杭州市",
        "a/b",
        "..",
        ".",
        "a=b",
        "%2F",
        "x y",
        "\\",
        "line\nbreak",
        "",
        "__HIVE_DEFAULT_PARTITION__",
        "../../etc",
        "🙂",
        "q'\"#?*:",
    ]
    .iter()
    .map(|s| Some(s.to_string()))
    .collect();
    v.push(None);
    // Long but within a folder name (a longer one is refused, tested below).
    v.push(Some("长".repeat(70)));
    v
}

pub fn awkward_records() -> Vec<String> {
    awkward_values()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let city = match v {
                Some(s) => serde_json::to_string(s).unwrap(),
                None => "null".into(),
            };
            format!(r#"{{"id":"{i}","地市":{city},"amt":"{i}.5"}}"#)
        })
        .collect()
}

#[test]
fn hive_partitions_hold_awkward_values_inside_the_output() {
    let (env, spec) = fixed_env(awkward_records());
    let n = awkward_values().len();
    for (out, extra) in [("pq", vec![]), ("csv", vec!["--format", "csv"])] {
        let mut args = vec!["-q", "--partition-by", "地市", "--page-size", "4"];
        args.extend(extra);
        env.export("cata_1", out, &args).ok();
        let dir = env.path(out);
        let m = manifest(&dir);
        assert_eq!(m.partition_by.as_deref(), Some("地市"));
        assert_eq!(m.files.len(), n, "one folder per value");
        let mut seen = Vec::new();
        for f in &m.files {
            let parts: Vec<&str> = f.path.split('/').collect();
            assert_eq!(parts.len(), 2, "{}", f.path);
            assert!(parts[0].starts_with("地市="), "{}", f.path);
            assert!(parts[0].len() <= 255);
            let p = dir.join(&f.path);
            assert!(p
                .canonicalize()
                .unwrap()
                .starts_with(dir.canonicalize().unwrap()));
            assert_eq!(sha256_of(&p), f.sha256);
            let (_, value) = jdop::sink::hive::parse_partition_dir(parts[0]).unwrap();
            seen.push(value);
        }
        // Every value comes back from its folder name.
        for v in awkward_values() {
            let lossless = jdop::sink::hive::is_lossless("地市", v.as_deref());
            assert_eq!(seen.contains(&v), lossless, "{v:?}");
        }
        assert!(fs::read_to_string(dir.join("query.sql"))
            .unwrap()
            .contains("hive_partitioning = true"));
        let rows: u64 = m.files.iter().map(|f| f.rows).sum();
        assert_eq!(rows, spec.rows);
    }
    // The Parquet files leave the partition column out, all with one schema.
    let m = manifest(&env.path("pq"));
    let mut schemas = Vec::new();
    for f in &m.files {
        let r = SerializedFileReader::new(fs::File::open(env.path("pq").join(&f.path)).unwrap())
            .unwrap();
        let names: Vec<String> = r
            .metadata()
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        schemas.push(names);
    }
    assert!(schemas.iter().all(|s| s == &["id", "amt"]), "{schemas:?}");
}

fn sha256_of(p: &std::path::Path) -> String {
    jdop::sink::sha256_file(p).unwrap()
}

#[test]
fn partitioning_by_a_missing_column_is_a_usage_error() {
    let (env, _) = fixed_env(platform_records());
    env.export("cata_1", "snap", &["-q", "--partition-by", "nope"])
        .fails_with(2)
        .stderr_has("has no such column");
}

#[test]
fn csv_in_gb18030_with_lf_and_canonical_typed_text() {
    let (env, _) = fixed_env(platform_records());
    env.export(
        "cata_1",
        "snap",
        &[
            "-q",
            "--format",
            "csv",
            "--csv-encoding",
            "gb18030",
            "--csv-line-ending",
            "lf",
        ],
    )
    .ok();
    let m = manifest(&env.path("snap"));
    let bytes = fs::read(env.path("snap").join(&m.files[0].path)).unwrap();
    assert!(std::str::from_utf8(&bytes).is_err(), "not UTF-8");
    let (text, _, bad) = encoding_rs::GB18030.decode(&bytes);
    assert!(!bad);
    let lines: Vec<&str> = text.lines().collect();
    assert!(!text.contains('\r'));
    assert!(
        lines[0].starts_with("金额,code,uscc,day,cn,at,"),
        "{}",
        lines[0]
    );
    // Canonical text: decimals at the scale, ISO dates for the Chinese shape.
    assert!(lines[2].starts_with("12.10,01421,"), "{}", lines[2]);
    assert!(lines[1].contains(",2023-01-01,"), "{}", lines[1]);
    let sql = fs::read_to_string(env.path("snap").join("query.sql")).unwrap();
    assert!(sql.contains("'金额': 'DECIMAL(18,2)'"), "{sql}");
}

#[test]
fn parquet_files_carry_dataset_update_date_and_snapshot_time() {
    let (env, _) = fixed_env(platform_records());
    env.export_env(
        "cata_1",
        "snap",
        &["-q"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    )
    .ok();
    let m = manifest(&env.path("snap"));
    let r =
        SerializedFileReader::new(fs::File::open(env.path("snap").join(&m.files[0].path)).unwrap())
            .unwrap();
    let kv: BTreeMap<String, String> = r
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(kv["jdop.dataset"], "cata_1");
    assert!(!kv["jdop.update_date"].is_empty());
    assert_eq!(kv["jdop.snapshot_time"], "2023-11-14T22:13:20.000Z");
}

#[test]
fn schema_command_prints_types_and_its_json_pins_an_export() {
    let (env, _) = fixed_env(platform_records());
    let base = env.sim.base_url();
    let r = env.jdop(&["schema", "cata_1", "--base-url", &base]);
    r.ok();
    let text = r.stdout();
    assert!(
        text.contains("Decimal128(18, 2)") && text.contains("decimal-text"),
        "{text}"
    );
    assert_eq!(env.sim.stats().data_calls, 1, "one page of 10 records");
    let r = env.jdop(&[
        "schema",
        "cata_1",
        "--base-url",
        &base,
        "--json",
        "--sample-pages",
        "1",
    ]);
    r.ok();
    let file = env.path("schema.json");
    fs::write(&file, r.stdout()).unwrap();
    env.export(
        "cata_1",
        "snap",
        &["-q", "--schema", file.to_str().unwrap()],
    )
    .ok();
    assert!(manifest(&env.path("snap"))
        .columns
        .iter()
        .any(|c| c.rule == "schema-file"));
    assert!(!env.dir.path().read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("staging")));
}

#[test]
fn a_type_for_a_column_that_does_not_exist_is_warned_about() {
    let (env, _) = fixed_env(platform_records());
    env.export("cata_1", "snap", &["-q", "--type", "金額=decimal"])
        .ok()
        .stderr_has("has no column `金額` (--type)");
}

#[test]
fn a_value_too_long_for_a_folder_is_refused_and_the_pages_are_kept() {
    let mut recs = awkward_records();
    recs.truncate(3);
    recs.push(format!(
        r#"{{"id":"9","地市":"{}","amt":"1.5"}}"#,
        "长".repeat(200)
    ));
    let (env, _) = fixed_env(recs);
    env.export("cata_1", "snap", &["-q", "--partition-by", "地市"])
        .fails_with(2)
        .stderr_has("is too long for a folder name");
    assert!(!env.path("snap").exists());
    // The fetched pages were kept: the next run (another column) fetches nothing.
    env.sim.reset_stats();
    env.export("cata_1", "snap", &["-q", "--partition-by", "amt"])
        .ok();
    assert_eq!(env.sim.stats().data_calls, 0, "pages reused from the spool");
    assert!(manifest(&env.path("snap")).pages_reused > 0);
}

#[test]
fn conflicting_or_empty_options_are_usage_errors() {
    let (env, _) = fixed_env(platform_records());
    env.export(
        "cata_1",
        "x",
        &[
            "-q",
            "--format",
            "csv",
            "--csv-bom",
            "--csv-encoding",
            "gb18030",
        ],
    )
    .fails_with(2)
    .stderr_has("--csv-bom");
    env.export("cata_1", "x", &["-q", "--type", "=int64"])
        .fails_with(2)
        .stderr_has("expected COL=TYPE");
}

#[test]
fn gb18030_csv_records_its_encoding_for_query_sql() {
    let (env, _) = fixed_env(platform_records());
    env.export(
        "cata_1",
        "snap",
        &["-q", "--format", "csv", "--csv-encoding", "gb18030"],
    )
    .ok();
    let m = manifest(&env.path("snap"));
    assert_eq!(
        m.csv.map(|c| c.encoding),
        Some(jdop::sink::CsvEncoding::Gb18030)
    );
    let sql = fs::read_to_string(env.path("snap").join("query.sql")).unwrap();
    assert!(
        sql.contains("LOAD encodings;") && sql.contains("encoding = 'gb18030'"),
        "{sql}"
    );
}

#[test]
fn a_refuted_type_stops_the_fetch_early_and_keeps_the_pages() {
    // ORGCODE holds zero-padded codes: `int64` is refuted by the first pages.
    let spec = DatasetSpec::credit("cata_1", 6000);
    let env = Env::new(vec![spec.clone()]);
    env.export(
        "cata_1",
        "snap",
        &[
            "-q",
            "--page-size",
            "50",
            "-j",
            "2",
            "--type",
            "ORGCODE=int64",
        ],
    )
    .fails_with(8)
    .stderr_has("column `ORGCODE` value");
    let first = env.sim.stats().data_calls;
    assert!(first < 60, "stopped early: {first} of 120 pages fetched");
    env.sim.reset_stats();
    env.export("cata_1", "snap", &["-q", "--page-size", "50", "-j", "2"])
        .ok();
    let m = manifest(&env.path("snap"));
    assert!(m.pages_reused > 0);
    assert_eq!(env.sim.stats().data_calls, 120 - m.pages_reused);
    assert_parquet_matches(&env.path("snap"), &spec);
}
