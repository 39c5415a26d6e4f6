"""The audit log: hash chain, tamper detection, anchors, the personal-data guard, concurrency."""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
from datetime import datetime
from pathlib import Path

import pytest
from privacy_lakehouse import audit_log
from privacy_lakehouse.audit_log import (
    GENESIS_HASH,
    AuditLog,
    AuditLogCorrupted,
    AuditLogError,
    HeadAnchor,
    PersonalDataRejected,
    canonical_json,
    compute_entry_hash,
)

ENTRY_COUNT = 6


def _append_sample(log: AuditLog, index: int):
    actions = ["build", "access_decision", "decrypt", "key_rotation", "retention", "erasure"]
    return log.append(
        actor="svc_build" if index % 2 == 0 else "analyst_7",
        action=actions[index % len(actions)],
        object=[f"gold_table_{index}", f"gold_table_{index}.segment"],
        decision=["allow", "deny", "n.a."][index % 3],
        policy_version=1,
        details={"rows": 100 + index, "delta_version": index, "key_version": "v2"},
    )


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path / "_audit" / "audit.jsonl")
    for index in range(ENTRY_COUNT):
        _append_sample(audit, index)
    return audit


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text(encoding="utf-8").splitlines()


def _write_lines(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _rehash(record: dict) -> dict:
    body = {key: value for key, value in record.items() if key != "entry_hash"}
    return dict(body, entry_hash=compute_entry_hash(body))


# -- the chain ---------------------------------------------------------------------------------


def test_appends_form_a_hash_chain_with_the_documented_fields(log: AuditLog):
    entries = log.entries()
    assert [entry.seq for entry in entries] == list(range(1, ENTRY_COUNT + 1))
    assert entries[0].prev_hash == GENESIS_HASH
    for previous, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev_hash == previous.entry_hash
    for line in _lines(log):
        record = json.loads(line)
        assert set(record) == set(audit_log.ENTRY_FIELDS)
        body = {key: value for key, value in record.items() if key != "entry_hash"}
        expected = hashlib.sha256(audit_log.HASH_DOMAIN + canonical_json(body).encode()).hexdigest()
        assert record["entry_hash"] == expected
        assert record["ts"].endswith("Z")
        assert datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).utcoffset().seconds == 0
    third = entries[2]
    assert third.action == "decrypt"
    assert third.object == ("gold_table_2", "gold_table_2.segment")
    assert third.decision == "n.a."
    assert third.details == {"rows": 102, "delta_version": 2, "key_version": "v2"}


