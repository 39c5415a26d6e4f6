"""Key rotation on a clone of the demo lakehouse.

Salt rotation re-derives every token from bronze ciphertext, rewrites each table, links the new
subject tokens to the old data keys and records evidence; joins hold afterwards, also for a new
batch ingested with the new salt version. Salts without ciphertext are refused. Master-key
rotation rewraps keys only: its cost is the number of keys, whatever the number of rows."""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from privacy_lakehouse import duckdb_functions, rotation
from privacy_lakehouse import keyring as keyring_module
from privacy_lakehouse.audit_log import AuditLog
from privacy_lakehouse.generate import append_batch
from privacy_lakehouse.keyring import KeyDestroyedError, Keyring
from privacy_lakehouse.settings import load_settings

from .conftest import Demo, clone_demo
from .test_secrets_scan import SecretIndex, project_secrets, scan_tree

TOKEN = re.compile(r"v[0-9]+:[0-9a-f]{32}")
CUSTOMERS = "bronze/raw_core_banking__customers"


def subject_tables(demo: Demo) -> list[Path]:
    return [
        t for t in demo.tables() if "subject_token" in DeltaTable(str(t)).schema().to_arrow().names
    ]


def name_of(demo: Demo, table: Path) -> str:
    return table.relative_to(demo.lake).as_posix()


def token_prefixes(table: Path, column: str = "subject_token") -> set[str]:
    values = DeltaTable(str(table)).to_pyarrow_table(columns=[column])[column]
    return {value.split(":")[0] for value in pc.unique(values).to_pylist() if value is not None}


def row_count(table: Path) -> int:
    return DeltaTable(str(table)).to_pyarrow_dataset().count_rows()


def counts(demo: Demo) -> dict[str, int]:
    return {name_of(demo, table): row_count(table) for table in demo.tables()}


def audit_derived_tables(demo: Demo) -> set[str]:
    """Tables of models that read the audit log (directly or through other models)."""
    nodes = demo.manifest()["nodes"]
    derived: set[str] = set()
    changed = True
    while changed:
        changed = False
        for unique_id, node in nodes.items():
            parents = node.get("depends_on", {}).get("nodes", [])
            if unique_id not in derived and any(
                p.startswith("source.privacy_lakehouse.audit.") or p in derived for p in parents
            ):
                derived.add(unique_id)
                changed = True
    return {
        f"{nodes[u]['fqn'][1]}/{nodes[u]['name']}"
        for u in derived
        if nodes[u]["resource_type"] == "model"
    }


def snapshot_stats(demo: Demo) -> tuple[int, int, set[str]]:
    con = demo.warehouse()
    try:
        rows, subjects = con.execute(
            "select count(*), count(distinct subject_token) from snapshots.snap_customers"
        ).fetchone()
        prefixes = {
            row[0]
            for row in con.execute(
                "select distinct regexp_extract(subject_token, '^(v[0-9]+):', 1) "
                "from snapshots.snap_customers"
            ).fetchall()
        }
        return rows, subjects, prefixes
    finally:
        con.close()


def open_keyring(demo: Demo) -> Keyring:
    with demo.env():
        return Keyring.open(load_settings())


def rotate(demo: Demo, name: str, **options: Any) -> dict[str, Any]:
    with demo.env():
        return rotation.rotate_salt_in_lake(name, **options)


def files_in_token_order(table: Path) -> list[bool]:
    """Per active data file: are its subject tokens in ascending order (nulls last)?"""
    order = []
    for uri in DeltaTable(str(table)).file_uris():
        tokens = pq.read_table(uri, columns=["subject_token"])["subject_token"].to_pylist()
        present = [t for t in tokens if t is not None]
        order.append(present == sorted(present) and tokens[: len(present)] == present)
    return order


class ProgressLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def landing_customer_ids(demo: Demo, limit: int = 80) -> list[str]:
    con = demo.duckdb()
    return [
        row[0]
        for row in con.execute(
            "select distinct trim(customer_id) from read_csv(?, header=true, all_varchar=true) "
            "where nullif(trim(customer_id), '') is not null order by 1 limit ?",
            [str(demo.landing / "core_banking/customers/customers_b001.csv"), limit],
        ).fetchall()
    ]


