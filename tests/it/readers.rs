//! DuckDB, pyarrow/pandas and polars read jdop's Parquet without extra options.
//! Needs python3 with duckdb, pyarrow, pandas and polars (installed by `.ci/run`);
//! when they are missing the test says so and passes, unless JDOP_REQUIRE_PY_READERS=1
//! (set by `.ci/run`), where a missing module is a failure.

use std::process::Command;

use jdop::sim::{DatasetSpec, Typing};

use crate::util::*;

pub fn readers_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import duckdb, pyarrow, pandas, polars"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && std::env::var("JDOP_REQUIRE_PY_READERS").as_deref() == Ok("1") {
        panic!("python3 with duckdb, pyarrow, pandas and polars is required (JDOP_REQUIRE_PY_READERS=1)");
    }
    if !ok {
        eprintln!("skipping: python3 with duckdb, pyarrow, pandas and polars not found");
    }
    ok
}

fn check(env: &Env, out: &str, spec: &DatasetSpec) {
    let dir = env.path(out);
    let m = manifest(&dir);
    let first_raw = raw_record(spec, 0);
    let mut first = serde_json::Map::new();
    for c in &m.columns {
        if matches!(
            c.arrow_type.as_str(),
            "Utf8" | "Int64" | "Float64" | "Boolean"
        ) && !c.json_text
        {
            let raw = first_raw
                .iter()
                .find(|(k, _)| k == &c.name)
                .map(|(_, v)| v.as_str());
            let v: serde_json::Value = match raw {
                None | Some("null") => serde_json::Value::Null,
                Some(r) => {
                    let v: serde_json::Value = serde_json::from_str(r).unwrap();
                    // Detected types: the text's value (see tests/it/typed.rs).
                    let text = v.as_str().map(str::to_string).unwrap_or(r.to_string());
                    match c.arrow_type.as_str() {
                        "Utf8" => serde_json::Value::String(text),
                        "Float64" => serde_json::json!(text.parse::<f64>().unwrap()),
                        "Int64" => serde_json::json!(text.parse::<i64>().unwrap()),
                        "Boolean" => serde_json::json!(text == "true"),
                        _ => v,
                    }
                }
            };
            if !v.is_null() {
                first.insert(c.name.clone(), v);
            }
        }
    }
    let exp = serde_json::json!({
        "dir": dir,
        "rows": m.rows,
        "files": m.files.len(),
        "columns": m.columns.iter().map(|c| (c.name.clone(), c.arrow_type.clone())).collect::<Vec<_>>(),
        "first": first,
    });
    run_readers(env, "readers.py", &format!("{out}.expect.json"), &exp);
}

#[test]
fn duckdb_pyarrow_pandas_polars_read_snapshots() {
    if !readers_available() {
        return;
    }
    let typed = DatasetSpec::credit("cata_5769", 2500).with_typing(Typing::Typed);
    let nested = DatasetSpec::nested("cata_9001", 700);
    let env = Env::new(vec![typed.clone(), nested.clone()]);
    env.export("cata_5769", "single", &["-q"]).ok();
    check(&env, "single", &typed);
    env.export("cata_5769", "rolled", &["-q", "--rows-per-file", "600"])
        .ok();
    check(&env, "rolled", &typed);
    env.export("cata_9001", "nested", &["-q", "--rows-per-file", "300"])
        .ok();
    check(&env, "nested", &nested);
}

/// Typed columns, CSV with its query.sql, and Hive partitions with awkward values,
/// read by DuckDB (through query.sql), pyarrow, pandas and polars.
#[test]
fn readers_get_typed_columns_and_hive_partitions() {
    if !readers_available() {
        return;
    }
    let typed = DatasetSpec::fixed("cata_1", crate::typed::platform_records());
    let env = Env::new(vec![typed]);
    env.export("cata_1", "single", &["-q"]).ok();
    env.export("cata_1", "rolled", &["-q", "--rows-per-file", "3"])
        .ok();
    env.export("cata_1", "csv", &["-q", "--format", "csv"]).ok();
    let hive_env = Env::new(vec![DatasetSpec::fixed(
        "cata_1",
        crate::typed::awkward_records(),
    )]);
    hive_env
        .export("cata_1", "hive", &["-q", "--partition-by", "地市"])
        .ok();
    let values = crate::typed::awkward_values();
    let lossless = |v: &Option<String>| jdop::sink::hive::is_lossless("地市", v.as_deref());
    let by_id: Vec<Option<String>> = values
        .iter()
        .map(|v| {
            if lossless(v) {
                v.clone()
            } else {
                Some("<shortened>".into())
            }
        })
        .collect();
    let exp = serde_json::json!({
        "typed_dirs": [env.path("single"), env.path("rolled")],
        "csv_dir": env.path("csv"),
        "rows": 10,
        "amount_sum": "25062.50",
        "hive_dir": hive_env.path("hive"),
        "hive_rows": values.len(),
        "hive_values": values.iter().filter(|v| lossless(v)).collect::<Vec<_>>(),
        "hive_by_id": by_id,
    });
    run_readers(&env, "readers_typed.py", "typed.expect.json", &exp);
}

/// Runs `tests/SCRIPT` with the expectations `exp` written to `name` in the env.
fn run_readers(env: &Env, script: &str, name: &str, exp: &serde_json::Value) {
    let exp_path = env.path(name);
    std::fs::write(&exp_path, exp.to_string()).unwrap();
    let script = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("python3")
        .arg(&script)
        .arg(&exp_path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script} failed on {name}:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
