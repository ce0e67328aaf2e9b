//! `jdop sync` over several datasets against the simulator.

use std::time::Duration;

use jdop::sim::{DatasetSpec, SimConfig};

use crate::util::*;

fn write_config(env: &Env, extra_top: &str, datasets: &str) {
    let text = format!(
        "root = \"mirror\"\nbase_url = \"{}\"\nappsecret_env = \"JDOP_APPSECRET\"\n{extra_top}\n{datasets}",
        env.sim.base_url()
    );
    std::fs::write(env.path("jobs.toml"), text).unwrap();
}

fn sync(env: &Env, extra: &[&str]) -> Run {
    let mut args = vec![
        "sync",
        "jobs.toml",
        "--retry-min-delay-ms",
        "5",
        "--retry-max-delay-ms",
        "20",
    ];
    args.extend_from_slice(extra);
    env.jdop(&args)
}

fn report(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout()))
}

fn latest(env: &Env, id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(env.path(&format!("mirror/{id}/latest.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn snapshots(env: &Env, id: &str) -> Vec<String> {
    names_in(&env.path(&format!("mirror/{id}")))
        .into_iter()
        .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()))
        .collect()
}

fn two_datasets() -> Env {
    Env::new(vec![
        DatasetSpec::credit("cata_1", 900),
        DatasetSpec::nested("cata_2", 300),
    ])
}

const TWO: &str =
    "[[dataset]]\nid = \"cata_1\"\n\n[[dataset]]\nid = \"cata_2\"\nformat = \"csv\"\n";

#[test]
fn second_sync_with_nothing_changed_fetches_no_page() {
    let env = two_datasets();
    write_config(&env, "", TWO);
    let r = sync(&env, &["--json"]);
    r.ok().stderr_has("exported");
    let rep = report(&r);
    assert_eq!(rep["exported"], 2);
    let spec = env.sim.dataset("cata_1").unwrap();
    assert_parquet_matches(&env.path("mirror/cata_1/latest"), &spec);
    assert_csv_matches(
        &env.path("mirror/cata_2/latest"),
        &env.sim.dataset("cata_2").unwrap(),
        false,
    );

    env.sim.reset_stats();
    let r = sync(&env, &["--json"]);
    r.ok().stderr_has("unchanged");
    let rep = report(&r);
    assert_eq!(
        (rep["exported"].as_u64(), rep["unchanged"].as_u64()),
        (Some(0), Some(2))
    );
    let s = env.sim.stats();
    assert_eq!(s.data_calls, 0, "no page fetched for unchanged datasets");
    assert_eq!((s.total_calls, s.update_date_calls), (2, 2));
    assert_eq!(snapshots(&env, "cata_1").len(), 1);

    // --force exports anyway.
    sync(&env, &["--force", "-q"]).ok();
    assert_eq!(snapshots(&env, "cata_1").len(), 2);
}

#[test]
fn changed_update_date_makes_a_new_snapshot_and_moves_latest() {
    let env = two_datasets();
    write_config(&env, "", TWO);
    sync(&env, &["-q"]).ok();
    let first = latest(&env, "cata_1")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let mut spec = env.sim.dataset("cata_1").unwrap();
    spec.updated = chrono::NaiveDate::from_ymd_opt(2025, 1, 2)
        .unwrap()
        .and_hms_opt(8, 0, 0)
        .unwrap();
    spec.rows = 950;
    env.sim.set_dataset(spec.clone());
    env.sim.reset_stats();
    let r = sync(&env, &["--json"]);
    r.ok();
    let rep = report(&r);
    assert_eq!(rep["datasets"][0]["status"], "exported");
    assert_eq!(rep["datasets"][1]["status"], "unchanged");
    let l = latest(&env, "cata_1");
    let second = l["snapshot"].as_str().unwrap();
    assert_ne!(second, first);
    assert!(second > first.as_str(), "snapshot ids sort by time");
    assert_eq!(l["update_date"]["iso"], "2025-01-02T08:00:00");
    assert_eq!(l["rows"], 950);
    let link = std::fs::read_link(env.path("mirror/cata_1/latest")).unwrap();
    assert_eq!(link.to_str().unwrap(), second);
    assert_parquet_matches(&env.path("mirror/cata_1/latest"), &spec);
    assert_eq!(snapshots(&env, "cata_1").len(), 2);
}

#[test]
fn keep_prunes_old_snapshots_but_never_the_latest() {
    let env = Env::new(vec![DatasetSpec::credit("cata_1", 100)]);
    write_config(&env, "keep = 2", "[[dataset]]\nid = \"cata_1\"\n");
    for _ in 0..4 {
        sync(&env, &["--force", "-q"]).ok();
    }
    let snaps = snapshots(&env, "cata_1");
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(latest(&env, "cata_1")["snapshot"], snaps[1].as_str());
}

#[test]
fn freeze_fails_on_an_added_column_and_evolve_records_it() {
    let v1 = vec![
        r#"{"a":"1","b":"x"}"#.to_string(),
        r#"{"a":"2","b":"y"}"#.to_string(),
    ];
    let env = Env::new(vec![
        DatasetSpec::fixed("cata_1", v1.clone()),
        DatasetSpec::fixed("cata_2", v1),
    ]);
    write_config(
        &env,
        "",
        "[[dataset]]\nid = \"cata_1\"\nschema = \"freeze\"\n\n[[dataset]]\nid = \"cata_2\"\n",
    );
    sync(&env, &["-q"]).ok();
    let frozen_latest = latest(&env, "cata_1")["snapshot"].clone();
    let v2 = vec![
        r#"{"a":"1","b":"x","new":"n"}"#.to_string(),
        r#"{"a":"2","b":"y"}"#.to_string(),
    ];
    for id in ["cata_1", "cata_2"] {
        let mut spec = DatasetSpec::fixed(id, v2.clone());
        spec.updated = chrono::NaiveDate::from_ymd_opt(2025, 6, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        env.sim.set_dataset(spec);
    }
    let r = sync(&env, &["--json"]);
    r.fails_with(9).stderr_has("FAILED");
    let rep = report(&r);
    let d1 = &rep["datasets"][0];
    assert_eq!(d1["status"], "failed");
    assert!(
        d1["error"].as_str().unwrap().contains("added `new`"),
        "{d1}"
    );
    assert_eq!(d1["exit_code"], 8);
    assert_eq!(
        latest(&env, "cata_1")["snapshot"],
        frozen_latest,
        "freeze keeps the previous latest"
    );
    assert_eq!(snapshots(&env, "cata_1").len(), 1);

    assert_eq!(rep["datasets"][1]["status"], "exported");
    let l2 = latest(&env, "cata_2");
    let m = manifest(&env.path(&format!(
        "mirror/cata_2/{}",
        l2["snapshot"].as_str().unwrap()
    )));
    let changes = m.schema_changes.unwrap();
    assert_eq!(changes.added.len(), 1);
    assert_eq!(changes.added[0].name, "new");
    assert!(changes.removed.is_empty() && changes.changed.is_empty());
}

#[test]
fn a_failing_dataset_does_not_stop_the_others() {
    let env = two_datasets();
    write_config(
        &env,
        "",
        "[[dataset]]\nid = \"cata_1\"\n\n[[dataset]]\nid = \"cata_404\"\n\n[[dataset]]\nid = \"cata_2\"\n",
    );
    let r = sync(&env, &["--json"]);
    r.fails_with(9)
        .stderr_has("FAILED")
        .stderr_has("1 of 3 datasets failed");
    let rep = report(&r);
    let statuses: Vec<&str> = rep["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["exported", "failed", "exported"]);
    assert!(rep["datasets"][1]["error"]
        .as_str()
        .unwrap()
        .contains("接口不存在"));
    assert_eq!(rep["failed"], 1);
    assert!(!r.stdout().contains(SECRET) && !r.stderr().contains(SECRET));
}

#[test]
fn datasets_share_one_limit_on_requests_in_flight() {
    let env = Env::with(SimConfig {
        datasets: vec![
            DatasetSpec::credit("cata_1", 1000),
            DatasetSpec::credit("cata_2", 1000),
            DatasetSpec::credit("cata_3", 1000),
        ],
        latency: Duration::from_millis(20),
        ..SimConfig::default()
    });
    write_config(
        &env,
        "concurrency = 2\nparallel = 3",
        "[[dataset]]\nid = \"cata_1\"\n[[dataset]]\nid = \"cata_2\"\n[[dataset]]\nid = \"cata_3\"\n",
    );
    sync(&env, &["-q"]).ok();
    assert_eq!(env.sim.stats().max_in_flight, 2);
}

#[test]
fn two_syncs_on_one_root_do_not_collide() {
    let env = Env::with(SimConfig {
        datasets: vec![DatasetSpec::credit("cata_1", 3000)],
        latency: Duration::from_millis(30),
        ..SimConfig::default()
    });
    write_config(&env, "concurrency = 1", "[[dataset]]\nid = \"cata_1\"\n");
    let mut first = env.spawn_until(&["sync", "jobs.toml", "-q"], 2);
    let second = sync(&env, &[]);
    second.fails_with(10).stderr_has("another jdop run");
    assert!(first.wait().unwrap().success());
    assert_eq!(snapshots(&env, "cata_1").len(), 1);
}

#[test]
fn a_stale_lock_is_taken_over() {
    let env = Env::new(vec![DatasetSpec::credit("cata_1", 50)]);
    write_config(&env, "", "[[dataset]]\nid = \"cata_1\"\n");
    std::fs::create_dir_all(env.path("mirror")).unwrap();
    std::fs::write(
        env.path("mirror/.jdop-sync.lock"),
        "999999999 2020-01-01T00:00:00Z\n",
    )
    .unwrap();
    sync(&env, &[])
        .ok()
        .stderr_has("took over a lock left by process 999999999");
}

#[test]
fn catalog_and_views_describe_the_mirror() {
    let env = two_datasets();
    write_config(&env, "", TWO);
    sync(&env, &["-q"]).ok();
    let cat: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("mirror/catalog.json")).unwrap())
            .unwrap();
    let ds = cat["datasets"].as_array().unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0]["dataset"], "cata_1");
    assert_eq!(ds[0]["rows"], 900);
    assert_eq!(ds[0]["update_date"]["date"], "2024-05-17");
    assert!(ds[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "地市"));
    let views = std::fs::read_to_string(env.path("mirror/views.sql")).unwrap();
    assert!(
        views.contains("CREATE OR REPLACE VIEW \"cata_1\" AS SELECT * FROM read_parquet('cata_1/"),
        "{views}"
    );
    assert!(
        views.contains("CREATE OR REPLACE VIEW \"cata_2\" AS SELECT * FROM read_csv('cata_2/"),
        "{views}"
    );
    if crate::readers::readers_available() {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import duckdb; c = duckdb.connect(); c.execute(open('views.sql').read()); print(c.sql('SELECT (SELECT count(*) FROM cata_1), (SELECT count(*) FROM cata_2)').fetchall()[0])",
            ])
            .current_dir(env.path("mirror"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "(900, 300)",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_reports_every_error_with_its_line() {
    let env = two_datasets();
    std::fs::write(
        env.path("jobs.toml"),
        "root = \"mirror\"\nbase_url = \"http://127.0.0.1:1/jdop_front\"\nformat = \"xlsx\"\n\n[[dataset]]\nid = \"cata_1\"\nkeep = 0\n",
    )
    .unwrap();
    env.jdop(&["sync", "--check", "jobs.toml"])
        .fails_with(2)
        .stderr_has("line 3:")
        .stderr_has("line 7:")
        .stderr_has("has 2 errors");
    write_config(&env, "", TWO);
    env.jdop_env(&["sync", "--check", "jobs.toml"], &[])
        .ok()
        .stderr_has("is valid: 2 datasets");
    assert!(!env.path("mirror").exists(), "--check touches nothing");
}

#[test]
fn a_killed_sync_resumes_from_its_spool() {
    let env = Env::with(SimConfig {
        datasets: vec![DatasetSpec::credit("cata_1", 4000)],
        latency: Duration::from_millis(30),
        ..SimConfig::default()
    });
    write_config(&env, "concurrency = 2", "[[dataset]]\nid = \"cata_1\"\n");
    let mut first = env.spawn_until(&["sync", "jobs.toml", "-q"], 8);
    first.kill().unwrap();
    first.wait().unwrap();
    env.sim.reset_stats();
    sync(&env, &["-q"]).ok();
    let l = latest(&env, "cata_1");
    let m = manifest(&env.path(&format!(
        "mirror/cata_1/{}",
        l["snapshot"].as_str().unwrap()
    )));
    assert!(m.pages_reused > 0, "nothing resumed");
    assert_eq!(env.sim.stats().data_calls, 20 - m.pages_reused);
    assert_parquet_matches(
        &env.path("mirror/cata_1/latest"),
        &env.sim.dataset("cata_1").unwrap(),
    );
}

#[test]
fn clean_runs_leave_no_lock_to_take_over_and_json_reports_a_held_lock() {
    let env = Env::new(vec![DatasetSpec::credit("cata_1", 50)]);
    write_config(
        &env,
        "rate_limit = 100\nconsistency_retries = 1",
        "[[dataset]]\nid = \"cata_1\"\nkey = \"ID\"\n",
    );
    sync(&env, &[]).ok();
    let r = sync(&env, &["--json"]);
    r.ok();
    assert!(!r.stderr().contains("took over"), "{}", r.stderr());
    assert!(report(&r).get("took_over_lock_of_pid").is_none());
    let lock = std::fs::File::open(env.path("mirror/.jdop-sync.lock")).unwrap();
    lock.lock().unwrap();
    let held = sync(&env, &["--json"]);
    held.fails_with(10);
    assert_eq!(report(&held)["exit_code"], 10);
}

#[test]
fn a_version_refused_by_freeze_is_not_downloaded_again() {
    let v1 = vec![r#"{"a":"1"}"#.to_string()];
    let env = Env::new(vec![DatasetSpec::fixed("cata_1", v1)]);
    write_config(
        &env,
        "schema = \"freeze\"",
        "[[dataset]]\nid = \"cata_1\"\n",
    );
    sync(&env, &["-q"]).ok();
    let mut v2 = DatasetSpec::fixed("cata_1", vec![r#"{"a":"1","b":"2"}"#.to_string()]);
    v2.updated = chrono::NaiveDate::from_ymd_opt(2025, 3, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    env.sim.set_dataset(v2);
    sync(&env, &["-q"]).fails_with(9);
    env.sim.reset_stats();
    let r = sync(&env, &["--json"]);
    r.fails_with(9);
    assert!(report(&r)["datasets"][0]["error"]
        .as_str()
        .unwrap()
        .contains("refused before"));
    assert_eq!(
        env.sim.stats().data_calls,
        0,
        "the refused version is not fetched again"
    );
}

#[test]
fn sync_pins_previous_types_partitions_and_encodes_csv() {
    let env = Env::new(vec![
        DatasetSpec::fixed("cata_1", crate::typed::platform_records()),
        DatasetSpec::credit("cata_2", 300),
    ]);
    write_config(
        &env,
        "pin_types = true",
        "[[dataset]]\nid = \"cata_1\"\n\n[[dataset]]\nid = \"cata_2\"\nformat = \"csv\"\ncsv_encoding = \"gb18030\"\npartition_by = \"地市\"\n",
    );
    sync(&env, &["-q"]).ok();
    sync(&env, &["-q", "--force"]).ok();
    let snaps = snapshots(&env, "cata_1");
    assert_eq!(snaps.len(), 2);
    let m = manifest(&env.path(&format!("mirror/cata_1/{}", snaps[1])));
    let pinned = m.columns.iter().find(|c| c.name == "金额").unwrap();
    assert_eq!(
        (pinned.arrow_type.as_str(), pinned.rule.as_str()),
        ("Decimal128(18, 2)", "pinned-previous")
    );
    let snaps = snapshots(&env, "cata_2");
    let dir = env.path(&format!("mirror/cata_2/{}", snaps[0]));
    let m = manifest(&dir);
    assert_eq!(m.partition_by.as_deref(), Some("地市"));
    assert!(m.files.iter().all(|f| f.path.starts_with("地市=")));
    let bytes = std::fs::read(dir.join(&m.files[0].path)).unwrap();
    assert!(std::str::from_utf8(&bytes).is_err(), "GB18030, not UTF-8");

    write_config(
        &env,
        "csv_encoding = \"latin1\"",
        "[[dataset]]\nid = \"cata_1\"\n",
    );
    sync(&env, &["--check"])
        .fails_with(2)
        .stderr_has("line 4: `csv_encoding` must be");
}
