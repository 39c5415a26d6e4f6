"""Malformed landing files lose and misread no row: a ragged CSV row is quarantined as
ragged_row while the rest of its file flows on; a value in an undeclared column (a misspelled
header, a header-less file) is quarantined as undeclared_column; an unreadable Parquet file is
skipped with a warning and kept in landing. No value reaches dbt's output, logs or target/."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pytest
from deltalake import DeltaTable
from privacy_lakehouse import erasure, landing
from privacy_lakehouse.keyring import Keyring
from privacy_lakehouse.landing import KEPT_UNREADABLE, purge_landing
from privacy_lakehouse.settings import load_settings

from .conftest import Demo, clone_demo
from .dbt_helpers import dbt_subprocess

HEADER = "customer_id,first_name,last_name,email,birth_date,city,created_at,updated_at"
WHEN = "2024-03-01 10:00:00"
# Values written only into the malformed rows: none may appear in dbt's output or logs.
SHORT_MARK, LONG_MARK, EXTRA_MARK = "Qshortvalue", "Qlongvalue", "Qextrafield"
HEADERLESS_MARK, MISSPELLED_MARK = "Qfirstrowvalue", "Qmisspelledvalue"

RAGGED = "\n".join(
    [
        HEADER,
        f"R-9001,Ann,Good,ann@example.test,1980-01-02,Ragtown,{WHEN},{WHEN}",
        f'R-9002,Bob,Good,bob@example.test,1981-02-03,"Rag, upon Tyne",{WHEN},{WHEN}',
        f"R-9003,{SHORT_MARK}",
        f"R-9004,{LONG_MARK},Long,l@example.test,1982-03-04,Ragtown,{WHEN},{WHEN},{EXTRA_MARK}",
        f"R-9005,Cid,Good,cid@example.test,1983-04-05,Ragville,{WHEN},{WHEN}",
    ]
)
HEADERLESS = "\n".join(
    [
        f"H-9101,{HEADERLESS_MARK},Row,h1@example.test,1970-01-01,Nohead,{WHEN},{WHEN}",
        f"H-9102,Second,Row,h2@example.test,1971-01-01,Nohead,{WHEN},{WHEN}",
        f"H-9103,Third,Row,h3@example.test,1972-01-01,Nohead,{WHEN},{WHEN}",
    ]
)
MISSPELLED = "\n".join(
    [
        HEADER.replace("last_name", "last_nmae"),
        f"M-9201,Mia,{MISSPELLED_MARK},m1@example.test,1990-01-01,Typo,{WHEN},{WHEN}",
        f"M-9202,Max,{MISSPELLED_MARK},m2@example.test,1991-01-01,Typo,{WHEN},{WHEN}",
    ]
)
# Consent events whose fields hold a JSON boolean, array or object: none is a field's text.
TYPED_FILE = "consent_events_x001_typed.jsonl"
TYPED_MARK = "Qtypedvalue"
TYPED = "\n".join(
    [
        '{"event_id": "T-1", "customer_id": "C0000001", "purpose": "marketing", "action": "grant",'
        ' "event_ts": "2024-03-01 10:00:00", "channel": "app"}',
        '{"event_id": "T-2", "customer_id": true, "purpose": "marketing", "action": "grant",'
        ' "event_ts": "2024-03-01 10:00:00", "channel": "app"}',
        f'{{"event_id": "T-3", "customer_id": ["C0000001", "{TYPED_MARK}"], "purpose": "marketing",'
        ' "action": "grant", "event_ts": "2024-03-01 10:00:00", "channel": "app"}',
        '{"event_id": "T-4", "customer_id": "C0000001", "purpose": "marketing", "action": "grant",'
        f' "event_ts": "2024-03-01 10:00:00", "channel": {{"name": "{TYPED_MARK}"}}}}',
        # A number is a scalar: read as its text, as before.
        '{"event_id": 5, "customer_id": "C0000001", "purpose": "marketing", "action": "grant",'
        ' "event_ts": "2024-03-01 10:00:00", "channel": "app"}',
    ]
)
# A quote left open: DuckDB's reader cannot make out the file at all.
UNCLOSED_FILE, UNCLOSED_MARK = "customers_x004_unclosed.csv", "Qunclosedvalue"
UNCLOSED = "\n".join(
    [
        HEADER,
        f'U-9301,Una,"{UNCLOSED_MARK},u1@example.test,1990-01-01,Quote,{WHEN},{WHEN}',
        f"U-9302,Udo,Row,u2@example.test,1991-01-01,Quote,{WHEN},{WHEN}",
    ]
)
CUSTOMERS = "core_banking/customers"
RAGGED_FILE = "customers_x001_ragged.csv"
MARKS = (
    *(SHORT_MARK, LONG_MARK, EXTRA_MARK, HEADERLESS_MARK, MISSPELLED_MARK),
    *(TYPED_MARK, UNCLOSED_MARK),
)


@dataclass
class Malformed:
    lake: Demo
    output: str
    quarantine: list[dict]

    def rows(self, file_name: str) -> list[dict]:
        return [r for r in self.quarantine if r["source_file"] == file_name]


@pytest.fixture(scope="module")
def malformed(demo, tmp_path_factory) -> Malformed:
    lake = clone_demo(demo, tmp_path_factory.mktemp("malformed") / "privacy_lakehouse")
    folder = lake.landing / CUSTOMERS
    (folder / "customers_x001_ragged.csv").write_text(RAGGED + "\n")
    (folder / "customers_x002_headerless.csv").write_text(HEADERLESS + "\n")
    (folder / "customers_x003_misspelled.csv").write_text(MISSPELLED + "\n")
    (folder / UNCLOSED_FILE).write_text(UNCLOSED + "\n")
    (lake.landing / "consent/events" / TYPED_FILE).write_text(TYPED + "\n")
    good = sorted((lake.landing / "cards/transactions").glob("*.parquet"))[0]
    corrupt = lake.landing / "cards/transactions/transactions_x001_truncated.parquet"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    process = dbt_subprocess(lake.root, "build", "--select", "tag:bronze")
    output, _ = process.communicate()
    assert process.returncode == 0, output
    table = DeltaTable(str(lake.lake / "bronze" / "raw_quarantine__records")).to_pyarrow_table()
    return Malformed(lake=lake, output=output, quarantine=table.to_pylist())


def decrypted(lake: Demo, rows: list[dict]) -> list[str]:
    with lake.env(), Keyring.open(load_settings()) as ring:
        return ring.decrypt_many(
            [r["subject_token"] for r in rows],
            [r["record_enc"] for r in rows],
            "erasure_verification",
            "test",
        ).to_pylist()


def test_a_ragged_row_is_quarantined_and_the_rest_of_its_file_flows_on(malformed):
    con = malformed.lake.duckdb()
    bronze = malformed.lake.lake / "bronze" / "raw_core_banking__customers"
    rows = con.execute(
        "select first_name_enc is not null, birth_date, city, created_at"
        f" from delta_scan('{bronze}') where source_file = ? order by birth_date",
        [RAGGED_FILE],
    ).fetchall()
    assert rows == [
        (True, "1980-01-02", "Ragtown", WHEN),
        (True, "1981-02-03", "Rag, upon Tyne", WHEN),  # a quoted delimiter, read as one field
        (True, "1983-04-05", "Ragville", WHEN),
    ]
    ragged = malformed.rows("customers_x001_ragged.csv")
    assert sorted(r["reject_reason"] for r in ragged) == ["ragged_row", "ragged_row"]
    assert all(r["source_name"] == "core_banking.customers" for r in ragged)
    # Kept whole, not padded and not truncated: the long row keeps its extra field.
    texts = sorted(decrypted(malformed.lake, ragged))
    assert texts == sorted(RAGGED.split("\n")[3:5])


def test_a_headerless_file_loses_no_row(malformed):
    rows = malformed.rows("customers_x002_headerless.csv")
    # The first row became the header: the other two are quarantined, and keep it.
    assert [r["reject_reason"] for r in rows] == ["undeclared_column"] * 2
    texts = decrypted(malformed.lake, rows)
    assert all(HEADERLESS_MARK in text and "H-9101" in text for text in texts)
    assert sorted(t for text in texts for t in ("H-9102", "H-9103") if t in text) == [
        "H-9102",
        "H-9103",
    ]


def test_a_value_in_a_misspelled_column_is_quarantined(malformed):
    rows = malformed.rows("customers_x003_misspelled.csv")
    assert [r["reject_reason"] for r in rows] == ["undeclared_column"] * 2
    assert all(MISSPELLED_MARK in text for text in decrypted(malformed.lake, rows))
    con = malformed.lake.duckdb()
    bronze = malformed.lake.lake / "bronze" / "raw_core_banking__customers"
    assert (
        con.execute(
            f"select count(*) from delta_scan('{bronze}') where source_file like 'customers_x003%'"
        ).fetchone()[0]
        == 0
    )


def test_a_json_boolean_array_or_object_in_a_field_is_quarantined_as_wrong_type(malformed):
    rows = malformed.rows(TYPED_FILE)
    assert [r["reject_reason"] for r in rows] == ["wrong_type"] * 3
    # The structured customer_id is no subject: the row is kept under the file's key, and an
    # erasure finds it by content.
    assert sorted(r["has_subject"] for r in rows) == [False, False, True]
    assert sorted(decrypted(malformed.lake, rows)) == sorted(TYPED.split("\n")[1:4])
    con = malformed.lake.duckdb()
    bronze = malformed.lake.lake / "bronze" / "raw_consent__events"
    assert con.execute(
        f"select event_id from delta_scan('{bronze}') where source_file = ? order by event_id",
        [TYPED_FILE],
    ).fetchall() == [("5",), ("T-1",)]


def test_the_build_warns_with_counts_and_file_names_never_values(malformed):
    output = malformed.output
    assert (
        "landing source core_banking.customers: 2 row(s) quarantined as ragged_row "
        "(files: customers_x001_ragged.csv)" in output
    )
    assert "4 row(s) quarantined as undeclared_column" in output
    assert (
        f"landing source consent.events: 3 row(s) quarantined as wrong_type (files: {TYPED_FILE})"
        in output
    )
    assert "transactions_x001_truncated.parquet cannot be read (not a readable Parquet" in output
    assert f"file {UNCLOSED_FILE} cannot be read (no CSV header and dialect" in output
    written = [output]
    for folder in ("logs", "target"):
        written += [
            p.read_text(errors="replace")
            for p in (malformed.lake.root / folder).rglob("*")
            if p.is_file()
        ]
    # The scan can fail: the values are in the landing files it reads.
    assert SHORT_MARK in (malformed.lake.landing / CUSTOMERS / RAGGED_FILE).read_text()
    for mark in MARKS:
        assert not any(mark in text for text in written), mark


def test_an_unreadable_parquet_or_csv_file_is_skipped_and_kept(malformed):
    transactions = [r for r in malformed.quarantine if r["source_name"] == "cards.transactions"]
    assert transactions and not any("_x001_" in r["source_file"] for r in transactions)
    assert not malformed.rows(UNCLOSED_FILE)
    bronze = malformed.lake.lake / "bronze" / "raw_core_banking__customers"
    con = malformed.lake.duckdb()
    assert con.execute(
        f"select count(*) from delta_scan('{bronze}') where source_file = ?", [UNCLOSED_FILE]
    ).fetchone() == (0,)
    with malformed.lake.env():
        summary = purge_landing(settings=load_settings(), dry_run=True, keep_days=0)
    by_path = {entry["path"]: entry for entry in summary["files"]}
    assert by_path["cards/transactions/transactions_x001_truncated.parquet"]["decision"] == (
        KEPT_UNREADABLE
    )
    # Every other file is accounted for as before, the malformed CSV files included.
    assert not summary["mismatches"]
    ragged = by_path[f"{CUSTOMERS}/customers_x001_ragged.csv"]
    assert (ragged["rows"], ragged["bronze_rows"], ragged["quarantine_rows"]) == (5, 3, 2)
    headerless = by_path[f"{CUSTOMERS}/customers_x002_headerless.csv"]
    assert (headerless["rows"], headerless["quarantine_rows"]) == (2, 2)
    assert by_path[f"{CUSTOMERS}/{UNCLOSED_FILE}"]["decision"] == KEPT_UNREADABLE
    readable = [p for p in by_path if p.startswith("cards/") and "_x001_" not in p]
    assert readable and all(by_path[p]["decision"] != KEPT_UNREADABLE for p in readable)


def test_the_purge_counts_the_rows_the_csv_reader_skips(tmp_path):
    """The purge's own reader of one file: the two ragged rows are rows of the file."""
    source = next(s for s in landing.LANDING_SOURCES if s.name == "core_banking.customers")
    file = tmp_path / "customers.csv"
    file.write_text(RAGGED + "\n")
    con = duckdb.connect()
    assert landing._rows_by_file(con, source.rows(tmp_path, file)) == {str(file): 3}
    assert sorted(landing._skipped_rows(con, source, file)) == sorted(RAGGED.split("\n")[3:5])


