"""Proof that an erased subject is physically gone: scan every stored file for their traces.

What a subject leaves behind (`SubjectTraces`), by category:

- plaintext: identifiers as an operator or a source system knows them (email, phone, national
  id, IBAN, card number, customer and account numbers, full name, street address), with the
  spellings they are stored in (phone digits only, IBAN and card numbers grouped or not, JSON
  escapes of non-ASCII characters);
- token: every keyed token of the subject's rows (subject, email, phone, card, account... tokens),
  under every salt version still in the key store. The tombstone token is not a trace: it is
  kept, by design, so that replays cannot bring the subject back;
- ciphertext: every ciphertext of the subject's rows (their data key is destroyed, but the bytes
  must go too);
- derived: values computed from the subject's records that are unique to them, such as the
  record hashes and ingest keys of bronze rows (delta-rs keeps them as file statistics in the
  Delta log, where a delete alone never reaches).

`verify_erasure(traces, roots)` walks every file under the roots (the lake with its Delta data
files, `_delta_log` JSON and checkpoints, `_change_data`, evidence and audit files, the DuckDB
files; `target/`; `logs/`) and looks for every trace two ways:

- raw bytes of every file (JSON logs, SQL, text, and whatever is stored uncompressed in binary
  files such as Parquet footers and DuckDB blocks), in chunks, with an RE2 prefilter (linear
  time) and an exact confirmation. The compressed pages of Parquet files are left to the decoded
  scan, which reads all their values: compression cuts digit runs into fragments that can
  stand alone as a false 9-digit match;
- decoded values: Parquet pages and DuckDB blocks are compressed, so Parquet files are read with
  pyarrow and DuckDB files (a private copy, WAL included) with DuckDB, and every string value,
  nested ones included, is searched.

Plaintext matches must stand alone (not inside a longer word or number) and are
case-insensitive, except code-like identifiers (customer and account numbers, IBANs, card
numbers, national ids: `CASED_KINDS`), which count in their stored spellings' case; tokens,
ciphertexts and derived values match exactly. The report holds file paths, categories, kinds and
counts: never a value. A DuckDB block freed by a delete may hold old values in compressed form
that no scan can read; that is why the erasure rebuilds every DuckDB file it touches instead of
trusting a scan of freed blocks.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AnyStr

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from privacy_lakehouse.sql_quote import quote_ident

CATEGORIES = ("plaintext", "token", "ciphertext", "derived")
MIN_NEEDLE_LENGTH = 5  # shorter values (initials, tiny numbers) match by chance
# Code-like identifiers count only in the case they are delivered in (each spelling of
# `stored_spellings` is a needle of its own). Matched case-insensitively, an account number such
# as A0511150 was found in 8 characters of a lowercase hex hash inside compressed Parquet bytes.
CASED_KINDS = frozenset({"customer_id", "account_id", "iban", "card_number", "national_id"})
SKIPPED_DIRS = frozenset({"_duckdb_extensions", ".git", "__pycache__"})
DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file
_CHUNK_BYTES = 8 << 20
_WINDOW_BYTES = 64 << 10
_BATCH_ROWS = 65_536
_WORD = rb"A-Za-z0-9"
_RE2_SPECIAL = set("\\.^$|?*+()[]{}")


class VerificationError(RuntimeError):
    """The verifier could not read a file, so it cannot prove anything about it."""


@dataclass(frozen=True)
class Needle:
    """One value to look for. `kind` names what it is (email, subject_token...); never shown."""

    value: str
    category: str
    kind: str
    subject: str


@dataclass
class SubjectTraces:
    """Everything that identifies one subject in stored data, grouped by category and kind.

    `label` names the subject in reports (the erasure request id), never an identifier.
    """

    label: str
    plaintext: dict[str, set[str]] = field(default_factory=dict)
    token: dict[str, set[str]] = field(default_factory=dict)
    ciphertext: dict[str, set[str]] = field(default_factory=dict)
    derived: dict[str, set[str]] = field(default_factory=dict)

    def __repr__(self) -> str:  # the default repr would print every value
        return f"SubjectTraces(label={self.label!r}, {self.counts()})"

    def add(self, category: str, kind: str, values: Iterable[str | None]) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown trace category {category!r}")
        bucket = getattr(self, category).setdefault(kind, set())
        bucket.update(v for v in values if isinstance(v, str) and v.strip())

    def merge(self, other: SubjectTraces) -> None:
        for category in CATEGORIES:
            for kind, values in getattr(other, category).items():
                self.add(category, kind, values)

    def counts(self) -> dict[str, int]:
        return {c: sum(len(v) for v in getattr(self, c).values()) for c in CATEGORIES}

    def needles(self) -> list[Needle]:
        found: dict[tuple[str, str], Needle] = {}
        for category in CATEGORIES:
            for kind, values in getattr(self, category).items():
                for value in values:
                    spellings = (
                        stored_spellings(kind, value) if category == "plaintext" else {value}
                    )
                    for spelling in spellings:
                        if len(spelling) >= MIN_NEEDLE_LENGTH:
                            folded = category == "plaintext" and kind not in CASED_KINDS
                            key = (category, spelling.lower() if folded else spelling)
                            found.setdefault(key, Needle(spelling, category, kind, self.label))
        return list(found.values())


def _case_matters(needle: Needle) -> bool:
    return needle.category != "plaintext" or needle.kind in CASED_KINDS


def stored_spellings(kind: str, value: str) -> set[str]:
    """The forms a plaintext identifier takes in files: as delivered and as normalised."""
    text = value.strip()
    forms = {text}
    compact = re.sub(r"[\s\-]", "", text)
    if kind == "phone":
        forms.add(re.sub(r"[^0-9+]", "", text))
    elif kind in {"iban", "card_number"}:
        forms.add(compact.upper())
        forms.add(" ".join(compact[i : i + 4] for i in range(0, len(compact), 4)).upper())
        if kind == "card_number":
            forms.add("-".join(compact[i : i + 4] for i in range(0, len(compact), 4)))
    elif kind == "email":
        forms.add(text.lower())
    return {f for f in forms if f}


@dataclass
class Finding:
    path: str
    how: str  # raw | decoded
    category: str
    kind: str
    subject: str
    occurrences: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "how": self.how,
            "category": self.category,
            "kind": self.kind,
            "subject": self.subject,
            "occurrences": self.occurrences,
        }


@dataclass
class VerificationReport:
    passed: bool
    roots: list[str]
    files_scanned: dict[str, int]
    bytes_scanned: int
    values_scanned: int
    needles: dict[str, int]
    findings: list[Finding]
    started_at: str
    seconds: float

    @property
    def files_with_traces(self) -> int:
        return len({f.path for f in self.findings})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, and free of values: paths, categories, kinds and counts only."""
        by_category = Counter()
        for finding in self.findings:
            by_category[finding.category] += finding.occurrences
        return {
            "passed": self.passed,
            "roots": self.roots,
            "files_scanned": self.files_scanned,
            "files_scanned_total": sum(self.files_scanned.values()),
            "bytes_scanned": self.bytes_scanned,
            "values_scanned": self.values_scanned,
            "needles": self.needles,
            "files_with_traces": self.files_with_traces,
            "occurrences_by_category": dict(by_category),
            "findings": [f.to_dict() for f in self.findings],
            "started_at": self.started_at,
            "seconds": self.seconds,
        }

    def summary(self) -> str:
        total = sum(self.files_scanned.values())
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.files_scanned.items()))
        if self.passed:
            return f"PASS: no trace of the erased subjects in {total} files ({kinds})"
        return (
            f"FAIL: traces of erased subjects in {self.files_with_traces} of {total} files "
            f"({kinds}); see the findings"
        )


