"""The policy enforcement point: what each role may read for each purpose, and the evidence."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import pytest
from privacy_lakehouse import access
from privacy_lakehouse.access import (
    AccessDenied,
    AccessPolicy,
    QueryExecutionError,
    catalog_from_manifest,
    check_query,
    load_access_policy,
    run_query,
)
from privacy_lakehouse.audit_log import AuditLog

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The access part of privacy_policy.yml, inline so these tests state the rules they check.
POLICY = {
    "version": 7,
    "sensitivities": ["public", "internal", "confidential", "restricted"],
    "purposes": {
        "analytics": "reporting",
        "marketing": "campaigns",
        "fraud_prevention": "fraud",
        "partner_sharing": "partners",
    },
    "roles": {
        "bi_analyst": {"purposes": ["analytics"], "max_sensitivity": "internal"},
        "marketing_analyst": {"purposes": ["marketing"], "max_sensitivity": "confidential"},
        "fraud_investigator": {"purposes": ["fraud_prevention"], "max_sensitivity": "confidential"},
        "partner_exporter": {"purposes": ["partner_sharing"], "max_sensitivity": "public"},
        "privacy_officer": {
            "purposes": ["analytics", "marketing", "fraud_prevention", "partner_sharing"],
            "max_sensitivity": "restricted",
        },
    },
}

ALL = ["analytics", "marketing", "fraud_prevention", "partner_sharing"]
CATALOG = {
    "dim_customers": {
        "customer_key": {"sensitivity": "internal", "purposes": ALL[:3]},
        "segment": {"sensitivity": "internal", "purposes": ["analytics", "marketing"]},
        "country": {"sensitivity": "public", "purposes": ALL},
        "email_masked": {"sensitivity": "confidential", "purposes": ["marketing"]},
        "birth_year": {
            "sensitivity": "confidential",
            "purposes": ["marketing", "fraud_prevention"],
        },
    },
    "fct_transactions": {
        "transaction_id": {"sensitivity": "internal", "purposes": ALL[:3]},
        "customer_key": {"sensitivity": "internal", "purposes": ALL[:3]},
        "amount": {"sensitivity": "internal", "purposes": ALL[:3]},
        "card_token": {"sensitivity": "confidential", "purposes": ["fraud_prevention"]},
        "card_ciphertext": {"sensitivity": "restricted", "purposes": ["fraud_prevention"]},
    },
    "agg_country_sales": {
        "country": {"sensitivity": "public", "purposes": ALL},
        "total_amount": {"sensitivity": "public", "purposes": ALL},
    },
}


def decide(sql: str, role: str = "bi_analyst", purpose: str = "analytics", catalog=None):
    return check_query(sql, role, purpose, catalog or CATALOG, POLICY)


# -- per role and purpose ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "purpose", "sql", "allowed"),
    [
        ("bi_analyst", "analytics", "select segment, count(*) from dim_customers group by 1", True),
        ("bi_analyst", "analytics", "select email_masked from dim_customers", False),
        ("bi_analyst", "marketing", "select country from dim_customers", False),
        ("marketing_analyst", "marketing", "select email_masked, birth_year from dim_customers",
         True),
        ("marketing_analyst", "marketing", "select card_token from fct_transactions", False),
        ("marketing_analyst", "analytics", "select segment from dim_customers", False),
        ("fraud_investigator", "fraud_prevention", "select card_token from fct_transactions",
         True),
        ("fraud_investigator", "fraud_prevention", "select card_ciphertext from fct_transactions",
         False),
        ("fraud_investigator", "fraud_prevention", "select segment from dim_customers", False),
        ("partner_exporter", "partner_sharing", "select * from agg_country_sales", True),
        ("partner_exporter", "partner_sharing", "select amount from fct_transactions", False),
        ("privacy_officer", "fraud_prevention", "select card_ciphertext from fct_transactions",
         True),
        ("privacy_officer", "analytics", "select email_masked from dim_customers", False),
        # No column read, but the table's rows are: it needs one column the role may see.
        ("partner_exporter", "partner_sharing", "select count(*) from fct_transactions", False),
        ("partner_exporter", "partner_sharing", "select count(*) from agg_country_sales", True),
        ("bi_analyst", "analytics", "select 1 from fct_transactions where false", True),
    ],
)  # fmt: skip
def test_each_role_reads_what_its_purpose_allows(role, purpose, sql, allowed):
    decision = decide(sql, role, purpose)
    assert decision.allowed is allowed, decision.reasons
    assert bool(decision.reasons) is not allowed


def test_a_table_without_a_visible_column_is_denied_for_counting_its_rows():
    decision = decide(
        "select count(*) from fct_transactions", "partner_exporter", "partner_sharing"
    )
    assert decision.rules == ("table_purpose",)
    assert decision.reasons == (
        "table fct_transactions has no column that role partner_exporter may read for purpose "
        "partner_sharing",
    )


def test_deny_reasons_name_the_rule_table_and_column():
    decision = decide("select email_masked from dim_customers")
    assert decision.rules == ("max_sensitivity", "column_purpose")
    assert decision.reasons == (
        "policy roles.bi_analyst.max_sensitivity is internal: "
        "column dim_customers.email_masked is confidential",
        "column dim_customers.email_masked is not classified for purpose analytics "
        "(its meta.purposes)",
    )
    assert decision.tables == ("dim_customers",)
    assert decision.columns == ("dim_customers.email_masked",)


def test_a_role_outside_its_purposes_is_denied_even_for_harmless_columns():
    decision = decide("select country from dim_customers", "partner_exporter", "analytics")
    assert not decision.allowed
    assert decision.rules == ("role_purpose",)
    assert "roles.partner_exporter.purposes" in decision.reasons[0]
    assert decision.columns == ("dim_customers.country",)  # still analysed, for the audit


def test_undefined_role_and_purpose_are_denied_without_echoing_them():
    decision = decide("select country from dim_customers", "jane@example.org", "curiosity")
    assert decision.rules == ("unknown_role", "unknown_purpose")
    assert all("jane" not in reason and "curiosity" not in reason for reason in decision.reasons)


# -- every column the query reads --------------------------------------------------------------


def test_a_column_used_only_in_the_filter_is_denied_without_echoing_the_literal():
    decision = decide(
        "select segment, count(*) from dim_customers "
        "where email_masked = 'j***@example.org' group by segment"
    )
    assert not decision.allowed
    assert decision.columns == ("dim_customers.email_masked", "dim_customers.segment")
    assert all("example.org" not in reason for reason in decision.reasons)


def test_a_column_used_only_in_a_join_is_denied():
    sql = (
        "select c.segment, sum(t.amount) from dim_customers c "
        "join fct_transactions t on t.card_token = c.customer_key group by 1"
    )
    decision = decide(sql)
    assert not decision.allowed
    assert "fct_transactions.card_token" in decision.columns
    assert any("fct_transactions.card_token is confidential" in r for r in decision.reasons)
    # Without the forbidden join key the same question is allowed.
    assert decide(sql.replace("t.card_token", "t.customer_key")).allowed


@pytest.mark.parametrize(
    "clause",
    [
        "group by segment, birth_year",
        "group by segment having max(birth_year) > 1990",
        "group by segment order by max(email_masked)",
        "group by segment qualify row_number() over (order by min(birth_year)) = 1",
    ],
)
def test_columns_in_group_by_having_order_by_and_windows_are_checked(clause):
    decision = decide(f"select segment from dim_customers {clause}")
    assert not decision.allowed
    assert decision.rules == ("max_sensitivity", "column_purpose")


def test_a_cte_is_resolved_to_its_base_columns():
    through_cte = (
        "with people as (select customer_key, birth_year as yob from dim_customers) "
        "select count(*) from people where yob < 1970"
    )
    decision = decide(through_cte)
    assert not decision.allowed
    assert decision.columns == ("dim_customers.birth_year", "dim_customers.customer_key")
    clean = (
        "with spend as (select customer_key, sum(amount) as total from fct_transactions "
        "group by 1) select c.segment, avg(s.total) from spend s "
        "join dim_customers c using (customer_key) group by 1"
    )
    allowed = decide(clean)
    assert allowed.allowed, allowed.reasons
    assert allowed.columns == (
        "dim_customers.customer_key",
        "dim_customers.segment",
        "fct_transactions.amount",
        "fct_transactions.customer_key",
    )


@pytest.mark.parametrize(
    ("sql", "forbidden"),
    [
        (
            "select segment from (select segment, email_masked as e from dim_customers) s "
            "where e is not null",
            "dim_customers.email_masked",
        ),
        (
            "select segment from dim_customers where customer_key in "
            "(select customer_key from fct_transactions where card_token is not null)",
            "fct_transactions.card_token",
        ),
        (
            "select segment from dim_customers c where exists "
            "(select 1 from fct_transactions t where t.customer_key = c.customer_key "
            "and t.card_token is null)",
            "fct_transactions.card_token",
        ),
        (
            "select (select max(birth_year) from dim_customers) as oldest",
            "dim_customers.birth_year",
        ),
    ],
)
def test_subqueries_are_resolved_to_their_base_columns(sql, forbidden):
    decision = decide(sql)
    assert not decision.allowed
    assert forbidden in decision.columns
    assert any(forbidden in reason for reason in decision.reasons)


def test_set_operations_check_every_branch():
    union = "select segment from dim_customers union select country from agg_country_sales"
    assert decide(union + " order by 1").allowed
    assert decide(union + " order by segment").columns == (
        "agg_country_sales.country",
        "dim_customers.segment",
    )
    denied = decide(
        "select segment from dim_customers except select email_masked from dim_customers"
    )
    assert denied.rules == ("max_sensitivity", "column_purpose")


def test_select_star_expands_to_every_column_and_a_forbidden_one_denies():
    decision = decide("select * from dim_customers")
    assert not decision.allowed
    assert decision.columns == tuple(f"dim_customers.{c}" for c in sorted(CATALOG["dim_customers"]))
    assert decide("select c.* from dim_customers c").allowed is False
    assert decide("select * exclude (email_masked, birth_year) from dim_customers").allowed


@pytest.mark.parametrize(
    "sql",
    [
        "select dim_customers from dim_customers",  # the whole row as a struct
        "select to_json(c) from dim_customers c",
        "select struct_pack(c.*) from dim_customers c",
        "select #1 from dim_customers",
        "select * from dim_customers unpivot (v for k in (segment, country))",
        "select columns('.*') from dim_customers",
    ],
)
def test_constructs_that_hide_which_columns_are_read_are_denied(sql):
    assert not decide(sql, "privacy_officer", "marketing").allowed


# -- only a single read-only SELECT ------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "create table stolen as select * from dim_customers",
        "drop table dim_customers",
        "insert into dim_customers (segment) values ('x')",
        "update dim_customers set segment = 'x'",
        "delete from dim_customers",
        "alter table dim_customers add column x int",
        "pragma database_list",
        "attach 'other.duckdb' as other",
        "copy dim_customers to 'out.csv'",
        "install httpfs",
        "load httpfs",
        "set threads = 1",
        "select segment into stolen from dim_customers",
        "select segment from dim_customers; drop table dim_customers",
        "explain select segment from dim_customers",
        "checkpoint",
    ],
)
def test_ddl_dml_and_session_statements_are_denied(sql):
    decision = decide(sql, "privacy_officer", "analytics")
    assert not decision.allowed
    assert set(decision.rules) & {"single_select", "read_only"}


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        ("select * from read_csv('/etc/passwd')", "read_csv"),
        ("select * from read_parquet('lake/gold/*.parquet')", "read_parquet"),
        ("select * from delta_scan('lake/gold/dim_customers')", "delta_scan"),
        ("select * from duckdb_tables()", "duckdb_tables"),
        ("select * from query('select 1')", "query"),
        ("select segment from dim_customers where segment in (select * from glob('*'))", "glob"),
    ],
)
def test_table_functions_are_denied(sql, shown):
    decision = decide(sql, "privacy_officer", "analytics")
    assert decision.rules == ("table_function",)
    assert decision.reasons == (f"table function {shown} is not allowed",)


def test_functions_that_read_session_state_are_denied():
    decision = decide("select getvariable('token_salt'), country from dim_customers")
    assert decision.rules == ("function",)


@pytest.mark.parametrize(
    "sql",
    [
        "select * from bronze_customers",
        "select * from 'landing/customers.csv'",
        "select * from main.dim_customers",  # qualified names match qualified catalog keys only
    ],
)
def test_unknown_tables_are_denied(sql):
    assert decide(sql, "privacy_officer", "analytics").rules == ("unknown_table",)


def test_unknown_and_unclassified_columns_fail_closed():
    assert decide("select nickname from dim_customers").rules == ("unresolved",)
    quoted = decide('select "jane@example.org" from dim_customers')
    assert "jane" not in quoted.reasons[0]
    catalog = {"t": {"a": {"sensitivity": "public", "purposes": ALL}, "b": {"purposes": ALL}}}
    decision = decide("select a from t where b > 0", catalog=catalog)
    assert decision.rules == ("unclassified",)
    assert decision.reasons == ("column t.b has no sensitivity in the catalog (fail closed)",)


def test_unparseable_sql_is_denied_without_echoing_it():
    decision = decide("select from where 'secret-value' ((")
    assert not decision.allowed
    assert all("secret-value" not in reason for reason in decision.reasons)


# -- policy and catalog ------------------------------------------------------------------------


def test_the_project_policy_file_loads_with_its_roles():
    policy = load_access_policy(PROJECT_ROOT / "privacy_policy.yml")
    assert policy.sensitivities[0] == "public" and policy.sensitivities[-1] == "restricted"
    assert "bi_analyst" in policy.roles and "analytics" in policy.purposes
    assert set(policy.roles["privacy_officer"].purposes) == set(policy.purposes)


def test_a_malformed_policy_is_rejected():
    broken = json.loads(json.dumps(POLICY))
    broken["roles"]["bi_analyst"]["max_sensitivity"] = "secret"
    with pytest.raises(access.PolicyError, match="roles.bi_analyst.max_sensitivity"):
        AccessPolicy.from_mapping(broken)


def test_catalog_from_manifest_reads_config_meta_then_meta_and_keys_by_alias():
    def column(name, meta, under_config=True):
        return {"name": name, "config": {"meta": meta}} if under_config else {"meta": meta}

    manifest = {
        "nodes": {
            "model.p.dim_customers": {
                "resource_type": "model",
                "name": "dim_customers",
                "alias": "customers",
                "schema": "gold",
                "database": "warehouse",
                "columns": {
                    "segment": column("segment", {"sensitivity": "internal", "purposes": ALL}),
                    "email_masked": column(
                        "email_masked",
                        {"sensitivity": "confidential", "purposes": ["marketing"]},
                        under_config=False,
                    ),
                },
            },
            "model.p.stg_a": {"resource_type": "model", "name": "stg_a", "alias": "dup",
                              "schema": "silver", "columns": {}},
            "model.p.stg_b": {"resource_type": "model", "name": "stg_b", "alias": "dup",
                              "schema": "gold", "columns": {}},
            "seed.p.countries": {"resource_type": "seed", "name": "countries", "columns": {}},
        }
    }  # fmt: skip
    catalog = catalog_from_manifest(manifest)
    expected = {
        "segment": {"sensitivity": "internal", "purposes": ALL},
        "email_masked": {"sensitivity": "confidential", "purposes": ["marketing"]},
    }
    for key in ("customers", "dim_customers", "gold.customers", "warehouse.gold.customers"):
        assert catalog[key] == expected
    assert "countries" not in catalog
    assert "dup" not in catalog  # ambiguous: only the qualified names resolve
    assert "silver.dup" in catalog and "gold.dup" in catalog
    decision = check_query("select segment from gold.customers", "bi_analyst", "analytics",
                           catalog, POLICY)  # fmt: skip
    assert decision.allowed and decision.tables == ("gold.customers",)


# -- running queries ---------------------------------------------------------------------------


@pytest.fixture
def serving_file(tmp_path: Path) -> Path:
    path = tmp_path / "serving.duckdb"
    connection = duckdb.connect(str(path))
    connection.execute(
        "create table dim_customers as select * from (values "
        "('k1', 'retail', 'NL', 'j***@example.org', 1980, 'raw-secret-1'), "
        "('k2', 'retail', 'BE', 'a***@example.com', 1991, 'raw-secret-2'), "
        "('k3', 'private', 'NL', 'p***@example.net', 1975, 'raw-secret-3')) "
        "as t(customer_key, segment, country, email_masked, birth_year, not_in_catalog)"
    )
    connection.close()
    return path


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "_audit" / "audit.jsonl")


def test_an_allowed_query_returns_rows_and_leaves_an_allow_entry(serving_file, audit):
    result = run_query(
        "select segment, count(*) as customers from dim_customers group by segment order by 1",
        "bi_analyst",
        "analytics",
        serving_file,
        CATALOG,
        POLICY,
        audit,
        actor="analyst_1",
    )
    assert result.column_names == ("segment", "customers")
    assert result.rows == [("private", 1), ("retail", 2)]
    (entry,) = audit.entries()
    assert (entry.action, entry.decision, entry.actor) == ("access_decision", "allow", "analyst_1")
    assert entry.object == ("dim_customers", "dim_customers.segment")
    assert entry.policy_version == "7"
    assert entry.details == {
        "role": "bi_analyst",
        "purpose": "analytics",
        "rules_violated": [],
        "columns_checked": 1,
    }


def test_a_denied_query_raises_and_leaves_a_deny_entry_without_data(serving_file, audit):
    sql = "select segment from dim_customers where email_masked like 'j***@example.org'"
    with pytest.raises(AccessDenied) as denied:
        run_query(sql, "bi_analyst", "analytics", serving_file, CATALOG, POLICY, audit)
    assert denied.value.decision.columns == ("dim_customers.email_masked", "dim_customers.segment")
    (entry,) = audit.entries()
    assert entry.decision == "deny"
    assert "dim_customers.email_masked" in entry.object
    assert entry.details["rules_violated"] == ["max_sensitivity", "column_purpose"]
    assert "example.org" not in audit.path.read_text()
    assert audit.verify(audit.read_head()).ok


def test_a_denied_query_with_an_undefined_role_is_still_audited(serving_file, audit):
    with pytest.raises(AccessDenied):
        run_query("drop table dim_customers", "jane@example.org", "analytics", serving_file,
                  CATALOG, POLICY, audit)  # fmt: skip
    (entry,) = audit.entries()
    assert entry.decision == "deny" and entry.details["role"] == "(undefined role)"
    assert entry.details["rules_violated"] == ["unknown_role", "single_select"]


def test_select_star_returns_only_catalogued_columns(serving_file, audit):
    catalog = {"dim_customers": {k: v for k, v in CATALOG["dim_customers"].items()}}
    result = run_query("select * from dim_customers order by customer_key", "privacy_officer",
                       "marketing", serving_file, catalog, POLICY, audit)  # fmt: skip
    assert "not_in_catalog" not in result.column_names
    assert result.column_names == tuple(CATALOG["dim_customers"])
    assert result.rows[0] == ("k1", "retail", "NL", "j***@example.org", 1980)


def test_a_union_with_order_by_runs(serving_file, audit):
    sql = "select segment from dim_customers union select country from dim_customers order by 1"
    result = run_query(sql, "bi_analyst", "analytics", serving_file, CATALOG, POLICY, audit)
    assert result.rows == [("BE",), ("NL",), ("private",), ("retail",)]


def test_execution_errors_do_not_echo_values(serving_file, audit):
    with pytest.raises(QueryExecutionError) as failed:
        run_query("select cast(segment as integer) from dim_customers", "bi_analyst",
                  "analytics", serving_file, CATALOG, POLICY, audit)  # fmt: skip
    assert "retail" not in str(failed.value) and "ConversionException" in str(failed.value)
    assert audit.entries()[0].decision == "allow"  # the decision is recorded before running


def test_external_access_is_off_except_for_allowed_directories(tmp_path, audit):
    data_dir = tmp_path / "lake"
    data_dir.mkdir()
    (data_dir / "countries.csv").write_text("country,total_amount\nNL,10\nBE,5\n")
    database = tmp_path / "views.duckdb"
    connection = duckdb.connect(str(database))
    connection.execute(
        f"create view agg_country_sales as select * from read_csv('{data_dir / 'countries.csv'}')"
    )
    connection.close()
    sql = "select country, total_amount from agg_country_sales order by 1"
    arguments = (sql, "partner_exporter", "partner_sharing", database, CATALOG, POLICY, audit)
    with pytest.raises(QueryExecutionError, match="PermissionException"):
        run_query(*arguments)
    result = run_query(*arguments, allowed_directories=[data_dir])
    assert result.rows == [("BE", 5), ("NL", 10)]


# -- CLI ---------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    access.add_arguments(parser)
    return access.run(parser.parse_args(argv))


@pytest.fixture
def cli_files(tmp_path: Path, serving_file: Path) -> list[str]:
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(CATALOG))
    return [
        "--database",
        str(serving_file),
        "--catalog",
        str(catalog_path),
        "--policy",
        str(PROJECT_ROOT / "privacy_policy.yml"),
        "--audit-log",
        str(tmp_path / "audit.jsonl"),
    ]


def test_cli_query_prints_csv_when_allowed(cli_files, capsys, tmp_path):
    sql = "select country, count(*) as n from dim_customers group by 1 order by 1"
    code = _cli([*cli_files, "--role", "bi_analyst", "--purpose", "analytics", sql])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == ["country,n", "BE,1", "NL,2"]


def test_cli_query_exits_3_on_deny_with_the_reason_on_stderr(cli_files, capsys, tmp_path):
    sql = "select country from dim_customers where birth_year = 1980"
    code = _cli([*cli_files, "--role", "bi_analyst", "--purpose", "analytics", sql])
    assert code == access.EXIT_DENIED == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "dim_customers.birth_year is confidential" in captured.err
    assert "1980" not in captured.err
    (entry,) = AuditLog(tmp_path / "audit.jsonl").entries()
    assert entry.decision == "deny"


def test_the_query_command_plugs_into_the_cli(cli_files, monkeypatch, capsys):
    from privacy_lakehouse import cli

    entry = ("query", "privacy_lakehouse.access", "Run a read-only query as a role.")
    monkeypatch.setattr(cli, "COMMANDS", [entry])
    sql = "select count(*) as n from dim_customers"
    argv = ["query", *cli_files, "--role", "bi_analyst", "--purpose", "analytics", sql]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "3"]
    assert cli.main([*argv[:-1], "select * from read_csv('x.csv')"]) == 3
