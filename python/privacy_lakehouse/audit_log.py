"""An append-only, tamper-evident audit log that holds no personal data.

Every privacy-relevant operation (builds, access decisions, decryptions, key rotations,
retention runs, erasures, exports) appends one entry: who, what (tables and columns), when,
under which policy version, the decision, and a few counts or versions. Entries are JSON lines
in `<lake_dir>/_audit/audit.jsonl`.

Why a hash chain and not an RFC 6962 Merkle tree: each entry stores the SHA-256 of its
predecessor (`prev_hash`) and of its own canonical encoding (`entry_hash`). Changing, removing,
inserting or reordering any entry breaks the chain at that entry, and an auditor verifies the
whole log offline in one pass with nothing but this file. A Merkle tree adds logarithmic
inclusion and consistency proofs, which matter when many parties each need to check single
entries against a published tree head without the full log; here one party (the auditor) reads
the whole log, so the tree buys nothing, while the chain is O(1) to append and far simpler to
get right. Both need the same extra for the one attack a chain alone cannot see, cutting off the
tail: an external anchor. Each append returns the head (`count`, `head_hash`) and writes it to
`<path>.head`; keep a copy outside the lake (a ticket, a commit, an e-mail to the auditor) and
pass it to `verify` to detect truncation. Anyone who can write the file can still append
well-formed new entries (the chain has no secret); anchors bound what they can rewrite.

Appends are serialised across processes with `fcntl.flock` on `<path>.lock`, written with one
`O_APPEND` write and `fsync`ed, so concurrent writers never interleave or fork the chain.

No personal data: `append` refuses values that look like e-mail addresses, phone numbers, card
numbers (Luhn), IBANs (mod 97) or IPv4 addresses, and its error names the field, never the value.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from privacy_lakehouse.settings import load_settings

GENESIS_HASH = "0" * 64
# Domain separation: an audit entry hash can never collide with a hash of the same JSON
# computed for another purpose.
HASH_DOMAIN = b"privacy_lakehouse.audit.v1\n"
DECISIONS = ("allow", "deny", "n.a.")
KNOWN_ACTIONS = (
    "build",
    "access_decision",
    "decrypt",
    "key_rotation",
    "retention",
    "erasure",
    "export",
)
ENTRY_FIELDS = (
    "seq",
    "ts",
    "actor",
    "action",
    "object",
    "decision",
    "policy_version",
    "details",
    "prev_hash",
    "entry_hash",
)
_ACTION_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_MAX_TEXT_LENGTH = 1000


class AuditLogError(ValueError):
    """Base class for audit log errors. Messages never contain entry content."""


class PersonalDataRejected(AuditLogError):
    """An append carried a value that looks like personal data."""


class AuditLogCorrupted(AuditLogError):
    """The log on disk is not a valid chain, so it cannot be extended or read."""


# ---------------------------------------------------------------------------------------------
# Personal-data pattern check
# ---------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_IBAN_COMPACT = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}[A-Z0-9]{11,30}(?![A-Za-z0-9])")
_IBAN_GROUPED = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?(?![A-Za-z0-9])"
)
_CARD = re.compile(r"(?<![\w.])(?:\d[ -]?){12,18}\d(?![\w])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_PHONE = re.compile(r"(?<![\w+])(?:\+|\()?\d[\d ().\-]{6,22}\d(?![\w])")
# Dates, timestamps and UUIDs are legitimate in details and would otherwise look like numbers.
_SAFE_PATTERNS = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1


def _looks_like_phone(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    if not 9 <= len(digits) <= 15:
        return False
    if candidate.startswith(("+", "00", "0", "(")):
        return True
    # A bare run of digits is more often a count or an id than a phone number; grouped digits
    # ("555-123-4567", "020 7946 0958") are how phone numbers are written.
    return len(re.findall(r"[ ().\-]+", candidate)) >= 2


def find_personal_data(value: str | int) -> str | None:
    """The kind of personal data `value` looks like, or None. Never returns the value itself."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        digits = str(abs(value))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return "a card number"
        return None
    text = _SAFE_PATTERNS.sub(" ", value)
    if _EMAIL.search(text):
        return "an e-mail address"
    for pattern in (_IBAN_COMPACT, _IBAN_GROUPED):
        if any(iban_valid(match.group()) for match in pattern.finditer(text)):
            return "an IBAN"
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return "a card number"
    for match in _IPV4.finditer(text):
        if all(int(part) <= 255 for part in match.group().split(".")):
            return "an IP address"
    if any(_looks_like_phone(match.group()) for match in _PHONE.finditer(text)):
        return "a phone number"
    return None


