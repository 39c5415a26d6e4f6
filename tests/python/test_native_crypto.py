"""The compiled crypto path gives exactly the keyring's formats, and falls back when it must."""

from __future__ import annotations

import base64
import os
import threading

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from privacy_lakehouse import keyring as keyring_module
from privacy_lakehouse import native_crypto
from privacy_lakehouse.keyring import KeyDestroyedError, Keyring, KeyringError

from .key_material import stored_secrets
from .test_keyring import PURPOSE, StaticProvider, reference_token

SWITCH = native_crypto.SWITCH_ENV
AAD_PREFIX = b"privacy_lakehouse/ciphertext/v1\x00"
VALUES = [
    "alice@example.com",
    None,
    "",
    "Zoë Ångström-Łukasiewicz",
    "\U0001f600 emoji",
    "x" * 5000,
    "alice@example.com",
    "tab\tnew\nline",
]


@pytest.fixture
def master_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def ring(tmp_path, master_key, monkeypatch):
    monkeypatch.delenv(SWITCH, raising=False)
    with Keyring(tmp_path / "keys" / "keyring.sqlite", StaticProvider(master_key)) as opened:
        yield opened


def data_key(ring: Keyring, subject: str) -> bytes:
    return stored_secrets(ring.store_path, ring._kek)[f"data:{subject}"]


def open_ciphertext(key: bytes, subject: str, ciphertext: str) -> str:
    raw = base64.b64decode(ciphertext, validate=True)
    assert raw[0] == 1 and len(raw) >= 1 + 12 + 16
    return AESGCM(key).decrypt(raw[1:13], raw[13:], AAD_PREFIX + subject.encode()).decode()


def test_the_compiled_path_is_available_here():
    """Numba and libcrypto are dependencies of the project: on its machines the fast path runs
    (the benchmark's figures depend on it)."""
    assert native_crypto.available()


def test_tokens_equal_the_reference_hmac(ring, monkeypatch):
    ring.token("warm-up")  # creates the salt
    salt = stored_secrets(ring.store_path, ring._kek)["salt:subject:1"]
    values = pa.array(VALUES)
    native = ring.tokens(values, "subject").to_pylist()
    expected = [None if v is None else reference_token(salt, 1, v) for v in VALUES]
    assert native == expected
    # Sliced, large and chunked inputs give the same tokens.
    assert ring.tokens(values.slice(3, 4), "subject").to_pylist() == expected[3:7]
    large = pa.array(VALUES, pa.large_string())
    assert ring.tokens(large, "subject").to_pylist() == expected
    chunked = pa.chunked_array([values.slice(0, 3), values.slice(3)])
    assert ring.tokens(chunked, "subject").to_pylist() == expected
    # The Python path agrees.
    monkeypatch.setenv(SWITCH, "off")
    ring._salt_states.clear()
    ring._salt_macs.clear()
    assert ring.tokens(values, "subject").to_pylist() == expected


def test_ciphertexts_open_with_the_subjects_key_and_bind_the_subject(ring):
    subjects = [ring.token(f"customer-{i % 3}") for i in range(len(VALUES))]
    sealed = ring.encrypt_many(pa.array(subjects), pa.array(VALUES)).to_pylist()
    assert [s is None for s in sealed] == [v is None for v in VALUES]
    for subject, value, ciphertext in zip(subjects, VALUES, sealed, strict=True):
        if value is None:
            continue
        assert open_ciphertext(data_key(ring, subject), subject, ciphertext) == value
        other = subjects[0] if subject != subjects[0] else subjects[1]
        with pytest.raises(Exception):  # noqa: B017 - InvalidTag: bound to its subject
            open_ciphertext(data_key(ring, subject), other, ciphertext)
    # Fresh nonces: the same value twice gives two ciphertexts.
    assert sealed[0] != sealed[6]
    nonces = {base64.b64decode(c)[1:13] for c in sealed if c is not None}
    assert len(nonces) == sum(v is not None for v in VALUES)
    # The keyring's own decryption (Python) reads them.
    plain = ring.decrypt_many(pa.array(subjects), pa.array(sealed), PURPOSE, "tester")
    assert plain.to_pylist() == VALUES


