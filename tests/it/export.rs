use jdop::sim::{DatasetSpec, DateFormat, SimConfig, Typing};
use jdop::sink::sha256_file;

use crate::util::*;

fn credit(rows: u64, typing: Typing) -> DatasetSpec {
    DatasetSpec::credit("cata_3820", rows).with_typing(typing)
}

#[test]
fn every_record_arrives_once_in_parquet_for_each_typing_mode() {
    for (typing, rpf, conc) in [
        (Typing::Strings, None, "4"),
        (Typing::Typed, Some("1000"), "1"),
        (Typing::Mixed, Some("777"), "8"),
    ] {
        let spec = credit(2345, typing).with_seed(typing as u64 + 11);
        let env = Env::new(vec![spec.clone()]);
        let mut extra = vec!["--concurrency", conc, "--quiet"];
        if let Some(r) = rpf {
            extra.extend(["--rows-per-file", r]);
        }
        env.export("cata_3820", "snap", &extra).ok();
        let dir = env.path("snap");
        assert_parquet_matches(&dir, &spec);
        let m = manifest(&dir);
        if let Some(r) = rpf {
            let r: u64 = r.parse().unwrap();
            assert_eq!(m.files.len() as u64, 2345u64.div_ceil(r), "{typing:?}");
            for (i, f) in m.files.iter().enumerate() {
                assert_eq!(f.path, format!("part-{i:05}.parquet"));
                assert!(f.rows <= r);
            }
        } else {
            assert_eq!(m.files.len(), 1);
        }
    }
}

#[test]
fn typed_numbers_become_int64_and_float64() {
    let spec = credit(1200, Typing::Typed);
    let env = Env::new(vec![spec]);
    env.export("cata_3820", "snap", &["-q"]).ok();
    let m = manifest(&env.path("snap"));
    let ty = |n: &str| {
        m.columns
            .iter()
            .find(|c| c.name == n)
            .unwrap()
            .arrow_type
            .clone()
    };
    assert_eq!(ty("ID"), "Int64");
    assert_eq!(ty("PENAM"), "Float64", "ints and decimals widen to Float64");
    assert_eq!(ty("ORGCODE"), "Utf8", "leading-zero codes stay strings");
    assert_eq!(
        ty("RAIN"),
        "Decimal128(18, 2)",
        "a column whose JSON type changes between pages: numbers and numeric text"
    );
    assert_eq!(ty("ALLNULL"), "Utf8");
}

#[test]
fn odd_page_sizes_and_high_concurrency_keep_every_record() {
    let spec = credit(1001, Typing::Mixed);
    let env = Env::new(vec![spec.clone()]);
    env.export(
        "cata_3820",
        "snap",
        &["--page-size", "37", "--concurrency", "16", "-q"],
    )
    .ok();
    assert_parquet_matches(&env.path("snap"), &spec);
    assert_eq!(manifest(&env.path("snap")).pages, 1001u64.div_ceil(37));
}

#[test]
fn every_record_arrives_once_in_csv_with_and_without_bom() {
    let spec = credit(2100, Typing::Mixed);
    let env = Env::new(vec![spec.clone()]);
    env.export("cata_3820", "a", &["--format", "csv", "-q"])
        .ok();
    assert_csv_matches(&env.path("a"), &spec, false);
    env.export(
        "cata_3820",
        "b",
        &[
            "--format",
            "csv",
            "--csv-bom",
            "--rows-per-file",
            "500",
            "-j",
            "3",
            "-q",
        ],
    )
    .ok();
    assert_csv_matches(&env.path("b"), &spec, true);
    assert_eq!(manifest(&env.path("b")).files.len(), 5);
}

#[test]
fn nested_dataset_gives_structs_lists_and_json_text() {
    let spec = DatasetSpec::nested("cata_9001", 900);
    let env = Env::new(vec![spec.clone()]);
    env.export("cata_9001", "snap", &["-q"]).ok();
    let dir = env.path("snap");
    assert_parquet_matches(&dir, &spec);
    let m = manifest(&dir);
    let col = |n: &str| m.columns.iter().find(|c| c.name == n).unwrap().clone();
    assert!(
        col("location").arrow_type.starts_with("Struct("),
        "{}",
        col("location").arrow_type
    );
    assert!(
        col("tags").arrow_type.starts_with("List("),
        "{}",
        col("tags").arrow_type
    );
    assert!(col("readings").arrow_type.contains("Struct("));
    assert!(
        col("extra").json_text,
        "object vs string is stored as JSON text"
    );
    assert!(
        col("meta").json_text,
        "an always-empty object is stored as JSON text"
    );
    assert_eq!(col("up_water_level").arrow_type, "Float64");

    env.export("cata_9001", "csv", &["--format", "csv", "-q"])
        .ok();
    assert_csv_matches(&env.path("csv"), &spec, false);
}

