"""The privacy policy as code: load `privacy_policy.yml`, validate column meta against it.

Fail closed: anything missing, unknown or not allowed is a violation, and a violation fails
the build (`assert_privacy_policy()` in `on-run-start`) and CI (`privacy-lakehouse policy
check` over `target/manifest.json`). Messages name the model, the column and the rule; they
carry metadata only, never row values.

The nodes this module validates are plain dicts, so the same code serves the manifest, the
dbt graph (serialised to JSON by a macro and passed to the DuckDB function
`pl_policy_violations`) and unit tests:
    {unique_id, name, resource_type, layer, columns: {column_name: meta_dict}}
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from privacy_lakehouse.settings import load_settings

POLICY_FILE_NAME = "privacy_policy.yml"

# Layers of the medallion that models live in (the folder under models/), in flow order.
MODEL_LAYERS = ("bronze", "silver", "gold")
# Sources, and the ephemeral parsing models under models/landing/, are landing data: classified,
# but their treatment happens on the way into bronze.
LANDING_LAYER = "landing"
# Seeds are reference data loaded as they are: classified, no treatment of their own.
SEED_LAYER = "seed"
# Layers a personal-data column may reach only through a declared, allowed treatment.
TREATED_LAYERS = ("silver", "gold")
# The only treatments that keep a direct identifier out of gold in a usable form.
GOLD_IDENTIFIER_TREATMENTS = ("drop", "tokenize")

NO_ROLE = "none"
DIRECT_IDENTIFIER = "direct_identifier"
# Roles and treatments the validation logic itself relies on, so the policy file must keep them.
REQUIRED_ROLES = (NO_ROLE, DIRECT_IDENTIFIER)
REQUIRED_TREATMENTS = ("none", "drop", "tokenize")

META_KEYS = (
    "sensitivity",
    "privacy_role",
    "pii_type",
    "purposes",
    "treatment",
    "treatment_args",
    "source_column",
)
POLICY_KEYS = (
    "version",
    "sensitivities",
    "privacy_roles",
    "pii_types",
    "purposes",
    "treatments",
    "allowed_treatments",
    "releases",
    "roles",
)
# Sections other modules own and validate themselves (landing.parse_landing_policy).
OPTIONAL_POLICY_KEYS = ("landing",)
VALIDATED_RESOURCE_TYPES = ("model", "snapshot", "seed", "source")


class PolicyError(ValueError):
    """The policy file itself is missing or malformed."""


@dataclass(frozen=True)
class Release:
    name: str
    min_k: int


@dataclass(frozen=True)
class Role:
    name: str
    purposes: tuple[str, ...]
    max_sensitivity: str


@dataclass(frozen=True)
class Policy:
    version: int
    sensitivities: tuple[str, ...]  # ordered from least to most sensitive
    privacy_roles: tuple[str, ...]
    pii_types: tuple[str, ...]
    purposes: Mapping[str, str]  # name -> description
    treatments: Mapping[str, str]  # name -> description
    allowed_treatments: Mapping[str, Mapping[str, tuple[str, ...]]]  # layer -> sensitivity -> names
    releases: Mapping[str, Release]
    roles: Mapping[str, Role]
    path: Path | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.allowed_treatments)

    def sensitivity_rank(self, sensitivity: str) -> int:
        """0 for the least sensitive level; raises ValueError for an unknown one."""
        return self.sensitivities.index(sensitivity)

    def allowed(self, layer: str, sensitivity: str) -> tuple[str, ...]:
        return tuple(self.allowed_treatments.get(layer, {}).get(sensitivity, ()))

    def min_k(self, release: str) -> int:
        return self.releases[release].min_k


@dataclass(frozen=True)
class PolicyViolation:
    model: str
    column: str | None
    rule: str
    message: str

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------------------------
# Loading the policy file


def default_policy_path() -> Path:
    return load_settings().root / POLICY_FILE_NAME


def load_policy(path: str | os.PathLike | None = None) -> Policy:
    """Read and validate the policy file (default: `privacy_policy.yml` at the project root)."""
    policy_path = Path(path) if path else default_policy_path()
    if not policy_path.is_file():
        raise PolicyError(f"policy file not found: {policy_path}")
    try:
        document = yaml.safe_load(policy_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PolicyError(f"{policy_path}: not valid YAML ({exc.__class__.__name__})") from None
    return parse_policy(document, policy_path)


def parse_policy(document: Any, path: Path | None = None) -> Policy:
    """Validate a parsed policy document; raise PolicyError listing every problem found."""
    where = str(path) if path else "policy"
    problems: list[str] = []
    if not isinstance(document, dict):
        raise PolicyError(f"{where}: the policy must be a mapping of {', '.join(POLICY_KEYS)}")

    for key in document:
        if key not in POLICY_KEYS and key not in OPTIONAL_POLICY_KEYS:
            known = POLICY_KEYS + OPTIONAL_POLICY_KEYS
            problems.append(f"unknown top-level key {key!r}{_suggest(key, known)}")
    if "landing" in document:
        from privacy_lakehouse.landing import LandingError, parse_landing_policy

        try:
            parse_landing_policy(document)
        except LandingError as error:
            problems.append(f"landing: {error}")
    for key in POLICY_KEYS:
        if key not in document:
            problems.append(f"missing top-level key {key!r}")

    version = document.get("version")
    if "version" in document and (isinstance(version, bool) or not isinstance(version, int)):
        problems.append("version must be an integer")

    sensitivities = _name_list(document, "sensitivities", problems)
    privacy_roles = _name_list(document, "privacy_roles", problems)
    pii_types = _name_list(document, "pii_types", problems)
    purposes = _described_names(document, "purposes", problems)
    treatments = _described_names(document, "treatments", problems)

    for role in REQUIRED_ROLES:
        if privacy_roles and role not in privacy_roles:
            problems.append(f"privacy_roles must include {role!r}")
    for treatment in REQUIRED_TREATMENTS:
        if treatments and treatment not in treatments:
            problems.append(f"treatments must include {treatment!r}")

    allowed = _allowed_treatments(document, sensitivities, treatments, problems)
    releases = _releases(document, problems)
    roles = _roles(document, purposes, sensitivities, problems)

    if problems:
        raise PolicyError(f"{where}: invalid policy:\n  - " + "\n  - ".join(problems))
    return Policy(
        version=version,
        sensitivities=tuple(sensitivities),
        privacy_roles=tuple(privacy_roles),
        pii_types=tuple(pii_types),
        purposes=purposes,
        treatments=treatments,
        allowed_treatments=allowed,
        releases=releases,
        roles=roles,
        path=path,
    )


def _name_list(document: dict, key: str, problems: list[str]) -> list[str]:
    value = document.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        problems.append(f"{key} must be a non-empty list of names")
        return []
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        problems.append(f"{key} lists {', '.join(duplicates)} more than once")
    return list(dict.fromkeys(value))


def _described_names(document: dict, key: str, problems: list[str]) -> dict[str, str]:
    value = document.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        problems.append(f"{key} must be a non-empty mapping of name: description")
        return {}
    result = {}
    for name, description in value.items():
        if not isinstance(name, str) or not isinstance(description, str) or not description:
            problems.append(f"{key}.{name} must have a text description")
            continue
        result[name] = description
    return result


def _allowed_treatments(
    document: dict, sensitivities: list[str], treatments: dict[str, str], problems: list[str]
) -> dict[str, dict[str, tuple[str, ...]]]:
    value = document.get("allowed_treatments")
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append("allowed_treatments must map layer -> sensitivity -> [treatments]")
        return {}
    for layer in MODEL_LAYERS:
        if layer not in value:
            problems.append(f"allowed_treatments has no entry for layer {layer!r}")
    result: dict[str, dict[str, tuple[str, ...]]] = {}
    for layer, per_sensitivity in value.items():
        if layer not in MODEL_LAYERS:
            problems.append(
                f"allowed_treatments.{layer}: unknown layer{_suggest(layer, MODEL_LAYERS)}"
            )
            continue
        if not isinstance(per_sensitivity, dict):
            problems.append(f"allowed_treatments.{layer} must map sensitivity -> [treatments]")
            continue
        result[layer] = {}
        for sensitivity, names in per_sensitivity.items():
            if sensitivities and sensitivity not in sensitivities:
                problems.append(
                    f"allowed_treatments.{layer}.{sensitivity}: unknown sensitivity"
                    f"{_suggest(sensitivity, sensitivities)}"
                )
                continue
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                problems.append(f"allowed_treatments.{layer}.{sensitivity} must be a list")
                continue
            for name in names:
                if treatments and name not in treatments:
                    problems.append(
                        f"allowed_treatments.{layer}.{sensitivity}: unknown treatment {name!r}"
                        f"{_suggest(name, treatments)}"
                    )
            result[layer][sensitivity] = tuple(names)
        # Every sensitivity must be decided per layer: a gap would otherwise read as "anything".
        for sensitivity in sensitivities:
            if sensitivity not in per_sensitivity:
                problems.append(f"allowed_treatments.{layer} has no entry for {sensitivity!r}")
    return result


def _releases(document: dict, problems: list[str]) -> dict[str, Release]:
    value = document.get("releases")
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append("releases must map release name -> {min_k: N}")
        return {}
    result = {}
    for name, spec in value.items():
        min_k = spec.get("min_k") if isinstance(spec, dict) else None
        if isinstance(min_k, bool) or not isinstance(min_k, int) or min_k < 2:
            problems.append(f"releases.{name}.min_k must be an integer of at least 2")
            continue
        result[name] = Release(name=name, min_k=min_k)
    return result


def _roles(
    document: dict, purposes: dict[str, str], sensitivities: list[str], problems: list[str]
) -> dict[str, Role]:
    value = document.get("roles")
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append("roles must map role name -> {purposes, max_sensitivity}")
        return {}
    result = {}
    for name, spec in value.items():
        if not isinstance(spec, dict):
            problems.append(f"roles.{name} must be a mapping of purposes and max_sensitivity")
            continue
        role_purposes = spec.get("purposes")
        if not isinstance(role_purposes, list) or not all(
            isinstance(p, str) for p in role_purposes
        ):
            problems.append(f"roles.{name}.purposes must be a list of purposes")
            continue
        for purpose in role_purposes:
            if purposes and purpose not in purposes:
                problems.append(
                    f"roles.{name}: unknown purpose {purpose!r}{_suggest(purpose, purposes)}"
                )
        max_sensitivity = spec.get("max_sensitivity")
        if sensitivities and max_sensitivity not in sensitivities:
            problems.append(
                f"roles.{name}.max_sensitivity must be one of {', '.join(sensitivities)}"
            )
        result[name] = Role(
            name=name, purposes=tuple(role_purposes), max_sensitivity=str(max_sensitivity)
        )
    return result


def _suggest(value: Any, choices: Iterable[str]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# Nodes: from the manifest, from the graph JSON the on-run-start macro builds


def layer_of(resource_type: str, fqn: list[str] | tuple[str, ...] | None) -> str:
    """The layer a node belongs to: the folder under models/ for models (fqn[1])."""
    if resource_type == "source":
        return LANDING_LAYER
    if resource_type == "seed":
        return SEED_LAYER
    if resource_type == "snapshot":
        return "silver"
    # A model file directly under models/ has fqn [project, name]: it sits in no layer.
    if fqn and len(fqn) > 2:
        return str(fqn[1])
    return ""


def column_meta(column: Mapping[str, Any]) -> dict[str, Any]:
    """A column's policy meta: `config.meta` (dbt 1.10+) over the older top-level `meta`."""
    meta = dict(column.get("meta") or {})
    meta.update((column.get("config") or {}).get("meta") or {})
    return meta


