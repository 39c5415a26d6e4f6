"""Retention: expired rows are deleted, old files and log entries go after the time-travel window.

A model declares how long its rows may be kept, in its config (`config(retention={...})`, its
YAML `config:` block, or `+retention:` for a folder in `dbt_project.yml`). Two kinds of rule:

    retention:                # age: rows whose date is older than keep_days before the as-of date
      column: opened_at       # a date or timestamp column, or text starting with an ISO date
      keep_days: 2555         # whole days, >= 0

    retention:                # purpose expiry: rows kept for a purpose the subject no longer allows
      purpose: marketing      # a purpose of privacy_policy.yml
      keep_days: 30           # grace after the revocation
      subject_column: subject_token                 # optional (this default)
      consent_table: silver/int_consents_historized # optional: lake-relative Delta table

Age rules delete rows whose `column` is before the cutoff day (as-of date minus keep_days, at
00:00 UTC); rows whose date is NULL, or text that does not start with YYYY-MM-DD, never expire
(the evidence counts them). The delete predicate names the column and the cutoff date only,
never personal data (delta-rs stores predicates in the commit log). Purpose rules delete the rows
of every subject that holds no current grant for the purpose and either never granted it or
revoked it more than keep_days before the as-of date; those rows are removed by token with the
erasure's file rewrite (`erasure.remove_rows`), so no token reaches the commit log either.
Anything else in a rule (unknown keys, a bad keep_days, both or neither of column and purpose,
an unknown purpose, a column of another type) fails the run with a message naming the model.

Enforcement runs at the end of every `dbt build` / `dbt run` (the `retention` after-build hook)
and on demand: `privacy-lakehouse retention [--dry-run] [--select MODEL] [--as-of YYYY-MM-DD]`,
which reads the rules from `target/manifest.json`. The as-of date is today (UTC) unless set by
`--as-of`, by `dbt build --vars '{retention_as_of: 2031-01-31}'`, or by the environment variable
PRIVACY_LAKEHOUSE_RETENTION_AS_OF. For every Delta model (with or without a rule) a run also
vacuums files that left the table longer ago than its `delta.deletedFileRetentionDuration` (the
time-travel window) and cleans up log entries older than its `delta.logRetentionDuration`. Deleted
rows therefore stay readable through time travel for one window, then are physically gone; the
erasure command is the immediate path. Deletes never change a table's schema, so the DuckDB
views over `delta_scan` need no refresh; if a schema did change, the command recreates the view.

The quarantined rows of a source whose bronze model has an age rule expire on the same rule,
counted from their `ingested_at` (their own date is ciphertext there, and may be what was
malformed); the delete predicate names the source and the cutoff date. Purpose rules do not
reach the quarantine.

Landing files are outside the lake. Bronze models do not read a landing file again once the
ingestion ledger (`privacy_lakehouse.ingestion_ledger`) holds it unchanged, so expired rows do
not come back; a run records the rows it deleted from each landing file's bronze table and
quarantine there, and the landing purge counts them as accounted for, so the file can go.

Each run writes one JSON record under `lake/_evidence/retention/` and a `retention` entry to the
audit log: per table the rule, rows deleted (or, in a dry run, that would be), Delta versions
before and after, files vacuumed, log files removed, timestamps; never values.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable

from privacy_lakehouse.audit_log import AuditLog
from privacy_lakehouse.hooks import BuildContext, after_build
from privacy_lakehouse.settings import Settings, load_settings

log = logging.getLogger(__name__)

AS_OF_ENV = "PRIVACY_LAKEHOUSE_RETENTION_AS_OF"
AS_OF_VAR = "retention_as_of"
EVIDENCE_FOLDER = "retention"
SCRATCH_FOLDER = "_retention_scratch"
DEFAULT_SUBJECT_COLUMN = "subject_token"
DEFAULT_CONSENT_TABLE = "silver/int_consents_historized"
RULE_KEYS = frozenset({"column", "keep_days", "purpose", "subject_column", "consent_table"})
ISO_DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
COMMIT_NOTE = "privacy_lakehouse retention"
QUARANTINE_DATE_COLUMN = "ingested_at"


class RetentionError(ValueError):
    """A retention rule is invalid or cannot be enforced. Messages name models and keys only."""


@dataclass(frozen=True)
class RetentionRule:
    keep_days: int
    column: str | None = None
    purpose: str | None = None
    subject_column: str = DEFAULT_SUBJECT_COLUMN
    consent_table: str = DEFAULT_CONSENT_TABLE

    def to_dict(self) -> dict[str, Any]:
        if self.column is not None:
            return {"column": self.column, "keep_days": self.keep_days}
        return {
            "purpose": self.purpose,
            "keep_days": self.keep_days,
            "subject_column": self.subject_column,
            "consent_table": self.consent_table,
        }

    def cutoff(self, as_of: date) -> date:
        return as_of - timedelta(days=self.keep_days)


def parse_rule(
    model: str, config: Any, purposes: Iterable[str] | None = None
) -> RetentionRule | None:
    """Validate a model's `retention` config; None when the model has no rule."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise RetentionError(
            f"model {model}: retention must be a mapping such as "
            "{column: <date column>, keep_days: <days>} or {purpose: <purpose>, keep_days: <days>}"
        )
    unknown = sorted(str(k) for k in set(config) - RULE_KEYS)
    if unknown:
        raise RetentionError(
            f"model {model}: unknown retention keys {unknown}; allowed: {sorted(RULE_KEYS)}"
        )
    keep_days = config.get("keep_days")
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < 0:
        raise RetentionError(f"model {model}: retention keep_days must be a whole number >= 0")
    column, purpose = config.get("column"), config.get("purpose")
    if (column is None) == (purpose is None):
        raise RetentionError(
            f"model {model}: a retention rule names exactly one of 'column' (age) or 'purpose' "
            "(purpose expiry)"
        )
    for key in ("column", "purpose", "subject_column", "consent_table"):
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise RetentionError(f"model {model}: retention {key} must be a non-empty name")
    if column is not None and ({"subject_column", "consent_table"} & set(config)):
        raise RetentionError(
            f"model {model}: subject_column and consent_table apply to purpose rules only"
        )
    if purpose is not None and purposes is not None and purpose not in set(purposes):
        raise RetentionError(
            f"model {model}: retention purpose '{purpose}' is not a purpose of the privacy policy"
        )
    consent_table = config.get("consent_table") or DEFAULT_CONSENT_TABLE
    if Path(consent_table).is_absolute() or ".." in Path(consent_table).parts:
        raise RetentionError(f"model {model}: consent_table is a path inside the lake")
    return RetentionRule(
        keep_days=keep_days,
        column=column,
        purpose=purpose,
        subject_column=config.get("subject_column") or DEFAULT_SUBJECT_COLUMN,
        consent_table=consent_table,
    )


