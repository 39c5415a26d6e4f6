"""Policy as code: the vocabulary, fail-closed validation, the plan, and the privacy tests.

Unit tests run on plain dict nodes. Two tiny dbt projects, each built once per module in a
temporary folder with dbtRunner, prove the on-run-start check fails the build (and passes a clean
project), and that the generic privacy tests count correctly and store no row values.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
import yaml
from privacy_lakehouse import policy as pl

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO / "privacy_policy.yml"


@pytest.fixture(scope="module")
def policy() -> pl.Policy:
    return pl.load_policy(POLICY_FILE)


def column(**meta):
    base = {"sensitivity": "internal", "privacy_role": "none", "purposes": ["analytics"]}
    base.update(meta)
    return {k: v for k, v in base.items() if v is not None}


def node(name, layer, columns, resource_type="model"):
    return {
        "unique_id": f"{resource_type}.demo.{name}",
        "name": name,
        "resource_type": resource_type,
        "layer": layer,
        "columns": columns,
    }


EMAIL_IN_GOLD = dict(
    sensitivity="restricted", privacy_role="direct_identifier", pii_type="email", purposes=[]
)


def messages(violations):
    return [v.message for v in violations]


# --- the policy file ----------------------------------------------------------------------------


def test_load_policy_reads_the_vocabulary(policy):
    assert policy.version == 1
    assert policy.sensitivities == ("public", "internal", "confidential", "restricted")
    assert policy.sensitivity_rank("restricted") > policy.sensitivity_rank("internal")
    assert policy.layers == ("bronze", "silver", "gold")
    assert "tokenize" in policy.treatments and "marketing" in policy.purposes
    assert policy.allowed("gold", "restricted") == ("drop", "nullify")
    assert policy.min_k("gold") == 5 and policy.min_k("partner_sharing") == 10
    assert policy.roles["bi_analyst"].purposes == ("analytics",)
    assert policy.roles["bi_analyst"].max_sensitivity == "internal"


def test_load_policy_defaults_to_the_project_root(tmp_path, monkeypatch):
    shutil.copy(POLICY_FILE, tmp_path / "privacy_policy.yml")
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_HOME", str(tmp_path))
    loaded = pl.load_policy()
    assert loaded.path == (tmp_path / "privacy_policy.yml").resolve()
    (tmp_path / "privacy_policy.yml").unlink()
    with pytest.raises(pl.PolicyError, match="policy file not found"):
        pl.load_policy()


def test_policy_structure_errors_are_all_reported():
    document = yaml.safe_load(POLICY_FILE.read_text())
    broken = copy.deepcopy(document)
    broken["treatmnets"] = broken.pop("treatments")  # a typo in a top-level key
    with pytest.raises(pl.PolicyError) as raised:
        pl.parse_policy(broken)
    assert "unknown top-level key 'treatmnets' (did you mean 'treatments'?)" in str(raised.value)
    assert "missing top-level key 'treatments'" in str(raised.value)

    broken = copy.deepcopy(document)
    broken["allowed_treatments"]["gold"]["restricted"] = ["drop", "nulify"]
    del broken["allowed_treatments"]["silver"]["public"]
    broken["releases"]["gold"]["min_k"] = 1
    broken["roles"]["bi_analyst"]["purposes"] = ["analytcs"]
    with pytest.raises(pl.PolicyError) as raised:
        pl.parse_policy(broken)
    text = str(raised.value)
    assert "allowed_treatments.gold.restricted: unknown treatment 'nulify'" in text
    assert "allowed_treatments.silver has no entry for 'public'" in text
    assert "releases.gold.min_k must be an integer of at least 2" in text
    assert "roles.bi_analyst: unknown purpose 'analytcs' (did you mean 'analytics'?)" in text


# --- validation on dict nodes -------------------------------------------------------------------


def test_clean_nodes_pass(policy):
    nodes = [
        node("customers", "landing", {"email": column(**EMAIL_IN_GOLD)}, "source"),
        node(
            "stg_customers",
            "silver",
            {
                "customer_token": column(
                    sensitivity="confidential",
                    privacy_role="direct_identifier",
                    pii_type="customer_number",
                    treatment={"bronze": "tokenize", "silver": "tokenize"},
                ),
                "segment": column(),
            },
        ),
        node(
            "dim_customers", "gold", {"email": column(**EMAIL_IN_GOLD, treatment={"gold": "drop"})}
        ),
        node("countries", "seed", {"code": column(sensitivity="public")}, "seed"),
    ]
    assert pl.validate_nodes(nodes, policy) == []


def test_misspelled_treatment(policy):
    nodes = [
        node(
            "stg_customers",
            "silver",
            {
                "birth_date": column(
                    sensitivity="confidential",
                    privacy_role="quasi_identifier",
                    pii_type="birth_date",
                    treatment={"silver": "year_onyl"},
                )
            },
        )
    ]
    violations = pl.validate_nodes(nodes, policy)
    # Only the typo is reported: "missing treatment" would repeat the same problem.
    assert violations == [
        pl.PolicyViolation(
            "stg_customers",
            "birth_date",
            "unknown_treatment",
            "stg_customers.birth_date: unknown_treatment: treatment.silver 'year_onyl' is not a "
            "treatment in the policy (did you mean 'year_only'?)",
        )
    ]


def test_unclassified_column_and_model(policy):
    nodes = [
        node("stg_orders", "silver", {"order_id": column(), "note": {}}),
        node("int_orders_joined", "silver", {}),
    ]
    assert messages(pl.validate_nodes(nodes, policy)) == [
        "stg_orders.note: unclassified_column: no config.meta; declare sensitivity, "
        "privacy_role and purposes",
        "int_orders_joined: unclassified_model: model declares no columns in YAML; every column "
        "needs config.meta (sensitivity, privacy_role, purposes)",
    ]


def test_missing_and_unknown_classification(policy):
    meta = {"privacy_role": "quasi_identifer", "purposes": ["analytics"]}
    violations = pl.validate_nodes([node("stg_orders", "silver", {"zip": meta})], policy)
    assert [v.rule for v in violations] == ["missing_sensitivity", "unknown_privacy_role"]
    assert "(did you mean 'quasi_identifier'?)" in violations[1].message
    assert all(v.model == "stg_orders" and v.column == "zip" for v in violations)


@pytest.mark.parametrize("treatment", [None, "none", "nullify", "encrypt"])
def test_untreated_identifier_in_gold(policy, treatment):
    meta = column(**EMAIL_IN_GOLD, treatment={"gold": treatment} if treatment else None)
    violations = pl.validate_nodes([node("fct_orders", "gold", {"email": meta})], policy)
    shown = repr(treatment or "none declared")
    assert messages(violations) == [
        f"fct_orders.email: untreated_identifier_in_gold: direct identifier reaches gold with "
        f"treatment {shown}; gold allows only drop or tokenize for direct identifiers"
    ]


def test_tokenized_identifier_in_gold_must_still_be_allowed_for_its_sensitivity(policy):
    confidential = column(**{**EMAIL_IN_GOLD, "sensitivity": "confidential"})
    restricted = column(**EMAIL_IN_GOLD)
    for meta in (confidential, restricted):
        meta["treatment"] = {"gold": "tokenize"}
    nodes = [node("fct_orders", "gold", {"email": confidential, "email_2": restricted})]
    violations = pl.validate_nodes(nodes, policy)
    # gold allows tokenize for confidential data, but only drop or nullify for restricted.
    assert [(v.column, v.rule) for v in violations] == [("email_2", "treatment_not_allowed")]


def test_unknown_purpose(policy):
    meta = column(purposes=["analytics", "marketting"])
    violations = pl.validate_nodes([node("agg_sales", "gold", {"revenue": meta})], policy)
    assert messages(violations) == [
        "agg_sales.revenue: unknown_purpose: purpose 'marketting' is not in the policy (did you "
        "mean 'marketing'?); expected one of analytics, marketing, fraud_prevention, "
        "partner_sharing"
    ]


def test_purposes_are_required_and_must_be_a_list(policy):
    nodes = [
        node(
            "agg_sales",
            "gold",
            {
                "a": {"sensitivity": "public", "privacy_role": "none"},
                "b": {"sensitivity": "public", "privacy_role": "none", "purposes": "analytics"},
                "c": {"sensitivity": "public", "privacy_role": "none", "purposes": []},
            },
        )
    ]
    assert [(v.column, v.rule) for v in pl.validate_nodes(nodes, policy)] == [
        ("a", "missing_purposes"),
        ("b", "invalid_purposes"),
    ]


def test_pii_type_required_for_personal_data(policy):
    nodes = [
        node(
            "stg_customers",
            "silver",
            {
                "phone": column(privacy_role="direct_identifier", treatment={"silver": "tokenize"}),
                "postcode": column(
                    sensitivity="confidential",
                    privacy_role="quasi_identifier",
                    pii_type="zipcode",
                    treatment={"silver": "postcode_prefix"},
                ),
            },
        )
    ]
    violations = pl.validate_nodes(nodes, policy)
    assert [(v.column, v.rule) for v in violations] == [
        ("phone", "missing_pii_type"),
        # internal data in silver may not be tokenized: the policy lists what each level allows
        ("phone", "treatment_not_allowed"),
        ("postcode", "unknown_pii_type"),
    ]


def test_personal_data_needs_a_treatment_for_silver_and_gold(policy):
    quasi = column(sensitivity="confidential", privacy_role="quasi_identifier", pii_type="postcode")
    violations = pl.validate_nodes(
        [node("stg_a", "silver", {"postcode": quasi}), node("dim_a", "gold", {"postcode": quasi})],
        policy,
    )
    assert [(v.model, v.rule) for v in violations] == [
        ("stg_a", "missing_treatment"),
        ("dim_a", "missing_treatment"),
    ]
    assert "allowed for confidential: tokenize, drop," in violations[0].message


def test_restricted_data_in_bronze_needs_a_protective_treatment(policy):
    restricted = column(sensitivity="restricted", privacy_role="direct_identifier", pii_type="iban")
    violations = pl.validate_nodes(
        [node("raw_bank__accounts", "bronze", {"iban": restricted})], policy
    )
    assert messages(violations) == [
        "raw_bank__accounts.iban: treatment_not_allowed: treatment.bronze 'none' (none declared) "
        "is not allowed for restricted data in bronze; allowed: tokenize, encrypt, "
        "tokenize_and_encrypt, drop"
    ]
    restricted["treatment"] = {"bronze": "tokenize_and_encrypt"}
    assert (
        pl.validate_nodes([node("raw_bank__accounts", "bronze", {"iban": restricted})], policy)
        == []
    )


def test_treatment_keys_must_be_layers_and_meta_keys_are_spell_checked(policy):
    meta = column(treatment={"silvr": "none"}, purpose=["analytics"])
    violations = pl.validate_nodes([node("stg_a", "silver", {"amount": meta})], policy)
    assert [(v.rule, v.message.split(": ", 2)[2]) for v in violations] == [
        ("unknown_meta_key", "meta key 'purpose' (did you mean 'purposes'?)"),
        (
            "unknown_treatment_layer",
            "treatment key 'silvr' is not a layer (did you mean 'silver'?); expected one of "
            "bronze, silver, gold",
        ),
    ]


def test_models_outside_the_layer_folders_fail(policy):
    violations = pl.validate_nodes([node("scratch", "", {"a": column()})], policy)
    assert messages(violations) == [
        "scratch: unknown_layer: model is in layer ''; models must live under "
        "models/{landing,bronze,silver,gold}/ so the policy knows which layer they are in"
    ]
    assert pl.layer_of("model", ["demo", "scratch"]) == ""
    assert pl.layer_of("model", ["demo", "landing", "crm", "parsed_customers"]) == "landing"


def test_landing_models_need_classification_not_treatment(policy):
    email = column(**EMAIL_IN_GOLD)
    assert pl.validate_nodes([node("parsed_customers", "landing", {"email": email})], policy) == []
    del email["sensitivity"]
    violations = pl.validate_nodes([node("parsed_customers", "landing", {"email": email})], policy)
    assert [v.rule for v in violations] == ["missing_sensitivity"]


def test_sources_and_seeds_need_classification_not_treatment(policy):
    unclassified = {"email": {"privacy_role": "direct_identifier", "purposes": []}}
    nodes = [
        node("crm.customers", "landing", unclassified, "source"),
        node("countries", "seed", {"code": {}}, "seed"),
        node("crm.customers_ok", "landing", {"email": column(**EMAIL_IN_GOLD)}, "source"),
    ]
    assert [(v.model, v.rule) for v in pl.validate_nodes(nodes, policy)] == [
        ("crm.customers", "missing_sensitivity"),
        ("crm.customers", "missing_pii_type"),
        ("countries", "unclassified_column"),
    ]


def test_validate_columns_present():
    violations = pl.validate_columns_present(
        "dim_customers",
        declared={"customer_token", "Segment", "email"},
        actual={"customer_token", "segment", "email", "birth_date"},
        dropped={"email"},
    )
    assert messages(violations) == [
        "dim_customers.birth_date: undeclared_column: the built relation has this column but the "
        "model's YAML does not classify it",
        "dim_customers.email: dropped_column_present: declared with treatment drop for this "
        "layer but present in the built relation",
    ]
    assert pl.validate_columns_present("m", {"a", "b"}, {"A"}) == []


# --- nodes from artifacts -----------------------------------------------------------------------

MANIFEST = {
    "nodes": {
        "model.demo.dim_customers": {
            "unique_id": "model.demo.dim_customers",
            "resource_type": "model",
            "name": "dim_customers",
            "fqn": ["demo", "gold", "customers", "dim_customers"],
            "columns": {
                "email": {
                    "name": "email",
                    "meta": {"sensitivity": "public"},
                    "config": {"meta": {**EMAIL_IN_GOLD, "treatment": {"gold": "none"}}},
                },
                "segment": {"name": "segment", "meta": column(), "config": {"meta": {}}},
            },
        },
        "snapshot.demo.customers_snapshot": {
            "unique_id": "snapshot.demo.customers_snapshot",
            "resource_type": "snapshot",
            "name": "customers_snapshot",
            "fqn": ["demo", "customers", "customers_snapshot"],
            "columns": {"segment": {"name": "segment", "config": {"meta": column()}}},
        },
        "seed.demo.countries": {
            "unique_id": "seed.demo.countries",
            "resource_type": "seed",
            "name": "countries",
            "fqn": ["demo", "countries"],
            "columns": {"code": {"name": "code", "config": {"meta": column()}}},
        },
        "test.demo.not_null_x": {"unique_id": "test.demo.not_null_x", "resource_type": "test"},
        "analysis.demo.a": {"unique_id": "analysis.demo.a", "resource_type": "analysis"},
    },
    "sources": {
        "source.demo.crm.customers": {
            "unique_id": "source.demo.crm.customers",
            "resource_type": "source",
            "source_name": "crm",
            "name": "customers",
            "fqn": ["demo", "bronze", "crm", "crm", "customers"],
            "columns": {},
        }
    },
}


def test_nodes_from_manifest_maps_layers_and_prefers_config_meta():
    nodes = {n["unique_id"]: n for n in pl.nodes_from_manifest(MANIFEST)}
    assert set(nodes) == {
        "model.demo.dim_customers",
        "snapshot.demo.customers_snapshot",
        "seed.demo.countries",
        "source.demo.crm.customers",
    }
    assert nodes["model.demo.dim_customers"]["layer"] == "gold"
    assert nodes["snapshot.demo.customers_snapshot"]["layer"] == "silver"
    assert nodes["seed.demo.countries"]["layer"] == "seed"
    source = nodes["source.demo.crm.customers"]
    assert (source["layer"], source["name"]) == ("landing", "crm.customers")
    email = nodes["model.demo.dim_customers"]["columns"]["email"]
    assert email["sensitivity"] == "restricted"  # config.meta wins over the older meta
    assert nodes["model.demo.dim_customers"]["columns"]["segment"] == column()


def test_nodes_from_graph_json_matches_the_manifest():
    payload = {"nodes": list(MANIFEST["nodes"].values()) + list(MANIFEST["sources"].values())}
    from_graph = sorted(pl.nodes_from_graph_json(json.dumps(payload)), key=lambda n: n["unique_id"])
    assert from_graph == pl.nodes_from_manifest(MANIFEST)


def test_register_exposes_the_check_to_duckdb(tmp_path):
    conn = duckdb.connect()
    pl.register(conn, POLICY_FILE)
    payload = json.dumps({"nodes": list(MANIFEST["nodes"].values())}).replace("'", "''")
    result = conn.sql(f"select pl_policy_violations('{payload}')").fetchall()[0][0]
    assert json.loads(result) == [
        "dim_customers.email: untreated_identifier_in_gold: direct identifier reaches gold with "
        "treatment 'none'; gold allows only drop or tokenize for direct identifiers"
    ]
    # Registering twice (a reconnect) replaces the function; a missing policy fails the query.
    pl.register(conn, tmp_path / "missing.yml")
    with pytest.raises(duckdb.Error, match="policy file not found"):
        conn.sql("select pl_policy_violations('[]')").fetchall()


# --- the plan and the CLI ----------------------------------------------------------------------


def test_plan_rows_and_renderers(policy):
    rows = pl.plan(MANIFEST, policy)
    assert [(r["model"], r["column"], r["layer"]) for r in rows] == [
        ("crm.customers", None, "landing"),
        ("countries", "code", "seed"),
        ("customers_snapshot", "segment", "silver"),
        ("dim_customers", "email", "gold"),
        ("dim_customers", "segment", "gold"),
    ]
    email = rows[3]
    assert email == {
        "model": "dim_customers",
        "layer": "gold",
        "column": "email",
        "sensitivity": "restricted",
        "privacy_role": "direct_identifier",
        "pii_type": "email",
        "treatment": "none",
        "purposes": [],
        "check": "untreated_identifier_in_gold",
    }
    assert rows[0]["check"] == "unclassified_model"

    selected = pl.plan(MANIFEST, policy, select=["dim_customers"])
    text = pl.render_plan(selected, "text").splitlines()
    assert text[0].split() == list(pl.PLAN_FIELDS)
    assert text[2].split() == [
        "dim_customers",
        "gold",
        "email",
        "restricted",
        "direct_identifier",
        "email",
        "none",
        "-",
        "untreated_identifier_in_gold",
    ]
    markdown = pl.render_plan(selected, "markdown").splitlines()
    assert markdown[0] == "| " + " | ".join(pl.PLAN_FIELDS) + " |"
    assert (
        markdown[3]
        == "| dim_customers | gold | segment | internal | none | - | - | analytics | ok |"
    )
    assert json.loads(pl.render_plan(selected, "json")) == selected


def run_cli(*argv):
    parser = argparse.ArgumentParser()
    pl.add_arguments(parser)
    return pl.run(parser.parse_args(list(argv)))


def test_cli_check_and_plan(tmp_path, capsys):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    assert run_cli("check", "--manifest", str(manifest), "--policy", str(POLICY_FILE)) == 1
    err = capsys.readouterr().err
    assert "policy check failed: 2 violation(s) of policy version 1:" in err
    assert "  - dim_customers.email: untreated_identifier_in_gold:" in err
    assert "  - crm.customers: unclassified_model:" in err

    clean = copy.deepcopy(MANIFEST)
    clean["nodes"]["model.demo.dim_customers"]["columns"]["email"]["config"]["meta"][
        "treatment"
    ] = {"gold": "drop"}
    clean["sources"] = {}
    manifest.write_text(json.dumps(clean))
    assert run_cli("check", "--manifest", str(manifest), "--policy", str(POLICY_FILE)) == 0
    assert "policy check passed: 3 nodes, 4 columns, policy version 1" in capsys.readouterr().out

    code = run_cli(
        "plan",
        "--manifest",
        str(manifest),
        "--policy",
        str(POLICY_FILE),
        "--format",
        "json",
        "--select",
        "dim_customers",
    )
    assert code == 0
    assert [r["column"] for r in json.loads(capsys.readouterr().out)] == ["email", "segment"]
    missing = str(tmp_path / "nope.json")
    assert run_cli("plan", "--manifest", missing, "--policy", str(POLICY_FILE)) == 2
    assert "run `dbt parse` first" in capsys.readouterr().err


# --- tiny dbt projects --------------------------------------------------------------------------

PLUGIN_SOURCE = """
from pathlib import Path

