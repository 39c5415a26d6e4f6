"""The benchmark's Python steps, each run as its own process by bench/run.py so that its peak
memory is measured alone. Each prints one JSON line last: `seconds` is the operation itself
(without interpreter start-up and imports), plus counts and evidence; never values or keys.

The lake, landing and key folders come from the environment (PRIVACY_LAKEHOUSE_LAKE, ...),
as for every command of the project.

    python bench/steps.py make-keyring --subjects N
    python bench/steps.py rotate-master-key
    python bench/steps.py rotate-salt [--salt subject]
    python bench/steps.py erase --subjects N [--no-verify]
    python bench/steps.py retention --manifest FILE
    python bench/steps.py profile-udfs --values N --out FILE
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

CHUNK = 50_000  # subjects per keyring call while making a synthetic keyring


def _print(result: dict[str, Any]) -> int:
    print(json.dumps(result, default=str))
    return 0


def optional_module(name: str):
    """The project's module, or None while it does not exist yet (another issue's work)."""
    try:
        return importlib.import_module(f"privacy_lakehouse.{name}")
    except ModuleNotFoundError as missing:
        if missing.name == f"privacy_lakehouse.{name}":
            return None
        raise


# --------------------------------------------------------------------------------------------
# Keys


def make_keyring(subjects: int) -> dict[str, Any]:
    """A key store holding `subjects` data keys, made through the Keyring API (not measured as a
    benchmark figure: it is the set-up of the rotation measurement)."""
    from privacy_lakehouse.keyring import Keyring

    started = time.perf_counter()
    with Keyring.open() as keyring:
        before = keyring.status()["data_keys"]["subject_tokens"]
        for first in range(before, subjects, CHUNK):
            ids = pa.array(
                [f"bench-subject-{n:08d}" for n in range(first, min(subjects, first + CHUNK))]
            )
            tokens = keyring.tokens(ids, "subject")
            # encrypt_many creates each subject's data key on first use.
            keyring.encrypt_many(tokens, ids)
        status = keyring.status()["data_keys"]
    return {"seconds": round(time.perf_counter() - started, 3), "data_keys": status}


def rotate_master_key() -> dict[str, Any]:
    from privacy_lakehouse.keyring import Keyring

    with Keyring.open() as keyring:
        keys = keyring.status()["data_keys"]
        started = time.perf_counter()
        evidence = keyring.rotate_master_key()
        seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 4),
        "data_keys": keys,
        "data_keys_rewrapped": evidence["data_keys_rewrapped"],
        "salt_versions_rewrapped": evidence["salt_versions_rewrapped"],
        "master_key_version_after": evidence["master_key_version_after"],
    }


def rotate_salt(salt: str) -> dict[str, Any]:
    rotation = optional_module("rotation")
    if rotation is None:
        return {"skipped": "privacy_lakehouse.rotation is missing"}
    started = time.perf_counter()
    evidence = rotation.rotate_salt_in_lake(salt)
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "salt": salt,
        "tokens_mapped": evidence.get("tokens_mapped"),
        "rows_rewritten": evidence.get("rows_rewritten"),
        "rows_retokenized": evidence.get("rows_retokenized"),
        "tables_rewritten": len(evidence.get("tables_rewritten") or []),
    }


# --------------------------------------------------------------------------------------------
# Erasure and retention (another issue's modules: a missing one is reported, not guessed at)


def pick_customers(count: int) -> list[str]:
    """`count` customer numbers spread evenly over the landing data (the operator's identifier)."""
    from privacy_lakehouse.generate import read_summary
    from privacy_lakehouse.settings import load_settings

    summary = read_summary(load_settings().landing_dir) or {}
    total = int(summary.get("parameters", {}).get("customers", 0))
    if total < count:
        raise SystemExit(f"the landing data holds {total} customers; {count} requested")
    step = total // count
    # The generator numbers customers C0000001, C0000002, ...
    return [f"C{n * step + 1:07d}" for n in range(count)]


def erase(subjects: int, verify: bool = True) -> dict[str, Any]:
    erasure = optional_module("erasure")
    if erasure is None:
        return {"skipped": "privacy_lakehouse.erasure is missing"}
    requests = [
        {"customer_id": customer, "request_id": f"bench-{n:04d}"}
        for n, customer in enumerate(pick_customers(subjects))
    ]
    started = time.perf_counter()
    record = erasure.erase_subjects(requests, verify=verify)
    seconds = time.perf_counter() - started
    tables = record.get("tables") or []
    verification = record.get("verification") or {}
    return {
        "seconds": round(seconds, 3),
        "subjects": record.get("subjects"),
        "rows_deleted": record.get("rows_deleted"),
        "files_rewritten": sum(int(t.get("files_rewritten") or 0) for t in tables),
        "files_total": sum(int(t.get("files_total") or 0) for t in tables),
        "delete_seconds": round(sum(float(t.get("seconds") or 0) for t in tables), 3),
        "tables": len(tables),
        "verification_passed": verification.get("passed"),
        "files_scanned": verification.get("files_scanned_total"),
    }


def retention(manifest: Path) -> dict[str, Any]:
    module = optional_module("retention")
    if module is None:
        return {"skipped": "privacy_lakehouse.retention is missing"}
    targets = module.targets_from_manifest(
        json.loads(manifest.read_text(encoding="utf-8")), module._policy_purposes()
    )
    started = time.perf_counter()
    record = module.enforce_retention(targets, as_of=module.as_of_from_environment())
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "as_of": record.get("as_of"),
        "rules": record.get("rules"),
        "tables": len(record.get("tables") or []),
        "rows_expired": record.get("rows_expired"),
        "rows_deleted": record.get("rows_deleted"),
        "files_vacuumed": record.get("files_vacuumed"),
    }


