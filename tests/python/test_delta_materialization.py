"""The `delta` materialization and its plugin: each trap from DESIGN.md has a test that fails
without its guard. Small purpose-made projects, built in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from deltalake import DeltaTable
from privacy_lakehouse.duckdb_setup import connect

from .dbt_helpers import dbt_subprocess, run_dbt, write_mini_project

NO_POLICY = ["--vars", "{enforce_privacy_policy: false}"]

CLASSIFIED = """
models:
  - name: {name}
    columns:
{columns}
"""


def classified(name: str, safe: list[str], personal: list[str]) -> str:
    lines = []
    for col in safe:
        lines.append(
            f"      - {{name: {col}, config: {{meta: {{sensitivity: internal, "
            f"privacy_role: none, purposes: []}}}}}}"
        )
    for col in personal:
        lines.append(
            f"      - {{name: {col}, config: {{meta: {{sensitivity: confidential, "
            f"privacy_role: quasi_identifier, pii_type: postcode, purposes: [], "
            f"treatment: {{bronze: none}}}}}}}}"
        )
    return CLASSIFIED.format(name=name, columns="\n".join(lines))


def warehouse(project: Path) -> duckdb.DuckDBPyConnection:
    # Same configuration as dbt's connection: DuckDB shares one instance per file and process.
    return connect(
        project / "lake" / "warehouse.duckdb", extension_dir=project / "lake" / "_duckdb_extensions"
    )


def table(project: Path, layer: str, name: str) -> DeltaTable:
    return DeltaTable(str(project / "lake" / layer / name))


def build(project: Path, *args: str, expect_ok: bool = True):
    return run_dbt(project, "build", *NO_POLICY, *args, expect_ok=expect_ok)


def set_model(project: Path, relative: str, sql: str) -> None:
    path = project / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sql)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_mini_project(
        tmp_path / "proj",
        {
            "models/bronze/numbers.sql": "select range as id, 'n' || range as label "
            "from range({{ var('n', 10) }})",
            "models/bronze/numbers.yml": classified("numbers", ["id"], ["label"]),
        },
    )


def test_table_build_writes_delta_and_a_view_over_it(project: Path):
    build(project, "--vars", "{enforce_privacy_policy: false, n: 250}")
    dt = table(project, "bronze", "numbers")
    assert dt.to_pyarrow_table().num_rows == 250
    con = warehouse(project)
    sql = con.execute("select sql from duckdb_views() where view_name = 'numbers'").fetchone()[0]
    assert f"delta_scan('{project / 'lake' / 'bronze' / 'numbers'}')" in sql


def test_table_properties_keep_personal_data_out_of_the_log(project: Path):
    build(project)
    dt = table(project, "bronze", "numbers")
    config = dt.metadata().configuration
    assert config["delta.dataSkippingStatsColumns"] == "id"
    assert config["delta.enableChangeDataFeed"] == "false"
    assert config["delta.enableDeletionVectors"] == "false"
    assert config["delta.deletedFileRetentionDuration"] == "interval 7 days"
    log_text = "".join(
        p.read_text() for p in (project / "lake/bronze/numbers/_delta_log").glob("*.json")
    )
    stats = [
        json.loads(json.loads(line)["add"]["stats"])
        for line in log_text.splitlines()
        if '"add"' in line
    ]
    assert stats and all(set(s["minValues"]) == {"id"} for s in stats)
    assert "n9" not in log_text  # the label's max value never reaches the log


def test_empty_run_never_overwrites_a_real_table(project: Path):
    build(project)
    version = table(project, "bronze", "numbers").version()
    build(project, "--empty")
    dt = table(project, "bronze", "numbers")
    assert dt.version() == version
    assert dt.to_pyarrow_table().num_rows == 10


def test_empty_run_on_a_new_model_creates_no_table_but_a_typed_view(project: Path):
    build(project, "--empty")
    assert not DeltaTable.is_deltatable(str(project / "lake/bronze/numbers"))
    con = warehouse(project)
    assert con.execute("select count(*) from bronze.numbers").fetchone()[0] == 0
    con.close()
    build(project)  # a real run afterwards builds in full
    assert table(project, "bronze", "numbers").to_pyarrow_table().num_rows == 10


INCREMENTAL = """
{{ config(incremental_strategy='append') }}
select * from {{ ref('numbers') }}
{% if is_incremental() %} where id > (select max(id) from {{ this }}) {% endif %}
"""


def rows_reported(result, model: str) -> int | None:
    """The row count dbt reported for a model (taken from the Delta commit, not counted)."""
    for node_result in result.result.results:
        if node_result.node.name == model:
            return node_result.adapter_response.get("rows_affected")
    raise AssertionError(f"{model} did not run")


def test_incremental_append_adds_only_new_rows(project: Path):
    set_model(project, "models/bronze/growing.sql", INCREMENTAL)
    first = build(project, "--vars", "{enforce_privacy_policy: false, n: 10}")
    second = build(project, "--vars", "{enforce_privacy_policy: false, n: 15}")
    dt = table(project, "bronze", "growing")
    ids = sorted(dt.to_pyarrow_table().column("id").to_pylist())
    assert ids == list(range(15))  # no duplicates: only 10..14 were appended
    assert dt.version() == 1
    assert (rows_reported(first, "growing"), rows_reported(second, "growing")) == (10, 5)


def test_incremental_with_missing_delta_table_builds_in_full(project: Path):
    set_model(project, "models/bronze/growing.sql", INCREMENTAL)
    build(project)
    # The Delta folder goes away but the view in DuckDB stays: the filter must not run.
    import shutil

    shutil.rmtree(project / "lake/bronze/growing")
    build(project, "--vars", "{enforce_privacy_policy: false, n: 12}")
    assert table(project, "bronze", "growing").to_pyarrow_table().num_rows == 12


def test_full_refresh_rebuilds_an_incremental_model(project: Path):
    # In silver: bronze is configured full_refresh: false (landing may have been purged).
    set_model(project, "models/silver/growing.sql", INCREMENTAL)
    build(project, "--vars", "{enforce_privacy_policy: false, n: 10}")
    build(project, "--full-refresh", "--vars", "{enforce_privacy_policy: false, n: 4}")
    assert table(project, "silver", "growing").to_pyarrow_table().num_rows == 4


MERGE = """
{{ config(incremental_strategy='merge', unique_key='id', on_schema_change=var('osc', 'ignore')) }}
select id, label {% if var('extra', false) %}, id * 2 as doubled{% endif %}
from {{ ref('numbers') }}
"""


@pytest.mark.parametrize("policy, expect_column", [("append_new_columns", True), ("ignore", False)])
def test_merge_with_new_columns_follows_on_schema_change(
    project: Path, policy: str, expect_column: bool
):
    set_model(project, "models/bronze/merged.sql", MERGE)
    build(project, "--vars", f"{{enforce_privacy_policy: false, osc: {policy}}}")
    build(project, "--vars", f"{{enforce_privacy_policy: false, osc: {policy}, extra: true}}")
    data = table(project, "bronze", "merged").to_pyarrow_table()
    assert data.num_rows == 10  # merged on id: no duplicates
    assert ("doubled" in data.column_names) is expect_column
    if expect_column:
        assert sorted(v for v in data.column("doubled").to_pylist() if v is not None) == [
            i * 2 for i in range(10)
        ]
    # The view is recreated after every write, so it shows the table's current columns.
    con = warehouse(project)
    cols = [r[0] for r in con.execute("describe bronze.merged").fetchall()]
    assert ("doubled" in cols) is expect_column


def test_schema_change_fails_when_asked_to(project: Path):
    set_model(project, "models/bronze/merged.sql", MERGE)
    build(project, "--vars", "{enforce_privacy_policy: false, osc: fail}")
    result = build(
        project,
        "--vars",
        "{enforce_privacy_policy: false, osc: fail, extra: true}",
        expect_ok=False,
    )
    assert not result.success
    message = " ".join(str(r.message) for r in result.result.results)
    assert "on_schema_change='fail'" in message and "doubled" in message
    assert table(project, "bronze", "merged").version() == 0


def test_sync_all_columns_drops_removed_columns(project: Path):
    sql = """
    {{ config(incremental_strategy='append', on_schema_change='sync_all_columns') }}
    select id {% if not var('drop_label', false) %}, label{% endif %} from {{ ref('numbers') }}
    {% if is_incremental() %} where id > (select max(id) from {{ this }}) {% endif %}
    """
    set_model(project, "models/bronze/synced.sql", sql)
    build(project, "--vars", "{enforce_privacy_policy: false, n: 5}")
    build(project, "--vars", "{enforce_privacy_policy: false, n: 8, drop_label: true}")
    data = table(project, "bronze", "synced").to_pyarrow_table()
    assert data.column_names == ["id"]
    assert sorted(data.column("id").to_pylist()) == list(range(8))


def test_unsupported_types_are_cast(project: Path):
    set_model(
        project,
        "models/bronze/odd_types.sql",
        """
        select
            interval 90 minute as waited,
            time '12:34:56' as at_time,
            union_value(num := 7)::union(num integer, txt varchar) as either,
            42::ubigint as big_unsigned,
            7::utinyint as tiny_unsigned,
            10000000000000000000000000000000000000::hugeint as huge,
            sum(9223372036854775807::bigint) over () as summed,
            timestamp_ns '2024-01-02 03:04:05.123456789' as nanos
        """,
    )
    build(project)
    row = table(project, "bronze", "odd_types").to_pyarrow_table().to_pylist()[0]
    assert row["waited"] == "01:30:00"
    assert row["at_time"] == "12:34:56"
    assert row["either"] == "7"
    assert int(row["big_unsigned"]) == 42
    assert row["tiny_unsigned"] == 7
    assert int(row["huge"]) == 10**37
    assert int(row["summed"]) == 9223372036854775807  # sum() of BIGINT is a HUGEINT


def test_partition_by_a_personal_column_is_refused(project: Path):
    set_model(
        project,
        "models/bronze/partitioned.sql",
        "{{ config(partition_by='label') }} select * from {{ ref('numbers') }}",
    )
    (project / "models/bronze/partitioned.yml").write_text(
        classified("partitioned", ["id"], ["label"])
    )
    result = build(project, expect_ok=False)
    message = " ".join(str(r.message) for r in result.result.results if r.message)
    assert "cannot partition by ['label']" in message
    assert not DeltaTable.is_deltatable(str(project / "lake/bronze/partitioned"))


def test_partition_by_a_safe_column_works(project: Path):
    set_model(
        project,
        "models/bronze/partitioned.sql",
        "{{ config(partition_by='bucket') }} select id, id % 3 as bucket from {{ ref('numbers') }}",
    )
    (project / "models/bronze/partitioned.yml").write_text(
        classified("partitioned", ["id", "bucket"], [])
    )
    build(project)
    dt = table(project, "bronze", "partitioned")
    assert dt.metadata().partition_columns == ["bucket"]
    assert dt.to_pyarrow_table().num_rows == 10


def test_many_models_with_four_threads(project: Path):
    for i in range(12):
        set_model(
            project,
            f"models/silver/fan_{i}.sql",
            f"select id, id * {i} as product from {{{{ ref('numbers') }}}}",
        )
    result = build(project, "--threads", "4")
    assert result.success
    for i in range(12):
        data = table(project, "silver", f"fan_{i}").to_pyarrow_table()
        assert sorted(data.column("product").to_pylist()) == [x * i for x in range(10)]


def test_independent_readers_agree(project: Path):
    build(project, "--vars", "{enforce_privacy_policy: false, n: 1000}")
    location = project / "lake/bronze/numbers"
    by_deltalake = DeltaTable(str(location)).to_pyarrow_table()
    con = connect(extension_dir=project / "lake" / "_duckdb_extensions")
    count, checksum = con.execute(
        f"select count(*), sum(id) from delta_scan('{location}')"
    ).fetchone()
    assert count == by_deltalake.num_rows == 1000
    assert checksum == sum(by_deltalake.column("id").to_pylist()) == sum(range(1000))


def test_a_crash_mid_write_leaves_the_last_version_readable(project: Path):
    build(project, "--vars", "{enforce_privacy_policy: false, n: 50}")
    before = table(project, "bronze", "numbers").version()
    # Several record batches, and the process dies after the first: no commit happens.
    process = dbt_subprocess(
        project,
        "build",
        "--vars",
        "{enforce_privacy_policy: false, n: 350000}",
        extra_env={"PRIVACY_LAKEHOUSE_FAULT_AFTER_BATCHES": "1"},
    )
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0, output[-3000:]
    dt = table(project, "bronze", "numbers")
    assert dt.version() == before
    assert dt.to_pyarrow_table().num_rows == 50
    build(project, "--vars", "{enforce_privacy_policy: false, n: 60}")
    assert table(project, "bronze", "numbers").to_pyarrow_table().num_rows == 60


HOLD_LOCK = """
import sys, time
from pathlib import Path
from privacy_lakehouse.delta_writer import _BuildLock
_BuildLock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_build_fails_fast_and_touches_nothing(project: Path):
    build(project)
    before = {
        p.name: p.stat().st_mtime_ns for p in (project / "lake/bronze/numbers/_delta_log").iterdir()
    }
    # Another process holds the lake's build lock, exactly as a running build does.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(project / "lake")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = build(project, "--vars", "{enforce_privacy_policy: false, n: 99}", expect_ok=False)
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert not result.success
    assert "Another privacy_lakehouse build is running" in str(result.exception or "") + " ".join(
        str(r.message) for r in getattr(result.result, "results", []) or []
    )
    assert elapsed < 60
    after = {
        p.name: p.stat().st_mtime_ns for p in (project / "lake/bronze/numbers/_delta_log").iterdir()
    }
    assert after == before  # no new commit, nothing rewritten
    assert table(project, "bronze", "numbers").to_pyarrow_table().num_rows == 10
    # Once the other build is gone, building works again.
    build(project, "--vars", "{enforce_privacy_policy: false, n: 99}")
    assert table(project, "bronze", "numbers").to_pyarrow_table().num_rows == 99