@dataclass
class RotatedLake:
    lake: Demo
    counts_before: dict[str, int]
    prefixes_before: dict[str, set[str]]
    snapshot_before: tuple[int, int, set[str]]
    customer_id: str  # a customer with card transactions
    old_token: str
    transactions_before: int
    subject: dict[str, Any]
    email: dict[str, Any]
    counts_after: dict[str, int] = field(default_factory=dict)
    prefixes_after: dict[str, set[str]] = field(default_factory=dict)
    snapshot_after: tuple[int, int, set[str]] = (0, 0, set())
    silver_customers_after_batch: int = 0
    progress: list[str] = field(default_factory=list)  # the subject rotation's progress lines
    bronze_file_order: dict[str, list[bool]] = field(default_factory=dict)
    lake_entries_after: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def rotated(demo, tmp_path_factory) -> RotatedLake:
    """The subject salt rotated with a rebuild; then a new landing batch arrives and the email
    salt is rotated with a rebuild, which ingests the batch under the new versions."""
    lake = clone_demo(demo, tmp_path_factory.mktemp("rotation") / "privacy_lakehouse")
    tables = subject_tables(lake)
    ring = open_keyring(lake)
    silver = lake.lake / "silver"
    con = lake.duckdb()
    for customer_id in landing_customer_ids(lake):
        old_token = ring.token(customer_id, "subject")
        transactions = con.execute(
            f"select count(*) from delta_scan('{silver}/stg_cards__transactions') "
            "where subject_token = ?",
            [old_token],
        ).fetchone()[0]
        if transactions:
            break
    ring.close()
    progress = ProgressLines()
    package_logger = logging.getLogger("privacy_lakehouse")
    level = package_logger.level
    package_logger.addHandler(progress)
    package_logger.setLevel(logging.INFO)
    try:
        state = RotatedLake(
            lake=lake,
            counts_before=counts(lake),
            prefixes_before={name_of(lake, t): token_prefixes(t) for t in tables},
            snapshot_before=snapshot_stats(lake),
            customer_id=customer_id,
            old_token=old_token,
            transactions_before=transactions,
            subject=rotate(lake, "subject", rebuild=True),
            email={},
        )
    finally:
        package_logger.removeHandler(progress)
        package_logger.setLevel(level)
    state.progress = progress.lines
    # Bronze is append-only: the rebuild does not rewrite it, so its order is the rotation's.
    state.bronze_file_order = {
        name_of(lake, t): files_in_token_order(t) for t in tables if "/bronze/" in str(t)
    }
    state.lake_entries_after = {entry.name for entry in lake.lake.iterdir()}
    state.counts_after = counts(lake)
    state.prefixes_after = {name_of(lake, t): token_prefixes(t) for t in tables}
    state.snapshot_after = snapshot_stats(lake)
    append_batch(lake.landing, batch=3, transactions=400)
    state.email = rotate(lake, "email", rebuild=True)
    state.silver_customers_after_batch = row_count(silver / "stg_core_banking__customers")
    return state


def test_every_subject_token_moves_to_the_new_version_and_no_row_is_lost(rotated):
    assert rotated.subject["version_before"] == 1 and rotated.subject["version_after"] == 2
    assert set(rotated.prefixes_before) >= {CUSTOMERS, "bronze/raw_quarantine__records",
                                            "silver/stg_cards__transactions",
                                            "gold/fct_card_activity"}  # fmt: skip
    assert all(prefixes == {"v1"} for prefixes in rotated.prefixes_before.values())
    assert all(prefixes == {"v2"} for prefixes in rotated.prefixes_after.values())
    # After the rebuild every table has the same rows: joins, consent filters and k-thresholds
    # all match on subject tokens, so a broken join would change a count. Marts over the audit
    # log change with any build and are left out.
    audit_marts = audit_derived_tables(rotated.lake)
    assert audit_marts <= {"gold/agg_privacy_activity_by_day"}
    assert {t: n for t, n in rotated.counts_after.items() if t not in audit_marts} == {
        t: n for t, n in rotated.counts_before.items() if t not in audit_marts
    }
    rewritten = {entry["table"]: entry for entry in rotated.subject["tables_rewritten"]}
    assert set(rewritten) == set(rotated.prefixes_before) | {"warehouse:snapshots.snap_customers"}
    for table, entry in rewritten.items():
        if not table.startswith("warehouse:"):
            assert entry["rows"] == entry["rows_retokenized"] == rotated.counts_before[table]
            assert entry["delta_version_after"] == entry["delta_version_before"] + 1
    # The snapshot keeps its history: same rows, same subjects, now under the new version.
    rows, subjects, prefixes = rotated.snapshot_after
    assert (rows, subjects) == rotated.snapshot_before[:2] and prefixes == {"v2"}
    for evidence in (rotated.subject, rotated.email):
        assert evidence["rebuild"]["success"] is True
        assert not {"error", "fail"} & set(evidence["rebuild"]["node_statuses"])


