"""Retention: rule validation, the demo's support-case rule through the command (dry run) and
the after-build hook (real run, exact counts), purpose expiry, and vacuum of old files."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from privacy_lakehouse import landing, retention
from privacy_lakehouse.retention import RetentionError, RetentionRule, RetentionTarget, parse_rule
from privacy_lakehouse.settings import load_settings

from .conftest import clone_demo
from .dbt_helpers import run_dbt

AS_OF = date(2031, 2, 1)
SUPPORT_KEEP_DAYS = 2555  # the demo's rule in dbt_project.yml
CUTOFF = AS_OF - timedelta(days=SUPPORT_KEEP_DAYS)
BRONZE_CASES = "bronze/raw_support__cases"
SILVER_CASES = "silver/stg_support__cases"
QUARANTINE = "bronze/raw_quarantine__records"
TOKEN = re.compile(r"v[0-9]+:[0-9a-f]{32}")


def run_command(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    retention.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = retention.run(parser.parse_args(argv))
    return code, out.getvalue() + err.getvalue()


def case_counts(demo, table: str) -> tuple[int, int]:
    """(all rows, rows opened before the cutoff), counted with DuckDB's own date parsing."""
    con = demo.duckdb()
    try:
        return con.execute(
            f"select count(*), count(*) filter (where cast(opened_at as timestamp) < ?) "
            f"from delta_scan('{demo.lake / table}')",
            [CUTOFF],
        ).fetchone()
    finally:
        con.close()


def latest_evidence(lake: Path) -> dict:
    return json.loads(sorted((lake / "_evidence" / "retention").glob("*.json"))[-1].read_text())


@pytest.fixture(scope="module")
def lake(demo, tmp_path_factory):
    copy = clone_demo(demo, tmp_path_factory.mktemp("retention") / "privacy_lakehouse")
    counts = {t: case_counts(copy, t) for t in (BRONZE_CASES, SILVER_CASES)}
    return SimpleNamespace(
        copy=copy, counts=counts, manifest=demo.root / "target" / "manifest.json"
    )


# ---------------------------------------------------------------------------------------------
# Rules


def test_rules_are_validated_and_errors_name_the_model():
    assert parse_rule("m", None) is None
    assert parse_rule("m", {"column": "opened_at", "keep_days": 30}) == RetentionRule(
        keep_days=30, column="opened_at"
    )
    rule = parse_rule("m", {"purpose": "marketing", "keep_days": 0}, purposes={"marketing"})
    assert (rule.purpose, rule.subject_column, rule.cutoff(date(2024, 3, 1))) == (
        "marketing",
        "subject_token",
        date(2024, 3, 1),
    )
    bad = [
        ({"column": "d", "keep_days": -1}, "keep_days"),
        ({"column": "d", "keep_days": True}, "keep_days"),
        ({"column": "d", "keep_days": "30"}, "keep_days"),
        ({"column": "d", "purpose": "marketing", "keep_days": 1}, "exactly one"),
        ({"keep_days": 1}, "exactly one"),
        ({"column": "d", "keep_days": 1, "keep": 2}, "unknown retention keys"),
        ({"purpose": "telepathy", "keep_days": 1}, "not a purpose"),
        ({"column": "d", "keep_days": 1, "subject_column": "s"}, "purpose rules only"),
        ({"purpose": "marketing", "keep_days": 1, "consent_table": "../x"}, "inside the lake"),
        (["column", "d"], "must be a mapping"),
    ]
    for config, message in bad:
        with pytest.raises(RetentionError, match=message) as error:
            parse_rule("raw_support__cases", config, purposes={"marketing"})
        assert "model raw_support__cases" in str(error.value)


def test_the_demo_declares_its_support_case_rule_and_every_build_enforces_it(demo, lake):
    targets = retention.targets_from_manifest(json.loads(lake.manifest.read_text()))
    rules = {t.table: t.rule for t in targets if t.rule}
    expected = RetentionRule(keep_days=SUPPORT_KEEP_DAYS, column="opened_at")
    # The quarantined support cases expire on the same rule, counted from their ingestion.
    quarantined = RetentionRule(keep_days=SUPPORT_KEEP_DAYS, column="ingested_at")
    assert rules == {BRONZE_CASES: expected, SILVER_CASES: expected, QUARANTINE: quarantined}
    assert [t.scope for t in targets if t.table == QUARANTINE] == [None, "support.cases"]
    # The session's build ran the hook as of today: the demo data (2024) is within 7 years.
    record = latest_evidence(demo.lake)
    assert (record["trigger"], record["rules"], record["rows_deleted"]) == ("after_build", 3, 0)
    assert len(record["tables"]) == len(targets)


def test_the_as_of_date_comes_from_dbt_vars_or_the_environment(monkeypatch):
    monkeypatch.setenv(retention.AS_OF_ENV, "2030-05-06")
    assert retention.as_of_from_environment() == date(2030, 5, 6)
    with pytest.raises(RetentionError, match="YYYY-MM-DD"):
        retention.parse_as_of("06/05/2030")


