"""The keyring's DuckDB functions agree with the Python API, gate decryption, and keep NULLs."""

from __future__ import annotations

import base64
import os

import duckdb
import pyarrow as pa
import pytest
from privacy_lakehouse import duckdb_functions
from privacy_lakehouse.keyring import Keyring

PURPOSE = "fraud_prevention"
VALUES = ["alice", "", "Zoë 東京 🚀", None, "alice", "x" * 5000]


class StaticProvider:
    def __init__(self, key: bytes):
        self.key = key

    def current(self) -> tuple[int, bytes]:
        return 1, self.key

    def get(self, version: int) -> bytes:
        return self.key


@pytest.fixture
def audit_calls() -> list[tuple[str, str, int]]:
    return []


@pytest.fixture
def ring(tmp_path, audit_calls):
    with Keyring(
        tmp_path / "keys" / "keyring.sqlite",
        StaticProvider(os.urandom(32)),
        on_decrypt=lambda actor, purpose, count: audit_calls.append((actor, purpose, count)),
    ) as opened:
        yield opened


@pytest.fixture
def conn(ring):
    connection = duckdb.connect()
    duckdb_functions.register(connection, ring, actor="test-investigator")
    connection.execute("CREATE TABLE people (id INTEGER, name VARCHAR)")
    connection.executemany("INSERT INTO people VALUES (?, ?)", list(enumerate(VALUES)))
    yield connection
    connection.close()


def column(conn, sql: str, *params) -> list:
    return [row[0] for row in conn.execute(sql, list(params)).fetchall()]


def test_pl_token_matches_the_python_api(conn, ring):
    tokens = column(conn, "SELECT pl_token(name, 'subject') FROM people ORDER BY id")
    assert tokens == [ring.token(v) for v in VALUES]
    assert tokens[3] is None and tokens[0] == tokens[4] and tokens[1] is not None
    emails = column(conn, "SELECT pl_token(name, 'email') FROM people ORDER BY id")
    assert emails == [ring.token(v, "email") for v in VALUES]
    assert emails[0] != tokens[0]


def test_pl_token_over_many_chunks(conn, ring):
    # 10,000 rows span several 2048-row chunks; repeats cross chunk borders.
    values = column(
        conn, "SELECT 'customer-' || (i % 1500)::VARCHAR FROM range(10000) t(i) ORDER BY i"
    )
    tokens = column(
        conn,
        "SELECT pl_token('customer-' || (i % 1500)::VARCHAR, 'subject') FROM range(10000) t(i) "
        "ORDER BY i",
    )
    assert tokens == ring.tokens(pa.array(values)).to_pylist()
    assert len(set(tokens)) == 1500


def test_pl_token_with_a_salt_per_row_and_a_version(conn, ring):
    rows = conn.execute(
        "SELECT name, CASE WHEN id % 2 = 0 THEN 'subject' ELSE 'email' END AS salt, "
        "pl_token(name, CASE WHEN id % 2 = 0 THEN 'subject' ELSE 'email' END) "
        "FROM people ORDER BY id"
    ).fetchall()
    assert [token for _, _, token in rows] == [ring.token(v, s) for v, s, _ in rows]
    version_one = column(conn, "SELECT pl_token_at(name, 'subject', 1) FROM people ORDER BY id")
    ring.rotate_salt("subject")
    assert column(conn, "SELECT pl_token_at(name, 'subject', 1) FROM people ORDER BY id") == (
        version_one
    )
    current = column(conn, "SELECT pl_token(name, 'subject') FROM people ORDER BY id")
    assert current[0].startswith("v2:") and current[0] != version_one[0]
    with pytest.raises(duckdb.Error, match="salt_name is NULL"):
        conn.execute("SELECT pl_token(name, NULL) FROM people").fetchall()


