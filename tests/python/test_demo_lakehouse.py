"""The demo lakehouse, built once per session: layers, idempotent bronze, quarantine accounting,
independent Delta readers, privacy-safe table properties, docs catalog, no secrets in artifacts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from privacy_lakehouse.keyring import Keyring, master_key_provider_from_environment
from privacy_lakehouse.settings import load_settings

from .dbt_helpers import run_dbt
from .key_material import secret_forms, stored_secrets

BRONZE_BY_SOURCE = {
    "customers": "raw_core_banking__customers",
    "accounts": "raw_core_banking__accounts",
    "transactions": "raw_cards__transactions",
    "consent_events": "raw_consent__events",
    "support_cases": "raw_support__cases",
}
QUARANTINE_SOURCE_NAME = {
    "customers": "core_banking.customers",
    "accounts": "core_banking.accounts",
    "transactions": "cards.transactions",
    "consent_events": "consent.events",
    "support_cases": "support.cases",
}


def delta_counts(demo, layer: str) -> dict[str, int]:
    return {t.name: demo.count(t) for t in demo.tables(layer)}


def test_every_layer_has_delta_tables_with_rows(demo):
    for layer, expected in {
        "bronze": set(BRONZE_BY_SOURCE.values()) | {"raw_quarantine__records"},
        "silver": {
            "stg_core_banking__customers",
            "stg_cards__transactions",
            "int_consents_historized",
        },
        "gold": {
            "agg_customers_by_segment",
            "dim_marketing_audience",
            "fct_card_activity",
            "agg_partner_spend_by_region",
            "agg_spend_by_category_month",
        },
    }.items():
        counts = delta_counts(demo, layer)
        assert expected <= set(counts), f"{layer}: missing {expected - set(counts)}"
        assert all(counts[name] > 0 for name in expected), counts


def test_landing_rows_equal_bronze_plus_quarantine(demo):
    con = demo.duckdb()
    quarantine = demo.lake / "bronze" / "raw_quarantine__records"
    for entry in demo.landing_summary["files"]:
        file_name = Path(entry["path"]).name
        bronze = demo.lake / "bronze" / BRONZE_BY_SOURCE[entry["source"]]
        in_bronze = con.execute(
            f"select count(*) from delta_scan('{bronze}') where source_file = ?", [file_name]
        ).fetchone()[0]
        reasons = dict(
            con.execute(
                f"select reject_reason, count(*) from delta_scan('{quarantine}') "
                "where source_file = ? and source_name = ? group by all",
                [file_name, QUARANTINE_SOURCE_NAME[entry["source"]]],
            ).fetchall()
        )
        assert in_bronze + sum(reasons.values()) == entry["rows"], file_name
        expected = {kind: n for kind, n in entry["quarantinable"].items() if n}
        assert reasons == expected, file_name


def test_rebuilding_on_the_same_landing_files_adds_no_bronze_rows(demo):
    before = {t.name: (demo.count(t), DeltaTable(str(t)).version()) for t in demo.tables("bronze")}
    run_dbt(demo.root, "build", "--select", "tag:bronze")
    after = {t.name: (demo.count(t), DeltaTable(str(t)).version()) for t in demo.tables("bronze")}
    assert after == before  # same rows, and not even an empty commit


def test_independent_readers_agree_with_dbt(demo):
    """deltalake's reader and DuckDB's delta extension see the same rows as dbt reported."""
    reported = {
        r["unique_id"].split(".")[-1]: r["adapter_response"].get("rows_affected")
        for r in demo.run_results["results"]
        if r["unique_id"].startswith("model.")
    }
    con = demo.duckdb()
    checked = 0
    for table in demo.tables():
        arrow = DeltaTable(str(table)).to_pyarrow_table()
        columns = ", ".join(f'"{c}"' for c in arrow.column_names)
        checksum_sql = f"select count(*), sum(hash({columns})) from {{}}"
        by_deltalake = duckdb.connect().execute(checksum_sql.format("arrow")).fetchone()
        by_duckdb = con.execute(checksum_sql.format(f"delta_scan('{table}')")).fetchone()
        assert by_deltalake == by_duckdb, table.name
        assert by_deltalake[0] == arrow.num_rows
        if reported.get(table.name) is not None:
            assert reported[table.name] == arrow.num_rows, table.name
            checked += 1
    assert checked >= 15


def test_views_in_the_warehouse_read_the_delta_tables(demo):
    con = demo.warehouse()
    try:
        for table in demo.tables():
            layer = table.parent.name
            view_sql = con.execute(
                "select sql from duckdb_views() where schema_name = ? and view_name = ?",
                [layer, table.name],
            ).fetchone()[0]
            assert f"delta_scan('{table}')" in view_sql  # absolute path: works for BI tools
            assert con.execute(f"select count(*) from {layer}.{table.name}").fetchone()[0] == (
                demo.count(table)
            )
    finally:
        con.close()


def declared_safe_columns(demo) -> dict[str, set[str]]:
    safe = {}
    for node in demo.manifest()["nodes"].values():
        if node["resource_type"] != "model":
            continue
        safe[node["name"]] = {
            name
            for name, col in node["columns"].items()
            if col["config"]["meta"].get("privacy_role") == "none"
            and col["config"]["meta"].get("sensitivity") in {"public", "internal"}
        }
    return safe


@pytest.mark.parametrize("layer, deleted_files", [("bronze", "7 days"), ("gold", "1 days")])
def test_table_properties_follow_the_design(demo, layer, deleted_files):
    safe = declared_safe_columns(demo)
    for table in demo.tables(layer):
        dt = DeltaTable(str(table))
        config = dt.metadata().configuration
        assert config["delta.enableChangeDataFeed"] == "false"
        assert config["delta.enableDeletionVectors"] == "false"
        assert config["delta.deletedFileRetentionDuration"] == f"interval {deleted_files}"
        columns = dt.schema().to_arrow().names
        stats = config.get("delta.dataSkippingStatsColumns")
        expected = [c for c in columns if c in safe[table.name]]
        assert (stats.split(",") if stats else []) == expected, table.name
        # ...and the log really holds statistics only for those columns.
        for log_file in (table / "_delta_log").glob("*.json"):
            for line in log_file.read_text().splitlines():
                action = json.loads(line)
                if "add" in action and action["add"].get("stats"):
                    stat_columns = set(json.loads(action["add"]["stats"]).get("minValues", {}))
                    assert stat_columns <= set(expected), (table.name, stat_columns)


def test_every_table_holding_subjects_is_clustered_by_subject(demo):
    # An erasure rewrites only the files that hold the subject: in every layer, each file of a
    # table with subject tokens holds them in order (the writer sorts by cluster_by).
    clustered = []
    for table in demo.tables():
        dt = DeltaTable(str(table))
        if "subject_token" not in dt.schema().to_arrow().names:
            continue
        clustered.append(table.name)
        for uri in dt.file_uris():
            tokens = pq.read_table(uri.removeprefix("file://"), columns=["subject_token"])
            listed = tokens["subject_token"].cast(pa.string()).drop_null().to_pylist()
            assert listed == sorted(listed), table.name
    assert {"stg_core_banking__customers", "fct_card_activity", "dim_marketing_audience"} <= set(
        clustered
    )


def landing_identifiers(demo, limit: int = 50) -> list[str]:
    con = duckdb.connect()
    return [
        row[0]
        for row in con.execute(
            "select email from read_csv(?, all_varchar=true, union_by_name=true) "
            "where email like '%@%' limit ?",
            [str(demo.landing / "core_banking/customers/*.csv"), limit],
        ).fetchall()
    ]


CUSTOMER_IDENTIFIERS = [
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "national_id",
    "street_address",
]


def test_bronze_customer_ciphertexts_decrypt_to_their_own_landing_values(demo):
    """Bronze customers encrypt seven identifiers per row in one call (a list): each column
    must hold its own value, under its own subject's key, for every delivered row."""
    con = duckdb.connect()
    listed = ", ".join(CUSTOMER_IDENTIFIERS)
    delivered = {
        tuple(row)
        for row in con.execute(
            f"select {listed} from read_csv(?, all_varchar=true, union_by_name=true)",
            [str(demo.landing / "core_banking/customers/*.csv")],
        ).fetchall()
    }
    bronze = demo.lake / "bronze" / "raw_core_banking__customers"
    lake = demo.duckdb()
    try:
        sealed = lake.execute(
            f"select subject_token, {', '.join(c + '_enc' for c in CUSTOMER_IDENTIFIERS)} "
            f"from delta_scan('{bronze}')"
        ).fetchall()
    finally:
        lake.close()
    assert len(sealed) >= 100
    tokens = [row[0] for row in sealed]
    with demo.env(), Keyring.open(load_settings()) as keyring:
        columns = [
            keyring.decrypt_many(
                tokens, [row[i + 1] for row in sealed], "erasure_verification", "test"
            ).to_pylist()
            for i in range(len(CUSTOMER_IDENTIFIERS))
        ]
        subject_of = {
            customer_id: keyring.token(customer_id, "subject") for customer_id in set(columns[0])
        }
    rows = list(zip(*columns, strict=True))
    # Every bronze row is a delivered row, column for column, and sealed for its own subject.
    assert all(row in delivered for row in rows)
    assert all(subject_of[row[0]] == token for row, token in zip(rows, tokens, strict=True))
    assert len({row[3] for row in rows}) > 0.9 * len(rows)  # emails differ between people


