//! The platform's faults, injected by the simulator: every published snapshot
//! holds each record of one version exactly once, or nothing is published.

use std::time::{Duration, Instant};

use jdop::sim::{DatasetSpec, SimConfig, Throttle};

use crate::util::*;

fn credit(rows: u64) -> DatasetSpec {
    DatasetSpec::credit("cata_3820", rows)
}

/// The dataset as it is after `n` mutations of `rows` rows at the front.
fn mutated(spec: &DatasetSpec, rows: u64) -> DatasetSpec {
    let mut s = spec.clone();
    s.front += rows;
    s.rows += rows;
    s.updated += chrono::Duration::days(1);
    s
}

#[test]
fn throttling_with_429_backs_off_and_completes() {
    let spec = credit(3000);
    let env = Env::with(SimConfig {
        datasets: vec![spec.clone()],
        latency: Duration::from_millis(10),
        max_in_flight: Some(2),
        throttle: Throttle::Http429,
        retry_after_secs: 0,
        ..SimConfig::default()
    });
    env.export(
        "cata_3820",
        "snap",
        &["-q", "-j", "8", "--max-retries", "20"],
    )
    .ok();
    assert_parquet_matches(&env.path("snap"), &spec);
    let m = manifest(&env.path("snap"));
    let s = env.sim.stats();
    assert!(s.throttled > 0, "the cap was hit");
    assert_eq!(m.throttled, s.throttled);
    assert_eq!(m.retries, s.throttled);
}

#[test]
fn throttling_with_status0_message_is_recognised() {
    let spec = credit(2000);
    let env = Env::with(SimConfig {
        datasets: vec![spec.clone()],
        latency: Duration::from_millis(10),
        max_in_flight: Some(2),
        throttle: Throttle::Status0,
        ..SimConfig::default()
    });
    env.export(
        "cata_3820",
        "snap",
        &["-q", "-j", "6", "--max-retries", "20"],
    )
    .ok();
    assert_parquet_matches(&env.path("snap"), &spec);
    assert!(manifest(&env.path("snap")).throttled > 0);
}

#[test]
fn drops_truncation_redirects_5xx_and_stalls_are_survived() {
    let spec = credit(4000);
    let env = Env::with(SimConfig {
        datasets: vec![spec.clone()],
        error_rate: 0.05,
        drop_rate: 0.05,
        truncate_rate: 0.05,
        redirect_rate: 0.03,
        stall_rate: 0.03,
        stall: Duration::from_secs(5),
        seed: 3,
        ..SimConfig::default()
    });
    env.export(
        "cata_3820",
        "snap",
        &["-q", "-j", "4", "--max-retries", "12", "--timeout", "0.5"],
    )
    .ok();
    assert_parquet_matches(&env.path("snap"), &spec);
    let s = env.sim.stats();
    let m = manifest(&env.path("snap"));
    let faults = s.http_errors + s.dropped + s.truncated + s.redirected + s.stalled;
    assert!(faults > 0);
    assert_eq!(m.retries, faults, "{s:?}");
}

#[test]
fn a_mutation_mid_export_starts_over_and_publishes_the_new_version() {
    let spec = credit(2000);
    let env = Env::with(SimConfig {
        datasets: vec![spec.clone()],
        mutate_after: Some(5),
        mutate_rows: 30,
        ..SimConfig::default()
    });
    env.export("cata_3820", "snap", &["-q", "-j", "2"]).ok();
    let m = manifest(&env.path("snap"));
    assert_eq!(m.passes, 2);
    assert!(m.consistent);
    assert_eq!(m.rows, 2030);
    assert_parquet_matches(&env.path("snap"), &mutated(&spec, 30));
}

