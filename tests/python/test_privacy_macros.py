"""Golden input/output tests for the privacy macros in macros/privacy/.

One small dbt project is written to a temporary folder per test session: the macros are copied
in, each macro call becomes a model over typed input rows, and a single in-process
`dbt build` runs them all on DuckDB. Every output row is then compared, NULL-safely and with
its Python type, against the value written here by hand. A second small project holds models
that must fail to compile, to prove the macros fail closed with messages naming model and
column. `pl_token` / `pl_encrypt` come from a stand-in dbt-duckdb plugin written into the
temporary folder (HMAC-SHA256 with a test salt the SQL never sees).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import shutil
import sys
import textwrap
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
MACRO_DIR = REPO_ROOT / "macros" / "privacy"

# Secrets of the stand-in plugin. They live only in the plugin module and in this file.
TEST_SALTS = {
    "subject": "pl-test-salt-subject-5b0e1f2a9c",
    "account": "pl-test-salt-account-77d3c41e08",
}
PLUGIN_MODULE = "pl_macro_test_functions"

LONG_TEXT = "x" * 10_000
LONG_EMAIL = "a" * 5_000 + "@example.com"
LONG_PROSE = "lorem ipsum " * 1_000
THUMBS = "\U0001f44d\U0001f3fd"  # thumbs up with a skin tone: one character, two code points
AS_OF = "date '2024-06-15'"


def expected_token(value: str, salt_name: str = "subject") -> str:
    """What the stand-in pl_token returns: an independent re-implementation for the oracle."""
    key = TEST_SALTS[salt_name].encode()
    return "v1:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


PLUGIN_SOURCE = f'''
"""Stand-in for privacy_lakehouse.duckdb_functions in the macro tests."""
import hashlib
import hmac

import duckdb
import pyarrow as pa
from dbt.adapters.duckdb.plugins import BasePlugin

SALTS = {TEST_SALTS!r}


def _pl_token(values, salt_names):
    out = []
    for value, salt_name in zip(values.to_pylist(), salt_names.to_pylist()):
        if value is None:
            out.append(None)
            continue
        key = SALTS[salt_name].encode()
        out.append("v1:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest())
    return pa.array(out, pa.string())


def _pl_encrypt(subject_tokens, values):
    out = []
    for subject, value in zip(subject_tokens.to_pylist(), values.to_pylist()):
        out.append(None if value is None else "enc:" + subject + ":" + value[::-1])
    return pa.array(out, pa.string())


def _pl_encrypt_values(subject_tokens, value_lists):
    out = []
    for subject, values in zip(subject_tokens.to_pylist(), value_lists.to_pylist()):
        if values is None:
            out.append(None)
            continue
        out.append([None if v is None else "enc:" + subject + ":" + v[::-1] for v in values])
    return pa.array(out, pa.list_(pa.string()))


class Plugin(BasePlugin):
    def configure_connection(self, conn):
        text = duckdb.sqltype("VARCHAR")
        for name, function in (("pl_token", _pl_token), ("pl_encrypt", _pl_encrypt)):
            conn.create_function(
                name, function, [text, text], text, type="arrow", null_handling="special"
            )
        texts = duckdb.list_type(text)
        conn.create_function(
            "pl_encrypt_values", _pl_encrypt_values, [text, texts], texts, type="arrow",
            null_handling="special",
        )
'''


@dataclass
class MacroCase:
    """One model: `call` applied to typed input rows, each with its expected output."""

    name: str
    call: str  # Jinja expression; its input column is named by columns[0]
    columns: list[tuple[str, str]]  # (name, SQL type) of the input columns
    rows: list[tuple[tuple[Any, ...], Any]]  # (input values, expected output)
    output_type: str | None = None  # DuckDB typeof() of every output, when it matters
    extra_sql: str = ""  # a line placed at the top of the model, e.g. depends_on


def single(name: str, call: str, sql_type: str, rows: list[tuple[Any, Any]], **kw) -> MacroCase:
    """A case with one input column named input_value."""
    return MacroCase(name, call, [("input_value", sql_type)], [((v,), e) for v, e in rows], **kw)


def without(case: MacroCase, name: str, call: str, drop_inputs: list[Any]) -> MacroCase:
    """The same golden rows for another implementation, minus inputs whose answer differs."""
    rows = [(inputs, exp) for inputs, exp in case.rows if inputs[0] not in drop_inputs]
    return MacroCase(name, call, case.columns, rows, case.output_type, case.extra_sql)


MASK_EMAIL = single(
    "mask_email_duckdb",
    "privacy_lakehouse.mask_email('input_value')",
    "varchar",
    [
        ("john.doe@example.com", "j***@example.com"),
        (None, None),
        ("", ""),
        ("no-at-sign", "*****"),
        ("@example.com", "***@example.com"),
        ("x@", "x***@"),
        ("a@b@c.org", "a***@c.org"),
        ("Zoë.Ünal@exämple.de", "Z***@exämple.de"),
        ("\U0001f600smile@example.com", "\U0001f600***@example.com"),
        (LONG_EMAIL, "a***@example.com"),
    ],
    output_type="VARCHAR",
)

KEEP_LAST_FOUR = single(
    "mask_keep_last_four_duckdb",
    "privacy_lakehouse.mask_keep_first_last('input_value')",
    "varchar",
    [
        ("4111111111111111", "************1111"),
        (None, None),
        ("", ""),
        ("abc", "***"),
        ("abcd", "****"),
        ("abcde", "*bcde"),
        ("Zoë Ünal", "****Ünal"),
        (THUMBS * 5, "*" + THUMBS * 4),
        ("e\u0301" * 6, "**" + "e\u0301" * 4),
        (LONG_TEXT, "*" * 9_996 + "xxxx"),
    ],
    output_type="VARCHAR",
)

KEEP_FIRST_LAST = single(
    "mask_keep_first_last_args",
    "privacy_lakehouse.mask_keep_first_last('input_value', keep_first=2, keep_last=2,"
    " mask_char='#')",
    "varchar",
    [
        ("abcdefg", "ab###fg"),
        ("abcd", "####"),
        ("abcde", "ab#de"),
        (None, None),
        ("", ""),
        ("ÅÄÖåäö", "ÅÄ##äö"),
        (LONG_TEXT, "xx" + "#" * 9_996 + "xx"),
    ],
)

KEEP_WITH_QUOTE = single(
    "mask_keep_quote_char",
    "privacy_lakehouse.mask_keep_first_last('input_value', keep_first=1, keep_last=1,"
    ' mask_char="\'")',
    "varchar",
    [("abc", "a'c"), ("O'Brien", "O'''''n")],
)

REDACT = single(
    "redact_free_text_duckdb",
    "privacy_lakehouse.redact_free_text('input_value')",
    "varchar",
    [
        (None, None),
        ("", ""),
        ("Mail jöe@exämple.com now", "Mail [EMAIL] now"),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN [IBAN] please"),
        ("DE89370400440532013000", "[IBAN]"),
        ("card 4111 1111 1111 1111, thanks", "card [CARD], thanks"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("pan 4111111111111", "pan [CARD]"),
        ("amex 3782 822463 10005", "amex [CARD]"),
        ("ssn 123-45-6789", "ssn [NATIONAL_ID]"),
        ("id 123456789.", "id [NATIONAL_ID]."),
        ("call +44 20 7946 0958 today", "call [PHONE] today"),
        ("call (020) 7946 0958", "call [PHONE]"),
        ("call 0044 20 7946 0958", "call [PHONE]"),
        ("call 612 345 678", "call [PHONE]"),
        ("a@b.co 4111111111111111 +1 555 123 4567", "[EMAIL] [CARD] [PHONE]"),
        ("order 12345 shipped", "order 12345 shipped"),
        ("Bonjour Zoë, rien à signaler 😀", "Bonjour Zoë, rien à signaler 😀"),
        (LONG_PROSE + "x@y.com", LONG_PROSE + "[EMAIL]"),
    ],
    output_type="VARCHAR",
)

TOKEN_INPUTS = ["abc", "", "Zoë 😀", LONG_TEXT]
SALTED_HASH = single(
    "salted_hash_subject",
    "privacy_lakehouse.salted_hash('input_value')",
    "varchar",
    [(v, expected_token(v)) for v in TOKEN_INPUTS] + [(None, None)],
    output_type="VARCHAR",
)

NUMERIC_BIN = single(
    "numeric_bin_100",
    "privacy_lakehouse.generalize_numeric_bin('input_value', 100)",
    "integer",
    [
        (150, 100),
        (199, 100),
        (200, 200),
        (0, 0),
        (-1, -100),
        (-100, -100),
        (-101, -200),
        (None, None),
    ],
    output_type="INTEGER",
)

AGE_BAND = single(
    "age_band_default",
    f"privacy_lakehouse.age_band('input_value', as_of_expr=\"{AS_OF}\")",
    "date",
    [
        (dt.date(1990, 6, 15), "30-39"),  # 34 on the birthday itself
        (dt.date(1994, 6, 16), "20-29"),  # 29: turns 30 tomorrow
        (dt.date(1994, 6, 15), "30-39"),  # 30 today
        (dt.date(1944, 6, 16), "70-79"),
        (dt.date(1944, 6, 15), "80+"),
        (dt.date(1900, 1, 1), "80+"),
        (dt.date(2024, 6, 15), "0-9"),
        (dt.date(2025, 1, 1), None),  # born after as_of
        (None, None),
    ],
    output_type="VARCHAR",
)

POSTCODE = single(
    "postcode_prefix_default",
    "privacy_lakehouse.postcode_prefix('input_value')",
    "varchar",
    [
        ("sw1a 1aa", "SW"),
        (" n1 9gu", "N1"),
        ("a", "A"),
        ("é1 2ab", "É1"),
        ("", ""),
        (None, None),
        ("\u00a0ab 12", "AB"),
        (LONG_TEXT, "XX"),
    ],
    output_type="VARCHAR",
)

SUPPRESS = single(
    "suppress_small_groups_rows",
    "privacy_lakehouse.suppress_small_groups('input_value', min_count=3)",
    "varchar",
    [
        ("a", "a"),
        ("a", "a"),
        ("a", "a"),
        ("b", "Other"),
        ("b", "Other"),
        ("ü😀", "ü😀"),
        ("ü😀", "ü😀"),
        ("ü😀", "ü😀"),
        ("", "Other"),
        (None, None),
        (LONG_TEXT, "Other"),
    ],
    output_type="VARCHAR",
)

GEO_HIERARCHY_CSV = """value,level_1,level_2
Paris,Île-de-France,France
Lyon,Auvergne-Rhône-Alpes,France
München,Bayern,Deutschland
"""
HIERARCHY_DEPENDS = "-- depends_on: {{ ref('geo_hierarchy') }}"


def macro_cases() -> list[MacroCase]:
    """Every model of the golden project. Names are model names."""
    return [
        # mask family
        single(
            "mask_nullify_varchar",
            "privacy_lakehouse.mask_nullify('input_value')",
            "varchar",
            [("abc", None), (None, None), ("", None), ("Zoë 😀", None), (LONG_TEXT, None)],
            output_type="VARCHAR",
        ),
        single(
            "mask_nullify_integer",
            "privacy_lakehouse.mask_nullify('input_value')",
            "integer",
            [(42, None), (None, None)],
            output_type="INTEGER",
        ),
        single(
            "mask_nullify_portable",
            "privacy_lakehouse.default__mask_nullify('input_value')",
            "date",
            [(dt.date(2020, 1, 1), None), (None, None)],
            output_type="DATE",
        ),
        single(
            "mask_default_varchar",
            "privacy_lakehouse.mask_default('input_value', 'varchar')",
            "varchar",
            [
                ("abc", "*****"),
                (None, "*****"),
                ("", "*****"),
                ("Zoë", "*****"),
                (LONG_TEXT, "*****"),
            ],
            output_type="VARCHAR",
        ),
        single(
            "mask_default_integer",
            "privacy_lakehouse.mask_default('input_value', 'integer')",
            "integer",
            [(7, 0), (None, 0)],
            output_type="INTEGER",
        ),
        single(
            "mask_default_decimal",
            "privacy_lakehouse.mask_default('input_value', 'decimal(10, 2)')",
            "decimal(10, 2)",
            [(Decimal("12.34"), Decimal("0.00")), (None, Decimal("0.00"))],
            output_type="DECIMAL(10,2)",
        ),
        single(
            "mask_default_date",
            "privacy_lakehouse.mask_default('input_value', 'date')",
            "date",
            [(dt.date(1985, 3, 2), dt.date(1900, 1, 1)), (None, dt.date(1900, 1, 1))],
            output_type="DATE",
        ),
        single(
            "mask_default_timestamp",
            "privacy_lakehouse.mask_default('input_value', 'timestamp')",
            "timestamp",
            [(dt.datetime(2020, 5, 17, 10, 11, 12), dt.datetime(1900, 1, 1))],
            output_type="TIMESTAMP",
        ),
        single(
            "mask_default_boolean",
            "privacy_lakehouse.mask_default('input_value', 'boolean')",
            "boolean",
            [(True, False), (False, False), (None, False)],
            output_type="BOOLEAN",
        ),
        MASK_EMAIL,
        without(
            MASK_EMAIL,
            "mask_email_portable",
            "privacy_lakehouse.default__mask_email('input_value')",
            ["a@b@c.org"],  # standard SQL splits at the first '@': 'a***@b@c.org'
        ),
        KEEP_LAST_FOUR,
        without(
            KEEP_LAST_FOUR,
            "mask_keep_last_four_portable",
            "privacy_lakehouse.default__mask_keep_first_last('input_value', 0, 4, '*')",
            [THUMBS * 5, "e\u0301" * 6],  # standard SQL counts code points, not graphemes
        ),
        KEEP_FIRST_LAST,
        KEEP_WITH_QUOTE,
        single(
            "mask_year_only_date",
            "privacy_lakehouse.mask_year_only('input_value')",
            "date",
            [(dt.date(1985, 3, 2), 1985), (dt.date(1, 1, 1), 1), (None, None)],
            output_type="INTEGER",
        ),
        single(
            "mask_year_only_timestamp",
            "privacy_lakehouse.mask_year_only('input_value')",
            "timestamp",
            [(dt.datetime(1999, 12, 31, 23, 59, 59), 1999), (None, None)],
            output_type="INTEGER",
        ),
        single(
            "mask_year_only_text",
            "privacy_lakehouse.default__mask_year_only('input_value')",
            "varchar",
            [("2001-02-03", 2001), (None, None)],
            output_type="INTEGER",
        ),
        REDACT,
        # keyed hashing
        SALTED_HASH,
        without(
            SALTED_HASH, "pseudonymize_subject", "privacy_lakehouse.pseudonymize('input_value')", []
        ),
        single(
            "salted_hash_account",
            "privacy_lakehouse.salted_hash('input_value', 'account')",
            "varchar",
            [("abc", expected_token("abc", "account")), (None, None)],
        ),
        single(
            "salted_hash_integer",
            "privacy_lakehouse.salted_hash('input_value')",
            "integer",
            [(42, expected_token("42")), (None, None)],
        ),
        single(
            "encrypt_for_subject_literal",
            "privacy_lakehouse.encrypt_for_subject('input_value', \"'tok-1'\")",
            "varchar",
            [("abc", "enc:tok-1:cba"), ("Zoë", "enc:tok-1:ëoZ"), (None, None)],
        ),
        single(
            "encrypt_values_for_subject_literal",
            "privacy_lakehouse.encrypt_values_for_subject("
            "['input_value', \"upper(input_value)\", '42'], \"'tok-1'\")",
            "varchar",
            [
                ("abc", ["enc:tok-1:cba", "enc:tok-1:CBA", "enc:tok-1:24"]),
                (None, [None, None, "enc:tok-1:24"]),
            ],
        ),
        single(
            "ciphertext_of_second",
            "privacy_lakehouse.ciphertext_of(\"['first', input_value, 'third']\", "
            "['first_name', 'email', 'phone'], 'email')",
            "varchar",
            [("abc", "abc"), (None, None)],
        ),
        # generalization
        NUMERIC_BIN,
        without(
            NUMERIC_BIN,
            "numeric_bin_portable",
            "privacy_lakehouse.default__generalize_numeric_bin('input_value', 100, none, none)",
            [],
        ),
        single(
            "numeric_bin_clipped",
            "privacy_lakehouse.generalize_numeric_bin('input_value', 100, lower=0, upper=1000)",
            "integer",
            [(-50, 0), (1500, 1000), (999, 900), (1000, 1000), (None, None)],
            output_type="INTEGER",
        ),
        single(
            "numeric_bin_decimal",
            "privacy_lakehouse.generalize_numeric_bin('input_value', 0.5)",
            "decimal(10, 2)",
            [
                (Decimal("1.74"), Decimal("1.5")),
                (Decimal("-0.25"), Decimal("-0.5")),
                (Decimal("2.00"), Decimal("2")),
                (None, None),
            ],
        ),
        single(
            "numeric_bin_bigint_exact",
            "privacy_lakehouse.generalize_numeric_bin('input_value', 10)",
            "bigint",
            [(2**53 + 1, 9_007_199_254_740_990), (-(2**62), -4_611_686_018_427_387_910)],
            output_type="BIGINT",
        ),
        single(
            "top_bottom_code_both",
            "privacy_lakehouse.top_bottom_code('input_value', lower=0, upper=100)",
            "integer",
            [(-5, 0), (0, 0), (50, 50), (100, 100), (150, 100), (None, None)],
            output_type="INTEGER",
        ),
        single(
            "top_bottom_code_upper",
            "privacy_lakehouse.top_bottom_code('input_value', upper=1000)",
            "double",
            [(3.5, 3.5), (-1e9, -1e9), (1e9, 1000.0), (None, None)],
            output_type="DOUBLE",
        ),
        AGE_BAND,
        without(
            AGE_BAND,
            "age_band_portable",
            f"privacy_lakehouse.default__age_band('input_value', \"{AS_OF}\", 10, 80)",
            [],
        ),
        single(
            "age_band_width_5_top_85",
            f"privacy_lakehouse.age_band('input_value', \"{AS_OF}\", band_width=5, top_code=85)",
            "date",
            [
                (dt.date(1941, 1, 1), "80-84"),
                (dt.date(1939, 6, 15), "85+"),
                (dt.date(1999, 6, 16), "20-24"),
                (None, None),
            ],
        ),
        single(
            "age_band_single_years",
            f"privacy_lakehouse.age_band('input_value', \"{AS_OF}\", band_width=1, top_code=none)",
            "timestamp",
            [(dt.datetime(1990, 6, 15, 23, 0), "34"), (dt.datetime(1900, 6, 16), "123")],
        ),
        single(
            "age_band_leap_day",
            # A 29 February birthday counts from 1 March in other years.
            "privacy_lakehouse.age_band('input_value', \"date '2023-02-28'\", 1, none)",
            "varchar",
            [("2003-02-28", "20"), ("2013-03-01", "9"), ("2000-02-29", "22"), ("2000-02-28", "23")],
        ),
        single(
            "generalize_date_month",
            "privacy_lakehouse.generalize_date('input_value', 'month')",
            "date",
            [(dt.date(2024, 5, 17), dt.date(2024, 5, 1)), (None, None)],
            output_type="DATE",
        ),
        single(
            "generalize_date_quarter_week",
            "privacy_lakehouse.generalize_date(privacy_lakehouse.generalize_date("
            "'input_value', 'week'), 'quarter')",
            "date",
            [
                (dt.date(2024, 3, 31), dt.date(2024, 1, 1)),
                (dt.date(2024, 5, 17), dt.date(2024, 4, 1)),
            ],
        ),
        single(
            "generalize_date_hour",
            "privacy_lakehouse.generalize_date('input_value', 'hour')",
            "timestamp",
            [(dt.datetime(2024, 5, 17, 10, 11, 12), dt.datetime(2024, 5, 17, 10)), (None, None)],
            output_type="TIMESTAMP",
        ),
        POSTCODE,
        without(
            POSTCODE,
            "postcode_prefix_portable",
            "privacy_lakehouse.default__postcode_prefix('input_value', 2)",
            ["\u00a0ab 12"],  # standard SQL removes ordinary spaces only
        ),
        single(
            "postcode_prefix_three",
            "privacy_lakehouse.postcode_prefix('input_value', prefix_length=3)",
            "varchar",
            [("SW1A 1AA", "SW1"), ("sw 1a", "SW1"), ("ab", "AB")],
        ),
        single(
            "hierarchy_level_2",
            "privacy_lakehouse.generalize_hierarchy('input_value', ref('geo_hierarchy'), 2)",
            "varchar",
            [
                ("Paris", "France"),
                ("München", "Deutschland"),
                ("Atlantis", None),
                ("", None),
                (None, None),
                (LONG_TEXT, None),
            ],
            output_type="VARCHAR",
            extra_sql=HIERARCHY_DEPENDS,
        ),
        MacroCase(
            # The input column is called `value` like the seed's: it must not be captured.
            "hierarchy_level_1_unmatched",
            "privacy_lakehouse.generalize_hierarchy('value', ref('geo_hierarchy'), 'level_1',"
            " unmatched='Unknown')",
            [("value", "varchar")],
            [(("Lyon",), "Auvergne-Rhône-Alpes"), (("Atlantis",), "Unknown"), ((None,), None)],
            extra_sql=HIERARCHY_DEPENDS,
        ),
        SUPPRESS,
        MacroCase(
            "suppress_small_groups_partitioned",
            "privacy_lakehouse.suppress_small_groups('input_value', partition_expr='region',"
            " min_count=2, remainder='Rare')",
            [("input_value", "varchar"), ("region", "varchar")],
            [
                (("a", "north"), "a"),
                (("a", "north"), "a"),
                (("a", "south"), "Rare"),
                (("b", "south"), "Rare"),
            ],
        ),
        MacroCase(
            # Three rows of one person are one person: counting people, not rows.
            "suppress_small_groups_people",
            "privacy_lakehouse.suppress_small_groups('input_value', min_count=2,"
            " subject_expr='subject_id')",
            [("input_value", "varchar"), ("subject_id", "varchar")],
            [
                (("x", "s1"), "Other"),
                (("x", "s1"), "Other"),
                (("x", "s1"), "Other"),
                (("y", "s1"), "y"),
                (("y", "s2"), "y"),
            ],
        ),
        single(
            "suppress_small_groups_typed",
            "privacy_lakehouse.suppress_small_groups('input_value', min_count=3, remainder=none)",
            "integer",
            [(1, 1), (1, 1), (1, 1), (2, None), (None, None)],
            output_type="INTEGER",
        ),
    ]


def sql_literal(value: Any, sql_type: str) -> str:
    """A typed SQL literal; the text form is cast so DuckDB, not Python, decides the value."""
    if value is None:
        return f"cast(null as {sql_type})"
    if isinstance(value, bool):
        return f"cast({str(value).lower()} as {sql_type})"
    text = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    return "cast('{}' as {})".format(text.replace("'", "''"), sql_type)


def case_model_sql(case: MacroCase) -> str:
    names = ", ".join(["case_id"] + [name for name, _ in case.columns])
    values = ",\n        ".join(
        "({}, {})".format(
            case_id,
            ", ".join(sql_literal(v, t) for v, (_, t) in zip(inputs, case.columns, strict=True)),
        )
        for case_id, (inputs, _) in enumerate(case.rows)
    )
    return textwrap.dedent(
        f"""\
        {case.extra_sql}
        with cases ({names}) as (
            values
            {values}
        ),

        applied as (
            select case_id, {{{{ {case.call} }}}} as output
            from cases
        )

        select case_id, output, typeof(output) as output_type
        from applied
        """
    )


# --- privacy_select ------------------------------------------------------------------------

CUSTOMERS_INPUT_SQL = """\
select * from (
    values
    (1, 'C-001', 'jane.doe@example.com', '4111111111111111', date '1990-06-15', 'sw1a 1aa',
        'Paris', 1520, 'call +44 20 7946 0958', 'internal-1', 'north'),
    (2, 'C-002', null, null, null, null, 'Atlantis', null, null, 'internal-2', null),
    (3, 'C-003', 'zoë@exämple.fr', 'ÅÄÖ1234', date '1944-06-15', '75001', 'Lyon', -5,
        'Zoë writes from 😀', 'internal-3', 'south')
) as t (row_id, customer_id, email, card_number, birth_date, postcode, city, balance, notes,
    internal_code, region)
