"""The `privacy-lakehouse` command: a thin layer over the library.

Each subcommand lives in the module that implements it, which exposes
`add_arguments(parser)` and `run(args) -> int`. This file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
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
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
