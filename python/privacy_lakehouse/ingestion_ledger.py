"""The ingestion ledger: what each bronze table took from each landing file, and what retention
later deleted of it.

`<lake>/control/ingestion_ledger` is an append-only Delta table of events, one row per bronze
table (the source's bronze model, or the quarantine), landing source, landing file and event:

- `ingested`, written at the end of a build (the `ingestion_ledger` after-build hook, before
  retention deletes anything) for every landing file whose (size, modification time) the table's
  latest entry does not already hold, for each bronze model that succeeded in the build: the
  size and modification time as DuckDB's read_blob lists them (to the second), and the rows of
  the file the table holds. A bronze model skips, unopened, every file whose latest entry has
  the size and modification time the file has now (macros/ingest/not_yet_ingested.sql); any
  other pair, older or newer, is a re-delivery, read again for the rows whose ingest key the
  table lacks. So a file whose rows retention deleted is never ingested again.
- `expired`, written by retention for the rows of each file it deleted from a bronze table or
  (per source) from the quarantine. The landing purge counts them as accounted for.

A file modified after the build started is not recorded: the build may have read it before
the change, and the next build reads it again. An `--empty` build records nothing. The ledger
holds table, source and file names, sizes, times and counts, never row values. A lake built
before the ledger existed gets an empty one; a file without an entry falls back to the earlier
rule (skipped when the table holds rows of it that were ingested after its modification time)
and is recorded at the end of that build. Retention deletions made before the ledger existed
were not counted, so a landing file that lost rows to them stays a purge mismatch.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from privacy_lakehouse.hooks import BuildContext, after_build
from privacy_lakehouse.sql_quote import sql_string

log = logging.getLogger(__name__)

LEDGER_TABLE = "control/ingestion_ledger"
QUARANTINE_TABLE = "bronze/raw_quarantine__records"
INGESTED = "ingested"
EXPIRED = "expired"


@dataclass(frozen=True)
class Tracked:
    """A bronze table fed by a landing source, and how to find the source's rows in it."""

    table: str  # relative to the lake
    source: Any  # privacy_lakehouse.landing.LandingSource
    scoped: bool  # the quarantine holds several sources: rows of this one have its source_name


def tracked(table: str) -> list[Tracked]:
    """The landing sources a bronze table takes rows from (none for any other table)."""
    from privacy_lakehouse.landing import LANDING_SOURCES

    if table == QUARANTINE_TABLE:
        return [Tracked(table, source, True) for source in LANDING_SOURCES]
    return [Tracked(table, s, False) for s in LANDING_SOURCES if s.bronze_table == table]


def _schema() -> pa.Schema:
    from privacy_lakehouse.delta_writer import CONTROL_TABLES

    return CONTROL_TABLES[LEDGER_TABLE]


def entries(lake_dir: Path, event: str) -> list[dict[str, Any]]:
    """Every entry of one event kind ([] when the lake has no ledger yet)."""
    location = lake_dir / LEDGER_TABLE
    if not DeltaTable.is_deltatable(str(location)):
        return []
    rows = DeltaTable(str(location)).to_pyarrow_table()
    return [row for row in rows.to_pylist() if row["event"] == event]


