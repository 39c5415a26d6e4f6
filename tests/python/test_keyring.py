"""The keyring: tokens, envelope encryption, crypto-shredding, rotation, errors and the CLI."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac as std_hmac
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap
from privacy_lakehouse import keyring as keyring_module
from privacy_lakehouse.keyring import (
    DEV_KEY_WARNING,
    DevelopmentMasterKeyWarning,
    EnvMasterKeyProvider,
    KeyDestroyedError,
    KeyNotFoundError,
    Keyring,
    KeyringError,
    LocalKeyFileProvider,
    MasterKeyError,
    PurposeNotAllowedError,
    TamperedCiphertextError,
)
from privacy_lakehouse.settings import load_settings

from .key_material import secret_forms, stored_secrets

TOKEN_FORMAT = re.compile(r"v[0-9]+:[0-9a-f]{32}")
PURPOSE = "fraud_prevention"


class StaticProvider:
    """An in-memory master key provider: the pluggable interface, as a KMS adapter would use it."""

    def __init__(self, key: bytes, version: int = 1):
        self.key, self.version = key, version
        self.description = "test provider"

    def current(self) -> tuple[int, bytes]:
        return self.version, self.key

    def get(self, version: int) -> bytes:
        return self.key


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in (
        "PRIVACY_LAKEHOUSE_MASTER_KEY",
        "PRIVACY_LAKEHOUSE_NEW_MASTER_KEY",
        "PRIVACY_LAKEHOUSE_KEY_PROVIDER",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_HOME", str(tmp_path))
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_KEYS", str(tmp_path / "keys"))
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_TARGET", "test")


@pytest.fixture
def master_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "keys" / "keyring.sqlite"


@pytest.fixture
def ring(store_path, master_key):
    with Keyring(store_path, StaticProvider(master_key)) as opened:
        yield opened


def wrapped_data_key(store_path: Path, subject_token: str) -> bytes | None:
    db = sqlite3.connect(store_path)
    try:
        return db.execute(
            "SELECT d.wrapped_key FROM subject_keys s JOIN data_keys d USING (key_id) "
            "WHERE s.subject_token = ?",
            (subject_token,),
        ).fetchone()[0]
    finally:
        db.close()


def assert_no_secret(text: str, secrets: list[bytes]) -> None:
    assert secrets, "the scan needs secrets to look for"
    for secret in secrets:
        for form in secret_forms(secret):
            assert form not in text


def reference_token(salt: bytes, version: int, value: str) -> str:
    digest = std_hmac.new(salt, value.encode("utf-8"), hashlib.sha256).digest()
    return f"v{version}:{digest[:16].hex()}"


# ---- tokens --------------------------------------------------------------------------------


def test_token_is_truncated_hmac_of_the_stored_salt(ring, store_path, master_key):
    token = ring.token("customer-42")
    salt = stored_secrets(store_path, master_key)["salt:subject:1"]
    assert token == reference_token(salt, 1, "customer-42")
    assert TOKEN_FORMAT.fullmatch(token)
    assert ring.token("customer-42") == token  # deterministic
    assert ring.token("customer-43") != token


def test_token_nulls_empty_strings_and_salts(ring):
    assert ring.token(None) is None
    empty = ring.token("")
    assert empty is not None and TOKEN_FORMAT.fullmatch(empty)
    assert ring.token("alice", "email") != ring.token("alice", "subject")
    assert ring.token("Alice") != ring.token("alice")
    with pytest.raises(TypeError):
        ring.token(42)


def test_vectorised_tokens_match_scalar_tokens(ring):
    values = ["a", "b", None, "a", "", "ünïcødé ✓", "b", None]
    expected = [ring.token(v) for v in values]
    assert ring.tokens(pa.array(values)).to_pylist() == expected
    chunked = pa.chunked_array([values[:3], values[3:]], pa.string())
    assert ring.tokens(chunked).to_pylist() == expected
    assert ring.tokens(pa.array(values, pa.large_string())).to_pylist() == expected
    assert ring.tokens(pa.array([], pa.string())).to_pylist() == []


def test_unknown_salt_is_refused_when_creation_is_off(store_path, master_key):
    with Keyring(store_path, StaticProvider(master_key), create_missing_salts=False) as strict:
        with pytest.raises(KeyNotFoundError, match="salt 'subject' has no active version"):
            strict.token("x")
        strict.create_salt("subject")
        assert TOKEN_FORMAT.fullmatch(strict.token("x"))
        with pytest.raises(KeyringError, match="lowercase"):
            strict.token("x", "Bad Name; drop table")


# ---- encryption ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plaintext",
    ["alice@example.com", "", "Zoë Ñúñez — 東京 🚀", "x" * 100_000, "line\nbreak\x00nul"],
)
def test_encrypt_decrypt_round_trip(ring, plaintext):
    subject = ring.token("customer-1")
    ciphertext = ring.encrypt(subject, plaintext)
    assert plaintext == "" or plaintext not in ciphertext
    assert ring.decrypt(subject, ciphertext, PURPOSE, "tester") == plaintext


def test_ciphertext_layout_and_fresh_nonces(ring):
    subject = ring.token("customer-1")
    first, second = ring.encrypt(subject, "same"), ring.encrypt(subject, "same")
    assert first != second
    raw = base64.b64decode(first)
    assert raw[0] == 1 and len(raw) == 1 + 12 + len(b"same") + 16
    assert ring.encrypt(subject, None) is None
    assert ring.decrypt(subject, None, PURPOSE, "tester") is None


def test_batch_encrypt_and_decrypt(ring):
    subjects = [ring.token(f"customer-{i % 3}") for i in range(12)]
    values = [f"value {i}" if i % 5 else None for i in range(12)]
    ciphertexts = ring.encrypt_many(pa.array(subjects), pa.array(values))
    assert ciphertexts.null_count == values.count(None)
    plain = ring.decrypt_many(pa.array(subjects), ciphertexts, PURPOSE, "tester")
    assert plain.to_pylist() == values
    assert ring.status()["data_keys"]["active"] == 3


def test_the_aead_cache_is_bounded_and_evicted_keys_still_work(ring, store_path, monkeypatch):
    """Only recent subjects keep an AEAD object (they are large; the cache is emptied when full);
    the others are rebuilt from the cached key bytes, never from a new key. (The Python path:
    the compiled one keeps no AEAD objects.)"""
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_NATIVE_CRYPTO", "off")
    monkeypatch.setattr(keyring_module, "AEAD_CACHE_SIZE", 4)
    subjects = [ring.token(f"customer-{i}") for i in range(10)]
    first = ring.encrypt_many(pa.array(subjects), pa.array([f"v{i}" for i in range(10)]))
    assert 1 <= len(ring._aeads) <= 4
    stored = {s: wrapped_data_key(store_path, s) for s in subjects}
    again = ring.encrypt_many(pa.array(subjects), pa.array([f"w{i}" for i in range(10)]))
    assert {s: wrapped_data_key(store_path, s) for s in subjects} == stored
    assert 1 <= len(ring._aeads) <= 4 and ring.status()["data_keys"]["active"] == 10
    both = pa.concat_arrays([first, again])
    plain = ring.decrypt_many(pa.array(subjects * 2), both, PURPOSE, "tester").to_pylist()
    assert plain == [f"v{i}" for i in range(10)] + [f"w{i}" for i in range(10)]


def test_encrypting_needs_a_subject_token(ring):
    with pytest.raises(KeyringError) as caught:
        ring.encrypt("alice@example.com", "secret value")
    assert "alice" not in str(caught.value) and "secret value" not in str(caught.value)
    with pytest.raises(KeyringError, match="no subject token"):
        ring.encrypt_many([None], ["value"])


def flip(ciphertext: str, position: int) -> str:
    raw = bytearray(base64.b64decode(ciphertext))
    raw[position] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_tampered_ciphertext_is_rejected_without_revealing_anything(ring):
    subject = ring.token("customer-1")
    plaintext = "alice@example.com"
    ciphertext = ring.encrypt(subject, plaintext)
    length = len(base64.b64decode(ciphertext))
    tampered = [flip(ciphertext, p) for p in (0, 1, 13, length - 1)]
    tampered += [ciphertext[:-8], "not base64 at all!", ""]
    for bad in tampered:
        with pytest.raises(TamperedCiphertextError) as caught:
            ring.decrypt(subject, bad, PURPOSE, "tester")
        message = str(caught.value)
        assert plaintext not in message and ciphertext not in message
        assert bad == "" or bad not in message
    assert ring.decrypt(subject, ciphertext, PURPOSE, "tester") == plaintext


def test_ciphertext_of_one_subject_does_not_open_as_another(ring):
    alice, bob = ring.token("alice"), ring.token("bob")
    ring.encrypt(bob, "bob has a key too")
    ciphertext = ring.encrypt(alice, "alice@example.com")
    with pytest.raises(TamperedCiphertextError):
        ring.decrypt(bob, ciphertext, PURPOSE, "tester")


def test_unknown_subject_has_no_key(ring):
    subject = ring.token("never-encrypted")
    other = ring.token("other")
    ciphertext = ring.encrypt(other, "x")
    with pytest.raises(KeyNotFoundError):
        ring.decrypt(subject, ciphertext, PURPOSE, "tester")


def test_decryption_is_purpose_gated_and_audited(store_path, master_key):
    calls = []
    with Keyring(
        store_path,
        StaticProvider(master_key),
        allowed_purposes={"fraud_prevention"},
        on_decrypt=lambda actor, purpose, count: calls.append((actor, purpose, count)),
    ) as ring:
        subjects = [ring.token(s) for s in ("a", "b", "a", "c")]
        ciphertexts = ring.encrypt_many(subjects, ["1", "2", "3", None])
        with pytest.raises(PurposeNotAllowedError, match="'marketing' is not allowed"):
            ring.decrypt_many(subjects, ciphertexts, "marketing", "analyst")
        with pytest.raises(PurposeNotAllowedError):
            ring.decrypt_many(subjects, ciphertexts, "erasure_verification", "analyst")
        assert calls == []
        plain = ring.decrypt_many(subjects, ciphertexts, "fraud_prevention", "investigator")
        assert plain.to_pylist() == ["1", "2", "3", None]
        assert calls == [("investigator", "fraud_prevention", 2)]  # 'c' had nothing to decrypt
        with pytest.raises(KeyringError, match="actor"):
            ring.decrypt(subjects[0], ciphertexts[0].as_py(), "fraud_prevention", "")


def test_a_failing_audit_stops_decryption(store_path, master_key):
    def audit_down(actor, purpose, count):
        raise RuntimeError("audit log unavailable")

    with Keyring(store_path, StaticProvider(master_key), on_decrypt=audit_down) as ring:
        subject = ring.token("a")
        ciphertext = ring.encrypt(subject, "value")
        with pytest.raises(RuntimeError, match="audit log unavailable"):
            ring.decrypt(subject, ciphertext, PURPOSE, "tester")


def test_default_purposes():
    assert Keyring.__init__.__kwdefaults__["allowed_purposes"] == frozenset(
        {"fraud_prevention", "erasure_verification"}
    )


def test_two_keyrings_and_threads_share_one_key_per_subject(store_path, master_key):
    with (
        Keyring(store_path, StaticProvider(master_key)) as first,
        Keyring(store_path, StaticProvider(master_key)) as second,
    ):
        subjects = [first.token(f"customer-{i}") for i in range(200)]
        errors = []

        def encrypt_all(ring):
            try:
                ring.encrypt_many(subjects, ["v"] * len(subjects))
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=encrypt_all, args=(r,)) for r in [first, second] * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert first.status()["data_keys"]["active"] == 200
        ciphertext = first.encrypt(subjects[7], "from first")
        assert second.decrypt(subjects[7], ciphertext, PURPOSE, "tester") == "from first"


# ---- data keys in bulk ---------------------------------------------------------------------


def open_with_stored_key(stored: dict[str, bytes], token: str, ciphertext: str) -> str:
    """Decrypt with the data key the store holds for `token`, without the keyring's code."""
    raw = base64.b64decode(ciphertext)
    associated = b"privacy_lakehouse/ciphertext/v1\x00" + token.encode("ascii")
    return AESGCM(stored[f"data:{token}"]).decrypt(raw[1:13], raw[13:], associated).decode()


