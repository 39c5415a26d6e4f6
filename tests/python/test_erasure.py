"""Erasure on a private clone of the demo lakehouse: a batch of two requests (one by email, one
by customer number) deletes the subjects from every table and file, survives time travel and a
replay of the landing files, and leaves no identifier or token in commit logs, output or
evidence. Plus the verifier and the clustered delete on purpose-made data."""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from privacy_lakehouse import erasure, retention
from privacy_lakehouse.erasure_verifier import (
    SubjectTraces,
    TraceMatcher,
    scan_file_bytes,
    verify_erasure,
)
from privacy_lakehouse.generate import generate_landing
from privacy_lakehouse.keyring import Keyring
from privacy_lakehouse.settings import load_settings

from .conftest import DEMO_CUSTOMERS, DEMO_TRANSACTIONS, clone_demo
from .dbt_helpers import run_dbt

TOKEN = re.compile(r"v[0-9]+:[0-9a-f]{32}")


@dataclass
class Person:
    customer_id: str
    email: str = ""
    phone: str = ""
    national_id: str = ""
    name: str = ""
    ibans: set[str] = field(default_factory=set)
    cards: set[str] = field(default_factory=set)
    resent_without_key: bool = False

    def plaintexts(self) -> list[str]:
        values = [self.customer_id, self.email, self.phone, self.national_id, self.name]
        return [v for v in values + sorted(self.ibans) + sorted(self.cards) if v]


def landing_people(landing: Path) -> dict[str, Person]:
    people: dict[str, Person] = {}
    keyless_emails = set()
    for path in sorted((landing / "core_banking" / "customers").glob("*.csv")):
        for row in csv.DictReader(path.open(encoding="utf-8")):
            if not row["customer_id"].strip():
                keyless_emails.add(row["email"])
                continue
            person = people.setdefault(row["customer_id"], Person(row["customer_id"]))
            person.email, person.phone = row["email"], row["phone"]
            person.national_id = row["national_id"]
            person.name = f"{row['first_name']} {row['last_name']}"
    for path in sorted((landing / "core_banking" / "accounts").glob("*.csv")):
        for row in csv.DictReader(path.open(encoding="utf-8")):
            if row["customer_id"] in people:
                people[row["customer_id"]].ibans.add(row["iban"])
    for path in sorted((landing / "cards" / "transactions").glob("*.parquet")):
        table = pq.read_table(path, columns=["customer_id", "card_number"])
        for customer_id, card in zip(
            table["customer_id"].to_pylist(), table["card_number"].to_pylist(), strict=True
        ):
            if customer_id in people and card:
                people[customer_id].cards.add(card)
    for person in people.values():
        person.resent_without_key = person.email in keyless_emails
    return people


def subject_rows(table_path: Path, tokens: set[str]) -> int:
    data = DeltaTable(str(table_path)).to_pyarrow_table(columns=["subject_token"])
    column = data["subject_token"].cast(pa.string())
    return pc.sum(pc.is_in(column, value_set=pa.array(sorted(tokens)))).as_py() or 0


def subject_tables(lake: Path) -> list[erasure.LakeTable]:
    return [
        t
        for t in erasure.discover_tables(lake)
        if "subject_token" in t.columns and not t.is_control
    ]


def parser_for(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=module.__name__)
    module.add_arguments(parser)
    return parser


@pytest.fixture(scope="module")
def erased(demo, tmp_path_factory):
    """The clone, built (so its views and target/ are its own), then a batch erasure of two
    subjects through the command, with everything the tests need captured around it."""
    copy = clone_demo(demo, tmp_path_factory.mktemp("erasure") / "privacy_lakehouse")
    run_dbt(copy.root, "build")
    people = landing_people(copy.landing)
    with_cards = [p for p in people.values() if p.cards and p.ibans]
    first = next(p for p in with_cards if p.resent_without_key)
    second = next(p for p in with_cards if p is not first and not p.resent_without_key)
    control = next(p for p in with_cards if p not in (first, second))
    batch = copy.root / "requests.csv"
    # The operator's spelling of the email: case and spaces differ from the stored value.
    batch.write_text(
        "email,customer_id,request_id\n"
        f"  {first.email.upper()} ,,REQ-A\n"
        f",{second.customer_id},REQ-B\n"
    )
    with copy.env():
        settings = load_settings()
        with Keyring.open(settings) as keyring:
            tokens = {
                p.customer_id: set(keyring.token_versions(p.customer_id, "subject").values())
                for p in (first, second, control)
            }
            email_token = keyring.token(first.email.lower(), "email")
        traces_first = erasure.subject_traces([{"customer_id": first.customer_id}])
        traces_control = erasure.subject_traces(
            [{"customer_id": control.customer_id, "request_id": "CONTROL"}]
        )
        roots = [settings.lake_dir, settings.root / "target", settings.root / "logs"]
        before_report = verify_erasure(traces_first, roots, base=settings.root)
        tables = subject_tables(settings.lake_dir)
        versions_before = {t.name: DeltaTable(str(t.path)).version() for t in tables}
        rows_before = {
            t.name: subject_rows(t.path, tokens[first.customer_id] | tokens[second.customer_id])
            for t in tables
        }
        out, err, records = io.StringIO(), io.StringIO(), []
        handler = logging.Handler(logging.DEBUG)
        handler.emit = lambda record: records.append(handler.format(record))
        root_logger = logging.getLogger()
        old_level = root_logger.level
        root_logger.addHandler(handler)
        root_logger.setLevel(logging.DEBUG)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = erasure.run(parser_for(erasure).parse_args(["--batch", str(batch)]))
        finally:
            root_logger.removeHandler(handler)
            root_logger.setLevel(old_level)
        evidence_files = sorted((settings.lake_dir / "_evidence" / "erasure").glob("*.json"))
        control_report = verify_erasure(traces_control, roots, base=settings.root)
    return SimpleNamespace(
        copy=copy,
        settings=settings,
        first=first,
        second=second,
        control=control,
        tokens=tokens,
        email_token=email_token,
        traces_first=traces_first,
        before_report=before_report,
        control_report=control_report,
        versions_before=versions_before,
        rows_before=rows_before,
        code=code,
        output=out.getvalue() + err.getvalue() + "\n".join(records),
        evidence=json.loads(evidence_files[-1].read_text()),
        evidence_text=evidence_files[-1].read_text(),
    )


