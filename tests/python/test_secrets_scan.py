"""No key material outside the key store: after a demo build, every file of the project (target/,
logs/, the DuckDB files, every Delta log and data file, evidence, audit log, serving files) is
scanned for every live salt and data key and the master key, in hex and base64 forms. Parquet
and DuckDB files are decoded first, since compression hides a secret from a byte scan. The scan
is shown to fail on planted secrets; a wrong or missing master key fails clearly, without one."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import WriterProperties, write_deltalake
from privacy_lakehouse import keyring as keyring_module
from privacy_lakehouse.duckdb_setup import connection_config
from privacy_lakehouse.keyring import Keyring, MasterKeyError, master_key_provider_from_environment
from privacy_lakehouse.settings import load_settings

from .conftest import clone_demo
from .dbt_helpers import failure_text, run_dbt
from .key_material import secret_forms, stored_secrets

# Text forms are hex or base64, so only runs of the base64 alphabet (hex is a subset) can hold
# one; runs shorter than the shortest form (43) are skipped.
_CANDIDATE_RUN = re.compile(rb"[A-Za-z0-9+/_-]{43,}={0,2}")
_PREFIX = 8  # bytes compared, as one integer, before a window is looked up
_DUCKDB_MAGIC = b"DUCK"  # at byte 8 of a DuckDB database file


def _prefixes(data: bytes) -> np.ndarray:
    """The 8 bytes starting at each position of `data`, as one uint64 each."""
    array = np.frombuffer(data, dtype=np.uint8)
    windows = np.lib.stride_tricks.sliding_window_view(array, _PREFIX)
    return np.ascontiguousarray(windows).view("<u8").ravel()


class SecretIndex:
    """Finds any text form of any secret in a blob. Every position of every candidate run is
    tested at once (numpy) against the forms' 8-byte prefixes; only prefix hits are compared
    in full, so thousands of secrets cost about as much as one."""

    def __init__(self, secrets: dict[str, bytes]):
        self.names: dict[bytes, str] = {}
        for name, secret in secrets.items():
            for form in secret_forms(secret):
                self.names[form.encode()] = name
        self.lengths = sorted({len(form) for form in self.names})
        self.prefixes = np.unique(
            np.array(
                [int.from_bytes(form[:_PREFIX], "little") for form in self.names],
                dtype=np.uint64,
            )
        )

    def find(self, data: bytes) -> set[str]:
        runs = b"\n".join(match.group() for match in _CANDIDATE_RUN.finditer(data))
        if len(runs) < _PREFIX:
            return set()
        found = set()
        prefixes = _prefixes(runs)
        slots = np.minimum(np.searchsorted(self.prefixes, prefixes), len(self.prefixes) - 1)
        for start in np.flatnonzero(self.prefixes[slots] == prefixes):
            for length in self.lengths:
                name = self.names.get(runs[start : start + length])
                if name is not None:
                    found.add(name)
        return found


def _parquet_text(path: Path) -> bytes:
    return json.dumps(pq.read_table(path).to_pylist(), default=str).encode()


def _open_duckdb(path: Path, root: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.ConnectionException:
        # dbt ran in this process and keeps the file open: join it with dbt's configuration.
        config = connection_config(root / "lake" / "_duckdb_extensions")
        return duckdb.connect(str(path), config=config)


def _duckdb_text(path: Path, root: Path) -> bytes:
    con = _open_duckdb(path, root)
    try:
        parts = [
            row[0] or ""
            for query in (
                "select sql from duckdb_views() where not internal",
                "select sql from duckdb_tables()",
                "select macro_definition from duckdb_functions() "
                "where function_type like '%macro%' and not internal",
            )
            for row in con.execute(query).fetchall()
        ]
        for database, schema, table in con.execute(
            "select database_name, schema_name, table_name from duckdb_tables()"
        ).fetchall():
            rows = con.execute(f'select * from "{database}"."{schema}"."{table}"').fetchall()
            parts.append(json.dumps(rows, default=str))
        return "\n".join(parts).encode()
    finally:
        con.close()


# The key store itself, and the signed DuckDB extension binary (DuckDB verifies its signature on
# LOAD, so its bytes are the vendor's; at 75 MB it would dominate the scan).
NOT_SCANNED = (".keys", "lake/_duckdb_extensions")


def _files(root: Path, skip: tuple[str, ...]) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not any(relative == s or relative.startswith(s + "/") for s in skip):
            yield path


def scan_tree(root: Path, index: SecretIndex, skip: tuple[str, ...] = NOT_SCANNED) -> dict:
    """{relative path: secret names found} over every file under root, plus counts by kind."""
    findings: dict[str, set[str]] = {}
    kinds = {"raw": 0, "parquet": 0, "duckdb": 0}
    for path in _files(root, skip):
        data = path.read_bytes()
        found = index.find(data)
        kinds["raw"] += 1
        if path.suffix == ".parquet":
            found |= index.find(_parquet_text(path))
            kinds["parquet"] += 1
        elif data[8:12] == _DUCKDB_MAGIC:
            found |= index.find(_duckdb_text(path, root))
            kinds["duckdb"] += 1
        if found:
            findings[path.relative_to(root).as_posix()] = found
    return {"findings": findings, "scanned": kinds}


def project_secrets(root: Path) -> dict[str, bytes]:
    """Every live salt and data key of the project's key store, and the master key."""
    settings = load_settings(root)
    _, master = master_key_provider_from_environment(settings).current()
    secrets = stored_secrets(settings.keys_dir / "keyring.sqlite", master)
    secrets["master"] = master
    return secrets


