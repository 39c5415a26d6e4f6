"""Opening DuckDB the project's way: the signed Delta extension from its PyPI wheel, installed
into a project-local folder (never downloaded, never unsigned), and the project's functions."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import duckdb


def delta_extension_file() -> Path:
    """The signed delta extension shipped in the `duckdb-ext-delta` wheel for this DuckDB."""
    spec = importlib.util.find_spec("duckdb_ext")
    roots = list(spec.submodule_search_locations or []) if spec else []
    version = "v" + duckdb.__version__
    for root in roots:
        for candidate in sorted(
            (Path(root) / "extensions" / version).glob("*/delta.duckdb_extension")
        ):
            return candidate
    raise RuntimeError(
        f"The DuckDB delta extension for DuckDB {duckdb.__version__} was not found; install the "
        "pinned 'duckdb-ext-delta' package (make setup)."
    )


MEMORY_LIMIT_ENV = "PRIVACY_LAKEHOUSE_DUCKDB_MEMORY_LIMIT"

# What a build may decrypt for beyond the keyring's defaults: bronze support cases read their
# customers' names from bronze customers to redact them from the notes.
BUILD_DECRYPT_PURPOSES = frozenset({"redaction"})


class SettingError(ValueError):
    """An environment variable with a value DuckDB would reject."""


def _check_memory_limit(value: str) -> None:
    """DuckDB itself judges the size (it accepts more spellings than a pattern would), once per
    value, so that a typo fails with the variable's name instead of a parser error mid-run."""
    if value in _CHECKED_LIMITS:
        return
    try:
        duckdb.connect(config={"memory_limit": value}).close()
    except duckdb.Error:
        raise SettingError(
            f"{MEMORY_LIMIT_ENV}={value!r} is not a size DuckDB accepts, such as 1GB or 900MB"
        ) from None
    _CHECKED_LIMITS.add(value)


_CHECKED_LIMITS: set[str] = set()


def connection_config(extension_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = {
        "extension_directory": str(extension_dir),
        # Never fetch anything at run time; the extension comes from the pinned wheel.
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_unsigned_extensions": False,
    }
    # DuckDB's own default is 80% of RAM. A lower bound makes sorts, joins and aggregates spill
    # to disk sooner: slower, and window operators can still run out (see bench/README.md).
    memory_limit = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if memory_limit:
        _check_memory_limit(memory_limit)
        config["memory_limit"] = memory_limit
    return config


def load_delta_extension(conn: duckdb.DuckDBPyConnection, extension_dir: Path) -> None:
    installed = extension_dir / ("v" + duckdb.__version__)
    if not any(installed.glob("*/delta.duckdb_extension")):
        extension_dir.mkdir(parents=True, exist_ok=True)
        conn.execute(f"INSTALL '{delta_extension_file()}'")
    conn.execute("LOAD delta")


def connect(
    database: str | os.PathLike = ":memory:",
    *,
    extension_dir: Path,
    read_only: bool = False,
    functions: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the delta extension loaded (for tools, tests and serving)."""
    conn = duckdb.connect(
        str(database), read_only=read_only, config=connection_config(extension_dir)
    )
    load_delta_extension(conn, extension_dir)
    if functions:
        register_project_functions(conn)
    return conn


def register_project_functions(conn: duckdb.DuckDBPyConnection, *, audit_log: Any = None) -> None:
    """Functions that carry secrets or policy into SQL without putting them in SQL text.

    Every pl_decrypt batch is recorded in `audit_log` (default: the lake's audit log) before
    anything is decrypted. The log file is created here if missing, so models that read it
    work from the first build on.
    """
    from privacy_lakehouse import build_evidence, duckdb_functions, landing, policy
    from privacy_lakehouse.audit_log import AuditLog
    from privacy_lakehouse.keyring import DEFAULT_DECRYPT_PURPOSES, Keyring

    audit_log = audit_log or AuditLog()
    build_evidence.ensure_audit_log(audit_log)
    on_decrypt = build_evidence.decrypt_recorder(audit_log, build_evidence.policy_version())
    keyring = Keyring.open_default(
        on_decrypt=on_decrypt, allowed_purposes=DEFAULT_DECRYPT_PURPOSES | BUILD_DECRYPT_PURPOSES
    )
    duckdb_functions.register(conn, keyring)
    policy.register(conn)
    landing.register(conn)