def test_keys_made_chunk_by_chunk_are_distinct_stored_and_readable(store_path, master_key):
    with Keyring(store_path, StaticProvider(master_key)) as ring:
        tokens = ring.tokens(pa.array([f"customer-{i}" for i in range(2500)])).to_pylist()
        rows: list[tuple[str, str | None]] = []
        ciphertexts: list[str | None] = []
        # Chunks as DuckDB passes them: overlapping subjects, a repeated subject, null values.
        for chunk in (range(0, 1000), range(900, 2000), range(1500, 2500)):
            chunk_rows = [(tokens[i], None if i % 10 == 3 else f"value {i}") for i in chunk]
            chunk_rows.append((tokens[chunk[0]], "again"))
            chunk_tokens, values = zip(*chunk_rows, strict=True)
            ciphertexts += ring.encrypt_many(pa.array(chunk_tokens), pa.array(values)).to_pylist()
            rows += chunk_rows
    with_values = {token for token, value in rows if value is not None}
    assert len(with_values) == 2250  # a subject with only null values gets no key

    db = sqlite3.connect(store_path)
    try:
        links = dict(db.execute("SELECT subject_token, key_id FROM subject_keys").fetchall())
        stored_rows = db.execute(
            "SELECT key_id, length(wrapped_key), kek_version, state, created_at FROM data_keys"
        ).fetchall()
    finally:
        db.close()
    assert set(links) == with_values
    assert sorted(links.values()) == sorted(row[0] for row in stored_rows)  # one key per subject
    assert {row[1:4] for row in stored_rows} == {(40, 1, "active")}
    assert all(datetime.fromisoformat(row[4]) for row in stored_rows)
    # The key stored for each token is the key its ciphertext was made with, and keys differ.
    stored = stored_secrets(store_path, master_key)
    assert len(set(stored.values())) == len(stored) == 2250 + 1  # and the subject salt
    for (token, value), ciphertext in zip(rows, ciphertexts, strict=True):
        assert (ciphertext is None) == (value is None)
        if ciphertext is not None:
            assert open_with_stored_key(stored, token, ciphertext) == value
    with Keyring(store_path, StaticProvider(master_key)) as reopened:
        row_tokens = [token for token, _ in rows]
        plain = reopened.decrypt_many(row_tokens, ciphertexts, PURPOSE, "tester")
        assert plain.to_pylist() == [value for _, value in rows]
        # Existing keys are found, not replaced, when the new object encrypts for the subjects.
        again = reopened.encrypt_many(row_tokens, [value for _, value in rows]).to_pylist()
        assert reopened.status()["data_keys"]["active"] == 2250
    for (token, value), ciphertext in zip(rows, again, strict=True):
        if ciphertext is not None:
            assert open_with_stored_key(stored, token, ciphertext) == value


