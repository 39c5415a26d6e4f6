"""dbt-duckdb plugin: every Delta write of the project goes through here (delta-rs, never DuckDB).

The `delta` materialization stages a model as a temporary view on the model's own cursor, then
calls `adapter.store_relation('delta_writer', ...)`, which lands in `Plugin.store`. We read the
stage through that same cursor (a fresh cursor would not see the temporary view or pre-hook
state), stream record batches into delta-rs, and report what was written through the
`pl_delta_write_result(path)` function so the materialization can tell dbt.

The plugin also loads the signed Delta extension from the `duckdb-ext-delta` wheel, registers
the project's DuckDB functions (tokens, encryption, policy checks) so that no secret is ever
templated into SQL, and holds the lake's build lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt_common.exceptions import DbtRuntimeError
from deltalake import DeltaTable, write_deltalake

from privacy_lakehouse import duckdb_setup, hooks
from privacy_lakehouse.delta_layout import (
    CLUSTERED_FILE_BYTES,
    WRITE_BATCH_ROWS,
    rows_added_by_latest_commit,
    writer_properties,
)
from privacy_lakehouse.sql_quote import quote_ident, sql_string

log = logging.getLogger("privacy_lakehouse.delta_writer")

WRITE_COMMANDS = {"build", "run", "seed", "snapshot"}
FAULT_ENV = "PRIVACY_LAKEHOUSE_FAULT_AFTER_BATCHES"  # test hook: simulate a crash mid-write

# DuckDB types Delta cannot store, and the cast that keeps their meaning. Unsigned integers
# widen; interval/time/union/enum/bit become text; odd timestamp precisions become microseconds.
_TYPE_CASTS = {
    "INTERVAL": "VARCHAR",
    "TIME": "VARCHAR",
    "TIME WITH TIME ZONE": "VARCHAR",
    "BIT": "VARCHAR",
    "JSON": "VARCHAR",
    "UUID": "VARCHAR",
    "HUGEINT": "DECIMAL(38, 0)",
    "UHUGEINT": "DECIMAL(38, 0)",
    "UBIGINT": "DECIMAL(20, 0)",
    "UINTEGER": "BIGINT",
    "USMALLINT": "INTEGER",
    "UTINYINT": "SMALLINT",
    "TIMESTAMP_NS": "TIMESTAMP",
    "TIMESTAMP_MS": "TIMESTAMP",
    "TIMESTAMP_S": "TIMESTAMP",
}


def _cast_for(duckdb_type: str) -> str | None:
    upper = duckdb_type.upper()
    if upper in _TYPE_CASTS:
        return _TYPE_CASTS[upper]
    if upper.startswith(("UNION(", "ENUM(")):
        return "VARCHAR"
    return None


@dataclass
class WriteSpec:
    """What the materialization asks for. Built in Jinja, passed through store_relation."""

    stage: str
    location: str
    mode: str = "overwrite"  # overwrite | append | merge
    unique_key: list[str] = field(default_factory=list)
    partition_by: list[str] = field(default_factory=list)
    on_schema_change: str = "ignore"
    stats_columns: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    empty: bool = False
    model: str = ""
    # Rows sorted by these columns before writing, files capped at target_file_size bytes: a
    # subject's rows sit in few files, so an erasure rewrites few files (see erasure.py).
    cluster_by: list[str] = field(default_factory=list)
    target_file_size: int | None = None
    # The rows go into a DuckDB temporary table first and are sorted from there: a query whose
    # windows and joins hold their memory while the sort needs its own then runs in two steps,
    # each within a memory limit (fct_card_activity at 10M under 1GB; see bench/README.md).
    stage_rows_before_sort: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WriteSpec:
        known = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        spec = cls(**known)
        for name in ("unique_key", "partition_by", "stats_columns", "cluster_by"):
            value = getattr(spec, name)
            if isinstance(value, str):
                setattr(spec, name, [value])
            elif value is None:
                setattr(spec, name, [])
        spec.on_schema_change = spec.on_schema_change or "ignore"
        return spec


@dataclass
class WriteResult:
    location: str
    mode: str
    rows_written: int = 0
    version: int | None = None
    created: bool = False
    skipped: str = ""
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    casts: dict[str, str] = field(default_factory=dict)
    merge_metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class SchemaChangeError(DbtRuntimeError):
    pass


def privacy_table_properties(
    columns: list[str], stats_columns: list[str], overrides: dict[str, str]
) -> dict[str, str]:
    """Delta table properties that keep personal data out of the log and out of time travel.

    Statistics are collected only for columns declared free of personal data: min/max values in
    `_delta_log` would otherwise keep raw values after a delete. No change data feed (its files
    outlive a normal vacuum), no deletion vectors (erasure needs rewritten files).
    """
    allowed = {c.lower() for c in stats_columns}
    stats_columns = [c for c in columns if c.lower() in allowed]
    props = {
        "delta.enableChangeDataFeed": "false",
        "delta.enableDeletionVectors": "false",
        "delta.deletedFileRetentionDuration": "interval 7 days",
        "delta.logRetentionDuration": "interval 30 days",
    }
    if stats_columns:
        props["delta.dataSkippingStatsColumns"] = ",".join(stats_columns)
    else:
        props["delta.dataSkippingNumIndexedCols"] = "0"
    props.update({k: str(v) for k, v in (overrides or {}).items()})
    return props


class _BuildLock:
    """One writer per lake. flock is released by the OS if the process dies, so a killed build
    never leaves a stale lock behind."""

    _held: dict[str, int] = {}
    _mutex = threading.Lock()

    @classmethod
    def acquire(cls, lake_dir: Path) -> None:
        path = str(lake_dir / ".build.lock")
        with cls._mutex:
            if path in cls._held:
                return
            lake_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise DbtRuntimeError(
                    f"Another privacy_lakehouse build is running on this lake ({lake_dir}; "
                    f"holder: {holder}). This run stopped before touching anything; "
                    "wait for the other build to finish and run again."
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode())
            cls._held[path] = fd

    @classmethod
    def release(cls, lake_dir: Path) -> bool:
        path = str(lake_dir / ".build.lock")
        with cls._mutex:
            fd = cls._held.pop(path, None)
        if fd is None:
            return False
        os.ftruncate(fd, 0)  # no stale holder text once released
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        return True


def _current_command() -> str:
    try:
        from dbt.flags import get_flags

        return str(getattr(get_flags(), "WHICH", "") or "")
    except Exception:  # noqa: BLE001 - outside dbt (library use) there are no flags
        return ""


def _install_error_scrubbing() -> None:
    """Scrub DuckDB errors before dbt-duckdb logs them (debug log) and re-raises them.

    dbt-duckdb's exception_handler writes str(error) to logs/dbt.log and raises it as the
    model's error, which dbt prints and stores in target/run_results.json. The landing reads
    fail inside it (a CSV sniffed when the stage view is created), so the scrub goes there.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    original = DuckDBConnectionManager.exception_handler
    if getattr(original, "_pl_scrubbing", False):
        return

    @contextlib.contextmanager
    def exception_handler(self, sql: str, connection_name="master"):
        with original(self, sql, connection_name):
            try:
                yield
            except duckdb.Error as error:
                scrubbed = scrub_error_message(str(error))
                if scrubbed == str(error):
                    raise
                raise type(error)(scrubbed) from None

    exception_handler._pl_scrubbing = True  # type: ignore[attr-defined]
    DuckDBConnectionManager.exception_handler = exception_handler  # type: ignore[method-assign]


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]):
        _install_error_scrubbing()
        lake = plugin_config.get("lake_dir") or os.environ.get("PRIVACY_LAKEHOUSE_LAKE") or "lake"
        self.lake_dir = Path(lake).resolve()
        self.extension_dir = self.lake_dir / "_duckdb_extensions"
        self._local = threading.local()
        self._results: dict[str, WriteResult] = {}
        self._results_lock = threading.Lock()

    # --- connection life cycle -------------------------------------------------------------
    def update_connection_config(self, creds, config: dict[str, Any]):
        if _current_command() in WRITE_COMMANDS:
            _BuildLock.acquire(self.lake_dir)
        config.update(duckdb_setup.connection_config(self.extension_dir))

    def configure_connection(self, conn):
        from privacy_lakehouse.keyring import KeyringError

        ensure_control_tables(self.lake_dir)
        duckdb_setup.load_delta_extension(conn, self.extension_dir)
        try:
            duckdb_setup.register_project_functions(conn)
        except KeyringError as error:
            # dbt-duckdb reports a RuntimeError as a failed connection, in one line; any other
            # error ends the run in a traceback. Keyring messages hold no key material.
            raise RuntimeError(f"privacy_lakehouse keyring: {error}") from None
        hooks.register(conn, self.lake_dir)
        self._register_writer_functions(conn)

    def configure_cursor(self, cursor):
        # dbt-duckdb may keep the database open across in-process runs, so the lock is taken
        # again here (a no-op while held) and not only when the database is first opened.
        if _current_command() in WRITE_COMMANDS:
            _BuildLock.acquire(self.lake_dir)
        # The materialization's store_relation runs on the model's thread: remember its cursor.
        self._local.cursor = cursor

    def _register_writer_functions(self, conn) -> None:
        def lake_path(relative: str) -> str:
            return str((self.lake_dir / relative).resolve())

        def write_result(location: str) -> str:
            with self._results_lock:
                result = self._results.get(location)
            return json.dumps(asdict(result) if result else None)

        def delta_version(location: str) -> int | None:
            return delta_table_version(location)

        def release_lock() -> bool:
            return _BuildLock.release(self.lake_dir)

        conn.create_function("pl_lake_path", lake_path, ["VARCHAR"], "VARCHAR", side_effects=True)
        conn.create_function(
            "pl_delta_write_result",
            write_result,
            ["VARCHAR"],
            "VARCHAR",
            side_effects=True,
            null_handling="special",
        )
        conn.create_function(
            "pl_delta_version",
            delta_version,
            ["VARCHAR"],
            "BIGINT",
            side_effects=True,
            null_handling="special",
        )
        conn.create_function(
            "pl_release_build_lock", release_lock, [], "BOOLEAN", side_effects=True
        )

    # --- writes --------------------------------------------------------------------------------
    def store(self, target_config):
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            raise DbtRuntimeError("delta_writer: no cursor configured for this thread")
        spec = WriteSpec.from_config(dict(target_config.config))
        try:
            result = write_model(cursor, spec)
        except duckdb.Error as error:
            # DuckDB quotes landing rows in its errors (a CSV error's "Original Line", a failed
            # cast's string): dbt would print them and keep them in logs/ and run_results.json.
            raise DbtRuntimeError(
                f"model {spec.model}: {scrub_error_message(str(error))}"
            ) from None
        with self._results_lock:
            self._results[spec.location] = result


