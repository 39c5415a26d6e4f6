"""Landing purge: a landing file goes only when all its rows are in bronze, quarantine or erased;
a file whose counts disagree is kept and reported; the newest file of a source stays so the next
build can read the source; evidence and an audit entry record each purge; the after-build hook
runs only when the policy enables it."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake
from privacy_lakehouse import hooks, landing
from privacy_lakehouse.audit_log import AuditLog
from privacy_lakehouse.hooks import BuildContext
from privacy_lakehouse.keyring import Keyring
from privacy_lakehouse.landing import (
    KEPT_MISMATCH,
    KEPT_NEWEST,
    KEPT_RECENT,
    PURGE,
    LandingError,
    LandingPolicy,
    parse_landing_policy,
    purge_landing,
)
from privacy_lakehouse.settings import load_settings

from .conftest import Demo, clone_demo
from .dbt_helpers import run_dbt

SOURCES = {source.name: source for source in landing.LANDING_SOURCES}


def plan(lake: Demo, **options) -> dict:
    with lake.env():
        return purge_landing(settings=load_settings(), dry_run=True, **options)


def decisions(summary: dict) -> dict[str, str]:
    return {entry["path"]: entry["decision"] for entry in summary["files"]}


def landing_files(lake: Demo) -> set[str]:
    return {
        p.relative_to(lake.landing).as_posix()
        for p in lake.landing.rglob("*")
        if p.is_file() and p.name != "_generator.json"
    }


@pytest.fixture(scope="module")
def purge_lake(demo, tmp_path_factory) -> Demo:
    return clone_demo(demo, tmp_path_factory.mktemp("landing") / "privacy_lakehouse")


def test_the_plan_matches_the_generator_counts_and_deletes_nothing(purge_lake):
    files_before = landing_files(purge_lake)
    summary = plan(purge_lake, keep_days=0)
    generated = {entry["path"]: entry for entry in purge_lake.landing_summary["files"]}
    assert set(decisions(summary)) == set(generated) == files_before
    for entry in summary["files"]:
        expected = generated[entry["path"]]
        # The generator's own summary is the independent oracle for every count.
        assert entry["rows"] == expected["rows"]
        assert (entry["bronze_rows"], entry["quarantine_rows"]) == (
            expected["bronze_rows"],
            expected["quarantined_rows"],
        )
        batch = expected["batch"]
        assert entry["decision"] == (PURGE if batch == 1 else KEPT_NEWEST), entry["path"]
    assert summary["files_to_purge"] == 5 and summary["files_purged"] == 0
    assert landing_files(purge_lake) == files_before
    assert not (purge_lake.lake / "_evidence" / "landing_purge").exists()


def test_files_younger_than_keep_days_are_kept(purge_lake):
    recent = plan(purge_lake, keep_days=1)
    assert set(decisions(recent).values()) == {KEPT_RECENT, KEPT_NEWEST}
    later = plan(purge_lake, keep_days=1, now=datetime.now(timezone.utc) + timedelta(days=2))
    assert sorted(decisions(later).values()).count(PURGE) == 5


def test_purge_removes_accounted_files_keeps_mismatched_ones_and_the_next_build_works(purge_lake):
    consent = purge_lake.landing / "consent/events/consent_events_b001.jsonl"
    before = plan(purge_lake, keep_days=0)
    consent_entry = next(e for e in before["files"] if e["path"].endswith(consent.name))
    # The source system re-delivered the file with one more line than was ingested.
    with consent.open("a") as handle:
        handle.write('{"event_id": "late-extra", "customer_id": "C-LATE", "purpose": "x"}\n')
    with purge_lake.env():
        summary = purge_landing(settings=load_settings(), keep_days=0)
    by_path = {entry["path"]: entry for entry in summary["files"]}
    mismatch = by_path["consent/events/consent_events_b001.jsonl"]
    assert mismatch["decision"] == KEPT_MISMATCH
    assert (
        mismatch["rows"]
        == consent_entry["rows"] + 1
        == mismatch["bronze_rows"] + mismatch["quarantine_rows"] + 1
    )
    assert summary["mismatches"] == [mismatch] and summary["files_purged"] == 4
    purged = {path for path, entry in by_path.items() if entry["decision"] == PURGE}
    assert len(purged) == 4 and all("_b001" in path for path in purged)
    remaining = landing_files(purge_lake)
    assert (
        not purged & remaining and consent.relative_to(purge_lake.landing).as_posix() in remaining
    )
    evidence = json.loads(Path(summary["evidence_file"]).read_text())
    assert evidence["files_purged"] == 4 and evidence["decisions"][KEPT_MISMATCH] == 1
    entry = AuditLog(purge_lake.lake / "_audit" / "audit.jsonl").entries()[-1]
    assert (entry.action, tuple(entry.object)) == ("retention", ("landing",))
    assert entry.details["operation"] == "landing_purge" and entry.details["files_purged"] == 4
    assert entry.details["files_kept_mismatch"] == 1
    # Bronze is untouched and the next build still reads every source (newest files kept):
    # it ingests only the extra line, after which the kept file is accounted for again.
    bronze = {t.name: purge_lake.count(t) for t in purge_lake.tables("bronze")}
    run_dbt(purge_lake.root, "build", "--select", "tag:bronze")
    after = {t.name: purge_lake.count(t) for t in purge_lake.tables("bronze")}
    extra = {name: after[name] - bronze[name] for name in bronze if after[name] != bronze[name]}
    assert sum(extra.values()) == 1 and set(extra) <= {
        "raw_consent__events",
        "raw_quarantine__records",
    }
    assert decisions(plan(purge_lake, keep_days=0))[mismatch["path"]] == PURGE


def write_tombstone(lake: Demo, erased: str) -> None:
    """A tombstone as erasure writes it: of a customer id, or of 'record:' || record_hash."""
    with lake.env():
        with Keyring.open(load_settings()) as ring:
            token = ring.token(erased, "tombstone")
    write_deltalake(
        str(lake.lake / "control" / "erasure_tombstones"),
        pa.table(
            {
                "tombstone_token": [token],
                "erased_at": pa.array([datetime.now(timezone.utc)], pa.timestamp("us", "UTC")),
                "request_id": ["test-erasure"],
            }
        ),
        mode="append",
    )


def remove_rows(lake: Demo, column: str, value: str) -> int:
    """What erasure does to bronze (the rows gone), done here by rewriting the tables."""
    removed = 0
    for table in lake.tables("bronze"):
        rows = DeltaTable(str(table)).to_pyarrow_table()
        kept = rows.filter(pc.not_equal(rows[column], value))
        if kept.num_rows != rows.num_rows:
            removed += rows.num_rows - kept.num_rows
            write_deltalake(str(table), kept, mode="overwrite")
    return removed


def customers_b001(summary: dict) -> dict:
    return next(e for e in summary["files"] if e["path"].endswith("customers_b001.csv"))


def test_rows_of_erased_subjects_and_records_are_accounted_only_once_erased(demo_copy):
    con = demo_copy.duckdb()
    customers = str(demo_copy.landing / "core_banking/customers/customers_b001.csv")
    customer_id = con.execute(
        "select trim(customer_id) from read_csv(?, header=true, all_varchar=true) "
        "where nullif(trim(customer_id), '') is not null limit 1",
        [customers],
    ).fetchone()[0]
    write_tombstone(demo_copy, customer_id)
    # Tombstoned but still in bronze: counted twice, so the file is a mismatch and stays.
    pending = customers_b001(plan(demo_copy, keep_days=0))
    assert pending["decision"] == KEPT_MISMATCH and pending["erased_rows"] >= 1
    with demo_copy.env(), Keyring.open(load_settings()) as ring:
        subject_token = ring.token(customer_id, "subject")
    assert remove_rows(demo_copy, "subject_token", subject_token) >= pending["erased_rows"]
    erased = customers_b001(plan(demo_copy, keep_days=0))
    assert erased["decision"] == PURGE and erased["erased_rows"] == pending["erased_rows"]
    # A quarantined row that names no customer is erased by its record hash.
    quarantine = DeltaTable(str(demo_copy.lake / "bronze" / "raw_quarantine__records"))
    rows = quarantine.to_pyarrow_table().to_pylist()
    record = next(
        r for r in rows if r["source_file"] == "customers_b001.csv" and not r["has_subject"]
    )
    write_tombstone(demo_copy, "record:" + record["record_hash"])
    assert customers_b001(plan(demo_copy, keep_days=0))["decision"] == KEPT_MISMATCH
    assert remove_rows(demo_copy, "ingest_key", record["ingest_key"]) == 1
    final = plan(demo_copy, keep_days=0)
    entry = customers_b001(final)
    assert entry["decision"] == PURGE and entry["erased_rows"] == erased["erased_rows"] + 1
    assert entry["rows"] == entry["bronze_rows"] + entry["quarantine_rows"] + entry["erased_rows"]
    assert not final["mismatches"]


def test_the_hook_runs_only_when_the_policy_enables_it(demo_copy):
    assert "landing_purge" in hooks.registered_hooks()
    files = landing_files(demo_copy)
    context = BuildContext(
        lake_dir=demo_copy.lake,
        invocation_id="test",
        command="build",
        target_name="dev",
        results=[{"unique_id": "model.p.m", "status": "success"}],
    )
    with demo_copy.env():
        assert landing.purge_after_build(context) == {"enabled": False}
    assert landing_files(demo_copy) == files
    policy_file = demo_copy.root / "privacy_policy.yml"
    policy_file.write_text(
        policy_file.read_text() + "\nlanding:\n  purge_after_ingest: true\n  keep_days: 0\n"
    )
    failed = BuildContext(
        **{**context.__dict__, "results": [{"unique_id": "x", "status": "error"}]}
    )
    with demo_copy.env():
        assert "skipped" in landing.purge_after_build(failed)
        assert landing_files(demo_copy) == files
        result = landing.purge_after_build(context)
    assert result["enabled"] is True and result["files_purged"] == 5
    assert len(landing_files(demo_copy)) == len(files) - 5


def test_the_cli_dry_run_prints_the_plan(demo_copy, capsys):
    parser = argparse.ArgumentParser()
    landing.add_arguments(parser)
    with demo_copy.env():
        code = landing.run(parser.parse_args(["purge", "--dry-run", "--keep-days", "0"]))
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["dry_run"] is True and summary["files_to_purge"] == 5
    assert len(landing_files(demo_copy)) == summary["files_seen"]


@pytest.mark.parametrize("days", ["nan", "inf", "-1"])
def test_keep_days_must_be_a_finite_number_of_days(days, capsys):
    parser = argparse.ArgumentParser()
    landing.add_arguments(parser)
    with pytest.raises(SystemExit) as refused:
        parser.parse_args(["purge", "--keep-days", days])
    assert refused.value.code == 2 and "finite number" in capsys.readouterr().err


@pytest.mark.parametrize(
    "document, expected",
    [
        (None, LandingPolicy()),
        ({"version": 1}, LandingPolicy(purge_after_ingest=False, keep_days=7)),
        ({"landing": {"purge_after_ingest": True, "keep_days": 0}}, LandingPolicy(True, 0)),
    ],
)
def test_the_policy_section_has_safe_defaults(document, expected):
    assert parse_landing_policy(document) == expected


@pytest.mark.parametrize(
    "section, message",
    [
        ({"purge_after_ingest": "yes"}, "true or false"),
        ({"keep_days": -1}, "0 or more"),
        ({"purge_after_ingest": True, "keep_day": 3}, "unknown key"),
        ([True], "must map"),
    ],
)
def test_a_malformed_policy_section_fails_closed(section, message):
    with pytest.raises(LandingError, match=message):
        parse_landing_policy({"landing": section})


def test_every_landing_source_of_the_project_is_known(demo):
    """The purge's registry mirrors the dbt sources: same folders, bronze tables that exist."""
    sources = {
        f"{node['source_name']}.{node['name']}": node
        for node in demo.manifest()["sources"].values()
        if node["source_name"] not in {"control", "audit"}
    }
    assert set(sources) == set(SOURCES)
    for name, node in sources.items():
        # Read exactly as dbt reads: same glob, same options (row counts and hashes agree).
        assert SOURCES[name].relation(demo.landing) == node["config"]["external_location"], name
        if not SOURCES[name].lines:  # the record hash is over the declared columns
            assert SOURCES[name].columns == tuple(node["columns"]), name
        assert (demo.lake / SOURCES[name].bronze_table / "_delta_log").is_dir(), name


