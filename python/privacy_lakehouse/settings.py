"""Where things live. One place resolves the project's folders so every command agrees.

Defaults are relative to the current directory (the dbt project root, where users run
`dbt build`); environment variables override them, which is how tests build in a temp folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    root: Path
    lake_dir: Path
    landing_dir: Path
    keys_dir: Path
    target_name: str
    # dbt's own folders: compiled SQL, manifest and run results; dbt.log.
    target_dir: Path
    log_dir: Path

    @property
    def warehouse_path(self) -> Path:
        return self.lake_dir / "warehouse.duckdb"

    @property
    def evidence_dir(self) -> Path:
        return self.lake_dir / "_evidence"

    @property
    def manifest_path(self) -> Path:
        return self.target_dir / "manifest.json"


def load_settings(root: str | os.PathLike | None = None) -> Settings:
    base = Path(root or os.environ.get("PRIVACY_LAKEHOUSE_HOME") or Path.cwd()).resolve()

    def folder(var: str, default: str) -> Path:
        value = os.environ.get(var)
        return Path(value).resolve() if value else base / default

    def dbt_folder(var: str, default: str) -> Path:
        # As dbt reads DBT_TARGET_PATH: relative to the project root (its log path is relative
        # to the current directory, which is the root where dbt is run).
        return dbt_path(base, os.environ.get(var) or default)

    return Settings(
        root=base,
        lake_dir=folder("PRIVACY_LAKEHOUSE_LAKE", "lake"),
        landing_dir=folder("PRIVACY_LAKEHOUSE_LANDING", "landing"),
        keys_dir=folder("PRIVACY_LAKEHOUSE_KEYS", ".keys"),
        target_name=os.environ.get("PRIVACY_LAKEHOUSE_TARGET", "dev"),
        target_dir=dbt_folder("DBT_TARGET_PATH", "target"),
        log_dir=dbt_folder("DBT_LOG_PATH", "logs"),
    )


def dbt_path(root: Path, value: str | os.PathLike) -> Path:
    """A dbt folder (`--target-path`, `--log-path`) as dbt resolves it: relative to the root."""
    return (root / value).resolve()
