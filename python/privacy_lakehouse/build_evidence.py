"""Evidence in the audit log for what happens outside a query: builds and decryptions.

- One `build` entry per `dbt build`/`dbt run` (the `build_evidence` after-build hook): the models
  built and each node's status, counts per status, the policy version of privacy_policy.yml and
  the key versions from `Keyring.status()`.
- One `decrypt` entry per `pl_decrypt` batch (the keyring's audit callback, installed by
  `duckdb_setup.register_project_functions`): who, for which purpose, how many subjects. The
  entry is written before anything is decrypted; if it cannot be written, nothing is.

Key rotations are recorded by `privacy_lakehouse.rotation.record_rotation` (`key_rotation`).

Entries hold names, versions, statuses and counts: never a value, key or token.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privacy_lakehouse import hooks
from privacy_lakehouse.audit_log import AuditLog
from privacy_lakehouse.hooks import BuildContext, after_build
from privacy_lakehouse.policy import PolicyError, load_policy

log = logging.getLogger("privacy_lakehouse.build_evidence")

# Node types whose result is "something built"; tests are counted, not listed one by one.
BUILT_RESOURCE_TYPES = ("model", "snapshot", "seed")


def audit_log_for(lake_dir: str | os.PathLike) -> AuditLog:
    return AuditLog(Path(lake_dir) / "_audit" / "audit.jsonl")


def ensure_audit_log(audit_log: AuditLog) -> None:
    """Create the log file empty if it is missing, so models reading it (privacy telemetry)
    work before the first entry is written. Never truncates an existing log."""
    audit_log.path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(audit_log.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    os.close(descriptor)


def policy_version(path: str | os.PathLike | None = None) -> int | None:
    """The `version` of privacy_policy.yml, or None when there is no valid policy file."""
    try:
        return load_policy(path).version
    except PolicyError:
        return None


def key_versions() -> dict[str, Any]:
    """Key names, versions and counts from `Keyring.status()`: what the build ran under."""
    from privacy_lakehouse.keyring import Keyring, KeyringError

    try:
        with Keyring.open_default() as keyring:
            status = keyring.status()
    except KeyringError as error:
        # Recorded, not raised: the build already succeeded with these keys, and a gap in the
        # evidence must be visible in the entry rather than fail the run afterwards.
        return {"unavailable": type(error).__name__}
    return {
        "master_key_version": status["master_key"]["active_version"],
        "salts": {
            salt["salt"]: salt["version"] for salt in status["salts"] if salt["state"] == "active"
        },
        "retired_salt_versions": sorted(
            f"{salt['salt']}:v{salt['version']}"
            for salt in status["salts"]
            if salt["state"] == "retired"
        ),
        "data_keys": dict(status["data_keys"]),
    }


def _resource_type(unique_id: str) -> str:
    return unique_id.split(".", 1)[0]


def _short_name(unique_id: str) -> str:
    return unique_id.rsplit(".", 1)[-1]


def build_entry_fields(context: BuildContext) -> dict[str, Any]:
    """The audit entry of one build: what was built, with which outcome, under which policy."""
    built = {
        _short_name(r["unique_id"]): r["status"]
        for r in context.results
        if _resource_type(r.get("unique_id", "")) in BUILT_RESOURCE_TYPES
    }
    statuses = Counter(r.get("status", "unknown") for r in context.results)
    failed = sorted(r["unique_id"] for r in context.results if r.get("status") in {"error", "fail"})
    return {
        "action": "build",
        "object": sorted(built),
        "decision": "n.a.",
        "policy_version": policy_version(),
        "details": {
            "invocation_id": context.invocation_id,
            "command": context.command,
            "target": context.target_name,
            "succeeded": context.succeeded,
            "models": built,
            "statuses": dict(sorted(statuses.items())),
            "failed": failed,
            "keys": key_versions(),
        },
    }


def build_actor() -> str:
    try:
        return f"dbt:{getpass.getuser()}"
    except (KeyError, OSError):
        return "dbt:unknown"


# ---------------------------------------------------------------------------------------------
# Decryptions
# ---------------------------------------------------------------------------------------------


def decrypt_recorder(
    audit_log: AuditLog, version: int | str | None = None
) -> Callable[[str, str, int], None]:
    """The keyring's `on_decrypt` callback: one `decrypt` entry per batch, before decrypting."""

    def record(actor: str, purpose: str, subjects: int) -> None:
        audit_log.append(
            actor=actor,
            action="decrypt",
            object=[],
            decision="allow",
            policy_version=version,
            details={"purpose": purpose, "subjects": subjects},
        )

    return record


# ---------------------------------------------------------------------------------------------
# The after-build hook
# ---------------------------------------------------------------------------------------------

# Hooks run in the order they were registered, and this one must run last: it records the whole
# run. This module is also imported early (by duckdb_setup and rotation, for the helpers above),
# so load the other built-in hooks before registering this one. Everything above is defined by
# now, so a hook module that imports from here during that load finds what it needs.
hooks.registered_hooks()


@after_build("build_evidence")
def record_build(context: BuildContext) -> dict[str, Any]:
    """Append one `build` entry for this run; returns the new head of the chain."""
    entry = audit_log_for(context.lake_dir).append(
        actor=build_actor(), **build_entry_fields(context)
    )
    return {"audit_seq": entry.seq, "head_hash": entry.entry_hash}


__all__ = [
    "audit_log_for",
    "build_entry_fields",
    "decrypt_recorder",
    "ensure_audit_log",
    "key_versions",
    "policy_version",
    "record_build",
]