def test_a_case_names_its_customer_redacted_after_the_customer_file_is_purged(demo_copy, tmp_path):
    """The names to redact come from bronze customers, not from landing: a case delivered after
    its customer's landing file was purged keeps no name (the file is moved away here)."""
    import csv

    folder = demo_copy.landing / "core_banking" / "customers"
    later = {row["customer_id"] for row in csv.DictReader((folder / "customers_b002.csv").open())}
    first_file = folder / "customers_b001.csv"
    customer = next(
        row
        for row in csv.DictReader(first_file.open())
        if row["customer_id"] not in later and len(row["first_name"]) > 3
    )
    first_file.rename(tmp_path / first_file.name)
    first, last = customer["first_name"], customer["last_name"]
    note = f"Spoke with {first} {last}; {first} agreed."
    case = {
        "case_id": "S9900000001",
        "customer_id": customer["customer_id"],
        "opened_at": "2024-03-01 10:00:00",
        "channel": "phone",
        "category": "card_blocked",
        "status": "open",
        "note": note,
    }
    cases = demo_copy.landing / "support" / "cases" / "support_cases_b990.jsonl"
    cases.write_text(json.dumps(case) + "\n")
    run_dbt(demo_copy.root, "build", "--select", "raw_core_banking__customers raw_support__cases")
    con = demo_copy.duckdb()
    try:
        redacted = con.execute(
            "select note_redacted from delta_scan(?) where case_id = 'S9900000001'",
            [str(demo_copy.lake / "bronze" / "raw_support__cases")],
        ).fetchall()
    finally:
        con.close()
    assert redacted == [("Spoke with [NAME] [NAME]; [NAME] agreed.",)]
