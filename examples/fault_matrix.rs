//! The evidence table of the reliability guarantee: for each fault mix and seed,
//! export a dataset from the simulator and compare the published snapshot with the
//! records the simulator holds. Prints a Markdown table.
//!
//! `cargo build --release && cargo run --release --example fault_matrix -- [SEEDS]`
//! (the kill -9 mix runs the `jdop` binary built next to this example).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::Array;
use jdop::fetch::{Limits, RetryPolicy};
use jdop::platform::{ClientConfig, Secret, Target};
use jdop::sim::{DatasetSpec, SimConfig, Simulator, Throttle};
use jdop::sink::{Format, ParquetOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const ROWS: u64 = 3000;
const PAGES: u64 = ROWS / 200;

#[derive(Default)]
struct Row {
    runs: u32,
    completed: u32,
    lost: u64,
    duplicated: u64,
    inconsistent_published: u32,
    extra_requests: u64,
    seconds: f64,
}

/// A fault mix: its name and how it configures the simulator.
type Mix = (&'static str, fn(&mut SimConfig));

fn mixes() -> Vec<Mix> {
    vec![
        ("5% 5xx + 2% drops", |c| {
            c.error_rate = 0.05;
            c.drop_rate = 0.02;
        }),
        ("throttle at 4 in flight, 429", |c| {
            c.max_in_flight = Some(4);
            c.throttle = Throttle::Http429;
            c.retry_after_secs = 0;
        }),
        ("throttle at 4 in flight, status 0", |c| {
            c.max_in_flight = Some(4);
            c.throttle = Throttle::Status0;
        }),
        ("3% stalls of 2 s (timeout 0.5 s)", |c| {
            c.stall_rate = 0.03;
            c.stall = Duration::from_secs(2);
        }),
        ("mutation during export (+30 rows)", |c| {
            c.mutate_after = Some(5);
            c.mutate_rows = 30;
        }),
        ("kill -9 at a random page, then resume", |_| {}),
    ]
}

fn ids(dir: &Path) -> Option<Vec<String>> {
    let m = jdop::manifest::Manifest::read(dir).ok()?;
    let mut out = Vec::new();
    for f in &m.files {
        let file = std::fs::File::open(dir.join(&f.path)).ok()?;
        for b in ParquetRecordBatchReaderBuilder::try_new(file)
            .ok()?
            .build()
            .ok()?
        {
            let b = b.ok()?;
            let col = b.column_by_name("ID")?.as_string::<i32>().clone();
            out.extend((0..col.len()).map(|i| col.value(i).to_string()));
        }
    }
    Some(out)
}

fn expected_ids(spec: &DatasetSpec) -> Vec<String> {
    (0..spec.rows)
        .map(|i| {
            spec.record_value(i)["ID"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn config(sim: &Simulator, out: &Path) -> jdop::ExportConfig {
    jdop::ExportConfig {
        target: Target::parse("cata_1", Some(&sim.base_url())).unwrap(),
        secret: Secret::new(sim.secret()).unwrap(),
        out: out.to_path_buf(),
        format: Format::Parquet,
        limits: Limits {
            concurrency: 8,
            page_size: 200,
            retry: RetryPolicy {
                max_retries: 12,
                min_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(400),
            },
            gate: None,
            rate: None,
        },
        client: ClientConfig {
            timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        },
        rows_per_file: None,
        csv: Default::default(),
        detect: Default::default(),
        partition_by: None,
        parquet: ParquetOptions::default(),
        allow_inconsistent: false,
        previous_columns: None,
        schema_policy: Default::default(),
        consistency_retries: 2,
        key: None,
        staging: None,
    }
}

fn jdop_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("jdop")
}

#[tokio::main]
async fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!("| fault mix | runs | exports completed | rows lost | rows duplicated | published inconsistent | extra requests (mean) | seconds (mean) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, apply) in mixes() {
        let mut row = Row::default();
        for seed in 1..=seeds {
            let spec = DatasetSpec::credit("cata_1", ROWS).with_seed(seed);
            let mut cfg = SimConfig {
                datasets: vec![spec.clone()],
                latency: Duration::from_millis(5),
                jitter: Duration::from_millis(5),
                seed,
                ..SimConfig::default()
            };
            apply(&mut cfg);
            let sim = Simulator::start(cfg, 0).await.unwrap();
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("snap");
            let started = Instant::now();
            let result = if name.starts_with("kill") {
                // Kill the real binary at a seeded page, then run again to resume.
                let at = 2 + jdop::sim::data::mix(seed) % (PAGES - 3);
                let mut child = std::process::Command::new(jdop_binary())
                    .args(["export", "cata_1", "--base-url", &sim.base_url(), "--out"])
                    .arg(&out)
                    .args(["-q", "-j", "2"])
                    .env("JDOP_APPSECRET", sim.secret())
                    .spawn()
                    .expect("build the jdop binary first (cargo build --release)");
                while sim.stats().data_calls < at && child.try_wait().unwrap().is_none() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let _ = child.kill();
                let _ = child.wait();
                jdop::export(&config(&sim, &out), Arc::new(jdop::progress::Silent)).await
            } else {
                jdop::export(&config(&sim, &out), Arc::new(jdop::progress::Silent)).await
            };
            row.seconds += started.elapsed().as_secs_f64();
            row.runs += 1;
            let stats = sim.stats();
            let calls = stats.total_calls + stats.data_calls + stats.update_date_calls;
            match result {
                Ok(summary) => {
                    row.completed += 1;
                    let final_spec = sim.dataset("cata_1").unwrap();
                    let want = expected_ids(&final_spec);
                    let got = ids(&out).unwrap_or_default();
                    let mut counts: HashMap<&str, u64> = HashMap::new();
                    for id in &got {
                        *counts.entry(id.as_str()).or_default() += 1;
                    }
                    let lost = want
                        .iter()
                        .filter(|id| !counts.contains_key(id.as_str()))
                        .count() as u64;
                    let dup: u64 = counts.values().filter(|&&n| n > 1).map(|n| n - 1).sum();
                    row.lost += lost;
                    row.duplicated += dup;
                    if !summary.manifest.consistent
                        || lost > 0
                        || dup > 0
                        || got.len() != want.len()
                    {
                        row.inconsistent_published += 1;
                    }
                    let minimal = final_spec.rows.div_ceil(200) + 4;
                    row.extra_requests += calls.saturating_sub(minimal);
                }
                Err(e) => eprintln!("{name} seed {seed}: {e}"),
            }
        }
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.1} | {:.2} |",
            row.runs,
            row.completed,
            row.lost,
            row.duplicated,
            row.inconsistent_published,
            row.extra_requests as f64 / row.completed.max(1) as f64,
            row.seconds / row.runs as f64
        );
    }
}