def test_no_plaintext_identifier_leaves_landing(demo):
    emails = landing_identifiers(demo)
    assert len(emails) == 50
    con = demo.duckdb()
    # The scan can fail: it finds landing emails in the landing files themselves.
    landing_text = b"".join(p.read_bytes() for p in demo.landing.rglob("*.csv"))
    assert all(e.encode() in landing_text for e in emails)
    for table in demo.tables():
        text_columns = [
            f'"{c}"'
            for c, t, *_ in con.execute(f"describe select * from delta_scan('{table}')").fetchall()
            if t == "VARCHAR"
        ]
        if not text_columns:
            continue
        values = set(
            v
            for row in con.execute(
                f"select {', '.join(text_columns)} from delta_scan('{table}')"
            ).fetchall()
            for v in row
            if v
        )
        leaked = [e for e in emails if e in values or any(e in v for v in values)]
        assert not leaked, f"{table.name} holds {len(leaked)} plaintext emails"


def test_docs_catalog_lists_every_model_with_columns(demo):
    run_dbt(demo.root, "docs", "generate")
    catalog = json.loads((demo.root / "target" / "catalog.json").read_text())
    manifest = demo.manifest()
    models = [
        n
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["config"]["materialized"] != "ephemeral"
    ]
    assert len(models) >= 17
    for node in models:
        entry = catalog["nodes"].get(node["unique_id"])
        assert entry is not None, node["name"]
        catalog_columns = {c.lower() for c in entry["columns"]}
        assert set(node["columns"]) <= catalog_columns, node["name"]


