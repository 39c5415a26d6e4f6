"""DuckDB functions over the keyring, so SQL names keys and never carries a secret.

`register(conn, keyring)` adds these functions to a connection (its cursors see them too):

    pl_token(value VARCHAR, salt_name VARCHAR) -> VARCHAR
        keyed token under the salt's active version (format in `keyring`); deterministic
    pl_token_at(value VARCHAR, salt_name VARCHAR, version INTEGER) -> VARCHAR
        the same under a given salt version (rebuilds during a salt's grace period, erasure)
    pl_encrypt(subject_token VARCHAR, value VARCHAR) -> VARCHAR
        authenticated ciphertext under the subject's data key, created on first use
    pl_encrypt_values(subject_token VARCHAR, values VARCHAR[]) -> VARCHAR[]
        the same for several values of one subject at once (a row's identifiers): the
        subject's key is looked up once per row instead of once per column
    pl_ensure_subject_keys(subject_tokens VARCHAR[]) -> BOOLEAN
        creates the missing data keys of a list of subjects in one key-store transaction (the
        `ensure_subject_keys` macro aggregates a model's subjects into it before encrypting)
    pl_decrypt(subject_token VARCHAR, ciphertext VARCHAR, purpose VARCHAR) -> VARCHAR
        plaintext, only for a purpose the keyring allows; each call is reported to the keyring's
        audit callback; ciphertext of an erased subject (destroyed key) reads as NULL

NULL in gives NULL out. The functions run in Arrow mode: DuckDB passes 2048-row chunks, each
distinct value of a chunk is tokenized once, and each subject's key is fetched once per keyring.
Tokenizing distinct values in SQL and joining back is still cheaper for columns with many repeats.
A refused purpose, a tampered ciphertext or a missing key fails the query with a message that
holds no value, key or ciphertext.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Callable
from itertools import repeat
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from privacy_lakehouse.keyring import Keyring, KeyringError, PurposeNotAllowedError

FUNCTION_NAMES = (
    "pl_token",
    "pl_token_at",
    "pl_encrypt",
    "pl_encrypt_values",
    "pl_ensure_subject_keys",
    "pl_decrypt",
)


def default_actor() -> str:
    """Who decrypts when nobody says: the operating-system user of this process."""
    try:
        return f"duckdb:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry, e.g. in some containers
        return "duckdb:unknown"


def register(
    conn: duckdb.DuckDBPyConnection, keyring: Keyring, *, actor: str | None = None
) -> None:
    """Register the keyring functions on `conn`, replacing earlier registrations of them.

    `actor` is what the audit callback hears for decryptions made through this connection.
    """
    actor = actor or default_actor()
    for name in FUNCTION_NAMES:
        with contextlib.suppress(duckdb.InvalidInputException):
            conn.remove_function(name)

    def pl_token(values: Any, salt_names: Any) -> pa.Array:
        return _tokens(keyring, values, salt_names, None)

    def pl_token_at(values: Any, salt_names: Any, versions: Any) -> pa.Array:
        return _tokens(keyring, values, salt_names, versions)

    def pl_encrypt(subject_tokens: Any, values: Any) -> pa.Array:
        return keyring.encrypt_many(subject_tokens, values)

    def pl_encrypt_values(subject_tokens: Any, value_lists: Any) -> pa.Array:
        return _encrypt_lists(keyring, subject_tokens, value_lists)

    def pl_ensure_subject_keys(token_lists: Any) -> pa.Array:
        rows = _array(token_lists).to_pylist()
        for tokens in rows:
            keyring.ensure_data_keys(tokens or ())
        return pa.array([None if tokens is None else True for tokens in rows])

    def pl_decrypt(subject_tokens: Any, ciphertexts: Any, purposes: Any) -> pa.Array:
        return _decrypt(keyring, actor, subject_tokens, ciphertexts, purposes)

    text, integer = duckdb.sqltype("VARCHAR"), duckdb.sqltype("INTEGER")
    text_list, boolean = duckdb.list_type(text), duckdb.sqltype("BOOLEAN")
    functions: list[tuple[str, Callable[..., pa.Array], list[Any], Any, bool]] = [
        ("pl_token", pl_token, [text, text], text, False),
        ("pl_token_at", pl_token_at, [text, text, integer], text, False),
        # A random nonce per call: DuckDB must neither fold nor deduplicate these calls.
        ("pl_encrypt", pl_encrypt, [text, text], text, True),
        ("pl_encrypt_values", pl_encrypt_values, [text, text_list], text_list, True),
        # Writes to the key store: it must run, and run once per call.
        ("pl_ensure_subject_keys", pl_ensure_subject_keys, [text_list], boolean, True),
        # Each call is audited, so it must really run for every query.
        ("pl_decrypt", pl_decrypt, [text, text, text], text, True),
    ]
    for name, function, parameters, returns, side_effects in functions:
        conn.create_function(
            name,
            function,
            parameters,
            returns,
            type="arrow",
            null_handling="special",
            side_effects=side_effects,
        )


def _array(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values


def _single_value(values: pa.Array) -> tuple[bool, Any]:
    """(True, v) when every entry is the same non-null v, which is how SQL passes a literal."""
    if len(values) == 0 or values.null_count:
        return False, None
    if len(pc.unique(values)) != 1:
        return False, None
    return True, values[0].as_py()


def _tokens(keyring: Keyring, values: Any, salt_names: Any, versions: Any) -> pa.Array:
    values, salts = _array(values), _array(salt_names)
    single_salt, salt = _single_value(salts)
    single_version, version = (True, None) if versions is None else _single_value(_array(versions))
    if single_salt and single_version:
        return keyring.tokens(values, salt, version)
    # Salt or version vary per row (rare): token per row, each distinct combination once.
    version_list = repeat(None) if versions is None else _array(versions).to_pylist()
    memo: dict[tuple[str, str, int | None], str] = {}
    out: list[str | None] = []
    rows = zip(values.to_pylist(), salts.to_pylist(), version_list, strict=False)  # may repeat
    for value, salt, version in rows:
        if value is None:
            out.append(None)
            continue
        if salt is None:
            raise KeyringError("pl_token: salt_name is NULL for a non-NULL value")
        if versions is not None and version is None:
            raise KeyringError("pl_token_at: version is NULL for a non-NULL value")
        key = (value, salt, version)
        token = memo.get(key)
        if token is None:
            token = memo[key] = keyring.token(value, salt, version)
        out.append(token)
    return pa.array(out, pa.string())


def _encrypt_lists(keyring: Keyring, subject_tokens: Any, value_lists: Any) -> pa.Array:
    """Each row's list of values encrypted for the row's subject, in one keyring call per chunk.

    A NULL list stays NULL and a NULL element stays NULL. The keyring sees every element with
    its row's token, so each subject's key is fetched once for all of the row's values."""
    tokens, lists = _array(subject_tokens), _array(value_lists)
    values = lists.flatten()  # the elements of the non-null lists, in row order
    owners = pc.list_parent_indices(lists)
    sealed = keyring.encrypt_many(tokens.take(owners), values)
    # Offsets rebuilt from the lengths: the input may be a slice, or have NULL lists backed
    # by elements that flatten() leaves out.
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    mask = lists.is_null() if lists.null_count else None
    return pa.ListArray.from_arrays(pa.array(offsets), sealed, mask=mask)


