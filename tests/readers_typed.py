"""Reads typed and Hive-partitioned jdop snapshots with DuckDB (through the snapshot's
query.sql), pyarrow, pandas and polars, and checks types, row counts and values,
Chinese column names included. Driven by tests/it/readers.rs, which writes the
expectations file (argv[1]). Exit 0 only if every reader agrees."""
import datetime as dt
import decimal
import glob
import json
import sys

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

exp = json.load(open(sys.argv[1], encoding="utf-8"))


def view(d):
    """Runs the snapshot's query.sql in a fresh DuckDB and returns the connection."""
    con = duckdb.connect()
    con.execute(open(f"{d}/query.sql", encoding="utf-8").read())
    return con


def ms(t):
    return t.isoformat(sep=" ", timespec="milliseconds")


# 1. Typed columns, single and rolled files: same types in every reader.
for d in exp["typed_dirs"]:
    files = sorted(glob.glob(f"{d}/*.parquet"))
    con = view(d)
    types = {r[0]: r[1] for r in con.execute('DESCRIBE "cata_1"').fetchall()}
    want = {"金额": "DECIMAL(18,2)", "code": "VARCHAR", "uscc": "VARCHAR", "day": "DATE",
            "cn": "DATE", "at": "TIMESTAMP", "ok": "BOOLEAN", "empty": "BIGINT", "n": "BIGINT"}
    for k, v in want.items():
        assert types[k] == v, ("duckdb type", d, k, types[k], v)
    n = con.execute('SELECT count(*) FROM "cata_1"').fetchone()[0]
    assert n == exp["rows"], (n, exp["rows"])
    row = con.execute('SELECT "金额", "code", "uscc", "day", "cn", "at", "ok", "empty" FROM "cata_1" LIMIT 2').fetchall()
    assert row[0][0] == decimal.Decimal("5000.00") and row[1][0] == decimal.Decimal("12.10"), row
    assert row[0][1] == "01420", row
    assert row[0][2] == "913301000000000000", row
    assert row[0][3] == dt.date(2019, 1, 1) and row[0][4] == dt.date(2023, 1, 1), row
    assert ms(row[1][5]) == "2022-08-29 15:44:02.007", row
    assert row[0][6] is True and row[1][6] is False, row
    assert row[0][7] is None and row[1][7] == 100, row
    total = con.execute('SELECT sum("金额") FROM "cata_1"').fetchone()[0]
    assert total == decimal.Decimal(exp["amount_sum"]), (total, exp["amount_sum"])

    # pyarrow: identical schema across part files, exact types.
    schemas = [pq.read_schema(f) for f in files]
    assert all(s.equals(schemas[0]) for s in schemas), "part files differ in schema"
    t = pq.read_table(files)
    assert t.num_rows == exp["rows"]
    assert t.schema.field("金额").type == pa.decimal128(18, 2)
    assert t.schema.field("day").type == pa.date32()
    assert t.schema.field("at").type == pa.timestamp("ms")
    assert t.schema.field("code").type == pa.string()

    # pandas keeps the code as text and the amount exact.
    df = pd.read_parquet(files)
    assert df["code"].iloc[0] == "01420"
    assert df["金额"].iloc[1] == decimal.Decimal("12.10")
    assert len(df) == exp["rows"]

    # polars over the glob.
    p = pl.read_parquet(f"{d}/*.parquet")
    assert p.schema["金额"] == pl.Decimal(18, 2), p.schema["金额"]
    assert p.schema["day"] == pl.Date and p.schema["at"] == pl.Datetime("ms")
    assert p["code"][0] == "01420" and p.height == exp["rows"]

# 2. CSV with its query.sql: DuckDB gets the types from the view, codes stay text.
con = view(exp["csv_dir"])
row = con.execute('SELECT "金额", "code", "day", "at" FROM "cata_1" LIMIT 2').fetchall()
assert row[1][0] == decimal.Decimal("12.10") and row[0][1] == "01420", row
assert row[0][2] == dt.date(2019, 1, 1) and ms(row[1][3]) == "2022-08-29 15:44:02.007", row

# 3. Hive partitions with awkward values.
d = exp["hive_dir"]
values = exp["hive_values"]  # lossless values (null as None)
con = view(d)
got = [g[0] for g in con.execute('SELECT DISTINCT "地市" FROM "cata_1"').fetchall()]
for v in values:
    assert v in got, ("duckdb lost", v, got)
n = con.execute('SELECT count(*) FROM "cata_1"').fetchone()[0]
assert n == exp["hive_rows"], n
# Every row's partition value matches its id (the rows were written with both).
pairs = dict(con.execute('SELECT "id", "地市" FROM "cata_1"').fetchall())
for i, v in enumerate(exp["hive_by_id"]):
    if v is not None and v.startswith("<shortened"):
        continue
    assert pairs[i] == v, ("duckdb", i, pairs[i], v)

part = ds.partitioning(pa.schema([("地市", pa.string())]), flavor="hive")
t = ds.dataset(d, format="parquet", partitioning=part, exclude_invalid_files=True).to_table()
assert t.num_rows == exp["hive_rows"]
rows = dict(zip(t.column("id").to_pylist(), t.column("地市").to_pylist()))
for i, v in enumerate(exp["hive_by_id"]):
    if v is not None and v.startswith("<shortened"):
        continue
    if v == "__HIVE_DEFAULT_PARTITION__":
        continue  # pyarrow decodes before comparing: it reads this one text as null
    assert rows[i] == v, ("pyarrow", i, rows[i], v)

p = pl.scan_parquet(f"{d}/**/*.parquet", hive_partitioning=True,
                    hive_schema={"地市": pl.String}).collect()
assert p.height == exp["hive_rows"]
rows = dict(zip(p["id"].to_list(), p["地市"].to_list()))
for i, v in enumerate(exp["hive_by_id"]):
    if v is not None and v.startswith("<shortened"):
        continue
    if v == "__HIVE_DEFAULT_PARTITION__":
        continue  # polars, like pyarrow, reads this one text as null
    assert rows[i] == v, ("polars", i, rows[i], v)

print("typed readers ok")