#[test]
fn manifest_fields_are_present_and_true() {
    let spec = credit(1234, Typing::Strings).with_date_format(DateFormat::DateTimeMs);
    let env = Env::new(vec![spec]);
    env.export("cata_3820", "snap", &["--rows-per-file", "500", "-q"])
        .ok();
    let dir = env.path("snap");
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "manifest_version",
        "jdop_version",
        "dataset",
        "base_url",
        "format",
        "update_date",
        "update_date_after",
        "total_before",
        "total_after",
        "rows",
        "consistent",
        "page_size",
        "pages",
        "requests",
        "retries",
        "started_at",
        "finished_at",
        "duration_secs",
        "files",
        "columns",
    ] {
        assert!(v.get(key).is_some(), "manifest lacks `{key}`");
    }
    let m = manifest(&dir);
    assert_eq!(m.manifest_version, 1);
    assert_eq!(m.jdop_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.dataset, "cata_3820");
    assert_eq!(m.base_url, env.sim.base_url());
    assert_eq!(
        m.update_date.raw,
        serde_json::json!("2024-05-17 10:25:00.000")
    );
    assert_eq!(m.update_date.iso.as_deref(), Some("2024-05-17T10:25:00"));
    assert_eq!(m.update_date.date.as_deref(), Some("2024-05-17"));
    assert_eq!((m.total_before, m.total_after, m.rows), (1234, 1234, 1234));
    assert!(m.consistent);
    assert_eq!((m.page_size, m.pages), (200, 7));
    let stats = env.sim.stats();
    assert_eq!(
        m.requests,
        stats.total_calls + stats.data_calls + stats.update_date_calls
    );
    assert_eq!(m.requests, 7 + 4);
    assert_eq!(m.retries, 0);
    let started = chrono::DateTime::parse_from_rfc3339(&m.started_at).unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(&m.finished_at).unwrap();
    assert!(finished >= started);
    assert!(m.duration_secs >= 0.0);
    let mut listed: Vec<String> = m.files.iter().map(|f| f.path.clone()).collect();
    listed.push("manifest.json".into());
    listed.push("query.sql".into());
    listed.sort();
    assert_eq!(
        names_in(&dir),
        listed,
        "the folder holds exactly the listed files"
    );
    for f in &m.files {
        let p = dir.join(&f.path);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), f.bytes);
        assert_eq!(sha256_file(&p).unwrap(), f.sha256, "{}", f.path);
    }
    assert_eq!(
        m.files.iter().map(|f| f.rows).collect::<Vec<_>>(),
        [500, 500, 234]
    );
    // The manifest's columns match the schema of the written files.
    let (schema, _) = parquet_rows(&dir);
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let listed: Vec<&str> = m.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, listed);
    for (f, c) in schema.fields().iter().zip(&m.columns) {
        assert_eq!(f.data_type().to_string(), c.arrow_type);
    }
}

#[test]
fn parquet_files_are_zstd_with_statistics() {
    let env = Env::new(vec![credit(500, Typing::Typed)]);
    env.export("cata_3820", "snap", &["-q"]).ok();
    let file = std::fs::File::open(env.path("snap/part-00000.parquet")).unwrap();
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let md = reader.metadata();
    let kv = md.file_metadata().key_value_metadata().unwrap();
    assert!(kv
        .iter()
        .any(|k| k.key == "jdop.dataset" && k.value.as_deref() == Some("cata_3820")));
    for rg in md.row_groups() {
        for c in rg.columns() {
            assert!(matches!(
                c.compression(),
                parquet::basic::Compression::ZSTD(_)
            ));
            assert!(c.statistics().is_some(), "{}", c.column_path());
        }
    }
}

#[test]
fn concurrency_is_bounded_and_used() {
    let env = Env::with(SimConfig {
        datasets: vec![credit(3000, Typing::Strings)],
        latency: std::time::Duration::from_millis(25),
        ..SimConfig::default()
    });
    env.export("cata_3820", "snap", &["--concurrency", "3", "-q"])
        .ok();
    let s = env.sim.stats();
    assert_eq!(
        s.max_in_flight, 3,
        "never more than --concurrency in flight, and all of it used"
    );
    assert_eq!(s.data_calls, 15);
    assert!(
        s.pages.values().all(|&n| n == 1),
        "each page fetched once: {:?}",
        s.pages
    );
}