def test_append_returns_the_head_and_writes_it_next_to_the_log(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.jsonl")
    first = log.append(actor="svc", action="build", details={"models": 3})
    second = log.append(actor="svc", action="export", decision="allow", details={"rows": 10})
    assert first.anchor == HeadAnchor(count=1, head_hash=first.entry_hash)
    assert second.anchor == HeadAnchor(count=2, head_hash=second.entry_hash)
    assert log.read_head() == second.anchor
    assert json.loads(log.head_path.read_text()) == {"count": 2, "head_hash": second.entry_hash}


def test_a_valid_log_verifies_with_and_without_anchor(log: AuditLog):
    result = log.verify()
    assert (result.ok, result.entries_checked, result.first_bad_seq) == (True, ENTRY_COUNT, None)
    assert log.verify(log.read_head()).ok


def test_an_old_anchor_stays_valid_as_the_log_grows(log: AuditLog):
    old_anchor = log.entries()[2].anchor
    _append_sample(log, 99)
    result = log.verify(old_anchor)
    assert result.ok and result.entries_checked == ENTRY_COUNT + 1


def test_an_empty_or_missing_log_verifies(tmp_path: Path):
    log = AuditLog(tmp_path / "none.jsonl")
    assert log.verify().ok and log.verify().entries_checked == 0
    assert log.entries() == []


# -- tampering ---------------------------------------------------------------------------------

TAMPERED_VALUES = {
    "actor": "someone_else",
    "action": "export",
    "object": ["gold_other"],
    "decision": "allow",
    "policy_version": 2,
    "details": {"rows": 1},
    "ts": "2020-01-01T00:00:00.000000Z",
    "prev_hash": "f" * 64,
    "entry_hash": "e" * 64,
}


@pytest.mark.parametrize("field", sorted(TAMPERED_VALUES))
@pytest.mark.parametrize("seq", [1, 3, ENTRY_COUNT])
def test_modifying_any_field_of_any_entry_is_detected(log: AuditLog, field: str, seq: int):
    lines = _lines(log)
    record = json.loads(lines[seq - 1])
    if record[field] == TAMPERED_VALUES[field]:
        record[field] = "other_value"
    else:
        record[field] = TAMPERED_VALUES[field]
    lines[seq - 1] = canonical_json(record)
    _write_lines(log, lines)

    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == seq
    assert result.entries_checked == seq - 1
    assert f"seq {seq}" in result.reason
    assert "someone_else" not in result.reason and "gold_other" not in result.reason


def test_modifying_the_seq_field_is_detected(log: AuditLog):
    lines = _lines(log)
    record = json.loads(lines[3])
    record["seq"] = 40
    lines[3] = canonical_json(record)
    _write_lines(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_a_modified_and_rehashed_entry_breaks_the_link_to_its_successor(log: AuditLog):
    lines = _lines(log)
    record = json.loads(lines[1])
    record["details"] = {"rows": 0}
    lines[1] = canonical_json(_rehash(record))
    _write_lines(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "entry_hash of seq 2" in result.reason


def test_a_whitespace_change_is_detected(log: AuditLog):
    lines = _lines(log)
    lines[2] = json.dumps(json.loads(lines[2]), sort_keys=True)  # same content, other spacing
    _write_lines(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "canonical" in result.reason


@pytest.mark.parametrize("removed_seq", [1, 3, ENTRY_COUNT - 1])
def test_removing_an_entry_is_detected(log: AuditLog, removed_seq: int):
    lines = _lines(log)
    del lines[removed_seq - 1]
    _write_lines(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, removed_seq)
    assert f"seq {removed_seq} is missing" in result.reason


@pytest.mark.parametrize("first", [1, 4])
def test_swapping_two_entries_is_detected(log: AuditLog, first: int):
    lines = _lines(log)
    lines[first - 1], lines[first] = lines[first], lines[first - 1]
    _write_lines(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, first)


def _forged(after: dict, seq: int, prev_hash: str) -> str:
    body = {
        "seq": seq,
        "ts": "2030-01-01T00:00:00.000000Z",
        "actor": "intruder",
        "action": "erasure",
        "object": ["gold_customers"],
        "decision": "n.a.",
        "policy_version": after["policy_version"],
        "details": {"subjects": 0},
        "prev_hash": prev_hash,
    }
    return canonical_json(dict(body, entry_hash=compute_entry_hash(body)))


def test_a_forged_entry_appended_without_the_right_prev_hash_is_detected(log: AuditLog):
    lines = _lines(log)
    last = json.loads(lines[-1])
    lines.append(_forged(last, ENTRY_COUNT + 1, prev_hash="a" * 64))
    _write_lines(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, ENTRY_COUNT + 1)
    assert result.entries_checked == ENTRY_COUNT
    assert "intruder" not in result.reason


def test_a_forged_entry_inserted_in_the_middle_is_detected(log: AuditLog):
    lines = _lines(log)
    second = json.loads(lines[1])
    lines.insert(2, _forged(second, 3, prev_hash=second["entry_hash"]))
    _write_lines(log, lines)
    result = log.verify()
    # The forgery chains onto seq 2, so the chain breaks at the displaced original seq 3.
    assert (result.ok, result.first_bad_seq) == (False, 4)


@pytest.mark.parametrize("kept", [0, 2, ENTRY_COUNT - 1])
def test_truncating_the_tail_is_detected_with_the_head_anchor(log: AuditLog, kept: int):
    anchor = log.read_head()
    _write_lines(log, _lines(log)[:kept])
    assert log.verify().ok  # a chain alone cannot see a cut tail...
    result = log.verify(anchor)  # ...its anchor can
    assert (result.ok, result.first_bad_seq) == (False, kept + 1)
    assert f"ends at seq {kept}" in result.reason and f"{ENTRY_COUNT} entries" in result.reason


def test_a_rewritten_log_does_not_match_the_anchor(log: AuditLog, tmp_path: Path):
    anchor = log.read_head()
    log.path.unlink()
    log.head_path.unlink()
    for index in range(ENTRY_COUNT):
        _append_sample(log, index + 10)
    assert log.verify().ok
    result = log.verify(anchor)
    assert (result.ok, result.first_bad_seq) == (False, ENTRY_COUNT)
    assert "anchor" in result.reason


def test_an_incomplete_last_line_is_detected(log: AuditLog):
    content = log.path.read_bytes()
    log.path.write_bytes(content[:-40])
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, ENTRY_COUNT)
    assert "incomplete" in result.reason


def test_append_refuses_to_extend_a_tampered_tail(log: AuditLog):
    lines = _lines(log)
    record = json.loads(lines[-1])
    record["details"] = {"rows": 0}
    lines[-1] = canonical_json(record)
    _write_lines(log, lines)
    with pytest.raises(AuditLogCorrupted, match="integrity"):
        _append_sample(log, 7)
    assert len(_lines(log)) == ENTRY_COUNT


def test_append_refuses_to_hide_a_truncation_behind_a_new_head(log: AuditLog):
    _write_lines(log, _lines(log)[:3])
    with pytest.raises(AuditLogCorrupted, match="head file records seq 6"):
        _append_sample(log, 7)
    assert log.read_head().count == ENTRY_COUNT


# -- no personal data --------------------------------------------------------------------------

PERSONAL_VALUES = {
    "an e-mail address": "jane.doe@example.org",
    "a phone number": "+44 20 7946 0958",
    "a card number": "4111 1111 1111 1111",
    "an IBAN": "NL91ABNA0417164300",
}


@pytest.mark.parametrize(("kind", "value"), sorted(PERSONAL_VALUES.items()))
def test_personal_data_in_details_is_refused_without_echoing_it(tmp_path, kind, value):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(PersonalDataRejected) as refused:
        log.append(actor="svc", action="export", details={"rows": 3, "note": value})
    message = str(refused.value)
    assert kind in message and "details['note']" in message
    assert value not in message
    assert not log.path.exists() or log.path.read_text() == ""


@pytest.mark.parametrize(
    "arguments",
    [
        {"details": {"nested": {"contacts": ["ok", "0612345678"]}}},
        {"details": {"card": 4111111111111111}},
        {"details": {"jane.doe@example.org": 1}},
        {"actor": "jane.doe@example.org"},
        {"object": ["gold_customers", "GB82 WEST 1234 5698 7654 32"]},
        {"policy_version": "555-123-4567"},
    ],
)
def test_personal_data_is_refused_in_every_field(tmp_path, arguments):
    log = AuditLog(tmp_path / "audit.jsonl")
    call = {"actor": "svc", "action": "export"} | arguments
    with pytest.raises(PersonalDataRejected):
        log.append(**call)
    assert log.entries() == []


def test_counts_versions_dates_and_hashes_are_accepted(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    details = {
        "rows": 123456789,
        "bytes": 1234567890123,
        "delta_version": 42,
        "dbt_version": "1.11.16",
        "built_at": "2025-03-01T10:20:30.123456Z",
        "manifest_sha256": hashlib.sha256(b"x").hexdigest(),
        "invocation_id": "123e4567-e89b-12d3-a456-426614174000",
        "luhn_invalid_number": "4111 1111 1111 1112",
        "ratio": 0.25,
        "flags": [True, None],
    }
    entry = log.append(actor="svc_build", action="build", details=details)
    assert log.entries()[0].details == details == entry.details


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"decision": "maybe"}, "decision"),
        ({"action": "Drop Table"}, "action"),
        ({"object": "gold_customers"}, "list"),
        ({"details": {"when": datetime(2025, 1, 1)}}, "type datetime"),
        ({"details": {"ratio": float("nan")}}, "finite"),
        ({"actor": ""}, "actor"),
    ],
)
def test_malformed_arguments_are_refused(tmp_path, arguments, message):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(AuditLogError, match=message):
        log.append(**({"actor": "svc", "action": "build"} | arguments))