def test_a_bad_token_or_value_in_a_chunk_is_refused_before_any_key_is_made(ring):
    good = [ring.token(f"customer-{i}") for i in range(5)]
    for bad in (good[0] + "\n", good[0].upper(), "alice@example.com", 42, good[0].encode()):
        with pytest.raises(KeyringError) as caught:
            ring.encrypt_many([*good, bad], ["value"] * 6)
        assert "alice" not in str(caught.value) and "customer" not in str(caught.value)
    with pytest.raises(TypeError, match="must be str or None, not int"):
        ring.encrypt_many(good, ["a", "b", 3, "d", "e"])
    assert ring.status()["data_keys"]["active"] == 0

    class Text(str):
        pass

    ciphertexts = ring.encrypt_many(good, [Text("a"), None, "c", Text("d"), "e"])
    plain = ring.decrypt_many(good, ciphertexts, PURPOSE, "t").to_pylist()
    assert plain == ["a", None, "c", "d", "e"]
    assert ring.status()["data_keys"]["active"] == 4


def test_a_keyring_uses_keys_another_keyring_made_after_it_opened(store_path, master_key):
    with (
        Keyring(store_path, StaticProvider(master_key)) as first,
        Keyring(store_path, StaticProvider(master_key)) as second,
    ):
        tokens = [first.token(f"customer-{i}") for i in range(300)]
        values = [f"value {i}" for i in range(300)]
        from_first = first.encrypt_many(tokens[:200], values[:200])
        # `second` has none of these keys cached: 200 exist in the store, 100 are new.
        from_second = second.encrypt_many(tokens, values)
        assert second.status()["data_keys"]["active"] == 300
        assert (
            second.decrypt_many(tokens[:200], from_first, PURPOSE, "t").to_pylist()
            == (values[:200])
        )
        assert first.decrypt_many(tokens, from_second, PURPOSE, "t").to_pylist() == values


def test_ensuring_keys_creates_only_missing_ones_and_caches_the_rest_as_bytes(
    store_path, master_key, monkeypatch
):
    with (
        Keyring(store_path, StaticProvider(master_key)) as first,
        Keyring(store_path, StaticProvider(master_key)) as second,
    ):
        tokens = [first.token(f"customer-{i}") for i in range(500)]
        assert first.ensure_data_keys(tokens[:300]) == 300
        first.destroy_subject_key(tokens[0])
        stored_before = {t: wrapped_data_key(store_path, t) for t in tokens[:300]}
        # `second` has nothing cached: 299 keys exist, one is destroyed, 200 are new.
        assert second.ensure_data_keys([*tokens, None]) == 500
        assert second.status()["data_keys"]["active"] == 499
        assert {t: wrapped_data_key(store_path, t) for t in tokens[:300]} == stored_before
        assert wrapped_data_key(store_path, tokens[0]) is None  # destroyed stays destroyed
        # Live keys are cached as raw bytes, the destroyed one is not; no AES-GCM object
        # (2.4 KB each) is made until something is encrypted.
        assert set(second._data_key_bytes) == set(tokens[1:])
        assert all(len(key) == 32 for key in second._data_key_bytes.values())
        assert len(second._aeads) == 0

        # Encrypting the ensured subjects never goes back to the store.
        def no_store_lookup(*args, **kwargs):
            raise AssertionError("the key store was read again")

        with monkeypatch.context() as patch:
            patch.setattr(keyring_module, "_select_data_keys", no_store_lookup)
            sealed = second.encrypt_many(tokens[1:], ["v"] * 499)
        assert first.decrypt_many(tokens[1:], sealed, PURPOSE, "t").to_pylist() == ["v"] * 499
        with pytest.raises(KeyDestroyedError):
            second.encrypt_many(tokens[:1], ["v"])