#[test]
fn get_method_and_pasted_interface_url_work() {
    let spec = credit(450, Typing::Strings);
    let env = Env::new(vec![spec.clone()]);
    env.export("cata_3820", "get", &["--method", "get", "-q"])
        .ok();
    assert_parquet_matches(&env.path("get"), &spec);
    let url = format!(
        "{}/interfaces/cata_3820/get_data.do?pageNum=1&pageSize=1",
        env.sim.base_url()
    );
    env.jdop(&["export", &url, "--out", "pasted", "-q"]).ok();
    assert_parquet_matches(&env.path("pasted"), &spec);
    // A bare number is taken as cata_N.
    env.export("3820", "bare", &["-q"]).ok();
    assert_eq!(manifest(&env.path("bare")).dataset, "cata_3820");
}

#[test]
fn total_and_updated_print_the_platform_values() {
    let spec = credit(8021, Typing::Strings).with_date_format(DateFormat::EpochMs);
    let env = Env::new(vec![spec]);
    let base = env.sim.base_url();
    let t = env.jdop(&["total", "cata_3820", "--base-url", &base]);
    t.ok();
    assert_eq!(t.stdout().trim(), "8021");
    let u = env.jdop(&["updated", "cata_3820", "--base-url", &base]);
    u.ok();
    assert_eq!(u.stdout().trim(), "2024-05-17T10:25:00");
    let j = env.jdop(&["updated", "cata_3820", "--base-url", &base, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&j.ok().stdout()).unwrap();
    assert_eq!(v["update_date"]["date"], "2024-05-17");
    assert!(v["update_date"]["raw"].is_number());
}

#[test]
fn json_flag_prints_the_summary_on_stdout_only() {
    let env = Env::new(vec![credit(300, Typing::Strings)]);
    let r = env.export("cata_3820", "snap", &["--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(v["rows"], 300);
    assert_eq!(v["dataset"], "cata_3820");
    assert_eq!(v["files"][0]["path"], "part-00000.parquet");
    assert!(
        r.stderr().contains("exported 300 rows"),
        "human output on stderr"
    );
}

#[test]
fn a_second_export_replaces_the_first() {
    let env = Env::new(vec![credit(400, Typing::Strings)]);
    env.export("cata_3820", "snap", &["-q", "--rows-per-file", "100"])
        .ok();
    assert_eq!(manifest(&env.path("snap")).files.len(), 4);
    env.export("cata_3820", "snap", &["-q"]).ok();
    assert_eq!(
        names_in(&env.path("snap")),
        ["manifest.json", "part-00000.parquet", "query.sql"]
    );
    assert_eq!(names_in(env.dir.path()), ["snap"], "no staging leftovers");
}

#[test]
fn empty_dataset_gives_a_manifest_and_no_data_file() {
    let env = Env::new(vec![DatasetSpec::credit("cata_1", 0)]);
    env.export("cata_1", "snap", &["-q"]).ok();
    let m = manifest(&env.path("snap"));
    assert_eq!(m.rows, 0);
    assert!(m.files.is_empty());
}

#[test]
fn output_is_deterministic_across_concurrency() {
    let env = Env::new(vec![credit(1500, Typing::Mixed)]);
    // The snapshot time in the files' metadata is pinned the reproducible-builds way.
    let pin = [("SOURCE_DATE_EPOCH", "1700000000")];
    env.export_env("cata_3820", "a", &["-q", "-j", "1"], &pin)
        .ok();
    env.export_env("cata_3820", "b", &["-q", "-j", "8"], &pin)
        .ok();
    let a = manifest(&env.path("a"));
    let b = manifest(&env.path("b"));
    assert_eq!(a.files, b.files, "same data gives byte-identical files");
}

/// Row groups are encoded while pages arrive, under the schema of the pages in so
/// far; the file is completed for the final schema: a key first seen late (null
/// chunks), a column whose type changes later (encoded again), the rest reused.
#[test]
fn row_groups_encoded_early_are_completed_for_the_final_schema() {
    // Typed: RAIN is a JSON number for rows 0..1000, then text (Decimal at the end);
    // LATECOL appears in the last tenth only.
    let spec = credit(3000, Typing::Typed);
    let env = Env::new(vec![spec.clone()]);
    let pin = [("SOURCE_DATE_EPOCH", "1700000000")];
    let args = ["-q", "--row-group-rows", "400", "--page-size", "100"];
    env.export_env("cata_3820", "a", &[&args[..], &["-j", "1"]].concat(), &pin)
        .ok();
    env.export_env("cata_3820", "b", &[&args[..], &["-j", "8"]].concat(), &pin)
        .ok();
    assert_parquet_matches(&env.path("a"), &spec);
    let (a, b) = (manifest(&env.path("a")), manifest(&env.path("b")));
    assert_eq!(a.files, b.files, "byte-identical at any concurrency");
    let ty = |n: &str| {
        a.columns
            .iter()
            .find(|c| c.name == n)
            .unwrap()
            .arrow_type
            .clone()
    };
    assert_eq!(ty("RAIN"), "Decimal128(18, 2)");
    assert_eq!(ty("LATECOL"), "Utf8");
    let file = std::fs::File::open(env.path("a").join("part-00000.parquet")).unwrap();
    let meta = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    assert_eq!(
        meta.metadata().num_row_groups(),
        8,
        "3000 rows in groups of 400"
    );
    assert!(meta
        .metadata()
        .row_groups()
        .iter()
        .all(|g| g.num_columns() == a.columns.len()));
}

/// `pages` record arrays of 100 records each, `record(i)` the i-th record.
fn pages_of(pages: u64, record: impl Fn(u64) -> String) -> Vec<String> {
    (0..pages)
        .map(|p| {
            let recs: Vec<String> = (p * 100..(p + 1) * 100).map(&record).collect();
            format!("[{}]", recs.join(","))
        })
        .collect()
}

/// `pages_to_parquet` with row groups of `group_rows` rows: the schema, and the
/// file's batches read back.
fn to_parquet(
    pages: &[String],
    group_rows: usize,
) -> (jdop::schema::InferredSchema, Vec<arrow_array::RecordBatch>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = jdop::sink::ParquetOptions {
        row_group_rows: group_rows,
        ..Default::default()
    };
    let (schema, files) =
        jdop::export::pages_to_parquet(pages, dir.path(), &opts, &Default::default(), 100).unwrap();
    let file = std::fs::File::open(dir.path().join(&files[0].path)).unwrap();
    let batches = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (schema, batches)
}

/// The library's pages -> Parquet path (benchmarks use it): row groups encoded as
/// pages come in, the late key and the changed type completed at the end.
#[test]
fn pages_to_parquet_writes_every_record() {
    let spec = credit(2500, Typing::Typed);
    let pages = pages_of(25, |i| spec.record(i));
    let dir = tempfile::tempdir().unwrap();
    let opts = jdop::sink::ParquetOptions {
        row_group_rows: 300,
        ..Default::default()
    };
    let (schema, files) =
        jdop::export::pages_to_parquet(&pages, dir.path(), &opts, &Default::default(), 100)
            .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, 2500);
    assert_eq!(schema.rows, 2500);
    let file = std::fs::File::open(dir.path().join(&files[0].path)).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = 0;
    let mut late = 0;
    for b in reader {
        let b = b.unwrap();
        rows += b.num_rows();
        let i = b.schema().index_of("LATECOL").unwrap();
        late += b.num_rows() - b.column(i).null_count();
    }
    assert_eq!(rows, 2500);
    assert!(
        late > 0 && late <= 250,
        "LATECOL only in the last tenth: {late}"
    );
    assert_eq!(
        names_in(dir.path()),
        ["part-00000.parquet"],
        "no work files left"
    );
}

/// Row groups see the schema of exactly the pages up to their last one, whatever
/// order the pages arrive in: an object column that turns into JSON text just after
/// the first row group gives the same bytes at -j 1 and at -j 16 with jittered answers.
#[test]
fn early_row_groups_do_not_depend_on_the_arrival_order() {
    let records: Vec<String> = (0..3000)
        .map(|i| {
            if i == 450 {
                r#"{"id":1,"obj":"text now"}"#.to_string()
            } else {
                format!(r#"{{"id":{i},"obj":{{"a":{i},"b":"x{i}"}}}}"#)
            }
        })
        .collect();
    let env = Env::with(SimConfig {
        datasets: vec![DatasetSpec::fixed("cata_1", records)],
        jitter: std::time::Duration::from_millis(8),
        ..SimConfig::default()
    });
    let pin = [("SOURCE_DATE_EPOCH", "1700000000")];
    let args = ["-q", "--row-group-rows", "400", "--page-size", "100"];
    env.export_env("cata_1", "a", &[&args[..], &["-j", "1"]].concat(), &pin)
        .ok();
    let a = manifest(&env.path("a"));
    assert!(a.columns[1].json_text);
    for run in ["b", "c", "d"] {
        env.export_env("cata_1", run, &[&args[..], &["-j", "16"]].concat(), &pin)
            .ok();
        let b = manifest(&env.path(run));
        assert_eq!(
            a.files, b.files,
            "byte-identical whatever the arrival order"
        );
    }
}

/// Batches are decoded ahead as their pages come in, under the schema of the pages
/// in by then. Inside one row group a key first seen late, an integer column that
/// turns to floats, a date column that turns to text and a column of nulls that
/// turns to numbers: whichever way each group goes (batches decoded ahead, widened,
/// decoded again, or the group left for the end), the file holds the values of the
/// whole dataset's schema. (Which batches are taken is tested in src/export.rs.)
#[test]
fn batches_decoded_ahead_follow_schema_changes_inside_a_row_group() {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    let record = |i: u64| {
        let page = i / 100;
        let n = if page >= 45 {
            format!("{i}.5")
        } else {
            i.to_string()
        };
        let d = if page >= 50 && i.is_multiple_of(7) {
            "soon".to_string()
        } else {
            format!("2024-01-{:02}", 1 + i % 28)
        };
        let z = if page >= 20 {
            i.to_string()
        } else {
            "null".to_string()
        };
        let late = if page >= 30 {
            format!(r#","late":"L{i}""#)
        } else {
            String::new()
        };
        format!(r#"{{"id":{i},"n":{n},"d":"{d}","z":{z}{late}}}"#)
    };
    let pages = pages_of(60, record);
    for group_rows in [6_000, 2_400] {
        let (schema, batches) = to_parquet(&pages, group_rows);
        let types: Vec<String> = schema
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.data_type()))
            .collect();
        assert_eq!(
            types,
            ["id:Int64", "n:Float64", "d:Utf8", "z:Int64", "late:Utf8"]
        );
        let mut i = 0u64;
        for b in batches {
            let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
            let (id, n, d, z, late) = (col("id"), col("n"), col("d"), col("z"), col("late"));
            let id = id.as_primitive::<arrow_array::types::Int64Type>();
            let n = n.as_primitive::<arrow_array::types::Float64Type>();
            let z = z.as_primitive::<arrow_array::types::Int64Type>();
            let (d, late) = (d.as_string::<i32>(), late.as_string::<i32>());
            for r in 0..b.num_rows() {
                let page = i / 100;
                assert_eq!(id.value(r), i as i64);
                let want = if page >= 45 { i as f64 + 0.5 } else { i as f64 };
                assert_eq!(n.value(r), want, "n of record {i}");
                let want_d = if page >= 50 && i.is_multiple_of(7) {
                    "soon".to_string()
                } else {
                    format!("2024-01-{:02}", 1 + i % 28)
                };
                assert_eq!(d.value(r), want_d, "d of record {i}");
                assert_eq!(z.is_null(r), page < 20, "z of record {i}");
                if page >= 20 {
                    assert_eq!(z.value(r), i as i64);
                }
                assert_eq!(late.is_null(r), page < 30, "late of record {i}");
                if page >= 30 {
                    assert_eq!(late.value(r), format!("L{i}"));
                }
                i += 1;
            }
        }
        assert_eq!(i, 6000, "groups of {group_rows} rows");
    }
}

/// A key first seen inside a row group, and nothing else changing: the batches
/// decoded before it are widened with nulls (see src/export.rs), the file holds
/// every value.
#[test]
fn a_key_first_seen_inside_a_row_group_is_null_before_it() {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    let pages = pages_of(60, |i| {
        let late = if i >= 3000 {
            format!(r#","late":"L{i}""#)
        } else {
            String::new()
        };
        format!(r#"{{"id":{i},"s":"S{i}"{late}}}"#)
    });
    for group_rows in [6_000, 2_400] {
        let (_, batches) = to_parquet(&pages, group_rows);
        let mut i = 0u64;
        for b in batches {
            assert_eq!(b.num_columns(), 3);
            let id = b.column(0).as_primitive::<arrow_array::types::Int64Type>();
            let (s, late) = (
                b.column(1).as_string::<i32>(),
                b.column(2).as_string::<i32>(),
            );
            for r in 0..b.num_rows() {
                assert_eq!(id.value(r), i as i64);
                assert_eq!(s.value(r), format!("S{i}"));
                assert_eq!(late.is_null(r), i < 3000, "late of record {i}");
                if i >= 3000 {
                    assert_eq!(late.value(r), format!("L{i}"));
                }
                i += 1;
            }
        }
        assert_eq!(i, 6000, "groups of {group_rows} rows");
    }
}
