"""Serving files: one DuckDB file per purpose, holding only what that purpose may see.

DuckDB has no users or grants, so a purpose's consumers are scoped by construction: the BI tool
for marketing is pointed at `lake/serving/marketing.duckdb`, and that file holds nothing else.
A column is in purpose P's file when P is among its `meta.purposes`; a table is there when it is
a gold model with at least one such column. Data are copied as real tables from the Delta tables
(through `delta_scan`), so a BI tool needs neither the delta extension nor access to the lake.

Each file is written to `<purpose>.duckdb.tmp-<pid>` and then moved over the old one with
`os.replace`: a reader never sees a half-written file, and a reader that holds the old file
keeps reading its inode (old content) without blocking the build. Every purpose of the policy
gets a file on every publish, even an empty one, so a table that left a purpose cannot linger in
a stale file. Beside it, `<purpose>.json` lists the tables, columns (with their classification),
row counts, Delta versions and the policy version. Each publish appends one `export` entry per
purpose to the audit log (tables, columns, row counts; never values).

Published at the end of every successful `dbt build`/`dbt run` (the `serving` after-build hook;
a file whose gold tables are at the Delta versions it was copied from, with the same visible
columns and policy version, is kept as it is) and on demand, always copied:
`privacy-lakehouse serve publish [--purpose P]`.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from privacy_lakehouse.audit_log import AuditLog, AuditLogError
from privacy_lakehouse.hooks import BuildContext, after_build
from privacy_lakehouse.policy import Policy, PolicyError, column_meta, load_policy
from privacy_lakehouse.settings import load_settings
from privacy_lakehouse.sql_quote import quote_ident as _quote_ident
from privacy_lakehouse.sql_quote import sql_string as _sql_string

log = logging.getLogger("privacy_lakehouse.serving")

SERVING_FOLDER = "serving"
SERVED_LAYER = "gold"
EXTENSION_FOLDER = "_duckdb_extensions"
_PURPOSE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_TMP_MARKER = ".tmp-"
# What the description records of each served column, besides its name.
_CLASSIFICATION = ("sensitivity", "privacy_role", "pii_type")
_NO_TABLE = "no Delta table yet"
_NO_VISIBLE_COLUMN = "none of its visible columns is in the Delta table"


class ServingError(RuntimeError):
    """A serving file could not be published. Messages name tables and purposes, never values."""


# ---------------------------------------------------------------------------------------------
# Where serving files live
# ---------------------------------------------------------------------------------------------


def serving_dir(lake_dir: str | os.PathLike) -> Path:
    return Path(lake_dir) / SERVING_FOLDER


def _checked_purpose(purpose: str) -> str:
    # The purpose becomes a file name: only plain policy-style names, never a path.
    if not isinstance(purpose, str) or not _PURPOSE_PATTERN.match(purpose):
        raise ServingError("a purpose name is 1-63 lowercase letters, digits or underscores")
    return purpose


def serving_path(lake_dir: str | os.PathLike, purpose: str) -> Path:
    """`<lake>/serving/<purpose>.duckdb`: the one file a purpose's BI tools open."""
    return serving_dir(lake_dir) / f"{_checked_purpose(purpose)}.duckdb"


def description_path(lake_dir: str | os.PathLike, purpose: str) -> Path:
    return serving_dir(lake_dir) / f"{_checked_purpose(purpose)}.json"


# ---------------------------------------------------------------------------------------------
# What a purpose may see
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelColumns:
    """A Delta model as the serving layer needs it: relation name, layer, Delta location
    (relative to the lake, or absolute) and each column's policy meta."""

    name: str
    layer: str
    location: str
    columns: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_hook_payload(cls, model: Mapping[str, Any]) -> ModelColumns:
        return cls(
            name=str(model["name"]),
            layer=str(model.get("layer") or ""),
            location=str(model.get("location") or f"{model.get('layer')}/{model['name']}"),
            columns={str(k): dict(v or {}) for k, v in (model.get("columns") or {}).items()},
        )


def models_from_manifest(manifest: Mapping[str, Any]) -> list[ModelColumns]:
    """The Delta models of a dbt manifest, shaped like the after-build hook's payload."""
    models = []
    for node in (manifest.get("nodes") or {}).values():
        config = node.get("config") or {}
        if node.get("resource_type") != "model" or config.get("materialized") != "delta":
            continue
        fqn = node.get("fqn") or []
        layer = str(fqn[1]) if len(fqn) > 2 else ""
        relation = node.get("alias") or node["name"]
        models.append(
            ModelColumns(
                name=relation,
                layer=layer,
                location=config.get("location") or f"{layer}/{node['name']}",
                columns={
                    (column.get("name") or name): column_meta(column)
                    for name, column in (node.get("columns") or {}).items()
                },
            )
        )
    return sorted(models, key=lambda model: model.name)


