"""The `privacy-lakehouse` command: a thin layer over the library.

Each subcommand lives in the module that implements it, which exposes
`add_arguments(parser)` and `run(args) -> int`. This file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# (command name, module, one-line help). Modules are imported lazily so `--help` stays fast.
COMMANDS: list[tuple[str, str, str]] = [
    ("generate", "privacy_lakehouse.generate", "Write synthetic landing files for the demo bank."),
    (
        "policy",
        "privacy_lakehouse.policy",
        "Check column meta against privacy_policy.yml and print the privacy plan.",
    ),
    (
        "keys",
        "privacy_lakehouse.keyring",
        "Manage keys: master key, salts, subject data keys, rotation.",
    ),
    ("audit", "privacy_lakehouse.audit_log", "Verify or show the tamper-evident audit log."),
    ("retention", "privacy_lakehouse.retention", "Enforce retention: delete, vacuum, clean logs."),
    ("erase", "privacy_lakehouse.erasure", "Erase data subjects everywhere and prove it."),
    ("landing", "privacy_lakehouse.landing", "Purge landing files whose rows are all ingested."),
    ("serve", "privacy_lakehouse.serving", "Publish per-purpose DuckDB serving files from gold."),
    ("query", "privacy_lakehouse.access", "Run a read-only SQL query as a role for a purpose."),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privacy-lakehouse",
        description="Privacy-first lakehouse operations: data generation, keys, retention, "
        "erasure, audit and access.",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress lines on stderr (long operations print what they are doing by default; "
        "results and errors print either way)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_progress(quiet=args.quiet)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"privacy-lakehouse {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a user gets one line, never a traceback
        if os.environ.get("PRIVACY_LAKEHOUSE_DEBUG"):
            raise
        # The project's own errors and OS errors carry messages written to hold no personal
        # data; a library's message might quote a value, so only its type is shown.
        own = type(error).__module__.startswith("privacy_lakehouse") or isinstance(error, OSError)
        detail = f": {error}" if own else " (PRIVACY_LAKEHOUSE_DEBUG=1 shows the traceback)"
        print(f"privacy-lakehouse {args.command}: {type(error).__name__}{detail}", file=sys.stderr)
        return 1


class _ProgressHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (tests and callers may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never break the operation
            self.handleError(record)


def configure_progress(*, quiet: bool = False) -> None:
    """Progress lines of the project's modules on stderr (names and counts, never values).

    Only the package's own logger: libraries keep their defaults."""
    logger = logging.getLogger("privacy_lakehouse")
    if not any(isinstance(handler, _ProgressHandler) for handler in logger.handlers):
        handler = _ProgressHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
