"""The `privacy-lakehouse` command's own options: progress lines on stderr, `--quiet`."""

from __future__ import annotations

import logging

import pytest
from privacy_lakehouse import cli


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