def test_encrypt_and_decrypt_in_sql_agree_with_python(conn, ring, audit_calls):
    conn.execute(
        "CREATE TABLE bronze AS SELECT id, pl_token(name, 'subject') AS subject, "
        "pl_encrypt(pl_token(name, 'subject'), name) AS name_enc FROM people"
    )
    rows = conn.execute("SELECT id, subject, name_enc FROM bronze ORDER BY id").fetchall()
    for (row_id, subject, ciphertext), value in zip(rows, VALUES, strict=True):
        assert row_id is not None
        if value is None:
            assert ciphertext is None
        else:
            assert value == "" or value not in ciphertext
            assert ring.decrypt(subject, ciphertext, PURPOSE, "python") == value
    # Same value, same subject, two rows: different ciphertexts (fresh nonce per call).
    assert rows[0][2] != rows[4][2]
    audit_calls.clear()
    decrypted = column(
        conn, "SELECT pl_decrypt(subject, name_enc, 'fraud_prevention') FROM bronze ORDER BY id"
    )
    assert decrypted == VALUES
    assert audit_calls == [("test-investigator", "fraud_prevention", 4)]
    python_ciphertext = ring.encrypt(rows[0][1], "made in python")
    assert column(
        conn, "SELECT pl_decrypt(?, ?, 'fraud_prevention')", rows[0][1], python_ciphertext
    ) == ["made in python"]


def test_pl_decrypt_is_purpose_gated(conn, ring, audit_calls):
    subject = ring.token("alice")
    ciphertext = ring.encrypt(subject, "alice@example.com")
    audit_calls.clear()
    for purpose in ("marketing", None):
        with pytest.raises(duckdb.Error, match="not allowed|purpose is NULL") as caught:
            conn.execute("SELECT pl_decrypt(?, ?, ?)", [subject, ciphertext, purpose]).fetchall()
        assert "alice" not in str(caught.value)
    assert audit_calls == []
    mixed = conn.execute(
        "SELECT pl_decrypt(?, ?, p) FROM (VALUES ('fraud_prevention'), ('erasure_verification')) "
        "t(p)",
        [subject, ciphertext],
    ).fetchall()
    assert mixed == [("alice@example.com",), ("alice@example.com",)]
    assert sorted(audit_calls) == [
        ("test-investigator", "erasure_verification", 1),
        ("test-investigator", "fraud_prevention", 1),
    ]


def test_tampered_ciphertext_fails_the_query_without_values(conn, ring):
    subject = ring.token("alice")
    raw = bytearray(base64.b64decode(ring.encrypt(subject, "alice@example.com")))
    raw[-1] ^= 1
    tampered = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(duckdb.Error, match="failed authentication") as caught:
        conn.execute("SELECT pl_decrypt(?, ?, 'fraud_prevention')", [subject, tampered]).fetchall()
    assert "alice" not in str(caught.value) and tampered not in str(caught.value)


def test_shredded_subjects_read_as_null(conn, ring):
    conn.execute(
        "CREATE TABLE bronze AS SELECT id, pl_token(name, 'subject') AS subject, "
        "pl_encrypt(pl_token(name, 'subject'), name) AS name_enc FROM people"
    )
    ring.destroy_subject_key(ring.token("alice"))
    decrypted = column(
        conn, "SELECT pl_decrypt(subject, name_enc, 'erasure_verification') FROM bronze ORDER BY id"
    )
    assert decrypted == [None, "", "Zoë 東京 🚀", None, None, "x" * 5000]
    with pytest.raises(duckdb.Error, match="destroyed"):
        conn.execute("SELECT pl_encrypt(pl_token('alice', 'subject'), 'again')").fetchall()


def test_functions_are_visible_from_cursors_and_registration_is_repeatable(conn, ring):
    duckdb_functions.register(conn, ring, actor="second registration")
    cursor = conn.cursor()
    assert column(cursor, "SELECT pl_token('alice', 'subject')") == [ring.token("alice")]
    names = set(
        column(
            conn,
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_name LIKE 'pl_%'",
        )
    )
    assert set(duckdb_functions.FUNCTION_NAMES) <= names


def test_memory_limit_comes_from_the_environment_only_when_set(monkeypatch, tmp_path):
    from privacy_lakehouse import duckdb_setup

    monkeypatch.delenv(duckdb_setup.MEMORY_LIMIT_ENV, raising=False)
    assert "memory_limit" not in duckdb_setup.connection_config(tmp_path)
    monkeypatch.setenv(duckdb_setup.MEMORY_LIMIT_ENV, "1536MiB")
    config = duckdb_setup.connection_config(tmp_path)
    conn = duckdb.connect(config=config)
    try:
        limit = conn.execute("select current_setting('memory_limit')").fetchone()[0]
    finally:
        conn.close()
    assert limit == "1.5 GiB", limit