def test_rewritten_tables_stay_clustered_by_the_new_subject_tokens(rotated):
    """Erasure prunes files by subject token: without the sort, rows would keep the old tokens'
    order and every subject would spread over every file of an append-only table."""
    order = rotated.bronze_file_order
    assert {CUSTOMERS, "bronze/raw_cards__transactions"} <= set(order)
    assert all(order.values()) and all(all(files) for files in order.values())
    # The rewrite's spill folder is gone, and nothing else was left in the lake.
    assert not {e for e in rotated.lake_entries_after if e.startswith(rotation.SPILL_PREFIX)}


def test_progress_lines_name_tables_and_counts_never_tokens_or_values(rotated):
    lines = rotated.progress
    rewriting = [line for line in lines if ": rewriting " in line]
    assert any(line.startswith("bronze/raw_cards__transactions: rewriting ") for line in rewriting)
    assert all("sorted by subject_token" in line for line in rewriting)
    assert any("tokens mapped to version 2" in line for line in lines)
    assert not [line for line in lines if TOKEN.search(line) or rotated.customer_id in line]


def test_a_customers_transactions_still_join_their_customer_row(rotated):
    lake, silver, gold = rotated.lake, rotated.lake.lake / "silver", rotated.lake.lake / "gold"
    ring = open_keyring(lake)
    try:
        new_token = ring.token(rotated.customer_id, "subject")
    finally:
        ring.close()
    assert new_token.startswith("v2:") and new_token != rotated.old_token
    con = lake.duckdb()

    def rows(sql: str) -> int:
        return con.execute(sql, [new_token]).fetchone()[0]

    assert rows(f"select count(*) from delta_scan('{silver}/stg_core_banking__customers') "
                "where subject_token = ?") == 1  # fmt: skip
    # The batch built after the rotation may add transactions; none may be lost.
    assert rows(f"select count(*) from delta_scan('{silver}/stg_cards__transactions') "
                "where subject_token = ?") >= rotated.transactions_before > 0  # fmt: skip
    assert (
        con.execute(
            f"select count(*) from delta_scan('{silver}/stg_cards__transactions') where "
            "subject_token = ?",
            [rotated.old_token],
        ).fetchone()[0]
        == 0
    )
    # is_foreign compares with the customer's home country: null unless the customer joined.
    activity, joined = con.execute(
        f"select count(*), count(is_foreign) from delta_scan('{gold}/fct_card_activity') "
        "where subject_token = ?",
        [new_token],
    ).fetchone()
    assert activity > 0 and joined == activity


def test_joins_hold_after_a_new_batch_is_ingested_with_the_new_version(rotated):
    lake, silver = rotated.lake, rotated.lake.lake / "silver"
    con = lake.duckdb()
    # The appended batch updates customers but adds none: a token mismatch would add customers.
    assert (
        rotated.silver_customers_after_batch
        == rotated.counts_before["silver/stg_core_banking__customers"]
    )
    total, joined = con.execute(
        "select count(*), count(c.subject_token) "
        f"from delta_scan('{silver}/stg_cards__transactions') as t "
        f"left join delta_scan('{silver}/stg_core_banking__customers') as c using (subject_token)"
    ).fetchone()
    assert total > rotated.counts_before["silver/stg_cards__transactions"] and joined == total
    rows, subjects, prefixes = snapshot_stats(lake)
    assert subjects == rotated.silver_customers_after_batch and prefixes == {"v2"}
    assert rows >= rotated.snapshot_before[0]
    assert {p for t in subject_tables(lake) for p in token_prefixes(t)} == {"v2"}