def visible_columns(model: ModelColumns, purpose: str) -> dict[str, Mapping[str, Any]]:
    """Columns of `model` whose meta.purposes include `purpose` (lower-cased name -> meta).
    A column without meta is visible to nobody (fail closed)."""
    visible = {}
    for name, meta in model.columns.items():
        purposes = meta.get("purposes") or []
        if isinstance(purposes, list) and purpose in purposes:
            visible[name.lower()] = meta
    return visible


def served_models(models: Iterable[ModelColumns], purpose: str) -> list[ModelColumns]:
    """Gold models with at least one column visible to `purpose`, by name."""
    chosen = [m for m in models if m.layer == SERVED_LAYER and visible_columns(m, purpose)]
    return sorted(chosen, key=lambda model: model.name)


# ---------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _remove_stale_tmp_files(folder: Path, file_name: str) -> None:
    """Leftovers of a publish that died mid-write (its pid is gone); ours are removed too."""
    for leftover in folder.glob(f"{file_name}{_TMP_MARKER}*"):
        pid_text = leftover.name.rsplit(_TMP_MARKER, 1)[-1].split(".", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        alive = pid != os.getpid()
        if alive:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive = False
            except PermissionError:
                pass  # another user's live process
        if not alive:
            leftover.unlink(missing_ok=True)


def _write_json_atomically(path: Path, document: Mapping[str, Any]) -> None:
    staged = path.with_name(f"{path.name}{_TMP_MARKER}{os.getpid()}")
    staged.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staged, path)


def _table_columns(conn, location: str) -> list[str]:
    rows = conn.execute(f"describe select * from delta_scan({_sql_string(location)})").fetchall()
    return [row[0] for row in rows]


def _delta_version(location: str) -> int:
    from deltalake import DeltaTable

    return DeltaTable(location).version()


def publish_purpose(
    purpose: str,
    models: Sequence[ModelColumns],
    lake_dir: str | os.PathLike,
    *,
    policy_version: int | str | None,
    output_dir: str | os.PathLike | None = None,
    invocation_id: str | None = None,
    memory_limit: str | None = None,
    keep_unchanged: bool = False,
) -> dict[str, Any]:
    """Write `<purpose>.duckdb` and `<purpose>.json` (atomically) and return the description.

    Gold models that cannot be served are left out and listed under `skipped` with the reason
    (no Delta table yet, or none of their visible columns in it). Output goes to
    `<lake>/serving/` unless `output_dir` is given. `memory_limit` bounds DuckDB's memory for
    the copy (default: PRIVACY_LAKEHOUSE_DUCKDB_MEMORY_LIMIT, else DuckDB's own).
    With `keep_unchanged`, a file whose description still matches (same policy version, the
    same tables at the same Delta versions, the same visible columns) is left as it is and its
    description returned with `unchanged: true`.
    """
    from privacy_lakehouse import duckdb_setup  # deferred: DuckDB is not needed to plan

    _checked_purpose(purpose)
    lake = Path(lake_dir).resolve()
    folder = Path(output_dir) if output_dir is not None else serving_dir(lake)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{purpose}.duckdb"
    if keep_unchanged:
        previous = _still_current(folder / f"{purpose}.json", final, purpose, models, lake)
        if previous is not None and previous.get("policy_version") == policy_version:
            return {**previous, "unchanged": True}
    _remove_stale_tmp_files(folder, final.name)
    staged = folder / f"{final.name}{_TMP_MARKER}{os.getpid()}"
    staged.unlink(missing_ok=True)
    Path(f"{staged}.wal").unlink(missing_ok=True)

    tables: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    conn = duckdb_setup.connect(staged, extension_dir=lake / EXTENSION_FOLDER)
    try:
        if memory_limit:
            conn.execute(f"set memory_limit = {_sql_string(memory_limit)}")
        for model in served_models(models, purpose):
            location = str((lake / model.location).resolve())
            if not Path(location, "_delta_log").is_dir():
                skipped[model.name] = _NO_TABLE
                continue
            columns = _column_entries(model, purpose, _table_columns(conn, location))
            if not columns:
                skipped[model.name] = _NO_VISIBLE_COLUMN
                continue
            version = _delta_version(location)  # before the copy: the copy is at least this
            projection = ", ".join(_quote_ident(c["name"]) for c in columns)
            relation = f"main.{_quote_ident(model.name)}"
            conn.execute(
                f"create table {relation} as "
                f"select {projection} from delta_scan({_sql_string(location)})"
            )
            (rows,) = conn.execute(f"select count(*) from {relation}").fetchone()
            tables.append(
                {
                    "name": model.name,
                    "source": f"{model.layer}/{model.name}",
                    "delta_version": version,
                    "rows": rows,
                    "columns": columns,
                }
            )
        conn.execute("checkpoint")
    except BaseException:
        conn.close()
        staged.unlink(missing_ok=True)
        Path(f"{staged}.wal").unlink(missing_ok=True)
        raise
    conn.close()
    Path(f"{staged}.wal").unlink(missing_ok=True)  # empty after the checkpoint

    os.replace(staged, final)
    _fsync_dir(folder)
    description = {
        "purpose": purpose,
        "database": final.name,
        "policy_version": policy_version,
        "published_at": _now(),
        "invocation_id": invocation_id,
        "tables": tables,
        "skipped": dict(sorted(skipped.items())),
    }
    _write_json_atomically(folder / f"{purpose}.json", description)
    return description


