"""The policy enforcement point: run a read-only SQL query as a role, for a purpose.

DuckDB has no users or grants, so access is checked here, before the query runs. The query is
parsed with sqlglot (DuckDB dialect); only a single read-only SELECT (or set operation of
SELECTs) over tables in the column catalog passes. Every column the query reads, in the select
list and also in WHERE, JOIN, GROUP BY, HAVING, ORDER BY, QUALIFY and window clauses, through
aliases, CTEs and subqueries, is resolved to its base table with sqlglot's qualifier, and each
is checked against the policy: the role may use the purpose, the column's sensitivity is at
most the role's `max_sensitivity`, and the purpose is among the column's purposes. Unknown
tables, unknown or unclassified columns, table functions and functions that reach outside the
query (files, settings, session variables) are denied: the check fails closed.

What runs is the SQL sqlglot generates from the checked, fully qualified tree (stars expanded
to the catalog's columns), not the submitted text, so a parser difference between sqlglot and
DuckDB cannot smuggle in anything the check did not see, and a column missing from the catalog
cannot leak through `SELECT *`. The database is opened read-only with external access off.

Deny reasons name the policy rule, the table and the column; never a data value.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

from privacy_lakehouse.audit_log import AuditLog, default_audit_path
from privacy_lakehouse.policy import Policy, PolicyError, column_meta, load_policy
from privacy_lakehouse.settings import load_settings

DIALECT = "duckdb"
ALLOWED_STATEMENTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)
# Nodes that change state or reach outside the query, wherever they appear in the tree.
FORBIDDEN_NODES = (
    exp.DML,
    exp.DDL,
    exp.Command,
    exp.Pragma,
    exp.Set,
    exp.Copy,
    exp.Attach,
    exp.Detach,
    exp.Install,
    exp.Use,
    exp.Describe,
    exp.Show,
    exp.Summarize,
    exp.Into,
    exp.Placeholder,
)
# DuckDB's `#1` reads a column by position, and PIVOT/UNPIVOT turn columns into values and
# back; the column resolution cannot follow either, so both fail closed.
UNSUPPORTED_NODES = {
    exp.PositionalColumn: "positional column reference",
    exp.Pivot: "PIVOT/UNPIVOT",
}
# Scalar functions that read settings, session variables (where the build keeps secrets),
# the environment or files, or select columns dynamically (which the check cannot resolve).
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "columns",
        "current_setting",
        "getenv",
        "getvariable",
        "glob",
        "query",
        "query_table",
        "sniff_csv",
    }
)
FORBIDDEN_FUNCTION_PREFIXES = ("read_", "parquet_", "delta_", "iceberg_", "duckdb_", "pragma_")
# Placeholders qualify() writes onto unqualified table names; removed before execution.
_DEFAULT_CATALOG = "pep_default_catalog"
_DEFAULT_DB = "pep_default_db"


class AccessDenied(PermissionError):
    """The enforcement point denied a query. `decision.reasons` says why."""

    def __init__(self, decision: Decision):
        super().__init__("query denied: " + "; ".join(decision.reasons))
        self.decision = decision


class QueryExecutionError(RuntimeError):
    """An allowed query failed in DuckDB. The message names the error type only, because
    DuckDB's messages can quote values from the data."""


# ---------------------------------------------------------------------------------------------
# Policy and catalog
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolePolicy:
    purposes: frozenset[str]
    max_sensitivity: str