_QUOTED_ROW = re.compile(r"^(\s*)Original Line:.*$", re.MULTILINE)
# A value DuckDB quotes after these words: a failed cast's string, a date's field format.
_QUOTED_VALUE = re.compile(r"""\b(string|value|format:) ('(?:[^']|'')*'|"(?:[^"]|"")*")""")


def scrub_error_message(message: str) -> str:
    """A DuckDB error without the data values it quotes: a CSV error's "Original Line", a failed
    cast's or parse's string, and the line where a parse error repeats that string. Names, line
    numbers, options and the model's SQL stay."""
    withheld: set[str] = set()

    def withhold(match: re.Match[str]) -> str:
        withheld.add(match.group(2)[1:-1])
        return f"{match.group(1)} <withheld>"

    message = _QUOTED_ROW.sub(r"\1Original Line: <withheld: landing data>", message)
    message = _QUOTED_VALUE.sub(withhold, message)
    return "\n".join(
        "<withheld>" if line.strip() and line.strip() in withheld else line
        for line in message.split("\n")
    )


# Tables the Python hooks write and models read; they must exist before the first build.
CONTROL_TABLES: dict[str, pa.Schema] = {
    "control/erasure_tombstones": pa.schema(
        [
            ("tombstone_token", pa.string()),
            ("erased_at", pa.timestamp("us", tz="UTC")),
            ("request_id", pa.string()),
        ]
    ),
    # What each bronze table ingested of each landing file (privacy_lakehouse.ingestion_ledger):
    # names, sizes, times and counts only.
    "control/ingestion_ledger": pa.schema(
        [
            ("table_name", pa.string()),
            ("source_name", pa.string()),
            ("source_file", pa.string()),
            ("event", pa.string()),
            ("file_size", pa.int64()),
            ("file_modified_at", pa.timestamp("us", tz="UTC")),
            ("rows", pa.int64()),
            ("recorded_at", pa.timestamp("us", tz="UTC")),
            ("run_id", pa.string()),
        ]
    ),
}
# Columns free of personal data, whose statistics may reach the Delta log.
CONTROL_STATS_COLUMNS: dict[str, list[str]] = {
    "control/erasure_tombstones": ["erased_at", "request_id"],
    "control/ingestion_ledger": list(CONTROL_TABLES["control/ingestion_ledger"].names),
}