def test_tokens_equal_a_fresh_tokenization_of_the_landing_files(rotated):
    """The map reproduced the bronze models' normalisation exactly (subject and email)."""
    lake = rotated.lake
    ring = open_keyring(lake)
    con = lake.duckdb()
    duckdb_functions.register(con, ring)
    try:
        landing = con.execute(
            "select list(distinct pl_token(nullif(trim(customer_id), ''), 'subject')), "
            "list(distinct pl_token(lower(trim(email)), 'email')) "
            "from read_csv(?, header=true, all_varchar=true, union_by_name=true) "
            "where nullif(trim(customer_id), '') is not null",
            [str(lake.landing / "core_banking/customers/*.csv")],
        ).fetchone()
        bronze = con.execute(
            "select list(distinct subject_token), list(distinct email_token) "
            f"from delta_scan('{lake.lake / CUSTOMERS}')"
        ).fetchone()
    finally:
        ring.close()
    assert set(landing[0]) == set(bronze[0]) and len(bronze[0]) >= 400
    assert set(bronze[1]) - {None} <= set(landing[1]) and len(set(bronze[1]) - {None}) >= 400
    assert rotated.email["version_after"] == 2
    assert all(token.startswith("v2:") for token in bronze[1] if token)


def test_ciphertext_is_rebound_to_the_new_token_and_old_versions_still_open(rotated):
    lake = rotated.lake
    table = lake.lake / CUSTOMERS
    ring = open_keyring(lake)
    try:
        current = DeltaTable(str(table)).to_pyarrow_table(columns=["subject_token",
                                                                    "customer_id_enc"])  # fmt: skip
        plain = ring.decrypt_many(
            current["subject_token"], current["customer_id_enc"], "erasure_verification", "test"
        ).to_pylist()
        assert all(p is not None for p in plain)
        assert ring.tokens(pa.array(plain), "subject").to_pylist() == (
            current["subject_token"].to_pylist()
        )
        # Version 0 (before the rotation) holds old tokens and their ciphertext: same data key.
        original = DeltaTable(str(table), version=0).to_pyarrow_table(
            columns=["subject_token", "customer_id_enc"]
        )
        assert {t[:3] for t in original["subject_token"].to_pylist()} == {"v1:"}
        old_plain = ring.decrypt_many(
            original["subject_token"], original["customer_id_enc"], "erasure_verification", "t"
        ).to_pylist()
        assert set(old_plain) <= set(plain) and None not in old_plain
    finally:
        ring.close()


def test_evidence_and_audit_hold_versions_and_counts_never_values(rotated):
    lake = rotated.lake
    evidence_files = sorted((lake.lake / "_evidence" / "rotation").glob("*.json"))
    documents = [json.loads(path.read_text()) for path in evidence_files]
    by_salt = {doc["salt"]: doc for doc in documents}
    assert by_salt["subject"]["version_after"] == 2 and by_salt["email"]["version_after"] == 2
    assert by_salt["subject"]["subject_token_links"]["links_added"] >= 400
    assert by_salt["subject"]["rows_rewritten"] == sum(
        entry["rows"] for entry in by_salt["subject"]["tables_rewritten"]
    )
    log = AuditLog(lake.lake / "_audit" / "audit.jsonl")
    assert log.verify().ok
    rotations = [e for e in log.entries() if e.action == "key_rotation"]
    assert [e.details["salt"] for e in rotations] == ["subject", "email"]
    assert CUSTOMERS in rotations[0].object
    decrypts = [e for e in log.entries() if e.action == "decrypt"]
    assert sum(
        e.details["subjects"] for e in decrypts if e.details["purpose"] == "key_rotation"
    ) == (by_salt["subject"]["subjects_decrypted"] + by_salt["email"]["subjects_decrypted"])
    texts = [path.read_text() for path in evidence_files] + [log.path.read_text()]
    assert not [m for text in texts for m in TOKEN.findall(text)]
    with lake.env():
        index = SecretIndex(project_secrets(lake.root))
    assert scan_tree(lake.lake / "_evidence", index, skip=())["findings"] == {}
    assert scan_tree(lake.lake / "_audit", index, skip=())["findings"] == {}
    # The rewrite's commits record no predicate and keep statistics off token columns.
    log_dir = lake.lake / CUSTOMERS / "_delta_log"
    commit = [json.loads(line) for line in (log_dir / "00000000000000000001.json").open()]
    info = next(action["commitInfo"] for action in commit if "commitInfo" in action)
    assert "predicate" not in info.get("operationParameters", {})
    for action in commit:
        if "add" in action and action["add"].get("stats"):
            assert "subject_token" not in json.loads(action["add"]["stats"]).get("minValues", {})