# ---------------------------------------------------------------------------------------------
# The demo lakehouse


def test_a_dry_run_counts_what_would_go_and_changes_nothing(lake):
    copy = lake.copy
    versions = {t: DeltaTable(str(copy.lake / t)).version() for t in (BRONZE_CASES, SILVER_CASES)}
    with copy.env():
        code, output = run_command(
            ["--dry-run", "--as-of", AS_OF.isoformat(), "--manifest", str(lake.manifest)]
        )
    assert code == 0, output
    record = latest_evidence(copy.lake)
    assert record["dry_run"] and record["as_of"] == AS_OF.isoformat()
    by_table = {t["table"]: t for t in record["tables"]}
    for table, (total, expired) in lake.counts.items():
        assert 0 < expired < total
        assert (by_table[table]["rows_total"], by_table[table]["rows_expired"]) == (total, expired)
        assert by_table[table]["rows_deleted"] == 0 and by_table[table]["cutoff"] == str(CUTOFF)
        assert f"{table}: {expired} of {total} rows would be deleted" in output
        assert DeltaTable(str(copy.lake / table)).version() == versions[table]
        assert case_counts(copy, table) == (total, expired)


def test_unknown_models_are_refused(lake):
    with lake.copy.env():
        code, output = run_command(["--select", "nope", "--manifest", str(lake.manifest)])
    assert code == 2 and "unknown delta models: ['nope']" in output


def test_the_build_hook_deletes_exactly_the_expired_rows(lake):
    copy = lake.copy
    cards = copy.count(copy.lake / "bronze" / "raw_cards__transactions")
    run_dbt(copy.root, "build", "--vars", f"{{retention_as_of: '{AS_OF.isoformat()}'}}")
    record = latest_evidence(copy.lake)
    assert (record["trigger"], record["as_of"], record["dry_run"]) == (
        "after_build",
        AS_OF.isoformat(),
        False,
    )
    by_table = {t["table"]: t for t in record["tables"]}
    for table, (total, expired) in lake.counts.items():
        assert case_counts(copy, table) == (total - expired, 0)
        assert by_table[table]["rows_deleted"] == expired
        assert by_table[table]["version_after"] == by_table[table]["version_before"] + 1
        commit = (
            copy.lake / table / "_delta_log" / f"{by_table[table]['version_after']:020d}.json"
        ).read_text()
        assert "opened_at" in commit and str(CUTOFF) in commit and not TOKEN.search(commit)
    assert record["rows_deleted"] == sum(e for _, e in lake.counts.values())
    assert copy.count(copy.lake / "bronze" / "raw_cards__transactions") == cards
    conn = copy.warehouse()  # the BI view shows the table as it is now
    try:
        assert conn.execute("select count(*) from silver.stg_support__cases").fetchone()[0] == (
            lake.counts[SILVER_CASES][0] - lake.counts[SILVER_CASES][1]
        )
    finally:
        conn.close()
    audit = [
        json.loads(line) for line in (copy.lake / "_audit" / "audit.jsonl").read_text().splitlines()
    ]
    entry = [e for e in audit if e["action"] == "retention"][-1]
    assert entry["details"]["rows_deleted"] == record["rows_deleted"]
    # The quarantine's support rows are under the rule too (ingested today: none expired yet).
    assert set(entry["object"]) == {BRONZE_CASES, SILVER_CASES, QUARANTINE}


def ledger(lake_dir: Path, event: str) -> list[dict]:
    rows = DeltaTable(str(lake_dir / "control" / "ingestion_ledger")).to_pyarrow_table()
    return [r for r in rows.to_pylist() if r["event"] == event]


def quarantine_counts(copy) -> dict[str, int]:
    con = copy.duckdb()
    try:
        return dict(
            con.execute(
                f"select source_name, count(*) from delta_scan('{copy.lake / QUARANTINE}') "
                "group by all"
            ).fetchall()
        )
    finally:
        con.close()


