"""Compiled loops of `native_crypto` (imported only once libcrypto's symbols are loaded).

Every pointer goes to libcrypto as an integer address (`uintp`), which on the platforms Numba
supports has a pointer's size and calling convention. Each function returns how many libcrypto
calls failed; the caller raises on any.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from privacy_lakehouse.native_crypto import (
    CIPHERTEXT_FORMAT,
    KEY_BYTES,
    NONCE_BYTES,
    SEALED_OVERHEAD,
    TAG_BYTES,
    TOKEN_BYTES,
)

_address, _int = types.uintp, types.int32

SHA256_Update = types.ExternalFunction("SHA256_Update", _int(_address, _address, _address))
SHA256_Final = types.ExternalFunction("SHA256_Final", _int(_address, _address))
EVP_CIPHER_CTX_new = types.ExternalFunction("EVP_CIPHER_CTX_new", _address())
EVP_CIPHER_CTX_free = types.ExternalFunction("EVP_CIPHER_CTX_free", types.void(_address))
EVP_aes_256_gcm = types.ExternalFunction("EVP_aes_256_gcm", _address())
EVP_EncryptInit_ex = types.ExternalFunction(
    "EVP_EncryptInit_ex", _int(_address, _address, _address, _address, _address)
)
EVP_EncryptUpdate = types.ExternalFunction(
    "EVP_EncryptUpdate", _int(_address, _address, _address, _address, _int)
)
EVP_EncryptFinal_ex = types.ExternalFunction(
    "EVP_EncryptFinal_ex", _int(_address, _address, _address)
)
EVP_CipherInit_ex = types.ExternalFunction(
    "EVP_CipherInit_ex", _int(_address, _address, _address, _address, _address, _int)
)
EVP_CipherUpdate = types.ExternalFunction(
    "EVP_CipherUpdate", _int(_address, _address, _address, _address, _int)
)
EVP_CIPHER_CTX_ctrl = types.ExternalFunction(
    "EVP_CIPHER_CTX_ctrl", _int(_address, _int, _int, _address)
)

_GCM_GET_TAG = 0x10  # EVP_CTRL_AEAD_GET_TAG
_BASE64 = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8
).copy()
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8).copy()


@njit(nogil=True, cache=True)
def render_tokens(inner, outer, offsets, data, valid, head, out_offsets, out):
    """head + hex(HMAC-SHA256[:16]) of each valid value, at out[out_offsets[i]:]."""
    state = np.empty(inner.shape[0], np.uint8)
    digest = np.empty(32, np.uint8)
    hexdigits = _HEX
    failures = 0
    for i in range(valid.shape[0]):
        if not valid[i]:
            continue
        state[:] = inner
        failures += (
            SHA256_Update(
                state.ctypes.data, data.ctypes.data + offsets[i], offsets[i + 1] - offsets[i]
            )
            != 1
        )
        failures += SHA256_Final(digest.ctypes.data, state.ctypes.data) != 1
        state[:] = outer
        failures += SHA256_Update(state.ctypes.data, digest.ctypes.data, 32) != 1
        failures += SHA256_Final(digest.ctypes.data, state.ctypes.data) != 1
        at = out_offsets[i]
        for j in range(head.shape[0]):
            out[at + j] = head[j]
        at += head.shape[0]
        for j in range(TOKEN_BYTES):
            out[at + 2 * j] = hexdigits[digest[j] >> 4]
            out[at + 2 * j + 1] = hexdigits[digest[j] & 15]
    digest[:] = 0
    state[:] = 0
    return failures


@njit(nogil=True, cache=True)
def seal_values(
    keys,
    key_index,
    associated_prefix,
    token_offsets,
    token_data,
    offsets,
    data,
    valid,
    nonces,
    out_offsets,
    out,
    longest,
):
    """base64(0x01 || nonce || AES-256-GCM(value) || tag) of each valid value, associated data
    associated_prefix + its subject's token, at out[out_offsets[i]:]."""
    sealed = np.empty(1 + NONCE_BYTES + longest + TAG_BYTES + 16, np.uint8)
    written = np.zeros(1, np.int32)
    alphabet = _BASE64
    ctx = EVP_CIPHER_CTX_new()
    if ctx == 0:
        return 1
    failures = EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), 0, 0, 0) != 1
    current = -1
    for i in range(valid.shape[0]):
        if not valid[i]:
            continue
        subject = key_index[i]
        failures += _start_value(
            ctx, keys, subject, current, nonces.ctypes.data + i * NONCE_BYTES,
            associated_prefix, token_offsets, token_data, written,
        )  # fmt: skip
        current = subject
        length = offsets[i + 1] - offsets[i]
        sealed[0] = CIPHERTEXT_FORMAT
        for j in range(NONCE_BYTES):
            sealed[1 + j] = nonces[i * NONCE_BYTES + j]
        body = 1 + NONCE_BYTES
        failures += EVP_EncryptUpdate(
            ctx, sealed.ctypes.data + body, written.ctypes.data, data.ctypes.data + offsets[i],
            np.int32(length),
        ) != 1  # fmt: skip
        failures += written[0] != length
        failures += (
            EVP_EncryptFinal_ex(ctx, sealed.ctypes.data + body + length, written.ctypes.data) != 1
        )
        failures += EVP_CIPHER_CTX_ctrl(
            ctx, _GCM_GET_TAG, TAG_BYTES, sealed.ctypes.data + body + length
        ) != 1  # fmt: skip
        _base64_into(sealed, body + length + TAG_BYTES, out, out_offsets[i], alphabet)
    EVP_CIPHER_CTX_free(ctx)
    sealed[:] = 0
    return failures


