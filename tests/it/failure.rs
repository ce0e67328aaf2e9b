//! Failures: each gives one clear message, a documented exit code, nothing
//! published, an earlier snapshot untouched, and never the appsecret.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jdop::sim::{DatasetSpec, FailMode, SimConfig};

use crate::util::*;

fn snapshot_state(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walk(dir)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&p).unwrap_or_default(),
            )
        })
        .collect()
}

/// Exports once successfully, runs `fail`, and checks the first snapshot is intact
/// and nothing else was left beside it.
fn keeps_earlier_snapshot(env: &Env, fail: impl FnOnce() -> Run) -> Run {
    env.export("cata_3820", "snap", &["-q"]).ok();
    let before = snapshot_state(&env.path("snap"));
    let run = fail();
    assert_eq!(
        snapshot_state(&env.path("snap")),
        before,
        "the earlier snapshot changed"
    );
    assert_eq!(names_in(env.dir.path()), ["snap"], "staging leftovers");
    run
}

fn assert_no_secret(env: &Env, run: &Run, secret: &str) {
    let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let haystack = format!(
        "{}\n{}\n{}",
        run.stdout(),
        run.stderr(),
        all_text_under(env.dir.path())
    );
    assert!(
        !haystack.contains(secret),
        "the secret leaked in {}",
        run.cmd
    );
    assert!(
        !haystack.contains(&encoded),
        "the URL-encoded secret leaked in {}",
        run.cmd
    );
}

#[test]
fn wrong_secret_is_refused_with_the_platform_message() {
    let env = Env::new(vec![DatasetSpec::credit("cata_3820", 500)]);
    let wrong = "wrong/secret+value=1&x";
    std::fs::write(env.path("secret.txt"), wrong).unwrap();
    let base = env.sim.base_url();
    for method in ["post", "get"] {
        let run = keeps_earlier_snapshot(&env, || {
            let r = env.jdop(&[
                "export",
                "cata_3820",
                "--base-url",
                &base,
                "--out",
                "snap",
                "--appsecret-file",
                "secret.txt",
                "--method",
                method,
            ]);
            std::fs::remove_file(env.path("secret.txt")).ok();
            r
        });
        run.fails_with(3)
            .stderr_has("`cata_3820`")
            .stderr_has("appsecret无效或已过期");
        assert_eq!(
            run.stderr()
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count(),
            1
        );
        assert_no_secret(&env, &run, wrong);
        std::fs::write(env.path("secret.txt"), wrong).unwrap();
    }
}

#[test]
fn unknown_dataset_is_named() {
    let env = Env::new(vec![DatasetSpec::credit("cata_3820", 10)]);
    let run = env.export("cata_999", "x", &[]);
    run.fails_with(3)
        .stderr_has("`cata_999`")
        .stderr_has("接口不存在");
    assert!(!env.path("x").exists());
    assert_no_secret(&env, &run, SECRET);
}

#[test]
fn unreachable_host_fails_after_retries() {
    let env = Env::new(vec![]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}/jdop_front");
    let run = env.jdop(&[
        "export",
        "cata_3820",
        "--base-url",
        &base,
        "--out",
        "x",
        "--max-retries",
        "2",
        "--retry-min-delay-ms",
        "5",
        "--retry-max-delay-ms",
        "10",
        "-q",
    ]);
    run.fails_with(4)
        .stderr_has("failed to fetch the total of `cata_3820`")
        .stderr_has("after 2 retries")
        .stderr_has("connection failed");
    assert_eq!(names_in(env.dir.path()), Vec::<String>::new());
}

#[test]
fn platform_failure_midway_keeps_earlier_snapshot() {
    let env = Env::with(SimConfig {
        datasets: vec![DatasetSpec::credit("cata_3820", 2000)],
        ..SimConfig::default()
    });
    // First a good snapshot, then the simulator starts failing page 5.
    env.export("cata_3820", "snap", &["-q"]).ok();
    let before = snapshot_state(&env.path("snap"));
    let first_env = env;

    for (mode, code, text) in [
        (FailMode::Status0, 3, jdop::sim::FAIL_MSG),
        (FailMode::Http500, 4, "after 2 retries"),
    ] {
        let env = Env::with(SimConfig {
            datasets: vec![DatasetSpec::credit("cata_3820", 2000)],
            fail_pages: vec![5],
            fail_mode: mode,
            ..SimConfig::default()
        });
        std::fs::create_dir(env.path("snap")).unwrap();
        for name in before.keys() {
            std::fs::copy(
                first_env.path("snap").join(name),
                env.path("snap").join(name),
            )
            .unwrap();
        }
        let run = env.export("cata_3820", "snap", &["-q", "--max-retries", "2"]);
        run.fails_with(code)
            .stderr_has("page 5 of `cata_3820`")
            .stderr_has(text);
        assert_eq!(snapshot_state(&env.path("snap")), before);
        assert_eq!(names_in(env.dir.path()), ["snap"], "staging leftovers");
        assert_no_secret(&env, &run, SECRET);
    }
}

#[test]
fn transient_5xx_are_retried_and_counted() {
    let spec = DatasetSpec::credit("cata_3820", 3000);
    let env = Env::with(SimConfig {
        datasets: vec![spec.clone()],
        error_rate: 0.2,
        seed: 99,
        ..SimConfig::default()
    });
    env.export("cata_3820", "snap", &["-q", "--max-retries", "8"])
        .ok();
    assert_parquet_matches(&env.path("snap"), &spec);
    let m = manifest(&env.path("snap"));
    let s = env.sim.stats();
    assert!(m.retries > 0);
    assert_eq!(m.retries, s.http_errors);
    assert_eq!(
        m.requests,
        s.total_calls + s.data_calls + s.update_date_calls
    );
}