def test_no_key_or_salt_material_in_artifacts(demo):
    settings = load_settings(demo.root)
    with demo.env():
        _, master = master_key_provider_from_environment(settings).current()
    secrets = stored_secrets(settings.keys_dir / "keyring.sqlite", master)
    assert any(name.startswith("salt:subject") for name in secrets)
    assert any(name.startswith("data:") for name in secrets)
    forms = [form for secret in [*secrets.values(), master] for form in secret_forms(secret)]
    scanned = 0
    for folder in ("target", "logs"):
        for path in (demo.root / folder).rglob("*"):
            if path.is_file():
                text = path.read_bytes().decode("utf-8", errors="ignore")
                assert not [f for f in forms if f in text], path
                scanned += 1
    assert scanned > 10


def test_source_freshness_passes_on_fresh_landing_files(demo):
    result = run_dbt(demo.root, "source", "freshness")
    statuses = Counter(
        str(r.status) for r in result.result.results if r.node.resource_type == "source"
    )
    assert statuses and set(statuses) == {"pass"}, statuses


def test_gold_releases_meet_their_k(demo):
    con = demo.duckdb()
    gold = demo.lake / "gold"
    assert (
        con.execute(
            f"select min(customer_count) from delta_scan('{gold}/agg_customers_by_segment')"
        ).fetchone()[0]
        >= 5
    )
    assert (
        con.execute(
            f"select min(customer_count) from delta_scan('{gold}/agg_partner_spend_by_region')"
        ).fetchone()[0]
        >= 10
    )
    smallest_group = con.execute(
        "select min(n) from (select count(*) as n from "
        f"delta_scan('{gold}/dim_marketing_audience') group by country, age_band, postcode_area)"
    ).fetchone()[0]
    assert smallest_group >= 5


def consented_subjects(demo, purpose: str) -> str:
    """SQL for the subjects whose current consent grants `purpose`."""
    return (
        f"select subject_token from delta_scan('{demo.lake}/silver/int_consents_historized') "
        f"where purpose = '{purpose}' and is_current and is_granted"
    )