@njit(nogil=True, cache=True)
def _start_value(
    ctx, keys, subject, current, nonce, associated_prefix, token_offsets, token_data, written
):
    """Key (only when the subject changes: a new key schedule), nonce and associated data of one
    value, for sealing or opening alike (the context keeps its direction); failed calls."""
    failures = 0
    if subject != current:
        key = keys.ctypes.data + subject * KEY_BYTES
        failures += EVP_CipherInit_ex(ctx, 0, 0, key, 0, -1) != 1
    failures += EVP_CipherInit_ex(ctx, 0, 0, 0, nonce, -1) != 1
    failures += EVP_CipherUpdate(
        ctx, 0, written.ctypes.data, associated_prefix.ctypes.data,
        np.int32(associated_prefix.shape[0]),
    ) != 1  # fmt: skip
    failures += EVP_CipherUpdate(
        ctx, 0, written.ctypes.data, token_data.ctypes.data + token_offsets[subject],
        np.int32(token_offsets[subject + 1] - token_offsets[subject]),
    ) != 1  # fmt: skip
    return failures


@njit(nogil=True, cache=True)
def _base64_into(source, count, out, at, alphabet):
    """Standard base64 (with padding) of source[:count] at out[at:]."""
    j = 0
    while j + 3 <= count:
        triple = (np.uint32(source[j]) << 16) | (np.uint32(source[j + 1]) << 8) | source[j + 2]
        out[at] = alphabet[(triple >> 18) & 63]
        out[at + 1] = alphabet[(triple >> 12) & 63]
        out[at + 2] = alphabet[(triple >> 6) & 63]
        out[at + 3] = alphabet[triple & 63]
        at += 4
        j += 3
    rest = count - j
    if rest:
        triple = np.uint32(source[j]) << 16
        if rest == 2:
            triple |= np.uint32(source[j + 1]) << 8
        out[at] = alphabet[(triple >> 18) & 63]
        out[at + 1] = alphabet[(triple >> 12) & 63]
        out[at + 2] = alphabet[(triple >> 6) & 63] if rest == 2 else 61  # '='
        out[at + 3] = 61