def ensure_control_tables(lake_dir: Path) -> None:
    for relative, schema in CONTROL_TABLES.items():
        location = lake_dir / relative
        if not DeltaTable.is_deltatable(str(location)):
            location.mkdir(parents=True, exist_ok=True)
            write_deltalake(
                str(location),
                schema.empty_table(),
                mode="ignore",
                configuration=privacy_table_properties(
                    list(schema.names), CONTROL_STATS_COLUMNS[relative], {}
                ),
            )


def delta_table_version(location: str) -> int | None:
    if not DeltaTable.is_deltatable(location):
        return None
    return DeltaTable(location).version()


def _stage_columns(cursor, relation: str) -> list[tuple[str, str]]:
    rows = cursor.execute(f"describe select * from {relation}").fetchall()
    return [(row[0], row[1]) for row in rows]


def _projection(columns: list[tuple[str, str]], casts: dict[str, str]) -> str:
    parts = []
    for name, _ in columns:
        if name in casts:
            parts.append(f"cast({quote_ident(name)} as {casts[name]}) as {quote_ident(name)}")
        else:
            parts.append(quote_ident(name))
    return ", ".join(parts) if parts else "*"


def _batches(cursor, sql: str) -> pa.RecordBatchReader:
    """Stream the query as record batches (bounded memory) into delta-rs.

    DuckDB's reader goes to delta-rs as it is: a Python generator in between took the
    interpreter lock for every batch, and so queued behind the threads encrypting in Python
    (one switch interval, 5 ms, per batch at worst); the rows written come from the commit
    instead (`rows_added_by_latest_commit`). Only the crash test hook wraps it, to count batches."""
    reader = cursor.execute(sql).fetch_record_batch(WRITE_BATCH_ROWS)
    fault_after = int(os.environ.get(FAULT_ENV, "0") or 0)
    if not fault_after:
        return reader

    def generate() -> Iterator[pa.RecordBatch]:
        for number, batch in enumerate(reader, start=1):
            yield batch
            if number >= fault_after:
                # Simulates a kill -9 in the middle of a write: no cleanup, no commit.
                os._exit(137)

    return pa.RecordBatchReader.from_batches(reader.schema, generate())


