"""Shared fixtures. The demo lakehouse is built once per test session in a temporary folder
(in-process dbt: a CLI call costs ~3 s before any model runs) and many tests read it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from privacy_lakehouse.duckdb_setup import connect
from privacy_lakehouse.generate import generate_landing

from .dbt_helpers import copy_demo_project, environment, project_env, run_dbt

DEMO_CUSTOMERS = 400
DEMO_TRANSACTIONS = 4000


@dataclass
class Demo:
    root: Path
    landing_summary: dict[str, Any]
    first_build: Any
    run_results: dict[str, Any] = field(default_factory=dict)

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    def tables(self, layer: str | None = None) -> list[Path]:
        layers = [layer] if layer else ["bronze", "silver", "gold"]
        return sorted(
            p
            for name in layers
            if (self.lake / name).exists()
            for p in (self.lake / name).iterdir()
            if (p / "_delta_log").exists()
        )

    def duckdb(self):
        return connect(extension_dir=self.lake / "_duckdb_extensions")

    def warehouse(self):
        # Same configuration as dbt's own connection (DuckDB shares one instance per file).
        return connect(
            self.lake / "warehouse.duckdb", extension_dir=self.lake / "_duckdb_extensions"
        )

    def count(self, table: Path) -> int:
        con = self.duckdb()
        try:
            return con.execute(f"select count(*) from delta_scan('{table}')").fetchone()[0]
        finally:
            con.close()

    def env(self):
        return environment(project_env(self.root))

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.root / "target" / "manifest.json").read_text())


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Demo:
    root = copy_demo_project(tmp_path_factory.mktemp("demo") / "privacy_lakehouse")
    summary = generate_landing(
        root / "landing", customers=DEMO_CUSTOMERS, transactions=DEMO_TRANSACTIONS, seed=7
    )
    result = run_dbt(root, "build")
    run_results = json.loads((root / "target" / "run_results.json").read_text())
    return Demo(root=root, landing_summary=summary, first_build=result, run_results=run_results)


def clone_demo(demo: Demo, target: Path) -> Demo:
    """A private copy of the session's demo lakehouse (project, landing, lake and keys) for a
    test that changes it. Delta tables are location-independent; the DuckDB views still point
    at the original lake until the copy is rebuilt, so run `dbt build` on it before reading
    views (Delta tables themselves can be read at once)."""
    import shutil

    shutil.copytree(demo.root, target, symlinks=False)
    for stale in ("target", "logs"):
        shutil.rmtree(target / stale, ignore_errors=True)
    (target / "lake" / ".build.lock").unlink(missing_ok=True)
    return Demo(
        root=target,
        landing_summary=demo.landing_summary,
        first_build=demo.first_build,
        run_results=demo.run_results,
    )


@pytest.fixture
def demo_copy(demo, tmp_path) -> Demo:
    return clone_demo(demo, tmp_path / "privacy_lakehouse")
