"""DuckDB's side of `examples/duckdb_compare.rs` (embedded there with include_str!).

Usage:
  python3 benches/duckdb_compare.py copy NDJSON OUT.parquet THREADS [LEVEL|-] [SAMPLE]
      Times `COPY (FROM read_json(NDJSON)) TO OUT (FORMAT parquet, COMPRESSION zstd)`
      in a fresh connection with `SET threads=THREADS` (connection setup and loading
      the json extension are not timed; reading the NDJSON file is). LEVEL, when
      given (not `-`), adds `COMPRESSION_LEVEL LEVEL`; SAMPLE adds
      `sample_size=SAMPLE` to read_json (-1: detect the schema over every record). Prints {"seconds", "cpu", "bytes", "version"}
      (cpu: user + system seconds of the process during the COPY).
  python3 benches/duckdb_compare.py check NDJSON PARQUET_GLOB...
      Prints {"json_types": [[name, type]...], "parquet": [{"glob", "rows",
      "types"}...]}: DuckDB's inferred types of the NDJSON and, per Parquet glob,
      its row count and column types as DuckDB reads them.
  python3 benches/duckdb_compare.py compare PARQUET_GLOB_A PARQUET_GLOB_B
      Prints {"rows", "equal": [[column, rows with the same text, rows with the
      same value, rows null in A and "" in B]...]}, rows matched by their number in
      the file (one file per side); same value: same text, or equal as DOUBLE, or
      equal as TIMESTAMP.
DuckDB from PyPI: `pip install duckdb`.
"""

import json
import os
import resource
import sys
import time

import duckdb


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def copy(ndjson, out, threads, level=None, sample_size=None):
    con = duckdb.connect()
    con.execute("SET enable_progress_bar=false")
    con.execute(f"SET threads={int(threads)}")
    con.execute("LOAD json")
    con.execute("LOAD parquet")
    if os.path.exists(out):
        os.remove(out)
    opts = "FORMAT parquet, COMPRESSION zstd"
    if level is not None:
        opts += f", COMPRESSION_LEVEL {int(level)}"
    src = lit(ndjson)
    if sample_size is not None:
        src += f", sample_size={int(sample_size)}"
    sql = f"COPY (FROM read_json({src})) TO {lit(out)} ({opts})"
    t0 = time.perf_counter()
    c0 = cpu()
    con.execute(sql)
    secs = time.perf_counter() - t0
    cpu_secs = cpu() - c0
    con.close()
    print(
        json.dumps(
            {
                "seconds": secs,
                "cpu": cpu_secs,
                "bytes": os.path.getsize(out),
                "version": duckdb.__version__,
            }
        )
    )


def check(ndjson, globs):
    con = duckdb.connect()
    con.execute("SET enable_progress_bar=false")
    json_types = [
        [r[0], r[1]]
        for r in con.execute(f"DESCRIBE SELECT * FROM read_json({lit(ndjson)})").fetchall()
    ]
    parquet = []
    for g in globs:
        rows = con.execute(f"SELECT count(*) FROM read_parquet({lit(g)})").fetchone()[0]
        types = [
            [r[0], r[1]]
            for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({lit(g)})").fetchall()
        ]
        parquet.append({"glob": g, "rows": rows, "types": types})
    print(json.dumps({"json_types": json_types, "parquet": parquet}, ensure_ascii=False))


def ident(name):
    return '"' + name.replace('"', '""') + '"'


def compare(a_glob, b_glob):
    """Per column of both files, the rows (matched by row number) whose values have
    the same text (a value of DuckDB's JSON type is read by `->>'$'`, so `"12"` and
    `12` both read `12`; any other type is cast to VARCHAR), and those whose values
    are the same (same text, or equal as DOUBLE, or equal as TIMESTAMP), and those
    null in A and an empty string in B."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar=false")
    src = {
        "a": f"read_parquet({lit(a_glob)}, file_row_number=true)",
        "b": f"read_parquet({lit(b_glob)}, file_row_number=true)",
    }
    types = {
        k: {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {v}").fetchall()}
        for k, v in src.items()
    }

    def text(side, name):
        col = f"{side}.{ident(name)}"
        return f"({col}->>'$')" if types[side][name] == "JSON" else f"{col}::VARCHAR"

    def same_value(n):
        a, b = text("a", n), text("b", n)
        return (
            f"{a} IS NOT DISTINCT FROM {b}"
            f" OR TRY_CAST({a} AS DOUBLE) = TRY_CAST({b} AS DOUBLE)"
            f" OR TRY_CAST({a} AS TIMESTAMP) = TRY_CAST({b} AS TIMESTAMP)"
        )

    names = [n for n in types["a"] if n in types["b"] and n != "file_row_number"]
    exprs = []
    for n in names:
        exprs.append(f"count(*) FILTER (WHERE {text('a', n)} IS NOT DISTINCT FROM {text('b', n)})")
        exprs.append(f"count(*) FILTER (WHERE {same_value(n)})")
        exprs.append(f"count(*) FILTER (WHERE a.{ident(n)} IS NULL AND {text('b', n)} = '')")
    row = con.execute(
        f"SELECT count(*), {', '.join(exprs)} FROM {src['a']} a "
        f"JOIN {src['b']} b USING (file_row_number)"
    ).fetchone()
    counts = row[1:]
    print(
        json.dumps(
            {
                "rows": row[0],
                "equal": [[n, *counts[3 * i : 3 * i + 3]] for i, n in enumerate(names)],
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "copy":
        opt = [None if a == "-" else a for a in sys.argv[5:7]] + [None, None]
        copy(sys.argv[2], sys.argv[3], sys.argv[4], opt[0], opt[1])
    elif cmd == "compare":
        compare(sys.argv[2], sys.argv[3])
    elif cmd == "check":
        check(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(f"unknown command {cmd!r} (copy, check, compare)")
