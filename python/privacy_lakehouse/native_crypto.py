"""Tokens and ciphertexts for whole Arrow arrays, in compiled loops over OpenSSL's libcrypto.

The keyring's formats (see `keyring`) made value by value through `cryptography` cost 1-3 us of
Python per value, under the interpreter lock: at 10M card transactions, about 78 s of a build in
which every bronze model waited for that lock. Here the same bytes come from loops compiled by
Numba that call the system's libcrypto (the library Python's own `hashlib` uses) and release the
lock: about 0.2 us per token and 0.3 us per ciphertext.

- `token_array(states, prefix, values)`: ``prefix + hex(HMAC-SHA256(salt, value)[:16])`` per
  value. HMAC is computed from SHA-256 states keyed once per salt (`hmac_states`), as RFC 2104
  defines it: SHA256((K ^ opad) || SHA256((K ^ ipad) || value)).
- `seal_array(keys, key_index, subject_tokens, associated_prefix, values)`: base64 of
  ``0x01 || nonce || AES-256-GCM(value, associated data)`` per value, the associated data being
  the keyring's prefix plus the row's subject token; a fresh random 12-byte nonce per value.
- `open_array(...)`: the reverse, with strict base64; rows that do not open (tampered, not the
  format) are reported, never returned, and the keyring hands them to its Python path, which
  raises the error it always raised.

Nothing here chooses keys or formats: the keyring passes its secrets and checks results. No
cryptography is implemented here either: AES-GCM and SHA-256 are libcrypto's; the loops only
move bytes and encode base64 and hex.

`available()` is False (and the keyring keeps its pure-Python path, same output) when Numba or
libcrypto cannot be loaded, when ``PRIVACY_LAKEHOUSE_NATIVE_CRYPTO=off``, or when the known-answer
check at load (one token and one ciphertext compared with `cryptography`'s) fails. Compiled code
is cached in `__pycache__` (Numba's cache), so a process pays about 0.2 s to load it, not the
2-3 s of compiling.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from typing import Any

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

SWITCH_ENV = "PRIVACY_LAKEHOUSE_NATIVE_CRYPTO"
# Sizes of the keyring's formats (its docstring describes them); the keyring and the compiled
# loops take them from here, the one module both can import.
CIPHERTEXT_FORMAT = 1
NONCE_BYTES = 12
TAG_BYTES = 16
TOKEN_BYTES = 16
KEY_BYTES = 32
# SHA256_CTX is 112 bytes in OpenSSL 1.1 and 3.x; room to spare, never read past by libcrypto.
_SHA_STATE_BYTES = 256
_SHA_BLOCK = 64
SEALED_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES  # format byte, nonce and tag around the value
_LIBRARY_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so")

_lock = threading.Lock()
_state: dict[str, Any] = {}


class NativeCryptoError(RuntimeError):
    """libcrypto reported a failure. Messages never hold values or keys."""


def _switched_off() -> bool:
    return os.environ.get(SWITCH_ENV, "").strip().lower() in {"0", "off", "false", "no"}


def _find_libcrypto() -> str | None:
    found = ctypes.util.find_library("crypto")
    candidates = ([found] if found else []) + list(_LIBRARY_NAMES)
    for name in candidates:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


def available() -> bool:
    """Whether the compiled path is usable in this process (decided once, on first call)."""
    if _switched_off():
        return False
    # Read without the lock once decided: every UDF chunk asks, from several DuckDB threads, and
    # a thread that found the lock held gave up the interpreter lock and waited for it again
    # (0.5 ms a call in a profile of decryption, where the check itself takes microseconds).
    ready = _state.get("ready")
    if ready is not None:
        return ready
    with _lock:
        if "ready" not in _state:
            _state["ready"] = _load()
        return _state["ready"]


def _load() -> bool:
    library = _find_libcrypto()
    if library is None:
        log.info("native crypto: libcrypto not found; using the Python path")
        return False
    try:
        import llvmlite.binding as llvm

        llvm.load_library_permanently(library)
        from privacy_lakehouse import _native_kernels as kernels

        _state["kernels"] = kernels
        _state["libcrypto"] = _libcrypto_functions(library)
        if not _known_answers_match():
            log.warning("native crypto: known-answer check failed; using the Python path")
            return False
    except Exception as error:  # noqa: BLE001 - any failure keeps the Python path
        log.info("native crypto unavailable (%s); using the Python path", type(error).__name__)
        return False
    return True


def _libcrypto_functions(library: str) -> dict[str, Any]:
    lib = ctypes.CDLL(library)
    init, update = lib.SHA256_Init, lib.SHA256_Update
    init.argtypes, init.restype = [ctypes.c_void_p], ctypes.c_int
    update.argtypes, update.restype = (
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t],
        ctypes.c_int,
    )
    return {"SHA256_Init": init, "SHA256_Update": update}


def hmac_states(secret: bytes) -> tuple[np.ndarray, np.ndarray]:
    """SHA-256 states after the keyed inner and outer HMAC blocks of `secret` (RFC 2104). They
    are as secret as the key: keep them where the key is kept."""
    import hashlib

    key = hashlib.sha256(secret).digest() if len(secret) > _SHA_BLOCK else secret
    key = key.ljust(_SHA_BLOCK, b"\0")
    functions = _state["libcrypto"]
    states = []
    for pad in (0x36, 0x5C):
        block = np.frombuffer(bytes(b ^ pad for b in key), np.uint8)
        state = np.zeros(_SHA_STATE_BYTES, np.uint8)
        if functions["SHA256_Init"](state.ctypes.data) != 1:
            raise NativeCryptoError("SHA256_Init failed")
        if functions["SHA256_Update"](state.ctypes.data, block.ctypes.data, _SHA_BLOCK) != 1:
            raise NativeCryptoError("SHA256_Update failed")
        states.append(state)
    return states[0], states[1]


def _string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64, one per value plus one) and UTF-8 bytes of a string array, no copy of
    the bytes. Nulls have equal offsets."""
    if pa.types.is_large_string(values.type):
        width, kind = 8, np.int64
    elif pa.types.is_string(values.type):
        width, kind = 4, np.int32
    else:
        values = values.cast(pa.string())
        width, kind = 4, np.int32
    buffers = values.buffers()
    offsets = np.frombuffer(
        buffers[1], dtype=kind, count=len(values) + 1, offset=values.offset * width
    ).astype(np.int64)
    data = buffers[2]
    data = (
        np.frombuffer(data, np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    )
    return offsets, data


def _validity(values: pa.Array) -> np.ndarray:
    if values.null_count == 0:
        return np.ones(len(values), np.bool_)
    return values.is_valid().to_numpy(zero_copy_only=False)


def _string_array(offsets: np.ndarray, data: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A string array from int64 offsets, bytes and validity (large offsets only if needed)."""
    count = len(valid)
    if offsets[-1] < 2**31 - 1:
        kind, offset_buffer = pa.string(), pa.py_buffer(offsets.astype(np.int32))
    else:
        kind, offset_buffer = pa.large_string(), pa.py_buffer(offsets)
    nulls = int(count - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(
        kind, count, [bitmap, offset_buffer, pa.py_buffer(data)], null_count=nulls
    )


def token_array(states: tuple[np.ndarray, np.ndarray], prefix: str, values: pa.Array) -> pa.Array:
    """The token of every value (nulls stay null): `prefix` + 32 hex digits."""
    kernels = _state["kernels"]
    offsets, data = _string_buffers(values)
    valid = _validity(values)
    head = np.frombuffer(prefix.encode("ascii"), np.uint8)
    width = len(head) + 2 * TOKEN_BYTES
    out_offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(np.where(valid, width, 0), out=out_offsets[1:])
    out = np.empty(max(1, int(out_offsets[-1])), np.uint8)
    failures = kernels.render_tokens(
        states[0], states[1], offsets, data, valid, head, out_offsets, out
    )
    if failures:
        raise NativeCryptoError("libcrypto failed while tokenizing")
    return _string_array(out_offsets, out[: out_offsets[-1]], valid)


def _subject_arguments(
    keys: np.ndarray, key_index: np.ndarray, associated_prefix: bytes, subject_tokens: pa.Array
) -> tuple[np.ndarray, ...]:
    """What both AES-GCM loops take first: the keys, each row's subject, and the parts of the
    associated data (the prefix, and the subjects' tokens as offsets and bytes)."""
    token_offsets, token_data = _string_buffers(subject_tokens)
    return (
        np.ascontiguousarray(keys, np.uint8).reshape(-1),
        np.ascontiguousarray(key_index, np.int64),
        np.frombuffer(associated_prefix, np.uint8),
        token_offsets,
        token_data,
    )


def seal_array(
    keys: np.ndarray,
    key_index: np.ndarray,
    subject_tokens: pa.Array,
    associated_prefix: bytes,
    values: pa.Array,
) -> pa.Array:
    """The ciphertext of every value (nulls stay null) under key `keys[key_index[row]]`, with
    associated data `associated_prefix + subject_tokens[key_index[row]]`.

    `keys` is a (subjects, 32) uint8 array; `subject_tokens` the subjects' tokens in the same
    order; `key_index` one int64 per value."""
    kernels = _state["kernels"]
    offsets, data = _string_buffers(values)
    valid = _validity(values)
    lengths = np.diff(offsets)
    sealed = 1 + NONCE_BYTES + lengths + TAG_BYTES
    out_lengths = np.where(valid, 4 * ((sealed + 2) // 3), 0)
    out_offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(out_lengths, out=out_offsets[1:])
    out = np.empty(max(1, int(out_offsets[-1])), np.uint8)
    nonces = np.frombuffer(os.urandom(NONCE_BYTES * max(1, len(values))), np.uint8)
    longest = int(lengths.max()) if len(lengths) else 0
    failures = kernels.seal_values(
        *_subject_arguments(keys, key_index, associated_prefix, subject_tokens),
        offsets,
        data,
        valid,
        nonces,
        out_offsets,
        out,
        longest,
    )
    if failures:
        raise NativeCryptoError("libcrypto failed while encrypting")
    return _string_array(out_offsets, out[: out_offsets[-1]], valid)


def _known_answers_match() -> bool:
    """One token and one ciphertext, checked against `cryptography` (HMAC and AES-GCM)."""
    import base64

    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    secret, key = bytes(range(32)), bytes(range(32, 64))
    values = pa.array(["known-answer", None, "", "\u00e9t\u00e9 \u2713"])
    mac = hmac.HMAC(secret, hashes.SHA256())
    mac.update(b"known-answer")
    expected = "v7:" + mac.finalize()[:TOKEN_BYTES].hex()
    got = token_array(hmac_states(secret), "v7:", values).to_pylist()
    if got[0] != expected or got[1] is not None or len(got[3]) != len(expected):
        return False
    subjects = pa.array(["v1:" + "ab" * 16])
    prefix = b"known-answer-aad\x00"
    sealed = seal_array(
        np.frombuffer(key, np.uint8).reshape(1, KEY_BYTES),
        np.zeros(len(values), np.int64),
        subjects,
        prefix,
        values,
    ).to_pylist()
    if sealed[1] is not None:
        return False
    aead = AESGCM(key)
    for plain, text in zip(values.to_pylist(), sealed, strict=True):
        if plain is None:
            continue
        raw = base64.b64decode(text, validate=True)
        opened = aead.decrypt(raw[1:13], raw[13:], prefix + b"v1:" + b"ab" * 16)
        if raw[0] != CIPHERTEXT_FORMAT or opened != plain.encode():
            return False
    # And back: the loop opens what `cryptography` sealed, and refuses a flipped bit.
    theirs = base64.b64encode(
        b"\x01" + bytes(12) + aead.encrypt(bytes(12), b"x", prefix + b"v1:" + b"ab" * 16)
    )
    tampered = bytearray(base64.b64decode(theirs))
    tampered[-1] ^= 1
    texts = pa.array([theirs.decode(), base64.b64encode(bytes(tampered)).decode()])
    opened, unopened = open_array(
        np.frombuffer(key, np.uint8).reshape(1, KEY_BYTES),
        np.zeros(2, np.int64),
        subjects,
        prefix,
        texts,
        np.ones(2, np.bool_),
    )
    return opened[0].as_py() == "x" and unopened.tolist() == [False, True]


def open_array(
    keys: np.ndarray,
    key_index: np.ndarray,
    subject_tokens: pa.Array,
    associated_prefix: bytes,
    ciphertexts: pa.Array,
    wanted: np.ndarray,
) -> tuple[pa.Array, np.ndarray]:
    """Plaintexts of the rows where `wanted` is true (others null), and the rows that did not
    open (not strict base64 of format 1, or failing authentication): the caller gives those to
    the Python path, which raises its own error or, for a spelling it accepts, decrypts."""
    kernels = _state["kernels"]
    offsets, data = _string_buffers(ciphertexts)
    lengths = np.diff(offsets)
    ends = np.maximum(offsets[1:] - 1, 0)
    padding = np.where(lengths >= 1, data[ends] == 61, False).astype(np.int64)
    padding += np.where(lengths >= 2, data[np.maximum(ends - 1, 0)] == 61, False)
    plain = np.where(wanted, np.maximum(lengths // 4 * 3 - padding - SEALED_OVERHEAD, 0), 0)
    out_offsets = np.zeros(len(ciphertexts) + 1, np.int64)
    np.cumsum(plain, out=out_offsets[1:])
    out = np.zeros(max(1, int(out_offsets[-1])), np.uint8)
    status = np.zeros(len(ciphertexts), np.uint8)
    failures = kernels.open_values(
        *_subject_arguments(keys, key_index, associated_prefix, subject_tokens),
        offsets,
        data,
        np.ascontiguousarray(wanted, np.bool_),
        out_offsets,
        out,
        status,
        int(lengths.max()) if len(lengths) else 0,
    )
    if failures:
        raise NativeCryptoError("libcrypto failed while decrypting")
    return _string_array(out_offsets, out[: out_offsets[-1]], wanted), status.astype(np.bool_)
