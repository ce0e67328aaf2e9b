//! Stage throughput of the export pipeline on simulator pages (no network):
//! envelope + record parsing, schema inference, conversion to Arrow (scanning
//! each page again, or walking the tape inference kept), Parquet
//! encoding (zstd), CSV encoding, and the whole bytes-of-pages -> Parquet path
//! (serial, and the exporter's pipelined path on all cores).
//! Each stage is reported in bytes/s (group `*_bytes`) and records/s (`*_records`).
//!
//! `cargo bench --bench pipeline`

use std::hint::black_box;

use arrow_array::RecordBatch;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jdop::convert::Converter;
use jdop::platform::records::Tape;
use jdop::platform::{parse_page, split_records};
use jdop::schema::{InferredSchema, Inferrer};
use jdop::sim::{DatasetSpec, Typing};
use jdop::sink::{CsvSink, ParquetOptions, ParquetSink};

/// 40 pages of 200 records: 8,000 records, about 7 MB of page bodies.
const PAGES: u64 = 40;
const PAGE_SIZE: u64 = 200;

fn bodies() -> Vec<String> {
    let spec = DatasetSpec::credit("cata_1", PAGES * PAGE_SIZE).with_typing(Typing::Mixed);
    (0..PAGES)
        .map(|p| {
            let mut s = String::from("{\"status\":1,\"msg\":\"ok\",\"data\":[");
            for i in p * PAGE_SIZE..(p + 1) * PAGE_SIZE {
                if i > p * PAGE_SIZE {
                    s.push(',');
                }
                spec.write_record(i, &mut s);
            }
            s.push_str("]}");
            s
        })
        .collect()
}

fn record_arrays(bodies: &[String]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| parse_page(b.as_bytes()).unwrap().into_owned())
        .collect()
}

fn infer(arrays: &[String]) -> InferredSchema {
    let mut inf = Inferrer::default();
    for a in arrays {
        inf.merge(Inferrer::observe_page(&split_records(a).unwrap()));
    }
    inf.finish()
}

fn convert(conv: &Converter, arrays: &[String]) -> Vec<RecordBatch> {
    arrays
        .chunks(8)
        .map(|c| {
            let refs: Vec<&str> = c.iter().map(String::as_str).collect();
            conv.decode(&refs).unwrap()
        })
        .collect()
}

/// Each page's inference keeping its tape (as the exporter does while it encodes
/// row groups early), and the tapes.
fn infer_taped(arrays: &[String]) -> (InferredSchema, Vec<Option<Tape>>) {
    let mut inf = Inferrer::default();
    let mut tapes = Vec::new();
    for a in arrays {
        let hash = twox_hash::XxHash3_64::oneshot(a.as_bytes());
        let (_, page, tape) = Inferrer::observe_array_taped(a, hash).unwrap();
        inf.merge(page);
        tapes.push(tape);
    }
    (inf.finish(), tapes)
}

/// [`convert`], walking each page's tape instead of scanning the page again.
fn convert_taped(conv: &Converter, arrays: &[String], tapes: &[Option<Tape>]) -> Vec<RecordBatch> {
    arrays
        .chunks(8)
        .zip(tapes.chunks(8))
        .map(|(c, t)| {
            let refs: Vec<&str> = c.iter().map(String::as_str).collect();
            conv.decode_taped(&refs, t).unwrap()
        })
        .collect()
}

fn write_parquet(dir: &std::path::Path, conv: &Converter, batches: &[RecordBatch]) -> usize {
    let mut sink = ParquetSink::new(
        dir.to_path_buf(),
        conv.schema().clone(),
        None,
        &ParquetOptions::default(),
        "cata_1",
    )
    .unwrap();
    for batch in batches {
        sink.write(batch).unwrap();
    }
    sink.close().unwrap().len()
}

fn stages(c: &mut Criterion) {
    let bodies = bodies();
    let arrays = record_arrays(&bodies);
    let bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
    let records = PAGES * PAGE_SIZE;
    let schema = infer(&arrays);
    let conv = Converter::new(&schema);
    let batches = convert(&conv, &arrays);
    let (_, tapes) = infer_taped(&arrays);
    assert_eq!(convert_taped(&conv, &arrays, &tapes), batches);
    let dir = tempfile::tempdir().unwrap();

    for (suffix, tp) in [
        ("bytes", Throughput::Bytes(bytes)),
        ("records", Throughput::Elements(records)),
    ] {
        let mut g = c.benchmark_group(format!("stage_{suffix}"));
        g.sample_size(10);
        g.throughput(tp);
        g.bench_function("parse_envelope_and_records", |b| {
            b.iter(|| {
                for body in &bodies {
                    let a = parse_page(body.as_bytes()).unwrap();
                    black_box(split_records(&a).unwrap().len());
                }
            })
        });
        g.bench_function("infer_schema", |b| b.iter(|| black_box(infer(&arrays))));
        g.bench_function("convert_to_arrow", |b| {
            b.iter(|| black_box(convert(&conv, &arrays)))
        });
        // What an export does while it encodes row groups early: inference keeps
        // each page's tape, conversion walks it.
        g.bench_function("infer_schema_keeping_tapes", |b| {
            b.iter(|| black_box(infer_taped(&arrays)))
        });
        g.bench_function("convert_to_arrow_walking_tapes", |b| {
            b.iter(|| black_box(convert_taped(&conv, &arrays, &tapes)))
        });
        g.bench_function("parquet_encode_zstd1", |b| {
            b.iter(|| {
                black_box(write_parquet(dir.path(), &conv, &batches));
            })
        });
        g.bench_function("csv_encode", |b| {
            let header: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
            b.iter(|| {
                let targets = schema.columns.iter().map(|c| c.typed).collect();
                let mut sink = CsvSink::new(
                    dir.path().to_path_buf(),
                    header.clone(),
                    targets,
                    Default::default(),
                    None,
                    "cata_1",
                );
                for a in &arrays {
                    sink.write_records(&split_records(a).unwrap()).unwrap();
                }
                black_box(sink.close().unwrap());
            })
        });
        // The exporter's path on 2 cores: spool + inference on rayon, row groups
        // encoded (columns in parallel) as pages come in, the file assembled.
        g.bench_function("pages_to_parquet_pipelined", |b| {
            b.iter(|| {
                let arrays = record_arrays(&bodies);
                let (_, files) = jdop::export::pages_to_parquet(
                    &arrays,
                    dir.path(),
                    &ParquetOptions::default(),
                    &Default::default(),
                    PAGE_SIZE as u32,
                )
                .unwrap();
                black_box(files.len());
            })
        });
        g.bench_function("pages_to_parquet", |b| {
            b.iter(|| {
                let arrays = record_arrays(&bodies);
                let conv = Converter::new(&infer(&arrays));
                let batches = convert(&conv, &arrays);
                black_box(write_parquet(dir.path(), &conv, &batches));
            })
        });
        g.finish();
    }
}

criterion_group!(benches, stages);
criterion_main!(benches);
