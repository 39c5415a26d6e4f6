"""Quoting for SQL text the project builds itself (DuckDB dialect). No import of DuckDB here, so
modules that only plan SQL stay cheap to import."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A DuckDB identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """A DuckDB string literal."""
    return "'" + str(value).replace("'", "''") + "'"