#[test]
fn bad_flags_and_missing_secret_are_usage_errors() {
    let env = Env::new(vec![DatasetSpec::credit("cata_3820", 10)]);
    env.jdop(&["export", "cata_3820", "--out", "x", "--page-size", "500"])
        .fails_with(2);
    env.jdop(&["export", "cata_3820", "--out", "x", "--no-such-flag"])
        .fails_with(2);
    env.jdop(&[
        "export",
        "../etc",
        "--base-url",
        "http://127.0.0.1:1/jdop_front",
        "--out",
        "x",
    ])
    .fails_with(2)
    .stderr_has("invalid dataset id");
    env.jdop(&["export", "cata_3820", "--out", "x"])
        .fails_with(2)
        .stderr_has("--base-url");
    let base = env.sim.base_url();
    env.jdop_env(
        &["export", "cata_3820", "--base-url", &base, "--out", "x"],
        &[],
    )
    .fails_with(2)
    .stderr_has("JDOP_APPSECRET");
    assert_eq!(names_in(env.dir.path()), Vec::<String>::new());
}

#[test]
fn a_folder_that_is_not_a_snapshot_is_not_replaced() {
    let env = Env::new(vec![DatasetSpec::credit("cata_3820", 10)]);
    std::fs::create_dir(env.path("docs")).unwrap();
    std::fs::write(env.path("docs/thesis.docx"), "precious").unwrap();
    env.export("cata_3820", "docs", &["-q"])
        .fails_with(2)
        .stderr_has("refusing to replace");
    assert_eq!(
        std::fs::read_to_string(env.path("docs/thesis.docx")).unwrap(),
        "precious"
    );
}

#[test]
fn killed_export_leaves_earlier_snapshot_and_the_next_run_resumes() {
    let spec = DatasetSpec::credit("cata_3820", 4000);
    let env = Env::with(SimConfig {
        datasets: vec![spec.clone()],
        latency: Duration::from_millis(40),
        ..SimConfig::default()
    });
    env.export("cata_3820", "snap", &["-q", "-j", "8"]).ok();
    for signal in ["-KILL", "-TERM"] {
        let before = snapshot_state(&env.path("snap"));
        env.sim.reset_stats();
        // Kill it once it has fetched some pages.
        let base = env.sim.base_url();
        let mut child = env.spawn_until(
            &[
                "export",
                "cata_3820",
                "--base-url",
                &base,
                "--out",
                "snap",
                "-q",
                "-j",
                "2",
            ],
            6,
        );
        std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        if signal == "-TERM" {
            assert_eq!(status.code(), Some(130));
        }
        assert_eq!(snapshot_state(&env.path("snap")), before, "after {signal}");
        assert_eq!(
            names_in(env.dir.path()),
            [".snap.jdop-staging", "snap"],
            "the spool is kept for a resume"
        );
        let first = env.sim.stats();

        // The same command again fetches only the pages the spool lacks.
        env.sim.reset_stats();
        env.export("cata_3820", "snap", &["-q", "-j", "8"]).ok();
        let m = manifest(&env.path("snap"));
        let second = env.sim.stats();
        assert!(m.pages_reused > 0, "after {signal}: nothing reused");
        assert_eq!(second.data_calls, 20 - m.pages_reused, "after {signal}");
        assert!(
            // A kill loses at most the requests in flight (-j 8) and bodies not yet spooled.
            first.data_calls + second.data_calls <= 20 + 8,
            "pages fetched twice: {} + {}",
            first.data_calls,
            second.data_calls
        );
        assert_eq!((second.total_calls, second.update_date_calls), (2, 2));
        assert_parquet_matches(&env.path("snap"), &spec);
        assert_eq!(
            names_in(env.dir.path()),
            ["snap"],
            "staging removed after publishing"
        );
    }
}

/// An export of `rows` credit records killed (SIGKILL) after 4 data calls, its
/// spool left in `.snap.jdop-staging`.
fn killed_export(rows: u64) -> (Env, DatasetSpec) {
    let spec = DatasetSpec::credit("cata_3820", rows);
    let env = Env::with(SimConfig {
        datasets: vec![spec.clone()],
        latency: Duration::from_millis(40),
        ..SimConfig::default()
    });
    let base = env.sim.base_url();
    let args = [
        "export",
        "cata_3820",
        "--base-url",
        &base,
        "--out",
        "snap",
        "-q",
        "-j",
        "1",
    ];
    let mut child = env.spawn_until(&args, 4);
    child.kill().unwrap();
    child.wait().unwrap();
    (env, spec)
}

#[test]
fn a_resume_never_mixes_versions() {
    let (env, spec) = killed_export(2000);
    // The dataset moves on before the rerun: the old spool must not be used.
    let mut newer = spec.clone();
    newer.front = 7;
    newer.rows += 7;
    newer.updated += chrono::Duration::days(1);
    env.sim.set_dataset(newer.clone());
    env.export("cata_3820", "snap", &["-q"]).ok();
    let m = manifest(&env.path("snap"));
    assert_eq!(m.pages_reused, 0);
    assert_parquet_matches(&env.path("snap"), &newer);
}

#[test]
fn a_damaged_spool_page_is_fetched_again_on_resume() {
    let (env, spec) = killed_export(3000);
    // Garbage over the first spooled page's bytes: it no longer parses.
    let spool = env.path(".snap.jdop-staging/spool");
    let data = std::fs::OpenOptions::new()
        .write(true)
        .open(spool.join("pages.bin"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&data, b"{{{{not json", 0).unwrap();
    let r = env.export("cata_3820", "snap", &["-q"]);
    r.ok();
    assert_parquet_matches(&env.path("snap"), &spec);
    assert!(manifest(&env.path("snap")).pages_reused > 0);
}