# ---- the demo build ------------------------------------------------------------------------


def test_no_key_salt_or_master_key_anywhere_after_a_build(demo):
    with demo.env():
        secrets = project_secrets(demo.root)
    assert sum(name.startswith("salt:") for name in secrets) >= 5
    assert sum(name.startswith("data:") for name in secrets) >= 400
    result = scan_tree(demo.root, SecretIndex(secrets))
    assert result["findings"] == {}
    scanned = result["scanned"]
    # What the scan covered: Delta data files and checkpoints, the warehouse, and the rest.
    assert scanned["parquet"] >= len(demo.tables()) and scanned["duckdb"] >= 1, scanned
    for folder in ("target", "logs", "lake"):
        assert any((demo.root / folder).rglob("*")), folder
    delta_logs = list(demo.lake.rglob("_delta_log/*.json"))
    assert len(delta_logs) >= len(demo.tables())


# ---- the scan can fail ---------------------------------------------------------------------


def test_the_scan_finds_planted_secrets_in_every_kind_of_file(tmp_path):
    planted = {f"planted:{n}": os.urandom(32) for n in range(5)}
    index = SecretIndex({**planted, "never_written": os.urandom(32)})
    hex_secret = planted["planted:0"].hex()
    # A Delta table, zstd-compressed among many other hex values.
    values = [os.urandom(32).hex() for _ in range(999)] + [hex_secret]
    table = tmp_path / "lake" / "bronze" / "leaky"
    write_deltalake(
        str(table),
        pa.table({"value": values}),
        writer_properties=WriterProperties(compression="ZSTD"),
    )
    # Whether the raw bytes show the value depends on how zstd encodes this random page, so
    # the scan decodes Parquet values instead of relying on a byte search.
    data_file = next(table.glob("*.parquet"))
    # A DuckDB file: one secret in a table, one in a view's SQL.
    con = duckdb.connect(str(tmp_path / "lake" / "warehouse.duckdb"))
    con.execute("create table t as select ? as note", [base64.b64encode(planted["planted:1"])])
    con.execute(f"create view v as select '{planted['planted:2'].hex().upper()}' as x")
    con.close()
    # A log line (URL-safe base64 without padding) and a Delta commit (standard base64).
    logs = tmp_path / "logs"
    logs.mkdir()
    urlsafe = base64.urlsafe_b64encode(planted["planted:3"]).decode().rstrip("=")
    (logs / "dbt.log").write_text(f"12:00:00 connection key={urlsafe}; done\n")
    commit = table / "_delta_log" / "00000000000000000001.json"
    commit.write_text(
        json.dumps({"commitInfo": {"note": base64.b64encode(planted["planted:4"]).decode()}})
    )
    result = scan_tree(tmp_path, index)
    assert result["findings"] == {
        data_file.relative_to(tmp_path).as_posix(): {"planted:0"},
        "lake/warehouse.duckdb": {"planted:1", "planted:2"},
        "logs/dbt.log": {"planted:3"},
        commit.relative_to(tmp_path).as_posix(): {"planted:4"},
    }