@dataclass(frozen=True)
class RetentionTarget:
    """A Delta model the run looks after: its table, and its rule if it has one."""

    model: str
    table: str  # relative to the lake
    schema: str | None
    rule: RetentionRule | None
    # The rows of one landing source only (source_name): the quarantine's share of a source.
    scope: str | None = None


def _policy_purposes() -> set[str] | None:
    from privacy_lakehouse.policy import PolicyError, load_policy

    try:
        return set(load_policy().purposes)
    except PolicyError:
        return None


def targets_from_models(
    models: Iterable[Mapping[str, Any]], purposes: Iterable[str] | None = None
) -> list[RetentionTarget]:
    """From the after-build payload: dicts with name, location, schema and retention."""
    purposes = set(purposes) if purposes is not None else None
    targets = [
        RetentionTarget(
            model=model["name"],
            table=model["location"],
            schema=model.get("schema"),
            rule=parse_rule(model["name"], model.get("retention"), purposes),
        )
        for model in models
    ]
    return sorted(targets + _quarantine_targets(targets), key=lambda t: (t.table, t.scope or ""))


def _quarantine_targets(targets: Sequence[RetentionTarget]) -> list[RetentionTarget]:
    """The quarantined rows of a source whose bronze model has an age rule expire on the same
    rule, counted from their ingestion: their own date is ciphertext there, and may be the
    malformed value that sent them to quarantine; a row reaches landing after its date, so its
    quarantined copy never goes before its bronze rows would."""
    from privacy_lakehouse.ingestion_ledger import QUARANTINE_TABLE, tracked

    if all(t.table != QUARANTINE_TABLE for t in targets):
        return []
    return [
        RetentionTarget(
            model=target.model,
            table=QUARANTINE_TABLE,
            schema=None,  # deletes keep the schema: no view to refresh
            rule=RetentionRule(keep_days=target.rule.keep_days, column=QUARANTINE_DATE_COLUMN),
            scope=item.source.name,
        )
        for target in targets
        if target.rule is not None and target.rule.column is not None
        for item in tracked(target.table)
    ]


