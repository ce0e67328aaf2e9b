use crate::util::*;

#[test]
fn demo_runs_to_completion_with_defaults() {
    let env = Env::new(vec![]);
    let run = env.jdop_env(&["demo", "--latency-ms", "0"], &[]);
    run.ok()
        .stderr_has("exported 50000 rows of `cata_3820`")
        .stderr_has("duckdb -c")
        .stderr_has("demo-out/part-00000.parquet");
    let m = manifest(&env.path("demo-out"));
    assert_eq!(m.rows, 50_000);
    let spec = jdop::sim::DatasetSpec::credit("cata_3820", 50_000);
    assert_parquet_matches(&env.path("demo-out"), &spec);
}
