"""Python hooks that run at the end of every `dbt build` (and `dbt run`).

dbt has no Python hook of its own, so the project's on-run-end macro `after_build()` serialises
what the hooks need (the lake, each model's layer, location, config and column meta, and each
node's result) and calls `pl_after_build(payload)`, a DuckDB function the plugin registers. The
function runs the registered hooks in order and returns a JSON summary that dbt logs. A hook
that raises fails the run with its message (which must never hold row values or secrets).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("privacy_lakehouse.hooks")


@dataclass
class BuildContext:
    """What a hook gets: the build as dbt saw it, and where the lake is."""

    lake_dir: Path
    invocation_id: str
    command: str
    target_name: str
    models: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    empty: bool = False  # `--empty`: models read no rows
    run_started_at: datetime | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any], lake_dir: Path) -> BuildContext:
        return cls(
            lake_dir=lake_dir,
            invocation_id=payload.get("invocation_id", ""),
            command=payload.get("command", ""),
            target_name=payload.get("target_name", ""),
            models=payload.get("models", []),
            results=payload.get("results", []),
            empty=bool(payload.get("empty")),
            run_started_at=_moment(payload.get("run_started_at")),
        )

    @property
    def succeeded(self) -> bool:
        return all(r.get("status") not in {"error", "fail"} for r in self.results)


Hook = Callable[[BuildContext], dict[str, Any]]
_HOOKS: list[tuple[str, Hook]] = []
_FIRST: set[str] = set()


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def after_build(name: str, first: bool = False) -> Callable[[Hook], Hook]:
    """Register a function to run at the end of every build (decorator); `first` runs it before
    the hooks registered without it, whatever the order the modules were imported in."""

    def register(function: Hook) -> Hook:
        if all(existing != name for existing, _ in _HOOKS):
            position = sum(1 for hook in _HOOKS if hook[0] in _FIRST) if first else len(_HOOKS)
            _HOOKS.insert(position, (name, function))
            if first:
                _FIRST.add(name)
        return function

    return register


def registered_hooks() -> list[str]:
    _load_builtin_hooks()
    return [name for name, _ in _HOOKS]


def _load_builtin_hooks() -> None:
    # Modules register their hooks on import; importing here keeps the plugin's start-up light.
    for module in (
        # Records what the build ingested before retention deletes anything (registered first).
        "privacy_lakehouse.ingestion_ledger",
        "privacy_lakehouse.retention",
        "privacy_lakehouse.serving",
        # Landing purge before build evidence, which stays last.
        "privacy_lakehouse.landing",
        "privacy_lakehouse.build_evidence",
    ):
        try:
            __import__(module)
        except ModuleNotFoundError as missing:
            if missing.name != module:
                raise


def run_after_build(payload_json: str, lake_dir: Path) -> str:
    _load_builtin_hooks()
    context = BuildContext.from_payload(json.loads(payload_json), lake_dir)
    summary: dict[str, Any] = {}
    for name, hook in _HOOKS:
        log.info("after-build hook %s: starting", name)
        summary[name] = hook(context)
        log.info("after-build hook %s: %s", name, json.dumps(summary[name], default=str))
    return json.dumps(summary, default=str)


def register(conn, lake_dir: Path) -> None:
    conn.create_function(
        "pl_after_build",
        lambda payload: run_after_build(payload, lake_dir),
        ["VARCHAR"],
        "VARCHAR",
        side_effects=True,
    )
