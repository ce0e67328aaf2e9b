//! End-to-end benchmark: `jdop sim` in its own process with per-request latency,
//! `jdop export` against it, and the wall time compared with the latency bound
//! `pages x latency / concurrency` measured in the same run. Reports wall time,
//! the bound, their ratio, CPU seconds and peak RSS of the export process.
//!
//! `cargo build --release && target/release/examples/e2e_bench [--runs N] [RECORDS,LATENCY_MS,CONCURRENCY ...]`
//! Default cases: 300000,30,8 1000000,30,16 200000,0,8; a fourth number is the page
//! size (default 200: `30000,30,8,20` is the same 1,500 requests with a tenth of
//! the data, the floor of this setup); `JDOP_EXPORT_ARGS="--format csv"` adds export
//! flags. Each case runs N times
//! (default 3) against a fresh simulator; the run with the median wall time is
//! reported, with the simulator's CPU seconds (it shares the machine).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn jdop() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("jdop")
}

/// The binary that exports: `JDOP_BIN` (to compare two builds in one run against
/// the same simulator), else this build's.
fn exporter() -> PathBuf {
    std::env::var_os("JDOP_BIN").map_or_else(jdop, PathBuf::from)
}

/// Waits for a child and returns (exit status, user+system CPU seconds, peak RSS KiB).
fn wait_with_usage(child: std::process::Child) -> (i32, f64, i64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; both pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    std::mem::forget(child);
    let cpu = usage.ru_utime.tv_sec as f64
        + usage.ru_utime.tv_usec as f64 / 1e6
        + usage.ru_stime.tv_sec as f64
        + usage.ru_stime.tv_usec as f64 / 1e6;
    (libc::WEXITSTATUS(status), cpu, usage.ru_maxrss)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 3usize;
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--runs N");
        args.drain(i..i + 2);
    }
    let cases: Vec<(u64, u64, u64, u64)> = if args.is_empty() {
        vec![
            (300_000, 30, 8, 200),
            (1_000_000, 30, 16, 200),
            (200_000, 0, 8, 200),
        ]
    } else {
        args.iter()
            .map(|a| {
                let v: Vec<u64> = a.split(',').map(|x| x.parse().unwrap()).collect();
                (v[0], v[1], v[2], v.get(3).copied().unwrap_or(200))
            })
            .collect()
    };
    let port = 18_700 + (std::process::id() % 200) as u16;
    let datasets: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| format!("cata_{}:rows={}", i + 1, c.0))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    println!("| records | latency | concurrency | wall s | bound s | wall/bound | CPU s | peak RSS MiB | sim CPU s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, (records, latency, conc, page_size)) in cases.iter().enumerate() {
        let mut results: Vec<(f64, f64, i64, f64)> = (0..runs)
            .map(|_| run_case(i, &dir, port, &datasets, *latency, *conc, *page_size))
            .collect();
        results.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (wall, cpu, rss_kib, sim_cpu) = results[results.len() / 2];
        let pages = records.div_ceil(*page_size) + 4;
        let bound = pages as f64 * (*latency as f64 / 1000.0) / *conc as f64;
        let ratio = if bound > 0.0 {
            format!("{:.2}", wall / bound)
        } else {
            "-".into()
        };
        println!(
            "| {records} | {latency} ms | {conc} | {wall:.2} | {bound:.2} | {ratio} | {cpu:.2} | {:.0} | {sim_cpu:.2} |",
            rss_kib as f64 / 1024.0
        );
    }
}

/// One export of case `i` against a fresh simulator: (wall s, CPU s, peak RSS KiB,
/// simulator CPU s).
fn run_case(
    i: usize,
    dir: &tempfile::TempDir,
    port: u16,
    datasets: &[String],
    latency: u64,
    conc: u64,
    page_size: u64,
) -> (f64, f64, i64, f64) {
    {
        let mut sim = Command::new(jdop());
        sim.args([
            "sim",
            "--port",
            &port.to_string(),
            "--latency-ms",
            &latency.to_string(),
        ]);
        for d in datasets {
            sim.args(["--dataset", d]);
        }
        let mut sim = sim.stderr(Stdio::null()).spawn().expect("build jdop first");
        std::thread::sleep(Duration::from_millis(400));
        let out = dir.path().join(format!("out{i}"));
        let started = Instant::now();
        let child = Command::new(exporter())
            .args([
                "export",
                &format!("cata_{}", i + 1),
                "--base-url",
                &format!("http://127.0.0.1:{port}/jdop_front"),
                "--out",
            ])
            .arg(&out)
            .args(["-q", "-j", &conc.to_string()])
            .args(["--page-size", &page_size.to_string()])
            .args(
                std::env::var("JDOP_EXPORT_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env("JDOP_APPSECRET", jdop::sim::DEFAULT_SECRET)
            .spawn()
            .unwrap();
        let (code, cpu, rss_kib) = wait_with_usage(child);
        let wall = started.elapsed().as_secs_f64();
        let _ = sim.kill();
        let (_, sim_cpu, _) = wait_with_usage(sim);
        assert_eq!(code, 0, "export failed");
        let _ = std::fs::remove_dir_all(&out);
        (wall, cpu, rss_kib, sim_cpu)
    }
}
