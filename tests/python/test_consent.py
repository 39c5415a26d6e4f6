"""Consent: a revocation in a later landing batch removes the subject from that purpose's gold
table and serving file at the next build, and from nothing else."""

from __future__ import annotations

import json
from datetime import timedelta

import duckdb
import pytest
from deltalake import DeltaTable
from privacy_lakehouse.keyring import Keyring
from privacy_lakehouse.settings import load_settings

from .conftest import clone_demo
from .dbt_helpers import run_dbt


def delta_column(lake, relative: str, column: str) -> list:
    return DeltaTable(str(lake / relative)).to_pyarrow_table(columns=[column]).column(0).to_pylist()


def serving_tokens(lake, purpose: str, table: str) -> set[str]:
    conn = duckdb.connect(str(lake / "serving" / f"{purpose}.duckdb"), read_only=True)
    try:
        return {row[0] for row in conn.execute(f"select subject_token from {table}").fetchall()}
    finally:
        conn.close()


def landing_customer_ids(landing) -> list[str]:
    conn = duckdb.connect()
    try:
        rows = conn.execute(
            "select distinct customer_id from read_csv(?, all_varchar = true) "
            "where customer_id is not null order by customer_id",
            [str(landing / "core_banking" / "customers" / "*.csv")],
        ).fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def revoked(demo, tmp_path_factory):
    """Revoke marketing consent for a subject in the marketing audience (and in the fraud
    table, to show other purposes keep it), in a new landing file, then rebuild a clone."""
    clone = clone_demo(demo, tmp_path_factory.mktemp("consent") / "privacy_lakehouse")
    audience = set(delta_column(clone.lake, "gold/dim_marketing_audience", "subject_token"))
    fraud = set(delta_column(clone.lake, "gold/fct_card_activity", "subject_token"))
    with clone.env():
        with Keyring.open(load_settings()) as keyring:
            tokens = {
                cid: keyring.token(cid, "subject") for cid in landing_customer_ids(clone.landing)
            }
    customer_id = next(cid for cid, token in tokens.items() if token in audience & fraud)
    token = tokens[customer_id]

    latest = max(delta_column(clone.lake, "silver/stg_consent__events", "event_ts"))
    event = {
        "event_id": "E99REVOKE0001",
        "customer_id": customer_id,
        "purpose": "marketing",
        "action": "revoke",
        "event_ts": (latest + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
        "channel": "app",
    }
    extra = clone.landing / "consent" / "events" / "consent_events_revocation.jsonl"
    extra.write_text(json.dumps(event) + "\n")

    before = {
        "audience": audience,
        "served": serving_tokens(clone.lake, "marketing", "dim_marketing_audience"),
        "fraud_served": serving_tokens(clone.lake, "fraud_prevention", "fct_card_activity"),
    }
    run_dbt(clone.root, "build")
    return clone, token, before


def test_the_subject_was_in_the_marketing_audience_and_its_serving_file_before(revoked):
    _, token, before = revoked
    assert token in before["audience"]
    assert token in before["served"]
    assert token in before["fraud_served"]


def test_the_revocation_closes_the_marketing_consent_history(revoked):
    clone, token, _ = revoked
    history = DeltaTable(str(clone.lake / "silver" / "int_consents_historized")).to_pyarrow_table()
    periods = [
        row
        for row in history.to_pylist()
        if row["subject_token"] == token and row["purpose"] == "marketing"
    ]
    current = [row for row in periods if row["is_current"]]
    assert len(current) == 1 and current[0]["is_granted"] is False
    # The earlier grant is kept as history, closed when the revocation arrived.
    closed_grants = [row for row in periods if row["is_granted"] and not row["is_current"]]
    assert closed_grants and max(r["valid_to"] for r in closed_grants) == current[0]["valid_from"]


def test_the_subject_left_the_marketing_audience_and_its_serving_file(revoked):
    clone, token, before = revoked
    audience = set(delta_column(clone.lake, "gold/dim_marketing_audience", "subject_token"))
    served = serving_tokens(clone.lake, "marketing", "dim_marketing_audience")
    assert token not in audience
    assert token not in served
    assert served == audience  # the serving file was republished from the rebuilt table
    assert len(audience) < len(before["audience"])
    # Still a customer: the absence is consent, not a lost record.
    customers = delta_column(clone.lake, "silver/stg_core_banking__customers", "subject_token")
    assert token in customers


def test_other_purposes_keep_the_subject(revoked):
    clone, token, _ = revoked
    assert token in set(delta_column(clone.lake, "gold/fct_card_activity", "subject_token"))
    assert token in serving_tokens(clone.lake, "fraud_prevention", "fct_card_activity")
