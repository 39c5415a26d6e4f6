"""Right to erasure: delete a subject from every layer, prove it physically gone, keep them out.

`privacy-lakehouse erase --email X | --customer-id X [--request-id R] [--batch FILE]` and
`erase_subjects(requests)` run these steps, all under the lake's build lock:

1. Resolve each identifier to tokens without logging it: an email becomes
   pl_token(lower(trim(email)), 'email') under every salt version, looked up in the subject
   directory (bronze `raw_core_banking__customers`); the subject's `customer_id_enc` is decrypted
   (purpose `erasure_verification`, audited) to compute the subject tokens (every salt version)
   and the tombstone token. A customer number skips the lookup. Landing files, when present, are
   a fallback for emails never ingested.
2. Collect what the verifier will look for (see `erasure_verifier`): the subject's tokens,
   ciphertexts, record hashes and ingest keys from their rows in every table, their identifiers
   decrypted from those rows and read from landing files still present. Quarantined rows that
   have no customer key (e.g. a customer row delivered without its customer number) are
   decrypted and searched for the subject's identifiers, so they are erased too.
3. Append a tombstone (tombstone_token, erased_at, request_id) to `control/erasure_tombstones`
   first: bronze filters by it (macros/ingest/not_erased.sql), so a crash later in the run or a
   replay of old landing files never brings the subject back. Quarantined records that named no
   customer but hold the subject's identifiers get a tombstone of their record hash,
   pl_token('record:' || record_hash, 'tombstone'); the quarantine model must filter by it
   (`not_erased("'record:' || record_hash")`) for replays of those records to stay out.
4. Delete the subject's rows from every Delta table that has a `subject_token` column (bronze,
   quarantine, silver, gold). No delete predicate names a value, because delta-rs stores
   predicates in the commit log: Parquet footer statistics (inside the data files, never in the
   log) select the files that may hold the subject; those files are read, rewritten without the
   subject's rows (new files written by delta-rs, so their log statistics are delta-rs' own) and
   swapped in one commit of remove and add actions. Tables clustered by subject token (the
   `cluster_by` model config) keep each subject in few files, so the cost grows with the data
   that holds the subject, not with table size. Partitioned tables, or tables with deletion
   vectors or column mapping, fall back to a MERGE against a table of tokens, whose stored
   predicate names only columns. One commit per table for the whole batch. Tables are read
   (step 2, while landing is searched) and rewritten side by side, up to TABLE_THREADS at
   once. A run that fails part way is run again to finish: the tombstone is already there,
   done tables find nothing.
5. Delete the subject from DuckDB files (the snapshot `snapshots.snap_customers` in
   `warehouse.duckdb`, and any serving file with a `subject_token` column), CHECKPOINT, and
   rebuild each file that held the subject (COPY FROM DATABASE into a fresh file, swapped in
   atomically): freed DuckDB blocks keep old bytes.
6. Destroy the subject's data keys (crypto-shredding: copies anywhere else become unreadable).
7. On every Delta table of the lake (control tables aside): VACUUM with full=True and retention
   0, checkpoint, drop log entries older than that checkpoint and clean up old log files. Old
   versions of any table may hold the subject, and log statistics of older commits may hold
   values derived from their rows: an erasure ends time travel across the lake.
8. Verify (`erasure_verifier.verify_erasure`): scan every file of the lake, the DuckDB files,
   dbt's target and log folders (`verification_roots`) for every trace of the subjects.
   Evidence (tables, rows deleted, files rewritten, versions, timestamps, the verifier's
   report; never values) goes to `lake/_evidence/erasure/` and an `erasure` entry to the
   audit log. A failed verification raises ErasureVerificationFailed (the CLI exits 1).

Out of scope, by design: landing files (the source systems' copy; the evidence counts the
landing files that still hold the subject so they can be purged, and the tombstone keeps
replays out); the key store, which keeps a destroyed-key marker under the subject token so no
new key is ever made for it; the tombstone token itself.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import getpass
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import AddAction, CommitProperties, RemoveAction

from privacy_lakehouse.audit_log import AuditLog, find_personal_data
from privacy_lakehouse.delta_layout import writer_properties
from privacy_lakehouse.erasure_verifier import (
    SubjectTraces,
    TraceMatcher,
    VerificationReport,
    verify_erasure,
)
from privacy_lakehouse.keyring import KEY_STORE_FILE, Keyring, KeyringError
from privacy_lakehouse.settings import Settings, dbt_path, load_settings
from privacy_lakehouse.sql_quote import quote_ident as _quote

log = logging.getLogger("privacy_lakehouse.erasure")

SUBJECT_COLUMN = "subject_token"
SUBJECT_DIRECTORY = "bronze/raw_core_banking__customers"
TOMBSTONE_TABLE = "control/erasure_tombstones"
CONTROL_FOLDER = "control"
VERIFY_PURPOSE = "erasure_verification"
EVIDENCE_FOLDER = "erasure"
SCRATCH_FOLDER = "_erasure_scratch"
COMMIT_NOTE = "privacy_lakehouse erasure"

# Ciphertext columns of the subject's rows that hold an identifier, and what it is: the verifier
# searches for their plaintext. Names are encrypted separately and searched as "first last".
IDENTIFIER_CIPHERTEXTS = {
    "customer_id_enc": "customer_id",
    "email_enc": "email",
    "phone_enc": "phone",
    "national_id_enc": "national_id",
    "street_address_enc": "street_address",
    "iban_enc": "iban",
    "card_number_enc": "card_number",
}
NAME_CIPHERTEXTS = ("first_name_enc", "last_name_enc")
# Ingest metadata unique to each landing record (hashes of it): kept by delta-rs as file
# statistics in the log, so they are traces of the subject too.
DERIVED_COLUMNS = ("ingest_key", "record_hash")
# Quarantined rows: the record as ciphertext, and whether it named a customer.
QUARANTINE_RECORD = "record_enc"
QUARANTINE_HAS_SUBJECT = "has_subject"
# A quarantined record that named no customer is tombstoned as
# pl_token('record:' || record_hash, 'tombstone'): the key a quarantine model can filter replays
# by (its customer tombstone cannot apply; see the module docstring).
RECORD_TOMBSTONE_PREFIX = "record:"
# Identifiers specific enough to attribute a quarantined record to a subject.
STRONG_IDENTIFIERS = (
    "customer_id",
    "email",
    "phone",
    "national_id",
    "iban",
    "card_number",
    "account_id",
)
# Landing sources that carry identifiers: folder, format, {column: kind}.
LANDING_IDENTIFIERS: tuple[tuple[str, str, dict[str, str]], ...] = (
    (
        "core_banking/customers",
        "csv",
        {
            "customer_id": "customer_id",
            "email": "email",
            "phone": "phone",
            "national_id": "national_id",
            "street_address": "street_address",
        },
    ),
    ("core_banking/accounts", "csv", {"account_id": "account_id", "iban": "iban"}),
    ("cards/transactions", "parquet", {"account_id": "account_id", "card_number": "card_number"}),
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
_TOKEN_VALUE = re.compile(r"v[1-9][0-9]{0,8}:[0-9a-f]{32}")
_LOG_ENTRY = re.compile(r"(\d{20})\.(json|crc|checkpoint\.parquet|checkpoint\.\d+\.\d+\.parquet)")
_COMPACTED_ENTRY = re.compile(r"(\d{20})\.(\d{20})\.compacted\.json")


class ErasureError(RuntimeError):
    """An erasure could not run. Messages never hold identifiers, tokens or values."""


class ErasureVerificationFailed(ErasureError):
    """The erasure ran but the verifier still found traces; `evidence` says where."""

    def __init__(self, message: str, evidence: dict[str, Any]):
        super().__init__(message)
        self.evidence = evidence


@dataclass(frozen=True)
class ErasureRequest:
    """One "forget this person" request, by email or by customer number. Values never print."""

    email: str | None = field(default=None, repr=False)
    customer_id: str | None = field(default=None, repr=False)
    request_id: str = ""

    def __post_init__(self) -> None:
        given = [v for v in (self.email, self.customer_id) if v is not None]
        if len(given) != 1 or not isinstance(given[0], str) or not given[0].strip():
            raise ErasureError("an erasure request needs exactly one of email or customer_id")
        if not self.request_id:
            object.__setattr__(self, "request_id", f"erasure-{uuid.uuid4()}")
        check_request_id(self.request_id)

    @property
    def identifier_kind(self) -> str:
        return "email" if self.email is not None else "customer_id"


def check_request_id(request_id: object) -> str:
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise ErasureError(
            "a request id is 1-64 letters, digits or . _ : - (it is stored in evidence and in "
            "the tombstone table, so it must not be an identifier of the subject)"
        )
    if find_personal_data(request_id):
        raise ErasureError("a request id looks like personal data; use a ticket number instead")
    return request_id


# ---------------------------------------------------------------------------------------------
# Small helpers


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def default_actor(command: str = "erasure") -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in some containers
        user = "unknown"
    return f"privacy-lakehouse {command}:{user}"


@contextlib.contextmanager
def lake_lock(lake_dir: Path, purpose: str) -> Iterator[None]:
    """The lake's build lock (the same flock dbt builds take): one writer at a time."""
    lake_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lake_dir / ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            raise ErasureError(
                f"another build, retention run or erasure holds the lake ({holder}); nothing "
                "was changed: run again when it has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {_iso(_utc_now())} ({purpose})".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_evidence(lake_dir: Path, folder: str, record: Mapping[str, Any]) -> Path:
    """One JSON file per run, written atomically; the name sorts by time."""
    target_dir = lake_dir / "_evidence" / folder
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = _utc_now().strftime("%Y-%m-%dT%H-%M-%SZ")
    path = target_dir / f"{stamp}_{record['run_id']}.json"
    staged = path.with_name("." + path.name + ".tmp")
    staged.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(staged, path)
    return path


def relative_to(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# Delta tables of the lake


@dataclass(frozen=True)
class LakeTable:
    name: str  # relative to the lake, e.g. "bronze/raw_cards__transactions"
    path: Path
    columns: tuple[str, ...]

    @property
    def is_control(self) -> bool:
        return self.name.split("/", 1)[0] == CONTROL_FOLDER


def discover_tables(lake_dir: Path, max_depth: int = 3) -> list[LakeTable]:
    """Every Delta table under the lake (a folder with a `_delta_log`), sorted by name."""
    found: list[LakeTable] = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / "_delta_log").is_dir():
            table = DeltaTable(str(folder))
            columns = tuple(pa.schema(table.schema().to_arrow()).names)
            found.append(LakeTable(relative_to(folder, lake_dir), folder, columns))
            return
        if depth >= max_depth:
            return
        for child in sorted(folder.iterdir()):
            if child.is_dir() and not child.name.startswith((".", "_")):
                walk(child, depth + 1)

    if lake_dir.is_dir():
        walk(lake_dir, 0)
    return found


def _plain_types(table: pa.Table) -> pa.Table:
    """View types to their classic forms (pyarrow cannot filter or take string views)."""
    fields = []
    for column in table.schema:
        kind = column.type
        if pa.types.is_string_view(kind):
            kind = pa.string()
        elif pa.types.is_binary_view(kind):
            kind = pa.binary()
        fields.append(column.with_type(kind))
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table if schema == table.schema else table.cast(schema)


def _match_mask(table: pa.Table, conditions: Mapping[str, pa.Array]) -> pa.ChunkedArray | pa.Array:
    """Rows whose value is in any condition's set; a column a file lacks (written before the
    column was added) matches nothing."""
    mask = pa.array([False] * table.num_rows, pa.bool_())
    for column, values in conditions.items():
        if column in table.column_names:
            hit = pc.is_in(table[column].cast(pa.string()), value_set=values)
            mask = pc.or_(mask, pc.fill_null(hit, False))
    return mask


def _may_hold(metadata: pq.FileMetaData, sorted_values: Mapping[str, list[str]]) -> bool:
    """Whether the Parquet footer statistics leave room for any of the values."""
    index = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    for column, values in sorted_values.items():
        if not values:
            continue
        position = index.get(column)
        if position is None:
            return True  # column missing from this file: read it and let the reader decide
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(position).statistics
            if stats is None or not stats.has_min_max:
                return True
            low, high = stats.min, stats.max
            if isinstance(low, bytes) or isinstance(high, bytes):
                try:
                    low, high = bytes(low).decode(), bytes(high).decode()
                except UnicodeDecodeError:
                    return True
            if not isinstance(low, str) or not isinstance(high, str):
                return True
            first = bisect_left(values, low)
            if first < len(values) and values[first] <= high:
                return True
    return False


def _key_hits(parquet: pq.ParquetFile, value_sets: Mapping[str, pa.Array]) -> int:
    """How many rows of the file match, from the key columns alone: min/max statistics let
    through files that hold none of the values, and those are never decoded whole."""
    present = set(parquet.schema_arrow.names)
    keys = _plain_types(parquet.read(columns=[c for c in value_sets if c in present]))
    return pc.sum(_match_mask(keys, value_sets)).as_py() or 0


def _table_files(table: DeltaTable) -> list[tuple[str, int]]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return list(zip(actions["path"].to_pylist(), actions["size_bytes"].to_pylist(), strict=True))


def _rewrite_supported(table: DeltaTable) -> bool:
    config = table.metadata().configuration
    protocol = table.protocol()
    features = set(protocol.reader_features or []) | set(protocol.writer_features or [])
    return (
        not table.metadata().partition_columns
        and config.get("delta.columnMapping.mode", "none") == "none"
        and config.get("delta.enableDeletionVectors", "false").lower() != "true"
        and "deletionVectors" not in features
    )


@dataclass
class RowRemoval:
    """What removing rows from one Delta table did (counts and versions, never values)."""

    table: str
    method: str
    rows_deleted: int = 0
    files_total: int = 0
    files_read: int = 0
    files_rewritten: int = 0
    files_added: int = 0
    version_before: int | None = None
    version_after: int | None = None
    seconds: float = 0.0
    deleted_by_value: Counter = field(default_factory=Counter, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "method": self.method,
            "rows_deleted": self.rows_deleted,
            "files_total": self.files_total,
            "files_read": self.files_read,
            "files_rewritten": self.files_rewritten,
            "files_added": self.files_added,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "seconds": self.seconds,
        }


# Tables are erased side by side: each has its own Delta log and scratch folder, and reading,
# filtering and writing Parquet release the interpreter lock. At most this many at once, never
# more than the machine's cores.
TABLE_THREADS = 4


def _per_table(work: Callable[[LakeTable], Any], tables: Sequence[LakeTable]) -> list[Any]:
    """work(table) for every table, in parallel, results in the tables' order. An error is
    raised once every table's work has ended, so no thread is cut off mid-commit; an erasure
    that failed is run again to finish (step 4 of the module docstring)."""
    workers = max(1, min(TABLE_THREADS, os.cpu_count() or 1, len(tables)))
    if workers == 1:
        return [work(table) for table in tables]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pl-erase") as pool:
        futures = [pool.submit(work, table) for table in tables]
    return [future.result() for future in futures]


def find_rows(
    location: Path, conditions: Mapping[str, Collection[str]]
) -> tuple[pa.Table | None, int, int]:
    """Rows whose `column` is in its value set (any condition), reading only the files whose
    Parquet footers allow a match. Returns (rows or None, files read, files in the table)."""
    table = DeltaTable(str(location))
    sorted_values = {c: sorted(set(v)) for c, v in conditions.items() if v}
    files = _table_files(table)
    if not sorted_values:
        return None, 0, len(files)
    value_sets = {c: pa.array(v, pa.string()) for c, v in sorted_values.items()}
    parts = []
    read = 0
    for relative, _ in files:
        path = location / relative
        parquet = pq.ParquetFile(path)
        if not _may_hold(parquet.metadata, sorted_values):
            continue
        read += 1
        if not _key_hits(parquet, value_sets):
            continue
        data = _plain_types(pq.read_table(path))
        matched = data.filter(_match_mask(data, value_sets))
        if matched.num_rows:
            parts.append(matched)
    if not parts:
        return None, read, len(files)
    return pa.concat_tables(parts, promote_options="permissive"), read, len(files)


def remove_rows(
    location: Path,
    conditions: Mapping[str, Collection[str]],
    *,
    scratch_root: Path,
    name: str | None = None,
    commit_note: str = COMMIT_NOTE,
) -> RowRemoval:
    """Delete the rows whose `column` value is in its set (conditions are OR-ed), with no value
    in the commit log. See the module docstring (step 4) for how."""
    started = time.monotonic()
    table = DeltaTable(str(location))
    sorted_values = {c: sorted(set(v)) for c, v in conditions.items() if v}
    method = "file_rewrite" if _rewrite_supported(table) else "merge"
    result = RowRemoval(table=name or location.name, method=method)
    result.version_before = result.version_after = table.version()
    files = _table_files(table)
    result.files_total = len(files)
    if sorted_values:
        if method == "merge":
            _remove_by_merge(table, sorted_values, result)
        else:
            _remove_by_rewrite(
                table, location, files, sorted_values, scratch_root, commit_note, result
            )
    result.version_after = DeltaTable(str(location)).version()
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _remove_by_rewrite(
    table: DeltaTable,
    location: Path,
    files: list[tuple[str, int]],
    sorted_values: dict[str, list[str]],
    scratch_root: Path,
    commit_note: str,
    result: RowRemoval,
) -> None:
    value_sets = {c: pa.array(v, pa.string()) for c, v in sorted_values.items()}
    scratch = scratch_root / uuid.uuid4().hex
    actions: list[AddAction | RemoveAction] = []
    moved: list[Path] = []
    removed_at = int(time.time() * 1000)
    configuration = dict(table.metadata().configuration)
    try:
        for relative, size in files:
            path = location / relative
            parquet = pq.ParquetFile(path)
            if not _may_hold(parquet.metadata, sorted_values):
                continue
            result.files_read += 1
            hits = _key_hits(parquet, value_sets)
            if not hits:
                continue
            data = _plain_types(pq.read_table(path))
            mask = _match_mask(data, value_sets)
            for column in (c for c in value_sets if c in data.column_names):
                matched = data[column].filter(mask).drop_null().cast(pa.string())
                result.deleted_by_value.update(matched.to_pylist())
            kept = data.filter(pc.invert(mask))
            result.rows_deleted += hits
            result.files_rewritten += 1
            actions.append(RemoveAction(relative, True, removed_at, size, {}))
            if kept.num_rows:
                # delta-rs writes the new file (and computes its log statistics as for any
                # write) into a scratch table; the file then moves into the real table.
                mode = "append" if (scratch / "_delta_log").exists() else "error"
                write_deltalake(
                    str(scratch),
                    kept,
                    mode=mode,
                    configuration=configuration,
                    writer_properties=writer_properties(),
                )
        if not actions:
            return
        for entry in sorted((scratch / "_delta_log").glob("*.json")) if scratch.exists() else []:
            for line in entry.read_text().splitlines():
                add = json.loads(line).get("add") if line.strip() else None
                if not add:
                    continue
                target = location / add["path"]
                os.replace(scratch / add["path"], target)
                moved.append(target)
                actions.append(
                    AddAction(
                        add["path"],
                        add["size"],
                        {},
                        add["modificationTime"],
                        True,
                        add.get("stats") or "",
                    )
                )
                result.files_added += 1
        table.create_write_transaction(
            actions,
            mode="append",
            schema=table.schema(),
            commit_properties=CommitProperties(custom_metadata={"userMetadata": commit_note}),
        )
        moved.clear()
    finally:
        for orphan in moved:  # a failed commit leaves no stray files behind
            orphan.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_by_merge(
    table: DeltaTable, sorted_values: dict[str, list[str]], result: RowRemoval
) -> None:
    for column, values in sorted_values.items():
        source = pa.table({column: pa.array(values, pa.string())})
        # The stored predicate names columns only; the values travel in the source table.
        metrics = (
            table.merge(
                source=source,
                predicate=f"target.{_quote(column)} = source.{_quote(column)}",
                source_alias="source",
                target_alias="target",
                writer_properties=writer_properties(),
                commit_properties=CommitProperties(custom_metadata={"userMetadata": COMMIT_NOTE}),
            )
            .when_matched_delete()
            .execute()
        )
        result.rows_deleted += int(metrics.get("num_target_rows_deleted") or 0)
        result.files_rewritten += int(metrics.get("num_target_files_removed") or 0)
        result.files_added += int(metrics.get("num_target_files_added") or 0)
        result.files_read = result.files_total


def purge_history(location: Path) -> dict[str, Any]:
    """End time travel on one table: vacuum every file the current version does not use
    (full, retention 0), checkpoint, and drop older log entries; then clean up expired logs."""
    table = DeltaTable(str(location))
    listed = table.vacuum(
        dry_run=True, retention_hours=0, enforce_retention_duration=False, full=True
    )
    present = [p for p in listed if (Path(p) if os.path.isabs(p) else location / p).exists()]
    if present:  # delta-rs commits a vacuum even when every listed file is already gone
        table.vacuum(dry_run=False, retention_hours=0, enforce_retention_duration=False, full=True)
        table = DeltaTable(str(location))
    version = table.version()
    log_dir = location / "_delta_log"
    older = [
        p
        for p in log_dir.iterdir()
        if _log_version(p.name) is not None and _log_version(p.name) < version
    ]
    stray = list(log_dir.glob("_commit_*.tmp"))  # crashed commits may hold anything
    if older:
        has_checkpoint = any(log_dir.glob(f"{version:020d}.checkpoint*.parquet"))
        if not has_checkpoint:
            table.create_checkpoint()
        for path in older + stray:
            path.unlink(missing_ok=True)
    else:
        for path in stray:
            path.unlink(missing_ok=True)
    DeltaTable(str(location)).cleanup_metadata()
    return {
        "files_vacuumed": len(present),
        "log_files_removed": len(older) + len(stray),
        "version_final": version,
    }


def _log_version(name: str) -> int | None:
    entry = _LOG_ENTRY.fullmatch(name)
    if entry:
        return int(entry.group(1))
    compacted = _COMPACTED_ENTRY.fullmatch(name)
    return int(compacted.group(2)) if compacted else None


# ---------------------------------------------------------------------------------------------
# Resolving requests to subjects


@dataclass
class _Subject:
    request_id: str
    customer_id: str | None = field(default=None, repr=False)
    subject_tokens: set[str] = field(default_factory=set, repr=False)
    tombstone_token: str | None = field(default=None, repr=False)
    # Tombstones of quarantined records that named no customer (see RECORD_TOMBSTONE_PREFIX).
    record_tombstones: set[str] = field(default_factory=set, repr=False)
    traces: SubjectTraces | None = field(default=None, repr=False)
    landing_files: set[str] = field(default_factory=set, repr=False)


class _Resolver:
    def __init__(self, settings: Settings, keyring: Keyring, actor: str):
        self.settings = settings
        self.keyring = keyring
        self.actor = actor
        self.directory = settings.lake_dir / SUBJECT_DIRECTORY

    def _tokens(self, value: str, salt: str) -> set[str]:
        versions = self.keyring.token_versions(value, salt)
        return set(versions.values()) or {self.keyring.token(value, salt)}

    def resolve(self, request: ErasureRequest) -> list[_Subject]:
        if request.customer_id is not None:
            customer_ids = {request.customer_id.strip(" ")}
            found_tokens: set[str] = set()
        else:
            customer_ids, found_tokens = self._customers_by_email(request.email or "")
        subjects = []
        for customer_id in sorted(customer_ids):
            subjects.append(
                _Subject(
                    request_id=request.request_id,
                    customer_id=customer_id,
                    subject_tokens=self._tokens(customer_id, "subject"),
                    tombstone_token=self.keyring.token(customer_id, "tombstone"),
                )
            )
        known = {t for s in subjects for t in s.subject_tokens}
        if found_tokens - known:
            # Rows whose key is already destroyed: their customer number cannot be read back,
            # but their token still says whose rows they are.
            subjects.append(
                _Subject(request_id=request.request_id, subject_tokens=found_tokens - known)
            )
        for subject in subjects:
            subject.traces = SubjectTraces(request.request_id)
            subject.traces.add("token", SUBJECT_COLUMN, subject.subject_tokens)
            if subject.customer_id:
                subject.traces.add("plaintext", "customer_id", [subject.customer_id])
        return subjects

    def _customers_by_email(self, email: str) -> tuple[set[str], set[str]]:
        forms = {email.strip(" ").lower(), email.strip().lower()}
        email_tokens = set().union(*(self._tokens(form, "email") for form in forms))
        customer_ids: set[str] = set()
        subject_tokens: set[str] = set()
        if DeltaTable.is_deltatable(str(self.directory)):
            rows = (
                DeltaTable(str(self.directory))
                .to_pyarrow_dataset()
                .to_table(
                    columns=[SUBJECT_COLUMN, "customer_id_enc"],
                    filter=ds.field("email_token").isin(sorted(email_tokens)),
                )
            )
            rows = _plain_types(rows)
            subject_tokens = set(rows[SUBJECT_COLUMN].drop_null().to_pylist())
            plain = self.keyring.decrypt_many(
                rows[SUBJECT_COLUMN],
                rows["customer_id_enc"],
                VERIFY_PURPOSE,
                self.actor,
                destroyed_as_null=True,
            )
            customer_ids = {v for v in plain.to_pylist() if v}
        if not customer_ids:
            customer_ids = _landing_customers_by_email(self.settings.landing_dir, forms)
        return customer_ids, subject_tokens


def _landing_files(landing_dir: Path, folder: str, fmt: str) -> list[str]:
    from privacy_lakehouse.landing import landing_file_readable

    suffix = ".csv" if fmt == "csv" else ".parquet"
    base = landing_dir / folder
    files = sorted(str(p) for p in base.glob(f"*{suffix}")) if base.is_dir() else []
    # The build skips a file it cannot read; one such file would fail the whole read.
    return [f for f in files if landing_file_readable(f)]


def _landing_relation(folder: str) -> str:
    """The landing files as the build reads them (the source's reader, over `$files`): with
    DuckDB's dialect sniffer instead, one ragged row could make it misread a whole file."""
    from privacy_lakehouse.landing import LANDING_SOURCES

    source = next(s for s in LANDING_SOURCES if s.folder == folder)
    return source.reader.format(glob="$files")


def _landing_customers_by_email(landing_dir: Path, forms: set[str]) -> set[str]:
    import duckdb

    files = _landing_files(landing_dir, "core_banking/customers", "csv")
    if not files:
        return set()
    conn = duckdb.connect()
    try:
        conn.register("pl_forms", pa.table({"email": sorted(forms)}))
        rows = conn.execute(
            f"select distinct nullif(trim(customer_id), '') "
            f"from {_landing_relation('core_banking/customers')} "
            "where lower(trim(email)) in (select email from pl_forms)",
            {"files": files},
        ).fetchall()
    finally:
        conn.close()
    return {row[0] for row in rows if row[0]}


def _landing_identifiers(landing_dir: Path, subjects: Sequence[_Subject]) -> None:
    """Identifiers of the subjects in landing files still present, and which files hold them."""
    import duckdb

    by_customer = {s.customer_id: s for s in subjects if s.customer_id}
    if not by_customer:
        return
    conn = duckdb.connect()
    try:
        conn.register("pl_customers", pa.table({"customer_id": sorted(by_customer)}))
        for folder, fmt, columns in LANDING_IDENTIFIERS:
            files = _landing_files(landing_dir, folder, fmt)
            if not files:
                continue
            relation = _landing_relation(folder)
            available = {
                row[0]
                for row in conn.execute(
                    f"describe select * from {relation}", {"files": files}
                ).fetchall()
            }
            wanted = [c for c in columns if c in available and c != "customer_id"]
            names = ["first_name", "last_name"] if {"first_name", "last_name"} <= available else []
            selected = ", ".join(_quote(c) for c in [*wanted, *names]) or "null as none"
            rows = conn.execute(
                f"select trim(customer_id), filename, {selected} from {relation} "
                "where trim(customer_id) in (select customer_id from pl_customers)",
                {"files": files},
            ).fetchall()
            for customer_id, filename, *values in rows:
                subject = by_customer[customer_id]
                subject.landing_files.add(Path(filename).name)
                for column, value in zip(wanted, values, strict=False):
                    subject.traces.add("plaintext", columns[column], [value])
                if names:
                    first, last = values[len(wanted)], values[len(wanted) + 1]
                    if first and last:
                        subject.traces.add("plaintext", "name", [f"{first} {last}"])
    finally:
        conn.close()


def _traces_from_rows(
    rows: pa.Table, owner_of: Mapping[str, _Subject], keyring: Keyring, actor: str
) -> None:
    """Tokens, ciphertexts, derived values and decrypted identifiers of the subjects' rows.

    Tokens and ciphertexts are recognised by the keyring's formats, not by column names."""
    tokens = rows[SUBJECT_COLUMN].to_pylist()
    owners = [owner_of.get(t) for t in tokens]
    for column in rows.column_names:
        values = rows[column]
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            continue
        listed = values.to_pylist()
        present = [v for v in listed if v]
        if not present:
            continue
        if all(_TOKEN_VALUE.fullmatch(v) for v in present):
            category = "token"
        elif all(_looks_like_ciphertext(v) for v in present):
            category = "ciphertext"
        elif column in DERIVED_COLUMNS:
            category = "derived"
        else:
            continue
        for owner, value in zip(owners, listed, strict=True):
            if owner is not None and value:
                owner.traces.add(category, column, [value])
        if category == "ciphertext" and (
            column in IDENTIFIER_CIPHERTEXTS or column in NAME_CIPHERTEXTS
        ):
            plain = keyring.decrypt_many(
                tokens, values, VERIFY_PURPOSE, actor, destroyed_as_null=True
            ).to_pylist()
            if column in IDENTIFIER_CIPHERTEXTS:
                for owner, value in zip(owners, plain, strict=True):
                    if owner is not None and value:
                        owner.traces.add("plaintext", IDENTIFIER_CIPHERTEXTS[column], [value])
    if set(NAME_CIPHERTEXTS) <= set(rows.column_names):
        first = keyring.decrypt_many(
            tokens, rows[NAME_CIPHERTEXTS[0]], VERIFY_PURPOSE, actor, destroyed_as_null=True
        ).to_pylist()
        last = keyring.decrypt_many(
            tokens, rows[NAME_CIPHERTEXTS[1]], VERIFY_PURPOSE, actor, destroyed_as_null=True
        ).to_pylist()
        for owner, first_name, last_name in zip(owners, first, last, strict=True):
            if owner is not None and first_name and last_name:
                owner.traces.add("plaintext", "name", [f"{first_name} {last_name}"])


def _looks_like_ciphertext(value: str) -> bool:
    # The keyring's format: base64 of 0x01 || nonce (12) || ciphertext || tag (16).
    if len(value) < 40 or not value.startswith("A"):
        return False
    import base64
    import binascii

    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) >= 29 and raw[0] == 1