#[test]
fn a_dataset_that_never_holds_still_publishes_nothing() {
    let spec = credit(2000);
    let env = Env::with(SimConfig {
        datasets: vec![spec.clone()],
        mutate_after: Some(3),
        mutate_rows: 200,
        ..SimConfig::default()
    });
    let r = env.export("cata_3820", "snap", &["-q", "--consistency-retries", "0"]);
    r.fails_with(7)
        .stderr_has("changed during the export")
        .stderr_has("the total moved from 2000 to 2200")
        .stderr_has("is identical to page");
    assert!(!env.path("snap").exists());
    assert_eq!(
        names_in(env.dir.path()),
        Vec::<String>::new(),
        "no staging leftovers"
    );

    // --allow-inconsistent publishes, and says so.
    let env = Env::with(SimConfig {
        datasets: vec![spec],
        mutate_after: Some(3),
        mutate_rows: 200,
        ..SimConfig::default()
    });
    env.export(
        "cata_3820",
        "snap",
        &["-q", "--consistency-retries", "0", "--allow-inconsistent"],
    )
    .ok();
    let m = manifest(&env.path("snap"));
    assert!(!m.consistent);
    assert!(
        m.warnings.iter().any(|w| w.contains("identical")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn rate_limit_caps_requests_per_second() {
    let env = Env::new(vec![credit(6000)]);
    let t = Instant::now();
    env.export(
        "cata_3820",
        "snap",
        &["-q", "-j", "8", "--rate-limit", "40"],
    )
    .ok();
    // 34 calls at 40/s cannot take less than 33/40 s (a lower bound, not a timing).
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn past_end_and_oversize_switches_do_not_matter() {
    let spec = credit(450);
    let env = Env::with(SimConfig {
        datasets: vec![spec.clone()],
        past_end: jdop::sim::PastEnd::LastPage,
        oversize: jdop::sim::Oversize::Clamp,
        ..SimConfig::default()
    });
    env.export("cata_3820", "snap", &["-q"]).ok();
    assert_parquet_matches(&env.path("snap"), &spec);
    assert_eq!(
        env.sim.stats().data_calls,
        3,
        "pages come from the total, not from an empty page"
    );
}

#[test]
fn the_secret_never_appears_in_any_failure() {
    let env = Env::with(SimConfig {
        datasets: vec![credit(600)],
        fail_pages: vec![2],
        fail_mode: jdop::sim::FailMode::Http500,
        ..SimConfig::default()
    });
    let base = env.sim.base_url();
    let closed = "http://127.0.0.1:9/jdop_front";
    let runs = [
        env.export("cata_3820", "a", &["--method", "get", "--max-retries", "1"]),
        env.export("cata_3820", "b", &["--max-retries", "1", "--json"]),
        env.export("cata_999", "c", &["--method", "get"]),
        env.jdop(&[
            "export",
            "cata_3820",
            "--base-url",
            closed,
            "--out",
            "d",
            "--max-retries",
            "0",
            "--method",
            "get",
        ]),
        env.jdop(&["total", "cata_3820", "--base-url", &base, "--method", "get"]),
        env.jdop(&["updated", "cata_999", "--base-url", &base, "--json"]),
        env.jdop_env(
            &["total", "cata_3820", "--base-url", &base, "--method", "get"],
            &[
                ("JDOP_APPSECRET", "wrong%2Fsecret+x"),
                ("JDOP_LOG", "debug"),
            ],
        ),
    ];
    let encoded: String = form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let files = all_text_under(env.dir.path());
    for r in &runs {
        for s in [
            SECRET,
            encoded.as_str(),
            "wrong%2Fsecret+x",
            "wrong%252Fsecret%2Bx",
        ] {
            assert!(
                !r.stdout().contains(s) && !r.stderr().contains(s),
                "`{s}` leaked by {}",
                r.cmd
            );
            assert!(!files.contains(s), "`{s}` leaked into a file");
        }
    }
}

#[test]
fn a_request_given_up_during_its_stall_counts_as_stalled_only() {
    // Stalls and other faults rolled on the same requests: the simulator counts
    // what it answered, so a stalled request the client gave up on is one fault
    // (the stall), and every retry of jdop matches one counted fault.
    for seed in 1..=3 {
        let spec = credit(1000);
        let env = Env::with(SimConfig {
            datasets: vec![spec.clone()],
            error_rate: 0.3,
            truncate_rate: 0.2,
            stall_rate: 0.3,
            stall: Duration::from_secs(3),
            seed,
            ..SimConfig::default()
        });
        env.export(
            "cata_3820",
            "snap",
            &["-q", "-j", "4", "--max-retries", "30", "--timeout", "0.3"],
        )
        .ok();
        assert_parquet_matches(&env.path("snap"), &spec);
        let s = env.sim.stats();
        let m = manifest(&env.path("snap"));
        assert!(s.stalled > 0 && s.http_errors > 0, "seed {seed}: {s:?}");
        let faults = s.http_errors + s.dropped + s.truncated + s.redirected + s.stalled;
        assert_eq!(m.retries, faults, "seed {seed}: {s:?}");
    }
}