# Last in this module: it changes the shared lake.
def test_erasing_a_subject_of_a_headerless_file_takes_only_their_row(malformed):
    """The rows of a header-less file have no declared field: hashed over their declared
    fields only they all shared one record hash, and erasing one by its record took the
    others too (and its tombstone kept every later such row out)."""
    rows = malformed.rows("customers_x002_headerless.csv")
    assert len({r["record_hash"] for r in rows}) == 2
    with malformed.lake.env():
        settings = load_settings()
        evidence = erasure.erase_subjects([{"customer_id": "H-9102"}], settings=settings)
        assert evidence["requests"][0]["status"] == "erased"
        purge = purge_landing(settings=settings, dry_run=True, keep_days=0)
    quarantine = DeltaTable(str(malformed.lake.lake / "bronze" / "raw_quarantine__records"))
    left = [
        r
        for r in quarantine.to_pyarrow_table().to_pylist()
        if r["source_file"] == "customers_x002_headerless.csv"
    ]
    (kept,) = left
    (text,) = decrypted(malformed.lake, left)
    assert "H-9103" in text and "H-9102" not in text
    # The purge counts the erased row by its tombstone: the file is accounted for.
    by_path = {entry["path"]: entry for entry in purge["files"]}
    account = by_path[f"{CUSTOMERS}/customers_x002_headerless.csv"]
    assert (account["rows"], account["quarantine_rows"], account["erased_rows"]) == (2, 1, 1)