@dataclass(frozen=True)
class AccessPolicy:
    """The access part of privacy_policy.yml: ordered sensitivities, purposes and roles."""

    version: str
    sensitivities: tuple[str, ...]
    purposes: frozenset[str]
    roles: Mapping[str, RolePolicy]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AccessPolicy:
        if not isinstance(data, Mapping):
            raise PolicyError("the policy must be a mapping")
        sensitivities = data.get("sensitivities")
        if not isinstance(sensitivities, list) or not sensitivities:
            raise PolicyError("policy: 'sensitivities' must be a non-empty ordered list")
        purposes = data.get("purposes")
        if not isinstance(purposes, Mapping) or not purposes:
            raise PolicyError("policy: 'purposes' must be a non-empty mapping")
        roles_data = data.get("roles")
        if not isinstance(roles_data, Mapping) or not roles_data:
            raise PolicyError("policy: 'roles' must be a non-empty mapping")
        roles = {}
        for role, spec in roles_data.items():
            if not isinstance(spec, Mapping):
                raise PolicyError(f"policy: roles.{role} must be a mapping")
            role_purposes = spec.get("purposes") or []
            unknown = sorted(set(role_purposes) - set(purposes))
            if unknown:
                raise PolicyError(f"policy: roles.{role}.purposes names unknown {unknown}")
            if spec.get("max_sensitivity") not in sensitivities:
                raise PolicyError(f"policy: roles.{role}.max_sensitivity is not a sensitivity")
            roles[role] = RolePolicy(frozenset(role_purposes), spec["max_sensitivity"])
        return cls(
            version=str(data.get("version", "unversioned")),
            sensitivities=tuple(sensitivities),
            purposes=frozenset(purposes),
            roles=roles,
        )

    def rank(self, sensitivity: str) -> int:
        return self.sensitivities.index(sensitivity)

    @classmethod
    def from_policy(cls, policy: Policy) -> AccessPolicy:
        """The access part of a policy loaded (and fully validated) by `policy.load_policy`."""
        return cls(
            version=str(policy.version),
            sensitivities=tuple(policy.sensitivities),
            purposes=frozenset(policy.purposes),
            roles={
                name: RolePolicy(frozenset(role.purposes), role.max_sensitivity)
                for name, role in policy.roles.items()
            },
        )


def load_access_policy(path: str | Path | None = None) -> AccessPolicy:
    """Read and validate the policy file (default: privacy_policy.yml at the project root)."""
    return AccessPolicy.from_policy(load_policy(path))


def _as_policy(policy: AccessPolicy | Policy | Mapping[str, Any]) -> AccessPolicy:
    if isinstance(policy, AccessPolicy):
        return policy
    if isinstance(policy, Policy):
        return AccessPolicy.from_policy(policy)
    return AccessPolicy.from_mapping(policy)