def targets_from_manifest(
    manifest: Mapping[str, Any], purposes: Iterable[str] | None = None
) -> list[RetentionTarget]:
    """Delta models of `target/manifest.json` (a rule on any other model is an error)."""
    models = []
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") != "model":
            continue
        config = node.get("config") or {}
        if config.get("materialized") != "delta":
            if config.get("retention") is not None:
                raise RetentionError(
                    f"model {node['name']}: retention applies to delta models only"
                )
            continue
        fqn = node.get("fqn") or []
        layer = fqn[1] if len(fqn) > 2 else "models"
        models.append(
            {
                "name": node["name"],
                "location": config.get("location") or f"{layer}/{node['name']}",
                "schema": node.get("schema"),
                "retention": config.get("retention"),
            }
        )
    return targets_from_models(models, purposes)


# ---------------------------------------------------------------------------------------------
# Enforcement


@dataclass
class TableRetention:
    model: str
    table: str
    rule: dict[str, Any] | None
    scope: str | None = None
    rows_total: int | None = None
    rows_expired: int = 0
    rows_deleted: int = 0
    rows_without_date: int | None = None
    subjects_expired: int | None = None
    cutoff: str | None = None
    version_before: int | None = None
    version_after: int | None = None
    files_vacuumed: int = 0
    log_files_removed: int = 0
    view_refreshed: bool = False
    skipped: str | None = None
    seconds: float = 0.0
    schema_changed: bool = field(default=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "table": self.table,
            "rule": self.rule,
            "source_name": self.scope,
            "cutoff": self.cutoff,
            "rows_total": self.rows_total,
            "rows_expired": self.rows_expired,
            "rows_deleted": self.rows_deleted,
            "rows_without_date": self.rows_without_date,
            "subjects_expired": self.subjects_expired,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "files_vacuumed": self.files_vacuumed,
            "log_files_removed": self.log_files_removed,
            "view_refreshed": self.view_refreshed,
            "skipped": self.skipped,
            "seconds": self.seconds,
        }


def _age_filter(
    model: str, column: str, kind: pa.DataType, cutoff: date
) -> tuple[ds.Expression, ds.Expression, str]:
    """(expired, dated, delete predicate) for an age rule; the predicate holds a date only."""
    field_ref = ds.field(column)
    quoted = '"' + column.replace('"', '""') + '"'
    midnight = datetime(cutoff.year, cutoff.month, cutoff.day)
    if pa.types.is_date(kind):
        literal = pa.scalar(cutoff, kind)
        predicate = f"{quoted} < '{cutoff.isoformat()}'"
        dated = field_ref.is_valid()
    elif pa.types.is_timestamp(kind):
        if kind.tz:
            literal = pa.scalar(midnight.replace(tzinfo=timezone.utc), kind)
            predicate = f"{quoted} < '{midnight.isoformat()}Z'"
        else:
            literal = pa.scalar(midnight, kind)
            predicate = f"{quoted} < '{midnight.isoformat()}'"
        dated = field_ref.is_valid()
    elif (
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    ):
        # ISO dates sort as text; anything else (or NULL) never expires.
        literal = pa.scalar(cutoff.isoformat(), pa.string())
        dated = pc.match_substring_regex(field_ref, ISO_DATE_PATTERN)
        predicate = f"{quoted} ~ '{ISO_DATE_PATTERN}' AND {quoted} < '{cutoff.isoformat()}'"
        return dated & (field_ref < literal), dated, predicate
    else:
        raise RetentionError(
            f"model {model}: retention column '{column}' has type {kind}; a retention column "
            "is a date, a timestamp or text starting with an ISO date (YYYY-MM-DD)"
        )
    return field_ref < literal, dated, predicate