def test_sliced_and_large_inputs_encrypt_the_right_rows(ring):
    subjects = pa.array([ring.token(f"c{i}") for i in range(len(VALUES))], pa.large_string())
    values = pa.array(VALUES, pa.large_string())
    sealed = ring.encrypt_many(subjects.slice(2, 5), values.slice(2, 5))
    plain = ring.decrypt_many(subjects.slice(2, 5), sealed, PURPOSE, "tester").to_pylist()
    assert plain == VALUES[2:7]


def test_errors_are_those_of_the_python_path(ring):
    subject = ring.token("erased")
    ring.encrypt_many(pa.array([subject]), pa.array(["before"]))
    with pytest.raises(KeyringError, match="no subject token"):
        ring.encrypt_many(pa.array([None, subject], pa.string()), pa.array(["value", "x"]))
    # A null token is fine where the value is null.
    assert ring.encrypt_many(
        pa.array([None], pa.string()), pa.array([None], pa.string())
    ).to_pylist() == [None]
    ring.destroy_subject_key(subject)
    with pytest.raises(KeyDestroyedError) as caught:
        ring.encrypt_many(pa.array([subject]), pa.array(["secret after erasure"]))
    assert "secret after erasure" not in str(caught.value)
    assert ring.encrypt_many(pa.array([], pa.string()), pa.array([], pa.string())).to_pylist() == []


def test_switched_off_uses_the_python_path(ring, monkeypatch):
    ring.tokens(pa.array(["made while on"]), "subject")  # the salt's compiled states exist now

    def refuse(*args, **kwargs):
        raise AssertionError("the compiled path ran while switched off")

    monkeypatch.setattr(native_crypto, "seal_array", refuse)
    monkeypatch.setattr(native_crypto, "token_array", refuse)
    monkeypatch.setattr(native_crypto, "open_array", refuse)
    monkeypatch.setenv(SWITCH, "off")
    subject = ring.token("customer-1")
    sealed = ring.encrypt_many(pa.array([subject]), pa.array(["value"]))
    assert ring.decrypt_many(pa.array([subject]), sealed, PURPOSE, "t").to_pylist() == ["value"]
    assert ring.tokens(pa.array(["a"]), "subject").to_pylist() == [ring.token("a")]


def test_a_failed_known_answer_check_keeps_the_python_path(monkeypatch):
    monkeypatch.delenv(SWITCH, raising=False)
    monkeypatch.setattr(native_crypto, "_state", {})
    monkeypatch.setattr(native_crypto, "_known_answers_match", lambda: False)
    assert not native_crypto.available()
    assert keyring_module._native_inputs(pa.array(["v1:" + "0" * 32]), pa.array(["x"])) is None


def test_threads_encrypt_side_by_side(ring):
    """The loops run without the interpreter lock; each call has its own libcrypto context."""
    subjects = [ring.token(f"customer-{i}") for i in range(200)]
    ring.ensure_data_keys(subjects)
    results: dict[int, list[str]] = {}

    def work(n: int) -> None:
        values = pa.array([f"thread {n} value {i}" for i in range(len(subjects))])
        sealed = ring.encrypt_many(pa.array(subjects), values)
        results[n] = ring.decrypt_many(pa.array(subjects), sealed, PURPOSE, "t").to_pylist()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n in range(4):
        assert results[n] == [f"thread {n} value {i}" for i in range(len(subjects))]


def flipped(ciphertext: str, position: int) -> str:
    raw = bytearray(base64.b64decode(ciphertext))
    raw[position] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def python_path_error(ring, monkeypatch, subjects, texts) -> tuple[type, str]:
    monkeypatch.setenv(SWITCH, "off")
    try:
        with pytest.raises(Exception) as caught:  # noqa: B017 - compared below
            ring.decrypt_many(subjects, texts, PURPOSE, "t")
        return type(caught.value), str(caught.value)
    finally:
        monkeypatch.delenv(SWITCH)