"""

PRIVACY_SELECT_SQL = """\
-- depends_on: {{ ref('geo_hierarchy') }}
select
    {{ privacy_select(relation_alias='c', exclude=['computed']) }},
    1 as computed
from {{ ref('customers_input') }} as c
"""


def column(name: str, role: str = "none", **meta: Any) -> dict[str, Any]:
    """A YAML column with the project's meta contract; `layer` keys go under treatment."""
    meta = {
        "sensitivity": "internal" if role == "none" else "confidential",
        "privacy_role": role,
        "purposes": ["analytics"],
        **meta,
    }
    if role != "none":
        meta.setdefault("pii_type", "name")
    return {"name": name, "config": {"meta": meta}}


PRIVACY_SELECT_COLUMNS = [
    column("row_id"),
    column(
        "customer_token",
        "direct_identifier",
        source_column="customer_id",
        treatment={"silver": "tokenize"},
        treatment_args={"salt": "subject"},
    ),
    # Tokenized upstream (same treatment in the previous layer): carried, never tokenized twice.
    column(
        "carried_token",
        "direct_identifier",
        source_column="customer_id",
        treatment={"bronze": "tokenize", "silver": "tokenize"},
    ),
    column(
        "email_masked",
        "direct_identifier",
        source_column="email",
        treatment={"silver": "mask_email", "gold": "drop"},
    ),
    column(
        "card_last4",
        "direct_identifier",
        source_column="card_number",
        treatment={"silver": "keep_first_last"},
        treatment_args={"keep_last": 4},
    ),
    column(
        "birth_year",
        "quasi_identifier",
        source_column="birth_date",
        treatment={"silver": "year_only"},
    ),
    column(
        "age_group",
        "quasi_identifier",
        source_column="birth_date",
        treatment={"silver": "age_band"},
        treatment_args={"as_of": dt.date(2024, 6, 15), "band_width": 10},
    ),
    column(
        "postcode_area",
        "quasi_identifier",
        source_column="postcode",
        treatment={"silver": "postcode_prefix"},
        treatment_args={"prefix_length": 2},
    ),
    column(
        "country",
        "quasi_identifier",
        source_column="city",
        treatment={"silver": "hierarchy"},
        treatment_args={"hierarchy": "geo_hierarchy", "level": 2, "unmatched": "Other"},
    ),
    column(
        "balance_bin",
        "sensitive_attribute",
        source_column="balance",
        treatment={"silver": "numeric_bin"},
        treatment_args={"bin_width": 1000},
    ),
    column("notes", "sensitive_attribute", treatment={"silver": "redact_free_text"}),
    column("internal_code", "direct_identifier", treatment={"silver": "drop"}),
    # Legacy top-level meta (before dbt 1.10 moved it under config) is read too.
    {"name": "region", "meta": column("region", treatment={"silver": "none"})["config"]["meta"]},
    column("computed"),
]