def test_the_scan_skips_the_key_store_but_not_a_copy_of_a_key(tmp_path):
    secret = os.urandom(32)
    for folder in (".keys", "keys_backup"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "master.key").write_text(base64.b64encode(secret).decode())
    result = scan_tree(tmp_path, SecretIndex({"master": secret}))
    assert result["findings"] == {"keys_backup/master.key": {"master"}}


# ---- wrong or missing master key -----------------------------------------------------------


def assert_no_secret_text(text: str, secrets: list[bytes]) -> None:
    assert secrets
    for secret in secrets:
        for form in secret_forms(secret):
            assert form not in text


@pytest.fixture
def demo_keys(demo, tmp_path, monkeypatch):
    """A private copy of the demo's key store, and the environment pointing at it."""
    keys = tmp_path / "keys"
    shutil.copytree(demo.root / ".keys", keys)
    for name in ("PRIVACY_LAKEHOUSE_MASTER_KEY", "PRIVACY_LAKEHOUSE_KEY_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_HOME", str(tmp_path))
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_KEYS", str(keys))
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_LAKE", str(tmp_path / "lake"))
    with demo.env():
        secrets = project_secrets(demo.root)
    return keys, list(secrets.values())


def test_a_wrong_master_key_fails_clearly_without_a_secret(demo_keys, monkeypatch, capsys):
    keys, secrets = demo_keys
    wrong = os.urandom(32)
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_MASTER_KEY", base64.b64encode(wrong).decode())
    with pytest.raises(MasterKeyError) as failure:
        Keyring.open(load_settings())
    message = str(failure.value)
    assert "does not open the key store" in message and "environment variable" in message
    assert_no_secret_text(message, [wrong, *secrets])
    parser = argparse.ArgumentParser()
    keyring_module.add_arguments(parser)
    assert keyring_module.run(parser.parse_args(["status"])) == 1
    out, err = capsys.readouterr()
    assert out == "" and "does not open the key store" in err
    assert_no_secret_text(err, [wrong, *secrets])


@pytest.mark.parametrize(
    "value, expected",
    [("not base64 at all!", "base64"), ("c2hvcnQ=", "32 random bytes")],
)
def test_a_malformed_master_key_is_named_not_shown(demo_keys, monkeypatch, value, expected):
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_MASTER_KEY", value)
    with pytest.raises(MasterKeyError) as failure:
        Keyring.open(load_settings())
    assert expected in str(failure.value) and value not in str(failure.value)


def test_a_missing_master_key_file_fails_clearly(demo_keys):
    keys, secrets = demo_keys
    (keys / "master.key").unlink()
    with pytest.raises(MasterKeyError) as failure:
        Keyring.open(load_settings())
    message = str(failure.value)
    # Refused, never answered with a new key (which would not open the store either).
    assert "master key of the existing key store" in message and "is missing" in message
    assert "PRIVACY_LAKEHOUSE_MASTER_KEY" in message
    assert not (keys / "master.key").exists()
    assert_no_secret_text(message, secrets)


def test_a_build_with_a_wrong_master_key_stops_with_a_clear_error(demo, tmp_path, monkeypatch):
    project = clone_demo(demo, tmp_path / "privacy_lakehouse")
    with demo.env():
        secrets = list(project_secrets(demo.root).values())
    wrong = os.urandom(32)
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_MASTER_KEY", base64.b64encode(wrong).decode())
    result = run_dbt(project.root, "build", "--select", "tag:bronze", expect_ok=False)
    assert not result.success
    assert "does not open the key store" in failure_text(result)
    log_text = (project.root / "logs" / "dbt.log").read_text()
    assert "does not open the key store" in log_text
    assert (
        scan_tree(project.root, SecretIndex({"wrong": wrong}), skip=NOT_SCANNED)["findings"] == {}
    )
    assert_no_secret_text(log_text + failure_text(result), [wrong, *secrets])
