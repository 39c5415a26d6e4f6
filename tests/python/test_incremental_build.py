"""A new landing batch on a built lakehouse: bronze appends exactly the new good rows, quarantine
the new bad ones, silver appends the new transaction ids (a re-delivered id keeps its first
delivery), and the customer snapshot records history (SCD2)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from privacy_lakehouse.generate import append_batch

from .conftest import clone_demo
from .dbt_helpers import run_dbt

BRONZE = {
    "customers": "raw_core_banking__customers",
    "accounts": "raw_core_banking__accounts",
    "transactions": "raw_cards__transactions",
    "consent_events": "raw_consent__events",
    "support_cases": "raw_support__cases",
}


@pytest.fixture(scope="module")
def grown(demo, tmp_path_factory):
    copy = clone_demo(demo, tmp_path_factory.mktemp("incremental") / "privacy_lakehouse")
    run_dbt(copy.root, "build")  # views now point at the copy's lake
    before = {t.name: copy.count(t) for t in copy.tables()}
    versions = {t.name: DeltaTable(str(t)).version() for t in copy.tables("bronze")}
    summary = append_batch(copy.landing, 3, transactions=600)
    run_dbt(copy.root, "build")
    return copy, summary, before, versions


def batch_files(summary, batch: int) -> list[dict]:
    return [f for f in summary["files"] if f["batch"] == batch]


def test_bronze_appends_exactly_the_new_good_rows(grown):
    copy, summary, before, versions = grown
    new_files = batch_files(summary, 3)
    assert {f["source"] for f in new_files} == set(BRONZE)
    for source, table in BRONZE.items():
        expected = sum(f["bronze_rows"] for f in new_files if f["source"] == source)
        after = copy.count(copy.lake / "bronze" / table)
        assert after - before[table] == expected, table
        assert DeltaTable(str(copy.lake / "bronze" / table)).version() == versions[table] + 1


def test_quarantine_takes_the_new_bad_rows(grown):
    copy, summary, before, _ = grown
    expected = sum(f["quarantined_rows"] for f in batch_files(summary, 3))
    after = copy.count(copy.lake / "bronze" / "raw_quarantine__records")
    assert after - before["raw_quarantine__records"] == expected > 0


def test_silver_transactions_grow_without_duplicates(grown):
    copy, *_ = grown
    con = copy.duckdb()
    silver = copy.lake / "silver" / "stg_cards__transactions"
    bronze = copy.lake / "bronze" / "raw_cards__transactions"
    rows, distinct = con.execute(
        f"select count(*), count(distinct transaction_id) from delta_scan('{silver}')"
    ).fetchone()
    assert rows == distinct
    assert (
        distinct
        == con.execute(
            f"select count(distinct transaction_id) from delta_scan('{bronze}')"
        ).fetchone()[0]
    )
    # appended, not rebuilt: the incremental model's table kept its history
    assert DeltaTable(str(silver)).version() >= 1


def test_snapshot_records_customer_history(grown):
    copy, *_ = grown
    con = copy.warehouse()
    try:
        closed, subjects_with_history = con.execute(
            "select count(*) filter (where dbt_valid_to is not null), "
            "count(distinct subject_token) filter (where dbt_valid_to is not null) "
            "from snapshots.snap_customers"
        ).fetchone()
        current = con.execute(
            "select count(*) from snapshots.snap_customers where dbt_valid_to is null"
        ).fetchone()[0]
        customers = con.execute(
            "select count(*) from silver.stg_core_banking__customers"
        ).fetchone()
    finally:
        con.close()
    assert closed > 0 and subjects_with_history == closed
    assert current == customers[0]


def test_incremental_run_is_cheaper_than_it_looks(grown):
    """The second build after the batch writes nothing new to bronze (idempotent)."""
    copy, *_ = grown
    counts = {t.name: copy.count(t) for t in copy.tables("bronze")}
    run_dbt(copy.root, "build", "--select", "tag:bronze")
    assert {t.name: copy.count(t) for t in copy.tables("bronze")} == counts


def test_paths_are_the_copy(grown):
    copy, *_ = grown
    con = copy.warehouse()
    try:
        sql = con.execute(
            "select sql from duckdb_views() where view_name = 'raw_cards__transactions'"
        ).fetchone()[0]
    finally:
        con.close()
    assert str(Path(copy.lake)) in sql


def test_incremental_bronze_skips_landing_files_it_already_holds(grown):
    """Ingested, unchanged landing files are skipped by name, unopened. A re-delivery is told by
    a changed (size, modification time), not by time order: the file rewritten with 7 more rows
    and an older modification time than its ingest (before the ingestion ledger, skipped) is
    read again, exactly its new rows are appended, and the build after that reads it no more."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    copy, *_ = grown
    ingested = sorted((copy.landing / "cards" / "transactions").glob("*.parquet"))[0]
    table = copy.lake / "bronze" / "raw_cards__transactions"
    before = copy.count(table)
    run_dbt(copy.root, "build", "--select", "raw_cards__transactions")
    assert copy.count(table) == before
    compiled = next((copy.root / "target" / "compiled").rglob("raw_cards__transactions.sql"))
    assert f"source_file not in ('{ingested.name}'" in compiled.read_text()

    con = copy.duckdb()
    try:
        held = con.execute(
            f"select count(*) from delta_scan('{table}') where source_file = ?", [ingested.name]
        ).fetchone()[0]
    finally:
        con.close()
    stat = ingested.stat()
    rows = pq.read_table(ingested)
    changed = rows.slice(0, 7)
    changed = changed.set_column(
        changed.schema.get_field_index("transaction_id"),
        "transaction_id",
        pc.binary_join_element_wise(changed["transaction_id"], "-redelivered", ""),
    )
    pq.write_table(pa.concat_tables([rows, changed]), ingested)
    older = stat.st_mtime_ns - 86_400 * 10**9
    os.utime(ingested, ns=(older, older))
    run_dbt(copy.root, "build", "--select", "raw_cards__transactions")
    assert copy.count(table) == before + 7
    ledger = DeltaTable(str(copy.lake / "control" / "ingestion_ledger")).to_pyarrow_table()
    entries = [
        e
        for e in ledger.to_pylist()
        if (e["table_name"], e["source_file"]) == ("bronze/raw_cards__transactions", ingested.name)
    ]
    latest = max(entries, key=lambda e: e["recorded_at"])
    assert latest["file_size"] == ingested.stat().st_size and latest["rows"] == held + 7
    assert latest["file_modified_at"].timestamp() == older // 10**9
    version = DeltaTable(str(table)).version()
    run_dbt(copy.root, "build", "--select", "raw_cards__transactions")
    assert copy.count(table) == before + 7 and DeltaTable(str(table)).version() == version
    assert f"source_file not in ('{ingested.name}'" in compiled.read_text()