def _has_rows(cursor, sql: str) -> bool:
    return cursor.execute(f"select exists ({sql})").fetchone()[0]


def _schema_diff(stage: list[tuple[str, str]], existing: pa.Schema) -> tuple[list[str], list[str]]:
    existing_names = {n.lower(): n for n in existing.names}
    stage_names = {n.lower() for n, _ in stage}
    added = [n for n, _ in stage if n.lower() not in existing_names]
    removed = [n for n in existing.names if n.lower() not in stage_names]
    return added, removed


def _arrow_schema_of(cursor, sql: str) -> pa.Schema:
    return cursor.execute(f"select * from ({sql}) limit 0").fetch_record_batch(1).schema


def _type_changes(stage_schema: pa.Schema, existing: pa.Schema) -> list[str]:
    changed = []
    existing_types = {f.name.lower(): f.type for f in existing}
    for f in stage_schema:
        old = existing_types.get(f.name.lower())
        if old is None or old == f.type:
            continue
        # delta-rs reads strings back as large/view variants; those are not real changes.
        if _normalise(old) != _normalise(f.type):
            changed.append(f.name)
    return changed


def _normalise(dtype: pa.DataType) -> str:
    text = str(dtype)
    for long, short in (
        ("large_string", "string"),
        ("string_view", "string"),
        ("large_binary", "binary"),
        ("binary_view", "binary"),
        ("large_list", "list"),
    ):
        text = text.replace(long, short)
    return text.replace("[us, tz=UTC]", "[us, tz=utc]")