def _expired_subjects(
    lake_dir: Path, target: RetentionTarget, table: DeltaTable, as_of: date
) -> set[str]:
    rule = target.rule
    consent_path = lake_dir / rule.consent_table
    if not DeltaTable.is_deltatable(str(consent_path)):
        raise RetentionError(
            f"model {target.model}: the consent table {rule.consent_table} does not exist"
        )
    consent = pa.table(
        DeltaTable(str(consent_path))
        .to_pyarrow_dataset()
        .to_table(
            columns=["subject_token", "is_granted", "is_current", "valid_from"],
            filter=(ds.field("purpose") == rule.purpose) & (ds.field("is_current") == True),  # noqa: E712
        )
    )
    cutoff = rule.cutoff(as_of)
    cutoff_moment = datetime(cutoff.year, cutoff.month, cutoff.day)
    granted: set[str] = set()
    revoked_at: dict[str, datetime] = {}
    for token, is_granted, _, valid_from in zip(
        *(
            consent[c].to_pylist()
            for c in ("subject_token", "is_granted", "is_current", "valid_from")
        ),
        strict=True,
    ):
        if is_granted:
            granted.add(token)
        elif valid_from is not None:
            moment = valid_from.replace(tzinfo=None) if valid_from.tzinfo else valid_from
            revoked_at[token] = max(moment, revoked_at.get(token, moment))
    subjects = pa.table(table.to_pyarrow_dataset().to_table(columns=[rule.subject_column]))[
        rule.subject_column
    ]
    present = {s for s in pc.unique(subjects.cast(pa.string())).to_pylist() if s}
    return {
        s
        for s in present
        if s not in granted and (s not in revoked_at or revoked_at[s] < cutoff_moment)
    }


def _expired_by_file(
    target: RetentionTarget, dataset: ds.Dataset, expired: ds.Expression
) -> dict[tuple[str, str], int]:
    """Expired rows per (landing source, landing file) of a table the ingestion ledger follows,
    so that the landing purge can account for them; {} for any other table."""
    from privacy_lakehouse.ingestion_ledger import tracked

    items = tracked(target.table)
    if not items or "source_file" not in dataset.schema.names:
        return {}
    scoped = items[0].scoped
    columns = ["source_name", "source_file"] if scoped else ["source_file"]
    counts = (
        dataset.to_table(columns=columns, filter=expired)
        .group_by(columns)
        .aggregate([([], "count_all")])
    )
    names = counts["source_name"].to_pylist() if scoped else [items[0].source.name] * len(counts)
    return dict(
        zip(
            zip(names, counts["source_file"].to_pylist(), strict=True),
            counts["count_all"].to_pylist(),
            strict=True,
        )
    )