def _quarantined_without_subject(
    table: LakeTable, subjects: Sequence[_Subject], keyring: Keyring, actor: str
) -> dict[str, _Subject]:
    """Ingest keys of quarantined rows that named no customer but hold a subject's identifier."""
    needles = []
    for subject in subjects:
        strong = SubjectTraces(subject.request_id)
        for kind in STRONG_IDENTIFIERS:
            strong.add("plaintext", kind, subject.traces.plaintext.get(kind, ()))
        needles.extend((n, subject) for n in strong.needles())
    if not needles:
        return {}
    rows = _plain_types(
        DeltaTable(str(table.path))
        .to_pyarrow_dataset()
        .to_table(
            columns=[SUBJECT_COLUMN, "ingest_key", QUARANTINE_RECORD],
            filter=ds.field(QUARANTINE_HAS_SUBJECT) == False,  # noqa: E712 - an Arrow expression
        )
    )
    if rows.num_rows == 0:
        return {}
    matcher = TraceMatcher([n for n, _ in needles])
    owner_of_needle = {n: s for n, s in needles}
    plain = keyring.decrypt_many(
        rows[SUBJECT_COLUMN], rows[QUARANTINE_RECORD], VERIFY_PURPOSE, actor, destroyed_as_null=True
    )
    candidates = matcher.prefilter(plain)
    matched: dict[str, _Subject] = {}
    keys = rows["ingest_key"].to_pylist()
    for position, (is_candidate, text) in enumerate(
        zip(candidates.to_pylist(), plain.to_pylist(), strict=True)
    ):
        if not is_candidate or not text:
            continue
        hits = matcher.find_in_text(text)
        if hits:
            owner = owner_of_needle[next(iter(hits))]
            matched[keys[position]] = owner
    return matched