def erased_needles(erased) -> list[str]:
    """Identifiers and tokens of both erased subjects, as the tests look for them."""
    values = [*erased.first.plaintexts(), *erased.second.plaintexts(), erased.email_token]
    values += sorted(erased.tokens[erased.first.customer_id])
    values += sorted(erased.tokens[erased.second.customer_id])
    return values


def test_the_batch_erases_both_subjects_in_one_commit_per_table(erased):
    evidence = erased.evidence
    assert erased.code == 0, erased.output
    assert [
        (r["request_id"], r["identifier"], r["status"], r["subjects"]) for r in evidence["requests"]
    ] == [("REQ-A", "email", "erased", 1), ("REQ-B", "customer_id", "erased", 1)]
    expected = {name: n for name, n in erased.rows_before.items() if n}
    assert len(expected) >= 8, expected  # bronze, silver and gold tables held the subjects
    deleted = {t["table"]: t for t in evidence["tables"] if t["rows_deleted"]}
    # The first subject also had a quarantined row without a customer number (a re-send).
    assert evidence["quarantined_rows_without_subject"] >= 1
    quarantine = "bronze/raw_quarantine__records"
    assert deleted[quarantine]["rows_deleted"] >= expected.get(quarantine, 0) + 1
    for name, rows in expected.items():
        assert deleted[name]["rows_deleted"] >= rows, name
        if name != quarantine:
            assert deleted[name]["rows_deleted"] == rows, name
    for name, table in deleted.items():
        assert table["version_after"] == erased.versions_before[name] + 1, name
        assert 1 <= table["files_rewritten"] <= table["files_total"], name
        assert table["method"] == "file_rewrite"
    per_request = {r["request_id"]: r["rows_deleted"] for r in evidence["requests"]}
    assert sum(per_request.values()) == sum(t["rows_deleted"] for t in deleted.values())
    assert evidence["tombstones"]["added"] == 2
    assert evidence["keys"]["data_keys_destroyed"] == 2
    snapshot = next(d for d in evidence["duckdb_files"] if d["file"] == "warehouse.duckdb")
    assert set(snapshot["tables"]) == {"snapshots.snap_customers"} and snapshot["rebuilt"]
    assert snapshot["tables"]["snapshots.snap_customers"] >= 2


def test_no_table_or_duckdb_file_holds_the_erased_subjects_any_more(erased):
    gone = erased.tokens[erased.first.customer_id] | erased.tokens[erased.second.customer_id]
    kept = erased.tokens[erased.control.customer_id]
    lake = erased.settings.lake_dir
    for table in subject_tables(lake):
        assert subject_rows(table.path, gone) == 0, table.name
    assert subject_rows(lake / "bronze" / "raw_core_banking__customers", kept) >= 1
    with erased.copy.env():
        conn = erased.copy.warehouse()
        try:
            snapshot = conn.execute("select subject_token from snapshots.snap_customers").fetchall()
        finally:
            conn.close()
    tokens = {row[0] for row in snapshot}
    assert not tokens & gone and tokens & kept
    # Quarantined rows without a customer number that spoke of the first subject are gone too.
    quarantine = DeltaTable(str(lake / "bronze" / "raw_quarantine__records")).to_pyarrow_table()
    keyless = quarantine.filter(pc.invert(quarantine["has_subject"]))
    with erased.copy.env(), Keyring.open(load_settings()) as keyring:
        records = keyring.decrypt_many(
            keyless["subject_token"], keyless["record_enc"], "erasure_verification", "test"
        ).to_pylist()
    assert records and not any(erased.first.email in (r or "") for r in records)


def test_the_verifier_passes_for_the_erased_and_finds_a_subject_still_there(erased):
    assert not erased.before_report.passed  # the erased subject was findable before
    report = erased.evidence["verification"]
    assert report["passed"] and report["findings"] == []
    assert report["files_scanned"]["parquet"] >= 15 and report["files_scanned"]["duckdb"] >= 1
    assert report["files_scanned"]["delta_log"] >= 15
    assert all(report["needles"][c] > 0 for c in ("plaintext", "token", "ciphertext", "derived"))
    control = erased.control_report
    assert not control.passed
    found = {(f.category, f.how) for f in control.findings}
    assert {("token", "decoded"), ("ciphertext", "decoded")} <= found
    paths = {f.path for f in control.findings}
    assert "lake/warehouse.duckdb" in paths
    assert any(p.startswith("lake/bronze/raw_core_banking__customers/") for p in paths)
    assert control.files_with_traces >= 8