def test_a_later_redelivery_of_a_transaction_keeps_its_first_delivery(grown):
    """A source re-sends transactions already built (another file, so new ingest keys, and a
    changed amount): bronze appends them, silver keeps the first delivery of each id, as one
    full build over the same landing keeps it, and holds each id once."""
    import pyarrow.parquet as pq

    copy, *_ = grown
    silver = copy.lake / "silver" / "stg_cards__transactions"
    con = copy.duckdb()
    query = (
        f"select transaction_id, amount, ingested_at from delta_scan('{silver}') "
        "where transaction_id in (select unnest(?)) order by transaction_id"
    )
    first_file = sorted((copy.landing / "cards" / "transactions").glob("*.parquet"))[0]
    delivered = pq.read_table(first_file)
    built = {
        row[0] for row in con.execute(query, [delivered["transaction_id"].to_pylist()]).fetchall()
    }
    ids = sorted(built)[:5]
    first_of_each = [delivered["transaction_id"].to_pylist().index(i) for i in ids]
    resent = delivered.take(first_of_each)
    before = con.execute(query, [ids]).fetchall()
    assert len(before) == 5
    assert all(amount != 999.99 for _, amount, _ in before)
    resent = resent.set_column(
        resent.schema.get_field_index("amount"), "amount", pa.array(["999.99"] * 5, pa.string())
    )
    bronze = copy.lake / "bronze" / "raw_cards__transactions"
    deliveries = (
        f"select count(*) from delta_scan('{bronze}') where transaction_id in (select unnest(?))"
    )
    delivered_before = con.execute(deliveries, [ids]).fetchone()[0]
    pq.write_table(resent, first_file.with_name("zz_resent_" + first_file.name))

    run_dbt(copy.root, "build", "--select", "raw_cards__transactions stg_cards__transactions")

    # bronze keeps every delivery; silver the first of each id
    assert con.execute(deliveries, [ids]).fetchone()[0] == delivered_before + 5
    assert con.execute(query, [ids]).fetchall() == before
    ids_in_bronze = con.execute(
        f"select count(distinct transaction_id) from delta_scan('{bronze}')"
    ).fetchone()[0]
    assert copy.count(silver) == ids_in_bronze

    # One build from scratch over the same landing ingests every file at once, so both
    # deliveries share an ingestion time: the earlier file wins the tie, as it did above.
    scratch = copy.root.parent / "from_scratch"
    shutil.copytree(copy.root, scratch, ignore=shutil.ignore_patterns("lake", "target", "logs"))
    run_dbt(scratch, "run", "--select", "+stg_cards__transactions")
    scratch_silver = scratch / "lake" / "silver" / "stg_cards__transactions"
    rebuilt = con.execute(query.replace(str(silver), str(scratch_silver)), [ids]).fetchall()
    assert [(i, amount) for i, amount, _ in rebuilt] == [(i, amount) for i, amount, _ in before]