# ---------------------------------------------------------------------------------------------
# DuckDB files


def _release_in_process_dbt(database: Path) -> None:
    """A dbt run earlier in this process keeps its DuckDB instance open; close it so that what
    the next run opens is the rebuilt file, not the replaced one (only in-process use)."""
    module = sys.modules.get("dbt.adapters.duckdb.connections")
    manager = getattr(module, "DuckDBConnectionManager", None)
    environment = getattr(manager, "_ENV", None)
    path = getattr(getattr(environment, "creds", None), "path", None)
    if environment is None or not path or path == ":memory:":
        return
    if Path(path).resolve() != database.resolve():
        return
    with manager._LOCK:
        with contextlib.suppress(Exception):
            environment.close()
        manager._ENV = None


def _open_duckdb(database: Path, extension_dir: Path):
    """The project's connection configuration (DuckDB allows one per file and process), without
    loading the Delta extension: only base tables are touched and views are copied as text."""
    import duckdb

    from privacy_lakehouse import duckdb_setup

    try:
        return duckdb.connect(str(database), config=duckdb_setup.connection_config(extension_dir))
    except duckdb.IOException:
        raise ErasureError(
            f"{database.name} is open in another process (a BI tool?): close it and run the "
            "erasure again; the Delta tables are already done, the rerun finishes the rest"
        ) from None