def old_version_rows(path: Path, version: int, tokens: set[str]) -> int:
    """Rows of the tokens in an old version; 0 when the version or its files are gone."""
    try:
        data = DeltaTable(str(path), version=version).to_pyarrow_table(columns=["subject_token"])
    except Exception:  # noqa: BLE001 - the old version is gone, which is the point
        return 0
    column = data["subject_token"].cast(pa.string())
    return pc.sum(pc.is_in(column, value_set=pa.array(sorted(tokens)))).as_py() or 0


def test_time_travel_to_a_version_before_the_erasure_returns_nothing(erased):
    lake = erased.settings.lake_dir
    gone = erased.tokens[erased.first.customer_id] | erased.tokens[erased.second.customer_id]
    checked = 0
    for name, rows in erased.rows_before.items():
        if not rows:
            continue
        path = lake / name
        for version in range(erased.versions_before[name] + 1):
            checked += 1
            assert not old_version_rows(path, version, gone), f"{name} v{version}"
        with pytest.raises(Exception, match="(?i)log|version|found"):  # the log was cut too
            DeltaTable(str(path), version=erased.versions_before[name])
        current = {p for p in DeltaTable(str(path)).file_uris()}
        on_disk = {str(p) for p in path.glob("*.parquet")}
        assert {Path(p.removeprefix("file://")).name for p in current} == {
            Path(p).name for p in on_disk
        }, f"{name}: files of old versions are still on disk"
    assert checked >= 8


def test_commit_logs_hold_no_identifier_or_token_of_the_erased_subjects(erased):
    needles = erased_needles(erased)
    for table in erasure.discover_tables(erased.settings.lake_dir):
        for entry in sorted((table.path / "_delta_log").iterdir()):
            if entry.suffix == ".parquet":
                text = json.dumps(pq.read_table(entry).to_pylist(), default=str)
            else:
                text = entry.read_text(errors="replace")
            for value in needles:
                assert value.lower() not in text.lower(), f"{entry}: holds a subject's value"


def test_identifiers_never_reach_output_logs_or_evidence(erased):
    audit = (erased.settings.lake_dir / "_audit" / "audit.jsonl").read_text()
    assert '"action":"erasure"' in audit and '"action":"decrypt"' in audit
    assert "REQ-A" in erased.output and "verification: PASS" in erased.output
    # Progress lines say what is being done, table by table, in names and counts only.
    assert "erasure: 2 request(s) resolved to 2 subject(s)" in erased.output
    assert re.search(r"bronze/raw_cards__transactions: [1-9][0-9]* rows deleted", erased.output)
    assert "erasure: verification passed" in erased.output
    for text in (erased.output, erased.evidence_text, audit):
        for value in erased_needles(erased):
            assert value.lower() not in text.lower()


@pytest.fixture(scope="module")
def replayed(erased):
    """Every landing file delivered again (regenerated if a purge removed them), then a build."""
    copy = erased.copy
    if not any(copy.landing.rglob("*.csv")):
        generate_landing(
            copy.landing, customers=DEMO_CUSTOMERS, transactions=DEMO_TRANSACTIONS, seed=7
        )
    assert landing_people(copy.landing)[erased.first.customer_id].email == erased.first.email
    run_dbt(copy.root, "build")
    with copy.env():
        roots = [copy.lake, copy.root / "target", copy.root / "logs"]
        return verify_erasure(erased.traces_first, roots, base=copy.root)


def test_a_replay_of_every_landing_file_does_not_bring_the_subjects_back(erased, replayed):
    lake = erased.settings.lake_dir
    gone = erased.tokens[erased.first.customer_id] | erased.tokens[erased.second.customer_id]
    kept = erased.tokens[erased.control.customer_id]
    for table in subject_tables(lake):
        assert subject_rows(table.path, gone) == 0, table.name
    assert subject_rows(lake / "bronze" / "raw_core_banking__customers", kept) >= 1
    assert subject_rows(lake / "silver" / "stg_cards__transactions", kept) >= 1
    tombstones = DeltaTable(str(lake / "control" / "erasure_tombstones")).to_pyarrow_table()
    assert set(tombstones["request_id"].to_pylist()) == {"REQ-A", "REQ-B"}
    assert erased.evidence["tombstones"]["record_tombstones_added"] >= 1
    # Nothing of the subject comes back but (see the next test) the quarantined re-send that
    # carried no customer number: the quarantine model filters by customer tombstones only.
    unexpected = [
        f.to_dict()
        for f in replayed.findings
        if not (
            f.path.startswith("lake/bronze/raw_quarantine__records/") and f.category == "derived"
        )
    ]
    assert unexpected == []


def test_a_replay_does_not_bring_back_a_quarantined_record_without_customer_number(replayed):
    assert replayed.passed


# ---------------------------------------------------------------------------------------------
# Requests and the command line