class TraceMatcher:
    """Finds needles in bytes and in Arrow string arrays. RE2 (Arrow) prefilters in linear
    time; Python's `re` confirms, applies word boundaries to plaintext and names the needle."""

    def __init__(self, needles: Sequence[Needle]):
        self.needles = list(needles)
        self._exact: dict[str, list[Needle]] = {}
        self._folded: dict[str, list[Needle]] = {}
        for needle in self.needles:
            if needle.category == "plaintext":
                self._folded.setdefault(needle.value.lower(), []).append(needle)
            else:
                self._exact.setdefault(needle.value, []).append(needle)
        self._byte_forms: dict[bytes, tuple[bool, str]] = {}
        for text in self._folded:
            for form in _byte_forms(text):
                self._byte_forms[form.lower()] = (True, text)
        for text in self._exact:
            for form in _byte_forms(text):
                self._byte_forms[form] = (False, text)
        self.longest = max((len(f) for f in self._byte_forms), default=0)
        self.empty = not self.needles
        if self.empty:
            return
        self._text_screen = _Screen({*self._folded, *self._exact})
        # Arrow matches binary data against the UTF-8 text of the pattern.
        self._bytes_screen = _Screen(f.decode("utf-8") for f in self._byte_forms)
        # Tries, not flat alternations: Python's `re` tries every alternative at every position,
        # which for a batch of thousands of needles took minutes per DuckDB file.
        folded_forms = [f for f, (folded, _) in self._byte_forms.items() if folded]
        exact_forms = [f for f, (folded, _) in self._byte_forms.items() if not folded]
        text_parts = [_trie_pattern(list(self._exact), "")]
        if self._folded:
            text_parts.append(_bounded(_trie_pattern(list(self._folded), "")))
        self._text_re = re.compile("|".join(p for p in text_parts if p), re.IGNORECASE)
        byte_parts = [_trie_pattern(exact_forms, b"")]
        if folded_forms:
            byte_parts.append(_bounded_bytes(_trie_pattern(folded_forms, b"")))
        self._bytes_re = re.compile(b"|".join(p for p in byte_parts if p), re.IGNORECASE)

    def _classify_text(self, matched: str) -> list[Needle]:
        return self._exact.get(matched) or self._folded.get(matched.lower(), [])

    def _classify_bytes(self, matched: bytes) -> list[Needle]:
        entry = self._byte_forms.get(matched) or self._byte_forms.get(matched.lower())
        if entry is None:
            return []
        folded, text = entry
        return (self._folded if folded else self._exact).get(text, [])

    def scan_bytes(self, data: bytes, begin: int = 0, limit: int | None = None) -> Counter:
        """Needles starting in data[begin:limit]; the bytes around only serve the boundaries
        (chunked scans overlap, and each match is counted by one chunk). RE2 screens small
        windows in one vectorised call, so Python's slower `re` reads only windows that hit."""
        hits: Counter = Counter()
        end = len(data) if limit is None else min(limit, len(data))
        if self.empty or end <= begin:
            return hits
        overlap = self.longest + 1
        starts = range(begin, end, _WINDOW_BYTES)
        windows = [
            data[max(0, s - 1) : min(len(data), s + _WINDOW_BYTES + overlap)] for s in starts
        ]
        mask = self._bytes_screen.mask(pa.array(windows, pa.binary()))
        for start, window, candidate in zip(starts, windows, mask.to_pylist(), strict=True):
            if not candidate:
                continue
            lead = 1 if start > 0 else 0  # one byte before the window, for the word boundary
            stop = lead + min(_WINDOW_BYTES, end - start)
            for match in self._bytes_re.finditer(window, lead):
                if match.start() >= stop:
                    break
                for needle in self._classify_bytes(match.group(0)):
                    # A needle whose case matters, matched case-insensitively, is no match.
                    if _case_matters(needle) and match.group(0) not in _byte_forms(needle.value):
                        continue
                    hits[needle] += 1
        return hits

    def prefilter(self, strings: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """A mask of the string values that may hold a needle (a superset; confirm each)."""
        if self.empty:
            return pa.array([False] * len(strings))
        return pc.fill_null(self._text_screen.mask(strings.cast(pa.large_string())), False)

    def find_in_text(self, text: str) -> Counter:
        """Needles in one string."""
        hits: Counter = Counter()
        if self.empty:
            return hits
        for match in self._text_re.finditer(text):
            for needle in self._classify_text(match.group(0)):
                if _case_matters(needle) and match.group(0) != needle.value:
                    continue
                hits[needle] += 1
        return hits

    def scan_array(self, array: pa.Array | pa.ChunkedArray) -> tuple[Counter, int]:
        """Needles in every string value of an Arrow array, nested values included."""
        hits: Counter = Counter()
        scanned = 0
        for leaf in _string_leaves(array):
            scanned += len(leaf)
            if self.empty or len(leaf) == 0 or leaf.null_count == len(leaf):
                continue
            if pa.types.is_large_binary(leaf.type):
                for value in leaf.drop_null().to_pylist():
                    hits.update(self.scan_bytes(value))
                continue
            # Screened in runs of consecutive values first (one regex call per run, not per
            # value); only the values of a run that hits are screened and confirmed one by one.
            runs, starts = _value_runs(leaf)
            run_mask = self.prefilter(runs)
            if not pc.any(run_mask).as_py():
                continue
            for run in np.flatnonzero(run_mask.to_numpy(zero_copy_only=False)):
                values = leaf.slice(starts[run], starts[run + 1] - starts[run])
                mask = self.prefilter(values)
                for value in values.filter(mask).to_pylist():
                    hits.update(self.find_in_text(value))
        return hits, scanned


# RE2 screens for a needle's first characters (the confirmation checks the whole needle), with
# at most this much pattern per pass. RE2's automaton for an alternation of literals grows with
# the pattern; past its memory budget RE2 falls back to a slower engine: 300 needles of 64 hex
# characters took 8-17 s per 8 MB where 200 took 0.02 s. A batch of erasures brings thousands.
# Eight characters keep false candidates rare (a token's version tag plus five hex digits) and
# the passes few: a pass costs about as much as its pattern is long.
PREFILTER_PREFIX_CHARS = 8
PREFILTER_PATTERN_CHARS = 6_000


# A batch of erasures brings thousands of needles, and RE2 then needs many passes, each slower
# the more it holds (6,000 needles: 10 passes, 7.3 s per 46 MB of values where one subject's 60
# took 0.11 s). From this many passes on, the ASCII needles are screened by one Aho-Corasick
# automaton instead: one pass whatever their number (0.9 s per 46 MB for 6,000; verifying a
# 359 MB table against 6,000 needles took 28 s instead of 343 s). It holds the interpreter lock
# where RE2 runs on every core, so one RE2 pass (a few hundred needles) stays faster.
AUTOMATON_FROM_PASSES = 2


class _Screen:
    """A case-insensitive screen: which values may hold one of the texts (a superset; the
    caller confirms each candidate). RE2 passes, or an automaton plus RE2 for the few texts
    that are not ASCII (whose case folding RE2 knows and a byte-wise lower() does not)."""

    def __init__(self, texts: Iterable[str]):
        texts = set(texts)
        self.patterns = _prefilter_patterns(texts)
        self.automaton = None
        if len(self.patterns) >= AUTOMATON_FROM_PASSES:
            ascii_texts = {text for text in texts if text.isascii()}
            self.automaton = _automaton(text.lower() for text in ascii_texts)
            self.patterns = _prefilter_patterns(texts - ascii_texts)

    def mask(self, values: pa.Array) -> pa.Array:
        """Per value (large_string or binary), whether it may hold a text."""
        mask = _any_match(values, self.patterns)
        if self.automaton is None:
            return mask
        hits = [self._automaton_hit(value) for value in values.to_pylist()]
        return pc.or_(mask, pa.array(hits, pa.bool_()))

    def _automaton_hit(self, value: str | bytes | None) -> bool:
        if value is None:
            return False
        if isinstance(value, bytes):  # raw bytes: ASCII case only, as RE2 on binary data
            text = value.lower().decode("latin-1")
        else:  # RE2 also folds the long s into s; lower() keeps it
            text = value.lower().replace("\u017f", "s")
        return next(self.automaton.iter(text), None) is not None


def _automaton(words: Iterable[str]) -> Any:
    """An Aho-Corasick automaton of the words (None when there are none)."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for word in words:
        automaton.add_word(word, None)
    if len(automaton) == 0:
        return None
    automaton.make_automaton()
    return automaton


def _prefilter_patterns(texts: Iterable[str]) -> list[str]:
    """RE2 alternations of the texts' prefixes, each small enough for RE2's fast automaton."""
    prefixes = sorted({text[:PREFILTER_PREFIX_CHARS] for text in texts}, key=len, reverse=True)
    patterns: list[str] = []
    current: list[str] = []
    size = 0
    for prefix in prefixes:
        escaped = _re2_escape(prefix)
        if current and size + len(escaped) + 1 > PREFILTER_PATTERN_CHARS:
            patterns.append("|".join(current))
            current, size = [], 0
        current.append(escaped)
        size += len(escaped) + 1
    if current:
        patterns.append("|".join(current))
    return patterns


def _any_match(values: pa.Array, patterns: Sequence[str]) -> pa.Array:
    """Which values contain a match of any of the patterns (case-insensitive: a superset)."""
    mask = None
    for pattern in patterns:
        found = pc.match_substring_regex(values, pattern, ignore_case=True)
        mask = found if mask is None else pc.or_(mask, found)
    return mask if mask is not None else pa.array([False] * len(values))


_RUN_BYTES = 64 << 10


def _value_runs(leaf: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The values of a large_string array cut into runs of consecutive values, about
    `_RUN_BYTES` of text each, as a large_string array over the same data buffer (no copy), and
    the index of each run's first value (plus the end). A needle inside a value is inside its
    run; a match across two values is a false candidate that the confirmation drops. Cut at
    value boundaries, each run stays valid UTF-8, so case folding is the same as per value."""
    offsets = np.frombuffer(
        leaf.buffers()[1], dtype=np.int64, count=len(leaf) + 1, offset=leaf.offset * 8
    )
    first, last = int(offsets[0]), int(offsets[-1])
    if first == last:  # only empty strings (or nulls): no text, and no needle is empty
        return pa.array([], pa.large_string()), np.zeros(1, dtype=np.int64)
    marks = np.arange(first + _RUN_BYTES, last, _RUN_BYTES, dtype=np.int64)
    inner = np.searchsorted(offsets, marks, side="left")
    starts = np.unique(np.concatenate(([0], inner, [len(leaf)])))
    runs = pa.LargeStringArray.from_buffers(
        len(starts) - 1, pa.py_buffer(offsets[starts].tobytes()), leaf.buffers()[2]
    )
    return runs, starts


def _trie_pattern(literals: Sequence[AnyStr], empty: AnyStr) -> AnyStr:
    """A regex matching any of the literals, longest first, factored as a trie so that each
    position costs one branch per character instead of one try per literal. Empty when there
    are no literals."""
    root: dict = {}
    for literal in literals:
        node = root
        for index in range(len(literal)):
            node = node.setdefault(literal[index : index + 1], {})
        node[None] = {}  # a literal ends here
    if not root:
        return empty
    bar, optional = _text(empty, "|"), _text(empty, "?")

    def run_from(unit: AnyStr, child: dict) -> tuple[AnyStr, dict]:
        """The escaped characters from `unit` down while the trie neither branches nor ends a
        literal, and the node where that run stops."""
        parts = [re.escape(unit)]
        while len(child) == 1 and None not in child:
            ((unit, child),) = child.items()
            parts.append(re.escape(unit))
        return empty.join(parts), child

    # Rendered bottom-up with an explicit stack, not recursion: a needle can be a ciphertext
    # thousands of characters long, deeper than Python's recursion limit.
    rendered: dict[int, AnyStr] = {}
    edges: dict[int, list[tuple[AnyStr, dict]]] = {}
    stack: list[tuple[dict, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not children_done:
            runs = [run_from(unit, child) for unit, child in sorted(
                (k, v) for k, v in node.items() if k is not None)]  # fmt: skip
            edges[id(node)] = runs
            stack.append((node, True))
            stack.extend((child, False) for _, child in runs)
            continue
        branches = [run + rendered.pop(id(child)) for run, child in edges.pop(id(node))]
        if not branches:
            body = empty
        elif len(branches) == 1:
            body = branches[0]
        else:
            body = _group(empty, bar.join(branches))
        # A literal ending here, with longer ones going on: greedy optional, so longer wins.
        rendered[id(node)] = _group(empty, body) + optional if branches and None in node else body
    return _group(empty, rendered[id(root)])


def _text(kind: AnyStr, text: str) -> AnyStr:
    return text if isinstance(kind, str) else text.encode("ascii")


def _group(kind: AnyStr, body: AnyStr) -> AnyStr:
    return _text(kind, "(?:") + body + _text(kind, ")")


def _byte_forms(text: str) -> set[bytes]:
    """UTF-8 bytes of the value, and its JSON-escaped form where that differs."""
    forms = {text.encode("utf-8")}
    escaped = json.dumps(text)[1:-1]
    if escaped != text:
        forms.add(escaped.encode("utf-8"))
    return forms


def _re2_escape(text: str) -> str:
    return "".join("\\" + ch if ch in _RE2_SPECIAL else ch for ch in text)


def _bounded(pattern: str) -> str:
    return f"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"


def _bounded_bytes(pattern: bytes) -> bytes:
    return b"(?<![" + _WORD + b"])" + pattern + b"(?![" + _WORD + b"])"


def _string_leaves(array: pa.Array | pa.ChunkedArray) -> Iterator[pa.Array]:
    """Every string or binary leaf of a (possibly nested) Arrow array, as large types."""
    if isinstance(array, pa.ChunkedArray):
        for chunk in array.chunks:
            yield from _string_leaves(chunk)
        return
    kind = array.type
    if pa.types.is_dictionary(kind):
        yield from _string_leaves(array.dictionary)
    elif pa.types.is_struct(kind):
        for child in array.flatten():
            yield from _string_leaves(child)
    elif pa.types.is_map(kind):
        yield from _string_leaves(array.keys)
        yield from _string_leaves(array.items)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind):
        yield from _string_leaves(array.flatten())
    elif pa.types.is_fixed_size_list(kind):
        yield from _string_leaves(array.flatten())
    elif (
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    ):
        yield array.cast(pa.large_string())
    elif (
        pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
    ):
        yield array.cast(pa.large_binary())


# ---------------------------------------------------------------------------------------------
# Files


def _file_kind(path: Path) -> str:
    parts = set(path.parts)
    name = path.name
    if "_delta_log" in parts:
        return "delta_log"
    if "_change_data" in parts:
        return "change_data"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".wal"):
        return "duckdb_wal"
    if _is_duckdb_file(path):
        return "duckdb"
    return "other"


def _is_duckdb_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return False


def iter_files(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    yield path


def scan_file_bytes(
    path: Path, matcher: TraceMatcher, skip: Sequence[tuple[int, int]] = ()
) -> Counter:
    """Raw-byte scan in overlapping chunks (a value split by a chunk edge is still found).

    Matches starting inside a `skip` range (start, end) are not counted."""
    hits: Counter = Counter()
    size = path.stat().st_size
    if size == 0 or matcher.empty:
        return hits
    overlap = matcher.longest + 2
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for begin, end in _gaps(size, skip):
            start = begin
            while start < end:
                stop = min(end, start + _CHUNK_BYTES)
                lead = 1 if start > 0 else 0  # one byte before the chunk, for the word boundary
                window = m[start - lead : min(size, stop + overlap)]
                hits.update(matcher.scan_bytes(window, begin=lead, limit=lead + stop - start))
                start = stop
    return hits


def _gaps(size: int, skip: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The byte ranges of [0, size) outside every skipped range."""
    gaps, position = [], 0
    for begin, end in sorted(skip):
        if position < min(begin, size):
            gaps.append((position, min(begin, size)))
        position = max(position, end)
    if position < size:
        gaps.append((position, size))
    return gaps


def compressed_pages(parquet: pq.ParquetFile) -> list[tuple[int, int]]:
    """Byte ranges of a Parquet file's compressed column chunks.

    Their raw bytes are left to the decoded scan, which reads every value they hold: a
    compressor cuts long digit runs (card transaction ids) into literals between binary tags,
    and such a fragment can stand alone as a 9-digit national id that no stored value holds.
    The footer, with its statistics and metadata, and uncompressed chunks are scanned raw."""
    metadata = parquet.metadata
    ranges = []
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            if chunk.compression == "UNCOMPRESSED":
                continue
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                start = min(start, chunk.dictionary_page_offset)
            ranges.append((start, start + chunk.total_compressed_size))
    return ranges


def scan_parquet_values(parquet: pq.ParquetFile, matcher: TraceMatcher) -> tuple[Counter, int]:
    hits: Counter = Counter()
    scanned = 0
    for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
        for column in batch.columns:
            column_hits, count = matcher.scan_array(column)
            hits.update(column_hits)
            scanned += count
    return hits, scanned


@contextlib.contextmanager
def duckdb_snapshot(path: Path) -> Iterator[Any]:
    """A read-only DuckDB connection to a private copy of the file (WAL included): the live
    file may be open in this or another process, and DuckDB allows one configuration per file
    and process."""
    import duckdb

    with tempfile.TemporaryDirectory(prefix="pl-verify-") as scratch:
        copy = Path(scratch) / f"copy-{uuid.uuid4().hex}.duckdb"
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
        conn = duckdb.connect(
            str(copy),
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        try:
            yield conn
        finally:
            conn.close()


def _base_tables(conn: Any, required_column: str | None = None) -> list[tuple[str, str]]:
    sql = (
        "select t.schema_name, t.table_name from duckdb_tables() t "
        "where t.database_name = current_database() and not t.temporary"
    )
    parameters: list[str] = []
    if required_column is not None:
        sql += (
            " and exists (select 1 from duckdb_columns() c where c.database_name = t.database_name"
            " and c.schema_name = t.schema_name and c.table_name = t.table_name"
            " and c.column_name = ?)"
        )
        parameters.append(required_column)
    return conn.execute(sql + " order by 1, 2", parameters).fetchall()


def _relation(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def read_duckdb_rows(
    path: Path, column: str, values: Sequence[str]
) -> Iterator[tuple[str, pa.Table]]:
    """The rows of every base table of a DuckDB file that has `column` and whose value there is
    one of `values`. DuckDB filters, so the other rows are never fetched; the values travel as
    a registered Arrow table, never in SQL text."""
    with duckdb_snapshot(path) as conn:
        conn.register("pl_wanted_values", pa.table({"value": pa.array(list(values), pa.string())}))
        for schema, table in _base_tables(conn, column):
            data = conn.execute(
                f"select * from {_relation(schema, table)} "
                f"where cast({quote_ident(column)} as varchar) in "
                "(select value from pl_wanted_values)"
            ).fetch_arrow_table()
            yield f"{schema}.{table}", data


def scan_duckdb_values(path: Path, matcher: TraceMatcher) -> tuple[Counter, int]:
    hits: Counter = Counter()
    scanned = 0
    with duckdb_snapshot(path) as conn:
        for schema, table in _base_tables(conn):
            relation = _relation(schema, table)
            for batch in conn.execute(f"select * from {relation}").fetch_record_batch(_BATCH_ROWS):
                for column in batch.columns:
                    column_hits, count = matcher.scan_array(column)
                    hits.update(column_hits)
                    scanned += count
    return hits, scanned


VERIFY_THREADS = 4  # at most; never more than the machine's cores


@dataclass
class _FileScan:
    path: Path
    kind: str
    size: int = 0
    values: int = 0
    raw: Counter = field(default_factory=Counter)
    decoded: Counter | None = None
    error: str | None = None


def _scan_file(path: Path, matcher: TraceMatcher) -> _FileScan:
    """Raw bytes of one file, and its decoded values where it is Parquet or DuckDB. A file that
    cannot be read is reported by error type: nothing is proven about it."""
    scan = _FileScan(path, _file_kind(path))
    try:
        scan.size = path.stat().st_size
        if path.name.endswith(".parquet"):
            parquet = pq.ParquetFile(path)  # its footer is read once, for both scans
            scan.raw = scan_file_bytes(path, matcher, skip=compressed_pages(parquet))
            scan.decoded, scan.values = scan_parquet_values(parquet, matcher)
        else:
            scan.raw = scan_file_bytes(path, matcher)
            if scan.kind == "duckdb":
                scan.decoded, scan.values = scan_duckdb_values(path, matcher)
    except Exception as error:  # noqa: BLE001 - an unreadable file proves nothing
        scan.error = type(error).__name__
    return scan


def verify_erasure(
    traces: Sequence[SubjectTraces],
    roots: Sequence[Path],
    *,
    base: Path | None = None,
) -> VerificationReport:
    """Scan every file under `roots` for the traces; pass only if nothing is found.

    A file that cannot be read counts as a finding (nothing is proven about it). Paths in the
    report are relative to `base` (the project root) where possible.
    """
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    needles = [n for t in traces for n in t.needles()]
    matcher = TraceMatcher(needles)
    files_scanned: Counter = Counter()
    findings: list[Finding] = []
    bytes_scanned = values_scanned = 0
    roots = [Path(r).resolve() for r in roots]

    def shown(path: Path) -> str:
        if base is not None:
            try:
                return str(path.resolve().relative_to(Path(base).resolve()))
            except ValueError:
                pass
        return str(path)

    def record(path: Path, how: str, hits: Counter) -> None:
        grouped: Counter = Counter()
        for needle, count in hits.items():
            grouped[(needle.category, needle.kind, needle.subject)] += count
        for (category, kind, subject), count in sorted(grouped.items()):
            findings.append(Finding(shown(path), how, category, kind, subject, count))

    # Files are scanned in parallel: Arrow's regex kernels and Parquet decoding release the
    # GIL, so each core scans its own file. Results are recorded in file order.
    workers = max(1, min(VERIFY_THREADS, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pl-verify") as pool:
        scans = pool.map(lambda path: _scan_file(path, matcher), iter_files(roots))
        for scan in scans:
            files_scanned[scan.kind] += 1
            bytes_scanned += scan.size
            values_scanned += scan.values
            if scan.error is not None:
                findings.append(
                    Finding(shown(scan.path), "unreadable", "unreadable", scan.error, "*", 1)
                )
                continue
            record(scan.path, "raw", scan.raw)
            if scan.decoded is not None:
                record(scan.path, "decoded", scan.decoded)
    needle_counts = Counter(n.category for n in needles)
    return VerificationReport(
        passed=not findings,
        roots=[shown(r) for r in roots],
        files_scanned=dict(sorted(files_scanned.items())),
        bytes_scanned=bytes_scanned,
        values_scanned=values_scanned,
        needles={c: needle_counts.get(c, 0) for c in CATEGORIES},
        findings=findings,
        started_at=started_at,
        seconds=round(time.monotonic() - started, 3),
    )