PRIVACY_SELECT_EXPECTED = {
    "columns": [
        "row_id",
        "customer_token",
        "carried_token",
        "email_masked",
        "card_last4",
        "birth_year",
        "age_group",
        "postcode_area",
        "country",
        "balance_bin",
        "notes",
        "region",
        "computed",
    ],
    "rows": [
        (
            1,
            expected_token("C-001"),
            "C-001",
            "j***@example.com",
            "************1111",
            1990,
            "30-39",
            "SW",
            "France",
            1000,
            "call [PHONE]",
            "north",
            1,
        ),
        (
            2,
            expected_token("C-002"),
            "C-002",
            None,
            None,
            None,
            None,
            None,
            "Other",
            None,
            None,
            None,
            1,
        ),
        (
            3,
            expected_token("C-003"),
            "C-003",
            "z***@exämple.fr",
            "***1234",
            1944,
            "80+",
            "75",
            "France",
            -1000,
            "Zoë writes from 😀",
            "south",
            1,
        ),
    ],
}


# --- models that must fail -----------------------------------------------------------------

SELECT_FROM_INPUT = "select {{ privacy_select() }} from {{ ref('failing_input') }}\n"
FAILING_INPUT_SQL = "select 1 as row_id, 'jane@example.com' as email, 'x' as note\n"


