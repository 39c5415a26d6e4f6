"""The `privacy-lakehouse` command's own options: progress lines on stderr, `--quiet`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from privacy_lakehouse import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def package_logger():
    logger = logging.getLogger("privacy_lakehouse")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_progress_goes_to_the_current_stderr_once_and_quiet_silences_it(package_logger, capsys):
    cli.configure_progress()
    cli.configure_progress()  # a second command in the same process adds no second handler
    logging.getLogger("privacy_lakehouse.rotation").info("%s: rewriting %d rows", "bronze/t", 42)
    logging.getLogger("deltalake").info("a library's own line")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].endswith(" bronze/t: rewriting 42 rows")

    cli.configure_progress(quiet=True)
    logging.getLogger("privacy_lakehouse.erasure").info("erasure: resolving")
    logging.getLogger("privacy_lakehouse.erasure").warning("erasure: a warning still shows")
    assert capsys.readouterr().err.strip().endswith("erasure: a warning still shows")


def test_help_names_the_quiet_option(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    assert "--quiet" in capsys.readouterr().out


@pytest.fixture
def empty_project(tmp_path, monkeypatch, package_logger):
    """A project folder with no lake and no key store, as a mistyped path would give."""
    for name, folder in (("HOME", "."), ("LAKE", "lake"), ("LANDING", "landing"), ("KEYS", "keys")):
        monkeypatch.setenv(f"PRIVACY_LAKEHOUSE_{name}", str(tmp_path / folder))
    monkeypatch.delenv("PRIVACY_LAKEHOUSE_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_missing_lake_or_key_store_is_refused_in_one_line(empty_project, capsys):
    assert cli.main(["-q", "erase", "--email", "someone@mail.example"]) == 2
    err = capsys.readouterr().err
    assert "no lake at" in err and "someone" not in err and "Traceback" not in err
    assert not (empty_project / "lake").exists() and not (empty_project / "keys").exists()

    assert cli.main(["-q", "serve", "publish"]) == 1
    assert "no gold tables" in capsys.readouterr().err
    assert cli.main(["-q", "audit", "verify"]) == 1
    assert "no audit log" in capsys.readouterr().err


def test_the_key_store_is_never_made_anew_beside_a_lake_that_has_data(empty_project, capsys):
    from privacy_lakehouse.keyring import Keyring, KeyringError

    (empty_project / "lake" / "bronze" / "raw_t" / "_delta_log").mkdir(parents=True)
    with pytest.raises(KeyringError, match="PRIVACY_LAKEHOUSE_KEYS"):
        Keyring.open()
    assert cli.main(["-q", "keys", "status"]) != 0
    assert "PRIVACY_LAKEHOUSE_KEYS" in capsys.readouterr().err
    assert not (empty_project / "keys" / "keyring.sqlite").exists()
    assert cli.main(["-q", "keys", "init"]) == 0  # on purpose, it is made
    assert (empty_project / "keys" / "keyring.sqlite").exists()


def test_a_store_whose_master_key_file_is_gone_is_refused_and_no_key_is_made(
    empty_project, monkeypatch, capsys
):
    for name in ("MASTER_KEY", "KEY_PROVIDER"):
        monkeypatch.delenv(f"PRIVACY_LAKEHOUSE_{name}", raising=False)
    assert cli.main(["-q", "keys", "init"]) == 0
    capsys.readouterr()
    keys = empty_project / "keys"
    (keys / "master.key").unlink()
    store_bytes = (keys / "keyring.sqlite").read_bytes()
    (empty_project / "lake" / "bronze").mkdir(parents=True)

    # Refused as a missing key store is: keys exits 1, erase 2 (it erased nothing).
    for argv, code in ((["keys", "status"], 1), (["erase", "--email", "someone@mail.example"], 2)):
        assert cli.main(["-q", *argv]) == code, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "master key of the existing key store" in lines[0], argv
        assert "PRIVACY_LAKEHOUSE_MASTER_KEY" in lines[0] and "someone" not in lines[0]
        assert not (keys / "master.key").exists()
        assert (keys / "keyring.sqlite").read_bytes() == store_bytes


def test_a_dbt_build_refuses_a_store_whose_master_key_file_is_gone(tmp_path, monkeypatch):
    from privacy_lakehouse.keyring import Keyring

    from .dbt_helpers import environment, failure_text, project_env, run_dbt, write_mini_project

    for name in ("MASTER_KEY", "KEY_PROVIDER"):
        monkeypatch.delenv(f"PRIVACY_LAKEHOUSE_{name}", raising=False)
    project = write_mini_project(tmp_path / "project", {"models/m.sql": "select 1 as id\n"})
    with environment(project_env(project)):
        Keyring.open(create=True).close()
    keys = project / ".keys"
    (keys / "master.key").unlink()
    store_bytes = (keys / "keyring.sqlite").read_bytes()
    result = run_dbt(project, "build", "--vars", "{enforce_privacy_policy: false}", expect_ok=False)
    assert not result.success
    message = failure_text(result)
    assert "master key of the existing key store" in message and "Traceback" not in message
    assert not (keys / "master.key").exists()
    assert (keys / "keyring.sqlite").read_bytes() == store_bytes


def test_commands_read_the_manifest_where_dbt_target_path_puts_it(
    empty_project, monkeypatch, capsys
):
    shutil.copy(REPO / "privacy_policy.yml", empty_project / "privacy_policy.yml")
    monkeypatch.delenv("DBT_TARGET_PATH", raising=False)
    assert cli.main(["-q", "policy", "check"]) == 2
    assert f"manifest not found: {empty_project / 'target' / 'manifest.json'}" in (
        capsys.readouterr().err
    )
    custom = empty_project / "out" / "dbt"
    custom.mkdir(parents=True)
    (custom / "manifest.json").write_text("{}")
    monkeypatch.setenv("DBT_TARGET_PATH", "out/dbt")  # relative to the project root, as in dbt
    for command in ("check", "plan"):
        assert cli.main(["-q", "policy", command]) == 2
        assert f"{custom / 'manifest.json'} holds no models" in capsys.readouterr().err
    monkeypatch.setenv("DBT_TARGET_PATH", str(custom))
    monkeypatch.setenv("DBT_LOG_PATH", "dbt-logs")
    from privacy_lakehouse.settings import load_settings

    settings = load_settings()
    assert settings.manifest_path == custom / "manifest.json"
    assert settings.log_dir == empty_project / "dbt-logs"


def test_errors_end_in_one_line_without_a_traceback(empty_project, monkeypatch, capsys):
    from privacy_lakehouse import duckdb_setup, retention

    monkeypatch.setenv("PRIVACY_LAKEHOUSE_DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(duckdb_setup.SettingError, match="MEMORY_LIMIT='lots'"):
        duckdb_setup.connection_config(empty_project)

    # A library's message may quote a value: only its type is shown. The project's own errors
    # are written to hold none, so their message is.
    def fails_in_a_library(args):
        raise ValueError("could not parse 'someone@mail.example'")

    monkeypatch.setattr(retention, "run", fails_in_a_library)
    assert cli.main(["-q", "retention"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["privacy-lakehouse retention: ValueError (PRIVACY_LAKEHOUSE_DEBUG=1 shows the "
                   "traceback)"]  # fmt: skip

    def fails_in_the_project(args):
        raise duckdb_setup.SettingError("PRIVACY_LAKEHOUSE_X is wrong")

    monkeypatch.setattr(retention, "run", fails_in_the_project)
    assert cli.main(["-q", "retention"]) == 1
    assert capsys.readouterr().err.strip() == (
        "privacy-lakehouse retention: SettingError: PRIVACY_LAKEHOUSE_X is wrong"
    )

    (empty_project / "m.json").write_text("{}")
    shutil.copy(REPO / "privacy_policy.yml", empty_project / "privacy_policy.yml")
    assert cli.main(["-q", "policy", "check", "--manifest", "m.json"]) == 2
    assert "holds no models" in capsys.readouterr().err


def test_a_batch_file_without_its_header_is_refused_without_echoing_it(tmp_path):
    from privacy_lakehouse import erasure

    batch = tmp_path / "requests.csv"
    batch.write_text("someone@mail.example,,REQ-1\nother@mail.example,,REQ-2\n")
    with pytest.raises(erasure.ErasureError) as refused:
        erasure.read_batch(batch)
    assert "header" in str(refused.value) and "mail.example" not in str(refused.value)
    with pytest.raises(erasure.ErasureError, match="cannot read"):
        erasure.read_batch(tmp_path / "missing.csv")
