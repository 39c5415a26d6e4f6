"""The audit trail end to end: every build, export, decryption and access decision leaves an
entry without personal data; tampering with any one entry is detected; privacy telemetry over
the log warns on unusual decryption and export volumes."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from deltalake import DeltaTable
from privacy_lakehouse import access, audit_log
from privacy_lakehouse.audit_log import AuditLog, canonical_json
from privacy_lakehouse.duckdb_setup import connect
from privacy_lakehouse.generate import iban_valid
from privacy_lakehouse.keyring import Keyring
from privacy_lakehouse.policy import load_policy
from privacy_lakehouse.settings import load_settings

from .conftest import clone_demo
from .dbt_helpers import environment, project_env, run_dbt

TOKEN = re.compile(r"v\d+:[0-9a-f]{32}")
TELEMETRY = "agg_privacy_activity_by_day"


def demo_log(demo) -> AuditLog:
    return AuditLog(demo.lake / "_audit" / "audit.jsonl")


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Build evidence
# ---------------------------------------------------------------------------------------------


def test_the_demo_build_left_one_build_entry_with_statuses_policy_and_key_versions(demo, tmp_path):
    invocation = demo.run_results["metadata"]["invocation_id"]
    (entry,) = [
        e
        for e in demo_log(demo).entries()
        if e.action == "build" and e.details["invocation_id"] == invocation
    ]
    # Project hooks (operation.*) run around the nodes and are not part of on-run-end's results.
    results = [
        r for r in demo.run_results["results"] if not r["unique_id"].startswith("operation.")
    ]
    built = {
        r["unique_id"].rsplit(".", 1)[-1]: r["status"]
        for r in results
        if r["unique_id"].split(".")[0] in ("model", "snapshot", "seed")
    }
    assert entry.details["models"] == built
    assert TELEMETRY in built and "dim_marketing_audience" in built
    assert sorted(entry.object) == sorted(built)
    assert sum(entry.details["statuses"].values()) == len(results)
    assert entry.details["failed"] == [] and entry.details["succeeded"] is True
    assert entry.details["command"] == "build"
    assert entry.policy_version == load_policy(demo.root / "privacy_policy.yml").version

    keys = tmp_path / "keys"
    shutil.copytree(demo.root / ".keys", keys)  # read the key versions without touching demo
    with environment({**project_env(demo.root), "PRIVACY_LAKEHOUSE_KEYS": str(keys)}):
        with Keyring.open(load_settings()) as keyring:
            status = keyring.status()
    recorded = entry.details["keys"]
    assert recorded["master_key_version"] == status["master_key"]["active_version"]
    assert recorded["salts"] == {
        s["salt"]: s["version"] for s in status["salts"] if s["state"] == "active"
    }
    assert recorded["salts"]["subject"] == 1


def test_export_entries_precede_their_build_entry(demo):
    entries = demo_log(demo).entries()
    invocation = demo.run_results["metadata"]["invocation_id"]
    mine = [e.action for e in entries if e.details.get("invocation_id") == invocation]
    assert mine.count("export") == 4  # one per purpose
    assert mine.index("build") == len(mine) - 1  # the build entry closes the run


def test_build_evidence_runs_last_whatever_imports_it_first():
    # rotation and duckdb_setup import build_evidence for its helpers, before any build.
    code = (
        "import privacy_lakehouse.build_evidence\n"
        "from privacy_lakehouse import hooks\n"
        "print(','.join(hooks.registered_hooks()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    order = out.stdout.strip().split(",")
    assert order[-1] == "build_evidence" and "serving" in order
    # The ledger records what the build ingested before retention deletes any of it.
    assert order[0] == "ingestion_ledger" and order.index("retention") > 0


def test_the_audit_log_holds_no_personal_data_or_tokens(demo):
    text = demo_log(demo).path.read_text()
    # Positive controls: the patterns do find what they look for where it exists.
    audience = demo.lake / "gold" / "dim_marketing_audience"
    conn = demo.duckdb()
    gold = conn.execute(f"select subject_token from delta_scan('{audience}')").fetchone()[0]
    conn.close()
    assert TOKEN.fullmatch(gold)
    landing = next((demo.landing / "core_banking" / "customers").glob("*.csv")).read_text()
    emails = set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", landing))
    customer_ids = set(re.findall(r"\bC\d{7}\b", landing))
    assert emails and customer_ids
    assert not TOKEN.search(text)
    assert not [value for value in emails | customer_ids if value in text]
    assert demo_log(demo).verify(demo_log(demo).read_head()).ok


# ---------------------------------------------------------------------------------------------
# Decryptions and access decisions
# ---------------------------------------------------------------------------------------------


def test_every_decryption_batch_is_audited_before_it_runs(demo, tmp_path):
    keys, lake = tmp_path / "keys", tmp_path / "lake"
    shutil.copytree(demo.root / ".keys", keys)
    env = {
        **project_env(demo.root),
        "PRIVACY_LAKEHOUSE_KEYS": str(keys),
        "PRIVACY_LAKEHOUSE_LAKE": str(lake),  # the audit log of this test, not the demo's
    }
    accounts = demo.lake / "bronze" / "raw_core_banking__accounts"
    sql = (
        "select subject_token, pl_decrypt(subject_token, iban_enc, ?) from "
        f"(select * from delta_scan('{accounts}') where iban_enc is not null limit 7)"
    )
    with environment(env):
        conn = connect(extension_dir=demo.lake / "_duckdb_extensions", functions=True)
        try:
            assert (lake / "_audit" / "audit.jsonl").read_text() == ""  # created, empty
            rows = conn.execute(sql, ["fraud_prevention"]).fetchall()
            with pytest.raises(duckdb.Error, match="not allowed"):
                conn.execute(sql, ["marketing"]).fetchall()
        finally:
            conn.close()
    assert len(rows) == 7 and all(iban_valid(iban.replace(" ", "")) for _, iban in rows)
    log = AuditLog(lake / "_audit" / "audit.jsonl")
    (entry,) = log.entries()  # the refused purpose decrypted nothing and wrote nothing
    assert entry.action == "decrypt" and entry.actor.startswith("duckdb:")
    assert entry.details == {"purpose": "fraud_prevention", "subjects": len({s for s, _ in rows})}
    assert not TOKEN.search(log.path.read_text())


def test_a_denied_query_leaves_an_audit_entry_naming_the_rule(demo, tmp_path, capsys):
    audit = tmp_path / "audit.jsonl"
    sql = "select country, customer_count from agg_customers_by_segment where age_band = '30-39'"
    argv = [sql, "--role", "bi_analyst", "--purpose", "analytics", "--audit-log", str(audit)]
    with environment(project_env(demo.root)):
        assert access.run(parse(access, argv)) == access.EXIT_DENIED
    err = capsys.readouterr().err
    assert "max_sensitivity" in err and "30-39" not in err
    (entry,) = AuditLog(audit).entries()
    assert (entry.action, entry.decision) == ("access_decision", "deny")
    assert entry.details["role"] == "bi_analyst"
    assert entry.details["rules_violated"] == ["max_sensitivity"]
    assert "agg_customers_by_segment.age_band" in entry.object


# ---------------------------------------------------------------------------------------------
# Tampering
# ---------------------------------------------------------------------------------------------


def verify(path: Path, capsys) -> tuple[int, str]:
    code = audit_log.run(parse(audit_log, ["--log", str(path), "verify"]))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def tampered_copies(lines: list[str]):
    """(description, seq expected to fail, new lines) for each way to tamper with each entry."""
    for index, line in enumerate(lines):
        entry = json.loads(line)
        seq = entry["seq"]
        edited = dict(entry, actor=entry["actor"] + "x")
        yield (
            f"modify seq {seq}",
            seq,
            lines[:index] + [canonical_json(edited)] + lines[index + 1 :],
        )
        if index + 1 < len(lines):
            yield f"remove seq {seq}", seq, lines[:index] + lines[index + 1 :]
            swapped = lines[:index] + [lines[index + 1], line] + lines[index + 2 :]
            yield f"swap seq {seq} and {seq + 1}", seq, swapped


def test_tampering_with_any_one_entry_of_the_demo_log_is_detected(demo, tmp_path, capsys):
    source = demo_log(demo)
    lines = source.path.read_text().splitlines()
    assert len(lines) >= 5
    path = tmp_path / "audit.jsonl"
    shutil.copy(source.head_path, tmp_path / "audit.jsonl.head")
    path.write_text("\n".join(lines) + "\n")
    assert verify(path, capsys)[0] == 0  # the control: an untouched copy verifies
    cases = 0
    for description, seq, copy in tampered_copies(lines):
        path.write_text("\n".join(copy) + "\n")
        code, message = verify(path, capsys)
        assert code == 1, description
        assert f"FAILED at seq {seq}" in message, (description, message)
        cases += 1
    # Removing the last entry leaves a valid chain: only the head anchor reveals it.
    path.write_text("\n".join(lines[:-1]) + "\n")
    code, message = verify(path, capsys)
    assert code == 1 and "truncated" in message
    assert cases == 3 * len(lines) - 2


def test_a_rehashed_forgery_is_caught_by_the_next_entry(demo, tmp_path, capsys):
    lines = demo_log(demo).path.read_text().splitlines()
    forged = json.loads(lines[1])
    forged["details"] = dict(forged["details"], rows_exported=0)
    body = {k: v for k, v in forged.items() if k != "entry_hash"}
    forged["entry_hash"] = audit_log.compute_entry_hash(body)
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join([lines[0], canonical_json(forged), *lines[2:]]) + "\n")
    code, message = verify(path, capsys)
    assert code == 1 and "FAILED at seq 3" in message


# ---------------------------------------------------------------------------------------------
# Privacy telemetry
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def telemetry_lake(demo, tmp_path_factory):
    """A clone whose audit log gets crafted activity, then the telemetry model rebuilt."""
    clone = clone_demo(demo, tmp_path_factory.mktemp("telemetry") / "privacy_lakehouse")
    log = AuditLog(clone.lake / "_audit" / "audit.jsonl")
    for _ in range(3):  # 900 subjects in a day: above the default threshold of 500
        log.append(
            actor="duckdb:night-batch",
            action="decrypt",
            decision="allow",
            policy_version=1,
            details={"purpose": "fraud_prevention", "subjects": 300},
        )
    log.append(
        actor="duckdb:investigator",
        action="decrypt",
        decision="allow",
        policy_version=1,
        details={"purpose": "fraud_prevention", "subjects": 20},
    )
    log.append(
        actor="serve:bulk-export",
        action="export",
        object=["dim_marketing_audience"],
        decision="allow",
        policy_version=1,
        details={"purpose": "marketing", "rows_exported": 2_000_000},
    )
    for _ in range(2):
        log.append(
            actor="analyst-1",
            action="access_decision",
            object=["agg_customers_by_segment.age_band"],
            decision="deny",
            policy_version=1,
            details={"role": "bi_analyst", "purpose": "analytics", "rules_violated": []},
        )
    result = run_dbt(clone.root, "build", "--select", TELEMETRY)
    return clone, result


def telemetry_tests(root: Path) -> dict[str, str]:
    results = json.loads((root / "target" / "run_results.json").read_text())["results"]
    return {
        r["unique_id"].split(".")[2]: r["status"]
        for r in results
        if r["unique_id"].startswith("test.") and TELEMETRY in r["unique_id"]
    }


def flag_statuses(tests: dict[str, str]) -> dict[str, str]:
    return {
        flag: status
        for name, status in tests.items()
        for flag in ("is_unusual_decryption", "is_unusual_export")
        if name.startswith(f"accepted_values_{TELEMETRY}_{flag}")
    }


def test_the_telemetry_tests_pass_on_the_demo(demo):
    statuses = {
        r["unique_id"].split(".")[2]: r["status"]
        for r in demo.run_results["results"]
        if r["unique_id"].startswith("test.") and TELEMETRY in r["unique_id"]
    }
    assert flag_statuses(statuses) == {"is_unusual_decryption": "pass", "is_unusual_export": "pass"}


def test_unusual_decryption_and_export_volumes_warn_without_failing_the_build(telemetry_lake):
    clone, result = telemetry_lake
    assert result.success  # warn, not fail
    tests = telemetry_tests(clone.root)
    assert flag_statuses(tests) == {"is_unusual_decryption": "warn", "is_unusual_export": "warn"}


def test_telemetry_counts_activity_per_actor_role_and_purpose(telemetry_lake):
    clone, _ = telemetry_lake
    table = DeltaTable(str(clone.lake / "gold" / TELEMETRY)).to_pyarrow_table().to_pylist()
    by_actor = {row["actor"]: row for row in table if not row["actor"].startswith("dbt:")}
    assert by_actor["duckdb:night-batch"]["decrypt_calls"] == 3
    assert by_actor["duckdb:night-batch"]["decrypted_subjects"] == 900
    assert by_actor["duckdb:night-batch"]["is_unusual_decryption"] is True
    assert by_actor["duckdb:investigator"]["decrypted_subjects"] == 20
    assert by_actor["duckdb:investigator"]["is_unusual_decryption"] is False
    assert by_actor["serve:bulk-export"]["rows_exported"] == 2_000_000
    assert by_actor["serve:bulk-export"]["is_unusual_export"] is True
    assert by_actor["analyst-1"]["role"] == "bi_analyst"
    assert by_actor["analyst-1"]["queries_denied"] == 2
    # The demo builds' own exports are counted too, and are not unusual.
    builds = [row for row in table if row["actor"].startswith("dbt:")]
    assert builds and sum(row["exports"] for row in builds) >= 4
    assert not any(row["is_unusual_export"] for row in builds)


def test_thresholds_are_vars(telemetry_lake):
    clone, _ = telemetry_lake
    raised = (
        "{telemetry_max_decrypted_subjects_per_day: 1000, "
        "telemetry_max_exported_rows_per_day: 5000000}"
    )
    run_dbt(clone.root, "build", "--select", TELEMETRY, "--vars", raised)
    assert flag_statuses(telemetry_tests(clone.root)) == {
        "is_unusual_decryption": "pass",
        "is_unusual_export": "pass",
    }