def _enforce_table(
    lake_dir: Path, target: RetentionTarget, as_of: date, dry_run: bool, run_id: str = ""
) -> TableRetention:
    from privacy_lakehouse.erasure import remove_rows
    from privacy_lakehouse.ingestion_ledger import record_expired

    started = time.monotonic()
    outcome = TableRetention(
        model=target.model,
        table=target.table,
        rule=target.rule.to_dict() if target.rule else None,
        scope=target.scope,
    )
    location = lake_dir / target.table
    if not DeltaTable.is_deltatable(str(location)):
        outcome.skipped = "no Delta table yet"
        return outcome
    table = DeltaTable(str(location))
    outcome.version_before = outcome.version_after = table.version()
    schema_before = pa.schema(table.schema().to_arrow())
    rule = target.rule
    if rule is not None:
        dataset = table.to_pyarrow_dataset()
        if target.scope and not re.fullmatch(r"[a-z0-9_.]+", target.scope):
            raise RetentionError(f"model {target.model}: a scope is a landing source name")
        # A source name, never personal data, may enter the delete predicate.
        scope = ds.field("source_name") == target.scope if target.scope else ds.scalar(True)
        scope_sql = f"source_name = '{target.scope}' AND " if target.scope else ""
        outcome.rows_total = dataset.count_rows(filter=scope)
        cutoff = rule.cutoff(as_of)
        outcome.cutoff = cutoff.isoformat()
        if rule.column is not None:
            if rule.column not in schema_before.names:
                raise RetentionError(
                    f"model {target.model}: retention column '{rule.column}' is not a column of "
                    f"{target.table}"
                )
            expired, dated, predicate = _age_filter(
                target.model, rule.column, schema_before.field(rule.column).type, cutoff
            )
            expired, dated = scope & expired, scope & dated
            outcome.rows_expired = dataset.count_rows(filter=expired)
            outcome.rows_without_date = outcome.rows_total - dataset.count_rows(filter=dated)
            if outcome.rows_expired and not dry_run:
                by_file = _expired_by_file(target, dataset, expired)
                metrics = table.delete(scope_sql + predicate)
                outcome.rows_deleted = int(metrics.get("num_deleted_rows") or 0)
                record_expired(lake_dir, target.table, by_file, run_id=run_id)
        else:
            if rule.subject_column not in schema_before.names:
                raise RetentionError(
                    f"model {target.model}: retention subject_column '{rule.subject_column}' is "
                    f"not a column of {target.table}"
                )
            expired_subjects = _expired_subjects(lake_dir, target, table, as_of)
            outcome.subjects_expired = len(expired_subjects)
            if expired_subjects:
                outcome.rows_expired = dataset.count_rows(
                    filter=ds.field(rule.subject_column).isin(sorted(expired_subjects))
                )
            if outcome.rows_expired and not dry_run:
                by_file = _expired_by_file(
                    target, dataset, ds.field(rule.subject_column).isin(sorted(expired_subjects))
                )
                removal = remove_rows(
                    location,
                    {rule.subject_column: expired_subjects},
                    scratch_root=lake_dir / SCRATCH_FOLDER,
                    name=target.table,
                    commit_note=COMMIT_NOTE,
                )
                outcome.rows_deleted = removal.rows_deleted
                record_expired(lake_dir, target.table, by_file, run_id=run_id)
    outcome.files_vacuumed = _vacuum(location, dry_run)
    if not dry_run:
        outcome.log_files_removed = _cleanup_log(location)
    table = DeltaTable(str(location))
    outcome.version_after = table.version()
    outcome.schema_changed = pa.schema(table.schema().to_arrow()) != schema_before
    outcome.seconds = round(time.monotonic() - started, 3)
    log.info(
        "%s: %d rows %s, %d old files %s (%.1f s)",
        target.table,
        outcome.rows_expired if dry_run else outcome.rows_deleted,
        "would be deleted" if dry_run else "deleted",
        outcome.files_vacuumed,
        "to vacuum" if dry_run else "vacuumed",
        outcome.seconds,
    )
    return outcome


def _vacuum(location: Path, dry_run: bool) -> int:
    """Files removed from the table longer ago than its time-travel window."""
    table = DeltaTable(str(location))
    listed = table.vacuum(dry_run=True)
    present = [p for p in listed if (Path(p) if os.path.isabs(p) else location / p).exists()]
    if present and not dry_run:  # delta-rs commits a vacuum even when nothing is left to delete
        table.vacuum(dry_run=False)
    return len(present)


def _cleanup_log(location: Path) -> int:
    log_dir = location / "_delta_log"
    before = sum(1 for _ in log_dir.iterdir())
    DeltaTable(str(location)).cleanup_metadata()
    return max(0, before - sum(1 for _ in log_dir.iterdir()))


def _refresh_views(settings: Settings, outcomes: Sequence[tuple[RetentionTarget, TableRetention]]):
    from privacy_lakehouse.duckdb_setup import connect

    changed = [(t, o) for t, o in outcomes if o.schema_changed and t.schema]
    if not changed or not settings.warehouse_path.exists():
        return
    conn = connect(settings.warehouse_path, extension_dir=settings.lake_dir / "_duckdb_extensions")
    try:
        for target, outcome in changed:
            location = str((settings.lake_dir / target.table).resolve()).replace("'", "''")
            schema = '"' + target.schema.replace('"', '""') + '"'
            name = '"' + target.model.replace('"', '""') + '"'
            # A view freezes its column list: recreate it after a schema change.
            conn.execute(
                f"create or replace view {schema}.{name} as select * from delta_scan('{location}')"
            )
            outcome.view_refreshed = True
    finally:
        conn.close()


