//! A library user's program: start the built-in simulator, export a dataset to
//! Parquet through `jdop::export`, and print the manifest's figures.
//!
//! `cargo run --example export_from_sim -- /tmp/cata_5769`

use std::sync::Arc;

use jdop::fetch::{Limits, RetryPolicy};
use jdop::platform::{ClientConfig, Secret, Target};
use jdop::sim::{DatasetSpec, SimConfig, Simulator, Typing};
use jdop::sink::{Format, ParquetOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "example-out".into());
    let sim = Simulator::start(
        SimConfig {
            datasets: vec![DatasetSpec::credit("cata_5769", 20_000).with_typing(Typing::Typed)],
            ..SimConfig::default()
        },
        0,
    )
    .await?;
    let cfg = jdop::ExportConfig {
        target: Target::parse("cata_5769", Some(&sim.base_url()))?,
        secret: Secret::new(sim.secret())?,
        out: out.into(),
        format: Format::Parquet,
        limits: Limits {
            concurrency: 4,
            page_size: 200,
            retry: RetryPolicy::default(),
            gate: None,
            rate: None,
        },
        client: ClientConfig::default(),
        rows_per_file: Some(10_000),
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
    };
    let summary = jdop::export(&cfg, Arc::new(jdop::progress::Silent)).await?;
    let m = &summary.manifest;
    println!(
        "{} rows of {} in {} files at {}; update date {}",
        m.rows,
        m.dataset,
        m.files.len(),
        summary.out.display(),
        m.update_date.iso.as_deref().unwrap_or("?")
    );
    for c in &m.columns {
        println!("  {:<22} {}", c.name, c.arrow_type);
    }
    Ok(())
}