from dbt.adapters.duckdb.plugins import BasePlugin

from privacy_lakehouse import duckdb_functions, policy
from privacy_lakehouse.keyring import Keyring, LocalKeyFileProvider


class Plugin(BasePlugin):
    def initialize(self, plugin_config):
        self.policy_path = plugin_config.get("policy_path")
        keys = Path(plugin_config["keys_dir"])
        self.keyring = Keyring(
            keys / "keyring.sqlite", LocalKeyFileProvider(keys / "master.key", "dev")
        )

    def configure_connection(self, conn):
        policy.register(conn, self.policy_path)
        duckdb_functions.register(conn, self.keyring)
"""


def project_keyring(root: Path):
    """The keyring the test project's plugin uses (its salts key the stored group labels)."""
    from privacy_lakehouse.keyring import Keyring, LocalKeyFileProvider

    keys = root / "keys"
    return Keyring(keys / "keyring.sqlite", LocalKeyFileProvider(keys / "master.key", "dev"))


def write_project(root: Path, plugin_module: str) -> None:
    """A dbt project named like ours (so the macros' dispatch namespace resolves) with only
    the policy and test macros copied in, a DuckDB profile and a plugin that registers the
    policy function."""
    for folder in ("policy", "tests"):
        shutil.copytree(REPO / "macros" / folder, root / "macros" / folder)
    shutil.copy(POLICY_FILE, root / "privacy_policy.yml")
    (root / "models" / "silver").mkdir(parents=True)
    (root / "models" / "gold").mkdir(parents=True)
    (root / "dbt_project.yml").write_text(
        textwrap.dedent(
            """\
            name: privacy_lakehouse
            version: "1.0"
            profile: policy_test
            on-run-start:
              - "{{ privacy_lakehouse.assert_privacy_policy() }}"
            """
        )
    )
    (root / f"{plugin_module}.py").write_text(PLUGIN_SOURCE)
    db = "{{ env_var('PL_POLICY_TEST_DB', '" + str(root / "warehouse.duckdb") + "') }}"
    profile = {
        "policy_test": {
            "target": "dev",
            "outputs": {
                "dev": {
                    "type": "duckdb",
                    "path": db,
                    "plugins": [
                        {
                            "module": plugin_module,
                            "config": {
                                "policy_path": str(root / "privacy_policy.yml"),
                                "keys_dir": str(root / "keys"),
                            },
                        }
                    ],
                },
                "no_plugin": {"type": "duckdb", "path": str(root / "no_plugin.duckdb")},
            },
        }
    }
    (root / "profiles.yml").write_text(yaml.safe_dump(profile))