def enforce_retention(
    targets: Sequence[RetentionTarget],
    *,
    settings: Settings | None = None,
    lake_dir: Path | None = None,
    as_of: date | None = None,
    dry_run: bool = False,
    select: Iterable[str] | None = None,
    actor: str | None = None,
    trigger: str = "command",
    take_lock: bool = True,
    refresh_views: bool = True,
) -> dict[str, Any]:
    """Apply the rules, vacuum and clean up logs; write evidence and an audit entry.

    Returns the run record (also written to `lake/_evidence/retention/`). `take_lock=False` is
    for callers that already hold the lake's build lock (the after-build hook).
    """
    from privacy_lakehouse.erasure import default_actor, lake_lock, relative_to, write_evidence

    settings = settings or load_settings()
    lake_dir = Path(lake_dir or settings.lake_dir)
    as_of = as_of or datetime.now(timezone.utc).date()
    actor = actor or default_actor("retention")
    wanted = set(select or ())
    known = {t.model for t in targets}
    if wanted - known:
        raise RetentionError(f"--select names unknown delta models: {sorted(wanted - known)}")
    chosen = [t for t in targets if not wanted or t.model in wanted]
    started_at = datetime.now(timezone.utc)
    started = time.monotonic()
    run_id = str(uuid.uuid4())
    lock = lake_lock(lake_dir, "retention") if take_lock else _no_lock()
    with lock:
        outcomes = [(t, _enforce_table(lake_dir, t, as_of, dry_run, run_id)) for t in chosen]
        if refresh_views and not dry_run:
            _refresh_views(settings, outcomes)
        record = {
            "kind": "retention",
            "run_id": run_id,
            "trigger": trigger,
            "actor": actor,
            "dry_run": dry_run,
            "as_of": as_of.isoformat(),
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 3),
            "rules": sum(1 for t in chosen if t.rule),
            "rows_expired": sum(o.rows_expired for _, o in outcomes),
            "rows_deleted": sum(o.rows_deleted for _, o in outcomes),
            "files_vacuumed": sum(o.files_vacuumed for _, o in outcomes),
            "tables": [o.to_dict() for _, o in outcomes],
        }
        evidence = write_evidence(lake_dir, EVIDENCE_FOLDER, record)
    record["evidence_file"] = relative_to(evidence, settings.root)
    AuditLog(lake_dir / "_audit" / "audit.jsonl").append(
        actor=actor,
        action="retention",
        object=sorted({o.table for _, o in outcomes if o.rule}),
        decision="n.a.",
        details={
            "run_id": run_id,
            "trigger": trigger,
            "dry_run": dry_run,
            "as_of": record["as_of"],
            "rows_expired": record["rows_expired"],
            "rows_deleted": record["rows_deleted"],
            "files_vacuumed": record["files_vacuumed"],
            "tables": {
                o.table + (f"[{o.scope}]" if o.scope else ""): {
                    "rows_deleted": o.rows_deleted,
                    "version_before": o.version_before,
                    "version_after": o.version_after,
                }
                for _, o in outcomes
                if o.rule
            },
            "evidence_file": record["evidence_file"],
        },
    )
    return record


class _no_lock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


def as_of_from_environment() -> date | None:
    """`--vars '{retention_as_of: ...}'` of the running dbt command, else the env variable."""
    value = None
    try:
        from dbt.flags import get_flags

        value = (getattr(get_flags(), "VARS", None) or {}).get(AS_OF_VAR)
    except Exception:  # noqa: BLE001 - outside dbt there are no flags
        value = None
    value = value or os.environ.get(AS_OF_ENV)
    return parse_as_of(value) if value else None