def test_a_large_lookup_reads_the_store_in_order_and_finds_the_same_keys(
    store_path, master_key, monkeypatch
):
    with Keyring(store_path, StaticProvider(master_key)) as ring:
        tokens = [ring.token(f"customer-{i}") for i in range(400)]
        ring.ensure_data_keys(tokens[:300])
        ring.destroy_subject_key(tokens[5])
    wanted = tokens[100:]  # 200 with keys (one destroyed), 100 without
    db = sqlite3.connect(store_path)
    try:
        probed = keyring_module._select_data_keys(db, wanted)
        monkeypatch.setattr(keyring_module, "_SCAN_STORE_FROM", 10)
        scanned = keyring_module._select_data_keys(db, wanted)
        # A quarter of the store or less is still probed token by token.
        few = keyring_module._select_data_keys(db, tokens[:20])
    finally:
        db.close()
    assert sorted(scanned) == sorted(probed)
    assert {row[0] for row in scanned} == set(tokens[100:300])
    assert len(few) == 20 and {row[0] for row in few} == set(tokens[:20])
    assert [row[1] for row in few if row[0] == tokens[5]] == [None]


CONCURRENT_ENCRYPTER = """
import json, sys
from privacy_lakehouse.keyring import EnvMasterKeyProvider, Keyring

store, reverse = sys.argv[1], sys.argv[2] == "reverse"
with Keyring(store, EnvMasterKeyProvider("TEST_MASTER_KEY")) as ring:
    tokens = [ring.token(f"customer-{i}") for i in range(3000)]
    starts = list(range(0, 3000, 250))
    out = {}
    for start in reversed(starts) if reverse else starts:
        chunk = tokens[start : start + 500]  # chunks overlap, and the processes run opposite ways
        sealed = ring.encrypt_many(chunk, [f"value {token}" for token in chunk]).to_pylist()
        out.update(zip(chunk, sealed))
print(json.dumps(out))
"""


def test_concurrent_processes_make_one_key_per_subject(store_path, master_key):
    environment = {**os.environ, "TEST_MASTER_KEY": base64.b64encode(master_key).decode()}
    with Keyring(store_path, StaticProvider(master_key)) as ring:
        ring.create_salt("subject")  # the processes race for data keys, not for the salt
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_ENCRYPTER, str(store_path), direction],
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        for direction in ("forward", "reverse", "forward")
    ]
    results = []
    for worker in workers:
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        results.append(json.loads(output))
    with Keyring(store_path, StaticProvider(master_key)) as ring:
        assert ring.status()["data_keys"] == {
            "active": 3000,
            "destroyed": 0,
            "subject_tokens": 3000,
        }
        for result in results:
            tokens = list(result)
            plain = ring.decrypt_many(tokens, list(result.values()), PURPOSE, "t").to_pylist()
            assert plain == [f"value {token}" for token in tokens]