def _reject_personal_data(value: str | int, field_path: str) -> None:
    kind = find_personal_data(value)
    if kind:
        raise PersonalDataRejected(
            f"audit entry rejected: {field_path} looks like {kind}. Audit entries hold counts, "
            "versions and table/column names, never personal data."
        )


def _check_text(value: Any, field_path: str) -> str:
    if not isinstance(value, str) or not value:
        raise AuditLogError(f"audit entry rejected: {field_path} must be a non-empty string")
    if len(value) > _MAX_TEXT_LENGTH:
        raise AuditLogError(
            f"audit entry rejected: {field_path} is longer than {_MAX_TEXT_LENGTH} characters"
        )
    _reject_personal_data(value, field_path)
    return value


def _check_detail_value(value: Any, field_path: str) -> Any:
    """Validate one details value recursively; returns a JSON-ready copy."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        _reject_personal_data(value, field_path)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuditLogError(f"audit entry rejected: {field_path} must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > _MAX_TEXT_LENGTH:
            raise AuditLogError(
                f"audit entry rejected: {field_path} is longer than {_MAX_TEXT_LENGTH} characters"
            )
        _reject_personal_data(value, field_path)
        return value
    if isinstance(value, Mapping):
        checked = {}
        for key, item in value.items():
            _check_text(key, f"{field_path} key")
            checked[key] = _check_detail_value(item, f"{field_path}[{key!r}]")
        return checked
    if isinstance(value, (list, tuple)):
        return [_check_detail_value(item, f"{field_path}[{i}]") for i, item in enumerate(value)]
    raise AuditLogError(
        f"audit entry rejected: {field_path} has type {type(value).__name__}; use str, int, "
        "float, bool, None, lists or dicts"
    )


# ---------------------------------------------------------------------------------------------
# Entries and hashing
# ---------------------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """The one encoding that is hashed and stored: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def compute_entry_hash(entry_without_hash: Mapping[str, Any]) -> str:
    payload = HASH_DOMAIN + canonical_json(dict(entry_without_hash)).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class HeadAnchor:
    """The head of the chain at some moment: how many entries, and the hash of the last one."""

    count: int
    head_hash: str

    def to_json(self) -> str:
        return canonical_json({"count": self.count, "head_hash": self.head_hash})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> HeadAnchor:
        count, head_hash = data.get("count"), data.get("head_hash")
        valid_count = isinstance(count, int) and not isinstance(count, bool) and count >= 0
        valid_hash = isinstance(head_hash, str) and bool(_HASH_PATTERN.match(head_hash))
        if not (valid_count and valid_hash):
            raise AuditLogError("the anchor must hold a count >= 0 and a 64-hex head_hash")
        return cls(count=count, head_hash=head_hash)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> HeadAnchor:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise AuditLogError(
                f"cannot read the anchor file {path}: {type(error).__name__}"
            ) from None
        if not isinstance(data, dict):
            raise AuditLogError(f"the anchor file {path} does not hold a JSON object")
        return cls.from_mapping(data)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    action: str
    object: tuple[str, ...]
    decision: str
    policy_version: str | int | None
    details: Mapping[str, Any]
    prev_hash: str
    entry_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "object": list(self.object),
            "decision": self.decision,
            "policy_version": self.policy_version,
            "details": json.loads(canonical_json(self.details)),
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
        }

    @property
    def anchor(self) -> HeadAnchor:
        """The head of the chain right after this entry; keep it to detect truncation later."""
        return HeadAnchor(count=self.seq, head_hash=self.entry_hash)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEntry:
        return cls(
            seq=data["seq"],
            ts=data["ts"],
            actor=data["actor"],
            action=data["action"],
            object=tuple(data["object"]),
            decision=data["decision"],
            policy_version=data["policy_version"],
            details=data["details"],
            prev_hash=data["prev_hash"],
            entry_hash=data["entry_hash"],
        )


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """Parse one stored line strictly. Returns (entry dict, "") or (None, what is wrong)."""
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except ValueError:
        return None, "is not valid JSON"
    if not isinstance(data, dict) or set(data) != set(ENTRY_FIELDS):
        return None, "does not have exactly the audit entry fields"
    if not isinstance(data["seq"], int) or isinstance(data["seq"], bool):
        return None, "has a non-integer seq"
    if not all(isinstance(data[key], str) for key in ("prev_hash", "entry_hash")):
        return None, "has a malformed hash field"
    if not isinstance(data["object"], list) or not isinstance(data["details"], dict):
        return None, "has a malformed object or details field"
    try:
        if canonical_json(data) != text:
            # Only the canonical encoding is accepted, so the bytes an auditor reads are
            # exactly the bytes that were hashed.
            return None, "is not in canonical form"
    except ValueError:
        return None, "is not valid JSON"
    return data, ""