EVP_DecryptInit_ex = types.ExternalFunction(
    "EVP_DecryptInit_ex", _int(_address, _address, _address, _address, _address)
)
EVP_DecryptUpdate = types.ExternalFunction(
    "EVP_DecryptUpdate", _int(_address, _address, _address, _address, _int)
)
EVP_DecryptFinal_ex = types.ExternalFunction(
    "EVP_DecryptFinal_ex", _int(_address, _address, _address)
)
_GCM_SET_TAG = 0x11  # EVP_CTRL_AEAD_SET_TAG


def _base64_values() -> np.ndarray:
    table = np.full(256, -1, np.int16)
    for position, character in enumerate(_BASE64):
        table[character] = position
    return table


_BASE64_VALUES = _base64_values()


@njit(nogil=True, cache=True)
def open_values(
    keys,
    key_index,
    associated_prefix,
    token_offsets,
    token_data,
    offsets,
    data,
    valid,
    out_offsets,
    out,
    status,
    longest,
):
    """Plaintext of each valid ciphertext at out[out_offsets[i]:]; status[i] = 1 where a value
    is not strict base64 of format 1, or fails authentication (the caller decides what that
    means; nothing is written for it). Returns how many libcrypto calls failed otherwise."""
    raw = np.empty(longest + 4, np.uint8)
    written = np.zeros(1, np.int32)
    scratch = np.zeros(TAG_BYTES, np.uint8)
    values = _BASE64_VALUES
    ctx = EVP_CIPHER_CTX_new()
    if ctx == 0:
        return 1
    failures = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), 0, 0, 0) != 1
    current = -1
    for i in range(valid.shape[0]):
        if not valid[i]:
            continue
        size = _strict_base64_decode(data, offsets[i], offsets[i + 1], raw, values)
        if size < SEALED_OVERHEAD or raw[0] != CIPHERTEXT_FORMAT:
            status[i] = 1
            continue
        length = size - SEALED_OVERHEAD
        if length != out_offsets[i + 1] - out_offsets[i]:
            status[i] = 1
            continue
        subject = key_index[i]
        failures += _start_value(
            ctx, keys, subject, current, raw.ctypes.data + 1,
            associated_prefix, token_offsets, token_data, written,
        )  # fmt: skip
        current = subject
        body = 1 + NONCE_BYTES
        failures += EVP_DecryptUpdate(
            ctx, out.ctypes.data + out_offsets[i], written.ctypes.data,
            raw.ctypes.data + body, np.int32(length),
        ) != 1  # fmt: skip
        failures += EVP_CIPHER_CTX_ctrl(
            ctx, _GCM_SET_TAG, TAG_BYTES, raw.ctypes.data + body + length
        ) != 1  # fmt: skip
        if EVP_DecryptFinal_ex(ctx, scratch.ctypes.data, written.ctypes.data) <= 0:
            status[i] = 1
            for j in range(out_offsets[i], out_offsets[i + 1]):
                out[j] = 0  # unauthenticated plaintext is never returned
    EVP_CIPHER_CTX_free(ctx)
    raw[:] = 0
    return failures


@njit(nogil=True, cache=True)
def _strict_base64_decode(data, start, end, raw, values):
    """Bytes of standard, padded base64 data[start:end] into raw; -1 if it is not exactly
    that (wrong length, a character outside the alphabet, '=' anywhere but the last two)."""
    count = end - start
    if count == 0 or count % 4 != 0:
        return -1
    padding = 0
    if data[end - 1] == 61:
        padding = 2 if data[end - 2] == 61 else 1
    size = 0
    for group in range(start, end, 4):
        last = group + 4 == end
        triple = 0
        for k in range(4):
            character = data[group + k]
            if last and k >= 4 - padding:
                value = 0
            else:
                value = values[character]
                if value < 0:
                    return -1
            triple = (triple << 6) | value
        keep = 3 - padding if last else 3
        raw[size] = (triple >> 16) & 255
        if keep > 1:
            raw[size + 1] = (triple >> 8) & 255
        if keep > 2:
            raw[size + 2] = triple & 255
        size += keep
    return size
