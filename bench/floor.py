"""The floor: the same landing files moved to Delta with no dbt and no privacy treatment.

DuckDB reads each source as the landing models do (CSV as text, Parquet with union_by_name,
JSON lines as text lines, since some lines do not parse), and delta-rs writes one Delta table
per source from streamed record batches, as the project's writer does. What the full build
costs beyond this is the price of dbt, parsing, contracts, privacy and the silver/gold models.

    python bench/floor.py --landing DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import duckdb
from deltalake import DeltaTable, write_deltalake

BATCH_ROWS = 16_384  # as the project writer streams (privacy_lakehouse.delta_layout)

# source name -> (glob under the landing folder, DuckDB table function over the files)
SOURCES = {
    "customers": ("core_banking/customers/*.csv", "csv"),
    "accounts": ("core_banking/accounts/*.csv", "csv"),
    "transactions": ("cards/transactions/*.parquet", "parquet"),
    "consent_events": ("consent/events/*.jsonl", "lines"),
    "support_cases": ("support/cases/*.jsonl", "lines"),
}


def scan(landing: Path, pattern: str, kind: str) -> str:
    files = str(landing / pattern).replace("'", "''")
    if kind == "csv":
        return (
            f"read_csv('{files}', header=true, all_varchar=true, union_by_name=true, filename=true)"
        )
    if kind == "parquet":
        return f"read_parquet('{files}', union_by_name=true, filename=true)"
    # One text column per line: JSON lines with truncated records would stop read_json.
    return (
        f"read_csv('{files}', columns={{'line': 'VARCHAR'}}, header=false, delim=e'\\x01', "
        "quote='', escape='', filename=true)"
    )


def move(landing: Path, out: Path) -> dict[str, int]:
    conn = duckdb.connect()
    rows: dict[str, int] = {}
    try:
        for name, (pattern, kind) in SOURCES.items():
            sql = f"select * from {scan(landing, pattern, kind)}"
            # DuckDB's reader straight into delta-rs, as the models write (delta_writer).
            reader = conn.execute(sql).fetch_record_batch(BATCH_ROWS)
            write_deltalake(str(out / name), reader, mode="overwrite")
            commit = DeltaTable(str(out / name)).history(1)[0]
            rows[name] = int(commit["operationMetrics"]["num_added_rows"])
    finally:
        conn.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    started = time.perf_counter()
    rows = move(args.landing, args.out)
    print(json.dumps({"seconds": round(time.perf_counter() - started, 3), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