def _append(lake_dir: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:  # no empty commits
        return
    from privacy_lakehouse.delta_writer import ensure_control_tables

    ensure_control_tables(lake_dir)
    write_deltalake(
        str(lake_dir / LEDGER_TABLE), pa.Table.from_pylist(rows, _schema()), mode="append"
    )


def latest_ingested(lake_dir: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The latest `ingested` entry per (table, source, file)."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in entries(lake_dir, INGESTED):
        key = (row["table_name"], row["source_name"], row["source_file"])
        if key not in latest or row["recorded_at"] >= latest[key]["recorded_at"]:
            latest[key] = row
    return latest


def expired_rows(lake_dir: Path) -> dict[tuple[str, str, str], int]:
    """Rows retention deleted, per (table, source, file)."""
    totals: dict[tuple[str, str, str], int] = {}
    for row in entries(lake_dir, EXPIRED):
        key = (row["table_name"], row["source_name"], row["source_file"])
        totals[key] = totals.get(key, 0) + int(row["rows"] or 0)
    return totals


def _landed(conn, landing_dir: Path, source) -> list[tuple[str, int, datetime]]:
    """(file name, size, modification time) of the source's landing files, as the bronze models
    list them (read_blob without its content column opens no file)."""
    if not any(p.is_file() for p in (landing_dir / source.folder).glob(source.pattern)):
        return []
    glob = sql_string(f"{landing_dir}/{source.folder}/{source.pattern}")
    return conn.execute(
        f"select regexp_extract(filename, '[^/]+$'), size, last_modified from read_blob({glob})"
    ).fetchall()


def _rows_by_file(conn, location: Path, item: Tracked, files: Iterable[str]) -> dict[str, int]:
    names = ", ".join(sql_string(f) for f in files)
    scope = f" and source_name = {sql_string(item.source.name)}" if item.scoped else ""
    return dict(
        conn.execute(
            f"select source_file, count(*) from delta_scan({sql_string(str(location))}) "
            f"where source_file in ({names}){scope} group by source_file"
        ).fetchall()
    )


def record_ingestion(
    lake_dir: Path,
    landing_dir: Path,
    tables: Iterable[str],
    *,
    run_id: str,
    started_at: datetime | None = None,
) -> int:
    """Record the landing files the bronze `tables` hold whose (size, modification time) the
    ledger lacks; returns the number of entries written."""
    from privacy_lakehouse.duckdb_setup import connect

    items = [item for table in sorted(set(tables)) for item in tracked(table)]
    items = [i for i in items if DeltaTable.is_deltatable(str(lake_dir / i.table))]
    if not items:
        return 0
    # read_blob lists whole seconds: a file changed in the second the build started may have
    # been read before the change.
    settled_before = (started_at or datetime.now(timezone.utc)).replace(microsecond=0)
    latest = latest_ingested(lake_dir)
    now = datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    conn = connect(extension_dir=lake_dir / "_duckdb_extensions")
    try:
        for item in items:
            try:
                landed = _landed(conn, landing_dir, item.source)
            except duckdb.Error:  # the files went between the glob and the listing
                continue
            new = {}
            for name, size, modified_at in landed:
                seen = latest.get((item.table, item.source.name, name))
                if seen and (seen["file_size"], seen["file_modified_at"]) == (size, modified_at):
                    continue
                if modified_at >= settled_before:
                    continue
                new[name] = (size, modified_at)
            if not new:
                continue
            held = _rows_by_file(conn, lake_dir / item.table, item, new)
            for name, (size, modified_at) in sorted(new.items()):
                rows.append(
                    {
                        "table_name": item.table,
                        "source_name": item.source.name,
                        "source_file": name,
                        "event": INGESTED,
                        "file_size": size,
                        "file_modified_at": modified_at,
                        "rows": held.get(name, 0),
                        "recorded_at": now,
                        "run_id": run_id,
                    }
                )
    finally:
        conn.close()
    _append(lake_dir, rows)
    return len(rows)


def record_expired(
    lake_dir: Path, table: str, counts: Mapping[tuple[str, str], int], *, run_id: str
) -> None:
    """Rows retention deleted from a bronze table, per (source name, file name)."""
    now = datetime.now(timezone.utc)
    _append(
        lake_dir,
        [
            {
                "table_name": table,
                "source_name": source_name,
                "source_file": source_file,
                "event": EXPIRED,
                "file_size": None,
                "file_modified_at": None,
                "rows": int(rows),
                "recorded_at": now,
                "run_id": run_id,
            }
            for (source_name, source_file), rows in sorted(counts.items())
            if rows
        ],
    )


@after_build("ingestion_ledger", first=True)
def ledger_after_build(context: BuildContext) -> dict[str, Any]:
    """Record what this build's bronze models ingested, before retention deletes anything."""
    from privacy_lakehouse.settings import load_settings

    if context.empty:
        return {"entries": 0, "skipped": "empty run"}
    succeeded = {r.get("unique_id") for r in context.results if r.get("status") == "success"}
    tables = [
        m["location"]
        for m in context.models
        if m.get("unique_id") in succeeded and tracked(m["location"])
    ]
    written = record_ingestion(
        context.lake_dir,
        load_settings().landing_dir,
        tables,
        run_id=context.invocation_id or str(uuid.uuid4()),
        started_at=context.run_started_at,
    )
    return {"entries": written}
