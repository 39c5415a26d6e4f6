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

    @property
    def warehouse_path(self) -> Path:
        return self.lake_dir / "warehouse.duckdb"

    @property
    def evidence_dir(self) -> Path:
        return self.lake_dir / "_evidence"


def load_settings(root: str | os.PathLike | None = None) -> Settings:
    base = Path(root or os.environ.get("PRIVACY_LAKEHOUSE_HOME") or Path.cwd()).resolve()

    def folder(var: str, default: str) -> Path:
        value = os.environ.get(var)
        return Path(value).resolve() if value else base / default

    return Settings(
        root=base,
        lake_dir=folder("PRIVACY_LAKEHOUSE_LAKE", "lake"),
        landing_dir=folder("PRIVACY_LAKEHOUSE_LANDING", "landing"),
        keys_dir=folder("PRIVACY_LAKEHOUSE_KEYS", ".keys"),
        target_name=os.environ.get("PRIVACY_LAKEHOUSE_TARGET", "dev"),
    )