def test_pl_ensure_subject_keys_makes_every_key_once_before_encrypting(conn, ring):
    conn.execute(
        "create table ensure_people as select pl_token('customer-' || (i % 3000), 'subject') "
        "as token, 'value ' || i as value from range(6000) as t(i)"
    )
    ready = column(conn, "select pl_ensure_subject_keys(list(distinct token)) from ensure_people")
    assert ready == [True]
    assert ring.status()["data_keys"]["active"] == 3000
    # A second call and the encryption itself find the keys: none is added.
    assert column(conn, "select pl_ensure_subject_keys(list(token)) from ensure_people") == [True]
    rows = conn.execute("select token, value, pl_encrypt(token, value) from ensure_people")
    tokens, values, sealed = (list(c) for c in zip(*rows.fetchall(), strict=True))
    assert ring.status()["data_keys"]["active"] == 3000
    assert ring.decrypt_many(tokens, sealed, PURPOSE, "tester").to_pylist() == values
    # No rows: the aggregate is NULL and so is the answer; nothing is created.
    none = "select pl_ensure_subject_keys(list(token)) from ensure_people where false"
    assert column(conn, none) == [None]
    assert ring.ensure_data_keys([None]) == 0


def test_pl_encrypt_values_seals_each_element_for_its_row_subject(conn, ring):
    # 5,000 rows: several DuckDB chunks, so the function also sees sliced list arrays.
    conn.execute(
        "create table many as select i, pl_token('customer-' || (i % 700), 'subject') as token, "
        "'first ' || i as first, case when i % 5 = 0 then null else 'mail' || i end as email, "
        "case when i % 11 = 0 then null else [cast(i as varchar), 'x'] end as extra "
        "from range(5000) as t(i)"
    )
    rows = conn.execute(
        "select i, token, first, email, sealed[1], sealed[2], extra_sealed "
        "from (select *, pl_encrypt_values(token, [first, email]) as sealed, "
        "pl_encrypt_values(token, extra) as extra_sealed from many) order by i"
    ).fetchall()
    assert len(rows) == 5000
    for i, token, first, email, first_enc, email_enc, extra_enc in rows:
        assert ring.decrypt(token, first_enc, PURPOSE, "tester") == first
        if email is None:
            assert email_enc is None
        else:
            assert ring.decrypt(token, email_enc, PURPOSE, "tester") == email
        if i % 11 == 0:
            assert extra_enc is None  # a NULL list stays NULL
        else:
            plain = [ring.decrypt(token, c, PURPOSE, "tester") for c in extra_enc]
            assert plain == [str(i), "x"]
    # Each value under its own row's subject: another subject's key fails authentication.
    other = rows[1][1]
    with pytest.raises(Exception, match="failed authentication"):
        ring.decrypt(other, rows[0][4], PURPOSE, "tester")


def test_pl_encrypt_values_encrypts_each_value_once_when_its_list_is_indexed(conn, ring):
    """Models alias the list in a CTE and index it once per column: DuckDB must not call the
    function again for every index (each call would encrypt the whole row again)."""
    sealed_values = []
    encrypt_many = ring.encrypt_many

    def counting(tokens, values):
        sealed_values.append(len(values))
        return encrypt_many(tokens, values)

    ring.encrypt_many = counting
    conn.execute(
        "create table wide as select pl_token('c' || i, 'subject') as subject_token, "
        "'a' || i as a, 'b' || i as b, 'c' || i as c from range(3000) as t(i)"
    )
    result = conn.execute(
        "with sealed as (select *, pl_encrypt_values(subject_token, [a, b, c]) as ciphertexts "
        "from wide) select ciphertexts[1] as a_enc, ciphertexts[2] as b_enc, "
        "ciphertexts[3] as c_enc from sealed"
    ).fetchall()
    assert len(result) == 3000
    assert sum(sealed_values) == 3 * 3000