def test_model_contracts_are_enforced(project: Path):
    set_model(project, "models/silver/contracted.sql", "select id, label from {{ ref('numbers') }}")
    contract = """
models:
  - name: contracted
    config: {contract: {enforced: true}}
    columns:
      - {name: id, data_type: bigint}
      - {name: label, data_type: %s}
"""
    (project / "models/silver/contracted.yml").write_text(contract % "integer")
    result = build(project, expect_ok=False)
    message = " ".join(str(r.message) for r in result.result.results if r.message)
    assert "contract" in message.lower() and "label" in message
    assert not DeltaTable.is_deltatable(str(project / "lake/silver/contracted"))
    (project / "models/silver/contracted.yml").write_text(contract % "varchar")
    build(project)
    assert table(project, "silver", "contracted").to_pyarrow_table().num_rows == 10


def test_rows_staged_before_the_sort_fit_where_one_query_runs_out_of_memory(tmp_path: Path):
    """A window joined back to its rows, then sorted for clustering (fct_card_activity's shape):
    in one query the window's memory and the sort's are needed at once; staged in a temporary
    table first, each step fits the same limit. The rows arrive whole and in cluster order, and
    the temporary table is gone afterwards."""
    import pyarrow.parquet as pq
    from privacy_lakehouse.delta_writer import WriteSpec, write_model

    conn = duckdb.connect(
        config={
            "memory_limit": "120MB",
            "threads": 2,
            "preserve_insertion_order": False,
            "temp_directory": str(tmp_path / "spill"),
        }
    )
    conn.execute(
        "create table src as select 'T' || i as tid, "
        "'v1:' || md5(cast(i % 50000 as varchar)) as subject_token, 'c' || (i % 200000) as card, "
        "i * 7 % 100000 as ts, (i % 997) * 1.5 as amount, "
        "md5(cast(i as varchar)) || md5(cast(-i as varchar)) as payload from range(1000000) t(i)"
    )
    conn.execute(
        "create view stage as with windows as (select tid, count(*) over (partition by card "
        "order by ts range between 3600 preceding and current row) as recent, "
        "amount > 5 * avg(amount) over (partition by card) as unusual from src) "
        "select src.*, windows.recent, windows.unusual from src join windows using (tid)"
    )
    spec = {"stage": "stage", "cluster_by": "subject_token", "target_file_size": 8_000_000}

    with pytest.raises(duckdb.OutOfMemoryException):
        write_model(conn, WriteSpec.from_config({**spec, "location": str(tmp_path / "one")}))

    location = tmp_path / "staged"
    staged = {**spec, "location": str(location), "stage_rows_before_sort": True}
    result = write_model(conn, WriteSpec.from_config(staged))
    assert result.rows_written == 1_000_000
    written = DeltaTable(str(location))
    assert written.to_pyarrow_table(columns=["tid"]).num_rows == 1_000_000
    files = written.file_uris()
    # Clustered: each of the 50,000 subjects sits in one file, or two where a file ends (delta-rs
    # may write a batch of the sorted stream a little out of turn). Unsorted: in every file.
    subjects_per_file = [
        len(set(pq.read_table(uri, columns=["subject_token"])["subject_token"].to_pylist()))
        for uri in files
    ]
    assert len(files) > 4 and sum(subjects_per_file) < 50_000 * 1.1
    assert conn.execute("select count(*) from duckdb_tables() where temporary").fetchone() == (0,)