def _column_entries(
    model: ModelColumns, purpose: str, names: Iterable[str]
) -> list[dict[str, Any]]:
    """The columns of `names` (the Delta table's own order) the purpose may see, each with its
    classification; a column missing from the YAML is not visible."""
    visible = visible_columns(model, purpose)
    return [
        {"name": name, **{k: visible[name.lower()].get(k) for k in _CLASSIFICATION}}
        for name in names
        if name.lower() in visible
    ]


def _served_now(
    models: Sequence[ModelColumns], purpose: str, lake: Path
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """What a publish would copy now (tables without their row counts, and what it would skip),
    read from the Delta logs only: no data file is opened."""
    from deltalake import DeltaTable

    tables: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for model in served_models(models, purpose):
        location = (lake / model.location).resolve()
        if not (location / "_delta_log").is_dir():
            skipped[model.name] = _NO_TABLE
            continue
        table = DeltaTable(str(location))
        columns = _column_entries(model, purpose, (f.name for f in table.schema().fields))
        if not columns:
            skipped[model.name] = _NO_VISIBLE_COLUMN
            continue
        tables.append(
            {
                "name": model.name,
                "source": f"{model.layer}/{model.name}",
                "delta_version": table.version(),
                "columns": columns,
            }
        )
    return tables, skipped


def _still_current(
    description_file: Path,
    database: Path,
    purpose: str,
    models: Sequence[ModelColumns],
    lake: Path,
) -> dict[str, Any] | None:
    """The published description when its file would come out the same if published now."""
    if not (database.is_file() and description_file.is_file()):
        return None
    try:
        previous = json.loads(description_file.read_text(encoding="utf-8"))
        published = [{k: v for k, v in t.items() if k != "rows"} for t in previous["tables"]]
        skipped = previous["skipped"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or from another version: publish afresh
    if previous.get("database") != database.name:
        return None
    if (published, skipped) != _served_now(models, purpose, lake):
        return None
    return previous


def export_entry_fields(description: Mapping[str, Any]) -> dict[str, Any]:
    """The audit entry of one published file: tables and table.column names, row counts."""
    tables = description["tables"]
    objects = [table["name"] for table in tables]
    objects += [
        f"{table['name']}.{column['name']}" for table in tables for column in table["columns"]
    ]
    return {
        "action": "export",
        "object": objects,
        "decision": "allow",
        "policy_version": description["policy_version"],
        "details": {
            "purpose": description["purpose"],
            "serving_file": f"{SERVING_FOLDER}/{description['database']}",
            "row_counts": {table["name"]: table["rows"] for table in tables},
            "rows_exported": sum(table["rows"] for table in tables),
            "columns_exported": sum(len(table["columns"]) for table in tables),
            "skipped": sorted(description["skipped"]),
            "invocation_id": description.get("invocation_id") or "",
        },
    }


def publish(
    models: Sequence[ModelColumns],
    lake_dir: str | os.PathLike,
    policy: Policy,
    *,
    purposes: Iterable[str] | None = None,
    output_dir: str | os.PathLike | None = None,
    audit_log: AuditLog | None = None,
    actor: str,
    invocation_id: str | None = None,
    memory_limit: str | None = None,
    keep_unchanged: bool = False,
) -> dict[str, dict[str, Any]]:
    """Publish the serving file of each purpose (default: every purpose of the policy) and
    record one `export` audit entry per file written. Returns {purpose: description}; with
    `keep_unchanged`, files still current are kept (no copy, no export entry)."""
    chosen = list(purposes) if purposes is not None else list(policy.purposes)
    unknown = [p for p in chosen if p not in policy.purposes]
    if unknown:
        raise ServingError(
            f"unknown purpose(s) {', '.join(sorted(map(str, unknown)))}; the policy defines "
            f"{', '.join(policy.purposes)}"
        )
    audit = audit_log or AuditLog(Path(lake_dir) / "_audit" / "audit.jsonl")
    published = {}
    for purpose in chosen:
        description = publish_purpose(
            purpose,
            models,
            lake_dir,
            policy_version=policy.version,
            output_dir=output_dir,
            invocation_id=invocation_id,
            memory_limit=memory_limit,
            keep_unchanged=keep_unchanged,
        )
        if not description.get("unchanged"):
            audit.append(actor=actor, **export_entry_fields(description))
        published[purpose] = description
    return published


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _summary(published: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        purpose: (
            f"unchanged since {description.get('published_at')}"
            if description.get("unchanged")
            else {table["name"]: table["rows"] for table in description["tables"]}
        )
        for purpose, description in published.items()
    }


@after_build("serving")
def publish_after_build(context: BuildContext) -> dict[str, Any]:
    """Republish every purpose's serving file from the gold Delta tables after a build.

    A build with an error or a failed test publishes nothing: the previous files stay, because
    a failed test may be the one guarding a release (k-anonymity, consent). A file whose gold
    tables, columns and policy are what it was published from is kept: a run of one silver
    model does not copy 9M rows of unchanged gold into the fraud file again."""
    if not context.succeeded:
        log.warning("serving files not published: the build had errors or failed tests")
        return {"skipped": "the build had errors or failed tests; previous files kept"}
    policy = load_policy()
    models = [ModelColumns.from_hook_payload(m) for m in context.models]
    published = publish(
        models,
        context.lake_dir,
        policy,
        actor=f"dbt:{_user()}",
        invocation_id=context.invocation_id,
        keep_unchanged=True,
    )
    return _summary(published)


# ---------------------------------------------------------------------------------------------
# CLI: `privacy-lakehouse serve publish [--purpose P]`
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="serve_command", metavar="SUBCOMMAND")
    sub.required = True
    command = sub.add_parser(
        "publish",
        help="Write <lake>/serving/<purpose>.duckdb (and .json) from the gold Delta tables.",
        description="Publish per-purpose serving files: only the gold tables and columns each "
        "purpose may see, copied as plain DuckDB tables, replaced atomically.",
    )
    command.add_argument(
        "--purpose",
        action="append",
        default=None,
        help="a purpose from the policy (repeatable; default: every purpose)",
    )
    command.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="dbt manifest with the models' column meta (default: manifest.json in dbt's "
        "target path, DBT_TARGET_PATH or target)",
    )
    command.add_argument(
        "--policy", type=Path, default=None, help="policy file (default: privacy_policy.yml)"
    )
    command.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="folder for the files (default: <lake>/serving)",
    )
    command.add_argument(
        "--audit-log",
        type=Path,
        default=None,
        help="audit log file (default: <lake_dir>/_audit/audit.jsonl)",
    )
    command.add_argument("--actor", default=None, help="who publishes (default: OS user)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    manifest_path = args.manifest or settings.manifest_path
    if not (settings.lake_dir / "gold").is_dir():
        print(
            f"serve: no gold tables under {settings.lake_dir} (check PRIVACY_LAKEHOUSE_LAKE; "
            "run `dbt build` first)",
            file=sys.stderr,
        )
        return 1
    try:
        policy = load_policy(args.policy)
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, PolicyError) as error:
        print(f"serve: cannot load the policy or the manifest: {error}", file=sys.stderr)
        return 1
    audit_log = AuditLog(args.audit_log) if args.audit_log else None
    try:
        published = publish(
            models_from_manifest(manifest),
            settings.lake_dir,
            policy,
            purposes=args.purpose,
            output_dir=args.output_dir,
            audit_log=audit_log,
            actor=args.actor or f"serve:{_user()}",
        )
    except (ServingError, AuditLogError) as error:
        print(f"serve: {error}", file=sys.stderr)
        return 1
    print(json.dumps(_summary(published), indent=2, sort_keys=True))
    return 0


__all__ = [
    "ModelColumns",
    "ServingError",
    "description_path",
    "models_from_manifest",
    "publish",
    "publish_purpose",
    "served_models",
    "serving_dir",
    "serving_path",
    "visible_columns",
]