def duckdb_files(lake_dir: Path) -> list[Path]:
    return sorted(
        p for p in lake_dir.rglob("*.duckdb") if p.is_file() and "_duckdb_extensions" not in p.parts
    )


def _erase_from_duckdb(
    database: Path, tokens: Sequence[str], residue: TraceMatcher, extension_dir: Path
) -> dict[str, Any]:
    from privacy_lakehouse.erasure_verifier import scan_file_bytes

    _release_in_process_dbt(database)
    deleted: dict[str, int] = {}
    conn = _open_duckdb(database, extension_dir)
    try:
        tables = conn.execute(
            "select t.schema_name, t.table_name from duckdb_tables() t "
            "join duckdb_columns() c using (database_name, schema_name, table_name) "
            "where t.database_name = current_database() and not t.temporary "
            "and c.column_name = ? order by 1, 2",
            [SUBJECT_COLUMN],
        ).fetchall()
        conn.register("pl_erased_tokens", pa.table({SUBJECT_COLUMN: pa.array(tokens, pa.string())}))
        for schema, name in tables:
            relation = f"{_quote(schema)}.{_quote(name)}"
            count = conn.execute(
                f"delete from {relation} where {_quote(SUBJECT_COLUMN)} in "
                f"(select {_quote(SUBJECT_COLUMN)} from pl_erased_tokens)"
            ).fetchone()[0]
            if count:
                deleted[f"{schema}.{name}"] = int(count)
        conn.unregister("pl_erased_tokens")
        conn.execute("checkpoint")
    finally:
        conn.close()
    # A file rows were deleted from is rebuilt in any case (its freed blocks keep the values);
    # only a file nothing was deleted from is searched for traces left in freed blocks earlier.
    rebuilt = False
    if deleted or scan_file_bytes(database, residue):
        rebuild_duckdb_file(database, extension_dir)
        rebuilt = True
    return {"rows_deleted": sum(deleted.values()), "tables": deleted, "rebuilt": rebuilt}