@pytest.mark.parametrize(
    "salt, reason",
    [
        ("tombstone", "tombstone tokens must outlive every rotation"),
        ("record", "record hashes identify landing rows"),
        ("account", "no ciphertext"),
        ("device", "no ciphertext"),
        ("nonexistent", "no bronze ciphertext is known"),
    ],
)
def test_salts_without_ciphertext_are_refused_and_nothing_changes(rotated, capsys, salt, reason):
    lake = rotated.lake
    versions = {t.name: DeltaTable(str(t)).version() for t in lake.tables()}
    ring = open_keyring(lake)
    salts_before = ring.status()["salts"]
    ring.close()
    with pytest.raises(rotation.RotationRefused, match=reason):
        rotate(lake, salt)
    parser = argparse.ArgumentParser()
    keyring_module.add_arguments(parser)
    with lake.env():
        code = keyring_module.run(parser.parse_args(["rotate-salt", salt]))
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and reason in err
    ring = open_keyring(lake)
    assert ring.status()["salts"] == salts_before
    ring.close()
    assert {t.name: DeltaTable(str(t)).version() for t in lake.tables()} == versions


def test_erasure_by_the_new_token_reaches_the_one_data_key(rotated):
    """Runs last in this module: it shreds one subject of the rotated lake."""
    table = rotated.lake.lake / CUSTOMERS
    current = DeltaTable(str(table)).to_pyarrow_table(columns=["subject_token", "customer_id_enc"])
    original = DeltaTable(str(table), version=0).to_pyarrow_table(
        columns=["subject_token", "customer_id_enc"]
    )
    ring = open_keyring(rotated.lake)
    try:
        new_token = ring.token(rotated.customer_id, "subject")
        # One key behind both tokens: destroying it by the new token is the whole erasure.
        assert ring.destroy_subject_key(new_token)["data_keys_destroyed"] == 1
        for rows, token in ((current, new_token), (original, rotated.old_token)):
            mine = rows.filter(pc.equal(rows["subject_token"], token))
            assert mine.num_rows >= 1
            with pytest.raises(KeyDestroyedError):
                ring.decrypt(token, mine["customer_id_enc"][0].as_py(), "erasure_verification", "t")
        # Everyone else still decrypts, in the current and in the old version.
        for rows, token in ((current, new_token), (original, rotated.old_token)):
            others = rows.filter(pc.not_equal(rows["subject_token"], token))
            plain = ring.decrypt_many(
                others["subject_token"], others["customer_id_enc"], "erasure_verification", "t"
            )
            assert others.num_rows >= 400 and plain.null_count == 0
    finally:
        ring.close()


# ---- on private clones -----------------------------------------------------------------------


def delta_state(demo: Demo) -> dict[str, tuple[int, list[str], list[str]]]:
    """Per table: version, data files, log files (what a rewrite would change)."""
    return {
        name_of(demo, table): (
            DeltaTable(str(table)).version(),
            sorted(DeltaTable(str(table)).file_uris()),
            sorted(p.name for p in (table / "_delta_log").iterdir()),
        )
        for table in demo.tables()
    }