# --------------------------------------------------------------------------------------------
# Where the privacy time goes: the plugin's UDF bodies under cProfile


def profile_udfs(values: int, out: Path) -> dict[str, Any]:
    """Time pl_token and pl_encrypt through DuckDB (as dbt calls them) and profile their Python
    bodies directly (cProfile only sees the thread it runs in, not DuckDB's worker threads)."""
    import duckdb
    from privacy_lakehouse import duckdb_functions
    from privacy_lakehouse.keyring import Keyring

    result: dict[str, Any] = {"values": values}
    with Keyring.open() as keyring:
        conn = duckdb.connect()
        duckdb_functions.register(conn, keyring, actor="bench")
        conn.execute(
            f"create table v as select 'C' || lpad(cast(i as varchar), 7, '0') as id, "
            f"'4000' || lpad(cast(i as varchar), 12, '0') as card from range({values}) t(i)"
        )
        timings = {
            "sha256_sql": "select count(sha256(id)) from v",
            "pl_token": "select count(pl_token(id, 'subject')) from v",
            "pl_token_then_encrypt": (
                "select count(pl_encrypt(t, card)) from (select pl_token(id, 'subject') as t, "
                "card from v)"
            ),
        }
        for name, sql in timings.items():
            started = time.perf_counter()
            conn.execute(sql).fetchone()
            result[f"{name}_seconds"] = round(time.perf_counter() - started, 3)
        ids = conn.execute("select id, card from v").fetch_arrow_table()
        conn.close()
        profiler = cProfile.Profile()
        profiler.enable()
        tokens = keyring.tokens(ids["id"], "subject")
        keyring.encrypt_many(tokens, ids["card"])
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.getvalue())
    stats = pstats.Stats(profiler).stats
    top = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:8]
    result["top_functions_by_own_time"] = [
        {
            "function": f"{Path(file).name}:{line}({name})",
            "calls": calls[1],
            "own_seconds": round(calls[2], 3),
            "cumulative_seconds": round(calls[3], 3),
        }
        for (file, line, name), calls in top
    ]
    result["profile_file"] = str(out)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one benchmark step")
    commands = parser.add_subparsers(dest="step", required=True)
    commands.add_parser("make-keyring").add_argument("--subjects", type=int, required=True)
    commands.add_parser("rotate-master-key")
    commands.add_parser("rotate-salt").add_argument("--salt", default="subject")
    erase_parser = commands.add_parser("erase")
    erase_parser.add_argument("--subjects", type=int, required=True)
    erase_parser.add_argument("--no-verify", action="store_true", help="skip the verifier scan")
    commands.add_parser("retention").add_argument("--manifest", type=Path, required=True)
    profile = commands.add_parser("profile-udfs")
    profile.add_argument("--values", type=int, required=True)
    profile.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from privacy_lakehouse.cli import configure_progress

    configure_progress()  # the step's log (stderr) shows where its time goes
    if args.step == "make-keyring":
        return _print(make_keyring(args.subjects))
    if args.step == "rotate-master-key":
        return _print(rotate_master_key())
    if args.step == "rotate-salt":
        return _print(rotate_salt(args.salt))
    if args.step == "erase":
        return _print(erase(args.subjects, verify=not args.no_verify))
    if args.step == "retention":
        return _print(retention(args.manifest))
    return _print(profile_udfs(args.values, args.out))


if __name__ == "__main__":
    sys.exit(main())