@dataclass
class FailingModel:
    name: str
    layer: str
    sql: str
    columns: list[dict[str, Any]] = field(default_factory=list)
    message_parts: list[str] = field(default_factory=list)
    # A direct macro call with a bad argument fails while dbt parses the project (it renders
    # every model once), which stops the whole invocation: such a model gets its own project.
    fails_at_parse: bool = False


def failing_models() -> list[FailingModel]:
    return [
        FailingModel(
            "misspelled_treatment",
            "silver",
            SELECT_FROM_INPUT,
            [
                column("row_id"),
                column("email", "direct_identifier", treatment={"silver": "mask_emial"}),
            ],
            ["misspelled_treatment", "'email'", "unknown treatment 'mask_emial'"],
        ),
        FailingModel(
            "unclassified_column",
            "silver",
            SELECT_FROM_INPUT,
            [column("row_id"), {"name": "note", "description": "no meta at all"}],
            ["unclassified_column", "'note'", "unclassified"],
        ),
        FailingModel(
            "untreated_identifier",
            "gold",
            SELECT_FROM_INPUT,
            [
                column("row_id"),
                column("email", "direct_identifier", treatment={"silver": "mask_email"}),
            ],
            ["untreated_identifier", "'email'", "needs meta.treatment.gold"],
        ),
        FailingModel(
            "misspelled_argument",
            "silver",
            SELECT_FROM_INPUT,
            [
                column(
                    "email",
                    "direct_identifier",
                    treatment={"silver": "keep_first_last"},
                    treatment_args={"keep_frist": 2},
                )
            ],
            ["misspelled_argument", "'email'", "unknown treatment_args 'keep_frist'"],
        ),
        FailingModel(
            "two_valued_treatment",
            "bronze",
            SELECT_FROM_INPUT,
            [column("email", "direct_identifier", treatment={"bronze": "tokenize_and_encrypt"})],
            ["two_valued_treatment", "'email'", "declare two columns"],
        ),
        FailingModel(
            "unknown_default_type",
            "silver",
            "select {{ privacy_lakehouse.mask_default('email', 'struct(a int)') }} as email"
            " from {{ ref('failing_input') }}\n",
            message_parts=["mask_default", "data_type"],
            fails_at_parse=True,
        ),
        FailingModel(
            "ciphertext_of_unknown_expression",
            "silver",
            "select {{ privacy_lakehouse.ciphertext_of('c', ['email', 'phone'], 'emial') }}"
            " as email from {{ ref('failing_input') }}\n",
            message_parts=["ciphertext_of", "emial", "not one of the encrypted expressions"],
            fails_at_parse=True,
        ),
        FailingModel(
            "encrypt_values_of_a_string",
            "silver",
            "select {{ privacy_lakehouse.encrypt_values_for_subject('email') }}"
            " as c from {{ ref('failing_input') }}\n",
            message_parts=["encrypt_values_for_subject", "non-empty list of SQL expressions"],
            fails_at_parse=True,
        ),
        FailingModel(
            "encrypt_values_twice",
            "silver",
            "select {{ privacy_lakehouse.encrypt_values_for_subject(['email', 'email']) }}"
            " as c from {{ ref('failing_input') }}\n",
            message_parts=["encrypt_values_for_subject", "lists an expression twice"],
            fails_at_parse=True,
        ),
        FailingModel(
            "unsafe_salt_name",
            "silver",
            "select {{ privacy_lakehouse.salted_hash('email', 'Not a name!') }} as email"
            " from {{ ref('failing_input') }}\n",
            message_parts=["salted_hash", "salt_name"],
            fails_at_parse=True,
        ),
        FailingModel(
            "redact_not_portable",
            "silver",
            "select {{ privacy_lakehouse.default__redact_free_text('note') }} as note"
            " from {{ ref('failing_input') }}\n",
            message_parts=["redact_free_text", "no portable SQL"],
            fails_at_parse=True,
        ),
    ]