# -- concurrency -------------------------------------------------------------------------------


def _append_many(path: str, worker: int, count: int) -> None:
    log = AuditLog(path)
    for index in range(count):
        log.append(actor=f"worker_{worker}", action="build", details={"index": index})


def test_concurrent_appends_from_several_processes_keep_one_valid_chain(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(path, w, 15)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    log = AuditLog(path)
    result = log.verify(log.read_head())
    assert result.ok and result.entries_checked == 60
    per_worker = {}
    for entry in log.entries():
        per_worker.setdefault(entry.actor, []).append(entry.details["index"])
    assert per_worker == {f"worker_{w}": list(range(15)) for w in range(4)}


# -- CLI ---------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    audit_log.add_arguments(parser)
    return audit_log.run(parser.parse_args(argv))


def test_cli_verify_passes_then_fails_naming_the_seq(log: AuditLog, capsys):
    assert _cli(["--log", str(log.path), "verify"]) == 0
    assert f"{ENTRY_COUNT} entries verified" in capsys.readouterr().out

    lines = _lines(log)
    record = json.loads(lines[4])
    record["actor"] = "tampered_actor"
    lines[4] = canonical_json(record)
    _write_lines(log, lines)
    assert _cli(["--log", str(log.path), "verify"]) == 1
    error = capsys.readouterr().err
    assert "seq 5" in error and "tampered_actor" not in error


def test_cli_verify_uses_the_head_file_and_an_external_anchor(log: AuditLog, tmp_path, capsys):
    external = tmp_path / "anchor.json"
    external.write_text(log.read_head().to_json())
    _write_lines(log, _lines(log)[:4])
    assert _cli(["--log", str(log.path), "verify", "--no-head"]) == 0
    assert _cli(["--log", str(log.path), "verify"]) == 1
    log.head_path.unlink()  # an intruder removes the local head too
    assert _cli(["--log", str(log.path), "verify"]) == 0
    assert _cli(["--log", str(log.path), "verify", "--anchor", str(external)]) == 1
    assert "tail truncated" in capsys.readouterr().err


def test_cli_show_filters_by_action_and_last(log: AuditLog, capsys):
    _append_sample(log, 6)  # a second "build" entry (seq 7)
    assert _cli(["--log", str(log.path), "show", "--action", "build", "--json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [record["seq"] for record in shown] == [1, 7]
    assert _cli(["--log", str(log.path), "show", "--last", "2"]) == 0
    output = capsys.readouterr().out.splitlines()
    assert len(output) == 2
    assert output[0].split()[0] == "6" and "erasure" in output[0]


def test_the_audit_command_plugs_into_the_cli(log: AuditLog, monkeypatch, capsys):
    from privacy_lakehouse import cli

    entry = ("audit", "privacy_lakehouse.audit_log", "Verify or show the audit log.")
    monkeypatch.setattr(cli, "COMMANDS", [entry])
    assert cli.main(["audit", "--log", str(log.path), "verify"]) == 0
    assert cli.main(["audit", "--log", str(log.path), "show", "--last", "1", "--json"]) == 0
    output = capsys.readouterr().out.splitlines()
    assert json.loads(output[-1])["seq"] == ENTRY_COUNT
