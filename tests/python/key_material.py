"""Test oracles for key material: every live secret, unwrapped independently of the keyring,
and the text forms in which a leaked secret would show up."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.keywrap import aes_key_unwrap


def stored_secrets(store_path: Path, kek: bytes) -> dict[str, bytes]:
    """Every live salt and data key, unwrapped independently of the keyring (the test oracle)."""
    db = sqlite3.connect(store_path)
    try:
        secrets = {
            f"salt:{name}:{version}": aes_key_unwrap(kek, wrapped)
            for name, version, wrapped in db.execute(
                "SELECT name, version, wrapped_secret FROM salts WHERE wrapped_secret IS NOT NULL"
            )
        }
        for token, wrapped in db.execute(
            "SELECT s.subject_token, d.wrapped_key FROM subject_keys s JOIN data_keys d "
            "USING (key_id) WHERE d.wrapped_key IS NOT NULL"
        ):
            secrets[f"data:{token}"] = aes_key_unwrap(kek, wrapped)
        return secrets
    finally:
        db.close()


def secret_forms(secret: bytes) -> list[str]:
    """The ways a key could leak into text: hex (both cases) and base64 (standard, URL-safe)."""
    standard = base64.b64encode(secret).decode()
    urlsafe = base64.urlsafe_b64encode(secret).decode()
    return [
        secret.hex(),
        secret.hex().upper(),
        standard,
        standard.rstrip("="),
        urlsafe,
        urlsafe.rstrip("="),
    ]
