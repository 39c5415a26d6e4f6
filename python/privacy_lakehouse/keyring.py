"""Keys for the lakehouse: envelope encryption, keyed tokens, crypto-shredding and rotation.

Three kinds of secret, all kept in one SQLite key store (``<keys_dir>/keyring.sqlite``):

- the master key (key-encryption key, KEK): 32 bytes that never enter the key store. It comes
  from ``PRIVACY_LAKEHOUSE_MASTER_KEY`` (base64), else from a pluggable provider named in
  ``PRIVACY_LAKEHOUSE_KEY_PROVIDER`` (``package.module:factory``, called with the settings), else
  from the local development key file ``<keys_dir>/master.key``. The store only holds a key check
  value per KEK version (an HMAC of a constant), so a wrong or retired master key fails clearly.
- salts: named, versioned 32-byte secrets for keyed tokens, wrapped (AES key wrap) by the KEK.
- data keys: one 32-byte AES-GCM key per subject, wrapped by the KEK. Destroying a subject's data
  key makes every copy of their ciphertext unreadable (crypto-shredding), old Delta versions too.

Formats (stable; other modules and stored data depend on them):

- token: ``v<salt version>:<32 lowercase hex>``, the first 16 bytes of
  HMAC-SHA256(salt, UTF-8 value). 16 bytes keep collisions negligible (birthday bound 2**64)
  while the column stays half the width of a full hex digest; the version prefix says which salt
  version made it, so joins only ever match tokens of the same version.
- ciphertext: base64 of ``0x01 || 12-byte nonce || AES-256-GCM(ciphertext || tag)``, with
  associated data binding the format version and the subject token, so a ciphertext cannot be
  moved to another subject's row.

Secrets stay inside this module: evidence, status and error messages carry names, versions,
counts and timestamps only. The store runs with ``PRAGMA secure_delete=ON`` so destroyed keys
are overwritten inside the file, and rotating the master key after erasures makes any copy left
elsewhere (backups, freed disk blocks) useless, since it was wrapped by a key that no longer exists.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import importlib
import json
import logging
import os
import re
import sqlite3
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import constant_time, hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from privacy_lakehouse import native_crypto
from privacy_lakehouse.native_crypto import (
    CIPHERTEXT_FORMAT,
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    TOKEN_BYTES,
)
from privacy_lakehouse.settings import Settings, load_settings

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

MASTER_KEY_ENV = "PRIVACY_LAKEHOUSE_MASTER_KEY"
NEW_MASTER_KEY_ENV = "PRIVACY_LAKEHOUSE_NEW_MASTER_KEY"
KEY_PROVIDER_ENV = "PRIVACY_LAKEHOUSE_KEY_PROVIDER"
KEY_STORE_FILE = "keyring.sqlite"
MASTER_KEY_FILE = "master.key"
DEV_TARGETS = frozenset({"dev", "test"})
DEFAULT_DECRYPT_PURPOSES = frozenset({"fraud_prevention", "erasure_verification"})
DEFAULT_SALT = "subject"
DEFAULT_SALT_GRACE = timedelta(days=7)
DEV_KEY_WARNING = "privacy_lakehouse: using the local development master key file"

WRAPPED_KEY_BYTES = KEY_BYTES + 8  # AES key wrap (RFC 3394) adds one 8-byte block

_KEY_CHECK_LABEL = b"privacy_lakehouse/key-check-value/v1"
_AAD_PREFIX = b"privacy_lakehouse/ciphertext/v1\x00"
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
_TOKEN_PATTERN = re.compile(r"v[1-9][0-9]{0,8}:[0-9a-f]{32}")
_SQL_BATCH = 500  # tokens per IN (...) list, well under SQLite's variable limit
_TEXT_OR_NULL = frozenset({str, type(None)})
# Page cache per connection, in KiB. A chunk of new subjects dirties about one subject_keys page
# per key; with SQLite's 2 MiB default the cache spills mid-transaction, which costs extra
# journal syncs and rewrites of the same pages.
_STORE_CACHE_KIB = 64 * 1024


# --------------------------------------------------------------------------------------------
# Errors. Messages name keys, versions and counts; never key material, values or ciphertext.


class KeyringError(Exception):
    """Base class for every keyring failure."""


class MasterKeyError(KeyringError):
    """The master key is missing, malformed, wrong, or retired."""


class MissingMasterKeyError(MasterKeyError):
    """The master key of a key store that already holds keys is not available.

    Never answered by making a new key: one would not open the store, and keys made under it
    before the old ones are read would mix two master keys."""


class KeyNotFoundError(KeyringError):
    """A salt version or a subject's data key does not exist."""


class KeyDestroyedError(KeyringError):
    """The key was destroyed (crypto-shredded); what it protected is unreadable for good."""


class TamperedCiphertextError(KeyringError):
    """A ciphertext failed authentication: altered, truncated, or bound to another subject."""


class PurposeNotAllowedError(KeyringError):
    """Decryption was requested for a purpose outside this keyring's allow-list."""


class DevelopmentMasterKeyWarning(UserWarning):
    """The local development key file protects keys for a target that is not dev or test."""


# --------------------------------------------------------------------------------------------
# Master key providers


@runtime_checkable
class MasterKeyProvider(Protocol):
    """Where the master key comes from. A KMS or vault adapter implements these two methods."""

    def current(self) -> tuple[int, bytes]:
        """The newest master key and its version (used to initialise a new key store)."""
        ...

    def get(self, version: int) -> bytes:
        """The master key of a given version; raise MasterKeyError if it is not available
        (MissingMasterKeyError when there is no key at all: the store then refuses to open)."""
        ...


@runtime_checkable
class RotatableMasterKeyProvider(MasterKeyProvider, Protocol):
    """A provider that can store a new master key itself, so rotation can generate one."""

    def add(self, version: int, key: bytes) -> None:
        """Store `key` as `version`, durably, before the key store switches to it."""
        ...

    def forget_before(self, version: int) -> None:
        """Delete every version older than `version` (called after a rotation commits)."""
        ...


def decode_master_key(encoded: str, source: str) -> bytes:
    """Decode a base64 master key; the error names the source, never the value."""
    text = encoded.strip()
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{source} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{source} must be the base64 encoding of {KEY_BYTES} random bytes")
    return key


class EnvMasterKeyProvider:
    """One master key from an environment variable (base64 of 32 bytes).

    The key store identifies which KEK version this key is by its key check value, so the
    variable holds only the key. After `rotate_master_key`, set the variable to the new key.
    """

    def __init__(self, variable: str = MASTER_KEY_ENV, environ: dict[str, str] | None = None):
        environ = os.environ if environ is None else environ
        encoded = environ.get(variable)
        if not encoded:
            raise MasterKeyError(f"environment variable {variable} is not set")
        self._key = decode_master_key(encoded, f"environment variable {variable}")
        self.description = f"environment variable {variable}"

    def current(self) -> tuple[int, bytes]:
        return 1, self._key

    def get(self, version: int) -> bytes:
        return self._key