def test_expired_landing_files_are_not_ingested_again_and_can_be_purged(lake):
    """As of 2040 every support case has expired, in bronze and (counted from its ingestion) in
    quarantine. The next build reads none of their landing files again (before the ingestion
    ledger, a file with no bronze row left was ingested anew and deleted again at every build),
    and the landing purge accounts for the expired rows instead of keeping the files as a
    mismatch for ever."""
    copy = lake.copy
    far = "{retention_as_of: '2040-01-01'}"
    quarantined = quarantine_counts(copy)
    assert quarantined["support.cases"] > 0 and len(quarantined) > 1
    run_dbt(copy.root, "build", "--vars", far)
    first = latest_evidence(copy.lake)
    by_table = {(t["table"], t["source_name"]): t for t in first["tables"]}
    assert case_counts(copy, BRONZE_CASES)[0] == 0
    # The quarantine's support rows went on the support rule; other sources' rows stayed.
    scoped = by_table[(QUARANTINE, "support.cases")]
    assert scoped["rule"] == {"column": "ingested_at", "keep_days": SUPPORT_KEEP_DAYS}
    assert scoped["rows_deleted"] == quarantined["support.cases"]
    assert quarantine_counts(copy) == {k: v for k, v in quarantined.items() if k != "support.cases"}
    commit = (
        copy.lake / QUARANTINE / "_delta_log" / f"{scoped['version_after']:020d}.json"
    ).read_text()
    assert "support.cases" in commit and "ingested_at" in commit and not TOKEN.search(commit)
    # The ledger holds what went, per landing file: names and counts.
    expired = ledger(copy.lake, "expired")
    landed = {
        f["path"].rsplit("/", 1)[-1]: f
        for f in copy.landing_summary["files"]
        if f["source"] == "support_cases"
    }
    for name, generated in landed.items():
        assert (
            sum(
                e["rows"]
                for e in expired
                if e["source_file"] == name and e["table_name"] == BRONZE_CASES
            )
            == generated["bronze_rows"]
        )
        assert (
            sum(
                e["rows"]
                for e in expired
                if e["source_file"] == name and e["table_name"] == QUARANTINE
            )
            == generated["quarantined_rows"]
        )

    versions = {t: DeltaTable(str(copy.lake / t)).version() for t in (BRONZE_CASES, QUARANTINE)}
    run_dbt(copy.root, "build", "--vars", far)
    second = {(t["table"], t["source_name"]): t for t in latest_evidence(copy.lake)["tables"]}
    for key in ((BRONZE_CASES, None), (SILVER_CASES, None), (QUARANTINE, "support.cases")):
        assert (second[key]["rows_total"], second[key]["rows_deleted"]) == (0, 0), key
    assert {t: DeltaTable(str(copy.lake / t)).version() for t in versions} == versions
    assert len(ledger(copy.lake, "expired")) == len(expired)

    with copy.env():
        plan = landing.purge_landing(settings=load_settings(), dry_run=True, keep_days=0)
    files = {
        f["path"].rsplit("/", 1)[-1]: f for f in plan["files"] if f["source"] == "support.cases"
    }
    assert set(files) == set(landed)
    for name, entry in files.items():
        assert (entry["bronze_rows"], entry["quarantine_rows"]) == (0, 0)
        assert entry["expired_rows"] == entry["rows"] == landed[name]["rows"]
    oldest, newest = sorted(files)
    assert (files[oldest]["decision"], files[newest]["decision"]) == (
        landing.PURGE,
        landing.KEPT_NEWEST,
    )


def test_purpose_expiry_deletes_the_rows_of_subjects_without_consent(lake):
    copy = lake.copy
    table = "silver/stg_core_banking__customers"
    as_of = date(2024, 3, 1)
    con = copy.duckdb()
    try:
        total, expected = con.execute(
            f"select count(*), count(*) filter (where not exists (select 1 from delta_scan("
            f"'{copy.lake / 'silver' / 'int_consents_historized'}') k where k.subject_token = "
            f"c.subject_token and k.purpose = 'marketing' and k.is_current and (k.is_granted or "
            f"k.valid_from >= ?))) from delta_scan('{copy.lake / table}') c",
            [as_of - timedelta(days=10)],
        ).fetchone()
    finally:
        con.close()
    assert 0 < expected < total
    target = RetentionTarget(
        model="stg_core_banking__customers",
        table=table,
        schema="silver",
        rule=parse_rule("stg_core_banking__customers", {"purpose": "marketing", "keep_days": 10}),
    )
    with copy.env():
        record = retention.enforce_retention([target], settings=load_settings(), as_of=as_of)
    outcome = record["tables"][0]
    assert (outcome["rows_expired"], outcome["rows_deleted"]) == (expected, expected)
    assert copy.count(copy.lake / table) == total - expected
    commit = copy.lake / table / "_delta_log" / f"{outcome['version_after']:020d}.json"
    assert not TOKEN.search(commit.read_text()) and '"predicate"' not in commit.read_text()


def test_vacuum_removes_files_older_than_the_window_and_commits_only_when_it_does(tmp_path):
    location = tmp_path / "lake" / "gold" / "t"
    rows = pa.table({"n": [1, 2, 3]})
    write_deltalake(
        str(location), rows, configuration={"delta.deletedFileRetentionDuration": "interval 0 days"}
    )
    for _ in range(2):
        write_deltalake(str(location), rows, mode="overwrite")
    assert len(list(location.glob("*.parquet"))) == 3
    target = RetentionTarget(model="t", table="gold/t", schema="gold", rule=None)
    dry = retention.enforce_retention([target], lake_dir=tmp_path / "lake", dry_run=True)
    assert dry["files_vacuumed"] == 2 and len(list(location.glob("*.parquet"))) == 3
    first = retention.enforce_retention([target], lake_dir=tmp_path / "lake")
    assert first["files_vacuumed"] == 2 and len(list(location.glob("*.parquet"))) == 1
    version = DeltaTable(str(location)).version()
    second = retention.enforce_retention([target], lake_dir=tmp_path / "lake")
    assert second["files_vacuumed"] == 0 and DeltaTable(str(location)).version() == version
    assert DeltaTable(str(location)).to_pyarrow_table().num_rows == 3