def test_keys_of_a_failed_transaction_are_never_used(store_path, master_key, monkeypatch):
    connect = keyring_module._connect_store

    def impatient_connect(path):
        db = connect(path)
        db.execute("PRAGMA busy_timeout = 200")  # the default 30 s would only slow the test
        return db

    monkeypatch.setattr(keyring_module, "_connect_store", impatient_connect)
    with Keyring(store_path, StaticProvider(master_key)) as ring:
        other = sqlite3.connect(store_path, isolation_level=None)
        tokens = [ring.token(f"customer-{i}") for i in range(50)]
        values = [f"value {i}" for i in range(50)]
        # A failure inside the transaction, after the data keys are inserted.
        other.execute(
            "CREATE TRIGGER refuse_links BEFORE INSERT ON subject_keys "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        with pytest.raises(sqlite3.IntegrityError):
            ring.encrypt_many(tokens, values)
        other.execute("DROP TRIGGER refuse_links")
        # A failure at COMMIT: a reader holds its lock past the busy timeout.
        other.execute("BEGIN")
        other.execute("SELECT count(*) FROM data_keys").fetchone()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            ring.encrypt_many(tokens, values)
        other.execute("ROLLBACK")
        assert ring.status()["data_keys"]["active"] == 0  # both attempts were rolled back
        ciphertexts = ring.encrypt_many(tokens, values)  # the keyring is still usable
        assert ring.status()["data_keys"]["active"] == 50
    other.close()
    # Had a key of a failed attempt been cached, this ciphertext would not open from the store.
    with Keyring(store_path, StaticProvider(master_key)) as reopened:
        assert reopened.decrypt_many(tokens, ciphertexts, PURPOSE, "t").to_pylist() == values


def test_no_new_key_is_wrapped_by_a_master_key_rotated_away(store_path, master_key):
    new_master_key = os.urandom(32)
    with (
        Keyring(store_path, StaticProvider(master_key)) as stale,
        Keyring(store_path, StaticProvider(master_key)) as rotating,
    ):
        subject = stale.token("customer-1")
        stale.encrypt(subject, "before")
        rotating.rotate_master_key(new_master_key)
        with pytest.raises(MasterKeyError, match="reopen"):
            stale.encrypt(stale.token("customer-2"), "after")
    with Keyring(store_path, StaticProvider(new_master_key)) as reopened:
        assert reopened.status()["data_keys"]["active"] == 1
        later = reopened.token("customer-2")
        ciphertext = reopened.encrypt(later, "after")
        assert reopened.decrypt(later, ciphertext, PURPOSE, "t") == "after"
    # Every key unwraps under the new master key (stored_secrets raises on any other wrapping).
    assert set(stored_secrets(store_path, new_master_key)) == {
        "salt:subject:1",
        f"data:{subject}",
        f"data:{later}",
    }


# ---- master key ----------------------------------------------------------------------------


def test_wrong_master_key_fails_clearly(store_path, master_key, ring):
    ring.encrypt(ring.token("a"), "value")
    wrong = os.urandom(32)
    with pytest.raises(MasterKeyError, match="does not open the key store") as caught:
        Keyring(store_path, StaticProvider(wrong))
    assert_no_secret(str(caught.value), [wrong, master_key])


def test_master_key_from_environment(monkeypatch, master_key):
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_MASTER_KEY", base64.b64encode(master_key).decode())
    with Keyring.open(load_settings()) as ring:
        assert ring.master_key_source == "environment variable PRIVACY_LAKEHOUSE_MASTER_KEY"
        subject = ring.token("a")
        ciphertext = ring.encrypt(subject, "value")
    # The same key, written URL-safe and unpadded, opens the same store.
    monkeypatch.setenv(
        "PRIVACY_LAKEHOUSE_MASTER_KEY", base64.urlsafe_b64encode(master_key).decode().rstrip("=")
    )
    with Keyring.open(load_settings()) as ring:
        assert ring.decrypt(subject, ciphertext, PURPOSE, "tester") == "value"
    assert not (load_settings().keys_dir / "master.key").exists()


@pytest.mark.parametrize("bad", ["not-base64!!", base64.b64encode(b"short").decode(), "   "])
def test_malformed_environment_key(monkeypatch, bad):
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_MASTER_KEY", bad)
    with pytest.raises(MasterKeyError) as caught:
        EnvMasterKeyProvider()
    assert "PRIVACY_LAKEHOUSE_MASTER_KEY" in str(caught.value)
    assert bad.strip() == "" or bad not in str(caught.value)


def test_pluggable_provider_from_environment(monkeypatch, master_key):
    module = type(os)("fake_kms_provider")
    module.make = lambda settings: StaticProvider(master_key)
    monkeypatch.setitem(__import__("sys").modules, "fake_kms_provider", module)
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_KEY_PROVIDER", "fake_kms_provider:make")
    with Keyring.open() as ring:
        assert ring.master_key_source == "test provider"
        token = ring.token("x")
    with Keyring.open_default() as ring:  # the name duckdb_setup uses
        assert ring.token("x") == token
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_KEY_PROVIDER", "no-colon")
    with pytest.raises(MasterKeyError, match="package.module:factory"):
        Keyring.open()
    # A provider that cannot be imported or built is one clear error naming the variable.
    for spec in ("no_such_module_here:make", "os:getcwd"):
        monkeypatch.setenv("PRIVACY_LAKEHOUSE_KEY_PROVIDER", spec)
        with pytest.raises(MasterKeyError, match="could not make a key provider"):
            Keyring.open()


def test_local_key_file_is_private_even_with_an_open_umask(tmp_path):
    previous = os.umask(0)
    try:
        with Keyring.open() as ring:
            ring.encrypt(ring.token("a"), "value")
    finally:
        os.umask(previous)
    keys_dir = tmp_path / "keys"
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys_dir / "master.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((keys_dir / "keyring.sqlite").stat().st_mode) == 0o600
    assert (keys_dir / ".gitignore").read_text().splitlines()[-1] == "*"
    document = json.loads((keys_dir / "master.key").read_text())
    assert [entry["version"] for entry in document["keys"]] == [1]
    assert len(base64.b64decode(document["keys"][0]["key"])) == 32


def test_local_key_file_warns_outside_dev_and_test(monkeypatch, tmp_path):
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_TARGET", "prod")
    with pytest.warns(DevelopmentMasterKeyWarning) as caught:
        Keyring.open().close()
    assert str(caught[0].message).startswith(DEV_KEY_WARNING)
    assert DEV_KEY_WARNING == "privacy_lakehouse: using the local development master key file"
    for target in ("dev", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            LocalKeyFileProvider(tmp_path / "keys" / "master.key", target)


def test_master_key_rotation_rewraps_keys_and_retires_the_old_key(store_path, master_key, ring):
    subjects = [ring.token(f"customer-{i}") for i in range(3)]
    rows = [(subjects[i % 3], f"row {i}") for i in range(300)]
    ciphertexts = [ring.encrypt(subject, value) for subject, value in rows]
    tokens_before = ring.tokens(pa.array([f"customer-{i}" for i in range(3)])).to_pylist()
    ring.token("x", "email")
    wrapped_before = {t: wrapped_data_key(store_path, t) for t in subjects}
    data_keys_before = stored_secrets(store_path, master_key)

    new_key = os.urandom(32)
    evidence = ring.rotate_master_key(new_key)

    # Work is per key, not per row: 3 subjects for 300 rows, 2 salts.
    assert evidence["data_keys_rewrapped"] == 3
    assert evidence["salt_versions_rewrapped"] == 2
    assert (evidence["master_key_version_before"], evidence["master_key_version_after"]) == (1, 2)
    assert "action_required" in evidence
    # The keys themselves are unchanged; only their wrapping changed.
    assert stored_secrets(store_path, new_key) == data_keys_before
    for subject in subjects:
        wrapped = wrapped_data_key(store_path, subject)
        assert wrapped != wrapped_before[subject]
        with pytest.raises(InvalidUnwrap):
            aes_key_unwrap(master_key, wrapped)
    # Every subject still decrypts, in this keyring and in a new one with the new key.
    with Keyring(store_path, StaticProvider(new_key)) as reopened:
        for (subject, value), ciphertext in zip(rows, ciphertexts, strict=True):
            assert reopened.decrypt(subject, ciphertext, PURPOSE, "tester") == value
        assert reopened.tokens(pa.array([f"customer-{i}" for i in range(3)])).to_pylist() == (
            tokens_before
        )
    assert ring.decrypt(subjects[0], ciphertexts[0], PURPOSE, "tester") == "row 0"
    # The old master key opens nothing, and says why.
    with pytest.raises(MasterKeyError, match="retired") as caught:
        Keyring(store_path, StaticProvider(master_key))
    assert_no_secret(str(caught.value) + json.dumps(evidence), [master_key, new_key])
    with pytest.raises(MasterKeyError, match="used before"):
        ring.rotate_master_key(master_key)
    with pytest.raises(MasterKeyError, match="needs the new key"):
        ring.rotate_master_key()


def test_rotation_cost_does_not_depend_on_rows(tmp_path, master_key):
    counts = []
    for rows_per_subject in (1, 200):
        with Keyring(tmp_path / f"r{rows_per_subject}.sqlite", StaticProvider(master_key)) as ring:
            subjects = [ring.token(f"c{i}") for i in range(5)]
            ring.encrypt_many(subjects * rows_per_subject, ["v"] * 5 * rows_per_subject)
            counts.append(ring.rotate_master_key(os.urandom(32))["data_keys_rewrapped"])
    assert counts == [5, 5]


def test_rotation_with_the_local_key_file(tmp_path):
    with Keyring.open() as ring:
        subject = ring.token("a")
        ciphertext = ring.encrypt(subject, "value")
        key_file = tmp_path / "keys" / "master.key"
        old_file = key_file.read_bytes()
        evidence = ring.rotate_master_key()
        assert evidence["master_key_version_after"] == 2 and "action_required" not in evidence
    document = json.loads(key_file.read_text())
    assert [entry["version"] for entry in document["keys"]] == [2]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with Keyring.open() as ring:
        assert ring.decrypt(subject, ciphertext, PURPOSE, "tester") == "value"
    key_file.write_bytes(old_file)  # someone restores the old key file
    with pytest.raises(MasterKeyError, match="no longer opens|does not open"):
        Keyring.open()


def test_a_missing_key_file_beside_an_existing_store_is_refused_and_never_made_anew(tmp_path):
    with Keyring.open() as ring:
        subject = ring.token("a")
        ring.encrypt(subject, "value")
    keys_dir = tmp_path / "keys"
    key_file, store = keys_dir / "master.key", keys_dir / "keyring.sqlite"
    old_key = base64.b64decode(json.loads(key_file.read_text())["keys"][0]["key"])
    key_file.unlink()
    store_bytes = store.read_bytes()
    with pytest.raises(keyring_module.MissingMasterKeyError) as caught:
        Keyring.open()
    message = str(caught.value)
    assert "master key of the existing key store" in message and "\n" not in message
    for remedy in ("PRIVACY_LAKEHOUSE_MASTER_KEY", "PRIVACY_LAKEHOUSE_KEY_PROVIDER", "restore"):
        assert remedy in message
    assert_no_secret(message, [old_key, *stored_secrets(store, old_key).values()])
    assert not key_file.exists()
    assert sorted(p.name for p in keys_dir.iterdir()) == [".gitignore", "keyring.sqlite"]
    assert store.read_bytes() == store_bytes
    # The provider itself never makes the file for a version a store asks for, nor to rotate.
    provider = LocalKeyFileProvider(key_file, "test")
    for call in (lambda: provider.get(1), lambda: provider.add(2, os.urandom(32))):
        with pytest.raises(keyring_module.MissingMasterKeyError):
            call()
    assert not key_file.exists()


# ---- salts ---------------------------------------------------------------------------------


def test_salt_rotation_changes_tokens_and_joins_still_hold(ring, store_path, master_key):
    customers = [f"customer-{i}" for i in range(20)]
    old_tokens = ring.tokens(pa.array(customers)).to_pylist()
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    evidence = ring.rotate_salt("subject", grace=timedelta(days=7), now=now)
    assert evidence["version_before"] == 1 and evidence["version_after"] == 2
    assert evidence["retire_after"] == "2030-01-08T00:00:00+00:00"

    new_tokens = ring.tokens(pa.array(customers)).to_pylist()
    assert all(t.startswith("v2:") for t in new_tokens)
    assert set(new_tokens).isdisjoint(old_tokens)
    # Two tables tokenized separately with the new version still join on every customer.
    accounts = pa.table({"owner": ring.tokens(pa.array(customers[::-1])), "n": range(20)})
    people = pa.table({"owner": ring.tokens(pa.array(customers)), "name": customers})
    joined = accounts.join(people, "owner")
    assert joined.num_rows == 20
    pairs = set(zip(joined["n"].to_pylist(), joined["name"].to_pylist(), strict=True))
    assert pairs == {(i, customers[19 - i]) for i in range(20)}
    salt_v2 = stored_secrets(store_path, master_key)["salt:subject:2"]
    assert new_tokens[0] == reference_token(salt_v2, 2, customers[0])

    # During the grace period the old version still reproduces the old tokens.
    assert ring.token(customers[0], version=1) == old_tokens[0]
    assert ring.token_versions(customers[0]) == {1: old_tokens[0], 2: new_tokens[0]}
    early = ring.destroy_retired_salts(now + timedelta(days=6))
    assert early["destroyed"] == [] and early["still_in_grace"][0]["version"] == 1

    wrapped_v1 = (
        sqlite3.connect(store_path)
        .execute("SELECT wrapped_secret FROM salts WHERE name = 'subject' AND version = 1")
        .fetchone()[0]
    )
    assert wrapped_v1 in store_path.read_bytes()  # the scan below can find what is there
    done = ring.destroy_retired_salts(now + timedelta(days=7))
    assert done["destroyed"] == [
        {"salt": "subject", "version": 1, "retire_after": "2030-01-08T00:00:00+00:00"}
    ]
    with pytest.raises(KeyDestroyedError, match="salt 'subject' version 1 was destroyed"):
        ring.token(customers[0], version=1)
    assert wrapped_v1 not in store_path.read_bytes()
    assert ring.token_versions(customers[0]) == {2: new_tokens[0]}
    assert [s["state"] for s in ring.status()["salts"]] == ["destroyed", "active"]


def test_rotating_an_unknown_salt_fails(ring):
    with pytest.raises(KeyNotFoundError):
        ring.rotate_salt("nope")


# ---- crypto-shredding ----------------------------------------------------------------------


def test_destroying_a_subject_key_shreds_their_ciphertext(ring, store_path, master_key):
    alice, bob = ring.token("alice"), ring.token("bob")
    alice_ciphertext = ring.encrypt(alice, "alice@example.com")
    bob_ciphertext = ring.encrypt(bob, "bob@example.com")
    alice_wrapped = wrapped_data_key(store_path, alice)
    bob_wrapped = wrapped_data_key(store_path, bob)
    assert alice_wrapped in store_path.read_bytes()

    evidence = ring.destroy_subject_key(alice)
    assert evidence["data_keys_destroyed"] == 1 and evidence["subjects_requested"] == 1

    with pytest.raises(KeyDestroyedError) as caught:
        ring.decrypt(alice, alice_ciphertext, PURPOSE, "tester")
    assert "alice" not in str(caught.value)
    with pytest.raises(KeyDestroyedError):
        ring.encrypt(alice, "re-ingested value")  # no fresh key for an erased subject
    assert ring.decrypt(bob, bob_ciphertext, PURPOSE, "tester") == "bob@example.com"
    shredded = ring.decrypt_many(
        [alice, bob], [alice_ciphertext, bob_ciphertext], PURPOSE, "t", destroyed_as_null=True
    )
    assert shredded.to_pylist() == [None, "bob@example.com"]

    data = store_path.read_bytes()
    assert alice_wrapped not in data and bob_wrapped in data
    assert not Path(f"{store_path}-journal").exists()
    with Keyring(store_path, StaticProvider(master_key)) as reopened:
        with pytest.raises(KeyDestroyedError):
            reopened.decrypt(alice, alice_ciphertext, PURPOSE, "tester")


def test_destroyed_keys_are_overwritten_in_the_key_store_file(ring, store_path):
    # Enough keys to span many pages: without secure_delete, SQLite leaves some freed cells intact.
    subjects = [ring.token(f"customer-{i}") for i in range(300)]
    ring.encrypt_many(subjects, ["v"] * len(subjects))
    wrapped = {subject: wrapped_data_key(store_path, subject) for subject in subjects}
    doomed = set(subjects[1::7])
    evidence = ring.destroy_subject_keys(doomed)
    assert evidence["data_keys_destroyed"] == len(doomed)
    data = store_path.read_bytes()
    for subject, key_bytes in wrapped.items():
        assert (key_bytes in data) == (subject not in doomed)
    assert not Path(f"{store_path}-wal").exists()


def test_batch_destroy_in_one_call(ring):
    subjects = [ring.token(f"c{i}") for i in range(10)]
    ciphertexts = ring.encrypt_many(subjects, ["v"] * 10).to_pylist()
    ring.destroy_subject_key(subjects[0])
    never = ring.token("never-encrypted")
    evidence = ring.destroy_subject_keys(subjects[:5] + [subjects[1], never])
    assert evidence["subjects_requested"] == 6
    assert evidence["data_keys_destroyed"] == 4
    assert evidence["already_destroyed"] == 1
    assert evidence["subjects_without_key"] == 1
    plain = ring.decrypt_many(subjects, ciphertexts, PURPOSE, "t", destroyed_as_null=True)
    assert plain.to_pylist() == [None] * 5 + ["v"] * 5
    assert ring.status()["data_keys"] == {"active": 5, "destroyed": 5, "subject_tokens": 10}


def test_shredding_reaches_old_delta_versions(ring, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    subjects = [ring.token(f"customer-{i}") for i in range(4)]
    emails = [f"person{i}@example.com" for i in range(4)]
    table = pa.table({"subject": subjects, "email_enc": ring.encrypt_many(subjects, emails)})
    path = str(tmp_path / "bronze_customers")
    write_deltalake(path, table)
    DeltaTable(path).delete(f"subject = '{subjects[0]}'")  # predicate by token only
    ring.destroy_subject_key(subjects[0])

    for version in (0, 1):
        old = DeltaTable(path, version=version).to_pyarrow_table().sort_by("subject")
        plain = dict(
            zip(
                old["subject"].to_pylist(),
                ring.decrypt_many(
                    old["subject"], old["email_enc"], PURPOSE, "t", destroyed_as_null=True
                ).to_pylist(),
                strict=True,
            )
        )
        assert (subjects[0] in plain) == (version == 0)
        assert plain.get(subjects[0]) is None
        assert plain[subjects[1]] == emails[1]
        if version == 0:
            row = old["subject"].to_pylist().index(subjects[0])
            with pytest.raises(KeyDestroyedError):
                ring.decrypt(subjects[0], old["email_enc"][row].as_py(), PURPOSE, "t")


def test_linked_tokens_share_the_subject_key(ring):
    old_token = ring.token("customer-1")
    old_ciphertext = ring.encrypt(old_token, "kept from before the salt rotation")
    ring.rotate_salt("subject")
    new_token = ring.token("customer-1")
    assert new_token != old_token
    evidence = ring.link_subject_tokens([(old_token, new_token)])
    assert evidence["links_added"] == 1
    assert ring.link_subject_tokens([(old_token, new_token)])["already_linked"] == 1
    new_ciphertext = ring.encrypt(new_token, "after")
    assert ring.status()["data_keys"] == {"active": 1, "destroyed": 0, "subject_tokens": 2}
    # The binding to the token still holds: each ciphertext opens with the token it was made for.
    with pytest.raises(TamperedCiphertextError):
        ring.decrypt(new_token, old_ciphertext, PURPOSE, "t")
    ring.destroy_subject_key(new_token)  # erasure by the current token...
    with pytest.raises(KeyDestroyedError):  # ...shreds the old rows too
        ring.decrypt(old_token, old_ciphertext, PURPOSE, "t")
    with pytest.raises(KeyDestroyedError):
        ring.decrypt(new_token, new_ciphertext, PURPOSE, "t")


# ---- no secret anywhere --------------------------------------------------------------------


def test_no_key_material_in_evidence_status_logs_or_errors(store_path, master_key, caplog):
    caplog.set_level("DEBUG")
    texts = []
    with Keyring(store_path, StaticProvider(master_key)) as ring:
        subjects = [ring.token(f"c{i}") for i in range(3)]
        ciphertexts = ring.encrypt_many(subjects, ["a", "b", "c"]).to_pylist()
        ring.token("x", "email")
        secrets = list(stored_secrets(store_path, master_key).values()) + [master_key]
        texts.append(json.dumps(ring.status()))
        texts.append(json.dumps(ring.rotate_salt("email")))
        secrets += list(stored_secrets(store_path, master_key).values())
        texts.append(json.dumps(ring.destroy_retired_salts(datetime(2100, 1, 1))))
        texts.append(json.dumps(ring.destroy_subject_key(subjects[0])))
        failures = [
            lambda: ring.decrypt(subjects[0], ciphertexts[0], PURPOSE, "t"),
            lambda: ring.decrypt(subjects[1], flip(ciphertexts[1], 20), PURPOSE, "t"),
            lambda: ring.decrypt(subjects[1], ciphertexts[1], "marketing", "t"),
            lambda: ring.token("x", "email", version=1),
            lambda: ring.token("x", "email", version=9),
            lambda: Keyring(store_path, StaticProvider(os.urandom(32))),
        ]
        for failure in failures:
            with pytest.raises(KeyringError) as caught:
                failure()
            texts.append(str(caught.value))
        new_key = os.urandom(32)
        texts.append(json.dumps(ring.rotate_master_key(new_key)))
        secrets.append(new_key)
        texts.append(json.dumps(ring.status()))
    texts.append(caplog.text)
    assert_no_secret("\n".join(texts), secrets)
    assert "marketing" in "\n".join(texts)  # the scan looked at real output


# ---- CLI -----------------------------------------------------------------------------------


def keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privacy-lakehouse keys")
    keyring_module.add_arguments(parser)
    return parser


def run_keys(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = keyring_module.run(keys_parser().parse_args(list(argv)))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_cli_commands_print_evidence_without_key_material(capsys, tmp_path, monkeypatch):
    code, init, _ = run_keys(capsys, "init", "--salt", "subject", "--salt", "email")
    assert code == 0 and [s["salt"] for s in init["salts"]] == ["subject", "email"]
    code, status, _ = run_keys(capsys, "status")
    assert [(s["salt"], s["version"], s["state"]) for s in status["salts"]] == [
        ("email", 1, "active"),
        ("subject", 1, "active"),
    ]
    code, rotated, _ = run_keys(capsys, "rotate-salt", "email", "--grace-days", "0")
    assert code == 0 and rotated["version_after"] == 2
    code, destroyed, _ = run_keys(capsys, "destroy-retired")
    assert code == 0 and destroyed["destroyed"][0] == {
        "salt": "email",
        "version": 1,
        "retire_after": rotated["retire_after"],
    }
    key_file = tmp_path / "keys" / "master.key"
    old_key = base64.b64decode(json.loads(key_file.read_text())["keys"][0]["key"])
    code, master, _ = run_keys(capsys, "rotate-master")
    assert code == 0 and master["master_key_version_after"] == 2
    new_key = base64.b64decode(json.loads(key_file.read_text())["keys"][0]["key"])
    code, status, _ = run_keys(capsys, "status")
    assert status["master_key"]["active_version"] == 2
    store = tmp_path / "keys" / "keyring.sqlite"
    everything = json.dumps([init, rotated, destroyed, master, status])
    assert_no_secret(everything, [old_key, new_key, *stored_secrets(store, new_key).values()])


def test_cli_rotate_master_with_environment_keys(capsys, monkeypatch):
    old, new = os.urandom(32), os.urandom(32)
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_MASTER_KEY", base64.b64encode(old).decode())
    assert run_keys(capsys, "init")[0] == 0
    code, _, err = run_keys(capsys, "rotate-master")
    assert code == 1 and "PRIVACY_LAKEHOUSE_NEW_MASTER_KEY" in err
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_NEW_MASTER_KEY", base64.b64encode(new).decode())
    code, evidence, _ = run_keys(capsys, "rotate-master")
    assert code == 0 and evidence["master_key_version_after"] == 2 and evidence["action_required"]
    code, _, err = run_keys(capsys, "status")  # still the old key in the environment
    assert code == 1 and "retired" in err
    assert_no_secret(err + json.dumps(evidence), [old, new])
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_MASTER_KEY", base64.b64encode(new).decode())
    assert run_keys(capsys, "status")[0] == 0


@pytest.mark.parametrize(
    "command", ["init", "status", "rotate-master", "rotate-salt", "destroy-retired"]
)
def test_cli_help(capsys, command):
    with pytest.raises(SystemExit) as exited:
        keys_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert command in out and len(out.splitlines()) >= 3


def test_subjects_asked_for_while_another_call_creates_them_are_not_read_back(ring, monkeypatch):
    """dbt runs bronze models side by side: when two ask for the same new subjects, the second
    waits for the first and then finds its keys cached, instead of reading back and unwrapping
    every key the first has just committed (a million at the 10M benchmark scale). Fails if
    the check of which keys are missing is made outside the lock that creates and caches them."""
    tokens = [f"v1:{i:032x}" for i in range(3000)]
    creating, unwrapped = threading.Event(), []
    insert, unwrap = ring._insert_data_keys, ring._unwrap

    def slow_insert(db, missing):
        creating.set()
        threading.Event().wait(0.3)  # the other model arrives meanwhile
        return insert(db, missing)

    def counting_unwrap(*args):
        unwrapped.append(1)
        return unwrap(*args)

    monkeypatch.setattr(ring, "_insert_data_keys", slow_insert)
    monkeypatch.setattr(ring, "_unwrap", counting_unwrap)
    first = threading.Thread(target=ring.ensure_data_keys, args=(tokens,))
    first.start()
    assert creating.wait(5)
    assert ring.ensure_data_keys(tokens) == 3000
    first.join()
    assert ring.status()["data_keys"]["active"] == 3000
    assert unwrapped == []
    # The keys made are the ones used: what is encrypted with them decrypts.
    sealed = ring.encrypt_many(tokens[:5], list("abcde"))
    assert ring.decrypt_many(tokens[:5], sealed, PURPOSE, "t").to_pylist() == list("abcde")