class LocalKeyFileProvider:
    """The embedded development default: versioned master keys in a local 0600 file.

    Created on first use in a 0700 folder that also gets a `.gitignore` of `*`, so the key
    cannot be committed by accident even when the keys folder is moved inside a repository.
    """

    def __init__(self, path: str | os.PathLike, target_name: str = "dev"):
        self.path = Path(path)
        self.target_name = target_name
        self.description = f"local development key file {self.path}"
        if target_name not in DEV_TARGETS:
            message = (
                f"{DEV_KEY_WARNING} {self.path} for target '{target_name}'. It is meant for "
                f"development only: set {MASTER_KEY_ENV} or {KEY_PROVIDER_ENV} for this target."
            )
            logger.warning(message)
            warnings.warn(message, DevelopmentMasterKeyWarning, stacklevel=3)

    def current(self, *, create: bool = True) -> tuple[int, bytes]:
        """The newest key; the file is made only for a new key store (`create`)."""
        keys = self._load(create=create)
        version = max(keys)
        return version, keys[version]

    # A key store that names a version already has its key: the file is never made here.
    def get(self, version: int) -> bytes:
        keys = self._load(create=False)
        if version not in keys:
            raise MasterKeyError(f"the local master key file has no key version {version}")
        return keys[version]

    def add(self, version: int, key: bytes) -> None:
        keys = self._load(create=False)
        keys[version] = key
        self._write(keys)

    def forget_before(self, version: int) -> None:
        keys = {v: k for v, k in self._load(create=False).items() if v >= version}
        self._write(keys)

    def _load(self, create: bool) -> dict[int, bytes]:
        if not self.path.exists():
            if not create:
                raise MissingMasterKeyError(f"the local master key file {self.path} does not exist")
            self._create()
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            message = (
                f"privacy_lakehouse: the master key file {self.path} is readable by other "
                f"users (mode {mode:o}); run chmod 600 on it"
            )
            logger.warning(message)
            warnings.warn(message, DevelopmentMasterKeyWarning, stacklevel=3)
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            keys = {
                int(entry["version"]): decode_master_key(entry["key"], "the master key file")
                for entry in document["keys"]
            }
        except (ValueError, KeyError, TypeError):
            raise MasterKeyError(f"the local master key file {self.path} is malformed") from None
        if not keys:
            raise MasterKeyError(f"the local master key file {self.path} holds no key")
        return keys

    def _create(self) -> None:
        _ensure_private_dir(self.path.parent)
        staged = self._stage({1: os.urandom(KEY_BYTES)})
        try:
            # A hard link creates the file only if it is absent, with its content complete, so
            # two processes starting together agree on one key.
            os.link(staged, self.path)
        except FileExistsError:
            pass
        finally:
            staged.unlink()

    def _write(self, keys: dict[int, bytes]) -> None:
        staged = self._stage(keys)
        os.replace(staged, self.path)
        _fsync_dir(self.path.parent)

    def _stage(self, keys: dict[int, bytes]) -> Path:
        now = _iso(_utcnow())
        document = {
            "about": "privacy_lakehouse development master key. Never commit or share this file; "
            f"use {MASTER_KEY_ENV} or a key provider outside development.",
            "keys": [
                {"version": v, "key": base64.b64encode(k).decode("ascii"), "written_at": now}
                for v, k in sorted(keys.items())
            ],
        }
        staged = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        _write_private_file(staged, json.dumps(document, indent=2).encode("utf-8"))
        return staged


def master_key_provider_from_environment(settings: Settings | None = None) -> MasterKeyProvider:
    """Pick the master key source: env variable, then a named provider, then the local file."""
    settings = settings or load_settings()
    if os.environ.get(MASTER_KEY_ENV):
        return EnvMasterKeyProvider()
    spec = os.environ.get(KEY_PROVIDER_ENV)
    if spec:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise MasterKeyError(f"{KEY_PROVIDER_ENV} must look like 'package.module:factory'")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
            provider = factory(settings)
        except Exception as error:  # noqa: BLE001 - one clear line for a misnamed provider
            raise MasterKeyError(
                f"{KEY_PROVIDER_ENV}={spec} could not make a key provider ({type(error).__name__})"
            ) from None
        if not isinstance(provider, MasterKeyProvider):
            raise MasterKeyError(f"{spec} did not return a MasterKeyProvider")
        return provider
    return LocalKeyFileProvider(settings.keys_dir / MASTER_KEY_FILE, settings.target_name)


# --------------------------------------------------------------------------------------------
# Files and time


def _ensure_private_dir(path: Path) -> None:
    if path.is_dir():
        return
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)  # the umask may have narrowed or, for parents, widened the mode
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Keys never go into version control.\n*\n", encoding="utf-8")


def _write_private_file(path: Path, data: bytes) -> None:
    # os.open with a mode creates the file private from its first byte; fchmod fixes what a
    # restrictive or odd umask did to that mode.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _as_utc(moment: datetime | None) -> datetime:
    if moment is None:
        return _utcnow()
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


# --------------------------------------------------------------------------------------------
# Small crypto helpers