def test_a_request_id_naming_the_subject_is_refused_before_anything_changes(erased, replayed):
    # The request id is kept for ever in the tombstone table and the evidence, so an id that
    # holds the subject's own customer number must stop the erasure before its first delete.
    control = erased.control
    lake = erased.settings.lake_dir
    with erased.copy.env():
        tables = subject_tables(lake)
        every_table = erasure.discover_tables(lake)  # the tombstone table too
        versions = {t.name: DeltaTable(str(t.path)).version() for t in every_table}
        rows = {t.name: subject_rows(t.path, erased.tokens[control.customer_id]) for t in tables}
        assert sum(rows.values()) > 0
        for request in (
            {"customer_id": control.customer_id, "request_id": control.customer_id},
            {"email": control.email, "request_id": f"ticket-{control.customer_id}"},
        ):
            with pytest.raises(erasure.ErasureError, match="request id") as refused:
                erasure.erase_subjects([request])
            assert control.customer_id not in str(refused.value)
        assert {t.name: DeltaTable(str(t.path)).version() for t in every_table} == versions
        assert {
            t.name: subject_rows(t.path, erased.tokens[control.customer_id]) for t in tables
        } == rows


def test_requests_never_show_their_identifier_and_refuse_personal_request_ids(tmp_path):
    request = erasure.ErasureRequest(email="someone@mail.example", request_id="T-1")
    assert "someone" not in repr(request)
    assert erasure.ErasureRequest(customer_id="C1").request_id.startswith("erasure-")
    for personal in ("4111111111111111", "NL91ABNA0417164300"):  # a card number, an IBAN
        with pytest.raises(erasure.ErasureError, match="request id looks like personal data"):
            erasure.ErasureRequest(customer_id="C1", request_id=personal)
    with pytest.raises(erasure.ErasureError, match="1-64 letters"):
        erasure.ErasureRequest(customer_id="C1", request_id="someone@mail.example")
    with pytest.raises(erasure.ErasureError, match="exactly one"):
        erasure.ErasureRequest(email="a@b.example", customer_id="C1")
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"email": "x@mail.example"}\n{"phone": "+31 6 12345678"}\n')
    with pytest.raises(erasure.ErasureError) as error:
        erasure.read_batch(batch)
    assert "line 2" in str(error.value) and "12345678" not in str(error.value)