def test_unmappable_tokens_refuse_the_rotation_before_anything_changes(demo_copy):
    consent = demo_copy.lake / "bronze" / "raw_consent__events"
    row = DeltaTable(str(consent)).to_pyarrow_table().slice(0, 1)
    ring = open_keyring(demo_copy)
    stranger = ring.token("not-a-customer-of-this-bank", "subject")
    ring.close()
    row = row.set_column(row.schema.get_field_index("subject_token"), "subject_token",
                         pa.array([stranger]))  # fmt: skip
    write_deltalake(str(consent), row, mode="append")
    before = delta_state(demo_copy)
    with pytest.raises(rotation.RotationError, match=r"raw_consent__events: 1\b") as failure:
        rotate(demo_copy, "subject")
    assert "Nothing was changed" in str(failure.value) and stranger not in str(failure.value)
    assert delta_state(demo_copy) == before
    ring = open_keyring(demo_copy)
    assert [
        (s["version"], s["state"]) for s in ring.status()["salts"] if s["salt"] == "subject"
    ] == [(1, "active")]
    ring.close()


def test_a_tampered_ciphertext_stops_the_rotation_before_anything_changes(demo_copy):
    customers = demo_copy.lake / CUSTOMERS
    rows = DeltaTable(str(customers)).to_pyarrow_table()
    ciphertexts = rows["customer_id_enc"].to_pylist()
    # Flip one character of the sealed bytes (after the format byte and nonce).
    ciphertexts[0] = (
        ciphertexts[0][:30] + ("A" if ciphertexts[0][30] != "A" else "B") + (ciphertexts[0][31:])
    )
    index = rows.schema.get_field_index("customer_id_enc")
    rows = rows.set_column(index, "customer_id_enc", pa.array(ciphertexts))
    write_deltalake(str(customers), rows, mode="overwrite")
    before = delta_state(demo_copy)
    with pytest.raises(rotation.RotationError) as failure:
        rotate(demo_copy, "subject")
    message = str(failure.value)
    assert "TamperedCiphertextError" in message and "Nothing was changed" in message
    assert ciphertexts[0] not in message and rows["subject_token"][0].as_py() not in message
    assert delta_state(demo_copy) == before
    ring = open_keyring(demo_copy)
    assert [s["version"] for s in ring.status()["salts"] if s["salt"] == "subject"] == [1]
    ring.close()


def serving_token_prefixes(demo: Demo) -> set[str]:
    prefixes = set()
    for path in sorted((demo.lake / "serving").glob("*.duckdb")):
        con = duckdb.connect(str(path), read_only=True)
        try:
            for schema, table in con.execute(
                "select schema_name, table_name from duckdb_columns() "
                "where column_name = 'subject_token'"
            ).fetchall():
                prefixes |= {
                    row[0]
                    for row in con.execute(
                        "select distinct regexp_extract(subject_token, '^(v[0-9]+):', 1) "
                        f'from "{schema}"."{table}"'
                    ).fetchall()
                }
        finally:
            con.close()
    return prefixes


def test_a_half_done_rotation_is_resumed_and_guards_destruction(demo, demo_copy, capsys):
    # The clone has no target/: give it the manifest a build leaves, which serving reads.
    (demo_copy.root / "target").mkdir()
    shutil.copy(demo.root / "target" / "manifest.json", demo_copy.root / "target")
    assert serving_token_prefixes(demo_copy) == {"v1"}  # the serving files hold tokens
    # A crash right after the key store switched: tables still hold version-1 tokens.
    ring = open_keyring(demo_copy)
    ring.rotate_salt("subject", grace=timedelta(0))
    ring.close()
    # The crashed run's sort had spilled: the resumed run removes what it left.
    stale = demo_copy.lake / f"{rotation.SPILL_PREFIX}crashed"
    stale.mkdir()
    (stale / "duckdb_temp_storage-0.tmp").write_bytes(b"\0" * 64)
    with demo_copy.env(), pytest.raises(rotation.RotationError, match="subject v1"):
        rotation.destroy_retired_salts_in_lake()
    parser = argparse.ArgumentParser()
    keyring_module.add_arguments(parser)
    with demo_copy.env():
        code = keyring_module.run(parser.parse_args(["rotate-salt", "subject", "--resume"]))
    out, _ = capsys.readouterr()
    resumed = json.loads(out)
    assert code == 0 and resumed["event"] == "salt_rotation_resumed"
    assert resumed["version_after"] == 2 and resumed["version_before"] is None
    assert {p for t in subject_tables(demo_copy) for p in token_prefixes(t)} == {"v2"}
    assert not stale.exists() and not list(demo_copy.lake.glob(rotation.SPILL_PREFIX + "*"))
    # Serving files (copies of gold) were republished with the new tokens, without a build.
    assert resumed["serving_files"]["republished"]
    assert serving_token_prefixes(demo_copy) == {"v2"}
    # Resumed again, it finds nothing to do and says so before decrypting anything.
    audit = demo_copy.lake / "_audit" / "audit.jsonl"
    entries = len(audit.read_text().splitlines())
    with demo_copy.env():
        code = keyring_module.run(parser.parse_args(["rotate-salt", "subject", "--resume"]))
    assert code != 0 and "nothing to resume" in capsys.readouterr().err
    assert len(audit.read_text().splitlines()) == entries
    with demo_copy.env():
        code = keyring_module.run(parser.parse_args(["destroy-retired"]))
    destroyed = json.loads(capsys.readouterr().out)
    assert code == 0 and destroyed["destroyed"][0]["salt"] == "subject"
    ring = open_keyring(demo_copy)
    states = {(s["salt"], s["version"]): s["state"] for s in ring.status()["salts"]}
    ring.close()
    assert states[("subject", 1)] == "destroyed" and states[("subject", 2)] == "active"