def catalog_from_manifest(manifest: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Column classification per relation from dbt's manifest.json.

    Each model is keyed by its relation name (alias), by its model name when that differs, and
    by `schema.alias` and `database.schema.alias` so schema-qualified queries resolve. A column's
    `sensitivity` and `purposes` come from `columns[*].config.meta` (dbt 1.10+), falling back
    to `columns[*].meta` key by key (`policy.column_meta`, the project's one reading of column
    meta). Columns without them stay in the catalog unclassified, and are denied. A key that
    two models share (the same alias in two schemas) is left out, so only the qualified names
    resolve: an ambiguous name never borrows another model's classification.
    """
    catalog: dict[str, dict[str, dict[str, Any]]] = {}
    owners: dict[str, set[str]] = {}
    for unique_id, node in (manifest.get("nodes") or {}).items():
        if node.get("resource_type") != "model":
            continue
        columns = {}
        for column_name, column in (node.get("columns") or {}).items():
            meta = column_meta(column)
            columns[column_name.lower()] = {
                "sensitivity": meta.get("sensitivity"),
                "purposes": list(meta.get("purposes") or []),
            }
        relation = (node.get("alias") or node["name"]).lower()
        keys = {relation, node["name"].lower()}
        if node.get("schema"):
            keys.add(f"{node['schema']}.{relation}".lower())
            if node.get("database"):
                keys.add(f"{node['database']}.{node['schema']}.{relation}".lower())
        for key in keys:
            owners.setdefault(key, set()).add(unique_id)
            catalog[key] = columns
    return {key: columns for key, columns in catalog.items() if len(owners[key]) == 1}


@dataclass(frozen=True)
class ColumnClass:
    sensitivity: str | None
    purposes: frozenset[str]


def _normalise_catalog(catalog: Mapping[str, Any]) -> dict[str, dict[str, ColumnClass]]:
    if not isinstance(catalog, Mapping):
        raise PolicyError("the column catalog must be a mapping of table -> column -> meta")
    result: dict[str, dict[str, ColumnClass]] = {}
    for table, columns in catalog.items():
        if not isinstance(columns, Mapping):
            raise PolicyError(f"catalog: table {table} must map column names to their meta")
        classes = {}
        for column, meta in columns.items():
            meta = meta if isinstance(meta, Mapping) else {}
            purposes = meta.get("purposes") or []
            if isinstance(purposes, str):
                purposes = [purposes]
            classes[str(column).lower()] = ColumnClass(meta.get("sensitivity"), frozenset(purposes))
        result[str(table).lower()] = classes
    return result


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """The outcome of `check_query`.

    `tables` are catalog table names and `columns` are `table.column` names the query reads;
    `rules` are short codes of the violated rules (what the audit log records); `sql` is the
    checked, qualified SQL that `run_query` executes (it may hold the query's literals, so it
    is kept out of the repr and never logged).
    """

    allowed: bool
    reasons: tuple[str, ...]
    tables: tuple[str, ...]
    columns: tuple[str, ...]
    rules: tuple[str, ...] = ()
    sql: str | None = field(default=None, repr=False)


class _Denials:
    """Collects deny reasons and their rule codes, without duplicates, in order."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.rules: list[str] = []

    def add(self, rule: str, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)
        if rule not in self.rules:
            self.rules.append(rule)


@contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs unsupported statements with their text, which may hold literal values."""
    logger = logging.getLogger("sqlglot")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_$]{0,62}(?:\.[a-z_][a-z0-9_$]{0,62}){0,2}$")


def _shown_name(name: str) -> str:
    """A name from the query, echoed only when it is a plain identifier: a quoted "name" may
    be a value the user meant as a string literal."""
    return name if _PLAIN_NAME.match(name.lower()) else "<name not shown: not an identifier>"


def _function_name(node: exp.Func) -> str:
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _parse_single_select(sql: str, denials: _Denials) -> exp.Expression | None:
    try:
        with _quiet_sqlglot():
            statements = [s for s in sqlglot.parse(sql, dialect=DIALECT) if s is not None]
    except ParseError as error:
        where = error.errors[0] if error.errors else {}
        position = f" near line {where.get('line')}, column {where.get('col')}" if where else ""
        denials.add("parse", f"the query could not be parsed{position}")
        return None
    if len(statements) != 1:
        denials.add("single_select", f"expected one statement, found {len(statements)}")
        return None
    statement = statements[0]
    if not isinstance(statement, ALLOWED_STATEMENTS):
        denials.add(
            "single_select",
            f"statement type {type(statement).__name__.upper()} is not allowed: only a single "
            "read-only SELECT",
        )
        return None
    return statement


def _check_constructs(statement: exp.Expression, denials: _Denials) -> None:
    for node in statement.walk():
        if isinstance(node, FORBIDDEN_NODES):
            denials.add(
                "read_only",
                f"{type(node).__name__.upper()} is not allowed: only a single read-only SELECT",
            )
        elif type(node) in UNSUPPORTED_NODES:
            denials.add(
                "unsupported",
                f"{UNSUPPORTED_NODES[type(node)]} is not supported by the enforcement point",
            )
        elif isinstance(node, exp.Table) and not isinstance(node.this, exp.Identifier):
            name = _function_name(node.this) if isinstance(node.this, exp.Func) else "expression"
            denials.add("table_function", f"table function {name} is not allowed")
        elif isinstance(node, exp.Func) and not isinstance(node.parent, exp.Table):
            name = _function_name(node)
            if name in FORBIDDEN_FUNCTIONS or name.startswith(FORBIDDEN_FUNCTION_PREFIXES):
                denials.add("function", f"function {name} is not allowed")


def _table_parts(table: exp.Table) -> tuple[str, str, str]:
    return (table.catalog.lower(), table.db.lower(), table.name.lower())


def _catalog_key(parts: tuple[str, str, str], catalog: Mapping[str, Any]) -> str | None:
    """A qualified reference matches only a key qualified the same way, so `bronze.customers`
    can never borrow the classification of a gold `customers`."""
    key = ".".join(part for part in parts if part)
    return key if key in catalog else None


def _base_tables(statement: exp.Expression) -> list[exp.Table]:
    """Tables the query reads from storage (CTE references excluded)."""
    root = build_scope(statement)
    if root is None:
        return []
    return [
        source
        for scope in root.traverse()
        for source in scope.sources.values()
        if isinstance(source, exp.Table)
    ]


def _find_source(scope: Scope, name: str) -> exp.Expression | Scope | None:
    while scope is not None:
        if name in scope.sources:
            return scope.sources[name]
        scope = scope.parent
    return None


def _is_local_name(column: exp.Column) -> bool:
    """An unqualified name that qualify() legitimately leaves alone: a lambda parameter or a
    reference to a select-list alias."""
    node: exp.Expression | None = column.parent
    while node is not None:
        if isinstance(node, exp.Lambda) and column.name in {p.name for p in node.expressions}:
            return True
        if isinstance(node, (exp.Select, exp.SetOperation)):
            # ORDER BY after a UNION names the output columns of its first SELECT.
            return column.name in set(node.named_selects)
        node = node.parent
    return False


def _resolve_columns(
    qualified: exp.Expression,
    table_keys: Mapping[tuple[str, str, str], str],
    catalog: Mapping[str, Mapping[str, ColumnClass]],
    denials: _Denials,
) -> set[tuple[str, str]]:
    read: set[tuple[str, str]] = set()
    root = build_scope(qualified)
    for scope in root.traverse() if root else []:
        for column in scope.columns:
            if not column.table:
                continue  # unqualified after qualify(): checked by _is_local_name below
            source = _find_source(scope, column.table)
            if isinstance(source, exp.Table) and _table_parts(source) in table_keys:
                read.add((table_keys[_table_parts(source)], column.name.lower()))
            elif source is None or isinstance(source, exp.Table):
                shown = _shown_name(column.name)
                denials.add("unresolved", f"column {shown} could not be resolved")
            # A Scope source (CTE, subquery, UNNEST) is resolved inside its own scope.
        for whole_row in scope.table_columns:
            # `SELECT t FROM t` reads the whole row as a struct.
            source = _find_source(scope, whole_row.name)
            if isinstance(source, exp.Table) and _table_parts(source) in table_keys:
                table = table_keys[_table_parts(source)]
                read.update((table, name) for name in catalog[table])
    for star in qualified.find_all(exp.Star):
        # Stars in the select list were expanded to catalog columns; one left inside an
        # expression (struct_pack(t.*)) would read columns nobody checked. COUNT(*) reads none.
        if not (isinstance(star.parent, exp.Count) and star.arg_key == "this"):
            denials.add("unresolved", "a * inside an expression cannot be checked: list columns")
    for whole_row in qualified.find_all(exp.TableColumn):
        shown = _shown_name(whole_row.name)
        denials.add(
            "unresolved",
            f"the whole-row reference {shown} is not allowed: select columns by name",
        )
    for column in qualified.find_all(exp.Column):
        if not column.table and not _is_local_name(column):
            shown = _shown_name(column.name)
            denials.add("unresolved", f"column {shown} could not be resolved")
    return read


def _strip_placeholders(qualified: exp.Expression) -> str:
    for table in qualified.find_all(exp.Table):
        if table.args.get("catalog") is not None and table.catalog == _DEFAULT_CATALOG:
            table.set("catalog", None)
            if table.args.get("db") is not None and table.db == _DEFAULT_DB:
                table.set("db", None)
    return qualified.sql(dialect=DIALECT)


def _check_columns(
    read: set[tuple[str, str]],
    role: str,
    purpose: str,
    catalog: Mapping[str, Mapping[str, ColumnClass]],
    policy: AccessPolicy,
    denials: _Denials,
) -> None:
    role_policy = policy.roles.get(role)
    for table, column in sorted(read):
        classification = catalog[table].get(column)
        if classification is None or classification.sensitivity is None:
            denials.add(
                "unclassified",
                f"column {table}.{column} has no sensitivity in the catalog (fail closed)",
            )
            continue
        if classification.sensitivity not in policy.sensitivities:
            denials.add(
                "unclassified",
                f"column {table}.{column} has a sensitivity the policy does not define",
            )
            continue
        if role_policy and policy.rank(classification.sensitivity) > policy.rank(
            role_policy.max_sensitivity
        ):
            denials.add(
                "max_sensitivity",
                f"policy roles.{role}.max_sensitivity is {role_policy.max_sensitivity}: "
                f"column {table}.{column} is {classification.sensitivity}",
            )
        if purpose in policy.purposes and purpose not in classification.purposes:
            denials.add(
                "column_purpose",
                f"column {table}.{column} is not classified for purpose {purpose} "
                "(its meta.purposes)",
            )


def _check_tables(
    tables: set[str],
    role: str,
    purpose: str,
    catalog: Mapping[str, Mapping[str, ColumnClass]],
    policy: AccessPolicy,
    denials: _Denials,
) -> None:
    """A query that reads no column of a table (count(*), exists) still learns its rows: it
    may only touch a table with at least one column the role may read for the purpose."""
    role_policy = policy.roles.get(role)
    if role_policy is None or purpose not in role_policy.purposes:
        return  # already denied, with the reason
    ceiling = policy.rank(role_policy.max_sensitivity)
    for table in sorted(tables):
        if not any(
            column.sensitivity in policy.sensitivities
            and purpose in column.purposes
            and policy.rank(column.sensitivity) <= ceiling
            for column in catalog[table].values()
        ):
            denials.add(
                "table_purpose",
                f"table {table} has no column that role {role} may read for purpose {purpose}",
            )


def check_query(
    sql: str,
    role: str,
    purpose: str,
    catalog: Mapping[str, Any],
    policy: AccessPolicy | Policy | Mapping[str, Any],
) -> Decision:
    """Decide whether `role` may run `sql` for `purpose`. Never raises for a bad query: a query
    that cannot be checked is denied."""
    policy = _as_policy(policy)
    classes = _normalise_catalog(catalog)
    denials = _Denials()

    # Role and purpose first: the query is still analysed so the decision lists what it reads.
    if role not in policy.roles:
        denials.add("unknown_role", "the role is not defined in the policy's roles")
    if purpose not in policy.purposes:
        denials.add("unknown_purpose", "the purpose is not defined in the policy's purposes")
    elif role in policy.roles and purpose not in policy.roles[role].purposes:
        denials.add(
            "role_purpose",
            f"policy roles.{role}.purposes does not include purpose {purpose}",
        )

    statement = _parse_single_select(sql, denials)
    if statement is None:
        return Decision(False, tuple(denials.reasons), (), (), tuple(denials.rules))
    _check_constructs(statement, denials)
    if {"table_function", "read_only", "unsupported"} & set(denials.rules):
        return Decision(False, tuple(denials.reasons), (), (), tuple(denials.rules))

    table_keys: dict[tuple[str, str, str], str] = {}
    schema: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for table in _base_tables(statement):
        parts = _table_parts(table)
        key = _catalog_key(parts, classes)
        if key is None:
            shown = _shown_name(".".join(part for part in parts if part))
            denials.add("unknown_table", f"table {shown} is not in the column catalog")
            continue
        catalog_name, db, name = parts
        # qualify() fills unqualified parts with the placeholders, so the schema uses them too.
        full = (catalog_name or _DEFAULT_CATALOG, db or _DEFAULT_DB, name)
        table_keys[full] = key
        schema.setdefault(full[0], {}).setdefault(full[1], {})[name] = {
            column: "UNKNOWN" for column in classes[key]
        }
    if "unknown_table" in denials.rules:
        return Decision(False, tuple(denials.reasons), (), (), tuple(denials.rules))

    try:
        qualified = qualify(
            statement.copy(),
            schema=schema,
            dialect=DIALECT,
            catalog=_DEFAULT_CATALOG,
            db=_DEFAULT_DB,
            validate_qualify_columns=True,
        )
    except OptimizeError as error:
        # sqlglot's message quotes the identifier; echo it only when it is a plain name.
        match = re.search(r"Column '(.*?)' could not be resolved", str(error))
        shown = _shown_name(match.group(1)) if match else "a column"
        denials.add(
            "unresolved", f"column {shown} could not be resolved against the column catalog"
        )
        tables = tuple(sorted(set(table_keys.values())))
        return Decision(False, tuple(denials.reasons), tables, (), tuple(denials.rules))

    read = _resolve_columns(qualified, table_keys, classes, denials)
    _check_columns(read, role, purpose, classes, policy, denials)
    _check_tables(set(table_keys.values()), role, purpose, classes, policy, denials)
    tables = tuple(sorted(set(table_keys.values())))
    columns = tuple(f"{table}.{column}" for table, column in sorted(read))
    allowed = not denials.reasons
    return Decision(
        allowed=allowed,
        reasons=tuple(denials.reasons),
        tables=tables,
        columns=columns,
        rules=tuple(denials.rules),
        sql=_strip_placeholders(qualified) if allowed else None,
    )


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryResult:
    decision: Decision
    column_names: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def _safe_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record_decision(
    audit_log: AuditLog,
    decision: Decision,
    role: str,
    purpose: str,
    policy: AccessPolicy,
    actor: str,
) -> None:
    """One access_decision entry. Role and purpose are recorded only when the policy defines
    them, because anything else is free text from the caller."""
    audit_log.append(
        actor=actor,
        action="access_decision",
        object=list(decision.tables) + list(decision.columns),
        decision="allow" if decision.allowed else "deny",
        policy_version=policy.version,
        details={
            "role": role if role in policy.roles else "(undefined role)",
            "purpose": purpose if purpose in policy.purposes else "(undefined purpose)",
            "rules_violated": list(decision.rules),
            "columns_checked": len(decision.columns),
        },
    )


def run_query(
    sql: str,
    role: str,
    purpose: str,
    database_path: str | Path,
    catalog: Mapping[str, Any],
    policy: AccessPolicy | Policy | Mapping[str, Any],
    audit_log: AuditLog,
    *,
    actor: str | None = None,
    allowed_directories: Sequence[str | Path] = (),
) -> QueryResult:
    """Check `sql`, record the decision in the audit log, and run it read-only if allowed.

    Raises AccessDenied (after recording the denial) if the policy denies the query, and
    QueryExecutionError if DuckDB fails. The decision is recorded before the query runs, so
    there is evidence even if the run is interrupted; if the audit log cannot be written,
    nothing runs. `allowed_directories` lets views over Delta/Parquet files in those folders
    work while external access stays off for everything else.
    """
    import duckdb  # deferred: the check itself does not need DuckDB

    policy = _as_policy(policy)
    decision = check_query(sql, role, purpose, catalog, policy)
    record_decision(audit_log, decision, role, purpose, policy, actor or _safe_actor())
    if not decision.allowed:
        raise AccessDenied(decision)

    try:
        connection = duckdb.connect(
            str(database_path), read_only=True, config={"autoinstall_known_extensions": False}
        )
    except duckdb.Error as error:
        raise QueryExecutionError(
            f"cannot open {database_path} read-only ({type(error).__name__})"
        ) from None
    directories = ", ".join(
        "'" + str(Path(d).resolve()).replace("'", "''") + "'" for d in allowed_directories
    )
    try:
        # allowed_directories can only be set while external access is on; then switch it off
        # and lock the configuration, all before the query runs.
        connection.execute(f"SET allowed_directories = [{directories}]")
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
        cursor = connection.execute(decision.sql)
        names = tuple(description[0] for description in cursor.description or ())
        rows = cursor.fetchall()
    except duckdb.Error as error:
        raise QueryExecutionError(f"the query failed in DuckDB ({type(error).__name__})") from None
    finally:
        connection.close()
    return QueryResult(decision=decision, column_names=names, rows=rows)


# ---------------------------------------------------------------------------------------------
# CLI: `privacy-lakehouse query --role R --purpose P --database FILE "SQL"`
# ---------------------------------------------------------------------------------------------

EXIT_DENIED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run one read-only SELECT through the policy enforcement point: every column the query "
        "reads (filters, joins and grouping included) is checked against the role's sensitivity "
        "and the purpose, the decision goes to the audit log, and an allowed query runs "
        f"read-only. Results go to stdout. Exit {EXIT_DENIED} when denied (naming the rule, "
        "never the data), 1 on any other error."
    )
    parser.add_argument("sql", help="one read-only SELECT")
    parser.add_argument("--role", required=True, help="a role from the policy file")
    parser.add_argument("--purpose", required=True, help="a purpose the role may use")
    parser.add_argument(
        "--database",
        type=Path,
        default=None,
        metavar="FILE",
        help="DuckDB file to query (default: the purpose's serving file, "
        "<lake_dir>/serving/<purpose>.duckdb)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="policy file (default: privacy_policy.yml)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--manifest",
        type=Path,
        default=None,
        metavar="FILE",
        help="dbt manifest to read column classification from (default: manifest.json in "
        "dbt's target path, DBT_TARGET_PATH or target)",
    )
    source.add_argument(
        "--catalog",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON column catalog {table: {column: meta}}, instead of the manifest",
    )
    parser.add_argument(
        "--audit-log",
        type=Path,
        default=None,
        metavar="FILE",
        help="audit log file (default: <lake_dir>/_audit/audit.jsonl)",
    )
    parser.add_argument("--actor", default=None, help="who runs the query (default: OS user)")
    parser.add_argument(
        "--allow-directory",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="folder DuckDB may read files from (for views over Delta tables); repeatable",
    )
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="output format")


def _load_catalog(args: argparse.Namespace) -> dict[str, Any]:
    if args.catalog is not None:
        return json.loads(args.catalog.read_text(encoding="utf-8"))
    manifest_path = args.manifest or load_settings().manifest_path
    return catalog_from_manifest(json.loads(manifest_path.read_text(encoding="utf-8")))


def _default_database(purpose: str, policy: AccessPolicy) -> Path:
    """The purpose's serving file. An undefined purpose gets a path that is never opened: the
    policy denies the query before any database is touched."""
    from privacy_lakehouse.serving import serving_path

    lake_dir = load_settings().lake_dir
    if purpose not in policy.purposes:
        return lake_dir / "serving" / "(undefined purpose).duckdb"
    return serving_path(lake_dir, purpose)


def run(args: argparse.Namespace) -> int:
    try:
        policy = load_access_policy(args.policy)
        catalog = _load_catalog(args)
    except (OSError, ValueError) as error:
        print(f"query: cannot load policy or catalog: {error}", file=sys.stderr)
        return 1
    audit_log = AuditLog(args.audit_log or default_audit_path())
    try:
        result = run_query(
            args.sql,
            args.role,
            args.purpose,
            args.database or _default_database(args.purpose, policy),
            catalog,
            policy,
            audit_log,
            actor=args.actor,
            allowed_directories=args.allow_directory,
        )
    except AccessDenied as denied:
        print("query denied:", file=sys.stderr)
        for reason in denied.decision.reasons:
            print(f"  - {reason}", file=sys.stderr)
        return EXIT_DENIED
    except (QueryExecutionError, ValueError) as error:
        print(f"query: {error}", file=sys.stderr)
        return 1
    if args.format == "json":
        for row in result.rows:
            print(json.dumps(dict(zip(result.column_names, row, strict=True)), default=str))
    else:
        writer = csv.writer(sys.stdout)
        writer.writerow(result.column_names)
        writer.writerows(result.rows)
    return 0


__all__ = [
    "AccessDenied",
    "AccessPolicy",
    "Decision",
    "PolicyError",
    "QueryExecutionError",
    "QueryResult",
    "catalog_from_manifest",
    "check_query",
    "load_access_policy",
    "record_decision",
    "run_query",
]