def _hash_matches(data: Mapping[str, Any]) -> bool:
    body = {key: value for key, value in data.items() if key != "entry_hash"}
    return compute_entry_hash(body) == data["entry_hash"]


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `AuditLog.verify`. `entries_checked` counts entries that verified before the
    first failure (all entries when ok). `reason` names seq numbers, never entry content."""

    ok: bool
    entries_checked: int
    first_bad_seq: int | None
    reason: str


# ---------------------------------------------------------------------------------------------
# The log
# ---------------------------------------------------------------------------------------------


def default_audit_path() -> Path:
    return load_settings().lake_dir / "_audit" / "audit.jsonl"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """The audit log at `path` (default `<lake_dir>/_audit/audit.jsonl`)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_audit_path()
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    # -- writing ---------------------------------------------------------------------------

    def append(
        self,
        *,
        actor: str,
        action: str,
        object: Iterable[str] = (),  # the field's name in the log, shadowing the builtin here
        decision: str = "n.a.",
        policy_version: str | int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry and return it; `entry.anchor` is the new head of the chain.

        Raises PersonalDataRejected if any field looks like personal data, AuditLogError for
        malformed arguments and AuditLogCorrupted if the log on disk is not a valid chain.
        """
        body = self._validated_body(actor, action, object, decision, policy_version, details)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            last = self._read_last_entry()
            self._check_head_consistent(last)
            body["seq"] = last["seq"] + 1 if last else 1
            body["prev_hash"] = last["entry_hash"] if last else GENESIS_HASH
            body["ts"] = datetime.now(timezone.utc).isoformat(timespec="microseconds")
            body["ts"] = body["ts"].replace("+00:00", "Z")
            record = dict(body, entry_hash=compute_entry_hash(body))
            self._write_line(canonical_json(record))
            entry = AuditEntry.from_dict(record)
            self._write_head(entry.anchor)
        return entry

    def _validated_body(
        self,
        actor: str,
        action: str,
        objects: Iterable[str],
        decision: str,
        policy_version: str | int | None,
        details: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        _check_text(actor, "actor")
        if not isinstance(action, str) or not _ACTION_PATTERN.match(action):
            raise AuditLogError(
                "audit entry rejected: action must be a snake_case name such as "
                + ", ".join(KNOWN_ACTIONS)
            )
        if decision not in DECISIONS:
            raise AuditLogError(f"audit entry rejected: decision must be one of {DECISIONS}")
        if isinstance(objects, (str, bytes)):
            raise AuditLogError("audit entry rejected: object must be a list of names")
        object_list = [_check_text(name, f"object[{i}]") for i, name in enumerate(objects)]
        if isinstance(policy_version, bool) or not isinstance(policy_version, (str, int)):
            if policy_version is not None:
                raise AuditLogError(
                    "audit entry rejected: policy_version must be a str, int or None"
                )
        if isinstance(policy_version, str):
            _check_text(policy_version, "policy_version")
        if details is not None and not isinstance(details, Mapping):
            raise AuditLogError("audit entry rejected: details must be a dict")
        return {
            "actor": actor,
            "action": action,
            "object": object_list,
            "decision": decision,
            "policy_version": policy_version,
            "details": _check_detail_value(dict(details or {}), "details"),
        }

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read_last_entry(self) -> dict[str, Any] | None:
        """The last entry, checked on its own; refuses to extend a broken tail."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return None
        with handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return None
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                raise AuditLogCorrupted(
                    f"{self.path} does not end with a complete entry; run `audit verify`"
                )
            # Read backwards from the final newline until the newline before the last entry.
            end = position = size - 1
            buffer = b""
            while position > 0 and b"\n" not in buffer:
                position = max(0, position - 4096)
                handle.seek(position)
                buffer = handle.read(end - position)
            last_line = buffer.rsplit(b"\n", 1)[-1]
        data, _problem = _parse_line(last_line)
        if data is None or not _hash_matches(data):
            raise AuditLogCorrupted(
                f"the last entry of {self.path} fails its integrity check; run `audit verify`"
            )
        return data

    def _check_head_consistent(self, last: dict[str, Any] | None) -> None:
        """Refuse to append over evidence of truncation: rewriting the head would hide it."""
        if not self.head_path.exists():
            return
        head = HeadAnchor.from_file(self.head_path)
        count = last["seq"] if last else 0
        last_hash = last["entry_hash"] if last else GENESIS_HASH
        if head.count > count or (head.count == count and head.head_hash != last_hash):
            raise AuditLogCorrupted(
                f"the log ends at seq {count} but its head file records seq {head.count} with a "
                "different hash; run `audit verify`"
            )

    def _write_line(self, line: str) -> None:
        created = not self.path.exists()
        data = (line + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_directory(self.path.parent)

    def _write_head(self, anchor: HeadAnchor) -> None:
        temporary = self.head_path.with_name(self.head_path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, (anchor.to_json() + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.head_path)
        _fsync_directory(self.head_path.parent)

    # -- reading ---------------------------------------------------------------------------

    def read_head(self) -> HeadAnchor | None:
        """The anchor written next to the log by the last append, or None."""
        return HeadAnchor.from_file(self.head_path) if self.head_path.exists() else None

    def _lines(self) -> Iterator[tuple[int, bytes | None]]:
        """(line number, line without its newline); None for a final line with no newline,
        which an interrupted write or a cut through the file leaves behind."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return
        with handle:
            for line_number, raw in enumerate(handle, start=1):
                yield line_number, raw[:-1] if raw.endswith(b"\n") else None

    @staticmethod
    def _parse_stored(raw: bytes | None) -> tuple[dict[str, Any] | None, str]:
        if raw is None:
            return None, "is incomplete (no final newline)"
        return _parse_line(raw)

    def entries(self) -> list[AuditEntry]:
        """All entries in order. Raises AuditLogCorrupted on a malformed line (no verification
        of the chain: use `verify` for that)."""
        result = []
        for line_number, raw in self._lines():
            data, problem = self._parse_stored(raw)
            if data is None:
                raise AuditLogCorrupted(f"line {line_number} of {self.path} {problem}")
            result.append(AuditEntry.from_dict(data))
        return result

    def verify(self, anchor: HeadAnchor | None = None) -> VerifyResult:
        """Check the whole chain; with `anchor`, also that the log still reaches that head."""
        expected_seq, previous_hash, verified = 1, GENESIS_HASH, 0

        def bad(seq: int, reason: str) -> VerifyResult:
            return VerifyResult(
                ok=False, entries_checked=verified, first_bad_seq=seq, reason=reason
            )

        for line_number, raw in self._lines():
            data, problem = self._parse_stored(raw)
            if data is None:
                return bad(
                    expected_seq,
                    f"line {line_number} (expected seq {expected_seq}) {problem}",
                )
            seq = data["seq"]
            if seq > expected_seq:
                return bad(
                    expected_seq,
                    f"seq {expected_seq} is missing: line {line_number} holds seq {seq} "
                    "(entry removed or entries reordered)",
                )
            if seq < expected_seq:
                return bad(
                    expected_seq,
                    f"line {line_number} holds seq {seq} where seq {expected_seq} was expected "
                    "(entry inserted, duplicated or reordered)",
                )
            if not _hash_matches(data):
                return bad(seq, f"seq {seq}: content does not match its entry_hash (modified)")
            if data["prev_hash"] != previous_hash:
                if seq == 1:
                    reason = "seq 1: prev_hash is not the genesis hash (forged start)"
                else:
                    reason = (
                        f"seq {seq}: prev_hash does not match the entry_hash of seq {seq - 1} "
                        f"(seq {seq - 1} was altered and re-hashed, or seq {seq} was forged)"
                    )
                return bad(seq, reason)
            previous_hash = data["entry_hash"]
            expected_seq += 1
            verified += 1
            if anchor is not None and seq == anchor.count and previous_hash != anchor.head_hash:
                return bad(
                    seq,
                    f"seq {seq}: entry_hash does not match the anchor (log rewritten at or "
                    f"before seq {seq})",
                )

        if anchor is not None and verified < anchor.count:
            return bad(
                verified + 1,
                f"the log ends at seq {verified} but the anchor records {anchor.count} entries "
                "(tail truncated)",
            )
        if anchor is not None and anchor.count == 0 and anchor.head_hash != GENESIS_HASH:
            return bad(1, "the anchor records 0 entries with a non-genesis head hash")
        return VerifyResult(ok=True, entries_checked=verified, first_bad_seq=None, reason="")


# ---------------------------------------------------------------------------------------------
# CLI: `privacy-lakehouse audit verify|show`
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        help="audit log file (default: <lake_dir>/_audit/audit.jsonl)",
    )
    sub = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    sub.required = True
    verify_help = (
        "Check the hash chain; exit 1 on any modified, removed, inserted or reordered entry."
    )
    verify = sub.add_parser(
        "verify",
        help=verify_help,
        description=verify_help + " The log is chosen before the subcommand: "
        "privacy-lakehouse audit --log FILE verify.",
    )
    anchor_source = verify.add_mutually_exclusive_group()
    anchor_source.add_argument(
        "--anchor",
        type=Path,
        help="an external copy of the head file; detects truncation of the tail",
    )
    anchor_source.add_argument(
        "--no-head",
        action="store_true",
        help="ignore <log>.head (by default it is used as the anchor when present)",
    )
    show_help = "Print entries (they hold no personal data)."
    show = sub.add_parser(
        "show",
        help=show_help,
        description=show_help + " The log is chosen before the subcommand: "
        "privacy-lakehouse audit --log FILE show.",
    )
    show.add_argument("--last", type=int, metavar="N", help="only the last N matching entries")
    show.add_argument("--action", help="only entries with this action")
    show.add_argument("--json", action="store_true", help="print JSON lines")


def _format_entry(entry: AuditEntry) -> str:
    objects = ",".join(entry.object) or "-"
    details = canonical_json(entry.details) if entry.details else "-"
    return (
        f"{entry.seq:>6}  {entry.ts}  {entry.actor}  {entry.action}  {entry.decision}  "
        f"policy={entry.policy_version}  {objects}  {details}"
    )


def run(args: argparse.Namespace) -> int:
    log = AuditLog(args.log)
    try:
        if args.audit_command == "verify":
            if not log.path.is_file():
                print(f"audit: no audit log at {log.path}", file=sys.stderr)
                return 1
            if args.anchor is not None:
                anchor, anchor_note = HeadAnchor.from_file(args.anchor), f"anchor {args.anchor}"
            elif not args.no_head and log.head_path.exists():
                anchor, anchor_note = log.read_head(), f"anchor {log.head_path}"
            else:
                anchor, anchor_note = None, "no anchor: tail truncation is not checked"
            result = log.verify(anchor)
            if result.ok:
                print(f"OK: {result.entries_checked} entries verified ({anchor_note})")
                return 0
            print(
                f"FAILED at seq {result.first_bad_seq}: {result.reason} "
                f"({result.entries_checked} entries verified before it; {anchor_note})",
                file=sys.stderr,
            )
            return 1
        entries = [e for e in log.entries() if args.action is None or e.action == args.action]
        if args.last is not None:
            entries = entries[-args.last :] if args.last > 0 else []
        for entry in entries:
            print(canonical_json(entry.to_dict()) if args.json else _format_entry(entry))
        return 0
    except AuditLogError as error:
        print(f"audit: {error}", file=sys.stderr)
        return 1