@pytest.mark.parametrize(
    ("module", "options"),
    [
        (erasure, ["--email", "--customer-id", "--batch", "--request-id"]),
        (retention, ["--dry-run", "--select", "--as-of"]),
    ],
)
def test_commands_explain_themselves(module, options, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser_for(module).parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(option in text for option in options)


def test_erase_needs_exactly_one_way_to_name_the_subject(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser_for(erasure).parse_args(["--email", "a@b.example", "--customer-id", "C1"])
    assert exit_info.value.code == 2


def test_the_verifier_scans_dbt_target_and_log_folders_where_dbt_writes_them(
    demo_copy, monkeypatch, capsys
):
    """A moved target folder (DBT_TARGET_PATH) and log folder (--log-path) hold a subject's
    token: the erasure's verifier must look there, not only at target/ and logs/."""
    person = next(p for p in landing_people(demo_copy.landing).values() if p.cards)
    with demo_copy.env():
        with Keyring.open(load_settings()) as keyring:
            token = sorted(keyring.token_versions(person.customer_id, "subject").values())[0]
    leaks = {
        "build/dbt_target/compiled/leak.sql": f"select '{token}'\n",
        "elsewhere/dbt_logs/dbt.log": f"debug {token}\n",
    }
    for relative, text in leaks.items():
        (demo_copy.root / relative).parent.mkdir(parents=True)
        (demo_copy.root / relative).write_text(text)
    monkeypatch.setenv("DBT_TARGET_PATH", "build/dbt_target")
    monkeypatch.setenv("DBT_LOG_PATH", "not/the/one")
    argv = ["--customer-id", person.customer_id, "--json", "--log-path", "elsewhere/dbt_logs"]
    with demo_copy.env():
        assert erasure.verification_roots(load_settings())[1:] == [
            demo_copy.root / "build/dbt_target",
            demo_copy.root / "not/the/one",
            demo_copy.root / "target",
            demo_copy.root / "logs",
        ]
        code = erasure.run(parser_for(erasure).parse_args(argv))
    out, err = capsys.readouterr()
    assert code == 1, err
    found = {(f["path"], f["kind"]) for f in json.loads(out)["verification"]["findings"]}
    assert found == {(path, "subject_token") for path in leaks}
    assert token not in out + err and person.customer_id not in out + err


def test_the_landing_search_reads_the_files_as_the_build_does(demo_copy, capsys):
    """Landing holds a truncated Parquet file (the build skips it) and a CSV file with a short
    and a long row beside the subject's row (the build reads it with the source's dialect): the
    erasure's search of landing must neither fail on the first nor misread the second."""
    people = landing_people(demo_copy.landing)
    person = next(p for p in people.values() if p.cards and p.ibans)
    customers = demo_copy.landing / "core_banking" / "customers"
    holding = 0
    for folder in ("core_banking/customers", "core_banking/accounts"):
        for path in sorted((demo_copy.landing / folder).glob("*.csv")):
            rows = csv.DictReader(path.open(encoding="utf-8"))
            holding += any(r["customer_id"].strip() == person.customer_id for r in rows)
    for path in sorted((demo_copy.landing / "cards" / "transactions").glob("*.parquet")):
        ids = pq.read_table(path, columns=["customer_id"])["customer_id"].to_pylist()
        holding += person.customer_id in ids
        good = path
    truncated = demo_copy.landing / "cards" / "transactions" / "transactions_x001_truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    header = "customer_id,first_name,last_name,email,birth_date,city,created_at,updated_at"
    first, last = person.name.split(" ", 1)
    (customers / "customers_x001_ragged.csv").write_text(
        f"{header}\n"
        f"{person.customer_id},{first},{last},{person.email},1980-01-02,Ragtown,2024-03-01,2024-03-01\n"
        "R-9003,Short\n"
        "R-9004,Long,Row,l@example.test,1982-03-04,Ragtown,2024-03-01,2024-03-01,extra\n"
    )
    argv = ["--customer-id", person.customer_id, "--json"]
    with demo_copy.env():
        code = erasure.run(parser_for(erasure).parse_args(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    (request,) = json.loads(out)["requests"]
    assert request["landing_files_holding_subject"] == holding + 1


# ---------------------------------------------------------------------------------------------
# The verifier and the clustered delete on purpose-made data


def test_the_verifier_finds_every_spelling_in_every_kind_of_file(tmp_path):
    traces = SubjectTraces("T")
    traces.add("plaintext", "email", ["Lucas.Bos@mail.example"])
    traces.add("plaintext", "name", ["Niccolò Esposito"])
    traces.add("plaintext", "phone", ["+31 6 48503156"])
    traces.add("plaintext", "card_number", ["4279202425553128"])
    traces.add("token", "subject_token", ["v1:" + "ab" * 16])
    (tmp_path / "notes.txt").write_text("mail LUCAS.BOS@MAIL.EXAMPLE; card 4279 2024 2555 3128\n")
    (tmp_path / "escaped.json").write_text(json.dumps({"who": "Niccolò Esposito"}))
    (tmp_path / "innocent.txt").write_text("Niccolò Espositos and xLucas.Bos@mail.examples\n")
    nested = pa.table({"s": [{"phone": "+31648503156", "n": 1}], "l": [["x", "v1:" + "ab" * 16]]})
    pq.write_table(nested, tmp_path / "data.parquet", compression="zstd")
    conn = duckdb.connect(str(tmp_path / "file.duckdb"))
    conn.execute("create table t as select 'v1:' || repeat('ab', 16) as token")
    conn.close()
    # A value across the edge of a scan window and of a chunk is found once, not twice.
    padded = tmp_path / "big.bin"
    padded.write_bytes(b"\0" * ((8 << 20) - 7) + b" +31648503156 " + b"\0" * 100)
    report = verify_erasure([traces], [tmp_path], base=tmp_path)
    found = {(f.path, f.how, f.kind): f.occurrences for f in report.findings}
    assert found[("notes.txt", "raw", "email")] == 1
    assert found[("notes.txt", "raw", "card_number")] == 1
    assert found[("escaped.json", "raw", "name")] == 1
    assert found[("data.parquet", "decoded", "phone")] == 1
    assert found[("data.parquet", "decoded", "subject_token")] == 1
    assert found[("file.duckdb", "decoded", "subject_token")] == 1
    assert found[("big.bin", "raw", "phone")] == 1
    assert not any(path == "innocent.txt" for path, _, _ in found)
    assert not report.passed and report.files_scanned["parquet"] == 1
    matcher = TraceMatcher(traces.needles())
    window = b"x" * ((64 << 10) - 3) + b" Lucas.Bos@mail.example " + b"x"
    assert sum(matcher.scan_bytes(window).values()) == 1
    assert sum(scan_file_bytes(tmp_path / "innocent.txt", matcher).values()) == 0
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.txt").write_text("nothing here")
    assert verify_erasure([traces], [clean]).passed


def test_digit_runs_cut_by_compression_are_no_trace_but_parquet_footers_still_are(tmp_path):
    """At 10M a batch erasure failed its proof on one silver file: Snappy had cut card
    transaction ids into literals, one of which stood alone as a subject's 9-digit national id.
    Compressed pages are left to the decoded scan; the footer is still scanned raw."""
    rng = np.random.default_rng(7)
    ids = [f"{rng.integers(10**11, 10**12)}{rng.integers(10**5):05d}" for _ in range(4000)]
    compressed = tmp_path / "lake" / "ids.parquet"
    compressed.parent.mkdir()
    pq.write_table(pa.table({"transaction_id": ids}), compressed, compression="snappy",
                   use_dictionary=False, write_statistics=False)  # fmt: skip
    # Stand-alone 9-digit runs in the file's bytes: pieces of 17-digit ids, no value of their own.
    runs = re.finditer(rb"(?<![0-9A-Za-z])([0-9]{9})(?![0-9A-Za-z])", compressed.read_bytes())
    fragments = sorted({m.group(1).decode() for m in runs})
    assert fragments and all(any(f in v for v in ids) and f not in ids for f in fragments)
    traces = SubjectTraces("T")
    traces.add("plaintext", "national_id", fragments[:20])
    matcher = TraceMatcher(traces.needles())
    # Without the skip, the raw scan takes the fragments for the subject's national ids.
    assert sum(scan_file_bytes(compressed, matcher).values()) > 0
    assert verify_erasure([traces], [compressed.parent]).passed
    # A value kept in a footer (here the file's key-value metadata) is still a trace.
    kept = pa.table({"n": [1]}).replace_schema_metadata({"note": f"id {fragments[0]};"})
    pq.write_table(kept, compressed.parent / "footer.parquet", compression="snappy")
    report = verify_erasure([traces], [compressed.parent], base=compressed.parent)
    found = {(f.path, f.how, f.kind) for f in report.findings}
    assert found == {("footer.parquet", "raw", "national_id")} and not report.passed


def test_a_batch_of_thousands_of_needles_is_screened_in_several_passes_and_found(tmp_path):
    from privacy_lakehouse.erasure_verifier import PREFILTER_PREFIX_CHARS, _prefilter_patterns

    traces = SubjectTraces("batch")
    tokens = [f"v1:{hashlib.sha256(str(i).encode()).hexdigest()[:32]}" for i in range(3000)]
    traces.add("token", "subject_token", tokens)
    traces.add("plaintext", "email", ["last.one@mail.example"])
    matcher = TraceMatcher(traces.needles())
    # Far more pattern than one fast RE2 pass takes: the prefilter is split, none is dropped.
    patterns = _prefilter_patterns(t for t in tokens)
    prefixes = {token[:PREFILTER_PREFIX_CHARS] for token in tokens}
    assert len(patterns) > 1 and sum(p.count("|") + 1 for p in patterns) == len(prefixes)
    # Needles of the last pass, and a prefix alone is no match.
    hit, near_miss = tokens[-1], tokens[-2][:PREFILTER_PREFIX_CHARS] + "0" * 27
    window = b"\0" * 70_000 + hit.encode() + b" LAST.ONE@mail.example " + near_miss.encode()
    assert matcher.scan_bytes(window) == {
        n: 1 for n in traces.needles() if n.value in (hit, "last.one@mail.example")
    }
    values = pa.array(["x", f"{{'t': '{hit}'}}", near_miss, None])
    found, scanned = matcher.scan_array(values)
    assert scanned == 4 and sum(found.values()) == 1
    pq.write_table(pa.table({"v": values}), tmp_path / "d.parquet")
    report = verify_erasure([traces], [tmp_path], base=tmp_path)
    found = {(f.how, f.kind): f.occurrences for f in report.findings}
    assert found[("decoded", "subject_token")] == 1 and {k for _, k in found} == {"subject_token"}


def test_a_large_batch_is_screened_by_an_automaton_and_non_ascii_needles_by_re2():
    traces = SubjectTraces("large")
    tokens = [f"v1:{hashlib.sha256(str(i).encode()).hexdigest()[:32]}" for i in range(3000)]
    traces.add("token", "subject_token", tokens)
    traces.add("plaintext", "email", ["john.smith@mail.example", "élise.dupont@mail.example"])
    matcher = TraceMatcher(traces.needles())
    screen = matcher._text_screen
    # Every ASCII needle is in the automaton; only the accented e-mail is left to RE2.
    assert screen.automaton is not None and len(screen.automaton) == len(tokens) + 1
    assert len(screen.patterns) == 1 and "lise" in screen.patterns[0]
    values = pa.array(
        [
            f"ref {tokens[1234]}",
            "JOHN.SMITH@MAIL.EXAMPLE",
            "ÉLISE.DUPONT@MAIL.EXAMPLE",
            "john.smithy@mail.example",  # no word boundary: a candidate, not a match
            tokens[7].upper(),  # tokens match exactly: a candidate, not a match
            None,
        ]
    )
    found, _ = matcher.scan_array(values)
    assert sorted((n.kind, n.value, c) for n, c in found.items()) == [
        ("email", "john.smith@mail.example", 1),
        ("email", "élise.dupont@mail.example", 1),
        ("subject_token", tokens[1234], 1),
    ]
    raw = b"\x00" * 70_000 + b"JOHN.SMITH@mail.example," + tokens[2999].encode() + b"\xff"
    assert sorted(n.kind for n in matcher.scan_bytes(raw)) == ["email", "subject_token"]


def test_code_like_identifiers_count_only_in_their_delivered_case():
    traces = SubjectTraces("codes")
    traces.add("plaintext", "account_id", ["A0511150"])
    traces.add("plaintext", "iban", ["nl27 lake 0191 4226 91"])
    traces.add("plaintext", "email", ["Jane.Roe@mail.example"])
    matcher = TraceMatcher(traces.needles())
    # Seen at 10M: a lowercase hex hash inside snappy-compressed bytes, between tag bytes.
    compressed = b'\x1c37d3e153\x0e\xc55\x1ca0511150"\xde$\x04d3'
    assert not matcher.scan_bytes(compressed)
    assert not matcher.find_in_text("hash a0511150 end")
    found = matcher.scan_bytes(b'\x1cA0511150" NL27LAKE0191422691 JANE.ROE@MAIL.EXAMPLE')
    assert sorted(n.kind for n in found) == ["account_id", "email", "iban"]
    # Every delivered spelling of a code stays a needle of its own.
    ibans = {n.value for n in traces.needles() if n.kind == "iban"}
    assert {"nl27 lake 0191 4226 91", "NL27LAKE0191422691", "NL27 LAKE 0191 4226 91"} <= ibans
    assert sum(matcher.find_in_text("iban nl27 lake 0191 4226 91.").values()) == 1


def test_needles_longer_than_the_recursion_limit_are_found(tmp_path):
    # A subject's ciphertext can be thousands of characters long (a support note, a
    # quarantined record); the trie regex of the confirmation must not recurse per character.
    long_ciphertext = "A" + base64_of_bytes(6000)
    sibling = long_ciphertext[:4000] + "Zsibling"  # shares a 4,000-character prefix
    traces = SubjectTraces("long")
    traces.add("ciphertext", "note_enc", [long_ciphertext, sibling])
    traces.add("token", "subject_token", ["v1:" + "ab" * 16])
    matcher = TraceMatcher(traces.needles())
    window = b"x" + sibling.encode() + b" " + long_ciphertext.encode() + b" " + b"v1:" + b"ab" * 16
    assert sorted(matcher.scan_bytes(window).values()) == [1, 1, 1]
    values = pa.array(["nothing", long_ciphertext[:-1], f"note={long_ciphertext}", None])
    found, scanned = matcher.scan_array(values)
    assert scanned == 4 and sum(found.values()) == 1  # the truncated copy is no match
    pq.write_table(pa.table({"v": values}), tmp_path / "d.parquet")
    report = verify_erasure([traces], [tmp_path], base=tmp_path)
    assert not report.passed
    assert {(f.how, f.kind): f.occurrences for f in report.findings} == {("decoded", "note_enc"): 1}


def test_values_are_screened_in_runs_and_every_match_is_confirmed_in_its_value():
    from privacy_lakehouse.erasure_verifier import _RUN_BYTES, _value_runs

    token, email = "v1:" + "cd" * 16, "élise.dupont@mail.example"
    traces = SubjectTraces("runs")
    traces.add("token", "subject_token", [token])
    traces.add("plaintext", "email", [email])
    matcher = TraceMatcher(traces.needles())
    filler = [hashlib.sha256(str(i).encode()).hexdigest() * 3 for i in range(20_000)]
    values = list(filler)
    values[0] = token  # first value of the first run
    values[7_777] = "mail: ÉLISE.DUPONT@MAIL.EXAMPLE."  # case-folded beyond ASCII
    values[12_000] = "x" * (2 * _RUN_BYTES) + token  # one value longer than a run
    values[12_001], values[12_002] = token[:10], token[10:]  # split over two values: no match
    values[-1] = "last " + token  # last value of the last run
    values[5] = None
    array = pa.array(values, pa.string())
    runs, starts = _value_runs(array.cast(pa.large_string()))
    # The runs cover every value once, in order, as the same text.
    assert starts[0] == 0 and starts[-1] == len(values) and len(runs) > 10
    assert "".join(runs.to_pylist()) == "".join(v or "" for v in values)
    found, scanned = matcher.scan_array(array)
    assert scanned == len(values)
    assert {n.kind: c for n, c in found.items()} == {"subject_token": 3, "email": 1}
    found, _ = matcher.scan_array(array.slice(1, 11_999))  # an offset into the buffers
    assert {n.kind: c for n, c in found.items()} == {"email": 1}
    found, _ = matcher.scan_array(pa.array(["", None, ""]))
    assert not found


def base64_of_bytes(count: int) -> str:
    import base64

    return base64.b64encode(hashlib.sha256(b"seed").digest() * (count // 32 + 1))[:count].decode()


def test_a_clustered_table_loses_a_subject_by_rewriting_one_file_without_logging_it(tmp_path):
    from privacy_lakehouse.delta_writer import WriteSpec, write_model

    conn = duckdb.connect()
    conn.execute(
        "create view stage as select 'v1:' || md5(cast(i % 500 as varchar)) as subject_token, "
        "i as n, repeat('z', 100) || cast(i as varchar) as payload from range(60000) t(i)"
    )
    location = tmp_path / "clustered"
    spec = WriteSpec.from_config(
        {
            "stage": "stage",
            "location": str(location),
            "cluster_by": "subject_token",
            "target_file_size": 400_000,
            "stats_columns": ["n"],
            "model": "clustered",
        }
    )
    write_model(conn, spec)
    table = DeltaTable(str(location))
    files = [location / Path(p.removeprefix("file://")).name for p in table.file_uris()]
    assert len(files) >= 5
    ranges = sorted(
        (
            str(pq.ParquetFile(f).metadata.row_group(0).column(0).statistics.min),
            str(pq.ParquetFile(f).metadata.row_group(0).column(0).statistics.max),
        )
        for f in files
    )
    # Sorted: ranges only touch where one subject's rows continue in the next file.
    assert all(high <= low for (_, high), (low, _) in zip(ranges, ranges[1:], strict=False))
    middle = ranges[len(ranges) // 2]
    victim = next(
        token
        for (token,) in conn.execute(
            "select distinct subject_token from stage order by 1"
        ).fetchall()
        if middle[0] < token < middle[1]
    )
    removal = erasure.remove_rows(
        location, {"subject_token": [victim]}, scratch_root=tmp_path / "scratch", name="clustered"
    )
    assert removal.rows_deleted == 120 and removal.files_rewritten == 1
    assert removal.files_read <= 2 < removal.files_total
    after = DeltaTable(str(location))
    assert after.version() == removal.version_before + 1 == removal.version_after
    assert after.count() == 60000 - 120
    commit = (location / "_delta_log" / f"{after.version():020d}.json").read_text()
    assert victim not in commit and not TOKEN.search(commit)
    assert '"predicate"' not in commit and "privacy_lakehouse erasure" in commit
    stats = [
        json.loads(json.loads(line)["add"]["stats"])
        for line in commit.splitlines()
        if "add" in json.loads(line)
    ]
    assert stats and all(set(s["minValues"]) <= {"n"} for s in stats)
    assert not list((tmp_path / "scratch").glob("*"))
    remaining = after.to_pyarrow_table(columns=["subject_token"])["subject_token"]
    assert victim not in set(remaining.cast(pa.string()).to_pylist())
    history = erasure.purge_history(location)
    assert history["files_vacuumed"] == 1 and history["log_files_removed"] >= 2
    assert {p.name for p in location.glob("*.parquet")} == {
        Path(p.removeprefix("file://")).name for p in DeltaTable(str(location)).file_uris()
    }


def test_a_file_the_statistics_let_through_is_decoded_whole_only_when_it_holds_the_subject(
    tmp_path, monkeypatch
):
    from privacy_lakehouse.delta_writer import WriteSpec, write_model

    conn = duckdb.connect()
    conn.execute(
        "create view stage as select 'v1:' || md5(cast(i % 300 as varchar)) as subject_token, "
        "i as n, md5(cast(i as varchar)) || md5(cast(-i as varchar)) as payload "
        "from range(30000) t(i)"
    )
    location = tmp_path / "clustered"
    spec = {"stage": "stage", "location": str(location), "cluster_by": "subject_token"}
    write_model(conn, WriteSpec.from_config({**spec, "target_file_size": 200_000}))
    present = conn.execute("select min(subject_token) from stage").fetchone()[0]
    absent = present + "0"  # sorts right after a stored token: inside that file's min/max
    whole_reads = []
    read_table = erasure.pq.read_table
    monkeypatch.setattr(
        erasure.pq, "read_table", lambda path, **kw: whole_reads.append(path) or read_table(path)
    )
    rows, read, total = erasure.find_rows(location, {"subject_token": [absent]})
    assert rows is None and read >= 1 and total > 2 and whole_reads == []
    rows, read, _ = erasure.find_rows(location, {"subject_token": [present]})
    expected = conn.execute("select n from stage where subject_token = ?", [present]).fetchall()
    assert sorted(rows["n"].to_pylist()) == sorted(n for (n,) in expected) and len(expected) == 100
    assert len(whole_reads) == 1


def test_tables_are_erased_side_by_side_in_order_and_a_failure_waits_for_the_rest(monkeypatch):
    monkeypatch.setattr(erasure, "TABLE_THREADS", 4)
    monkeypatch.setattr(erasure.os, "cpu_count", lambda: 4)
    # Tables "a" and "b" each wait for the other: this passes only if they run at once.
    both_running = threading.Barrier(2, timeout=10)
    finished: list[str] = []

    def work(table: str) -> str:
        if table in ("a", "b"):
            both_running.wait()
        if table == "broken":
            raise erasure.ErasureError("this table failed")
        finished.append(table)
        return table.upper()

    assert erasure._per_table(work, ["a", "b", "c"]) == ["A", "B", "C"]
    finished.clear()
    both_running.reset()
    with pytest.raises(erasure.ErasureError, match="this table failed"):
        erasure._per_table(work, ["broken", "a", "b"])
    assert sorted(finished) == ["a", "b"]  # the other tables were not cut off
    monkeypatch.setattr(erasure, "TABLE_THREADS", 1)  # one at a time: plain loop, same results
    assert erasure._per_table(str.upper, ["x", "y"]) == ["X", "Y"]


def test_a_duckdb_file_is_searched_for_old_traces_only_when_nothing_was_deleted_from_it(
    tmp_path, monkeypatch
):
    """Deleting a subject's rows rebuilds the file without reading it byte by byte first (the
    rebuild happens anyway); a file that held none of the rows is searched, and rebuilt only
    when its freed blocks still hold a trace."""
    from privacy_lakehouse import erasure_verifier

    database = tmp_path / "serving.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute(
            "create table activity as select 'v1:tok' || (i % 3) as subject_token, i as n "
            "from range(3000) t(i)"
        )
    searched: list[str] = []
    found = {"traces": 0}

    def scan(path, matcher):
        searched.append(Path(path).name)
        return {"trace": found["traces"]} if found["traces"] else {}

    monkeypatch.setattr(erasure_verifier, "scan_file_bytes", scan)
    inode = database.stat().st_ino
    outcome = erasure._erase_from_duckdb(database, ["v1:tok1"], None, tmp_path / "ext")
    assert outcome["rows_deleted"] == 1000 and outcome["rebuilt"] and searched == []
    assert database.stat().st_ino != inode  # a fresh file took its place

    inode = database.stat().st_ino
    outcome = erasure._erase_from_duckdb(database, ["v1:gone"], None, tmp_path / "ext")
    assert outcome == {"rows_deleted": 0, "tables": {}, "rebuilt": False}
    assert searched == ["serving.duckdb"] and database.stat().st_ino == inode

    found["traces"] = 1
    outcome = erasure._erase_from_duckdb(database, ["v1:gone"], None, tmp_path / "ext")
    assert outcome["rebuilt"] and database.stat().st_ino != inode
    with duckdb.connect(str(database), read_only=True) as conn:
        kept = conn.execute("select count(*), count(distinct subject_token) from activity")
        assert kept.fetchone() == (2000, 2)
