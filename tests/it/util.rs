//! Test harness: a simulator on 127.0.0.1 on its own runtime, the real `jdop`
//! binary run in a temp folder, and read-back of the written files compared with
//! the simulator's own records.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::RecordBatch;
use arrow_schema::DataType;
use jdop::manifest::Manifest;
use jdop::sim::{DatasetSpec, SimConfig, Simulator};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

pub const SECRET: &str = "s3cr3t-ZJ/+=&key";

pub struct Env {
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    // Declared last so the server stops before its runtime goes away.
    _rt: tokio::runtime::Runtime,
}

impl Env {
    pub fn new(datasets: Vec<DatasetSpec>) -> Env {
        Env::with(SimConfig {
            datasets,
            ..SimConfig::default()
        })
    }

    pub fn with(mut cfg: SimConfig) -> Env {
        cfg.secret = SECRET.to_string();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt.block_on(Simulator::start(cfg, 0)).unwrap();
        Env {
            sim,
            dir: tempfile::tempdir().unwrap(),
            _rt: rt,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Runs `jdop` with the simulator's secret in JDOP_APPSECRET.
    pub fn jdop(&self, args: &[&str]) -> Run {
        self.jdop_env(args, &[("JDOP_APPSECRET", SECRET)])
    }

    pub fn jdop_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jdop"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("JDOP_APPSECRET")
            .env_remove("JDOP_BASE_URL");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let output = cmd.output().unwrap();
        Run {
            cmd: format!("jdop {}", args.join(" ")),
            output,
        }
    }

    /// `jdop export ID --base-url SIM --out OUT` plus `extra`, fast retries.
    pub fn export(&self, id: &str, out: &str, extra: &[&str]) -> Run {
        self.export_env(id, out, extra, &[])
    }

    /// `export` with extra environment variables.
    pub fn export_env(&self, id: &str, out: &str, extra: &[&str], envs: &[(&str, &str)]) -> Run {
        let base = self.sim.base_url();
        let mut args = vec![
            "export",
            id,
            "--base-url",
            &base,
            "--out",
            out,
            "--retry-min-delay-ms",
            "5",
            "--retry-max-delay-ms",
            "20",
        ];
        args.extend_from_slice(extra);
        let mut all = vec![("JDOP_APPSECRET", SECRET)];
        all.extend_from_slice(envs);
        self.jdop_env(&args, &all)
    }
}

impl Env {
    /// Starts `jdop ARGS` in the background (with the secret) and returns once the
    /// simulator has served `data_calls` data calls (or 20 s passed).
    pub fn spawn_until(&self, args: &[&str], data_calls: u64) -> std::process::Child {
        let child = Command::new(env!("CARGO_BIN_EXE_jdop"))
            .args(args)
            .current_dir(self.dir.path())
            .env("JDOP_APPSECRET", SECRET)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.sim.stats().data_calls < data_calls && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child
    }
}

pub struct Run {
    pub cmd: String,
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    fn explain(&self) -> String {
        format!(
            "command: {}\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.cmd,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
    pub fn ok(&self) -> &Self {
        assert!(self.output.status.success(), "{}", self.explain());
        self
    }
    pub fn fails_with(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "{}", self.explain());
        self
    }
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr().contains(text),
            "expected `{text}` in stderr\n{}",
            self.explain()
        );
        self
    }
}

pub fn manifest(dir: &Path) -> Manifest {
    Manifest::read(dir).unwrap()
}

/// All batches of all Parquet files of a snapshot, in file order.
pub fn read_parquet(dir: &Path) -> Vec<RecordBatch> {
    let m = manifest(dir);
    let mut out = Vec::new();
    for f in &m.files {
        let file = fs::File::open(dir.join(&f.path)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            out.push(b.unwrap());
        }
    }
    out
}

/// Rows of the Parquet files as JSON objects (via arrow-json's writer).
pub fn parquet_rows(dir: &Path) -> (arrow_schema::SchemaRef, Vec<serde_json::Map<String, Value>>) {
    let batches = read_parquet(dir);
    let schema = batches[0].schema();
    let mut rows = Vec::new();
    for b in &batches {
        let mut w = arrow_json::ArrayWriter::new(Vec::new());
        w.write(b).unwrap();
        w.finish().unwrap();
        let buf = w.into_inner();
        if buf.is_empty() {
            continue;
        }
        let v: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&buf).unwrap();
        rows.extend(v);
    }
    (schema, rows)
}

