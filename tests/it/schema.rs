//! The schema rules, each against records served by the simulator.

use jdop::sim::DatasetSpec;

use crate::util::*;

/// Serves `pages` (each a list of record texts) with page size 2 and returns the
/// written snapshot's manifest columns as (name, arrow type).
fn export_records(records: &[&str]) -> (Env, Vec<(String, String)>) {
    let spec = DatasetSpec::fixed("cata_1", records.iter().map(|s| s.to_string()).collect());
    let env = Env::new(vec![spec.clone()]);
    env.export("cata_1", "snap", &["-q", "--page-size", "2"])
        .ok();
    assert_parquet_matches(&env.path("snap"), &spec);
    let m = manifest(&env.path("snap"));
    let cols = m
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.arrow_type.clone()))
        .collect();
    (env, cols)
}

fn names(cols: &[(String, String)]) -> Vec<&str> {
    cols.iter().map(|c| c.0.as_str()).collect()
}

#[test]
fn late_key_is_kept() {
    let (_e, cols) = export_records(&[
        r#"{"a":"1"}"#,
        r#"{"a":"2"}"#,
        r#"{"a":"3"}"#,
        r#"{"a":"4"}"#,
        r#"{"a":"5","late":"x"}"#,
    ]);
    assert_eq!(names(&cols), ["a", "late"]);
}

#[test]
fn type_conflict_int_float_is_float64_and_others_utf8() {
    let (env, cols) = export_records(&[
        r#"{"f":1,"s":1,"b":true}"#,
        r#"{"f":2.5,"s":"x","b":"yes"}"#,
        r#"{"f":3,"s":7.25,"b":1}"#,
    ]);
    assert_eq!(cols[0], ("f".into(), "Float64".into()));
    assert_eq!(cols[1], ("s".into(), "Utf8".into()));
    assert_eq!(cols[2], ("b".into(), "Utf8".into()));
    let (_, rows) = parquet_rows(&env.path("snap"));
    assert_eq!(
        rows[2]["s"], "7.25",
        "the string form of every value is kept"
    );
    assert_eq!(rows[0]["b"], "true");
}

#[test]
fn all_null_column_is_utf8_not_null_type() {
    let (env, cols) = export_records(&[
        r#"{"a":"x","n":null}"#,
        r#"{"a":"y"}"#,
        r#"{"a":"z","n":null}"#,
    ]);
    assert_eq!(cols[1], ("n".into(), "Utf8".into()));
    let batches = read_parquet(&env.path("snap"));
    assert_eq!(
        batches[0].schema().field(1).data_type(),
        &arrow_schema::DataType::Utf8
    );
}

#[test]
fn nested_shapes() {
    let (env, cols) = export_records(&[
        r#"{"o":{"x":1,"y":"a"},"l":[1,2],"c":{"k":1},"e":[]}"#,
        r#"{"o":{"y":"b","z":true},"l":[],"c":[1],"e":[]}"#,
        r#"{"o":null,"l":[3.5],"c":"text","e":null}"#,
    ]);
    assert_eq!(cols[0].1, r#"Struct("x": Int64, "y": Utf8, "z": Boolean)"#);
    assert_eq!(cols[1].1, "List(Float64)");
    assert_eq!(cols[2].1, "Utf8", "conflicting shapes become JSON text");
    assert_eq!(
        cols[3].1, "List(Utf8)",
        "always-empty arrays are List(Utf8)"
    );
    let (_, rows) = parquet_rows(&env.path("snap"));
    assert_eq!(rows[0]["c"], r#"{"k":1}"#);
    assert_eq!(rows[1]["c"], "[1]");
    assert_eq!(rows[2]["c"], "text");
}

#[test]
fn chinese_and_mixed_case_keys_are_kept_exactly() {
    let (_e, cols) = export_records(&[
        r#"{"地市":"杭州市","ENTNAME":"a","entname":"b","区 县":"西湖区","emoji😀":"x"}"#,
    ]);
    assert_eq!(
        names(&cols),
        ["地市", "ENTNAME", "entname", "区 县", "emoji😀"]
    );
}

#[test]
fn column_order_is_first_seen_in_page_order() {
    let (_e, cols) = export_records(&[
        r#"{"zeta":"1","Alpha":"1"}"#,
        r#"{"mid":"1","zeta":"2"}"#,
        r#"{"beta":"1"}"#,
        r#"{"Alpha":"2","aaa":"1"}"#,
    ]);
    assert_eq!(names(&cols), ["zeta", "Alpha", "mid", "beta", "aaa"]);
}

#[test]
fn strings_are_typed_only_when_lossless() {
    let (env, cols) = export_records(&[r#"{"code":"01425","amount":"5000.00","d":"2019-01-29"}"#]);
    let types: Vec<&str> = cols.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(types, ["Utf8", "Decimal128(18, 2)", "Date32"]);
    let (_, rows) = parquet_rows(&env.path("snap"));
    assert_eq!(rows[0]["code"], "01425");
    assert_eq!(rows[0]["d"], "2019-01-29");
}
