"""Serving files: one DuckDB file per purpose with only what the purpose may see, written
atomically, recorded as exports; and what each role can read through them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import pytest
from privacy_lakehouse import access, serving
from privacy_lakehouse.access import (
    AccessDenied,
    catalog_from_manifest,
    load_access_policy,
    run_query,
)
from privacy_lakehouse.audit_log import AuditLog
from privacy_lakehouse.hooks import BuildContext
from privacy_lakehouse.policy import load_policy
from privacy_lakehouse.serving import ModelColumns, models_from_manifest, publish_purpose

from .dbt_helpers import environment, project_env

PURPOSES = ("analytics", "marketing", "fraud_prevention", "partner_sharing")


def open_file(path: Path) -> duckdb.DuckDBPyConnection:
    # A plain DuckDB connection, as a BI tool would open it: no delta extension, no functions.
    return duckdb.connect(str(path), read_only=True, config={"autoload_known_extensions": False})


def tables_and_columns(path: Path) -> dict[str, list[str]]:
    conn = open_file(path)
    try:
        rows = conn.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "order by table_name, ordinal_position"
        ).fetchall()
    finally:
        conn.close()
    found: dict[str, list[str]] = {}
    for schema, table, column in rows:
        assert schema == "main", f"{path.name}: unexpected schema {schema}"
        found.setdefault(table, []).append(column)
    return found


def expected_contents(manifest: dict, purpose: str) -> dict[str, set[str]]:
    """From the manifest, independently of serving.py: gold Delta models and the columns whose
    meta purposes include the purpose."""
    expected = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or node["config"].get("materialized") != "delta":
            continue
        if node["fqn"][1] != "gold":
            continue
        columns = {
            name
            for name, column in node["columns"].items()
            if purpose in (column.get("config", {}).get("meta", {}).get("purposes") or [])
        }
        if columns:
            expected[node["name"]] = columns
    return expected


@pytest.fixture(scope="module")
def manifest(demo) -> dict:
    return demo.manifest()


def test_the_build_publishes_one_file_and_description_per_purpose(demo):
    folder = demo.lake / "serving"
    assert {p.name for p in folder.iterdir()} == {
        f"{purpose}.{suffix}" for purpose in PURPOSES for suffix in ("duckdb", "json")
    }  # and no leftover .tmp-<pid> or .wal files


@pytest.mark.parametrize("purpose", PURPOSES)
def test_each_file_holds_exactly_the_gold_columns_its_purpose_may_see(demo, manifest, purpose):
    found = tables_and_columns(demo.lake / "serving" / f"{purpose}.duckdb")
    expected = expected_contents(manifest, purpose)
    assert expected, "every purpose of the demo has at least one gold table"
    assert {table: set(columns) for table, columns in found.items()} == expected


def test_files_separate_the_purposes(demo):
    # Spelled out for the demo, so a change to the YAML that widens a purpose shows up here.
    marketing = tables_and_columns(demo.lake / "serving" / "marketing.duckdb")
    assert set(marketing) == {"dim_marketing_audience"}
    assert {"subject_token", "age_band", "spend_band"} <= set(marketing["dim_marketing_audience"])
    fraud = tables_and_columns(demo.lake / "serving" / "fraud_prevention.duckdb")
    assert set(fraud) == {"fct_card_activity"}
    analytics = tables_and_columns(demo.lake / "serving" / "analytics.duckdb")
    assert set(analytics) == {"agg_customers_by_segment", "agg_spend_by_category_month"}
    every_table = {
        t for p in PURPOSES for t in tables_and_columns(demo.lake / "serving" / f"{p}.duckdb")
    }
    # Nothing from bronze or silver, and the privacy telemetry (purposes []) is served to nobody.
    assert not {t for t in every_table if t.startswith(("raw_", "stg_", "int_"))}
    assert "agg_privacy_activity_by_day" not in every_table


@pytest.mark.parametrize("purpose", PURPOSES)
def test_serving_tables_hold_the_rows_of_the_gold_delta_tables(demo, purpose):
    path = demo.lake / "serving" / f"{purpose}.duckdb"
    description = json.loads((demo.lake / "serving" / f"{purpose}.json").read_text())
    conn = open_file(path)
    delta = demo.duckdb()
    try:
        for table in description["tables"]:
            columns = ", ".join(column["name"] for column in table["columns"])
            served = conn.execute(f"select {columns} from {table['name']}").fetchall()
            gold = delta.execute(
                f"select {columns} from delta_scan('{demo.lake / 'gold' / table['name']}')"
            ).fetchall()
            assert len(served) == table["rows"] > 0
            assert sorted(map(repr, served)) == sorted(map(repr, gold)), table["name"]
    finally:
        conn.close()
        delta.close()


@pytest.mark.parametrize("purpose", PURPOSES)
def test_the_description_lists_tables_columns_rows_and_policy_version(demo, purpose):
    description = json.loads((demo.lake / "serving" / f"{purpose}.json").read_text())
    assert description["purpose"] == purpose
    assert description["policy_version"] == load_policy(demo.root / "privacy_policy.yml").version
    assert description["skipped"] == {}
    found = tables_and_columns(demo.lake / "serving" / f"{purpose}.duckdb")
    assert {t["name"]: [c["name"] for c in t["columns"]] for t in description["tables"]} == found
    for table in description["tables"]:
        assert table["source"] == f"gold/{table['name']}"
        assert all(column["sensitivity"] for column in table["columns"])


def test_every_publish_is_an_export_entry_in_the_audit_log(demo):
    log = AuditLog(demo.lake / "_audit" / "audit.jsonl")
    assert log.verify(log.read_head()).ok
    exports = [entry for entry in log.entries() if entry.action == "export"]
    for purpose in PURPOSES:
        description = json.loads((demo.lake / "serving" / f"{purpose}.json").read_text())
        last = [e for e in exports if e.details["purpose"] == purpose][-1]
        assert last.details["invocation_id"] == description["invocation_id"]
        assert last.details["row_counts"] == {t["name"]: t["rows"] for t in description["tables"]}
        assert last.details["rows_exported"] == sum(t["rows"] for t in description["tables"])
        assert last.policy_version == description["policy_version"]
        assert last.decision == "allow"
        columns = {f"{t['name']}.{c['name']}" for t in description["tables"] for c in t["columns"]}
        assert columns <= set(last.object)
        assert last.details["serving_file"] == f"serving/{purpose}.duckdb"


# ---------------------------------------------------------------------------------------------
# Atomic replacement (published into a temporary folder from the demo's gold tables)
# ---------------------------------------------------------------------------------------------


def hide_column(models: list[ModelColumns], table: str, column: str, purpose: str):
    changed = []
    for model in models:
        if model.name == table:
            columns = {name: dict(meta) for name, meta in model.columns.items()}
            columns[column]["purposes"] = [p for p in columns[column]["purposes"] if p != purpose]
            model = ModelColumns(model.name, model.layer, model.location, columns)
        changed.append(model)
    return changed


def test_a_reader_of_the_old_file_keeps_it_while_a_new_one_replaces_it(demo, manifest, tmp_path):
    models = models_from_manifest(manifest)
    publish_purpose("marketing", models, demo.lake, policy_version=1, output_dir=tmp_path)
    path = tmp_path / "marketing.duckdb"
    old_inode = path.stat().st_ino
    reader = open_file(path)  # a BI tool holding the file open
    try:
        narrower = hide_column(models, "dim_marketing_audience", "spend_band", "marketing")
        publish_purpose("marketing", narrower, demo.lake, policy_version=1, output_dir=tmp_path)
        # The reader still sees the file it opened (same inode), whole and readable...
        assert reader.execute("select count(spend_band) from dim_marketing_audience").fetchone()[0]
    finally:
        reader.close()
    # ...while new readers get the new file, built without blocking on the old reader.
    assert path.stat().st_ino != old_inode
    assert "spend_band" not in tables_and_columns(path)["dim_marketing_audience"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marketing.duckdb", "marketing.json"]


def test_a_failed_publish_leaves_the_previous_file_in_place(demo, manifest, tmp_path):
    models = models_from_manifest(manifest)
    publish_purpose("marketing", models, demo.lake, policy_version=1, output_dir=tmp_path)
    before = (tmp_path / "marketing.duckdb").read_bytes()
    broken = tmp_path / "broken_table"
    (broken / "_delta_log").mkdir(parents=True)
    (broken / "_delta_log" / "00000000000000000000.json").write_text("not a delta log\n")
    meta = {"purposes": ["marketing"], "sensitivity": "internal", "privacy_role": "none"}
    models.append(ModelColumns("zz_broken", "gold", str(broken), {"x": meta}))
    with pytest.raises(duckdb.Error):
        publish_purpose("marketing", models, demo.lake, policy_version=1, output_dir=tmp_path)
    assert (tmp_path / "marketing.duckdb").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "broken_table",
        "marketing.duckdb",
        "marketing.json",
    ]


def test_a_gold_model_without_a_delta_table_is_skipped_and_said_so(demo, manifest, tmp_path):
    meta = {"purposes": ["marketing"], "sensitivity": "internal", "privacy_role": "none"}
    models = models_from_manifest(manifest)
    models.append(ModelColumns("dim_never_built", "gold", "gold/dim_never_built", {"x": meta}))
    models.append(ModelColumns("stg_not_gold", "silver", "silver/stg_consent__events", {"x": meta}))
    description = publish_purpose(
        "marketing", models, demo.lake, policy_version=1, output_dir=tmp_path
    )
    assert description["skipped"] == {"dim_never_built": "no Delta table yet"}
    assert set(tables_and_columns(tmp_path / "marketing.duckdb")) == {"dim_marketing_audience"}


def test_a_file_still_current_is_kept_and_any_change_republishes_it(demo, manifest, tmp_path):
    """After a build, a purpose's file is copied again only when what it was copied from
    changed: a gold table's Delta version, a visible column, or the policy version. A kept
    file is not an export: the audit log gets no entry for it."""
    import pyarrow as pa
    from deltalake import write_deltalake

    gold = tmp_path / "lake_gold" / "dim_extra"
    write_deltalake(str(gold), pa.table({"segment": ["a", "b"]}))
    meta = {"purposes": ["marketing"], "sensitivity": "internal", "privacy_role": "none"}
    models = models_from_manifest(manifest)
    models.append(ModelColumns("dim_extra", "gold", str(gold), {"segment": meta}))
    policy = load_policy(demo.root / "privacy_policy.yml")
    out = tmp_path / "out"
    audit = AuditLog(tmp_path / "audit.jsonl")

    def publish_marketing(chosen=models, keep_unchanged=True):
        published = serving.publish(
            chosen, demo.lake, policy, purposes=["marketing"], output_dir=out,
            audit_log=audit, actor="test", keep_unchanged=keep_unchanged,
        )  # fmt: skip
        return published["marketing"], (out / "marketing.duckdb").stat().st_ino

    first, inode = publish_marketing()
    assert not first.get("unchanged")
    again, same_inode = publish_marketing()
    assert again["unchanged"] and same_inode == inode
    assert again["tables"] == first["tables"]
    assert [e.details["purpose"] for e in audit.entries()] == ["marketing"]

    write_deltalake(str(gold), pa.table({"segment": ["c"]}), mode="append")
    grown, inode_after_append = publish_marketing()
    assert not grown.get("unchanged") and inode_after_append != inode
    extra = next(t for t in grown["tables"] if t["name"] == "dim_extra")
    assert (extra["delta_version"], extra["rows"]) == (1, 3)

    narrower = hide_column(models, "dim_marketing_audience", "spend_band", "marketing")
    narrowed, inode_narrowed = publish_marketing(narrower)
    assert not narrowed.get("unchanged") and inode_narrowed != inode_after_append
    assert (
        "spend_band" not in tables_and_columns(out / "marketing.duckdb")["dim_marketing_audience"]
    )
    _, kept = publish_marketing(narrower)
    assert kept == inode_narrowed
    forced, inode_forced = publish_marketing(narrower, keep_unchanged=False)
    assert not forced.get("unchanged") and inode_forced != inode_narrowed
    assert len([e for e in audit.entries() if e.action == "export"]) == 4
    other_policy = publish_purpose(
        "marketing", narrower, demo.lake, policy_version="another", output_dir=out,
        keep_unchanged=True,
    )  # fmt: skip
    assert not other_policy.get("unchanged")
    assert (out / "marketing.duckdb").stat().st_ino != inode_forced


def test_a_build_with_errors_publishes_nothing(tmp_path):
    context = BuildContext(
        lake_dir=tmp_path,
        invocation_id="x",
        command="build",
        target_name="dev",
        results=[{"unique_id": "model.p.dim_x", "status": "error"}],
    )
    assert "skipped" in serving.publish_after_build(context)
    assert not (tmp_path / "serving").exists()
    assert not (tmp_path / "_audit").exists()


def test_serving_paths_refuse_names_that_are_not_purposes(tmp_path):
    assert serving.serving_path(tmp_path, "marketing") == tmp_path / "serving" / "marketing.duckdb"
    for bad in ("../marketing", "Marketing", "a/b", ""):
        with pytest.raises(serving.ServingError):
            serving.serving_path(tmp_path, bad)


# ---------------------------------------------------------------------------------------------
# CLI: serve publish, and query defaulting to the purpose's serving file
# ---------------------------------------------------------------------------------------------


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_serve_publish_writes_the_chosen_purpose_and_records_it(demo, tmp_path, capsys):
    audit = tmp_path / "audit.jsonl"
    argv = ["publish", "--purpose", "partner_sharing", "--output-dir", str(tmp_path / "out")]
    argv += ["--audit-log", str(audit), "--actor", "release-manager"]
    with environment(project_env(demo.root)):
        assert serving.run(parse(serving, argv)) == 0
        summary = json.loads(capsys.readouterr().out)
        bad = ["publish", "--purpose", "telepathy", "--output-dir", str(tmp_path / "bad")]
        assert serving.run(parse(serving, bad)) == 1
    assert "unknown purpose" in capsys.readouterr().err
    rows = demo.count(demo.lake / "gold" / "agg_partner_spend_by_region")
    assert summary == {"partner_sharing": {"agg_partner_spend_by_region": rows}}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "partner_sharing.duckdb",
        "partner_sharing.json",
    ]
    (entry,) = AuditLog(audit).entries()
    assert (entry.actor, entry.action, entry.details["purpose"]) == (
        "release-manager",
        "export",
        "partner_sharing",
    )
    assert not (tmp_path / "bad").exists()


def test_query_defaults_to_the_purpose_serving_file_and_the_manifest(demo, tmp_path, capsys):
    audit = tmp_path / "audit.jsonl"
    sql = "select count(*) as audience from dim_marketing_audience"
    argv = [sql, "--role", "marketing_analyst", "--purpose", "marketing"]
    argv += ["--audit-log", str(audit), "--format", "json"]
    with environment(project_env(demo.root)):
        assert access.run(parse(access, argv)) == 0
    rows = demo.count(demo.lake / "gold" / "dim_marketing_audience")
    assert json.loads(capsys.readouterr().out) == {"audience": rows}
    assert AuditLog(audit).entries()[-1].decision == "allow"


# ---------------------------------------------------------------------------------------------
# What each role can and cannot read through the serving files
# ---------------------------------------------------------------------------------------------

ALLOWED = [
    ("marketing_analyst", "marketing", "dim_marketing_audience",
     "select subject_token, age_band, postcode_area, spend_band from dim_marketing_audience"),
    ("bi_analyst", "analytics", "agg_spend_by_category_month",
     "select spend_month, merchant_category, customer_count, total_amount "
     "from agg_spend_by_category_month"),
    ("bi_analyst", "analytics", "agg_customers_by_segment",
     "select country, customer_count, avg_balance from agg_customers_by_segment"),
    ("fraud_investigator", "fraud_prevention", "fct_card_activity",
     "select transaction_id, subject_token, card_token, amount from fct_card_activity"),
    ("partner_exporter", "partner_sharing", "agg_partner_spend_by_region",
     "select spend_quarter, customer_count, total_amount_rounded from agg_partner_spend_by_region"),
    ("privacy_officer", "analytics", "agg_customers_by_segment",
     "select country, age_band, customer_count from agg_customers_by_segment"),
]  # fmt: skip

DENIED = [
    # another purpose's table: not classified for marketing, and not in the marketing file
    ("marketing_analyst", "marketing", "select transaction_id, amount from fct_card_activity",
     "column_purpose"),
    ("fraud_investigator", "fraud_prevention", "select subject_token from dim_marketing_audience",
     "column_purpose"),
    # a confidential column for a role that may see internal data at most
    ("bi_analyst", "analytics", "select country, age_band from agg_customers_by_segment",
     "max_sensitivity"),
    # the same column used only in a filter
    ("bi_analyst", "analytics",
     "select country, customer_count from agg_customers_by_segment where age_band = '30-39'",
     "max_sensitivity"),
    # ... or only in a grouping
    ("bi_analyst", "analytics",
     "select sum(customer_count) from agg_customers_by_segment group by age_band",
     "max_sensitivity"),
    # a role outside its purposes
    ("bi_analyst", "marketing", "select country from dim_marketing_audience", "role_purpose"),
    ("partner_exporter", "analytics", "select spend_month from agg_spend_by_category_month",
     "role_purpose"),
    # control: a partner exporter reads public columns, in a filter too
    ("partner_exporter", "partner_sharing",
     "select spend_quarter, customer_count from agg_partner_spend_by_region "
     "where customer_count > 0", None),
]  # fmt: skip


@pytest.fixture(scope="module")
def enforcement(demo):
    return catalog_from_manifest(demo.manifest()), load_access_policy(
        demo.root / "privacy_policy.yml"
    )


@pytest.mark.parametrize("role, purpose, table, sql", ALLOWED)
def test_roles_read_their_purpose_tables_from_the_serving_file(
    demo, enforcement, tmp_path, role, purpose, table, sql
):
    catalog, policy = enforcement
    audit = AuditLog(tmp_path / "audit.jsonl")
    database = demo.lake / "serving" / f"{purpose}.duckdb"
    result = run_query(sql, role, purpose, database, catalog, policy, audit, actor="tester")
    assert result.decision.allowed
    assert len(result.rows) == demo.count(demo.lake / "gold" / table) > 0
    (entry,) = audit.entries()
    assert (entry.decision, entry.details["role"], entry.details["purpose"]) == (
        "allow",
        role,
        purpose,
    )


@pytest.mark.parametrize("role, purpose, sql, rule", DENIED)
def test_roles_cannot_read_outside_their_purpose_and_sensitivity(
    demo, enforcement, tmp_path, role, purpose, sql, rule
):
    catalog, policy = enforcement
    audit = AuditLog(tmp_path / "audit.jsonl")
    database = demo.lake / "serving" / f"{purpose}.duckdb"
    if rule is None:  # the control case: allowed, so the denials above are not an accident
        assert run_query(sql, role, purpose, database, catalog, policy, audit).rows
        return
    with pytest.raises(AccessDenied) as denied:
        run_query(sql, role, purpose, database, catalog, policy, audit, actor="tester")
    assert rule in denied.value.decision.rules
    assert audit.entries()[-1].decision == "deny"


def test_a_serving_file_cannot_reach_other_purposes_even_without_the_enforcement_point(demo):
    # A BI tool pointed at the marketing file, with no check at all in between.
    conn = open_file(demo.lake / "serving" / "marketing.duckdb")
    try:
        with pytest.raises(duckdb.CatalogException):
            conn.execute("select * from fct_card_activity")
        assert conn.execute("select count(*) from dim_marketing_audience").fetchone()[0] > 0
        tables = conn.execute("select table_name from duckdb_tables()").fetchall()
    finally:
        conn.close()
    assert tables == [("dim_marketing_audience",)]