def rebuild_duckdb_file(database: Path, extension_dir: Path) -> None:
    """Copy every object into a fresh file and swap it in atomically: freed blocks of the old
    file (which keep deleted values) never reach the new one."""
    fresh = database.with_name(f".{database.name}.rebuild-{uuid.uuid4().hex}")
    conn = _open_duckdb(database, extension_dir)
    try:
        catalog = conn.execute("select current_database()").fetchone()[0]
        path_literal = "'" + str(fresh).replace("'", "''") + "'"
        conn.execute(f"attach {path_literal} as pl_rebuild")
        conn.execute(f"copy from database {_quote(catalog)} to pl_rebuild")
        conn.execute("detach pl_rebuild")
    except BaseException:
        fresh.unlink(missing_ok=True)
        raise
    finally:
        conn.close()
    os.replace(fresh, database)
    database.with_name(database.name + ".wal").unlink(missing_ok=True)
    fd = os.open(database.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Tombstones


def _append_tombstones(lake_dir: Path, subjects: Sequence[_Subject], at: datetime) -> dict:
    location = lake_dir / TOMBSTONE_TABLE
    if not DeltaTable.is_deltatable(str(location)):
        from privacy_lakehouse.delta_writer import ensure_control_tables

        ensure_control_tables(lake_dir)
    table = DeltaTable(str(location))
    existing = set(
        _plain_types(table.to_pyarrow_table(columns=["tombstone_token"]))["tombstone_token"]
        .drop_null()
        .to_pylist()
    )
    new_rows: dict[str, str] = {}
    records = 0
    for subject in subjects:
        for token in [subject.tombstone_token, *sorted(subject.record_tombstones)]:
            if token and token not in existing and token not in new_rows:
                new_rows[token] = subject.request_id
                records += token != subject.tombstone_token
    if new_rows:
        schema = pa.schema(table.schema().to_arrow())
        batch = pa.table(
            {
                "tombstone_token": pa.array(list(new_rows), pa.string()),
                "erased_at": pa.array([at] * len(new_rows), pa.timestamp("us", tz="UTC")),
                "request_id": pa.array(list(new_rows.values()), pa.string()),
            }
        )
        write_deltalake(table, _plain_types(batch).cast(_plain_schema(schema)), mode="append")
    return {
        "added": len(new_rows) - records,
        "record_tombstones_added": records,
        "already_present": sum(1 for s in subjects if s.tombstone_token in existing),
        "version_after": DeltaTable(str(location)).version(),
    }


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    return _plain_types(schema.empty_table()).schema


# ---------------------------------------------------------------------------------------------
# The erasure


def erase_subjects(
    requests: Iterable[ErasureRequest | Mapping[str, str]],
    *,
    settings: Settings | None = None,
    keyring: Keyring | None = None,
    actor: str | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    """Erase every subject of the requests in one run; return the evidence (never values).

    Raises ErasureError when nothing could be done (bad request, lake busy) and
    ErasureVerificationFailed when the verifier still finds traces (evidence written anyway).
    """
    settings = settings or load_settings()
    lake_dir = settings.lake_dir
    actor = actor or default_actor()
    parsed = [r if isinstance(r, ErasureRequest) else ErasureRequest(**dict(r)) for r in requests]
    if not parsed:
        raise ErasureError("no erasure request given")
    duplicates = [rid for rid, n in Counter(r.request_id for r in parsed).items() if n > 1]
    if duplicates:
        raise ErasureError(f"request ids must be unique in a batch: {sorted(duplicates)}")
    started = time.monotonic()
    started_at = _utc_now()
    run_id = str(uuid.uuid4())
    audit = AuditLog(lake_dir / "_audit" / "audit.jsonl")
    scratch_root = lake_dir / SCRATCH_FOLDER

    def audit_decrypt(who: str, purpose: str, subjects: int) -> None:
        audit.append(
            actor=who,
            action="decrypt",
            object=["erasure"],
            decision="allow",
            details={"purpose": purpose, "subjects": subjects, "run_id": run_id},
        )

    with lake_lock(lake_dir, "erasure"):
        own_keyring = keyring is None
        keyring = keyring or Keyring.open(settings, on_decrypt=audit_decrypt)
        try:
            shutil.rmtree(scratch_root, ignore_errors=True)
            record = _run_erasure(parsed, settings, keyring, actor, scratch_root, run_id, verify)
        finally:
            shutil.rmtree(scratch_root, ignore_errors=True)
            if own_keyring:
                keyring.close()
        record["started_at"] = _iso(started_at)
        record["finished_at"] = _iso(_utc_now())
        record["seconds"] = round(time.monotonic() - started, 3)
        evidence_path = write_evidence(lake_dir, EVIDENCE_FOLDER, record)
    record["evidence_file"] = relative_to(evidence_path, settings.root)
    verification = record.get("verification") or {}
    audit.append(
        actor=actor,
        action="erasure",
        object=[t["table"] for t in record["tables"] if t["rows_deleted"]]
        + [d["file"] for d in record["duckdb_files"] if d["rows_deleted"]],
        decision="n.a.",
        details={
            "run_id": run_id,
            "request_ids": [r["request_id"] for r in record["requests"]],
            "subjects": record["subjects"],
            "rows_deleted": record["rows_deleted"],
            "files_rewritten": sum(t["files_rewritten"] for t in record["tables"]),
            "tombstones_added": record["tombstones"]["added"],
            "data_keys_destroyed": record["keys"].get("data_keys_destroyed", 0),
            "verification_passed": verification.get("passed"),
            "files_scanned": verification.get("files_scanned_total"),
            "evidence_file": record["evidence_file"],
        },
    )
    if verify and not verification.get("passed"):
        raise ErasureVerificationFailed(
            f"erasure verification FAILED: traces remain in {verification.get('files_with_traces')}"
            f" files; evidence: {record['evidence_file']}",
            record,
        )
    return record


def _run_erasure(
    requests: Sequence[ErasureRequest],
    settings: Settings,
    keyring: Keyring,
    actor: str,
    scratch_root: Path,
    run_id: str,
    verify: bool,
) -> dict[str, Any]:
    lake_dir = settings.lake_dir
    subjects, request_status, quarantined = _collect(requests, settings, keyring, actor)
    owner_of = {token: s for s in subjects for token in s.subject_tokens}
    tables = [t for t in discover_tables(lake_dir) if not t.is_control]
    subject_tables = [t for t in tables if SUBJECT_COLUMN in t.columns]
    log.info(
        "erasure: %d request(s) resolved to %d subject(s); deleting from %d tables",
        len(requests),
        len(subjects),
        len(subject_tables),
    )
    traces = _merged_traces(subjects)
    residue = TraceMatcher([n for t in traces for n in t.needles()])
    # Request ids go into the tombstone table (kept for ever) and the evidence: refuse one that
    # holds a subject's identifier before anything irreversible happens, not after.
    if any(residue.scan_bytes(r.request_id.encode()) for r in requests):
        raise ErasureError(
            "a request id holds an identifier of a subject of this run; use a ticket number"
        )

    now = _utc_now()
    tombstones = _append_tombstones(lake_dir, subjects, now)

    def remove_from(table: LakeTable) -> RowRemoval:
        conditions: dict[str, Collection[str]] = {SUBJECT_COLUMN: owner_of}
        if table.name in quarantined:
            conditions["ingest_key"] = quarantined[table.name]
        removal = remove_rows(table.path, conditions, scratch_root=scratch_root, name=table.name)
        log.info(
            "%s: %d rows deleted, %d of %d files rewritten (%.1f s)",
            table.name,
            removal.rows_deleted,
            removal.files_rewritten,
            removal.files_total,
            removal.seconds,
        )
        return removal

    removals: list[RowRemoval] = _per_table(remove_from, subject_tables)
    rows_by_request: dict[str, Counter] = defaultdict(Counter)
    for table, removal in zip(subject_tables, removals, strict=True):
        for value, count in removal.deleted_by_value.items():
            owner = owner_of.get(value) or quarantined.get(table.name, {}).get(value)
            if owner is not None:
                rows_by_request[owner.request_id][table.name] += count

    all_tokens = sorted(owner_of)
    duckdb_results = []
    for database in duckdb_files(lake_dir):
        started = time.monotonic()
        outcome = _erase_from_duckdb(database, all_tokens, residue, lake_dir / "_duckdb_extensions")
        duckdb_results.append({"file": relative_to(database, lake_dir), **outcome})
        log.info(
            "%s: %d rows deleted (%.1f s)",
            relative_to(database, lake_dir),
            outcome.get("rows_deleted", 0),
            time.monotonic() - started,
        )

    keys = keyring.destroy_subject_keys(all_tokens) if all_tokens else {"data_keys_destroyed": 0}
    log.info(
        "erasure: %d data key(s) destroyed; removing old file versions of %d tables",
        keys.get("data_keys_destroyed", 0),
        len(tables),
    )
    maintenance = [{"table": t.name, **purge_history(t.path)} for t in tables]

    for subject in subjects:
        status = request_status[subject.request_id]
        status["landing_files_holding_subject"] = status.get(
            "landing_files_holding_subject", 0
        ) + len(subject.landing_files)
    for request_id, status in request_status.items():
        per_table = rows_by_request.get(request_id, Counter())
        status["rows_deleted"] = sum(per_table.values())
        status["tables"] = dict(sorted(per_table.items()))
        if status["status"] == "resolved":
            status["status"] = "erased"
    report: VerificationReport | None = None
    if verify:
        roots = verification_roots(settings)
        log.info("erasure: verifying, every file of the lake and dbt's target and logs is scanned")
        report = verify_erasure(traces, roots, base=settings.root)
        log.info(
            "erasure: verification %s (%d files scanned)",
            "passed" if report.passed else "FAILED",
            sum(report.files_scanned.values()),
        )
    record = {
        "kind": "erasure",
        "run_id": run_id,
        "actor": actor,
        "requests": list(request_status.values()),
        "subjects": len(subjects),
        "rows_deleted": sum(r.rows_deleted for r in removals)
        + sum(d["rows_deleted"] for d in duckdb_results),
        "tables": [r.to_dict() for r in removals],
        "quarantined_rows_without_subject": sum(len(m) for m in quarantined.values()),
        "duckdb_files": duckdb_results,
        "tombstones": tombstones,
        "keys": {k: v for k, v in keys.items() if k != "event"},
        "maintenance": maintenance,
        "verification": report.to_dict() if report else None,
    }
    # Defence in depth: the evidence itself must hold no trace of the subjects.
    if residue.scan_bytes(json.dumps(record, default=str).encode()):
        raise ErasureError("internal error: the erasure evidence would hold a subject's trace")
    return record


def verification_roots(settings: Settings) -> list[Path]:
    """What the verifier scans: the lake and dbt's target and log folders where dbt writes them
    (DBT_TARGET_PATH, DBT_LOG_PATH), and the default ones as well when they were moved, since
    an earlier build may have written there. A folder inside another is scanned once."""
    candidates = [
        settings.lake_dir,
        settings.target_dir,
        settings.log_dir,
        settings.root / "target",
        settings.root / "logs",
    ]
    roots: list[Path] = []
    for path in (p.resolve() for p in candidates):
        if path not in roots:
            roots.append(path)
    return [r for r in roots if not any(r != o and r.is_relative_to(o) for o in roots)]


def subject_traces(
    requests: Iterable[ErasureRequest | Mapping[str, str]],
    *,
    settings: Settings | None = None,
    keyring: Keyring | None = None,
    actor: str | None = None,
) -> list[SubjectTraces]:
    """What the verifier would look for, per request, without changing anything (decrypts for
    the purpose erasure_verification, so it needs the subjects' keys: run it before an
    erasure, e.g. to check that the verifier finds a subject who is still there)."""
    settings = settings or load_settings()
    actor = actor or default_actor("erasure-check")
    parsed = [r if isinstance(r, ErasureRequest) else ErasureRequest(**dict(r)) for r in requests]
    own_keyring = keyring is None
    keyring = keyring or Keyring.open(settings)
    try:
        subjects, _, _ = _collect(parsed, settings, keyring, actor)
    finally:
        if own_keyring:
            keyring.close()
    return _merged_traces(subjects)


def _collect(
    requests: Sequence[ErasureRequest], settings: Settings, keyring: Keyring, actor: str
) -> tuple[list[_Subject], dict[str, dict[str, Any]], dict[str, dict[str, _Subject]]]:
    """Resolve the requests and gather every trace of their subjects (before any delete)."""
    resolver = _Resolver(settings, keyring, actor)
    subjects: list[_Subject] = []
    request_status: dict[str, dict[str, Any]] = {}
    for request in requests:
        found = resolver.resolve(request)
        subjects.extend(found)
        request_status[request.request_id] = {
            "request_id": request.request_id,
            "identifier": request.identifier_kind,
            "subjects": len(found),
            "status": "resolved" if found else "not_found",
        }
    owner_of = {token: s for s in subjects for token in s.subject_tokens}
    tables = [t for t in discover_tables(settings.lake_dir) if not t.is_control]
    subject_tables = [t for t in tables if SUBJECT_COLUMN in t.columns]
    # Landing is read (by DuckDB, outside the interpreter lock) while the tables are searched.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pl-landing") as landing:
        landing_scan = landing.submit(_landing_identifiers, settings.landing_dir, subjects)
        found_rows = _per_table(
            lambda table: find_rows(table.path, {SUBJECT_COLUMN: owner_of})[0], subject_tables
        )
    landing_scan.result()
    for rows in found_rows:  # traces are gathered in one thread, in table order
        if rows is not None:
            _traces_from_rows(rows, owner_of, keyring, actor)
    quarantined: dict[str, dict[str, _Subject]] = {}
    for table in subject_tables:
        if {QUARANTINE_RECORD, QUARANTINE_HAS_SUBJECT, "ingest_key"} <= set(table.columns):
            matched = _quarantined_without_subject(table, subjects, keyring, actor)
            if matched:
                quarantined[table.name] = matched
                rows, _, _ = find_rows(table.path, {"ingest_key": matched})
                for row in rows.to_pylist() if rows is not None else []:
                    owner = matched[row["ingest_key"]]
                    owner.traces.add("ciphertext", QUARANTINE_RECORD, [row[QUARANTINE_RECORD]])
                    for column in DERIVED_COLUMNS:
                        owner.traces.add("derived", column, [row.get(column)])
                    if row.get("record_hash"):
                        owner.record_tombstones.add(
                            keyring.token(RECORD_TOMBSTONE_PREFIX + row["record_hash"], "tombstone")
                        )
    # DuckDB files may hold subject rows that are no longer in any Delta table.
    for database in duckdb_files(settings.lake_dir):
        rows = _duckdb_subject_rows(database, sorted(owner_of))
        if rows is not None and rows.num_rows:
            _traces_from_rows(rows, owner_of, keyring, actor)
    return subjects, request_status, quarantined


def _duckdb_subject_rows(database: Path, tokens: Sequence[str]) -> pa.Table | None:
    """The subjects' rows of every DuckDB table with a subject_token column (read-only)."""
    if not tokens:
        return None
    from privacy_lakehouse.erasure_verifier import read_duckdb_rows

    parts = []
    for _, matched in read_duckdb_rows(database, SUBJECT_COLUMN, tokens):
        matched = _plain_types(matched)
        if matched.num_rows:
            parts.append(
                matched.select(
                    [
                        c
                        for c in matched.column_names
                        if pa.types.is_string(matched[c].type)
                        or pa.types.is_large_string(matched[c].type)
                    ]
                )
            )
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")


def _merged_traces(subjects: Sequence[_Subject]) -> list[SubjectTraces]:
    by_request: dict[str, SubjectTraces] = {}
    for subject in subjects:
        merged = by_request.setdefault(subject.request_id, SubjectTraces(subject.request_id))
        merged.merge(subject.traces)
    return list(by_request.values())


# ---------------------------------------------------------------------------------------------
# Batches and the CLI


def read_batch(path: Path) -> list[ErasureRequest]:
    """Requests from a CSV file with a header (email, customer_id, request_id) or JSON lines
    ({"email": ...} or {"customer_id": ...}, optional "request_id"). Errors name line numbers,
    never content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ErasureError(
            f"cannot read the batch file {path.name}: {type(error).__name__}"
        ) from None
    requests = []
    if path.suffix.lower() == ".csv":
        for number, row in enumerate(csv.DictReader(text.splitlines()), start=2):
            fields = {k: (v or "").strip() for k, v in row.items() if k}
            requests.append(_request_from(fields, path, number))
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
            except json.JSONDecodeError:
                raise ErasureError(f"{path.name} line {number}: not a JSON object") from None
            if not isinstance(fields, dict):
                raise ErasureError(f"{path.name} line {number}: not a JSON object")
            requests.append(_request_from(fields, path, number))
    return requests


def _request_from(fields: Mapping[str, Any], path: Path, number: int) -> ErasureRequest:
    unknown = set(fields) - {"email", "customer_id", "request_id"}
    if unknown:
        # The names are not echoed: a CSV without a header makes its first request the header.
        raise ErasureError(
            f"{path.name} line {number}: {len(unknown)} unknown field(s); the fields are email, "
            "customer_id and request_id (a CSV needs that header line)"
        )
    try:
        return ErasureRequest(
            email=fields.get("email") or None,
            customer_id=fields.get("customer_id") or None,
            request_id=fields.get("request_id") or "",
        )
    except ErasureError as error:
        raise ErasureError(f"{path.name} line {number}: {error}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Erase data subjects: delete them from every layer, snapshot and quarantine, tombstone "
        "them against replays, destroy their data keys, vacuum, and verify that no trace is "
        "left. The identifier is never logged. Exit 1 if the verifier finds a trace, 2 when "
        "nothing was erased (no subject found, or refused)."
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--email", help="the subject's email address")
    who.add_argument("--customer-id", help="the subject's customer number")
    who.add_argument(
        "--batch",
        type=Path,
        metavar="FILE",
        help="many requests in one run: CSV (email,customer_id,request_id) or JSON lines",
    )
    parser.add_argument("--request-id", help="ticket number for the evidence (default: generated)")
    parser.add_argument("--json", action="store_true", help="print the evidence as JSON")
    parser.add_argument(
        "--target-path",
        metavar="DIR",
        help="dbt's target folder, scanned by the verifier with target/ (default: "
        "DBT_TARGET_PATH or target; relative to the project root, as dbt reads it)",
    )
    parser.add_argument(
        "--log-path",
        metavar="DIR",
        help="dbt's log folder, scanned by the verifier with logs/ (default: DBT_LOG_PATH or logs)",
    )


def _require_lake_and_keys(settings: Settings) -> None:
    """Refuse to erase against a lake or key store that is not there: a wrong folder would
    otherwise get a fresh key store, resolve nobody, and report the subject as not found."""
    if not (settings.lake_dir / "bronze").is_dir():
        raise ErasureError(
            f"no lake at {settings.lake_dir} (no bronze tables); check PRIVACY_LAKEHOUSE_LAKE "
            "and the current directory"
        )
    if not (settings.keys_dir / KEY_STORE_FILE).is_file():
        raise ErasureError(
            f"no key store at {settings.keys_dir / KEY_STORE_FILE}; check PRIVACY_LAKEHOUSE_KEYS"
        )


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.target_path:
        settings = replace(settings, target_dir=dbt_path(settings.root, args.target_path))
    if args.log_path:
        settings = replace(settings, log_dir=dbt_path(settings.root, args.log_path))
    try:
        _require_lake_and_keys(settings)
        if args.batch is not None:
            if args.request_id:
                raise ErasureError("--request-id applies to a single request; put ids in the batch")
            requests = read_batch(args.batch)
        else:
            requests = [
                ErasureRequest(
                    email=args.email, customer_id=args.customer_id, request_id=args.request_id or ""
                )
            ]
        evidence = erase_subjects(requests, settings=settings)
        code = 2 if any(r["status"] == "not_found" for r in evidence["requests"]) else 0
    except ErasureVerificationFailed as failed:
        evidence, code = failed.evidence, 1
        print(str(failed), file=sys.stderr)
    except (ErasureError, KeyringError) as error:
        print(f"erasure failed: {error}", file=sys.stderr)
        return 2
    print(json.dumps(evidence, indent=2, default=str) if args.json else _summary(evidence))
    return code


def _summary(evidence: Mapping[str, Any]) -> str:
    lines = []
    for request in evidence["requests"]:
        lines.append(
            f"request {request['request_id']}: {request['status']}, {request['subjects']} "
            f"subject(s), {request.get('rows_deleted', 0)} rows deleted"
        )
        if request.get("landing_files_holding_subject"):
            lines.append(
                f"  {request['landing_files_holding_subject']} landing file(s) still hold the "
                "subject: purge them at the source (the tombstone keeps replays out)"
            )
    for table in evidence["tables"]:
        if table["rows_deleted"]:
            lines.append(
                f"  {table['table']}: {table['rows_deleted']} rows, {table['files_rewritten']} of "
                f"{table['files_total']} files rewritten, v{table['version_before']} -> "
                f"v{table['version_after']}"
            )
    for database in evidence["duckdb_files"]:
        if database["rows_deleted"] or database["rebuilt"]:
            lines.append(
                f"  {database['file']}: {database['rows_deleted']} rows, "
                f"{'rebuilt' if database['rebuilt'] else 'kept'}"
            )
    tombstones = evidence["tombstones"]
    lines.append(
        f"tombstones: {tombstones['added']} added, {tombstones['already_present']} present; "
        f"data keys destroyed: {evidence['keys'].get('data_keys_destroyed', 0)}"
    )
    verification = evidence.get("verification")
    if verification:
        total = verification["files_scanned_total"]
        verdict = "PASS" if verification["passed"] else "FAIL"
        lines.append(
            f"verification: {verdict} ({total} files scanned, "
            f"{verification['files_with_traces']} with traces)"
        )
    lines.append(f"evidence: {evidence.get('evidence_file')}")
    return "\n".join(lines)
