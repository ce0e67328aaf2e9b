"""Reads a jdop snapshot with DuckDB, pyarrow (pandas) and polars, as users do,
and checks row counts, column names, types and values against expectations
written by the Rust test (tests/it/readers.rs). Exit 0 only if every reader agrees."""
import glob
import json
import sys

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq

exp = json.load(open(sys.argv[1], encoding="utf-8"))
d = exp["dir"]
files = sorted(glob.glob(f"{d}/*.parquet"))
assert len(files) == exp["files"], (files, exp["files"])
names = [c[0] for c in exp["columns"]]

ARROW = {"Utf8": "string", "Int64": "int64", "Float64": "double", "Boolean": "bool"}
DUCK = {"Utf8": "VARCHAR", "Int64": "BIGINT", "Float64": "DOUBLE", "Boolean": "BOOLEAN"}

# DuckDB over the glob, no options.
rel = duckdb.sql(f"SELECT * FROM read_parquet('{d}/*.parquet')")
assert rel.columns == names, (rel.columns, names)
n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{d}/*.parquet')").fetchall()[0][0]
assert n == exp["rows"], (n, exp["rows"])
for (name, ty), dty in zip(exp["columns"], rel.types):
    if ty in DUCK:
        assert str(dty) == DUCK[ty], (name, str(dty), ty)
    elif ty.startswith("Struct("):
        assert str(dty).startswith("STRUCT("), (name, str(dty))
    elif ty.startswith("List("):
        assert str(dty).endswith("[]"), (name, str(dty))
first = duckdb.sql(f"SELECT * FROM read_parquet('{d}/*.parquet') LIMIT 1").fetchall()[0]
for col, val in exp["first"].items():
    got = first[names.index(col)]
    assert got == val, ("duckdb", col, got, val)

# pyarrow, every file; identical schema across files.
schemas = [pq.read_schema(f) for f in files]
assert all(s.equals(schemas[0]) for s in schemas), "part files differ in schema"
t = pq.read_table(files)
assert t.num_rows == exp["rows"]
assert t.column_names == names
for (name, ty), field in zip(exp["columns"], t.schema):
    if ty in ARROW:
        assert str(field.type) == ARROW[ty], (name, str(field.type), ty)

# pandas
df = pd.read_parquet(files)
assert len(df) == exp["rows"] and list(df.columns) == names
for col, val in exp["first"].items():
    got = df[col].iloc[0]
    assert got == val or (pd.isna(got) and val is None), ("pandas", col, got, val)

# polars over the glob
p = pl.read_parquet(f"{d}/*.parquet")
assert p.shape == (exp["rows"], len(names)), p.shape
assert p.columns == names
for col, val in exp["first"].items():
    assert p[col][0] == val, ("polars", col, p[col][0], val)

print(f"readers ok: {exp['rows']} rows, {len(names)} columns, {len(files)} files")