def parse_as_of(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise RetentionError("the retention as-of date must look like YYYY-MM-DD") from None


@after_build("retention")
def retention_after_build(context: BuildContext) -> dict[str, Any]:
    """Enforce every rule (and vacuum every Delta model) at the end of a build. Models that
    failed in this run are left alone."""
    failed = {r.get("unique_id") for r in context.results if r.get("status") == "error"}
    models = [m for m in context.models if m.get("unique_id") not in failed]
    targets = targets_from_models(models, _policy_purposes())
    record = enforce_retention(
        targets,
        lake_dir=context.lake_dir,
        as_of=as_of_from_environment(),
        actor=f"dbt {context.command or 'build'} {context.invocation_id}".strip(),
        trigger="after_build",
        take_lock=False,  # the build holds the lake's lock
        refresh_views=False,  # dbt has just created the views, and deletes keep the schema
    )
    return {
        "as_of": record["as_of"],
        "rules": record["rules"],
        "rows_deleted": record["rows_deleted"],
        "files_vacuumed": record["files_vacuumed"],
        "evidence_file": record["evidence_file"],
    }


# ---------------------------------------------------------------------------------------------
# The command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Enforce the retention rules declared in model configs: delete expired rows, vacuum "
        "files older than each table's time-travel window, clean up old log files. Reads the "
        "rules from dbt's manifest.json (run `dbt parse` or a build first)."
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="count what would be deleted and vacuumed; change nothing",
    )
    parser.add_argument(
        "--select",
        action="append",
        metavar="MODEL",
        default=[],
        help="only this model (repeatable)",
    )
    parser.add_argument(
        "--as-of", metavar="YYYY-MM-DD", help="the date rules count back from (default: today, UTC)"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        help="dbt manifest to read rules from (default: manifest.json in dbt's target path, "
        "DBT_TARGET_PATH or target)",
    )
    parser.add_argument("--json", action="store_true", help="print the run record as JSON")


def run(args: argparse.Namespace) -> int:
    from privacy_lakehouse.erasure import ErasureError
    from privacy_lakehouse.keyring import KeyringError

    settings = load_settings()
    manifest_path = args.manifest or settings.manifest_path
    try:
        if not manifest_path.is_file():
            raise RetentionError(
                f"{manifest_path} not found: run `dbt parse` (or a build) so the retention rules "
                "in model configs can be read"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RetentionError(f"cannot read {manifest_path}: {error}") from None
        targets = targets_from_manifest(manifest, _policy_purposes())
        as_of = parse_as_of(args.as_of) if args.as_of else as_of_from_environment()
        record = enforce_retention(
            targets, settings=settings, as_of=as_of, dry_run=args.dry_run, select=args.select
        )
    # ErasureError: another run holds the lake lock; KeyringError: the key store is not there.
    except (RetentionError, ErasureError, KeyringError) as error:
        print(f"retention failed: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(record, indent=2, default=str))
    else:
        print(render(record))
    return 0


def render(record: Mapping[str, Any]) -> str:
    dry_run = record["dry_run"]
    verb = "would be deleted" if dry_run else "deleted"
    vacuumed = "to vacuum" if dry_run else "vacuumed"
    lines = [f"retention as of {record['as_of']}{' (dry run)' if dry_run else ''}:"]
    for table in record["tables"]:
        if table["skipped"]:
            lines.append(f"  {table['table']}: skipped ({table['skipped']})")
            continue
        name = table["table"] + (f" [{table['source_name']}]" if table["source_name"] else "")
        count = table["rows_expired"] if dry_run else table["rows_deleted"]
        if table["rule"]:
            rule = table["rule"]
            what = (
                f"{rule['column']} before {table['cutoff']}"
                if "column" in rule
                else f"purpose {rule['purpose']} expired before {table['cutoff']}"
            )
            lines.append(
                f"  {name}: {count} of {table['rows_total']} rows {verb} ({what}); "
                f"{table['files_vacuumed']} old files {vacuumed}; "
                f"v{table['version_before']} -> v{table['version_after']}"
            )
        elif table["files_vacuumed"]:
            lines.append(f"  {table['table']}: {table['files_vacuumed']} old files {vacuumed}")
    total = record["rows_expired"] if dry_run else record["rows_deleted"]
    lines.append(
        f"total: {total} rows {verb}, {record['files_vacuumed']} old files {vacuumed}; "
        f"evidence: {record['evidence_file']}"
    )
    return "\n".join(lines)
