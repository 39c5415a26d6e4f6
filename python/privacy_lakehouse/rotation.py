"""Salt rotation across the lake, and the evidence of every key rotation.

`Keyring.rotate_salt` only makes a new salt version. The tokens already in the lake were made
with the old one, and bronze is append-only: new rows would carry new tokens while old rows keep
old ones, and every join between them would silently break. `rotate_salt_in_lake` therefore:

1. checks that every token of the salt in the lake can be re-derived: bronze keeps each
   tokenized identifier also as ciphertext under its subject's data key, so the plaintext is
   recovered by decrypting (purpose `key_rotation`, allowed for this flow only), normalised as
   the bronze model did, and tokenized again. Landing files are not needed (they may be purged).
   A salt whose tokens have no ciphertext in bronze is refused before anything changes;
2. makes the new salt version (the old one is retired for a grace period);
3. for the subject salt, links each new subject token to the old token's data key, so erasure
   by either token destroys the one key that opens all of the subject's ciphertext;
4. rewrites the token column of every Delta table that has one (bronze, quarantine, silver,
   gold) through a join with an old -> new token map, streamed from DuckDB into a delta-rs
   overwrite: one commit per table, no token in any predicate (delta-rs logs predicates). For
   the subject salt the table's ciphertext columns are re-encrypted under the new token too,
   because the ciphertext's associated data binds the subject token (same data key, new nonce).
   Tables with a subject token are written sorted by it, so they stay clustered. The rewrite
   runs in a second DuckDB connection that never sees plaintext and may therefore spill; the
   first one, which holds decrypted values for the checks, is closed before it starts.
   DuckDB tables of the warehouse (the SCD2 snapshot) are updated the same way;
5. records evidence (salt, versions, tables, row counts; never values) in
   `<lake>/_evidence/rotation/` and a `key_rotation` entry in the audit log;
6. optionally (`rebuild=True`) runs `dbt build`, which recomputes every non-incremental model
   from the rewritten bronze, re-runs the tests and refreshes what the after-build hooks make.

Why rewrite in place rather than `dbt build --full-refresh` of silver and gold: incremental
tables (silver transactions, the snapshot, quarantine) hold history a full refresh would reset
or duplicate (a snapshot keyed by subject token would close every customer's history and open a
new one), and retention or erasure results applied to them would have to be re-applied. A map
join keeps every row, changes only the token (and the ciphertext bound to it) and is checked by
row counts; the plain `dbt build` afterwards then agrees with what is stored.

A failed run can be finished with `resume=True`, which maps every token of any live older
version to the current version without making another one. `destroy_retired_salts_in_lake`
refuses to destroy a retired version while the lake still holds its tokens, since they could
never be re-derived afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from privacy_lakehouse import duckdb_functions
from privacy_lakehouse.audit_log import AuditLog
from privacy_lakehouse.build_evidence import decrypt_recorder, policy_version
from privacy_lakehouse.delta_layout import (
    CLUSTERED_FILE_BYTES,
    WRITE_BATCH_ROWS,
    rows_added_by_latest_commit,
    writer_properties,
)
from privacy_lakehouse.duckdb_setup import MEMORY_LIMIT_ENV, connect, connection_config
from privacy_lakehouse.keyring import (
    DEFAULT_DECRYPT_PURPOSES,
    DEFAULT_SALT_GRACE,
    KeyNotFoundError,
    Keyring,
    KeyringError,
)
from privacy_lakehouse.settings import Settings, load_settings
from privacy_lakehouse.sql_quote import quote_ident as _ident
from privacy_lakehouse.sql_quote import sql_string as _sql_string

ROTATION_PURPOSE = "key_rotation"
EVIDENCE_FOLDER = "rotation"
_SKIPPED_LAKE_FOLDERS = {"_duckdb_extensions", "_evidence", "_audit"}
# The rewrite sorts each table by subject token (the erasure's key) and may spill while it does.
# Without this bound DuckDB takes up to 80% of RAM; with it (also on the serving files'
# republish), at 10M card transactions the whole rotation stays under 3 GB (bench/README.md):
# 1GB did until the compiled crypto loops (Numba, about 135 MiB a process) came, then peaked at
# 2.80 GiB once in two runs; 900MB peaked at 2.59 GiB, no slower.
# PRIVACY_LAKEHOUSE_DUCKDB_MEMORY_LIMIT overrides it.
REWRITE_MEMORY_LIMIT = "900MB"
SPILL_PREFIX = ".rotation-spill-"
CLUSTER_COLUMN = "subject_token"
log = logging.getLogger(__name__)

# Which plaintext each rotatable salt tokenizes, where bronze keeps it as ciphertext, and the
# normalisation the bronze model applied before tokenizing. Each query yields (seen_token, value)
# from `{table}`; it must agree with the model, which the rotation checks row by row (every
# token must re-derive from its own decrypted value) before changing anything.
_CUSTOMERS = "bronze/raw_core_banking__customers"
_QUARANTINE = "bronze/raw_quarantine__records"


@dataclass(frozen=True)
class PlaintextSource:
    table: str  # Delta table, relative to the lake
    query: str  # select seen_token, value from {table}


@dataclass(frozen=True)
class SaltUse:
    token_column: str
    sources: tuple[PlaintextSource, ...]


def _decrypted(column: str) -> str:
    return f"pl_decrypt(subject_token, {column}, '{ROTATION_PURPOSE}')"


ROTATABLE_SALTS: dict[str, SaltUse] = {
    "subject": SaltUse(
        "subject_token",
        (
            PlaintextSource(
                _CUSTOMERS,
                f"select subject_token as seen_token, {_decrypted('customer_id_enc')} as value "
                "from {table}",
            ),
            # Quarantined rows: the customer id inside the encrypted raw record (parsed as the
            # landing models do), or the per-file pseudo-subject of rows that name no customer.
            PlaintextSource(
                _QUARANTINE,
                "select seen_token, case when not has_subject "
                "then 'quarantine:' || source_name || ':' || source_file "
                "when json_valid(raw) then nullif(trim(json_merge_patch('{{}}', raw) ->> "
                "'customer_id'), '') end as value from (select subject_token as seen_token, "
                f"has_subject, source_name, source_file, {_decrypted('record_enc')} as raw "
                "from {table})",
            ),
        ),
    ),
    "email": SaltUse(
        "email_token",
        (
            PlaintextSource(
                _CUSTOMERS,
                f"select email_token as seen_token, lower(trim({_decrypted('email_enc')})) "
                "as value from {table}",
            ),
        ),
    ),
    "phone": SaltUse(
        "phone_token",
        (
            PlaintextSource(
                _CUSTOMERS,
                "select phone_token as seen_token, "
                f"regexp_replace({_decrypted('phone_enc')}, '[^0-9+]', '', 'g') as value "
                "from {table}",
            ),
        ),
    ),
    "national_id": SaltUse(
        "national_id_token",
        (
            PlaintextSource(
                _CUSTOMERS,
                f"select national_id_token as seen_token, {_decrypted('national_id_enc')} "
                "as value from {table}",
            ),
        ),
    ),
    "iban": SaltUse(
        "iban_token",
        (
            PlaintextSource(
                "bronze/raw_core_banking__accounts",
                f"select iban_token as seen_token, upper(replace({_decrypted('iban_enc')}, "
                "' ', '')) as value from {table}",
            ),
        ),
    ),
    "card": SaltUse(
        "card_token",
        (
            PlaintextSource(
                "bronze/raw_cards__transactions",
                f"select card_token as seen_token, {_decrypted('card_number_enc')} as value "
                "from {table}",
            ),
        ),
    ),
}

NOT_ROTATABLE: dict[str, str] = {
    "account": (
        "bronze keeps account numbers only as account_token, with no ciphertext to recover them "
        "from, so the old tokens cannot be mapped to new ones and every account join would break"
    ),
    "device": (
        "bronze keeps device ids only as device_token, with no ciphertext to recover them from, "
        "so the old tokens cannot be mapped to new ones"
    ),
    "record": (
        "record hashes identify landing rows: bronze's ingest keys (which keep re-delivered "
        "files from being ingested twice) and the tombstones of erased records are derived from "
        "them, and the landing rows they were computed from may be purged"
    ),
    "tombstone": (
        "tombstone tokens must outlive every rotation: they are the only record that keeps an "
        "erased subject out of re-ingested landing files, and the erased subject's data (from "
        "which a new token would be derived) is gone by design"
    ),
}


class RotationError(KeyringError):
    """The lake cannot be re-tokenized safely; nothing was changed unless the message says so."""


class RotationRefused(RotationError):
    """The salt cannot be rotated at all (no ciphertext to re-derive its tokens from)."""


# --------------------------------------------------------------------------------------------
# The lake's tables


@dataclass(frozen=True)
class LakeTable:
    relative: str  # e.g. bronze/raw_core_banking__customers
    path: Path
    columns: tuple[str, ...]

    def scan(self) -> str:
        return f"delta_scan({_sql_string(str(self.path))})"


def delta_tables(lake_dir: Path) -> list[Path]:
    """Every Delta table under the lake (folders holding a `_delta_log`), sorted."""
    if not lake_dir.is_dir():
        return []
    found = []
    for log in lake_dir.rglob("_delta_log"):
        relative = log.parent.relative_to(lake_dir)
        if relative.parts and relative.parts[0] not in _SKIPPED_LAKE_FOLDERS:
            found.append(log.parent)
    return sorted(found)


def _lake_tables(lake_dir: Path) -> dict[str, LakeTable]:
    tables = {}
    for path in delta_tables(lake_dir):
        names = tuple(DeltaTable(str(path)).schema().to_arrow().names)
        relative = path.relative_to(lake_dir).as_posix()
        tables[relative] = LakeTable(relative, path, names)
    return tables


def _ciphertext_columns(columns: tuple[str, ...]) -> list[str]:
    # Every *_enc column of a table with a subject token is ciphertext bound to that token (the
    # bronze models' convention); the re-encryption fails loudly if one is not.
    return [c for c in columns if c.endswith("_enc")]


# --------------------------------------------------------------------------------------------
# Locks, keyrings, DuckDB


@contextlib.contextmanager
def _build_lock(lake_dir: Path) -> Iterator[None]:
    """The lake's build lock: no build may append old-version tokens during the rewrite."""
    from dbt_common.exceptions import DbtRuntimeError

    from privacy_lakehouse.delta_writer import _BuildLock  # imports dbt: only when needed

    try:
        _BuildLock.acquire(lake_dir)
    except DbtRuntimeError as busy:
        raise RotationError(str(busy)) from None
    try:
        yield
    finally:
        _BuildLock.release(lake_dir)


