"""Landing purge: delete landing files once every one of their rows is safely in bronze.

Landing files are the only place plaintext identifiers exist, so the policy may purge them after
ingestion (`landing:` in privacy_policy.yml):

    landing:
      purge_after_ingest: false   # true: purge at the end of every successful dbt build
      keep_days: 7                # keep a file at least this long after its rows were ingested

A file is purged only when its rows are all accounted for: the file's row count (read with the
same reader options as its dbt source) equals its rows in the source's bronze table plus its
rows in quarantine plus its rows of erased subjects (bronze and quarantine filter those out on
purpose; counted through the erasure tombstones) plus its rows retention deleted from bronze
and quarantine (counted in the ingestion ledger, `privacy_lakehouse.ingestion_ledger`). Any
other count is a mismatch: the file is kept and reported, never purged. The newest file of each
source is always kept, because each dbt landing source reads a glob that must match at least
one file, or the next build fails.

`purge_landing` is the library call, `privacy-lakehouse landing purge [--dry-run]` the command,
and the `landing_purge` after-build hook runs it when the policy enables it. Each purge writes
evidence (file names, counts, decisions; never values) to `<lake>/_evidence/landing_purge/` and
a `retention` entry to the audit log. Files are unlinked; storage-level remnants (snapshots,
backups of the landing folder) are outside the lake's reach.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import yaml
from deltalake import DeltaTable

from privacy_lakehouse import ingestion_ledger
from privacy_lakehouse.audit_log import AuditLog
from privacy_lakehouse.duckdb_setup import connect
from privacy_lakehouse.hooks import BuildContext, after_build
from privacy_lakehouse.settings import Settings, load_settings
from privacy_lakehouse.sql_quote import quote_ident as _quote
from privacy_lakehouse.sql_quote import sql_string as _sql_string

POLICY_FILE = "privacy_policy.yml"
POLICY_SECTION = "landing"
EVIDENCE_FOLDER = "landing_purge"
QUARANTINE_TABLE = ingestion_ledger.QUARANTINE_TABLE
TOMBSTONE_TABLE = "control/erasure_tombstones"


class LandingError(Exception):
    """The purge cannot run (bad policy, lake busy); messages hold names and counts only."""


@dataclass(frozen=True)
class LandingPolicy:
    purge_after_ingest: bool = False
    keep_days: float = 7


@dataclass(frozen=True)
class LandingSource:
    """One dbt landing source: its files, how dbt reads them, and where its rows land."""

    name: str  # source_name in quarantine, e.g. core_banking.customers
    folder: str  # relative to the landing folder
    pattern: str
    reader: str  # the source's external_location, with {glob} for the quoted file glob
    bronze_table: str  # relative to the lake
    lines: bool  # JSON lines read as text (one `line` column), else one column per field
    columns: tuple[str, ...] = ()  # the columns a table source declares in its YAML

    def relation(self, landing_dir: Path, file: Path | None = None) -> str:
        """How dbt reads the source (its external_location); of one file when `file` is given."""
        glob = str(file) if file else f"{landing_dir}/{self.folder}/{self.pattern}"
        return self.reader.format(glob=_sql_string(glob))

    def rows(self, landing_dir: Path, file: Path | None = None) -> str:
        """The landing rows as landing_records sees them: a declared column missing from every
        file reads as NULL."""
        relation = self.relation(landing_dir, file)
        if self.lines:
            return relation
        # Plus one undeclared column, always NULL, so that has_undeclared_column always has
        # a column to look at (as landing_records.sql does).
        nulls = ", ".join(f"cast(null as varchar) as {_quote(c)}" for c in self.columns)
        return (
            f"(select * from {relation} union all by name select {nulls}, "
            f"cast(null as varchar) as {UNDECLARED_PLACEHOLDER} where false)"
        )

    @property
    def has_undeclared_column(self) -> str:
        """Whether the row has a value in a column the source does not declare (a lambda over
        the names: an undeclared name may be data, e.g. a header-less file's first row)."""
        declared = ", ".join(_sql_string(c) for c in (*self.columns, "filename"))
        return f"coalesce(length(coalesce(*columns(lambda c: c not in ({declared})))) >= 0, false)"

    @property
    def skips_rows(self) -> bool:
        """A CSV source: its reader skips ragged or unparseable rows, which the quarantine
        collects (macros/ingest/stage_landing_rejects.sql) and which are rows of the file."""
        return not self.lines and self.reader.startswith("read_csv(")

    def skipped_rows(self, file: Path) -> str:
        """The reader of one file that records the rows it skips (as the quarantine's pre-hook
        does): the source's options without union_by_name, which store_rejects refuses."""
        relation = self.reader.format(glob=_sql_string(str(file)))
        options = relation[: -len(")")].replace(", union_by_name=true", "")
        return (
            f"{options}, store_rejects=true, rejects_scan='pl_purge_rejects_scan', "
            "rejects_table='pl_purge_rejects')"
        )

    @property
    def customer_id(self) -> str:
        """The row's customer id, parsed as the landing models parse it."""
        if self.lines:
            return (
                "case when json_valid(line) and json_type(line) = 'OBJECT' then "
                "nullif(trim(json_merge_patch('{}', line) ->> 'customer_id'), '') end"
            )
        return "nullif(trim(landing_row.customer_id), '')"

    @property
    def record_hash(self) -> str:
        """The row's record_hash, as macros/ingest/landing_records.sql computes it (keyed: the
        connection needs the keyring's functions)."""
        if self.lines:
            return f"pl_token(md5(coalesce(line, '')), {_sql_string(RECORD_SALT)})"
        fields = ", ".join(
            f"{_sql_string(column + '=')} || landing_row.{_quote(column)}"
            for column in sorted(self.columns)
        )
        # A row with undeclared values: every non-null field as name=value in name order
        # (landing_row_text in landing_records.sql).
        whole_row = (
            "array_to_string(list_transform(list_filter(list_sort(map_entries(json_transform("
            "json_merge_patch(to_json(landing_row), '{\"filename\": null}'), "
            "'\"MAP(VARCHAR, VARCHAR)\"'))), entry -> length(entry.value) >= 0), "
            "entry -> entry.key || '=' || entry.value), chr(31))"
        )
        digest = (
            f"case when {self.has_undeclared_column} then md5('*' || {whole_row}) "
            f"else md5(concat_ws(chr(31), {fields})) end"
        )
        return f"pl_token({digest}, {_sql_string(RECORD_SALT)})"


UNDECLARED_PLACEHOLDER = "pl_no_undeclared_column"

_CSV = (
    "read_csv({glob}, delim=',', quote='\"', escape='\"', header=true, all_varchar=true, "
    "union_by_name=true, filename=true, ignore_errors=true)"
)
_JSON_LINES = (
    "read_csv({glob}, delim='\\x01', quote='', escape='', header=false, names=['line'], "
    "all_varchar=true, union_by_name=true, filename=true)"
)

# Mirrors models/landing/*/_*__sources.yml (external_location, checked by a test against the
# manifest) and the bronze model each source feeds.
LANDING_SOURCES: tuple[LandingSource, ...] = (
    LandingSource(
        "core_banking.customers",
        "core_banking/customers",
        "*.csv",
        _CSV,
        "bronze/raw_core_banking__customers",
        lines=False,
        columns=(
            "customer_id",
            "first_name",
            "last_name",
            "email",
            "phone",
            "national_id",
            "birth_date",
            "street_address",
            "postcode",
            "city",
            "country",
            "created_at",
            "updated_at",
            "preferred_language",
        ),
    ),
    LandingSource(
        "core_banking.accounts",
        "core_banking/accounts",
        "*.csv",
        _CSV,
        "bronze/raw_core_banking__accounts",
        lines=False,
        columns=(
            "account_id",
            "customer_id",
            "account_type",
            "iban",
            "currency",
            "opened_at",
            "status",
            "balance",
        ),
    ),
    LandingSource(
        "cards.transactions",
        "cards/transactions",
        "*.parquet",
        "read_parquet({glob}, union_by_name=true, filename=true)",
        "bronze/raw_cards__transactions",
        lines=False,
        columns=(
            "transaction_id",
            "account_id",
            "customer_id",
            "card_number",
            "amount",
            "currency",
            "merchant_category",
            "merchant_country",
            "transaction_ts",
            "channel",
            "device_id",
        ),
    ),
    LandingSource(
        "consent.events",
        "consent/events",
        "*.jsonl",
        _JSON_LINES,
        "bronze/raw_consent__events",
        lines=True,
    ),
    LandingSource(
        "support.cases",
        "support/cases",
        "*.jsonl",
        _JSON_LINES,
        "bronze/raw_support__cases",
        lines=True,
    ),
)
# The salt that keys record hashes (macros/ingest/landing_records.sql). Never rotated: bronze's
# ingest keys and the tombstones of records are derived from the hashes.
RECORD_SALT = "record"
# Erasure tombstones quarantined records that name no customer by their record hash
# (privacy_lakehouse.erasure: pl_token('record:' || record_hash, 'tombstone')).
RECORD_TOMBSTONE_PREFIX = "record:"

# Decisions. Only PURGE removes a file.
PURGE = "purge"
KEPT_MISMATCH = "kept_mismatch"
KEPT_NOT_INGESTED = "kept_not_ingested"
KEPT_RECENT = "kept_within_keep_days"
KEPT_NEWEST = "kept_newest_of_source"
KEPT_UNREADABLE = "kept_unreadable"


# --------------------------------------------------------------------------------------------
# Policy


def parse_landing_policy(document: Any) -> LandingPolicy:
    """The `landing:` section of a parsed policy document (defaults when absent); fail closed."""
    if document is None:
        return LandingPolicy()
    if not isinstance(document, dict):
        raise LandingError("the policy file must be a mapping")
    section = document.get(POLICY_SECTION)
    if section is None:
        return LandingPolicy()
    if not isinstance(section, dict):
        raise LandingError("landing: must map purge_after_ingest and keep_days to values")
    known = {field.name for field in dataclasses.fields(LandingPolicy)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise LandingError(f"landing: unknown key(s) {unknown}; known: {sorted(known)}")
    purge = section.get("purge_after_ingest", False)
    if not isinstance(purge, bool):
        raise LandingError("landing.purge_after_ingest must be true or false")
    keep = section.get("keep_days", LandingPolicy.keep_days)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or keep < 0:
        raise LandingError("landing.keep_days must be a number of days, 0 or more")
    return LandingPolicy(purge_after_ingest=purge, keep_days=keep)


def load_landing_policy(path: str | os.PathLike | None = None) -> LandingPolicy:
    policy_path = Path(path) if path else load_settings().root / POLICY_FILE
    if not policy_path.is_file():
        return LandingPolicy()
    try:
        document = yaml.safe_load(policy_path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise LandingError(f"{policy_path} is not valid YAML") from None
    return parse_landing_policy(document)


# --------------------------------------------------------------------------------------------
# Accounting


@dataclass
class FileAccount:
    path: str  # relative to the landing folder
    source: str
    rows: int | None = None
    bronze_rows: int = 0
    quarantine_rows: int = 0
    erased_rows: int = 0
    expired_rows: int = 0  # deleted by retention from bronze and quarantine (ingestion ledger)
    last_ingested_at: str | None = None
    decision: str = ""

    @property
    def accounted(self) -> int:
        return self.bronze_rows + self.quarantine_rows + self.erased_rows + self.expired_rows


def _counts_by_file(conn, table: Path, source_name: str | None) -> dict[str, tuple[int, Any]]:
    if not DeltaTable.is_deltatable(str(table)):
        return {}
    where = f"where source_name = {_sql_string(source_name)}" if source_name else ""
    rows = conn.execute(
        f"select source_file, count(*), max(ingested_at) from delta_scan({_sql_string(str(table))})"
        f" {where} group by source_file"
    ).fetchall()
    return {name: (count, latest) for name, count, latest in rows}


def _has_tombstones(lake_dir: Path) -> bool:
    table = lake_dir / TOMBSTONE_TABLE
    if not DeltaTable.is_deltatable(str(table)):
        return False
    return DeltaTable(str(table)).count() > 0


def account_landing_files(
    settings: Settings,
    policy: LandingPolicy,
    *,
    keep_days: float | None = None,
    now: datetime | None = None,
) -> list[FileAccount]:
    """Every landing file of every source, with its counts and what the purge would decide."""
    keep = timedelta(days=policy.keep_days if keep_days is None else keep_days)
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    # bronze.ingested_at is a local wall-clock timestamp (cast(now() as timestamp) in DuckDB).
    cutoff = (moment - keep).astimezone().replace(tzinfo=None)
    lake, landing_dir = settings.lake_dir, settings.landing_dir
    conn = connect(extension_dir=lake / "_duckdb_extensions")
    tombstones = _has_tombstones(lake)
    if tombstones:
        from privacy_lakehouse import duckdb_functions
        from privacy_lakehouse.keyring import Keyring

        keyring = Keyring.open(settings)
        duckdb_functions.register(conn, keyring)
    accounts: list[FileAccount] = []
    expired = ingestion_ledger.expired_rows(lake)
    # A file whose rows all expired has no ingestion time left in bronze: the ledger's holds.
    recorded: dict[tuple[str, str], datetime] = {}
    for (_, source_name, name), entry in ingestion_ledger.latest_ingested(lake).items():
        moment = entry["recorded_at"].astimezone().replace(tzinfo=None)
        recorded[(source_name, name)] = max(moment, recorded.get((source_name, name), moment))
    try:
        quarantine = lake / QUARANTINE_TABLE
        for source in LANDING_SOURCES:
            files = sorted((settings.landing_dir / source.folder).glob(source.pattern))
            files = [f for f in files if f.is_file()]
            if not files:
                continue
            in_bronze = _counts_by_file(conn, lake / source.bronze_table, None)
            in_quarantine = _counts_by_file(conn, quarantine, source.name)
            unreadable: set[str] = set()
            try:
                # The source read exactly as dbt reads it, so rows and hashes agree with bronze.
                rows, erased = _read_source(conn, source, landing_dir, files, lake, tombstones)
            except duckdb.Error:
                # One unreadable file (a truncated Parquet file, which the build skips) fails the
                # read of them all: read each on its own, and keep every file that fails.
                rows, erased = {}, {}
                for path in files:
                    try:
                        found = _read_source(
                            conn, source, landing_dir, [path], lake, tombstones, single=True
                        )
                    except duckdb.Error:
                        unreadable.add(str(path))
                        continue
                    rows.update(found[0])
                    erased.update(found[1])
            for index, path in enumerate(files):
                account = FileAccount(
                    path=path.relative_to(settings.landing_dir).as_posix(), source=source.name
                )
                accounts.append(account)
                bronze_rows, bronze_latest = in_bronze.get(path.name, (0, None))
                quarantine_rows, quarantine_latest = in_quarantine.get(path.name, (0, None))
                account.bronze_rows, account.quarantine_rows = bronze_rows, quarantine_rows
                account.expired_rows = sum(
                    expired.get((table, source.name, path.name), 0)
                    for table in (source.bronze_table, QUARANTINE_TABLE)
                )
                latest = max((t for t in (bronze_latest, quarantine_latest) if t), default=None)
                latest = latest or recorded.get((source.name, path.name))
                account.last_ingested_at = latest.isoformat(sep=" ") if latest else None
                if str(path) in unreadable:
                    account.decision = KEPT_UNREADABLE
                    continue
                account.rows = rows.get(str(path), 0)
                account.erased_rows = erased.get(str(path), 0)
                if account.accounted == 0:
                    account.decision = KEPT_NOT_INGESTED
                elif account.rows != account.accounted:
                    account.decision = KEPT_MISMATCH
                elif index == len(files) - 1:
                    account.decision = KEPT_NEWEST
                elif latest is None or latest > cutoff:
                    account.decision = KEPT_RECENT
                else:
                    account.decision = PURGE
    finally:
        conn.close()
        if tombstones:
            keyring.close()
    return accounts


def _read_source(
    conn,
    source: LandingSource,
    landing_dir: Path,
    files: list[Path],
    lake: Path,
    tombstones: bool,
    *,
    single: bool = False,
) -> tuple[dict[str, int], dict[str, int]]:
    """Rows and erased rows by file: the rows the source's reader returns plus, for CSV, the
    rows it skips (the quarantine holds those as ragged_row or unparseable_line)."""
    file = files[0] if single else None
    relation = source.rows(landing_dir, file)
    rows = _rows_by_file(conn, relation)
    erased = _erased_rows(conn, relation, source, lake) if tombstones else {}
    if source.skips_rows:
        for path in files:
            skipped = _skipped_rows(conn, source, path)
            if skipped:
                rows[str(path)] = rows.get(str(path), 0) + len(skipped)
            if skipped and tombstones:
                gone = _erased_skipped_rows(conn, skipped, lake)
                if gone:
                    erased[str(path)] = erased.get(str(path), 0) + gone
    return rows, erased


def _rows_by_file(conn, relation: str) -> dict[str, int]:
    return dict(conn.execute(f"select filename, count(*) from {relation} group by all").fetchall())


def _skipped_rows(conn, source: LandingSource, path: Path) -> list[str]:
    """The text of each row the CSV reader skips in one file (one entry per row)."""
    conn.execute(
        "drop table if exists pl_purge_rejects; drop table if exists pl_purge_rejects_scan;"
    )
    conn.execute(f"select count(*) from {source.skipped_rows(path)}").fetchall()
    tables = conn.execute(
        "select count(*) from duckdb_tables() where temporary and table_name = 'pl_purge_rejects'"
    ).fetchone()[0]
    if not tables:
        return []
    try:
        return [
            line
            for (line,) in conn.execute(
                "select any_value(csv_line) from pl_purge_rejects group by scan_id, file_id, line"
            ).fetchall()
        ]
    finally:
        conn.execute("drop table pl_purge_rejects; drop table pl_purge_rejects_scan")


def _erased_skipped_rows(conn, lines: list[str], lake: Path) -> int:
    """Skipped rows erased by their record hash (they name no customer in the quarantine)."""
    tombstones = _sql_string(str(lake / TOMBSTONE_TABLE))
    return conn.execute(
        f"select count(*) from (select unnest($lines) as line) where pl_token("
        f"{_sql_string(RECORD_TOMBSTONE_PREFIX)} || pl_token(md5(coalesce(line, '')), "
        f"{_sql_string(RECORD_SALT)}), 'tombstone') in (select tombstone_token from "
        f"delta_scan({tombstones}))",
        {"lines": lines},
    ).fetchone()[0]


def _erased_rows(conn, relation: str, source: LandingSource, lake: Path) -> dict[str, int]:
    """Rows of erased subjects or records, which bronze and quarantine leave out on purpose."""
    tombstones = (
        f"(select tombstone_token from delta_scan({_sql_string(str(lake / TOMBSTONE_TABLE))}))"
    )
    prefix = _sql_string(RECORD_TOMBSTONE_PREFIX)
    return dict(
        conn.execute(
            f"select filename, count(*) from (select filename, {source.customer_id} as "
            f"customer_id, {source.record_hash} as record_hash from {relation} as landing_row) "
            f"where (customer_id is not null and pl_token(customer_id, 'tombstone') in "
            f"{tombstones}) or pl_token({prefix} || record_hash, 'tombstone') in {tombstones} "
            "group by all"
        ).fetchall()
    )


def landing_file_readable(path: str | os.PathLike) -> bool:
    """Whether a table landing file can be read at all: a Parquet file's footer, a CSV file's
    header and dialect (a quote left open makes DuckDB's reader fail on the whole file). The
    build, the quarantine's pre-hook and the erasure's landing search skip a file that fails,
    instead of failing every file of its source with it; the purge keeps it (kept_unreadable).
    Other files (JSON lines, read line by line) always read."""
    name = str(path)
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            pq.read_metadata(name)
        elif name.endswith(".csv"):
            with duckdb.connect() as conn:
                conn.execute(f"describe select * from {_CSV.format(glob=_sql_string(name))}")
    except Exception:  # noqa: BLE001 - any failure means the file cannot be read
        return False
    return True


def register(conn: duckdb.DuckDBPyConnection) -> None:
    """pl_landing_file_readable(path): landing_file_readable for SQL. The build skips, with a
    warning, a file it cannot read (macros/ingest/landing_readable_relation.sql) instead of
    failing every source's quarantine on it."""
    import pyarrow as pa

    def readable(paths):  # no annotations: DuckDB resolves them in this module
        return pa.array([landing_file_readable(p) for p in paths.to_pylist()], pa.bool_())

    with contextlib.suppress(duckdb.InvalidInputException):
        conn.remove_function("pl_landing_file_readable")
    conn.create_function(
        "pl_landing_file_readable",
        readable,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("BOOLEAN"),
        type="arrow",
        side_effects=True,  # the file may change between two calls
    )


# --------------------------------------------------------------------------------------------
# Purge


@contextlib.contextmanager
def _build_lock(lake_dir: Path) -> Iterator[None]:
    from dbt_common.exceptions import DbtRuntimeError

    from privacy_lakehouse.delta_writer import _BuildLock  # imports dbt: only when needed

    try:
        _BuildLock.acquire(lake_dir)
    except DbtRuntimeError as busy:
        raise LandingError(str(busy)) from None
    try:
        yield
    finally:
        _BuildLock.release(lake_dir)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def purge_landing(
    *,
    settings: Settings | None = None,
    policy: LandingPolicy | None = None,
    dry_run: bool = False,
    keep_days: float | None = None,
    now: datetime | None = None,
    actor: str | None = None,
    lock: bool = True,
) -> dict[str, Any]:
    """Purge every accounted-for landing file (see the module docstring); return the summary.

    With `dry_run` nothing is deleted or recorded. `lock=False` is for callers that already
    hold the lake's build lock (the after-build hook runs inside the build).
    """
    settings = settings or load_settings()
    policy = policy or load_landing_policy(settings.root / POLICY_FILE)
    started, clock = datetime.now(timezone.utc), time.monotonic()
    guard = _build_lock(settings.lake_dir) if lock and not dry_run else contextlib.nullcontext()
    with guard:
        accounts = account_landing_files(settings, policy, keep_days=keep_days, now=now)
        purged = []
        for account in accounts:
            if account.decision != PURGE:
                continue
            if dry_run:
                purged.append(account)
                continue
            try:
                (settings.landing_dir / account.path).unlink()
            except OSError:
                account.decision = KEPT_UNREADABLE
                continue
            purged.append(account)
    decisions: dict[str, int] = {}
    for account in accounts:
        decisions[account.decision] = decisions.get(account.decision, 0) + 1
    summary: dict[str, Any] = {
        "event": "landing_purge_planned" if dry_run else "landing_purged",
        "at": started.isoformat(timespec="seconds"),
        "dry_run": dry_run,
        "policy": {
            "purge_after_ingest": policy.purge_after_ingest,
            "keep_days": policy.keep_days if keep_days is None else keep_days,
        },
        "files_seen": len(accounts),
        "files_purged": 0 if dry_run else len(purged),
        "files_to_purge": len(purged) if dry_run else 0,
        "rows_in_purged_files": sum(a.rows or 0 for a in purged),
        "decisions": decisions,
        "mismatches": [dataclasses.asdict(a) for a in accounts if a.decision == KEPT_MISMATCH],
        "files": [dataclasses.asdict(a) for a in accounts],
        "seconds": round(time.monotonic() - clock, 3),
    }
    if not dry_run:
        summary["evidence_file"] = str(_record(settings, summary, actor))
    return summary


def _record(settings: Settings, summary: dict[str, Any], actor: str | None) -> Path:
    folder = settings.evidence_dir / EVIDENCE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}.json"
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staged, path)
    AuditLog(settings.lake_dir / "_audit" / "audit.jsonl").append(
        actor=actor or _operator(),
        action="retention",
        object=["landing"],
        details={
            "operation": "landing_purge",
            "files_seen": summary["files_seen"],
            "files_purged": summary["files_purged"],
            "rows_in_purged_files": summary["rows_in_purged_files"],
            "files_kept_mismatch": summary["decisions"].get(KEPT_MISMATCH, 0),
            "keep_days": summary["policy"]["keep_days"],
            "evidence_file": path.name,
        },
    )
    return path


# --------------------------------------------------------------------------------------------
# After-build hook


@after_build("landing_purge")
def purge_after_build(context: BuildContext) -> dict[str, Any]:
    settings = dataclasses.replace(load_settings(), lake_dir=context.lake_dir)
    policy = load_landing_policy(settings.root / POLICY_FILE)
    if not policy.purge_after_ingest:
        return {"enabled": False}
    if not context.succeeded:
        return {"enabled": True, "skipped": "the build had errors or failures; nothing purged"}
    summary = purge_landing(
        settings=settings,
        policy=policy,
        actor=f"dbt:{context.invocation_id or 'build'}",
        lock=False,  # the build holds the lock until its last on-run-end hook
    )
    return {
        "enabled": True,
        "files_purged": summary["files_purged"],
        "files_kept_mismatch": summary["decisions"].get(KEPT_MISMATCH, 0),
        "evidence_file": summary["evidence_file"],
    }


# --------------------------------------------------------------------------------------------
# CLI: `privacy-lakehouse landing ...`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Landing files after ingestion. `purge` deletes each file whose rows are all in bronze, "
        "quarantine or erased, keeps (and reports) any file with a count mismatch, and keeps the "
        "newest file of each source. Output is evidence as JSON (file names, counts), no values."
    )
    commands = parser.add_subparsers(dest="landing_command", metavar="SUBCOMMAND")
    commands.required = True
    text = (
        "Purge landing files whose rows are all accounted for in bronze, quarantine or erased "
        "rows (the newest file of each source is kept)."
    )
    purge = commands.add_parser("purge", help=text, description=text)
    purge.add_argument(
        "--dry-run", action="store_true", help="show what would be purged; delete nothing"
    )
    purge.add_argument(
        "--keep-days",
        type=_days,
        default=None,
        metavar="N",
        help="keep files ingested less than N days ago (overrides the policy's "
        "landing.keep_days for this run)",
    )


def _days(value: str) -> float:
    import math

    days = float(value)
    if not math.isfinite(days) or days < 0:
        raise argparse.ArgumentTypeError("days must be a finite number, 0 or more")
    return days


def run(args: argparse.Namespace) -> int:
    from privacy_lakehouse.keyring import KeyringError

    try:
        summary = purge_landing(dry_run=args.dry_run, keep_days=args.keep_days)
    except (LandingError, KeyringError) as error:  # keys are needed when tombstones exist
        print(f"privacy-lakehouse landing: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    if summary["mismatches"]:
        print(
            f"privacy-lakehouse landing: {len(summary['mismatches'])} file(s) kept because their "
            "row count differs from bronze + quarantine + erased + expired rows; see 'mismatches'",
            file=sys.stderr,
        )
    return 0