def test_decryption_equals_the_python_path(ring, monkeypatch):
    subjects = [ring.token(f"customer-{i % 7}") for i in range(len(VALUES) * 3)]
    values = VALUES * 3
    sealed = ring.encrypt_many(pa.array(subjects), pa.array(values))

    def python_opened(*args):
        raise AssertionError("the compiled path handed a sound ciphertext to Python")

    with monkeypatch.context() as patched:
        patched.setattr(keyring_module, "_open_sealed", python_opened)
        native = ring.decrypt_many(pa.array(subjects), sealed, PURPOSE, "t").to_pylist()
    monkeypatch.setenv(SWITCH, "off")
    python = ring.decrypt_many(pa.array(subjects), sealed, PURPOSE, "t").to_pylist()
    assert native == python == values


def test_tampered_or_misspelled_ciphertexts_raise_the_python_paths_error(ring, monkeypatch):
    subject = ring.token("customer-1")
    good = ring.encrypt(subject, "alice@example.com")
    length = len(base64.b64decode(good))
    bad_values = [flipped(good, p) for p in (0, 1, 13, length - 1)]
    bad_values += [good[:-8], good[:-1], "not base64 at all!", "", "====", good + "\n"]
    for bad in bad_values:
        subjects, texts = pa.array([subject, subject]), pa.array([good, bad])
        expected = python_path_error(ring, monkeypatch, subjects, texts)
        with pytest.raises(expected[0]) as caught:
            ring.decrypt_many(subjects, texts, PURPOSE, "t")
        assert str(caught.value) == expected[1]
        assert "alice" not in str(caught.value)
    other = ring.token("customer-2")
    ring.encrypt(other, "x")
    with pytest.raises(keyring_module.TamperedCiphertextError):  # bound to its subject
        ring.decrypt_many(pa.array([other]), pa.array([good]), PURPOSE, "t")


def test_decrypting_nulls_and_shredded_subjects(ring):
    kept, erased = ring.token("kept"), ring.token("erased")
    sealed = ring.encrypt_many(pa.array([kept, erased, kept]), pa.array(["a", "b", None]))
    ring.destroy_subject_key(erased)
    tokens = pa.array([kept, erased, None], pa.string())
    texts = pa.array([sealed[0].as_py(), sealed[1].as_py(), None], pa.string())
    with pytest.raises(KeyDestroyedError):
        ring.decrypt_many(tokens, texts, PURPOSE, "t")
    opened = ring.decrypt_many(tokens, texts, PURPOSE, "t", destroyed_as_null=True)
    assert opened.to_pylist() == ["a", None, None]
    with pytest.raises(KeyringError, match="no subject token"):
        ring.decrypt_many(
            pa.array([None], pa.string()), pa.array([sealed[0].as_py()]), PURPOSE, "t"
        )
    unknown = ring.token("never-encrypted")
    with pytest.raises(keyring_module.KeyNotFoundError):
        ring.decrypt_many(pa.array([unknown]), pa.array([sealed[0].as_py()]), PURPOSE, "t")


def test_decryption_is_audited_per_distinct_subject(tmp_path, master_key, monkeypatch):
    monkeypatch.delenv(SWITCH, raising=False)
    heard = []
    store = tmp_path / "keys" / "keyring.sqlite"
    with Keyring(store, StaticProvider(master_key), on_decrypt=lambda *a: heard.append(a)) as ring:
        subjects = [ring.token(f"c{i % 3}") for i in range(9)]
        sealed = ring.encrypt_many(pa.array(subjects), pa.array([str(i) for i in range(9)]))
        ring.decrypt_many(pa.array(subjects), sealed, PURPOSE, "investigator")
    assert heard == [("investigator", PURPOSE, 3)]