def _key_check_value(key: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(_KEY_CHECK_LABEL)
    return mac.finalize()[:16]


def _associated_data(subject_token: str) -> bytes:
    return _AAD_PREFIX + subject_token.encode("ascii")


def _seal_rows(
    sealers: dict[str, tuple[Callable[..., bytes], bytes]],
    tokens: list[str | None],
    plaintexts: list[str | None],
) -> list[str | None]:
    """The ciphertext of each row under its subject's AEAD; a null plaintext stays null.

    `sealers` holds each subject's bound AES-GCM encrypt and associated data: per row there is
    then one dict lookup, one encrypt and one base64 (this loop runs for every identifier)."""
    # One urandom call yields every row's fresh random nonce (12 bytes each, never shared).
    nonces = os.urandom(NONCE_BYTES * len(plaintexts))
    header = bytes([CIPHERTEXT_FORMAT])
    to_base64 = binascii.b2a_base64
    out: list[str | None] = []
    append = out.append
    start = 0
    for token, text in zip(tokens, plaintexts, strict=True):
        if text is None:
            append(None)
        else:
            seal, associated = sealers[token]
            nonce = nonces[start : start + NONCE_BYTES]
            sealed = seal(nonce, text.encode("utf-8"), associated)
            append(to_base64(header + nonce + sealed, newline=False).decode("ascii"))
        start += NONCE_BYTES
    return out


def _open_sealed(aead: AESGCM, subject_token: str, ciphertext: str) -> str:
    try:
        raw = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise TamperedCiphertextError("a ciphertext is not valid base64") from None
    if len(raw) < 1 + NONCE_BYTES + TAG_BYTES or raw[0] != CIPHERTEXT_FORMAT:
        raise TamperedCiphertextError(
            "a ciphertext is truncated or has an unknown format version"
        ) from None
    try:
        nonce, sealed = raw[1 : 1 + NONCE_BYTES], raw[1 + NONCE_BYTES :]
        plaintext = aead.decrypt(nonce, sealed, _associated_data(subject_token))
    except InvalidTag:
        raise TamperedCiphertextError(
            "a ciphertext failed authentication: it was altered, truncated, or belongs to "
            "another subject"
        ) from None
    return plaintext.decode("utf-8")


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        # The offending text is not echoed: a misplaced column could put a value here.
        raise KeyringError(
            f"{kind} names are 1-63 lowercase letters, digits or underscores, starting with a "
            "letter"
        )
    return name


def _check_subject_token(token: object) -> str:
    if not isinstance(token, str) or not _TOKEN_PATTERN.fullmatch(token):
        # Keeps raw identifiers out of the key store: subjects are named by tokens only.
        raise KeyringError("subject tokens must be keyring tokens of the form v<version>:<32 hex>")
    return token


def _check_subject_tokens(tokens: Sequence[object]) -> None:
    """_check_subject_token for many tokens, without a Python call per valid token."""
    try:
        valid = all(map(_TOKEN_PATTERN.fullmatch, tokens))
    except TypeError:  # a value that is not a string
        valid = False
    if not valid:
        for token in tokens:
            _check_subject_token(token)


def _to_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str or None, not {type(value).__name__}")
    return value


def _chunks(items: Sequence[Any], size: int = _SQL_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _json_token_list(tokens: Sequence[str]) -> str:
    """A JSON array of checked subject tokens (v, digits, ':' and hex need no escaping)."""
    return '["' + '","'.join(tokens) + '"]' if tokens else "[]"


# From this many tokens on, and when they are at least a quarter of the store, reading every
# key in store order beats probing each token (1M tokens of 1M: 0.7 s against 3.8 s).
_SCAN_STORE_FROM = 50_000


def _select_data_keys(
    db: sqlite3.Connection, tokens: list[str]
) -> list[tuple[str, bytes | None, int | None]]:
    """(token, wrapped key or None if destroyed, master key version) of the tokens with a key."""
    return list(_iter_data_keys(db, tokens))


def _iter_data_keys(
    db: sqlite3.Connection, tokens: list[str]
) -> Iterator[tuple[str, bytes | None, int | None]]:
    """`_select_data_keys` row by row: a million subjects' rows held at once took about 250 MB."""
    if len(tokens) >= _SCAN_STORE_FROM:
        (stored,) = db.execute("SELECT coalesce(max(key_id), 0) FROM data_keys").fetchone()
        if 4 * len(tokens) >= stored:
            wanted = set(tokens)
            cursor = db.execute(
                "SELECT s.subject_token, d.wrapped_key, d.kek_version FROM subject_keys AS s "
                "CROSS JOIN data_keys AS d ON d.key_id = s.key_id"
            )
            while batch := cursor.fetchmany(65_536):
                yield from (row for row in batch if row[0] in wanted)
            return
    # The tokens travel as one JSON parameter instead of IN lists of bound values; CROSS JOIN
    # keeps that list the outer loop, so each token costs one primary-key probe.
    cursor = db.execute(
        "SELECT s.subject_token, d.wrapped_key, d.kek_version FROM json_each(?) AS wanted "
        "CROSS JOIN subject_keys AS s ON s.subject_token = wanted.value "
        "CROSS JOIN data_keys AS d ON d.key_id = s.key_id",
        (_json_token_list(tokens),),
    )
    while batch := cursor.fetchmany(65_536):
        yield from batch


def _native_inputs(tokens: Any, texts: Any) -> tuple[pa.Array, pa.Array] | None:
    """Both columns as contiguous Arrow string arrays when the compiled path can take them
    (Arrow input, as DuckDB passes it); None keeps the Python path (lists, other types)."""
    import pyarrow as pa

    arrays = []
    for values in (tokens, texts):
        if not isinstance(values, (pa.Array, pa.ChunkedArray)):
            return None
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            return None
        arrays.append(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    if not native_crypto.available():
        return None
    return arrays[0], arrays[1]


class _RowsBySubject:
    """The rows of a (subject token, value) pair of columns as the compiled loops take them:
    each row's subject as an index into the distinct tokens (`dictionary`, `subjects`), which
    rows hold a value (`present`), and which subjects those rows need (`needed`, indices)."""

    def __init__(self, tokens: pa.Array, values: pa.Array, no_token: str):
        import numpy as np
        import pyarrow.compute as pc

        self.present = values.is_valid().to_numpy(zero_copy_only=False)
        if (
            tokens.null_count
            and (tokens.is_null().to_numpy(zero_copy_only=False) & self.present).any()
        ):
            raise KeyringError(no_token)
        encoded = tokens.dictionary_encode()
        self.dictionary = encoded.dictionary
        self.subjects: list[str] = self.dictionary.to_pylist()
        indices = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
        self.key_index = indices.astype(np.int64)
        self.needed: list[int] = np.unique(self.key_index[self.present]).tolist()

    def needed_tokens(self) -> list[str]:
        return [self.subjects[index] for index in self.needed]

    def key_matrix(self, keys: dict[str, bytes | None]) -> Any:
        """One 32-byte row per distinct subject; subjects with no key needed (all their values
        null) or a destroyed one get zeros, which no present row reads."""
        import numpy as np

        unused = bytes(KEY_BYTES)
        material = b"".join(keys.get(token) or unused for token in self.subjects)
        return np.frombuffer(material, np.uint8).reshape(-1, KEY_BYTES)


def _valid_utf8(values: pa.Array) -> bool:
    try:
        values.validate(full=True)
    except Exception:  # noqa: BLE001 - pyarrow raises ArrowInvalid for bad UTF-8
        return False
    return True


def _string_list(values: Any) -> list[str | None]:
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.to_pylist()
    return list(values)


DecryptAudit = Callable[[str, str, int], None]


# --------------------------------------------------------------------------------------------
# The keyring

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_info (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kek_versions (
    version INTEGER PRIMARY KEY,
    check_value BLOB NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('active', 'retired')),
    created_at TEXT NOT NULL,
    retired_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_kek ON kek_versions (state) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS salts (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    wrapped_secret BLOB,
    kek_version INTEGER,
    state TEXT NOT NULL CHECK (state IN ('active', 'retired', 'destroyed')),
    created_at TEXT NOT NULL,
    retire_after TEXT,
    destroyed_at TEXT,
    PRIMARY KEY (name, version),
    CHECK ((state = 'destroyed') = (wrapped_secret IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_salt ON salts (name) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS data_keys (
    key_id INTEGER PRIMARY KEY,
    wrapped_key BLOB,
    kek_version INTEGER,
    state TEXT NOT NULL CHECK (state IN ('active', 'destroyed')),
    created_at TEXT NOT NULL,
    destroyed_at TEXT,
    CHECK ((state = 'destroyed') = (wrapped_key IS NULL))
);
CREATE TABLE IF NOT EXISTS subject_keys (
    subject_token TEXT PRIMARY KEY,
    key_id INTEGER NOT NULL REFERENCES data_keys (key_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subject_keys_by_key ON subject_keys (key_id);
"""
# AEAD objects kept for recently used subjects: several DuckDB chunks' worth (2,048 rows
# each), so the encrypted columns of a chunk reuse them. The cache is emptied when full.
AEAD_CACHE_SIZE = 16384
_SCHEMA_VERSION = "1"


def _connect_store(path: Path) -> sqlite3.Connection:
    _ensure_private_dir(path.parent)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            _write_private_file(path, b"")
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    # secure_delete overwrites destroyed keys inside the file; a rollback journal (not WAL)
    # keeps no stale copy of a page in the database folder after the transaction ends.
    db.execute("PRAGMA secure_delete = ON")
    db.execute("PRAGMA journal_mode = DELETE")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute(f"PRAGMA cache_size = -{_STORE_CACHE_KIB}")
    db.executescript(_SCHEMA)
    db.execute(
        "INSERT OR IGNORE INTO store_info (name, value) VALUES ('schema_version', ?)",
        (_SCHEMA_VERSION,),
    )
    return db


class Keyring:
    """Envelope encryption, keyed tokens, crypto-shredding and rotation over one key store.

    Thread-safe (DuckDB may call functions from several threads). Unwrapped keys are cached in
    memory for the life of the object only; a key destroyed by another process stays usable in
    this object until it is closed, so long-lived processes should reopen after erasures.
    """

    def __init__(
        self,
        store_path: str | os.PathLike,
        provider: MasterKeyProvider,
        *,
        allowed_purposes: Iterable[str] = DEFAULT_DECRYPT_PURPOSES,
        on_decrypt: DecryptAudit | None = None,
        create_missing_salts: bool = True,
    ):
        self.store_path = Path(store_path)
        self.allowed_purposes = frozenset(allowed_purposes)
        self._provider = provider
        self._on_decrypt = on_decrypt
        self._create_missing_salts = create_missing_salts
        self._lock = threading.RLock()
        self._active_salt_versions: dict[str, int] = {}
        self._salt_macs: dict[tuple[str, int], hmac.HMAC] = {}
        # The same salts as keyed SHA-256 states, for the compiled path (`native_crypto`).
        self._salt_states: dict[tuple[str, int], Any] = {}
        # Unwrapped data keys by subject token (32 bytes each), and AEAD objects for at most
        # AEAD_CACHE_SIZE recently used of them: an AEAD object costs about 2.4 KB, so caching
        # one per subject would take gigabytes at a million subjects.
        self._data_key_bytes: dict[str, bytes] = {}
        self._aeads: dict[str, AESGCM] = {}
        self._db = _connect_store(self.store_path)
        try:
            self._kek_version, self._kek = self._resolve_master_key()
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        provider: MasterKeyProvider | None = None,
        create: bool = False,
        **options: Any,
    ) -> Keyring:
        """The project's keyring: store in `settings.keys_dir`, master key per the environment.

        A missing store is created only on an empty lake, or with `create=True` (`keys init`)."""
        settings = settings or load_settings()
        store = settings.keys_dir / KEY_STORE_FILE
        if (
            not create
            and not store.exists()
            and any((settings.lake_dir / "bronze").glob("*/_delta_log"))
        ):
            # A wrong PRIVACY_LAKEHOUSE_KEYS (or directory) would otherwise get a new master key
            # and salts, and new rows would be tokenized under keys unrelated to the lake's.
            raise KeyringError(
                f"no key store at {store}, but the lake {settings.lake_dir} already holds data "
                "tokenized under one: point PRIVACY_LAKEHOUSE_KEYS at its folder"
            )
        provider = provider or master_key_provider_from_environment(settings)
        return cls(store, provider, **options)

    def close(self) -> None:
        with self._lock:
            self._salt_macs.clear()
            self._salt_states.clear()
            self._aeads.clear()
            self._data_key_bytes.clear()
            self._active_salt_versions.clear()
            self._kek = b""
            self._db.close()

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def open_default(cls, **options: Any) -> Keyring:
        """`open()` with the settings and master key source of the environment."""
        return cls.open(**options)

    @property
    def master_key_version(self) -> int:
        return self._kek_version

    @property
    def master_key_source(self) -> str:
        return getattr(self._provider, "description", type(self._provider).__name__)

    # ---- master key --------------------------------------------------------------------

    def _resolve_master_key(self) -> tuple[int, bytes]:
        row = self._db.execute(
            "SELECT version, check_value FROM kek_versions WHERE state = 'active'"
        ).fetchone()
        if row is None:
            with self._write() as db:
                row = db.execute(
                    "SELECT version, check_value FROM kek_versions WHERE state = 'active'"
                ).fetchone()
                if row is None:
                    version, key = self._provider.current()
                    self._check_key_length(key)
                    db.execute(
                        "INSERT INTO kek_versions (version, check_value, state, created_at) "
                        "VALUES (?, ?, 'active', ?)",
                        (version, _key_check_value(key), _iso(_utcnow())),
                    )
                    return version, key
        version, expected = row
        try:
            key = self._provider.get(version)
        except MissingMasterKeyError:
            raise MissingMasterKeyError(
                f"the master key of the existing key store {self.store_path} is missing "
                f"({self.master_key_source} is not there); no new key is made for a store that "
                f"holds keys: set {MASTER_KEY_ENV}, name a key provider in {KEY_PROVIDER_ENV}, "
                "or restore the key file"
            ) from None
        except (MasterKeyError, LookupError):
            # Still worth a check, to say which key it is; never a new key for this store.
            if isinstance(self._provider, LocalKeyFileProvider):
                key = self._provider.current(create=False)[1]
            else:
                key = self._provider.current()[1]
        self._check_key_length(key)
        check = _key_check_value(key)
        if constant_time.bytes_eq(check, expected):
            return version, key
        retired = self._db.execute(
            "SELECT version FROM kek_versions WHERE check_value = ?", (check,)
        ).fetchone()
        if retired is not None:
            raise MasterKeyError(
                f"the master key from {self.master_key_source} is master key version "
                f"{retired[0]}, retired when version {version} replaced it; it no longer opens "
                f"the key store {self.store_path}"
            )
        raise MasterKeyError(
            f"the master key from {self.master_key_source} does not open the key store "
            f"{self.store_path}: its key check value matches no master key version (the store "
            f"expects version {version})"
        )

    @staticmethod
    def _check_key_length(key: object) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise MasterKeyError(f"a master key must be {KEY_BYTES} bytes")

    def _unwrap(self, wrapped: bytes, kek_version: int, what: str) -> bytes:
        if kek_version != self._kek_version:
            raise MasterKeyError(
                f"{what} is wrapped by master key version {kek_version}, but this keyring holds "
                f"version {self._kek_version}; the store was rotated since it was opened: reopen it"
            )
        try:
            return aes_key_unwrap(self._kek, wrapped)
        except InvalidUnwrap:
            raise MasterKeyError(
                f"{what} does not unwrap under the active master key; the key store is damaged"
            ) from None

    def rotate_master_key(self, new_key: bytes | None = None) -> dict[str, Any]:
        """Rewrap every salt and data key under a new master key version, in one transaction.

        Cost is one unwrap and one wrap per key (subjects and salt versions), never per row of
        data: ciphertext and tokens are untouched. `new_key` may be omitted when the provider can
        store keys itself (the local key file); otherwise pass the new key and then configure the
        provider (for example set PRIVACY_LAKEHOUSE_MASTER_KEY) to it.
        """
        rotatable = isinstance(self._provider, RotatableMasterKeyProvider)
        if new_key is None:
            if not rotatable:
                raise MasterKeyError(
                    f"rotating a master key from {self.master_key_source} needs the new key "
                    f"(for the CLI, in {NEW_MASTER_KEY_ENV})"
                )
            new_key = os.urandom(KEY_BYTES)
        self._check_key_length(new_key)
        started = _utcnow()
        with self._lock:
            if constant_time.bytes_eq(new_key, self._kek):
                raise MasterKeyError("the new master key is the current master key")
            old_version, old_key = self._kek_version, self._kek
            with self._write() as db:
                active = db.execute(
                    "SELECT version FROM kek_versions WHERE state = 'active'"
                ).fetchone()[0]
                if active != old_version:
                    raise MasterKeyError(
                        "the key store was rotated by another process since this keyring was "
                        "opened: reopen it"
                    )
                new_check = _key_check_value(new_key)
                if db.execute(
                    "SELECT 1 FROM kek_versions WHERE check_value = ?", (new_check,)
                ).fetchone():
                    raise MasterKeyError("the new master key was used before; choose a fresh key")
                new_version = db.execute("SELECT max(version) + 1 FROM kek_versions").fetchone()[0]
                if rotatable:
                    # Durable before the store switches, so a crash leaves both keys available.
                    self._provider.add(new_version, new_key)
                data_keys = self._rewrap_table(
                    db, "data_keys", "key_id", "wrapped_key", old_key, new_key, new_version
                )
                salts = self._rewrap_table(
                    db, "salts", "rowid", "wrapped_secret", old_key, new_key, new_version
                )
                destroyed = db.execute(
                    "SELECT count(*) FROM data_keys WHERE state = 'destroyed'"
                ).fetchone()[0]
                now = _iso(_utcnow())
                db.execute(
                    "UPDATE kek_versions SET state = 'retired', retired_at = ? WHERE version = ?",
                    (now, old_version),
                )
                db.execute(
                    "INSERT INTO kek_versions (version, check_value, state, created_at) "
                    "VALUES (?, ?, 'active', ?)",
                    (new_version, new_check, now),
                )
            self._kek_version, self._kek = new_version, new_key
            if rotatable:
                self._provider.forget_before(new_version)
        evidence: dict[str, Any] = {
            "event": "master_key_rotated",
            "at": _iso(started),
            "master_key_source": self.master_key_source,
            "master_key_version_before": old_version,
            "master_key_version_after": new_version,
            "data_keys_rewrapped": data_keys,
            "destroyed_data_keys_skipped": destroyed,
            "salt_versions_rewrapped": salts,
            "seconds": round((_utcnow() - started).total_seconds(), 3),
        }
        if not rotatable:
            evidence["action_required"] = (
                f"configure {self.master_key_source} with the new master key before the next "
                "run; the old key no longer opens the key store"
            )
        return evidence

    @staticmethod
    def _rewrap_table(
        db: sqlite3.Connection,
        table: str,
        row_key: str,
        column: str,
        old_key: bytes,
        new_key: bytes,
        new_version: int,
    ) -> int:
        count, last = 0, -1
        while True:
            rows = db.execute(
                f"SELECT {row_key}, {column} FROM {table} "
                f"WHERE {column} IS NOT NULL AND {row_key} > ? ORDER BY {row_key} LIMIT 5000",
                (last,),
            ).fetchall()
            if not rows:
                return count
            updates = []
            for row_id, wrapped in rows:
                try:
                    plain = aes_key_unwrap(old_key, wrapped)
                except InvalidUnwrap:
                    raise MasterKeyError(
                        f"a key in {table} does not unwrap under the active master key; the key "
                        "store is damaged and was not rotated"
                    ) from None
                updates.append((aes_key_wrap(new_key, plain), new_version, row_id))
            db.executemany(
                f"UPDATE {table} SET {column} = ?, kek_version = ? WHERE {row_key} = ?",
                updates,
            )
            count += len(updates)
            last = rows[-1][0]

    # ---- transactions ------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (busy past the timeout, disk full) can leave the transaction
                # open; roll it back so this keyring stays usable and nothing half-made remains.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # ---- salts and tokens --------------------------------------------------------------

    def create_salt(self, name: str) -> dict[str, Any]:
        """Create version 1 of a salt (no-op if the salt exists). Returns evidence."""
        _check_name("salt", name)
        with self._write() as db:
            existing = db.execute(
                "SELECT max(version) FROM salts WHERE name = ?", (name,)
            ).fetchone()[0]
            if existing is None:
                self._insert_salt(db, name, 1)
        return {
            "event": "salt_created" if existing is None else "salt_exists",
            "at": _iso(_utcnow()),
            "salt": name,
            "version": 1 if existing is None else existing,
        }

    def _insert_salt(self, db: sqlite3.Connection, name: str, version: int) -> None:
        db.execute(
            "INSERT INTO salts (name, version, wrapped_secret, kek_version, state, created_at) "
            "VALUES (?, ?, ?, ?, 'active', ?)",
            (
                name,
                version,
                aes_key_wrap(self._kek, os.urandom(KEY_BYTES)),
                self._kek_version,
                _iso(_utcnow()),
            ),
        )

    def _active_salt_version(self, name: str) -> int:
        version = self._active_salt_versions.get(name)
        if version is not None:
            return version
        _check_name("salt", name)
        with self._lock:
            row = self._db.execute(
                "SELECT version FROM salts WHERE name = ? AND state = 'active'", (name,)
            ).fetchone()
            if row is None:
                exists = self._db.execute("SELECT 1 FROM salts WHERE name = ?", (name,)).fetchone()
                if exists or not self._create_missing_salts:
                    raise KeyNotFoundError(f"salt '{name}' has no active version")
                self.create_salt(name)
                return self._active_salt_version(name)
            self._active_salt_versions[name] = row[0]
            return row[0]

    def _salt_mac(self, name: str, version: int | None) -> tuple[int, hmac.HMAC]:
        if version is None:
            version = self._active_salt_version(name)
        mac = self._salt_macs.get((name, version))
        if mac is not None:
            return version, mac
        _check_name("salt", name)
        if not isinstance(version, int) or version < 1:
            raise KeyNotFoundError("salt versions are positive integers")
        with self._lock:
            row = self._db.execute(
                "SELECT wrapped_secret, kek_version, state, destroyed_at FROM salts "
                "WHERE name = ? AND version = ?",
                (name, version),
            ).fetchone()
            if row is None:
                raise KeyNotFoundError(f"salt '{name}' has no version {version}")
            wrapped, kek_version, state, destroyed_at = row
            if state == "destroyed":
                raise KeyDestroyedError(
                    f"salt '{name}' version {version} was destroyed at {destroyed_at}"
                )
            secret = self._unwrap(wrapped, kek_version, f"salt '{name}' version {version}")
            # HMAC state keyed once and copied per value: 2.5x faster than keying each call.
            mac = hmac.HMAC(secret, hashes.SHA256())
            if native_crypto.available():
                self._salt_states[(name, version)] = native_crypto.hmac_states(secret)
            self._salt_macs[(name, version)] = mac
            return version, mac

    def token(self, value: str | None, salt_name: str = DEFAULT_SALT, version: int | None = None):
        """The keyed token of `value` (see the module docstring); None stays None."""
        if value is None:
            return None
        text = _to_text(value, "a value to tokenize")
        version, mac = self._salt_mac(salt_name, version)
        return _render_tokens(version, mac, [text])[0]

    def tokens(
        self,
        values: pa.Array | pa.ChunkedArray,
        salt_name: str = DEFAULT_SALT,
        version: int | None = None,
    ) -> pa.Array:
        """Tokens of a string array, computing each distinct value once; nulls stay null."""
        import pyarrow as pa

        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = values.cast(pa.string())
        version, mac = self._salt_mac(salt_name, version)
        encoded = values.dictionary_encode()
        states = self._salt_states.get((salt_name, version))
        if states is not None and native_crypto.available():  # the switch holds at any time
            distinct = native_crypto.token_array(states, f"v{version}:", encoded.dictionary)
        else:
            distinct = pa.array(_render_tokens(version, mac, encoded.dictionary.to_pylist()))
        return distinct.cast(pa.string()).take(encoded.indices)

    def token_versions(self, value: str, salt_name: str = DEFAULT_SALT) -> dict[int, str]:
        """The token of `value` under every salt version not yet destroyed (for erasure)."""
        text = _to_text(value, "a value to tokenize")
        _check_name("salt", salt_name)
        with self._lock:
            versions = [
                row[0]
                for row in self._db.execute(
                    "SELECT version FROM salts WHERE name = ? AND state != 'destroyed' "
                    "ORDER BY version",
                    (salt_name,),
                )
            ]
        return {version: self.token(text, salt_name, version) for version in versions}

    # ---- data keys and ciphertext ------------------------------------------------------

    def _data_keys(self, tokens: Iterable[str], create: bool) -> dict[str, AESGCM | None]:
        """AEADs by subject token; None marks a destroyed key; missing ones created or left out."""
        found: dict[str, AESGCM | None] = {}
        uncached = []
        with self._lock:
            for token in set(tokens):
                aead = self._cached_aead(token)
                if aead is None:
                    uncached.append(token)
                else:
                    found[token] = aead
        if uncached:
            stored = self._stored_data_keys(uncached, create)
            with self._lock:
                for token, key in stored.items():
                    found[token] = None if key is None else self._cache_data_key(token, key)
        return found

    def _data_key_material(self, tokens: Iterable[str], create: bool) -> dict[str, bytes | None]:
        """Raw data keys by subject token, like `_data_keys` but without AES-GCM objects (the
        compiled path keys libcrypto itself)."""
        found: dict[str, bytes | None] = {}
        uncached = []
        with self._lock:
            for token in set(tokens):
                key = self._data_key_bytes.get(token)
                if key is None:
                    uncached.append(token)
                else:
                    found[token] = key
        if uncached:
            found.update(self._stored_data_keys(uncached, create))
        return found

    def _stored_data_keys(self, uncached: list[str], create: bool) -> dict[str, bytes | None]:
        """Keys read from (or, with `create`, made in) the store and cached as bytes; None marks
        a destroyed key; a missing key is left out unless created."""
        found: dict[str, bytes | None] = {}
        if not uncached:
            return found
        _check_subject_tokens(uncached)
        new_keys: dict[str, bytes] = {}
        with self._lock:
            if create:
                with self._write() as db:
                    # Looked up inside the write transaction: one lookup serves reading and
                    # creating, and it sees every key another process has committed.
                    rows = _select_data_keys(db, uncached)
                    if len(rows) < len(uncached):
                        stored = {row[0] for row in rows}
                        missing = [token for token in uncached if token not in stored]
                        new_keys = self._insert_data_keys(db, missing)
            else:
                rows = _select_data_keys(self._db, uncached)
            # Cached only once committed: a key lost in a rollback must never encrypt data.
            for token, wrapped, kek_version in rows:
                if wrapped is None:
                    found[token] = None
                else:
                    key = self._unwrap(wrapped, kek_version, "a subject data key")
                    self._data_key_bytes[token] = key
                    found[token] = key
            for token, key in new_keys.items():
                self._data_key_bytes[token] = key
                found[token] = key
        return found

    def _cached_aead(self, token: str) -> AESGCM | None:
        """The AEAD of a cached data key (callers hold the lock), or None when not cached."""
        aead = self._aeads.get(token)
        if aead is not None:
            return aead
        key = self._data_key_bytes.get(token)
        if key is None:
            return None
        return self._remember_aead(token, AESGCM(key))

    def _cache_data_key(self, token: str, key: bytes) -> AESGCM:
        self._data_key_bytes[token] = key
        return self._remember_aead(token, AESGCM(key))

    def _remember_aead(self, token: str, aead: AESGCM) -> AESGCM:
        # Emptied when full rather than kept in least-recently-used order: an LRU's bookkeeping
        # on every hit cost more than rebuilding an AEAD (about 2 us) now and then.
        if len(self._aeads) >= AEAD_CACHE_SIZE:
            self._aeads.clear()
        self._aeads[token] = aead
        return aead

    def _insert_data_keys(self, db: sqlite3.Connection, tokens: list[str]) -> dict[str, bytes]:
        """Make, wrap and store one new data key per token; returns the keys by token."""
        active = db.execute("SELECT version FROM kek_versions WHERE state = 'active'").fetchone()
        if active is None or active[0] != self._kek_version:
            # A key wrapped by a retired master key would be lost once that key is forgotten.
            raise MasterKeyError(
                "the key store was rotated to another master key since this keyring was opened: "
                "reopen it"
            )
        first_id = db.execute("SELECT coalesce(max(key_id), 0) + 1 FROM data_keys").fetchone()[0]
        material = os.urandom(KEY_BYTES * len(tokens))
        keys = [material[start : start + KEY_BYTES] for start in range(0, len(material), KEY_BYTES)]
        wrapped = b"".join([aes_key_wrap(self._kek, key) for key in keys])
        if len(wrapped) != WRAPPED_KEY_BYTES * len(tokens):
            raise KeyringError("a wrapped data key has an unexpected length")
        listed = _json_token_list(tokens)
        # One statement per table, not one bound row per key: element i of the JSON token list
        # becomes key_id first_id + i, and its wrapped key is slice i of the concatenated blob.
        db.execute(
            "INSERT INTO data_keys (key_id, wrapped_key, kek_version, state, created_at) "
            "SELECT ?1 + key, substr(?2, key * ?3 + 1, ?3), ?4, 'active', ?5 FROM json_each(?6)",
            (first_id, wrapped, WRAPPED_KEY_BYTES, self._kek_version, _iso(_utcnow()), listed),
        )
        db.execute(
            "INSERT INTO subject_keys (subject_token, key_id) "
            "SELECT value, ?1 + key FROM json_each(?2)",
            (first_id, listed),
        )
        return dict(zip(tokens, keys, strict=True))

    def encrypt(self, subject_token: str, plaintext: str | None) -> str | None:
        """Authenticated ciphertext of `plaintext` under the subject's data key (made on demand)."""
        return self.encrypt_many([subject_token], [plaintext])[0].as_py()

    def ensure_data_keys(self, subject_tokens: Iterable[str | None]) -> int:
        """Create the missing data keys of these subjects in one transaction; returns how many
        subjects were asked for. Encrypting then finds every key made: one commit (and its
        fsyncs) for a whole model instead of one per 2048-row chunk. A destroyed key stays
        destroyed (encrypting for that subject still fails).

        Existing keys are unwrapped here, all at once (about 1 us each), and cached as 32 raw
        bytes with the new ones, so encrypting never goes back to the store: a lookup in a write
        transaction per 2,048-row chunk cost more than the encryption. No AES-GCM object is made
        here: one costs about 2.4 KB, and a model's subjects can number millions."""
        tokens = {token for token in subject_tokens if token is not None}
        if not tokens:
            return 0
        # One lock from the check to the cache: a model that asks for the same subjects while
        # another creates them (dbt runs bronze models side by side) then finds them cached,
        # instead of reading and unwrapping a million keys just committed by the other.
        with self._lock:
            unknown = [t for t in tokens if t not in self._data_key_bytes]
            if not unknown:
                return len(tokens)
            _check_subject_tokens(unknown)
            unwrapped: dict[str, bytes] = {}
            stored: set[str] = set()
            with self._write() as db:
                # Unwrapped as the rows stream in: holding every row (wrapped key and all)
                # first took a quarter of a gigabyte at a million subjects.
                for token, wrapped, kek_version in _iter_data_keys(db, unknown):
                    stored.add(token)
                    if wrapped is not None:
                        unwrapped[token] = self._unwrap(wrapped, kek_version, "a subject data key")
                missing = [token for token in unknown if token not in stored]
                new_keys = self._insert_data_keys(db, missing) if missing else {}
            # Cached (as bytes only) once committed: a key lost in a rollback must never
            # encrypt data. Destroyed keys (no wrapped key) are not cached, so encrypting for
            # an erased subject still finds the tombstone and fails.
            self._data_key_bytes.update(unwrapped)
            self._data_key_bytes.update(new_keys)
        return len(tokens)

    def encrypt_many(self, subject_tokens: Any, plaintexts: Any) -> pa.Array:
        """Encrypt row by row, fetching or creating each subject's key once. Nulls stay null."""
        import pyarrow as pa

        native = _native_inputs(subject_tokens, plaintexts)
        if native is not None:
            return self._encrypt_native(*native)
        tokens, texts = _string_list(subject_tokens), _string_list(plaintexts)
        if len(tokens) != len(texts):
            raise KeyringError("subject tokens and plaintexts differ in length")
        if not _TEXT_OR_NULL.issuperset(map(type, texts)):  # else str subclasses or bad values
            for text in texts:
                if text is not None:
                    _to_text(text, "a value to encrypt")
        if None in texts:
            needed = {token for token, text in zip(tokens, texts, strict=True) if text is not None}
        else:
            needed = set(tokens)  # the usual case, without a Python loop
        if None in needed:
            raise KeyringError("a value to encrypt has no subject token")
        sealers: dict[str, tuple[Callable[..., bytes], bytes]] = {}
        for token, aead in self._data_keys(needed, create=True).items():
            if aead is None:
                raise KeyDestroyedError(
                    "a subject's data key was destroyed (erased subject); new values for that "
                    "subject cannot be encrypted: filter erased subjects out before encrypting"
                )
            sealers[token] = (aead.encrypt, _associated_data(token))
        return pa.array(_seal_rows(sealers, tokens, texts), pa.string())

    def _encrypt_native(self, tokens: pa.Array, texts: pa.Array) -> pa.Array:
        """`encrypt_many` through `native_crypto`: the same format, one compiled loop."""
        import pyarrow as pa

        if len(tokens) != len(texts):
            raise KeyringError("subject tokens and plaintexts differ in length")
        if len(texts) == 0:
            return pa.array([], pa.string())
        rows = _RowsBySubject(tokens, texts, "a value to encrypt has no subject token")
        keys = self._data_key_material(rows.needed_tokens(), create=True)
        if any(key is None for key in keys.values()):
            raise KeyDestroyedError(
                "a subject's data key was destroyed (erased subject); new values for that "
                "subject cannot be encrypted: filter erased subjects out before encrypting"
            )
        return native_crypto.seal_array(
            rows.key_matrix(keys), rows.key_index, rows.dictionary, _AAD_PREFIX, texts
        )

    def decrypt(
        self, subject_token: str, ciphertext: str | None, purpose: str, actor: str
    ) -> str | None:
        """Plaintext of one ciphertext, for an allowed purpose; the call is audited."""
        return self.decrypt_many([subject_token], [ciphertext], purpose, actor)[0].as_py()

    def decrypt_many(
        self,
        subject_tokens: Any,
        ciphertexts: Any,
        purpose: str,
        actor: str,
        *,
        destroyed_as_null: bool = False,
    ) -> pa.Array:
        """Decrypt row by row, one key fetch per subject, for an allowed purpose.

        The audit callback hears (actor, purpose, number of distinct subjects) before anything is
        decrypted; if it raises, nothing is decrypted. Ciphertext of a destroyed key raises
        KeyDestroyedError, or reads as null with `destroyed_as_null` (shredded data is absent).
        """
        import pyarrow as pa

        self._check_purpose(purpose, actor)
        native = _native_inputs(subject_tokens, ciphertexts)
        if native is not None:
            return self._decrypt_native(*native, purpose, actor, destroyed_as_null)
        tokens, texts = _string_list(subject_tokens), _string_list(ciphertexts)
        if len(tokens) != len(texts):
            raise KeyringError("subject tokens and ciphertexts differ in length")
        needed = set()
        for token, text in zip(tokens, texts, strict=True):
            if text is not None:
                if token is None:
                    raise KeyringError("a ciphertext has no subject token")
                needed.add(token)
        if self._on_decrypt is not None:
            self._on_decrypt(actor, purpose, len(needed))
        aeads = self._data_keys(needed, create=False)
        if len(aeads) < len(needed):
            raise KeyNotFoundError("no data key exists for a subject of these ciphertexts")
        if not destroyed_as_null and any(aeads[token] is None for token in needed):
            raise KeyDestroyedError(
                "a subject's data key was destroyed (crypto-shredded); the ciphertext is unreadable"
            )
        out: list[str | None] = []
        for token, text in zip(tokens, texts, strict=True):
            aead = None if text is None else aeads[token]
            out.append(
                None if aead is None else _open_sealed(aead, token, _to_text(text, "a ciphertext"))
            )
        return pa.array(out, pa.string())

    def _decrypt_native(
        self, tokens: pa.Array, texts: pa.Array, purpose: str, actor: str, destroyed_as_null: bool
    ) -> pa.Array:
        """`decrypt_many` through `native_crypto`, with the same checks, audit and errors: a
        value the loop cannot open goes through the Python path, which raises its error."""
        import numpy as np
        import pyarrow as pa

        if len(tokens) != len(texts):
            raise KeyringError("subject tokens and ciphertexts differ in length")
        rows = _RowsBySubject(tokens, texts, "a ciphertext has no subject token")
        if self._on_decrypt is not None:
            self._on_decrypt(actor, purpose, len(rows.needed))
        keys = self._data_key_material(rows.needed_tokens(), create=False)
        if len(keys) < len(rows.needed):
            raise KeyNotFoundError("no data key exists for a subject of these ciphertexts")
        destroyed = np.zeros(len(rows.subjects), np.bool_)
        for index in rows.needed:
            destroyed[index] = keys[rows.subjects[index]] is None
        if not destroyed_as_null and destroyed.any():
            raise KeyDestroyedError(
                "a subject's data key was destroyed (crypto-shredded); the ciphertext is unreadable"
            )
        wanted = rows.present & ~destroyed[rows.key_index] if rows.subjects else rows.present
        plain, unopened = native_crypto.open_array(
            rows.key_matrix(keys), rows.key_index, rows.dictionary, _AAD_PREFIX, texts, wanted
        )
        if unopened.any() or not _valid_utf8(plain):
            # Rare: tampered or oddly spelled values. The Python path decides each of them.
            values = plain.to_pylist()
            redo = np.flatnonzero(unopened) if unopened.any() else np.flatnonzero(wanted)
            for row in redo.tolist():
                token = rows.subjects[rows.key_index[row]]
                aead = self._data_keys([token], create=False)[token]
                values[row] = _open_sealed(aead, token, texts[row].as_py())
            return pa.array(values, pa.string())
        return plain

    def _check_purpose(self, purpose: object, actor: object) -> None:
        if not isinstance(actor, str) or not actor:
            raise KeyringError("decryption needs an actor (who is asking)")
        if purpose not in self.allowed_purposes:
            shown = (
                purpose if isinstance(purpose, str) and _NAME_PATTERN.fullmatch(purpose) else "?"
            )
            logger.warning("decryption refused: purpose '%s' is not allowed", shown)
            raise PurposeNotAllowedError(
                f"decryption for purpose '{shown}' is not allowed; allowed purposes: "
                f"{', '.join(sorted(self.allowed_purposes)) or 'none'}"
            )

    # ---- crypto-shredding --------------------------------------------------------------

    def destroy_subject_key(self, subject_token: str) -> dict[str, Any]:
        """Destroy one subject's data key; see destroy_subject_keys."""
        return self.destroy_subject_keys([subject_token])

    def destroy_subject_keys(self, subject_tokens: Iterable[str]) -> dict[str, Any]:
        """Destroy the data keys of these subjects in one transaction (crypto-shredding).

        The wrapped key is overwritten in the store (secure_delete); a marker stays so that the
        subject's ciphertext reports KeyDestroyedError and no new key is made for that token.
        """
        tokens = sorted({_check_subject_token(token) for token in subject_tokens})
        now = _iso(_utcnow())
        destroyed = already = unknown = 0
        with self._write() as db:
            key_ids: set[int] = set()
            for batch in _chunks(tokens):
                marks = ",".join("?" * len(batch))
                rows = db.execute(
                    "SELECT s.key_id, d.state FROM subject_keys s JOIN data_keys d "
                    f"USING (key_id) WHERE s.subject_token IN ({marks})",
                    tuple(batch),
                ).fetchall()
                unknown += len(batch) - len(rows)
                for key_id, state in rows:
                    if state == "destroyed":
                        already += 1
                    else:
                        key_ids.add(key_id)
            for batch in _chunks(sorted(key_ids)):
                marks = ",".join("?" * len(batch))
                linked = db.execute(
                    f"SELECT subject_token FROM subject_keys WHERE key_id IN ({marks})",
                    tuple(batch),
                ).fetchall()
                db.execute(
                    "UPDATE data_keys SET wrapped_key = NULL, kek_version = NULL, "
                    f"state = 'destroyed', destroyed_at = ? WHERE key_id IN ({marks})",
                    (now, *batch),
                )
                for (token,) in linked:
                    self._aeads.pop(token, None)
                    self._data_key_bytes.pop(token, None)
            destroyed = len(key_ids)
        return {
            "event": "subject_keys_destroyed",
            "at": now,
            "subjects_requested": len(tokens),
            "data_keys_destroyed": destroyed,
            "already_destroyed": already,
            "subjects_without_key": unknown,
        }

    def link_subject_tokens(self, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """Bind new subject tokens to the data keys of existing ones.

        Used when the subject salt rotates: the rebuild that re-tokenizes subjects links each new
        token to the old one's key, so erasure by either token destroys the one key that opens
        all of that subject's ciphertext (old rows keep their old token and stay readable).
        """
        added = already = 0
        with self._write() as db:
            for existing, new in pairs:
                _check_subject_token(existing)
                _check_subject_token(new)
                row = db.execute(
                    "SELECT key_id FROM subject_keys WHERE subject_token = ?", (existing,)
                ).fetchone()
                if row is None:
                    raise KeyNotFoundError("a subject token to link from has no data key")
                current = db.execute(
                    "SELECT key_id FROM subject_keys WHERE subject_token = ?", (new,)
                ).fetchone()
                if current is None:
                    db.execute(
                        "INSERT INTO subject_keys (subject_token, key_id) VALUES (?, ?)",
                        (new, row[0]),
                    )
                    added += 1
                elif current[0] == row[0]:
                    already += 1
                else:
                    raise KeyringError("a new subject token is already bound to another data key")
        return {
            "event": "subject_tokens_linked",
            "at": _iso(_utcnow()),
            "links_added": added,
            "already_linked": already,
        }

    # ---- salt rotation -----------------------------------------------------------------

    def rotate_salt(
        self,
        name: str,
        *,
        grace: timedelta = DEFAULT_SALT_GRACE,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Make a new active version of a salt; the old one is retired until now + grace.

        New tokens use the new version at once (in this keyring; other open keyrings pick it up
        when reopened). Rebuild what depends on the salt, then `destroy_retired_salts`.
        """
        _check_name("salt", name)
        if grace < timedelta(0):
            raise KeyringError("the grace period cannot be negative")
        moment = _as_utc(now)
        retire_after = moment + grace
        with self._write() as db:
            row = db.execute(
                "SELECT version FROM salts WHERE name = ? AND state = 'active'", (name,)
            ).fetchone()
            if row is None:
                raise KeyNotFoundError(f"salt '{name}' has no active version to rotate")
            old_version = row[0]
            new_version = db.execute(
                "SELECT max(version) + 1 FROM salts WHERE name = ?", (name,)
            ).fetchone()[0]
            db.execute(
                "UPDATE salts SET state = 'retired', retire_after = ? WHERE name = ? "
                "AND version = ?",
                (_iso(retire_after), name, old_version),
            )
            self._insert_salt(db, name, new_version)
            self._active_salt_versions.pop(name, None)
        return {
            "event": "salt_rotated",
            "at": _iso(moment),
            "salt": name,
            "version_before": old_version,
            "version_after": new_version,
            "retired_version": old_version,
            "retire_after": _iso(retire_after),
        }

    def destroy_retired_salts(self, now: datetime | None = None) -> dict[str, Any]:
        """Destroy every retired salt version whose grace period has passed."""
        moment = _as_utc(now)
        destroyed, waiting = [], []
        with self._write() as db:
            rows = db.execute(
                "SELECT name, version, retire_after FROM salts WHERE state = 'retired' "
                "ORDER BY name, version"
            ).fetchall()
            for name, version, retire_after in rows:
                entry = {"salt": name, "version": version, "retire_after": retire_after}
                if datetime.fromisoformat(retire_after) <= moment:
                    db.execute(
                        "UPDATE salts SET wrapped_secret = NULL, kek_version = NULL, "
                        "state = 'destroyed', destroyed_at = ? WHERE name = ? AND version = ?",
                        (_iso(moment), name, version),
                    )
                    self._salt_macs.pop((name, version), None)
                    self._salt_states.pop((name, version), None)
                    destroyed.append(entry)
                else:
                    waiting.append(entry)
        return {
            "event": "retired_salts_destroyed",
            "at": _iso(moment),
            "destroyed": destroyed,
            "still_in_grace": waiting,
        }

    # ---- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Names, versions, states and counts: what an operator or auditor may see."""
        with self._lock:
            keks = self._db.execute(
                "SELECT version, state, created_at, retired_at FROM kek_versions ORDER BY version"
            ).fetchall()
            salts = self._db.execute(
                "SELECT name, version, state, created_at, retire_after, destroyed_at FROM salts "
                "ORDER BY name, version"
            ).fetchall()
            key_states = dict(
                self._db.execute("SELECT state, count(*) FROM data_keys GROUP BY state").fetchall()
            )
            linked = self._db.execute("SELECT count(*) FROM subject_keys").fetchone()[0]
        return {
            "key_store": str(self.store_path),
            "master_key": {
                "source": self.master_key_source,
                "active_version": self._kek_version,
                "versions": [
                    {"version": v, "state": s, "created_at": c, "retired_at": r}
                    for v, s, c, r in keks
                ],
            },
            "salts": [
                {
                    "salt": name,
                    "version": version,
                    "state": state,
                    "created_at": created_at,
                    "retire_after": retire_after,
                    "destroyed_at": destroyed_at,
                }
                for name, version, state, created_at, retire_after, destroyed_at in salts
            ],
            "data_keys": {
                "active": key_states.get("active", 0),
                "destroyed": key_states.get("destroyed", 0),
                "subject_tokens": linked,
            },
            "decrypt_purposes": sorted(self.allowed_purposes),
        }


def _render_tokens(version: int, mac: hmac.HMAC, values: list[str | None]) -> list[str | None]:
    prefix = f"v{version}:"
    out: list[str | None] = []
    append = out.append
    try:
        for value in values:
            if value is None:
                append(None)
                continue
            state = mac.copy()
            state.update(value.encode("utf-8"))
            append(prefix + state.finalize()[:TOKEN_BYTES].hex())
    except UnicodeEncodeError:
        raise KeyringError("a value to tokenize is not valid Unicode text") from None
    return out


# --------------------------------------------------------------------------------------------
# CLI: `privacy-lakehouse keys ...`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Manage the keyring: master key, salts and subject data keys. Output is evidence as "
        "JSON (names, versions, counts), never key material."
    )
    commands = parser.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    commands.required = True

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text)

    init = command("init", "Create the key store, the master key (dev key file) and salts.")
    init.add_argument(
        "--salt",
        action="append",
        metavar="NAME",
        help=f"a salt to create; repeat for several (default: {DEFAULT_SALT})",
    )
    command("status", "Show master key versions, salts and key counts.")
    command(
        "rotate-master",
        f"Rewrap every key under a new master key. The new key is read from {NEW_MASTER_KEY_ENV} "
        "(base64 of 32 bytes); with the local dev key file it is generated when that is unset.",
    )
    rotate_salt = command(
        "rotate-salt",
        "Make a new version of a salt and re-tokenize the lake: every token of the salt is "
        "re-derived from bronze ciphertext and rewritten in each Delta table; the old version is "
        "retired for a grace period. Salts without bronze ciphertext (account, device) and those "
        "that must outlive rotations (record, tombstone) are refused. Tables stay sorted by "
        "subject token; DuckDB is bounded to 900MB "
        "for the rewrite unless PRIVACY_LAKEHOUSE_DUCKDB_MEMORY_LIMIT is set. Progress goes to "
        "stderr (privacy-lakehouse -q keys ... for none).",
    )
    rotate_salt.add_argument("name", help="salt name, e.g. subject")
    rotate_salt.add_argument(
        "--grace-days",
        type=float,
        default=DEFAULT_SALT_GRACE.days,
        help="days the old version stays usable before destroy-retired removes it (default: 7)",
    )
    rotate_salt.add_argument(
        "--rebuild",
        action="store_true",
        help="run `dbt build` afterwards, so every model and test sees the new tokens",
    )
    rotate_salt.add_argument(
        "--resume",
        action="store_true",
        help="make no new version; finish a rotation that failed part-way",
    )
    command(
        "destroy-retired",
        "Destroy retired salt versions whose grace period has passed (refused while the lake "
        "still holds their tokens).",
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.keys_command in ("rotate-salt", "destroy-retired"):
            # These change the lake as well as the key store (privacy_lakehouse.rotation).
            from privacy_lakehouse import rotation

            if args.keys_command == "rotate-salt":
                evidence = rotation.run_rotate_salt(args)
            else:
                evidence = rotation.destroy_retired_salts_in_lake()
        else:
            with Keyring.open(create=args.keys_command == "init") as keyring:
                evidence = _run_command(keyring, args)
            if args.keys_command == "rotate-master":
                from privacy_lakehouse import rotation

                evidence["evidence_file"] = str(rotation.record_rotation(load_settings(), evidence))
    except KeyringError as error:
        print(f"privacy-lakehouse keys: {error}", file=sys.stderr)
        return 1
    print(json.dumps(evidence, indent=2, sort_keys=True))
    return 0


def _run_command(keyring: Keyring, args: argparse.Namespace) -> dict[str, Any]:
    name = args.keys_command
    if name == "init":
        created = [keyring.create_salt(salt) for salt in (args.salt or [DEFAULT_SALT])]
        return {
            "event": "keyring_initialised",
            "at": _iso(_utcnow()),
            "key_store": str(keyring.store_path),
            "master_key_source": keyring.master_key_source,
            "master_key_version": keyring.master_key_version,
            "salts": [
                {"salt": e["salt"], "version": e["version"], "event": e["event"]} for e in created
            ],
        }
    if name == "status":
        return keyring.status()
    if name == "rotate-master":
        encoded = os.environ.get(NEW_MASTER_KEY_ENV)
        new_key = decode_master_key(encoded, NEW_MASTER_KEY_ENV) if encoded else None
        return keyring.rotate_master_key(new_key)
    if name == "rotate-salt":
        return keyring.rotate_salt(args.name, grace=timedelta(days=args.grace_days))
    if name == "destroy-retired":
        return keyring.destroy_retired_salts()
    raise KeyringError(f"unknown keys subcommand {name}")