# --- project scaffolding -------------------------------------------------------------------


def write_project(root: Path, plugin_dir: Path) -> None:
    """A dbt project named privacy_lakehouse with the macros, a DuckDB file and the plugin."""
    shutil.copytree(MACRO_DIR, root / "macros" / "privacy")
    (root / "dbt_project.yml").write_text(
        yaml.safe_dump(
            {
                "name": "privacy_lakehouse",
                "version": "1.0.0",
                "config-version": 2,
                "profile": "privacy_macro_test",
                # Checks privacy_macros.yml against the macros' signatures.
                "flags": {"validate_macro_args": True},
                "models": {"privacy_lakehouse": {"+materialized": "table"}},
            }
        )
    )
    (root / "profiles.yml").write_text(
        yaml.safe_dump(
            {
                "privacy_macro_test": {
                    "target": "test",
                    "outputs": {
                        "test": {
                            "type": "duckdb",
                            "path": str(root / "test.duckdb"),
                            "threads": 1,
                            "plugins": [{"module": PLUGIN_MODULE}],
                        }
                    },
                }
            }
        )
    )
    (plugin_dir / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    (root / "models").mkdir(exist_ok=True)


def write_model(root: Path, layer: str, name: str, sql: str, columns: list | None = None) -> None:
    folder = root / "models" / layer
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.sql").write_text(sql)
    if columns is not None:
        (folder / f"{name}.yml").write_text(
            yaml.safe_dump(
                {"version": 2, "models": [{"name": name, "columns": columns}]},
                allow_unicode=True,
                sort_keys=False,
            )
        )


def dbt_build(root: Path) -> Any:
    from dbt.cli.main import dbtRunner

    return dbtRunner().invoke(
        [
            "build",
            "--project-dir",
            str(root),
            "--profiles-dir",
            str(root),
            "--quiet",
            # A macro YAML that disagrees with the macro's signature fails the build.
            "--warn-error-options",
            '{"error": ["InvalidMacroAnnotation"]}',
        ]
    )


@dataclass
class BuiltProjects:
    golden_root: Path
    golden_result: Any
    failing_result: Any  # the project of models that fail when dbt compiles them
    parse_failures: dict[str, Any]  # model name -> result of its own project's build
    plugin_dir: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltProjects:
    plugin_dir = tmp_path_factory.mktemp("plugin")
    sys.path.insert(0, str(plugin_dir))
    try:
        golden = tmp_path_factory.mktemp("golden_project")
        write_project(golden, plugin_dir)
        (golden / "seeds").mkdir()
        (golden / "seeds" / "geo_hierarchy.csv").write_text(GEO_HIERARCHY_CSV, encoding="utf-8")
        for case in macro_cases():
            write_model(golden, "cases", case.name, case_model_sql(case))
        write_model(golden, "inputs", "customers_input", CUSTOMERS_INPUT_SQL)
        write_model(
            golden, "silver", "customers_privacy_select", PRIVACY_SELECT_SQL, PRIVACY_SELECT_COLUMNS
        )
        golden_result = dbt_build(golden)

        failing = tmp_path_factory.mktemp("failing_project")
        write_project(failing, plugin_dir)
        write_model(failing, "inputs", "failing_input", FAILING_INPUT_SQL)
        parse_failures = {}
        for model in failing_models():
            root = failing
            if model.fails_at_parse:
                root = tmp_path_factory.mktemp(model.name)
                write_project(root, plugin_dir)
                write_model(root, "inputs", "failing_input", FAILING_INPUT_SQL)
            write_model(root, model.layer, model.name, model.sql, model.columns or None)
            if model.fails_at_parse:
                parse_failures[model.name] = dbt_build(root)
        failing_result = dbt_build(failing)
    finally:
        sys.path.remove(str(plugin_dir))
    return BuiltProjects(golden, golden_result, failing_result, parse_failures, plugin_dir)


def compiled_sql(root: Path, model_path: str) -> str:
    return (root / "target" / "compiled" / "privacy_lakehouse" / "models" / model_path).read_text()


def query(root: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(root / "test.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def status_by_model(result: Any) -> dict[str, tuple[str, str]]:
    return {
        r.node.name: (str(r.status), r.message or "")
        for r in result.result
        if r.node.resource_type == "model"
    }


def same(actual: Any, expected: Any) -> bool:
    """NULL-safe equality that also requires the same Python type (1 is not True, 1.0 not 1)."""
    if expected is None or actual is None:
        return actual is None and expected is None
    return type(actual) is type(expected) and actual == expected


# --- tests ---------------------------------------------------------------------------------

MACRO_DEFINITION = re.compile(r"{%-?\s*macro\s+(\w+)\s*\(([^)]*)\)")


def macro_definitions() -> dict[str, tuple[str, list[str]]]:
    """Macro name -> (file stem, argument names), from the SQL files."""
    found: dict[str, tuple[str, list[str]]] = {}
    for path in sorted(MACRO_DIR.glob("*.sql")):
        for name, arguments in MACRO_DEFINITION.findall(path.read_text()):
            names = [a.split("=")[0].strip() for a in arguments.split(",") if a.strip()]
            found[name] = (path.stem, names)
    return found


def test_every_public_macro_is_dispatched_and_documented() -> None:
    definitions = macro_definitions()
    documented = {
        entry["name"]: entry
        for entry in yaml.safe_load((MACRO_DIR / "privacy_macros.yml").read_text())["macros"]
    }
    public = [name for name in definitions if not name.startswith(("_", "default__", "duckdb__"))]
    assert len(public) == 21
    for name in public:
        stem, arguments = definitions[name]
        assert stem == name, f"{name} lives in {stem}.sql"
        source = (MACRO_DIR / f"{name}.sql").read_text()
        assert f"adapter.dispatch('{name}', 'privacy_lakehouse')" in source
        assert definitions[f"default__{name}"][0] == name
        assert definitions[f"duckdb__{name}"][0] == name
        assert documented[name]["description"].strip()
        assert [a["name"] for a in documented[name]["arguments"]] == arguments
        assert all(a["description"].strip() for a in documented[name]["arguments"])
    stems = [definitions[name][0] for name in public]
    assert len(stems) == len(set(stems)), "one public macro per file"
    helpers = {n for n in definitions if not n.startswith(("default__", "duckdb__"))}
    assert helpers == set(documented)


def test_golden_project_builds(built: BuiltProjects) -> None:
    assert built.golden_result.result is not None, str(built.golden_result.exception)
    statuses = status_by_model(built.golden_result)
    failed = {name: status for name, status in statuses.items() if status[0] != "success"}
    assert not failed
    assert built.golden_result.success
    assert len(statuses) == len(macro_cases()) + 2


@pytest.mark.parametrize("case", macro_cases(), ids=lambda case: case.name)
def test_macro_golden_rows(built: BuiltProjects, case: MacroCase) -> None:
    rows = query(
        built.golden_root, f"select case_id, output, output_type from {case.name} order by case_id"
    )
    assert [row[0] for row in rows] == list(range(len(case.rows)))
    for (case_id, actual, output_type), (inputs, expected) in zip(rows, case.rows, strict=True):
        shown = repr(inputs)[:80]
        assert same(actual, expected), f"row {case_id} {shown}: got {actual!r:.80}"
        if case.output_type is not None:
            assert output_type == case.output_type, f"row {case_id}: type {output_type}"


def test_same_value_same_token_and_salts_differ(built: BuiltProjects) -> None:
    subject, account = query(
        built.golden_root,
        "select s.output, a.output from salted_hash_subject as s"
        " join salted_hash_account as a on s.case_id = a.case_id where s.case_id = 0",
    )[0]
    assert subject == expected_token("abc")
    assert subject != account
    pseudonyms = query(
        built.golden_root, "select output from pseudonymize_subject order by case_id"
    )
    tokens = query(built.golden_root, "select output from salted_hash_subject order by case_id")
    assert pseudonyms == tokens


def test_no_salt_in_target_or_logs(built: BuiltProjects) -> None:
    compiled = compiled_sql(built.golden_root, "cases/salted_hash_subject.sql")
    assert "pl_token(cast(input_value as varchar), 'subject')" in compiled
    # The scan must be able to find a salt: it finds one in the plugin that holds them.
    plugin_bytes = (built.plugin_dir / f"{PLUGIN_MODULE}.py").read_bytes()
    assert TEST_SALTS["subject"].encode() in plugin_bytes
    scanned = 0
    for folder in ("target", "logs"):
        for path in (built.golden_root / folder).rglob("*"):
            if path.is_file():
                scanned += 1
                content = path.read_bytes()
                for salt in TEST_SALTS.values():
                    assert salt.encode() not in content, f"salt found in {path.name}"
    assert scanned > 10


def test_privacy_select_columns_and_values(built: BuiltProjects) -> None:
    columns = [
        row[0]
        for row in query(
            built.golden_root,
            "select column_name from information_schema.columns"
            " where table_name = 'customers_privacy_select' order by ordinal_position",
        )
    ]
    assert columns == PRIVACY_SELECT_EXPECTED["columns"]
    rows = query(built.golden_root, "select * from customers_privacy_select order by row_id")
    assert len(rows) == len(PRIVACY_SELECT_EXPECTED["rows"])
    for actual_row, expected_row in zip(rows, PRIVACY_SELECT_EXPECTED["rows"], strict=True):
        for name, actual, expected in zip(columns, actual_row, expected_row, strict=True):
            assert same(actual, expected), f"row {actual_row[0]} column {name}: {actual!r:.80}"


def test_privacy_select_compiled_sql(built: BuiltProjects) -> None:
    compiled = compiled_sql(built.golden_root, "silver/customers_privacy_select.sql")
    assert "pl_token(cast(c.customer_id as varchar), 'subject') as customer_token" in compiled
    assert "internal_code" not in compiled  # dropped: not even read
    assert "    c.region,\n" in compiled  # kept as is, not self-aliased


def test_compiled_sql_parses_with_sqlfluff(built: BuiltProjects) -> None:
    sqlfluff = pytest.importorskip("sqlfluff")
    # The privacy_select model uses nearly every macro; the project lints with sqlfluff, so
    # the SQL the macros write must be parsable by its DuckDB dialect.
    compiled = compiled_sql(built.golden_root, "silver/customers_privacy_select.sql")
    parsed = sqlfluff.parse(compiled, dialect="duckdb")  # raises on SQL it cannot parse
    assert "unparsable" not in str(parsed)


@pytest.mark.parametrize("model", failing_models(), ids=lambda model: model.name)
def test_fails_closed_with_clear_message(built: BuiltProjects, model: FailingModel) -> None:
    if model.fails_at_parse:
        result = built.parse_failures[model.name]
        assert not result.success
        message = str(result.exception)
    else:
        status, message = status_by_model(built.failing_result)[model.name]
        assert status == "error"
    for part in model.message_parts:
        assert part in message
    assert "jane@example.com" not in message


def test_failing_project_input_still_builds(built: BuiltProjects) -> None:
    # Proves the failures above come from the macros, not from a broken project.
    assert status_by_model(built.failing_result)["failing_input"][0] == "success"
    assert not built.failing_result.success
