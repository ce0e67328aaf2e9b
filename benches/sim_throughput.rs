//! How many pages per second the built-in simulator serves over HTTP on 127.0.0.1
//! (200 records a page, no injected latency), with 8 client connections, compared
//! with the page rate the heaviest benchmark needs: 1M records at 30 ms latency and
//! concurrency 16 is 16 / 0.030 = 533 pages/s.
//!
//! `cargo bench --bench sim_throughput`

use std::sync::Arc;
use std::time::Instant;

use jdop::sim::{DatasetSpec, SimConfig, Simulator};

const REQUESTS: u64 = 4000;
const CLIENTS: u64 = 8;
const NEEDED_PAGES_PER_SEC: f64 = 16.0 / 0.030;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = Simulator::start(
            SimConfig {
                datasets: vec![DatasetSpec::credit("cata_1", 1_000_000)],
                ..SimConfig::default()
            },
            0,
        )
        .await
        .unwrap();
        let url = Arc::new(format!("{}/interfaces/cata_1/get_data.do", sim.base_url()));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let start = Instant::now();
        let mut tasks = Vec::new();
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for c in 0..CLIENTS {
            let client = client.clone();
            let url = url.clone();
            let bytes = bytes.clone();
            tasks.push(tokio::spawn(async move {
                for r in 0..REQUESTS / CLIENTS {
                    let page = (c * (REQUESTS / CLIENTS) + r) % 5000 + 1;
                    let body = client
                        .post(url.as_str())
                        .form(&[
                            ("appsecret", jdop::sim::DEFAULT_SECRET.to_string()),
                            ("pageNum", page.to_string()),
                            ("pageSize", "200".to_string()),
                        ])
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    bytes.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = REQUESTS as f64 / secs;
        let mb = bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
        println!(
            "simulator: {REQUESTS} pages of 200 records in {secs:.2}s = {rate:.0} pages/s ({:.0} records/s, {:.0} MB/s), {:.1}x the {NEEDED_PAGES_PER_SEC:.0} pages/s the 1M/30ms/16 benchmark needs",
            rate * 200.0,
            mb / secs,
            rate / NEEDED_PAGES_PER_SEC
        );
    });
}