def test_monthly_spend_keeps_every_consented_transaction_and_only_cells_of_k(demo):
    con = demo.duckdb()
    silver, gold = demo.lake / "silver", demo.lake / "gold"
    consented = consented_subjects(demo, "analytics")
    # Cells computed independently: one (month, category) cell per group of transactions.
    expected_cells = con.execute(
        "select date_trunc('month', transaction_date) as month, merchant_category, "
        "count(distinct subject_token) as customers, count(*) as n, sum(amount) as total "
        f"from delta_scan('{silver}/stg_cards__transactions') "
        f"where subject_token in ({consented}) group by all"
    ).fetchall()
    released = con.execute(
        "select spend_month, merchant_category, customer_count, transaction_count, total_amount "
        f"from delta_scan('{gold}/agg_spend_by_category_month')"
    ).fetchall()
    assert released and all(row[2] >= 5 for row in released)
    by_cell = {(row[0], row[1]): row for row in released}
    for month, category, customers, count, total in expected_cells:
        if customers >= 5:  # a cell of k is released as it is
            assert by_cell[(month, category)][2:] == (customers, count, total)
        else:
            assert (month, category) not in by_cell  # folded into the month's Other
    # Only Other cells that still fall below k are withheld; nothing else is lost.
    small = [c for c in expected_cells if c[2] < 5]
    withheld_months = {c[0] for c in small} - {r[0] for r in released if r[1] == "Other"}
    released_total = sum(row[3] for row in released)
    expected_total = sum(c[3] for c in expected_cells if c[0] not in withheld_months or c[2] >= 5)
    assert released_total == expected_total


def test_stored_test_failures_hold_no_row_values(demo_copy):
    """Built-in tests are overridden: with --store-failures a failing not_null, unique or
    accepted_values test stores counts or markers, never rows or values."""
    import yaml

    own = demo_copy.root / "models/gold/marketing/dim_marketing_audience.yml"
    doc = yaml.safe_load(own.read_text())
    failing = {
        "preferred_language": ["not_null"],
        "country": ["unique", {"accepted_values": {"arguments": {"values": ["XX"]}}}],
    }
    for column in doc["models"][0]["columns"]:
        column["data_tests"] = failing.get(column["name"], [])
    own.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run_dbt(
        demo_copy.root,
        "test",
        "--store-failures",
        "--select",
        "dim_marketing_audience",
        expect_ok=False,
    )
    failed = {r.node.name for r in result.result.results if str(r.status) == "fail"}
    assert len(failed) == 3, failed
    con = demo_copy.warehouse()
    try:
        columns = {}
        for name in failed:
            schema = con.execute(
                "select schema_name from duckdb_tables() where table_name = ?", [name]
            ).fetchone()[0]
            described = con.execute(f'describe "{schema}"."{name}"').fetchall()
            columns[name] = {column for column, *_ in described}
    finally:
        con.close()
    assert all(found <= {"failing_row", "n_records"} for found in columns.values()), columns


def test_fraud_signals_equal_windows_over_every_row(demo):
    """fct_card_activity computes its card windows over narrow columns keyed by card ids (to stay
    within a memory limit at scale); the signals must equal the plain windows over every row."""
    con = demo.duckdb()
    silver, gold = demo.lake / "silver", demo.lake / "gold"
    consented = consented_subjects(demo, "fraud_prevention")
    expected = con.execute(
        "select transaction_id, count(*) over (partition by card_token order by transaction_ts "
        "range between interval 1 hour preceding and current row), "
        "amount > 5 * avg(amount) over (partition by card_token) "
        f"from delta_scan('{silver}/stg_cards__transactions') "
        f"where subject_token in ({consented})"
    ).fetchall()
    released = con.execute(
        "select transaction_id, card_transactions_last_hour, is_unusual_amount "
        f"from delta_scan('{gold}/fct_card_activity')"
    ).fetchall()
    assert sorted(released) == sorted(expected)
    # Not vacuous: the demo data has cards with several transactions in an hour, and outliers.
    assert max(row[1] for row in released) >= 2
    assert any(row[2] for row in released)


def test_record_hashes_are_keyed_so_bronze_does_not_give_identifiers_back(demo):
    """Bronze keeps a consent event's fields in clear except the customer number; an unkeyed
    md5 of the line would let anyone try the few candidate numbers until it matched."""
    import hashlib

    landed = sorted((demo.landing / "consent" / "events").glob("*.jsonl"))[0]
    lines = landed.read_text().splitlines()[:200]
    digests = [hashlib.md5(line.encode()).hexdigest() for line in lines]  # noqa: S324
    bronze = demo.lake / "bronze" / "raw_consent__events"
    lake = demo.duckdb()
    try:
        stored = {
            row[0]
            for row in lake.execute(
                f"select record_hash from delta_scan('{bronze}') where source_file = ?",
                [landed.name],
            ).fetchall()
        }
    finally:
        lake.close()
    assert not stored & set(digests)
    with demo.env(), Keyring.open(load_settings()) as keyring:
        keyed = {keyring.token(digest, "record") for digest in digests}
    # Every line that reached bronze carries the keyed hash of its content.
    assert len(stored & keyed) > 150