def write_model(cursor, spec: WriteSpec) -> WriteResult:
    started = time.monotonic()
    result = WriteResult(location=spec.location, mode=spec.mode)
    stage_cols = _stage_columns(cursor, spec.stage)
    names = [n for n, _ in stage_cols]

    safe = {c.lower() for c in spec.stats_columns}
    bad_partitions = [c for c in spec.partition_by if c.lower() not in safe]
    if bad_partitions:
        # Partition values end up in file paths and the log, where no delete can reach them.
        raise DbtRuntimeError(
            f"model {spec.model}: cannot partition by {bad_partitions}: only columns declared "
            "privacy_role none with sensitivity public or internal may partition a table"
        )

    missing = [c for c in spec.cluster_by if c.lower() not in {n.lower() for n in names}]
    if missing:
        raise DbtRuntimeError(f"model {spec.model}: cluster_by names unknown columns {missing}")
    file_size = spec.target_file_size or (CLUSTERED_FILE_BYTES if spec.cluster_by else None)

    exists = DeltaTable.is_deltatable(spec.location)
    if spec.empty:
        result.skipped = "empty run: no rows read, existing Delta table left untouched"
        result.version = delta_table_version(spec.location)
        result.seconds = time.monotonic() - started
        return result

    casts = {n: c for n, t in stage_cols if (c := _cast_for(t))}
    result.casts = casts
    select_sql = f"select {_projection(stage_cols, casts)} from {spec.stage}"
    props = privacy_table_properties(names, spec.stats_columns, spec.properties)

    if not exists or spec.mode == "overwrite":
        with _sorted_rows(cursor, select_sql, spec) as rows_sql:
            write_deltalake(
                spec.location,
                _batches(cursor, rows_sql),
                mode="overwrite",
                schema_mode="overwrite" if exists else None,
                partition_by=spec.partition_by or None,
                configuration=props,
                target_file_size=file_size,
                writer_properties=writer_properties(),
            )
        result.created = not exists
        table = DeltaTable(spec.location)
        if exists:
            _sync_properties(table, props)
    else:
        table = DeltaTable(spec.location)
        existing = pa.schema(table.schema().to_arrow())
        added, removed = _schema_diff(stage_cols, existing)
        changed = _type_changes(_arrow_schema_of(cursor, select_sql), existing)
        select_sql, schema_mode = _apply_schema_policy(
            spec, cursor, table, existing, stage_cols, casts, added, removed, changed, result
        )
        if schema_mode != "overwrite" and not _has_rows(cursor, select_sql):
            # Nothing new: no empty commit (a re-run on the same landing files leaves no trace).
            result.version = table.version()
            result.skipped = (
                f"{spec.mode.upper()} 0 rows, nothing to commit, delta v{result.version}"
            )
            result.seconds = round(time.monotonic() - started, 3)
            return result
        if schema_mode == "overwrite":  # sync_all_columns: the table is rewritten in one commit
            with _sorted_rows(cursor, select_sql, spec) as rows_sql:
                write_deltalake(
                    table,
                    _batches(cursor, rows_sql),
                    mode="overwrite",
                    schema_mode="overwrite",
                    partition_by=spec.partition_by or None,
                    target_file_size=file_size,
                    writer_properties=writer_properties(),
                )
        elif spec.mode == "append":
            with _sorted_rows(cursor, select_sql, spec) as rows_sql:
                write_deltalake(
                    table,
                    _batches(cursor, rows_sql),
                    mode="append",
                    schema_mode=schema_mode,
                    partition_by=spec.partition_by or None,
                    target_file_size=file_size,
                    writer_properties=writer_properties(),
                )
        elif spec.mode == "merge":
            result.merge_metrics = _merge(
                table, _batches(cursor, select_sql), spec, schema_mode == "merge"
            )
        else:
            raise DbtRuntimeError(f"model {spec.model}: unknown delta write mode {spec.mode!r}")
        table = DeltaTable(spec.location)
        _sync_properties(table, props)

    if spec.mode == "merge" and result.merge_metrics:
        result.rows_written = int(result.merge_metrics.get("num_source_rows") or 0)
    else:
        result.rows_written = rows_added_by_latest_commit(table)
    result.version = table.version()
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _clustered(sql: str, spec: WriteSpec) -> str:
    if not spec.cluster_by:
        return sql
    order = ", ".join(quote_ident(c) for c in spec.cluster_by)
    return f"select * from ({sql}) as pl_clustered order by {order}"


@contextlib.contextmanager
def _sorted_rows(cursor, sql: str, spec: WriteSpec) -> Iterator[str]:
    """The query that yields the rows to write, in cluster order. With stage_rows_before_sort
    the rows are first kept in a temporary table of this cursor's connection (DuckDB spills it
    to its temp directory under a memory limit), dropped once the write has read them."""
    if not (spec.cluster_by and spec.stage_rows_before_sort):
        yield _clustered(sql, spec)
        return
    staged = quote_ident(f"pl_sort_stage_{uuid.uuid4().hex}")
    cursor.execute(f"create temp table {staged} as {sql}")
    try:
        yield _clustered(f"select * from {staged}", spec)
    finally:
        cursor.execute(f"drop table if exists {staged}")