def open_rotation_keyring(
    settings: Settings | None = None, on_decrypt: Callable[[str, str, int], None] | None = None
) -> Keyring:
    """The project's keyring with the `key_rotation` decryption purpose added (this flow only)."""
    return Keyring.open(
        settings,
        allowed_purposes=DEFAULT_DECRYPT_PURPOSES | {ROTATION_PURPOSE},
        on_decrypt=on_decrypt,
    )


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _connect(settings: Settings, keyring: Keyring, actor: str) -> duckdb.DuckDBPyConnection:
    """The checking connection: plaintext is decrypted into this in-memory database, so it
    never spills to disk."""
    conn = connect(extension_dir=settings.lake_dir / "_duckdb_extensions")
    conn.execute("set temp_directory = ''")
    duckdb_functions.register(conn, keyring, actor=actor)
    return conn


@contextlib.contextmanager
def _rewrite_connection(
    settings: Settings, keyring: Keyring, actor: str, token_map: pa.Table
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The rewriting connection: it holds the old -> new token map and sees tokens and
    ciphertext only (the re-encryption's plaintext stays inside the Python function), so it may
    sort the rewritten rows by subject token and spill, within a memory bound, into a private
    folder of the lake that is removed afterwards."""
    # A run killed mid-sort leaves its folder behind; under the build lock none is in use.
    for stale in settings.lake_dir.glob(SPILL_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    spill = Path(tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=settings.lake_dir))
    conn = connect(extension_dir=settings.lake_dir / "_duckdb_extensions")
    try:
        conn.execute(f"set temp_directory = {_sql_string(str(spill))}")
        conn.execute(f"set memory_limit = {_sql_string(_rewrite_memory_limit())}")
        conn.execute("set preserve_insertion_order = false")
        conn.register("rotation_map_rows", token_map)
        conn.execute("create temp table rotation_map as select * from rotation_map_rows")
        conn.unregister("rotation_map_rows")
        _register_reencrypt(conn, keyring, actor)
        yield conn
    finally:
        conn.close()
        shutil.rmtree(spill, ignore_errors=True)


def _rewrite_memory_limit() -> str:
    return os.environ.get(MEMORY_LIMIT_ENV, "").strip() or REWRITE_MEMORY_LIMIT


def _register_reencrypt(conn, keyring: Keyring, actor: str) -> None:
    def reencrypt(old_tokens: Any, new_tokens: Any, ciphertexts: Any) -> pa.Array:
        # Plaintext stays in Python: decrypted under the old token, sealed under the new one.
        plain = keyring.decrypt_many(old_tokens, ciphertexts, ROTATION_PURPOSE, actor)
        return keyring.encrypt_many(new_tokens, plain)

    text = duckdb.sqltype("VARCHAR")
    conn.create_function(
        "pl_rotation_reencrypt",
        reencrypt,
        [text, text, text],
        text,
        type="arrow",
        null_handling="special",
        side_effects=True,
    )


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Salt rotation


def check_rotatable(name: str) -> SaltUse:
    """The salt's use in the lake, or RotationRefused saying why it cannot be rotated."""
    if name in NOT_ROTATABLE:
        raise RotationRefused(f"salt '{name}' cannot be rotated: {NOT_ROTATABLE[name]}")
    use = ROTATABLE_SALTS.get(name)
    if use is None:
        raise RotationRefused(
            f"salt '{name}' cannot be rotated: no bronze ciphertext is known from which its "
            f"tokens could be re-derived (rotatable salts: {', '.join(sorted(ROTATABLE_SALTS))})"
        )
    return use


def _live_versions(keyring: Keyring, name: str) -> tuple[list[int], int | None]:
    versions = [s for s in keyring.status()["salts"] if s["salt"] == name]
    live = sorted(s["version"] for s in versions if s["state"] != "destroyed")
    active = next((s["version"] for s in versions if s["state"] == "active"), None)
    return live, active


def _token_versions(conn, table: LakeTable, column: str) -> dict[str, int]:
    rows = conn.execute(
        f"select coalesce(regexp_extract({_ident(column)}, '^v([0-9]+):', 1), '?'), count(*) "
        f"from {table.scan()} where {_ident(column)} is not null group by all order by all"
    ).fetchall()
    return {f"v{version}" if version != "?" else "malformed": count for version, count in rows}


def _prepare_plaintext(
    conn, name: str, use: SaltUse, tables: dict[str, LakeTable]
) -> dict[str, int]:
    """Fill `rotation_plain(seen_token, value)` from bronze ciphertext; return rows per source."""
    conn.execute("create or replace temp table rotation_plain (seen_token varchar, value varchar)")
    counts = {}
    for source in use.sources:
        table = tables.get(source.table)
        if table is None:
            continue
        query = source.query.format(table=table.scan())
        counts[source.table] = conn.execute(
            "insert into rotation_plain select distinct seen_token, value "
            f"from ({query}) where seen_token is not null"
        ).fetchone()[0]
    return counts


def _check_plaintext(conn, name: str, live: list[int]) -> None:
    """Every decrypted value must re-derive the token it was stored with (same normalisation)."""
    seen_versions = {
        int(v)
        for (v,) in conn.execute(
            "select distinct regexp_extract(seen_token, '^v([0-9]+):', 1) from rotation_plain"
        ).fetchall()
        if v
    }
    dead = sorted(seen_versions - set(live))
    if dead:
        raise RotationError(
            f"salt '{name}': the lake holds tokens of destroyed version(s) {dead}; they cannot "
            "be re-derived. Nothing was changed."
        )
    unreadable, mismatched = conn.execute(
        "select count(*) filter (where value is null), count(*) filter (where value is not null "
        f"and pl_token_at(value, {_sql_string(name)}, cast(regexp_extract(seen_token, "
        "'^v([0-9]+):', 1) as integer)) is distinct from seen_token) from rotation_plain"
    ).fetchone()
    if mismatched:
        raise RotationError(
            f"salt '{name}': {mismatched} decrypted value(s) do not re-derive the token stored "
            "beside them (the normalisation differs from the bronze model's, or data was "
            "altered). Nothing was changed."
        )
    if unreadable:
        # Counted here, refused later only if such a token is still used somewhere.
        conn.execute("delete from rotation_plain where value is null")


def _build_old_token_map(conn, name: str, live: list[int]) -> None:
    """`rotation_old(old_token, value)`: the token of each value under every live version."""
    parts = [
        f"select pl_token_at(value, {_sql_string(name)}, {int(v)}) as old_token, value "
        "from (select distinct value from rotation_plain)"
        for v in live
    ]
    conn.execute(f"create or replace temp table rotation_old as {' union all '.join(parts)}")
    ambiguous = conn.execute(
        "select count(*) from (select old_token from rotation_old group by old_token "
        "having count(distinct value) > 1)"
    ).fetchone()[0]
    if ambiguous:
        raise RotationError(
            f"salt '{name}': {ambiguous} token(s) stand for more than one value; the map would "
            "merge different subjects. Nothing was changed."
        )


def _unmappable(conn, tables: list[LakeTable], column: str) -> dict[str, int]:
    missing = {}
    for table in tables:
        count = conn.execute(
            f"select count(*) from {table.scan()} where {_ident(column)} is not null and "
            f"{_ident(column)} not in (select old_token from rotation_old)"
        ).fetchone()[0]
        if count:
            missing[table.relative] = count
    return missing


def _open_warehouse(settings: Settings) -> duckdb.DuckDBPyConnection | None:
    """The warehouse file, opened as dbt opens it (DuckDB shares one instance per file and
    configuration, so this also works while dbt has it open in this process)."""
    if not settings.warehouse_path.exists():
        return None
    try:
        return duckdb.connect(
            str(settings.warehouse_path),
            config=connection_config(settings.lake_dir / "_duckdb_extensions"),
        )
    except (duckdb.IOException, duckdb.ConnectionException) as busy:
        raise RotationError(
            f"the warehouse {settings.warehouse_path} cannot be opened for writing "
            f"({type(busy).__name__}); close any program holding it and run again. "
            "Nothing was changed."
        ) from None


def _warehouse_tables(warehouse, column: str) -> list[tuple[str, str, list[str]]]:
    rows = warehouse.execute(
        "select c.schema_name, c.table_name, list(c.column_name order by c.column_index) "
        "from duckdb_columns() as c join duckdb_tables() as t using "
        "(database_name, schema_name, table_name) "
        "where c.database_name = current_database() group by all order by all"
    ).fetchall()
    return [(schema, table, cols) for schema, table, cols in rows if column in cols]


def _rewrite_select(table: LakeTable, column: str, reencrypt: list[str]) -> str:
    parts = []
    for name in table.columns:
        quoted = _ident(name)
        if name == column:
            parts.append(f"coalesce(rotation_map.new_token, t.{quoted}) as {quoted}")
        elif name in reencrypt:
            parts.append(
                f"case when rotation_map.new_token is null or t.{quoted} is null then t.{quoted} "
                f"else pl_rotation_reencrypt(t.{_ident(column)}, rotation_map.new_token, "
                f"t.{quoted}) end as {quoted}"
            )
        else:
            parts.append(f"t.{quoted}")
    return (
        f"select {', '.join(parts)} from {table.scan()} as t left join rotation_map "
        f"on t.{_ident(column)} = rotation_map.old_token"
    )


def _rewrite_delta_table(
    conn, table: LakeTable, column: str, reencrypt: list[str]
) -> dict[str, Any] | None:
    """Rewrite `table` with `column` re-tokenized.

    A table with a subject token is written sorted by it, in files of the clustered size, as
    the models write it: new subject tokens order rows differently from old ones, and without
    the sort each subject's rows would spread over every file, so an erasure after a rotation
    would rewrite the whole table."""
    changing, rows_before = conn.execute(
        f"select count(*) filter (where {_ident(column)} in (select old_token from rotation_map)),"
        f" count(*) from {table.scan()}"
    ).fetchone()
    if not changing:
        return None
    delta = DeltaTable(str(table.path))
    version_before = delta.version()
    select = _rewrite_select(table, column, reencrypt)
    clustered = CLUSTER_COLUMN in table.columns
    if clustered:
        select = f"select * from ({select}) as rewritten order by {_ident(CLUSTER_COLUMN)}"
    log.info(
        "%s: rewriting %s rows (%s with an old token)%s",
        table.relative,
        f"{rows_before:,}",
        f"{changing:,}",
        f", sorted by {CLUSTER_COLUMN}" if clustered else "",
    )
    started = time.monotonic()
    # DuckDB's reader goes to delta-rs directly (no Python between them: see delta_writer).
    # Overwrite in one commit, same schema, no predicate: the log records no token.
    write_deltalake(
        delta,
        conn.execute(select).fetch_record_batch(WRITE_BATCH_ROWS),
        mode="overwrite",
        partition_by=delta.metadata().partition_columns or None,
        target_file_size=CLUSTERED_FILE_BYTES if clustered else None,
        writer_properties=writer_properties(),
    )
    log.info("%s: written in %.1f s", table.relative, time.monotonic() - started)
    after = DeltaTable(str(table.path))
    written = rows_added_by_latest_commit(after)
    if written != rows_before:
        raise RotationError(
            f"{table.relative}: wrote {written} rows where {rows_before} were read; "
            "run the rotation again with resume to finish it"
        )
    return {
        "table": table.relative,
        "column": column,
        "rows": rows_before,
        "rows_retokenized": changing,
        "ciphertext_columns_reencrypted": reencrypt,
        "delta_version_before": version_before,
        "delta_version_after": after.version(),
    }


def _rewrite_warehouse(conn, warehouse, column: str, subject: bool) -> list[dict[str, Any]]:
    """Re-tokenize DuckDB tables of the warehouse (the SCD2 snapshot): each is copied with the
    new values into a fresh table that replaces it, in one transaction.

    Only tokens and ciphertext cross into the warehouse connection: new values are computed in
    the rewriting connection, per distinct (token, ciphertexts) combination. A copy rather than
    an UPDATE: DuckDB keeps an UPDATE's old values in memory until it commits, and re-sealing a
    million subjects' ciphertext that way ran out of memory under a 1GB limit, where a copy
    streams to the file.
    """
    rewritten = []
    for schema, table, columns in _warehouse_tables(warehouse, column):
        target = f"{_ident(schema)}.{_ident(table)}"
        quoted = _ident(column)
        reencrypt = _ciphertext_columns(tuple(columns)) if subject else []
        changed_columns = (column, *reencrypt)
        keys = [quoted, *(_ident(name) for name in reencrypt)]
        log.info("warehouse %s.%s: re-tokenizing %s", schema, table, column)
        current = warehouse.execute(
            f"select distinct {', '.join(keys)} from {target} where {quoted} is not null"
        ).fetch_arrow_table()
        conn.register("rotation_current", current)
        try:
            new_values = [f"rotation_map.new_token as {_ident('new:' + column)}"]
            for name in reencrypt:
                new_values.append(
                    f"case when c.{_ident(name)} is null then null else pl_rotation_reencrypt("
                    f"c.{quoted}, rotation_map.new_token, c.{_ident(name)}) end "
                    f"as {_ident('new:' + name)}"
                )
            updates = conn.execute(
                f"select c.*, {', '.join(new_values)} from rotation_current as c "
                f"join rotation_map on c.{quoted} = rotation_map.old_token"
            ).fetch_arrow_table()
        finally:
            conn.unregister("rotation_current")
        del current
        if updates.num_rows == 0:
            continue
        matched = f"u.{_ident('new:' + column)} is not null"
        projection = [
            f"case when {matched} then u.{_ident('new:' + name)} else t.{_ident(name)} end "
            f"as {_ident(name)}"
            if name in changed_columns
            else f"t.{_ident(name)}"
            for name in columns
        ]
        on = " and ".join(
            f"t.{_ident(name)} is not distinct from u.{_ident(name)}" for name in changed_columns
        )
        staged_name = f"{table}__rotation"
        staged = f"{_ident(schema)}.{_ident(staged_name)}"
        warehouse.register("rotation_updates", updates)
        try:
            warehouse.execute("begin transaction")
            try:
                warehouse.execute(f"drop table if exists {staged}")
                warehouse.execute(
                    f"create table {staged} as select {', '.join(projection)} "
                    f"from {target} as t left join rotation_updates as u on {on}"
                )
                rows, changed, rows_after = warehouse.execute(
                    f"select (select count(*) from {target}), "
                    f"(select count(*) from {target} as t join rotation_updates as u on {on}), "
                    f"(select count(*) from {staged})"
                ).fetchone()
                if rows_after != rows:
                    raise RotationError(
                        f"warehouse {schema}.{table}: the copy holds {rows_after} rows where "
                        f"{rows} were read; nothing in it was changed"
                    )
                warehouse.execute(f"drop table {target}")
                warehouse.execute(f"alter table {staged} rename to {_ident(table)}")
                warehouse.execute("commit")
            except BaseException:
                warehouse.execute("rollback")
                raise
        finally:
            warehouse.unregister("rotation_updates")
        rewritten.append(
            {
                "table": f"warehouse:{schema}.{table}",
                "column": column,
                "rows": rows,
                "rows_retokenized": changed,
                "ciphertext_columns_reencrypted": reencrypt,
            }
        )
    return rewritten


def _duckdb_failure(error: Exception) -> str:
    """A DuckDB error, told without its text unless that text is the keyring's own (DuckDB's
    messages may quote a value, e.g. a failed cast; the keyring's never do)."""
    if isinstance(error, duckdb.OutOfMemoryException):
        configured = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
        return (
            f"DuckDB ran out of memory ({MEMORY_LIMIT_ENV}={configured or '(unset)'}; the checks "
            "hold plaintext and never spill to disk); raise the limit: 1GB is enough for 1M "
            "subjects and 10M card transactions"
        )
    text = str(error)
    marker = "Python exception occurred while executing the UDF:"
    if marker in text:
        return "the keyring refused: " + text.split(marker, 1)[1].strip().splitlines()[0]
    return f"a query failed ({type(error).__name__}; message withheld: it may quote data)"


def _link_subjects(keyring: Keyring, conn) -> dict[str, Any]:
    """Link each new subject token to the data key of the old token it replaces."""
    pairs = conn.execute(
        "select old_token, new_token from rotation_map "
        "where old_token in (select token from rotation_present) order by old_token"
    ).fetchall()
    try:
        return keyring.link_subject_tokens(pairs)
    except KeyNotFoundError:
        # A token used only where no ciphertext exists has no key, and needs no link.
        added = already = without_key = 0
        for pair in pairs:
            try:
                result = keyring.link_subject_tokens([pair])
            except KeyNotFoundError:
                without_key += 1
                continue
            added += result["links_added"]
            already += result["already_linked"]
        return {"links_added": added, "already_linked": already, "tokens_without_key": without_key}


def rotate_salt_in_lake(
    name: str,
    *,
    settings: Settings | None = None,
    grace: timedelta = DEFAULT_SALT_GRACE,
    resume: bool = False,
    rebuild: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Rotate salt `name` and re-tokenize the lake; return the evidence (also written to disk).

    `resume=True` makes no new version: it maps tokens of every older live version to the
    active one (to finish a rotation that failed half-way). `rebuild=True` runs `dbt build`
    afterwards. Raises RotationRefused / RotationError (a KeyringError) with a message that holds
    names and counts only.
    """
    use = check_rotatable(name)
    settings = settings or load_settings()
    if grace < timedelta(0):
        raise RotationError("the grace period cannot be negative")
    started, clock = _utcnow(), time.monotonic()
    decrypted = {"subjects": 0}
    # Like every pl_decrypt, each batch is in the audit log before it is decrypted.
    audit_decryption = decrypt_recorder(
        _audit_log(settings), policy_version(_policy_path(settings))
    )

    def count_decryptions(actor: str, purpose: str, subjects: int) -> None:
        audit_decryption(actor, purpose, subjects)
        decrypted["subjects"] += subjects

    actor = f"key_rotation:{_operator()}"
    with (
        _build_lock(settings.lake_dir),
        open_rotation_keyring(settings, count_decryptions) as keyring,
    ):
        live, active = _live_versions(keyring, name)
        if active is None:
            raise KeyNotFoundError(f"salt '{name}' has no active version to rotate")
        tables = _lake_tables(settings.lake_dir)
        using = [t for t in tables.values() if use.token_column in t.columns]
        conn = _connect(settings, keyring, actor) if tables else None
        warehouse = None
        phase = "checking"
        try:
            # Opened before anything changes: a warehouse held by another program stops the run.
            warehouse = _open_warehouse(settings) if conn is not None else None
            versions_before, plaintext_rows = {}, {}
            if conn is not None:
                log.info(
                    "salt '%s': %d tables hold %s; counting token versions",
                    name,
                    len(using),
                    use.token_column,
                )
                versions_before = {
                    t.relative: _token_versions(conn, t, use.token_column) for t in using
                }
                if resume and all(
                    set(found) <= {f"v{active}"} for found in versions_before.values()
                ):
                    # Checked before decrypting: resuming a finished rotation would decrypt
                    # every value of the salt for nothing.
                    raise RotationError(
                        f"salt '{name}': nothing to resume, every table already holds "
                        f"version {active} tokens only"
                    )
                log.info("salt '%s': decrypting the values behind the tokens", name)
                plaintext_rows = _prepare_plaintext(conn, name, use, tables)
                log.info(
                    "salt '%s': checking that %s decrypted values re-derive their tokens",
                    name,
                    f"{sum(plaintext_rows.values()):,}",
                )
                _check_plaintext(conn, name, live)
                _build_old_token_map(conn, name, live)
                missing = _unmappable(conn, using, use.token_column)
                if missing:
                    detail = ", ".join(f"{t}: {n}" for t, n in sorted(missing.items()))
                    raise RotationError(
                        f"salt '{name}': rows hold {use.token_column} values that no bronze "
                        f"ciphertext re-derives ({detail}); they would keep an unlinkable old "
                        "token. Nothing was changed."
                    )
            if resume:
                rotated = {
                    "event": "salt_rotation_resumed",
                    "version_before": None,
                    "version_after": active,
                    "retired_version": None,
                    "retire_after": None,
                }
            else:
                rotated = keyring.rotate_salt(name, grace=grace, now=now)
            target = rotated["version_after"]
            phase = "rewriting"
            rewritten: list[dict[str, Any]] = []
            links: dict[str, Any] | None = None
            mapped = 0
            if conn is not None:
                conn.execute(
                    "create or replace temp table rotation_map as select distinct old_token, "
                    f"pl_token_at(value, {_sql_string(name)}, {int(target)}) as new_token "
                    f"from rotation_old where old_token not like 'v{int(target)}:%'"
                )
                mapped = conn.execute("select count(*) from rotation_map").fetchone()[0]
                log.info("salt '%s': %s tokens mapped to version %d", name, f"{mapped:,}", target)
                subject = name == "subject"
                if subject:
                    conn.execute("create or replace temp table rotation_present (token varchar)")
                    for table in using:
                        conn.execute(
                            "insert into rotation_present select distinct "
                            f"{_ident(use.token_column)} from {table.scan()}"
                        )
                    links = _link_subjects(keyring, conn)
                token_map = conn.execute(
                    "select old_token, new_token from rotation_map"
                ).fetch_arrow_table()
                # The plaintext goes with the checking connection, before any rewrite starts.
                conn.close()
                conn = None
                with _rewrite_connection(settings, keyring, actor, token_map) as rewriter:
                    del token_map
                    for table in using:
                        reencrypt = _ciphertext_columns(table.columns) if subject else []
                        entry = _rewrite_delta_table(rewriter, table, use.token_column, reencrypt)
                        if entry is not None:
                            entry["token_versions_before"] = versions_before[table.relative]
                            rewritten.append(entry)
                    if warehouse is not None:
                        rewritten += _rewrite_warehouse(
                            rewriter, warehouse, use.token_column, subject
                        )
        except duckdb.Error as error:
            outcome = (
                "Nothing was changed."
                if phase == "checking"
                else f"Some tables may be rewritten: run `keys rotate-salt {name} --resume`."
            )
            raise RotationError(f"salt '{name}': {_duckdb_failure(error)}. {outcome}") from None
        finally:
            if warehouse is not None:
                warehouse.close()
            if conn is not None:
                conn.close()
        serving = _republish_serving(settings, actor) if rewritten else None
    evidence: dict[str, Any] = {
        "event": "salt_rotated_in_lake" if not resume else "salt_rotation_resumed",
        "at": _iso(started),
        "salt": name,
        "token_column": use.token_column,
        "version_before": rotated["version_before"],
        "version_after": rotated["version_after"],
        "retired_version": rotated["retired_version"],
        "retire_after": rotated["retire_after"],
        "decrypt_purpose": ROTATION_PURPOSE,
        "subjects_decrypted": decrypted["subjects"],
        "plaintext_rows_by_source": plaintext_rows,
        "tokens_mapped": mapped,
        "subject_token_links": links,
        "tables_rewritten": rewritten,
        "rows_rewritten": sum(entry["rows"] for entry in rewritten),
        "rows_retokenized": sum(entry["rows_retokenized"] for entry in rewritten),
        "serving_files": serving,
        "seconds": round(time.monotonic() - clock, 3),
    }
    evidence_path = record_rotation(settings, evidence, actor=actor)
    evidence["evidence_file"] = str(evidence_path)
    if rebuild:
        evidence["rebuild"] = rebuild_lake(settings)
        _write_json(evidence_path, evidence)
        if not evidence["rebuild"]["success"]:
            raise RotationError(
                f"salt '{name}' rotated and the lake re-tokenized, but the rebuild failed: "
                f"{evidence['rebuild']['error']} (evidence: {evidence_path})"
            )
    return evidence


def _republish_serving(settings: Settings, actor: str) -> dict[str, Any] | None:
    """Serving files are copies of gold: republish them so they carry the new tokens too."""
    from privacy_lakehouse import serving
    from privacy_lakehouse.policy import PolicyError, load_policy

    if not any(serving.serving_dir(settings.lake_dir).glob("*.duckdb")):
        return None
    manifest = settings.manifest_path
    if not manifest.is_file():
        return {"republished": [], "stale_until_next_build": "no dbt manifest.json"}
    try:
        published = serving.publish(
            serving.models_from_manifest(json.loads(manifest.read_text(encoding="utf-8"))),
            settings.lake_dir,
            load_policy(_policy_path(settings)),
            actor=actor,
            memory_limit=_rewrite_memory_limit(),
        )
    except (serving.ServingError, PolicyError, OSError, ValueError) as error:
        # The lake is already consistent; the next build republishes the files.
        return {"republished": [], "stale_until_next_build": type(error).__name__}
    return {"republished": sorted(published)}


# --------------------------------------------------------------------------------------------
# Destroying retired versions, guarded


def destroy_retired_salts_in_lake(
    *, settings: Settings | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """`Keyring.destroy_retired_salts`, refused while the lake still holds a due version's tokens.

    Such tokens could never be re-derived once the version is gone (finish the rotation with
    `resume` first). Evidence and an audit entry are recorded as for every rotation step.
    """
    settings = settings or load_settings()
    moment = now or _utcnow()
    with _build_lock(settings.lake_dir), Keyring.open(settings) as keyring:
        due = [
            s
            for s in keyring.status()["salts"]
            if s["state"] == "retired" and datetime.fromisoformat(s["retire_after"]) <= moment
        ]
        still_used = _tokens_in_lake(settings, keyring, due) if due else {}
        if still_used:
            detail = ", ".join(
                f"{salt} v{version}: {rows} rows" for (salt, version), rows in still_used.items()
            )
            raise RotationError(
                f"retired salt versions are still used in the lake ({detail}); finish the "
                "rotation with `keys rotate-salt NAME --resume` before destroying them"
            )
        evidence = keyring.destroy_retired_salts(moment)
    record_rotation(settings, evidence, actor=f"key_rotation:{_operator()}")
    return evidence


def _tokens_in_lake(
    settings: Settings, keyring: Keyring, due: list[dict[str, Any]]
) -> dict[tuple[str, int], int]:
    tables = _lake_tables(settings.lake_dir)
    if not tables:
        return {}
    used: dict[tuple[str, int], int] = {}
    conn = connect(extension_dir=settings.lake_dir / "_duckdb_extensions")
    try:
        for entry in due:
            use = ROTATABLE_SALTS.get(entry["salt"])
            if use is None:
                continue
            prefix = f"v{int(entry['version'])}:%"
            rows = 0
            for table in tables.values():
                if use.token_column in table.columns:
                    rows += conn.execute(
                        f"select count(*) from {table.scan()} "
                        f"where {_ident(use.token_column)} like ?",
                        [prefix],
                    ).fetchone()[0]
            if rows:
                used[(entry["salt"], entry["version"])] = rows
    finally:
        conn.close()
    return used


# --------------------------------------------------------------------------------------------
# Rebuild


def rebuild_lake(settings: Settings, *args: str) -> dict[str, Any]:
    """`dbt build` in-process on the project at settings.root; returns a summary, no values."""
    from dbt.cli.main import dbtRunner

    environment = {
        "PRIVACY_LAKEHOUSE_HOME": str(settings.root),
        "PRIVACY_LAKEHOUSE_LAKE": str(settings.lake_dir),
        "PRIVACY_LAKEHOUSE_LANDING": str(settings.landing_dir),
        "PRIVACY_LAKEHOUSE_KEYS": str(settings.keys_dir),
    }
    profiles = os.environ.get("DBT_PROFILES_DIR") or str(settings.root)
    argv = ["build", *args, "--project-dir", str(settings.root), "--profiles-dir", profiles]
    saved = {k: os.environ.get(k) for k in environment}
    old_cwd = Path.cwd()
    started = time.monotonic()
    os.environ.update(environment)
    os.chdir(settings.root)
    try:
        result = dbtRunner().invoke(argv)
    finally:
        os.chdir(old_cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    statuses: dict[str, int] = {}
    for node in getattr(result.result, "results", None) or []:
        statuses[str(node.status)] = statuses.get(str(node.status), 0) + 1
    return {
        "command": "dbt " + " ".join(["build", *args]),
        "success": bool(result.success),
        "node_statuses": statuses,
        # dbt's exception text names nodes and errors; the project keeps values out of them.
        "error": "" if result.success else _first_line(result.exception, "a node failed"),
        "seconds": round(time.monotonic() - started, 3),
    }


def _first_line(error: BaseException | None, default: str) -> str:
    text = str(error or "").strip().splitlines()
    return text[0][:300] if text else default


# --------------------------------------------------------------------------------------------
# Evidence


def _audit_log(settings: Settings) -> AuditLog:
    return AuditLog(settings.lake_dir / "_audit" / "audit.jsonl")


def _policy_path(settings: Settings) -> Path:
    return settings.root / "privacy_policy.yml"


def _write_json(path: Path, document: dict[str, Any]) -> None:
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staged, path)


def record_rotation(
    settings: Settings, evidence: dict[str, Any], *, actor: str | None = None
) -> Path:
    """Write a rotation's evidence to `<lake>/_evidence/rotation/` and append an audit entry.

    Evidence holds key names, versions, tables and counts only; the keyring's own evidence
    (master-key rotation, destroyed salt versions) is recorded the same way.
    """
    folder = settings.evidence_dir / EVIDENCE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    event = str(evidence.get("event", "key_rotation"))
    stamp = _utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    subject = evidence.get("salt") or ("master" if "master_key_version_after" in evidence else "")
    path = folder / f"{stamp}_{event}{'_' + subject if subject else ''}.json"
    _write_json(path, evidence)
    details = {
        key: evidence[key]
        for key in (
            "salt",
            "version_before",
            "version_after",
            "retire_after",
            "rows_rewritten",
            "rows_retokenized",
            "tokens_mapped",
            "subjects_decrypted",
            "master_key_version_before",
            "master_key_version_after",
            "data_keys_rewrapped",
            "salt_versions_rewrapped",
        )
        if key in evidence
    }
    details["event"] = event
    details["evidence_file"] = path.name
    if "destroyed" in evidence:
        details["destroyed"] = [f"{e['salt']} v{e['version']}" for e in evidence["destroyed"]]
    tables = [entry["table"] for entry in evidence.get("tables_rewritten", [])]
    _audit_log(settings).append(
        actor=actor or f"key_rotation:{_operator()}",
        action="key_rotation",
        object=tables or ["keyring"],
        policy_version=policy_version(_policy_path(settings)),
        details=details,
    )
    return path


# --------------------------------------------------------------------------------------------
# CLI (wired into `privacy-lakehouse keys rotate-salt` by keyring.add_arguments)


def add_rotate_salt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="run `dbt build` after re-tokenizing, so every model and test sees the new tokens",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="make no new version: finish a rotation that failed part-way by mapping tokens of "
        "older live versions to the active one",
    )


def run_rotate_salt(args: argparse.Namespace) -> dict[str, Any]:
    return rotate_salt_in_lake(
        args.name,
        grace=timedelta(days=args.grace_days),
        resume=bool(getattr(args, "resume", False)),
        rebuild=bool(getattr(args, "rebuild", False)),
    )