def _decrypt(
    keyring: Keyring, actor: str, subject_tokens: Any, ciphertexts: Any, purposes: Any
) -> pa.Array:
    tokens, texts, purposes = _array(subject_tokens), _array(ciphertexts), _array(purposes)
    single, purpose = _single_value(purposes)
    if single:
        return keyring.decrypt_many(tokens, texts, purpose, actor, destroyed_as_null=True)
    # Several purposes in one chunk: decrypt (and audit) each purpose's rows separately.
    purpose_list, text_list = purposes.to_pylist(), texts.to_pylist()
    token_list = tokens.to_pylist()
    out: list[str | None] = [None] * len(text_list)
    rows_by_purpose: dict[str, list[int]] = {}
    for row, (text, row_purpose) in enumerate(zip(text_list, purpose_list, strict=True)):
        if text is None:
            continue
        if row_purpose is None:
            raise PurposeNotAllowedError("pl_decrypt: purpose is NULL")
        rows_by_purpose.setdefault(row_purpose, []).append(row)
    for row_purpose, rows in rows_by_purpose.items():
        plain = keyring.decrypt_many(
            [token_list[row] for row in rows],
            [text_list[row] for row in rows],
            row_purpose,
            actor,
            destroyed_as_null=True,
        ).to_pylist()
        for row, value in zip(rows, plain, strict=True):
            out[row] = value
    return pa.array(out, pa.string())