def test_a_full_refresh_leaves_bronze_as_it_is(grown, tmp_path):
    """Landing files may be purged once ingested: a --full-refresh that rebuilt bronze from what
    landing still holds would drop their rows."""
    copy, *_ = grown
    folder = copy.landing / "cards" / "transactions"
    purged = sorted(folder.glob("*.parquet"))[:-1]
    counts = {t.name: copy.count(t) for t in copy.tables("bronze")}
    for path in purged:
        shutil.move(path, tmp_path / path.name)
    try:
        run_dbt(copy.root, "run", "--full-refresh", "--select", "tag:bronze")
    finally:
        for path in purged:
            shutil.move(tmp_path / path.name, path)
    assert {t.name: copy.count(t) for t in copy.tables("bronze")} == counts


def test_a_json_lines_file_with_windows_line_ends_and_a_blank_line_loses_nothing(grown):
    """A CRLF file beside LF ones is read by its own layout, and a blank line is a landing row
    like any other: quarantined with a key, so later deliveries of the file still compare."""
    copy, *_ = grown
    folder = copy.landing / "consent" / "events"
    template = json.loads(sorted(folder.glob("*.jsonl"))[0].read_text().splitlines()[0])
    lines = [json.dumps({**template, "event_id": f"E99000000{n}"}) for n in (1, 2)]
    landed = folder / "consent_events_b990.jsonl"
    landed.write_bytes(f"{lines[0]}\r\n\r\n{lines[1]}\r\n".encode())
    bronze = copy.lake / "bronze" / "raw_consent__events"
    quarantine = copy.lake / "bronze" / "raw_quarantine__records"
    before = copy.count(bronze), copy.count(quarantine)
    run_dbt(copy.root, "build", "--select", "raw_consent__events raw_quarantine__records")
    assert (copy.count(bronze), copy.count(quarantine)) == (before[0] + 2, before[1] + 1)
    con = copy.duckdb()
    try:
        keys = con.execute(
            f"select ingest_key from delta_scan('{quarantine}') where source_file = ?",
            [landed.name],
        ).fetchall()
    finally:
        con.close()
    assert len(keys) == 1 and keys[0][0] is not None