def dbt(root: Path, *args: str):
    from dbt.cli.main import dbtRunner

    argv = [*args, "--project-dir", str(root), "--profiles-dir", str(root)]
    return dbtRunner().invoke([*argv, "--no-send-anonymous-usage-stats", "--quiet"])


@pytest.fixture(scope="module")
def project_factory(tmp_path_factory):
    added: list[str] = []

    def make(name: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        write_project(root, f"pl_{name}_plugin")
        sys.path.insert(0, str(root))
        added.append(str(root))
        return root

    yield make
    for entry in added:
        sys.path.remove(entry)


def meta_yaml(meta: dict) -> str:
    return json.dumps({"meta": meta})


STG_CUSTOMERS_SQL = """
select * from (values
    ('tok-1', 'alice@example.com', 1980, 'retail'),
    ('tok-2', 'bob@example.com', 1991, 'business')
) as t(customer_token, email, birth_year, segment)
"""
DIM_CUSTOMERS_SQL = "select customer_token, birth_year, segment from {{ ref('stg_customers') }}"

TOKEN = {
    "sensitivity": "confidential",
    "privacy_role": "direct_identifier",
    "pii_type": "customer_number",
    "purposes": ["analytics"],
}
EMAIL = {"sensitivity": "restricted", "privacy_role": "direct_identifier", "pii_type": "email"}
BIRTH_YEAR = {
    "sensitivity": "confidential",
    "privacy_role": "quasi_identifier",
    "pii_type": "birth_date",
    "purposes": ["analytics"],
}
SEGMENT = {"sensitivity": "internal", "privacy_role": "none", "purposes": ["analytics"]}


def policy_project_yaml(defect: str | None) -> str:
    stg = {
        "customer_token": {**TOKEN, "treatment": {"silver": "tokenize"}},
        "email": {**EMAIL, "purposes": ["marketing"], "treatment": {"silver": "encrypt"}},
        "birth_year": {**BIRTH_YEAR, "treatment": {"silver": "year_only"}},
        "segment": SEGMENT,
    }
    dim = {
        "customer_token": {**TOKEN, "treatment": {"gold": "tokenize"}},
        "birth_year": {**BIRTH_YEAR, "treatment": {"gold": "year_only"}},
        "segment": SEGMENT,
    }
    if defect == "misspelled_treatment":
        stg["birth_year"]["treatment"] = {"silver": "year_onyl"}
    elif defect == "unclassified_column":
        dim["segment"] = None
    elif defect == "untreated_identifier_in_gold":
        dim["customer_token"]["treatment"] = {"gold": "none"}
    elif defect == "unknown_purpose":
        stg["segment"] = {**SEGMENT, "purposes": ["advertising"]}

    def columns(spec):
        return [
            {"name": name} if meta is None else {"name": name, "config": {"meta": meta}}
            for name, meta in spec.items()
        ]

    models = [
        {"name": "stg_customers", "columns": columns(stg)},
        {"name": "dim_customers", "columns": columns(dim)},
    ]
    return yaml.safe_dump({"models": models}, sort_keys=False)


@pytest.fixture(scope="module")
def policy_project(project_factory):
    root = project_factory("policy_check")
    (root / "models" / "silver" / "stg_customers.sql").write_text(STG_CUSTOMERS_SQL)
    (root / "models" / "gold" / "dim_customers.sql").write_text(DIM_CUSTOMERS_SQL)
    return root


def relations(db_path: Path) -> set[str]:
    if not db_path.exists():
        return set()
    with duckdb.connect(str(db_path)) as conn:
        return {
            row[0]
            for row in conn.sql("select table_name from information_schema.tables").fetchall()
        }


def test_clean_project_builds(policy_project, monkeypatch, tmp_path):
    (policy_project / "models" / "schema.yml").write_text(policy_project_yaml(None))
    db_path = tmp_path / "clean.duckdb"
    monkeypatch.setenv("PL_POLICY_TEST_DB", str(db_path))
    result = dbt(policy_project, "run")
    assert result.success, result.exception
    assert {"stg_customers", "dim_customers"} <= relations(db_path)

    # The same check in CI, over the manifest this run wrote.
    manifest = policy_project / "target" / "manifest.json"
    policy_args = ("--manifest", str(manifest), "--policy", str(POLICY_FILE))
    assert run_cli("check", *policy_args) == 0


DEFECT_MESSAGES = {
    "misspelled_treatment": "stg_customers.birth_year: unknown_treatment: treatment.silver "
    "'year_onyl' is not a treatment in the policy (did you mean 'year_only'?)",
    "unclassified_column": "dim_customers.segment: unclassified_column: no config.meta; declare "
    "sensitivity, privacy_role and purposes",
    "untreated_identifier_in_gold": "dim_customers.customer_token: untreated_identifier_in_gold: "
    "direct identifier reaches gold with treatment 'none'; gold allows only drop or tokenize",
    "unknown_purpose": "stg_customers.segment: unknown_purpose: purpose 'advertising' is not in "
    "the policy",
}


@pytest.mark.parametrize("defect", list(DEFECT_MESSAGES))
def test_policy_defect_fails_the_build(policy_project, defect, monkeypatch, tmp_path, capsys):
    (policy_project / "models" / "schema.yml").write_text(policy_project_yaml(defect))
    db_path = tmp_path / "defect.duckdb"
    monkeypatch.setenv("PL_POLICY_TEST_DB", str(db_path))
    result = dbt(policy_project, "run")
    assert not result.success
    error = str(result.exception)
    assert "Privacy policy check failed (fail closed): 1 violation(s)" in error
    assert DEFECT_MESSAGES[defect] in error
    # Fail closed: the check runs before any model, so nothing was built.
    assert not {"stg_customers", "dim_customers"} & relations(db_path)

    # CI over the manifest reports the same violation.
    manifest = policy_project / "target" / "manifest.json"
    assert run_cli("check", "--manifest", str(manifest), "--policy", str(POLICY_FILE)) == 1
    assert DEFECT_MESSAGES[defect] in capsys.readouterr().err


def test_unclassified_model_fails_the_build(policy_project, monkeypatch, tmp_path):
    (policy_project / "models" / "schema.yml").write_text(policy_project_yaml(None))
    extra = policy_project / "models" / "gold" / "agg_segments.sql"
    extra.write_text(
        "select segment, count(*) as customers from {{ ref('dim_customers') }} group by 1"
    )
    monkeypatch.setenv("PL_POLICY_TEST_DB", str(tmp_path / "unclassified.duckdb"))
    try:
        result = dbt(policy_project, "run")
    finally:
        extra.unlink()
    assert not result.success
    assert "agg_segments: unclassified_model: model declares no columns in YAML" in str(
        result.exception
    )


def test_missing_function_fails_closed_with_a_clear_message(policy_project):
    (policy_project / "models" / "schema.yml").write_text(policy_project_yaml(None))
    result = dbt(policy_project, "run", "--target", "no_plugin")
    assert not result.success
    assert "the DuckDB function pl_policy_violations is not registered" in str(result.exception)


# --- the generic privacy tests ------------------------------------------------------------------

# Known answer for k = 3 over (age_band, region), counting distinct subjects:
#   band_40_49/north-east: 3 subjects, 3 rows            -> passes
#   band_50_59/south-west: 2 subjects, 4 rows            -> fails with 2
#   band_60_69/far-north:  1 subject, 4 rows             -> fails with 1 (rows are not people)
#   NULL/far-north:        1 subject                     -> fails with 1
#   band_70_79/coastline:  3 subjects, one with 3 rows   -> passes
RELEASED_SQL = """
select * from (values
    ('subj-001', 'band_40_49', 'north-east', 'influenza'),
    ('subj-002', 'band_40_49', 'north-east', 'asthma'),
    ('subj-003', 'band_40_49', 'north-east', 'gout'),
    ('subj-004', 'band_50_59', 'south-west', 'influenza'),
    ('subj-004', 'band_50_59', 'south-west', 'influenza'),
    ('subj-005', 'band_50_59', 'south-west', 'influenza'),
    ('subj-005', 'band_50_59', 'south-west', 'influenza'),
    ('subj-006', 'band_60_69', 'far-north', 'gout'),
    ('subj-006', 'band_60_69', 'far-north', 'influenza'),
    ('subj-006', 'band_60_69', 'far-north', 'asthma'),
    ('subj-006', 'band_60_69', 'far-north', 'gout'),
    ('subj-007', null, 'far-north', 'gout'),
    ('subj-008', 'band_70_79', 'coastline', 'gout'),
    ('subj-008', 'band_70_79', 'coastline', 'gout'),
    ('subj-008', 'band_70_79', 'coastline', 'gout'),
    ('subj-009', 'band_70_79', 'coastline', 'gout'),
    ('subj-010', 'band_70_79', 'coastline', 'gout')
) as t(subject_token, age_band, region, diagnosis)
"""

NOTES_SQL = """
select * from (values
    (1, '4111 1111 1111 1111', '4111111111111112', 'GB82 WEST 1234 5698 7654 32',
        'write to a.b@example.com', 'tok-aaa'),
    (2, 'paid 5500-0000-0000-0004 ok', '1234 5678 1234 5678', 'GB82WEST12345698765433',
        'j***@example.com', 'raw-value-2'),
    (3, 'ref 4111111111111112', null, '', 'call +44 20 7946 0958', 'tok-ccc'),
    (4, null, 'nothing to see', 'DE89370400440532013000', 'ssn 123-45-6789', 'tok-ddd')
) as t(note_id, card_text, invalid_numbers, iban_text, contact, token)
"""

RAW_VALUES_SQL = (
    "select * from (values ('raw-value-1'), ('raw-value-2'), ('raw-value-3')) as t(raw_value)"
)
CUSTOMERS_SQL = "select 'tok-x' as customer_token, 'enc:abc' as email_ciphertext"

PLAIN = {"sensitivity": "internal", "privacy_role": "none", "purposes": []}


def data_project_yaml() -> str:
    qi = {"sensitivity": "internal", "privacy_role": "quasi_identifier", "purposes": ["analytics"]}
    released = {
        "name": "released",
        "columns": [
            {
                "name": "subject_token",
                "config": {"meta": {**TOKEN, "treatment": {"gold": "tokenize"}}},
            },
            {
                "name": "age_band",
                "config": {
                    "meta": {**qi, "pii_type": "birth_date", "treatment": {"gold": "hierarchy"}}
                },
            },
            {
                "name": "region",
                "config": {
                    "meta": {**qi, "pii_type": "postcode", "treatment": {"gold": "hierarchy"}}
                },
            },
            {
                "name": "diagnosis",
                "config": {
                    "meta": {
                        "sensitivity": "internal",
                        "privacy_role": "sensitive_attribute",
                        "pii_type": "free_text",
                        "purposes": ["analytics"],
                        "treatment": {"gold": "none"},
                    }
                },
            },
        ],
        "data_tests": [
            {
                "k_anonymity": {
                    "arguments": {
                        "quasi_identifiers": ["age_band", "region"],
                        "k": 3,
                        "subject_column": "subject_token",
                    },
                    "config": {"alias": "k_anonymity_explicit"},
                }
            },
            # Quasi-identifiers read from the columns' meta; the subject defaults to subject_token.
            {"k_anonymity": {"arguments": {"k": 3}, "config": {"alias": "k_anonymity_from_meta"}}},
            {
                "l_diversity": {
                    "arguments": {
                        "quasi_identifiers": ["age_band", "region"],
                        "sensitive_column": "diagnosis",
                        "l": 2,
                    },
                    "config": {"alias": "l_diversity_released"},
                }
            },
            {"no_direct_identifiers": {"config": {"alias": "no_direct_identifiers_released"}}},
        ],
    }
    notes_columns = ["note_id", "card_text", "invalid_numbers", "iban_text", "contact", "token"]
    notes = {
        "name": "notes",
        "columns": [{"name": name, "config": {"meta": PLAIN}} for name in notes_columns],
        "data_tests": [
            {"no_pii_patterns": {"config": {"alias": "no_pii_patterns_all"}}},
            {
                "no_pii_patterns": {
                    "arguments": {"columns": ["invalid_numbers", "note_id"]},
                    "config": {"alias": "no_pii_patterns_invalid_only"},
                }
            },
        ],
    }
    notes["columns"][4]["data_tests"] = [
        {"no_pii_patterns": {"config": {"alias": "no_pii_patterns_contact_column"}}}
    ]
    notes["columns"][-1]["data_tests"] = [
        {
            "tokens_not_raw": {
                "arguments": {"raw_relation": "ref('raw_values')", "raw_column": "raw_value"},
                "config": {"alias": "tokens_not_raw_notes"},
            }
        }
    ]
    raw_values = {
        "name": "raw_values",
        "columns": [{"name": "raw_value", "config": {"meta": PLAIN}}],
    }
    customers = {
        "name": "stg_customers",
        "columns": [
            {
                "name": "customer_token",
                "config": {"meta": {**TOKEN, "treatment": {"silver": "tokenize"}}},
            },
            {
                "name": "email_ciphertext",
                "config": {
                    "meta": {**EMAIL, "purposes": ["marketing"], "treatment": {"silver": "encrypt"}}
                },
            },
        ],
        "data_tests": [
            {"no_direct_identifiers": {"config": {"alias": "no_direct_identifiers_default"}}},
            {
                "no_direct_identifiers": {
                    "arguments": {"allowed_treatments": ["tokenize", "encrypt"]},
                    "config": {"alias": "no_direct_identifiers_with_encrypt"},
                }
            },
        ],
    }
    return yaml.safe_dump({"models": [released, notes, raw_values, customers]}, sort_keys=False)


@pytest.fixture(scope="module")
def privacy_tests_build(project_factory):
    root = project_factory("privacy_tests")
    files = {
        "gold/released.sql": RELEASED_SQL,
        "silver/notes.sql": NOTES_SQL,
        "silver/raw_values.sql": RAW_VALUES_SQL,
        "silver/stg_customers.sql": CUSTOMERS_SQL,
        "schema.yml": data_project_yaml(),
    }
    for name, text in files.items():
        (root / "models" / name).write_text(text)
    result = dbt(root, "build", "--store-failures")
    assert result.exception is None, result.exception
    statuses = {r.node.alias: (str(r.status.value), r.failures) for r in result.result.results}
    db_path = root / "warehouse.duckdb"
    with duckdb.connect(str(db_path)) as conn:
        stored = {
            table: conn.sql(f'select * from main_dbt_test__audit."{table}"').fetchall()
            for (table,) in conn.sql(
                "select table_name from information_schema.tables "
                "where table_schema = 'main_dbt_test__audit'"
            ).fetchall()
        }
        models = {
            table: conn.sql(f'select * from main."{table}"').fetchall()
            for table in ("released", "notes", "raw_values", "stg_customers")
        }
    with project_keyring(root) as keyring:

        def group_hash(*values):
            """The documented group label: the 'test_group' token of the 'v:'-prefixed values
            ('null' for NULL) joined by |."""
            text = "|".join("null" if v is None else f"v:{v}" for v in values)
            return keyring.token(text, "test_group")

        labels = {
            values: group_hash(*values)
            for values in (
                ("band_50_59", "south-west"),
                ("band_60_69", "far-north"),
                (None, "far-north"),
                ("band_70_79", "coastline"),
            )
        }
    return {"statuses": statuses, "stored": stored, "models": models, "labels": labels}


def test_models_built(privacy_tests_build):
    statuses = privacy_tests_build["statuses"]
    for model in ("released", "notes", "raw_values", "stg_customers"):
        assert statuses[model][0] == "success"


def test_k_anonymity_counts_people_not_rows(privacy_tests_build):
    label = privacy_tests_build["labels"]
    expected = {
        (label["band_50_59", "south-west"], 2),
        (label["band_60_69", "far-north"], 1),
        (label[None, "far-north"], 1),
    }
    for alias in ("k_anonymity_explicit", "k_anonymity_from_meta"):
        assert privacy_tests_build["statuses"][alias] == ("fail", 3)
        assert set(privacy_tests_build["stored"][alias]) == expected


def test_l_diversity(privacy_tests_build):
    # Groups with fewer than 2 distinct diagnoses: south-west (influenza only), NULL/far-north
    # and the coastline group (gout only, however many rows and subjects it has).
    label = privacy_tests_build["labels"]
    assert privacy_tests_build["statuses"]["l_diversity_released"] == ("fail", 3)
    assert set(privacy_tests_build["stored"]["l_diversity_released"]) == {
        (label["band_50_59", "south-west"], 1),
        (label[None, "far-north"], 1),
        (label["band_70_79", "coastline"], 1),
    }


def test_stored_group_labels_are_keyed(privacy_tests_build):
    # A plain md5 of the values would be reversed by hashing every combination of the small
    # quasi-identifier vocabularies; the stored label is a keyed token instead.
    stored = {row[0] for row in privacy_tests_build["stored"]["l_diversity_released"]}
    plain = hashlib.md5(b"v:band_70_79|v:coastline").hexdigest()  # noqa: S324
    assert plain not in stored
    assert all(label.startswith("v1:") for label in stored)


def test_no_pii_patterns_with_checksums(privacy_tests_build):
    assert set(privacy_tests_build["stored"]["no_pii_patterns_all"]) == {
        ("card_text", "card_number", 2),  # two Luhn-valid cards; the Luhn-invalid one ignored
        ("iban_text", "iban", 2),  # two mod-97-valid IBANs; the one with a bad check ignored
        ("contact", "email", 1),  # the masked j***@example.com is not an email any more
        ("contact", "phone", 1),
        ("contact", "national_id", 1),
    }
    # Declared under a column, the test scans that column only.
    assert set(privacy_tests_build["stored"]["no_pii_patterns_contact_column"]) == {
        ("contact", "email", 1),
        ("contact", "phone", 1),
        ("contact", "national_id", 1),
    }
    # Luhn-invalid 16-digit numbers alone do not fail the test.
    assert privacy_tests_build["statuses"]["no_pii_patterns_invalid_only"] == ("pass", 0)


def test_tokens_not_raw(privacy_tests_build):
    assert privacy_tests_build["statuses"]["tokens_not_raw_notes"] == ("fail", 1)
    assert privacy_tests_build["stored"]["tokens_not_raw_notes"] == [(1,)]


def test_no_direct_identifiers(privacy_tests_build):
    statuses = privacy_tests_build["statuses"]
    assert statuses["no_direct_identifiers_released"] == ("pass", 0)
    # Silver allows encryption under the policy, but this test's default is stricter.
    assert privacy_tests_build["stored"]["no_direct_identifiers_default"] == [
        ("email_ciphertext", "silver", "encrypt")
    ]
    assert statuses["no_direct_identifiers_with_encrypt"] == ("pass", 0)


def test_stored_failures_hold_no_row_values(privacy_tests_build):
    row_values = {
        str(value)
        for rows in privacy_tests_build["models"].values()
        for row in rows
        for value in row
        if isinstance(value, str) and len(value) >= 4
    }

    def leaked(tables):
        cells = [str(v) for rows in tables.values() for row in rows for v in row if v is not None]
        return {value for value in row_values for cell in cells if value in cell}

    # The scan finds values where they are (so its silence below means something) ...
    assert {"subj-004", "write to a.b@example.com", "raw-value-2", "south-west"} <= leaked(
        privacy_tests_build["models"]
    )
    # ... and every failing test stored rows, none of which holds a value.
    stored = privacy_tests_build["stored"]
    assert all(stored[alias] for alias in ("k_anonymity_explicit", "no_pii_patterns_all"))
    assert leaked(stored) == set()