def test_duckdb_errors_reach_dbt_without_the_landing_values_they_quote(tmp_path):
    """DuckDB quotes data in its errors (a CSV error's line, a failed cast's string); dbt would
    print them and keep them in logs/ and target/run_results.json."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    from dbt_common.exceptions import DbtRuntimeError
    from privacy_lakehouse.delta_writer import _install_error_scrubbing

    landed = tmp_path / "customers.csv"
    landed.write_bytes(b"id,name\n1,alice.secret@example.com\n2,Bj\xf6rn Secretname\n")
    failing = {
        f"select * from read_csv('{landed}', header=true, all_varchar=true)": "alice.secret",
        "select cast(name as integer) from people": "Secretname",
        "select strptime(name, '%Y') from people": "Secretname",
        "select cast(name as date) from people": "Secretname",
    }

    class Manager:  # what dbt-duckdb's handler needs of its connection manager
        def rollback_if_open(self) -> None:
            pass

    _install_error_scrubbing()
    con = duckdb.connect()
    con.execute("create table people as select 'Secret' || 'name' as name")
    for sql, value in failing.items():
        with pytest.raises(duckdb.Error) as raw:
            con.execute(sql).fetchall()
        assert value in str(raw.value)  # DuckDB does quote it
        with pytest.raises(DbtRuntimeError) as raised:
            with DuckDBConnectionManager.exception_handler(Manager(), sql):
                con.execute(sql).fetchall()
        assert value not in str(raised.value)
        assert "<withheld" in str(raised.value)
