"""The benchmark (bench/) works end to end at a tiny scale, and its privacy-off switch is refused
everywhere but the benchmark target with the benchmark's environment variable.

Speed is never asserted here: the benchmark reports figures, tests prove it produces them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .dbt_helpers import REPO, environment, failure_text, run_dbt, write_mini_project

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

from measure import StepTimedOut, run_measured, summarize  # noqa: E402

OFF_ENV = "PRIVACY_LAKEHOUSE_BENCH_PRIVACY_OFF"
MODEL = """
select
    {{ salted_hash("'C0000001'") }} as customer_token,
    {{ pseudonymize("'C0000001'", 'account') }} as account_token,
    {{ encrypt_for_subject("'4000123412341234'", "'v1:00'") }} as card_number_enc
"""


# --------------------------------------------------------------------------------------------
# The privacy-off switch


@pytest.fixture(scope="module")
def switch_project(tmp_path_factory) -> Path:
    return write_mini_project(
        tmp_path_factory.mktemp("switch") / "project", {"models/switch_probe.sql": MODEL}
    )


def compile_probe(project: Path, target: str, variables: str, off_env: str | None):
    bench_lake = project / "bench_lake"
    bench_lake.mkdir(exist_ok=True)
    env = {OFF_ENV: off_env or "", "PRIVACY_LAKEHOUSE_BENCH_LAKE": str(bench_lake)}
    with environment(env):
        result = run_dbt(
            project,
            "compile",
            "--select",
            "switch_probe",
            "--target",
            target,
            "--vars",
            variables,
            expect_ok=False,
        )
    compiled = next((project / "target" / "compiled").rglob("switch_probe.sql"), None)
    text = compiled.read_text() if compiled and result.success else ""
    if compiled:
        compiled.unlink()
    return result, text


NO_POLICY = "enforce_privacy_policy: false"


@pytest.mark.parametrize(
    ("target", "off_env", "refusal"),
    [
        ("dev", "1", "target is 'dev'"),
        ("bench", "0", f"{OFF_ENV} is not 1"),
    ],
)
def test_privacy_off_is_refused_outside_the_benchmark(switch_project, target, off_env, refusal):
    result, text = compile_probe(
        switch_project, target, f"{{{NO_POLICY}, privacy_treatments: off}}", off_env
    )
    assert not result.success
    message = failure_text(result)
    assert "privacy_treatments=off is refused" in message
    assert refusal in message
    assert text == ""


def test_privacy_off_on_the_bench_target_emits_plain_values(switch_project):
    result, text = compile_probe(
        switch_project, "bench", f"{{{NO_POLICY}, privacy_treatments: off}}", "1"
    )
    assert result.success, failure_text(result)
    assert "pl_token" not in text and "pl_encrypt" not in text
    assert "cast('C0000001' as varchar) as customer_token" in text
    assert "cast('C0000001' as varchar) as account_token" in text
    assert "cast('4000123412341234' as varchar) as card_number_enc" in text


def test_privacy_stays_on_by_default_even_on_the_bench_target(switch_project):
    result, text = compile_probe(switch_project, "bench", f"{{{NO_POLICY}}}", "1")
    assert result.success, failure_text(result)
    assert "pl_token(cast('C0000001' as varchar), 'subject') as customer_token" in text
    assert "pl_token(cast('C0000001' as varchar), 'account') as account_token" in text
    assert "pl_encrypt(cast('v1:00' as varchar), cast('4000123412341234' as varchar))" in text


def test_privacy_switch_rejects_other_values(switch_project):
    result, _ = compile_probe(
        switch_project, "bench", f"{{{NO_POLICY}, privacy_treatments: maybe}}", "1"
    )
    assert not result.success
    assert "must be on or off, got maybe" in failure_text(result)


# --------------------------------------------------------------------------------------------
# Measuring


def test_peak_memory_is_per_step_not_a_running_maximum(tmp_path):
    big = run_measured(
        [sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    )
    small = run_measured([sys.executable, "-c", "pass"])
    assert big.peak_rss_bytes > 300 * 2**20
    assert small.peak_rss_bytes < 100 * 2**20
    assert big.returncode == small.returncode == 0
    summary = summarize([big, small])
    assert summary["peak_rss_bytes"]["max"] == big.peak_rss_bytes
    assert summary["cpu_seconds"]["max"] == big.cpu_seconds > small.cpu_seconds > 0
    assert summary["peak_rss_bytes"]["min"] == small.peak_rss_bytes
    assert summary["runs"] == 2


def test_cpu_time_counts_every_thread_of_the_step():
    # Two threads hashing for about a second each: CPU time adds them up, wall time need not.
    busy = (
        "import hashlib, threading, time\n"
        "def spin():\n"
        "    end = time.process_time() + 0.6\n"
        "    while time.process_time() < end: hashlib.sha256(b'x' * 2**20).digest()\n"
        "threads = [threading.Thread(target=spin) for _ in range(2)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
    )
    sample = run_measured([sys.executable, "-c", busy])
    assert sample.returncode == 0
    assert sample.cpu_seconds >= 0.6  # at least one thread's budget, whatever the core count
    idle = run_measured([sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert idle.seconds >= 0.5 and idle.cpu_seconds < 0.4


def test_a_step_over_its_time_limit_is_stopped(tmp_path):
    with pytest.raises(StepTimedOut, match="time limit"):
        run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)


# --------------------------------------------------------------------------------------------
# The benchmark, end to end at a tiny scale


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    results = root / "results"
    arguments = (
        "--scale custom --customers 200 --transactions 2000 --repeat 1 "
        "--only floor full_build privacy_off bounded_build master_key_rotation retention "
        "keyring_rotation "
        "--rotation-subjects 200 10000 --step-timeout 120 --python-step-timeout 120"
    ).split()
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            *arguments,
            "--work-dir",
            str(root / "work"),
            "--results-dir",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return results


def test_tiny_run_writes_json_with_every_figure(tiny_run):
    document = json.loads((tiny_run / "latest.json").read_text())
    machine = document["machine"]
    assert machine["cores"] >= 1 and machine["memory_bytes"] > 0 and machine["cpu_model"]
    assert machine["versions"]["dbt-core"] and machine["versions"]["duckdb"]
    run = document["scales"]["custom"]
    assert (run["customers"], run["transactions"], run["repeat"]) == (200, 2000, 1)
    for step in (
        "floor", "full_build", "privacy_off", "bounded_build", "master_key_rotation", "retention"
    ):  # fmt: skip
        measured = run["steps"][step]
        assert measured["runs"] == 1
        assert measured["seconds"]["min"] == measured["seconds"]["median"] > 0
        assert measured["peak_rss_bytes"]["median"] > 10 * 2**20
    assert run["steps"]["floor"]["samples"][0]["details"]["rows"]["transactions"] == 2000
    assert run["steps"]["full_build"]["slowest_nodes"][0]["seconds"] > 0
    # Switching treatments off changes values, never how many rows each model writes.
    rows_on = run["steps"]["full_build"]["samples"][0]["details"]["model_rows"]
    rows_off = run["steps"]["privacy_off"]["samples"][0]["details"]["model_rows"]
    assert rows_on["raw_cards__transactions"] > 0 and rows_off == rows_on
    ratios = run["ratios"]
    assert ratios["full_build_over_floor"] > 1
    assert ratios["privacy_on_over_off"] > 0 and ratios["privacy_on_over_off_cpu"] > 0
    assert run["steps"]["full_build"]["cpu_seconds"]["median"] > 0
    assert ratios["incremental_over_full"] is None  # not asked for: reported, not invented
    rotation = run["steps"]["master_key_rotation"]["details"]
    assert rotation["data_keys_rewrapped"] >= 200  # one data key per customer, at least
    stores = document["keyring_rotation"]
    assert stores["200"]["data_keys"]["active"] == 200
    assert stores["10000"]["data_keys"]["active"] == 10000
    targets = {t["target"]: t for t in document["targets"]}
    assert len(targets) == 7
    assert targets["full build vs floor"]["figure"].endswith("x")
    assert targets["full build vs floor"]["met"] == (ratios["full_build_over_floor"] <= 3)
    assert targets["incremental +1%"]["met"] is None
    # Judged on the bounded build and the tools, with the unbounded builds quoted beside it.
    assert run["steps"]["bounded_build"]["memory_limit"] == "1GB"
    assert run["steps"]["bounded_build"]["threads"] == 1
    peak = targets["peak memory"]
    assert peak["met"] is True and "DuckDB limited to 1GB and 1 dbt thread" in peak["note"]
    assert "full_build" in peak["note"] and "privacy_off" in peak["note"]
    assert run["steps"]["bounded_build"]["samples"][0]["details"]["model_rows"] == rows_on
    flat = targets["master-key rotation flat in rows"]
    # The lake (about 200 keys) is compared with the store of 200 keys and no rows.
    assert flat["met"] is not None and flat["figure"].startswith("lake custom ")
    assert "vs 200 subjects, no data" in flat["figure"]


def test_tiny_run_writes_markdown_and_chart(tiny_run):
    text = (tiny_run / "latest.md").read_text()
    assert "| full `dbt build`, fresh lake |" in text
    assert "| full `dbt build`, privacy treatments off |" in text
    full_row = r"\| full `dbt build`, fresh lake \| [0-9.]+ s, [0-9,]+ MiB, CPU [0-9.]+ s"
    assert re.search(full_row, text)
    assert "| privacy on / privacy off, CPU time |" in text
    assert "## Targets" in text and "| peak memory | < 3 GB |" in text
    assert "## Master-key rotation" in text
    assert (tiny_run / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tiny_run / "runs" / "custom.json").is_file()


def test_incremental_landing_adds_one_percent_and_leaves_the_base_alone(tmp_path):
    from privacy_lakehouse.generate import generate_landing, read_summary
    from run import Bench, Scale, parse_args

    base = tmp_path / "s" / "landing"
    generate_landing(base, customers=50, transactions=1000, seed=3)
    before = {p: p.read_bytes() for p in base.rglob("*") if p.is_file()}
    bench = Bench(parse_args(["--small", "--work-dir", str(tmp_path / "w")]))
    scale = Scale("tiny", 50, 1000, 1, tmp_path / "s")
    assert bench.ensure_incremental_landing(scale) == 10
    assert {p: p.read_bytes() for p in base.rglob("*") if p.is_file()} == before
    assert [b["batch"] for b in read_summary(base)["batches"]] == [1, 2]
    appended = read_summary(scale.landing_incremental)["batches"]
    assert [b["batch"] for b in appended] == [1, 2, 3]
    assert appended[-1]["transactions"] == 10
    for original in before:
        copy = scale.landing_incremental / original.relative_to(base)
        # Data files are shared, never copied; the summary is a copy (append_batch rewrites it).
        is_summary = original.name.startswith("_")
        assert copy.samefile(original) != is_summary
        assert (copy.read_bytes() == before[original]) != is_summary


def test_a_partial_run_updates_only_its_own_steps(tmp_path):
    from run import merged

    def step(seconds: float) -> dict:
        return {"runs": 3, "seconds": {"median": seconds, "min": seconds, "max": seconds}}

    path = tmp_path / "1m.json"
    earlier = {
        "customers": 100_000,
        "transactions": 1_000_000,
        "date": "earlier",
        "steps": {"floor": step(1.0), "full_build": step(9.0)},
        "not_measured": {"erasure_1": "time limit"},
        "bytes_on_disk": {"lake": 5},
    }
    path.write_text(json.dumps(earlier))
    later = {
        "customers": 100_000,
        "transactions": 1_000_000,
        "repeat": 1,
        "date": "later",
        "steps": {"erasure_1": {**step(2.0), "runs": 1}},
        "not_measured": {"salt_rotation": "time limit"},
        "bytes_on_disk": {"landing": 7},
    }
    combined = merged(path, later)
    assert set(combined["steps"]) == {"floor", "full_build", "erasure_1"}
    assert combined["steps"]["full_build"]["seconds"]["median"] == 9.0
    assert combined["steps"]["erasure_1"]["date"] == "later"
    assert combined["not_measured"] == {"salt_rotation": "time limit"}
    assert combined["bytes_on_disk"] == {"lake": 5, "landing": 7}
    assert combined["repeat"] == 3
    other_scale = {**later, "customers": 5}
    assert merged(path, other_scale) is other_scale


def test_rotation_flatness_compares_stores_of_similar_key_counts():
    from report import rotation_row_effects

    def point(store: str, rows: int, keys: int, seconds: float) -> dict:
        return {"store": store, "rows": rows, "keys": keys, "seconds": seconds,
                "microseconds_per_key": seconds / keys * 1e6}  # fmt: skip

    points = [
        point("lake 1m", 1_000_000, 102_000, 0.816),  # 8 us/key
        point("lake 10m", 10_000_000, 1_020_000, 6.12),  # 6 us/key
        point("100,000 subjects, no data", 0, 100_000, 0.5),  # 5 us/key
        point("1,000,000 subjects, no data", 0, 1_000_000, 4.0),  # 4 us/key
    ]
    effects = {(e["more"], e["fewer"]): round(e["ratio"], 2) for e in rotation_row_effects(points)}
    # Each lake against the store without rows of its own size, never across a 10x key count.
    assert effects == {
        ("lake 1m", "100,000 subjects, no data"): 1.6,
        ("lake 10m", "1,000,000 subjects, no data"): 1.5,
    }
    assert rotation_row_effects(points[:2]) == []  # 10x apart in keys: nothing comparable


def test_the_report_header_names_the_newest_run(tmp_path):
    from report import write_reports

    runs = tmp_path / "runs"
    runs.mkdir()
    machine = {"cores": 2, "memory_bytes": 2**30, "cpu_model": "cpu", "versions": {}}
    (runs / "extras.json").write_text(
        json.dumps({"date": "2026-11-23T01:00:00+00:00", "machine": {**machine, "commit": "old"}})
    )
    run = {"customers": 10, "transactions": 100, "repeat": 1, "date": "2026-11-23T05:00:00+00:00",
           "machine": {**machine, "commit": "new"}, "steps": {}}  # fmt: skip
    (runs / "1m.json").write_text(json.dumps(run))
    write_reports(tmp_path)
    document = json.loads((tmp_path / "latest.json").read_text())
    assert document["date"] == "2026-11-23T05:00:00+00:00"
    assert document["machine"]["commit"] == "new"
    assert "Commit new." in (tmp_path / "latest.md").read_text()


def test_the_report_says_where_the_incremental_build_spends_its_time(tmp_path):
    from report import write_reports

    runs = tmp_path / "runs"
    runs.mkdir()
    machine = {"cores": 2, "memory_bytes": 2**30, "cpu_model": "cpu", "versions": {}}

    def node(name: str, seconds: float, rows: int | None) -> dict:
        return {"node": name, "kind": "model", "seconds": seconds, "rows": rows}

    figure = {"median": 10.0, "min": 10.0, "max": 10.0}
    timing = {"seconds": figure, "peak_rss_bytes": figure, "cpu_seconds": figure, "runs": 1}
    steps = {
        "full_build": {**timing, "slowest_nodes": [node("fct_card_activity", 14.5, 900)]},
        "incremental": {
            **timing,
            "details": {
                "nodes": 90,
                "node_seconds_total": 120.4,
                "slowest": [node("fct_card_activity", 15.25, 910), node("stg_x", 3.5, 12)],
            },
        },
    }
    run = {"customers": 10, "transactions": 100, "repeat": 1, "date": "2026-11-24T05:00:00+00:00",
           "machine": machine, "steps": steps}  # fmt: skip
    (runs / "1m.json").write_text(json.dumps(run))
    write_reports(tmp_path)
    text = (tmp_path / "latest.md").read_text()
    section = text.split("## Where the incremental build's time goes (1m, last run)", 1)[1]
    assert "90 nodes, 120.4 s of node time in all" in section
    assert "| fct_card_activity | 15.25 | 14.5 | 910 |" in section
    assert "| stg_x | 3.50 | - | 12 |" in section