def display_name(node: Mapping[str, Any]) -> str:
    if node.get("resource_type") == "source" and node.get("source_name"):
        return f"{node['source_name']}.{node['name']}"
    return str(node.get("name"))


def _node_from_artifact(node: Mapping[str, Any]) -> dict[str, Any]:
    resource_type = node.get("resource_type", "")
    columns = node.get("columns") or {}
    return {
        "unique_id": node.get("unique_id"),
        "name": display_name(node),
        "resource_type": resource_type,
        "layer": node.get("layer") or layer_of(resource_type, node.get("fqn")),
        "columns": {
            (column.get("name") or name): column_meta(column) for name, column in columns.items()
        },
    }


def nodes_from_manifest(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Models, snapshots, seeds (manifest['nodes']) and sources, as validation nodes."""
    artifacts = list((manifest.get("nodes") or {}).values())
    artifacts += list((manifest.get("sources") or {}).values())
    nodes = [
        _node_from_artifact(node)
        for node in artifacts
        if node.get("resource_type") in VALIDATED_RESOURCE_TYPES
    ]
    return sorted(nodes, key=lambda n: str(n["unique_id"]))


def nodes_from_graph_json(payload: str) -> list[dict[str, Any]]:
    """Nodes from the JSON `privacy_policy_nodes_json()` builds out of dbt's `graph`.

    The macro sends each node's unique_id, name, resource_type, fqn, source_name and columns
    (name -> {meta, config: {meta}}); a ready `layer` is used as given.
    """
    document = json.loads(payload)
    items = document.get("nodes", []) if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ValueError("the nodes JSON must be a list of nodes")
    return [
        _node_from_artifact(node)
        for node in items
        if isinstance(node, dict) and node.get("resource_type") in VALIDATED_RESOURCE_TYPES
    ]


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Validation


def validate_nodes(nodes: Iterable[Mapping[str, Any]], policy: Policy) -> list[PolicyViolation]:
    violations: list[PolicyViolation] = []
    for node in nodes:
        violations.extend(_validate_node(node, policy))
    return violations


def _validate_node(node: Mapping[str, Any], policy: Policy) -> list[PolicyViolation]:
    model = str(node.get("name"))
    resource_type = str(node.get("resource_type", "model"))
    layer = str(node.get("layer") or "")
    found: list[PolicyViolation] = []

    def violation(column: str | None, rule: str, detail: str) -> None:
        where = f"{model}.{column}" if column else model
        found.append(PolicyViolation(model, column, rule, f"{where}: {rule}: {detail}"))

    known_layers = (*policy.layers, LANDING_LAYER, SEED_LAYER)
    if layer not in known_layers:
        violation(
            None,
            "unknown_layer",
            f"{resource_type} is in layer {layer!r}; models must live under "
            f"models/{{{','.join((LANDING_LAYER, *policy.layers))}}}/ so the policy knows "
            "which layer they are in",
        )
    columns = node.get("columns") or {}
    if not columns:
        violation(
            None,
            "unclassified_model",
            f"{resource_type} declares no columns in YAML; every column needs config.meta "
            "(sensitivity, privacy_role, purposes)",
        )
    for column, meta in columns.items():
        _validate_column(str(column), meta, layer, policy, violation)
    return found


def _validate_column(column: str, meta: Any, layer: str, policy: Policy, violation) -> None:
    if not isinstance(meta, Mapping) or not meta:
        violation(
            column,
            "unclassified_column",
            "no config.meta; declare sensitivity, privacy_role and purposes",
        )
        return

    for key in meta:
        close = difflib.get_close_matches(str(key), META_KEYS, n=1, cutoff=0.8)
        if key not in META_KEYS and close:
            violation(column, "unknown_meta_key", f"meta key {key!r} (did you mean {close[0]!r}?)")

    sensitivity = _check_vocabulary(
        column, meta, "sensitivity", policy.sensitivities, "unknown_sensitivity", violation
    )
    role = _check_vocabulary(
        column, meta, "privacy_role", policy.privacy_roles, "unknown_privacy_role", violation
    )
    personal = role is not None and role != NO_ROLE

    pii_type = meta.get("pii_type")
    if pii_type is None:
        if personal:
            violation(column, "missing_pii_type", f"privacy_role {role!r} requires a pii_type")
    elif pii_type not in policy.pii_types:
        violation(
            column,
            "unknown_pii_type",
            f"pii_type {pii_type!r} is not in the policy{_suggest(pii_type, policy.pii_types)}",
        )

    _check_purposes(column, meta, policy, violation)
    treatments, broken_layers = _check_treatments(column, meta, policy, violation)

    # A broken declaration for this layer is already reported; "missing" would only repeat it.
    if not personal or sensitivity is None or layer not in policy.layers or layer in broken_layers:
        return
    declared = treatments.get(layer)
    if layer == "gold" and role == DIRECT_IDENTIFIER:
        if declared not in GOLD_IDENTIFIER_TREATMENTS:
            violation(
                column,
                "untreated_identifier_in_gold",
                f"direct identifier reaches gold with treatment {declared or 'none declared'!r}; "
                f"gold allows only {' or '.join(GOLD_IDENTIFIER_TREATMENTS)} for direct "
                "identifiers",
            )
            return
    if declared is None and layer in TREATED_LAYERS:
        violation(
            column,
            "missing_treatment",
            f"{role} column reaches {layer} without treatment.{layer}; allowed for "
            f"{sensitivity}: {', '.join(policy.allowed(layer, sensitivity)) or 'nothing'}",
        )
        return
    # In bronze an undeclared treatment means the value is stored as it arrived.
    effective = declared if declared is not None else "none"
    if effective in policy.treatments and effective not in policy.allowed(layer, sensitivity):
        violation(
            column,
            "treatment_not_allowed",
            f"treatment.{layer} {effective!r}"
            f"{'' if declared is not None else ' (none declared)'} is not allowed for "
            f"{sensitivity} data in {layer}; allowed: "
            f"{', '.join(policy.allowed(layer, sensitivity)) or 'nothing'}",
        )


def _check_vocabulary(
    column: str,
    meta: Mapping[str, Any],
    key: str,
    vocabulary: tuple[str, ...],
    unknown_rule: str,
    violation,
) -> str | None:
    value = meta.get(key)
    if value is None:
        violation(column, f"missing_{key}", f"{key} is required ({', '.join(vocabulary)})")
        return None
    if value not in vocabulary:
        violation(
            column,
            unknown_rule,
            f"{key} {value!r} is not in the policy{_suggest(value, vocabulary)}; "
            f"expected one of {', '.join(vocabulary)}",
        )
        return None
    return str(value)


def _check_purposes(column: str, meta: Mapping[str, Any], policy: Policy, violation) -> None:
    if "purposes" not in meta:
        violation(column, "missing_purposes", "purposes is required (a list; [] for plumbing)")
        return
    purposes = meta["purposes"]
    if not isinstance(purposes, list):
        violation(column, "invalid_purposes", "purposes must be a list of purpose names")
        return
    for purpose in purposes:
        if purpose not in policy.purposes:
            violation(
                column,
                "unknown_purpose",
                f"purpose {purpose!r} is not in the policy{_suggest(purpose, policy.purposes)}; "
                f"expected one of {', '.join(policy.purposes)}",
            )


def _check_treatments(
    column: str, meta: Mapping[str, Any], policy: Policy, violation
) -> tuple[dict[str, str], set[str]]:
    """Validate meta.treatment; return the valid {layer: treatment} and the layers in error."""
    if "treatment" not in meta or meta["treatment"] is None:
        return {}, set()
    declared = meta["treatment"]
    if not isinstance(declared, Mapping):
        violation(
            column,
            "invalid_treatment",
            f"treatment must map layer ({', '.join(policy.layers)}) to a treatment name",
        )
        return {}, set(policy.layers)
    valid: dict[str, str] = {}
    broken: set[str] = set()
    for layer, name in declared.items():
        if layer not in policy.layers:
            violation(
                column,
                "unknown_treatment_layer",
                f"treatment key {layer!r} is not a layer{_suggest(layer, policy.layers)}; "
                f"expected one of {', '.join(policy.layers)}",
            )
            continue
        if name not in policy.treatments:
            violation(
                column,
                "unknown_treatment",
                f"treatment.{layer} {name!r} is not a treatment in the policy"
                f"{_suggest(name, policy.treatments)}",
            )
            broken.add(str(layer))
            continue
        valid[str(layer)] = str(name)
    return valid, broken


def validate_columns_present(
    model: str,
    declared: set[str],
    actual: set[str],
    dropped: set[str] | frozenset[str] = frozenset(),
) -> list[PolicyViolation]:
    """Compare a built relation's columns with its YAML (names compared case-insensitively).

    A column in the relation but not in the YAML escaped classification; a column declared
    with `treatment.<layer>: drop` must not be in the relation at all.
    """
    declared_names = {name.lower() for name in declared}
    dropped_names = {name.lower() for name in dropped}
    violations = []
    for column in sorted(actual, key=str.lower):
        if column.lower() not in declared_names:
            violations.append(
                PolicyViolation(
                    model,
                    column,
                    "undeclared_column",
                    f"{model}.{column}: undeclared_column: the built relation has this column "
                    "but the model's YAML does not classify it",
                )
            )
        elif column.lower() in dropped_names:
            violations.append(
                PolicyViolation(
                    model,
                    column,
                    "dropped_column_present",
                    f"{model}.{column}: dropped_column_present: declared with treatment drop "
                    "for this layer but present in the built relation",
                )
            )
    return violations


# ---------------------------------------------------------------------------------------------
# DuckDB: the function the on-run-start macro calls


def register(conn, policy_path: str | os.PathLike | None = None) -> None:
    """Register `pl_policy_violations(nodes_json VARCHAR) -> VARCHAR` on a DuckDB connection.

    The function returns a JSON list of violation messages ([] when clean). The policy is read
    when the function is called, not at registration, so an edited or missing policy file is
    seen by the next build (a missing one makes the call fail: fail closed).
    """
    import duckdb

    def policy_violations(nodes_json: str) -> str:
        policy = load_policy(policy_path)
        nodes = nodes_from_graph_json(nodes_json)
        return json.dumps([v.message for v in validate_nodes(nodes, policy)])

    try:
        conn.remove_function("pl_policy_violations")
    except (duckdb.InvalidInputException, duckdb.CatalogException):
        pass
    # Called once per run on a small payload: the native (row) mode is plenty and needs no pandas.
    conn.create_function(
        "pl_policy_violations",
        policy_violations,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
        type="native",
        side_effects=True,  # it reads the policy file: never fold or cache the result
    )


# ---------------------------------------------------------------------------------------------
# The privacy plan: what each column is and what happens to it, for review before a build

PLAN_FIELDS = (
    "model",
    "layer",
    "column",
    "sensitivity",
    "privacy_role",
    "pii_type",
    "treatment",
    "purposes",
    "check",
)
LAYER_ORDER = (LANDING_LAYER, SEED_LAYER, *MODEL_LAYERS)


def plan(
    source: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    policy: Policy,
    select: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per (model, column): classification, treatment in the model's layer, purposes.

    `source` is a manifest dict or a list of nodes; `select` keeps only the named models.
    `check` is "ok" or the policy rules the column (or, on a column-less row, the model) breaks,
    so a reviewer sees problems in place; a model without declared columns still gets a row.
    """
    nodes = nodes_from_manifest(source) if isinstance(source, Mapping) else list(source)
    wanted = set(select or ())
    nodes = [node for node in nodes if not wanted or node.get("name") in wanted]
    broken: dict[tuple[str, str | None], list[str]] = {}
    for found in validate_nodes(nodes, policy):
        rules = broken.setdefault((found.model, found.column), [])
        if found.rule not in rules:
            rules.append(found.rule)

    rows = []
    for node in nodes:
        model = str(node.get("name"))
        layer = str(node.get("layer") or "")
        if broken.get((model, None)) or not node.get("columns"):
            rows.append(
                {
                    **dict.fromkeys(PLAN_FIELDS),
                    "model": model,
                    "layer": layer,
                    "purposes": [],
                    "check": ", ".join(broken.get((model, None), ["ok"])),
                }
            )
        for column, meta in (node.get("columns") or {}).items():
            meta = meta if isinstance(meta, Mapping) else {}
            treatment = meta.get("treatment")
            layer_treatment = treatment.get(layer) if isinstance(treatment, Mapping) else None
            purposes = meta.get("purposes")
            rows.append(
                {
                    "model": model,
                    "layer": layer,
                    "column": str(column),
                    "sensitivity": meta.get("sensitivity"),
                    "privacy_role": meta.get("privacy_role"),
                    "pii_type": meta.get("pii_type"),
                    "treatment": layer_treatment,
                    "purposes": list(purposes) if isinstance(purposes, list) else [],
                    "check": ", ".join(broken.get((model, str(column)), ["ok"])),
                }
            )

    def order(row: dict[str, Any]) -> tuple:
        rank = LAYER_ORDER.index(row["layer"]) if row["layer"] in LAYER_ORDER else len(LAYER_ORDER)
        return (rank, row["model"])

    # Stable sort: columns keep their YAML order within a model.
    return sorted(rows, key=order)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "-"
    return str(value)


def render_plan(rows: list[dict[str, Any]], fmt: str = "text") -> str:
    """Render plan rows as `text` (aligned columns), `markdown` (a table) or `json`."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    table = [[_cell(row[field]) for field in PLAN_FIELDS] for row in rows]
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(PLAN_FIELDS) + " |",
            "| " + " | ".join("---" for _ in PLAN_FIELDS) + " |",
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in table]
        return "\n".join(lines)
    if fmt != "text":
        raise ValueError(f"unknown plan format {fmt!r}: use text, markdown or json")
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(PLAN_FIELDS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(PLAN_FIELDS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in table
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI: `privacy-lakehouse policy check|plan`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    sub.required = True

    def common(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--manifest",
            help="dbt manifest to read (default: manifest.json in dbt's target path, "
            "DBT_TARGET_PATH or target under the project root; run `dbt parse` first)",
        )
        command.add_argument(
            "--policy", help=f"policy file (default: {POLICY_FILE_NAME} at the project root)"
        )

    check = sub.add_parser(
        "check",
        help="Validate every column's meta against the policy; exit 1 listing violations.",
        description="Validate every model, snapshot, seed and source column's meta against the "
        "policy. Exit 0 when clean, 1 with the violations listed (usable in CI).",
    )
    common(check)
    plan_parser = sub.add_parser(
        "plan",
        help="Print the privacy plan: per model and column, classification, treatment, purposes.",
        description="Print per model and column the classification, the treatment in the "
        "model's layer and the purposes, for review in a pull request.",
    )
    common(plan_parser)
    plan_parser.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="output format"
    )
    plan_parser.add_argument(
        "--select", nargs="+", metavar="MODEL", help="only these models (by name)"
    )


def run(args: argparse.Namespace) -> int:
    manifest_path = Path(args.manifest or load_settings().manifest_path)
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(f"policy: {exc}", file=sys.stderr)
        return 2
    if not manifest_path.is_file():
        print(
            f"policy: manifest not found: {manifest_path} (run `dbt parse` first)", file=sys.stderr
        )
        return 2
    try:
        manifest = load_manifest(manifest_path)
    except (OSError, ValueError) as exc:
        print(f"policy: cannot read {manifest_path}: {exc}", file=sys.stderr)
        return 2
    nodes = nodes_from_manifest(manifest)
    if not nodes:
        print(f"policy: {manifest_path} holds no models (run `dbt parse` first)", file=sys.stderr)
        return 2
    violations = validate_nodes(nodes, policy)

    if args.policy_command == "check":
        columns = sum(len(node["columns"]) for node in nodes)
        if violations:
            print(
                f"policy check failed: {len(violations)} violation(s) of policy version "
                f"{policy.version}:",
                file=sys.stderr,
            )
            for found in violations:
                print(f"  - {found.message}", file=sys.stderr)
            return 1
        print(
            f"policy check passed: {len(nodes)} nodes, {columns} columns, "
            f"policy version {policy.version}"
        )
        return 0

    selected = set(args.select or ())
    missing = selected - {node["name"] for node in nodes}
    if missing:
        print(f"policy: no such model: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    rows = plan(nodes, policy, select=selected)
    print(render_plan(rows, args.format))
    if args.format != "json" and violations:
        print(
            f"\n{len(violations)} policy violation(s): run `privacy-lakehouse policy check`.",
            file=sys.stderr,
        )
    return 0