def _apply_schema_policy(
    spec: WriteSpec,
    cursor,
    table: DeltaTable,
    existing: pa.Schema,
    stage_cols: list[tuple[str, str]],
    casts: dict[str, str],
    added: list[str],
    removed: list[str],
    changed: list[str],
    result: WriteResult,
) -> tuple[str, str | None]:
    """on_schema_change with the meanings dbt users know: ignore, fail, append_new_columns,
    sync_all_columns. Returns the select to stream and delta-rs' schema_mode."""
    policy = spec.on_schema_change
    if policy not in {"ignore", "fail", "append_new_columns", "sync_all_columns"}:
        raise DbtRuntimeError(f"model {spec.model}: unknown on_schema_change {policy!r}")
    if not (added or removed or changed):
        return f"select {_projection(stage_cols, casts)} from {spec.stage}", None
    summary = f"added {added}, removed {removed}, type changed {changed}"
    if policy == "fail":
        raise SchemaChangeError(
            f"model {spec.model}: the model's columns differ from the Delta table ({summary}) "
            "and on_schema_change='fail'. Change on_schema_change, or run with --full-refresh "
            "(bronze ignores it: full_refresh is false there)."
        )
    if changed and policy != "sync_all_columns":
        raise SchemaChangeError(
            f"model {spec.model}: column type changes {changed} need "
            "on_schema_change='sync_all_columns' or --full-refresh"
        )
    stage_names = {n.lower(): n for n, _ in stage_cols}
    if policy == "ignore":
        # Keep the table's shape: new columns are not written, missing ones arrive as NULL.
        parts = []
        for col in existing.names:
            src = stage_names.get(col.lower())
            parts.append(quote_ident(src) if src else f"null as {quote_ident(col)}")
        return f"select {', '.join(parts)} from ({_inner(spec, stage_cols, casts)})", None

    result.columns_added = added
    if policy == "append_new_columns":
        parts = [quote_ident(n) for n, _ in stage_cols]
        parts += [f"null as {quote_ident(c)}" for c in removed]
        return f"select {', '.join(parts)} from ({_inner(spec, stage_cols, casts)})", "merge"

    # sync_all_columns: one overwrite with the table's rows in the model's shape (removed columns
    # dropped, types changed) plus the new rows. A single commit, and every read (the model's own
    # incremental filter included) still sees the old table while the stream runs.
    result.columns_removed = removed
    location = sql_string(spec.location)
    existing_parts = []
    for name, duck_type in stage_cols:
        target_type = casts.get(name) or duck_type
        if name.lower() in {c.lower() for c in existing.names}:
            existing_parts.append(
                f"cast({quote_ident(name)} as {target_type}) as {quote_ident(name)}"
            )
        else:
            existing_parts.append(f"cast(null as {target_type}) as {quote_ident(name)}")
    old_rows = f"select {', '.join(existing_parts)} from delta_scan({location})"
    if spec.mode == "merge" and spec.unique_key:
        keys = ", ".join(quote_ident(k) for k in spec.unique_key)
        old_rows += f" where ({keys}) not in (select ({keys}) from {spec.stage})"
    combined = f"{old_rows} union all by name {_inner(spec, stage_cols, casts)}"
    return combined, "overwrite"


def _inner(spec: WriteSpec, stage_cols, casts) -> str:
    return f"select {_projection(stage_cols, casts)} from {spec.stage}"


def _merge(table: DeltaTable, source, spec: WriteSpec, merge_schema: bool) -> dict[str, Any]:
    if not spec.unique_key:
        raise DbtRuntimeError(
            f"model {spec.model}: incremental_strategy='merge' needs a unique_key"
        )
    # The predicate holds column names only, never values: delta-rs stores it in the log.
    predicate = " and ".join(
        f"target.{quote_ident(k)} = source.{quote_ident(k)}" for k in spec.unique_key
    )
    metrics = (
        table.merge(
            source=source,
            predicate=predicate,
            source_alias="source",
            target_alias="target",
            merge_schema=merge_schema,
            writer_properties=writer_properties(),
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    keep = (
        "num_source_rows",
        "num_target_rows_inserted",
        "num_target_rows_updated",
        "num_target_files_added",
        "num_target_files_removed",
    )
    return {k: metrics.get(k) for k in keep}


def _sync_properties(table: DeltaTable, wanted: dict[str, str]) -> None:
    current = table.metadata().configuration
    stale = {k: v for k, v in wanted.items() if current.get(k) != v}
    # Columns added later must not silently gain statistics; the stats list is re-asserted
    # each write, and the property set by an earlier, wider schema is kept in sync.
    if stale:
        table.alter.set_table_properties(stale, raise_if_not_exists=False)