def test_master_key_rotation_cost_counts_keys_not_rows(demo_copy, capsys):
    lake = demo_copy
    before = delta_state(lake)
    store = lake.root / ".keys" / "keyring.sqlite"
    ring = open_keyring(lake)
    status = ring.status()
    ring.close()
    live_salts = sum(1 for s in status["salts"] if s["state"] != "destroyed")
    data_keys = status["data_keys"]["active"]
    rows = sum(row_count(table) for table in lake.tables("bronze"))
    assert rows > 10 * data_keys > 0  # many rows per key: a per-row cost would show
    parser = argparse.ArgumentParser()
    keyring_module.add_arguments(parser)
    with lake.env():
        code = keyring_module.run(parser.parse_args(["rotate-master"]))
    first = json.loads(capsys.readouterr().out)
    assert code == 0
    assert first["data_keys_rewrapped"] == data_keys
    assert first["salt_versions_rewrapped"] == live_salts
    assert delta_state(lake) == before  # no table version, data file or log file changed
    assert Path(first["evidence_file"]).is_file()
    # Twice the rows, same keys: the next rotation rewraps exactly as many keys.
    transactions = lake.lake / "bronze" / "raw_cards__transactions"
    write_deltalake(str(transactions), DeltaTable(str(transactions)).to_pyarrow_table(),
                    mode="append")  # fmt: skip
    grown = delta_state(lake)
    with lake.env():
        assert keyring_module.run(parser.parse_args(["rotate-master"])) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["master_key_version_after"] == 3
    assert (second["data_keys_rewrapped"], second["salt_versions_rewrapped"]) == (
        data_keys,
        live_salts,
    )
    assert delta_state(lake) == grown
    # Every subject still decrypts under the new master key.
    ring = open_keyring(lake)
    try:
        customers = DeltaTable(str(lake.lake / CUSTOMERS)).to_pyarrow_table()
        plain = ring.decrypt_many(
            customers["subject_token"], customers["customer_id_enc"], "erasure_verification", "t"
        )
        assert plain.null_count == 0
    finally:
        ring.close()
    assert store.is_file()
    entries = AuditLog(lake.lake / "_audit" / "audit.jsonl").entries()
    assert [
        e.details["master_key_version_after"] for e in entries if e.action == "key_rotation"
    ] == [
        2,
        3,
    ]


def test_running_out_of_memory_says_which_setting_to_raise(demo_copy, monkeypatch):
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_DUCKDB_MEMORY_LIMIT", "1MB")
    ring = open_keyring(demo_copy)
    states_before = ring.status()["salts"]
    ring.close()
    with pytest.raises(rotation.RotationError) as refused:
        rotate(demo_copy, "subject")
    message = str(refused.value)
    assert "ran out of memory" in message and "PRIVACY_LAKEHOUSE_DUCKDB_MEMORY_LIMIT=1MB" in message
    assert "Nothing was changed." in message and not TOKEN.search(message)
    ring = open_keyring(demo_copy)
    assert ring.status()["salts"] == states_before
    ring.close()