/// The simulator's record `i` as exact raw entries.
pub fn raw_record(spec: &DatasetSpec, i: u64) -> Vec<(String, String)> {
    let wrapped = format!("[{}]", spec.record(i));
    let recs = jdop::platform::split_records(&wrapped).unwrap();
    recs[0]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Numbers compare by value, objects ignore null-vs-missing, arrays in order.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().all(|k| {
                let xv = x.get(k).unwrap_or(&Value::Null);
                let yv = y.get(k).unwrap_or(&Value::Null);
                json_equal(xv, yv)
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        _ => a == b,
    }
}

/// Checks that one Parquet value equals the record's raw value under the column type.
pub fn check_value(
    col: &str,
    dtype: &DataType,
    json_text: bool,
    got: Option<&Value>,
    raw: Option<&str>,
    ctx: &str,
) {
    let got = got.filter(|v| !v.is_null());
    let raw = raw.filter(|r| *r != "null");
    match (got, raw) {
        (None, None) => {}
        // An empty string in a typed column is null.
        (None, Some("\"\"")) if dtype != &DataType::Utf8 => {}
        (Some(g), Some(r)) => {
            let exp: Value = serde_json::from_str(r).unwrap();
            let ok = match dtype {
                DataType::Utf8 => {
                    let Value::String(gs) = g else {
                        panic!("{ctx} {col}: Utf8 column gave {g}")
                    };
                    match &exp {
                        Value::String(es) => gs == es,
                        Value::Object(_) | Value::Array(_) => {
                            json_text && json_equal(&serde_json::from_str(gs).unwrap(), &exp)
                        }
                        // numbers and bools keep their exact text
                        _ => gs == r,
                    }
                }
                _ => match &exp {
                    Value::String(es) => typed_equal(dtype, g, es),
                    _ => json_equal(g, &exp) || typed_equal(dtype, g, r),
                },
            };
            assert!(ok, "{ctx} column `{col}` ({dtype}): got {g}, expected {r}");
        }
        (g, r) => panic!("{ctx} column `{col}`: got {g:?}, expected {r:?}"),
    }
}

/// A typed value read back (as arrow-json writes it) against the text it came
/// from: numbers digit for digit (a decimal's padding zeros aside), dates and
/// datetimes by their digits (whatever the shape: `2023年01月05日` = `2023-01-05`).
pub fn typed_equal(dtype: &DataType, got: &Value, text: &str) -> bool {
    let g = match got {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    fn norm_num(s: &str) -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    }
    fn digits(s: &str) -> String {
        let d: String = s.chars().filter(char::is_ascii_digit).collect();
        d.trim_end_matches('0').to_string()
    }
    match dtype {
        DataType::Int64 | DataType::Decimal128(..) | DataType::Float64 => {
            norm_num(&g) == norm_num(text)
        }
        DataType::Boolean => g == text,
        DataType::Date32 | DataType::Timestamp(_, None) => digits(&g) == digits(text),
        _ => false,
    }
}

/// Asserts that the Parquet snapshot at `dir` holds exactly the dataset's records,
/// in order, each value equal under its column's type.
pub fn assert_parquet_matches(dir: &Path, spec: &DatasetSpec) {
    let m = manifest(dir);
    let (schema, rows) = parquet_rows(dir);
    assert_eq!(rows.len() as u64, spec.rows, "row count");
    assert_eq!(m.rows, spec.rows);
    let json_text: HashMap<&str, bool> = m
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.json_text))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let raw = raw_record(spec, i as u64);
        let raw_map: HashMap<&str, &str> =
            raw.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for k in raw_map.keys() {
            assert!(
                schema.field_with_name(k).is_ok(),
                "record {i}: key `{k}` missing from the schema"
            );
        }
        for f in schema.fields() {
            check_value(
                f.name(),
                f.data_type(),
                json_text[f.name().as_str()],
                row.get(f.name()),
                raw_map.get(f.name().as_str()).copied(),
                &format!("record {i}"),
            );
        }
    }
}

/// Asserts that the CSV snapshot at `dir` holds exactly the dataset's records.
pub fn assert_csv_matches(dir: &Path, spec: &DatasetSpec, bom: bool) {
    let m = manifest(dir);
    let header: Vec<String> = m.columns.iter().map(|c| c.name.clone()).collect();
    let mut i = 0u64;
    for f in &m.files {
        let bytes = fs::read(dir.join(&f.path)).unwrap();
        assert_eq!(bytes.starts_with(b"\xEF\xBB\xBF"), bom, "BOM in {}", f.path);
        let body = if bom { &bytes[3..] } else { &bytes[..] };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(body);
        let got_header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(got_header, header, "header of {}", f.path);
        let mut n = 0;
        for rec in rdr.records() {
            let rec = rec.unwrap();
            let raw = raw_record(spec, i);
            let raw_map: HashMap<&str, &str> =
                raw.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            for (c, name) in header.iter().enumerate() {
                let exp = match raw_map.get(name.as_str()) {
                    None => String::new(),
                    Some(r) if *r == "null" => String::new(),
                    Some(r) if r.starts_with('"') => serde_json::from_str::<String>(r).unwrap(),
                    Some(r) => r.to_string(),
                };
                // Typed columns are written in canonical text (decimals padded to
                // the scale, ISO dates, empty strings as empty fields).
                let col = &m.columns[c];
                let typed = col.arrow_type != "Utf8" && !col.json_text;
                if typed && rec[c] != exp {
                    let dtype: DataType = col.arrow_type.parse().unwrap();
                    assert!(
                        typed_equal(&dtype, &Value::String(rec[c].to_string()), &exp)
                            || (rec[c].is_empty() && exp.is_empty()),
                        "record {i} column `{name}` in {}: {:?} vs {exp:?}",
                        f.path,
                        &rec[c]
                    );
                    continue;
                }
                assert_eq!(&rec[c], exp, "record {i} column `{name}` in {}", f.path);
            }
            i += 1;
            n += 1;
        }
        assert_eq!(n, f.rows, "rows of {}", f.path);
    }
    assert_eq!(i, spec.rows);
}

/// Every file name and text file under `dir`, for secret searches.
pub fn all_text_under(dir: &Path) -> String {
    let mut out = String::new();
    for e in walk(dir) {
        out.push_str(&e.display().to_string());
        out.push('\n');
        if let Ok(bytes) = fs::read(&e) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(p.clone());
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
