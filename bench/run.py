"""The benchmark: how fast and how lean the privacy pipeline is, against its own floor.

    python bench/run.py                      # 1M and 10M card transactions (make bench)
    python bench/run.py --small              # tiny scale, one repetition (make bench-small)
    python bench/run.py --scale 1m --repeat 3 --only full_build floor
    python bench/run.py --scale custom --customers 50000 --transactions 500000

For each scale it generates landing data with the project's generator into
bench/work/<scale>/ (git-ignored; reused while its parameters match) and measures, as the
median (min, max) of K runs, wall time and peak memory of: the full `dbt build` on a fresh lake,
the same build with privacy treatments off, the floor (landing -> Delta with DuckDB and delta-rs
only), an incremental build after +1% landing data, erasure of 1 and 100 subjects, a
pseudonymization-salt rotation, master-key rotation of the lake's key store, and a retention
run. Master-key rotation is also measured on key stores of 100k and 1M subjects holding no data.
Every step is its own process (see bench/measure.py for how peak memory is read).

Results: bench/results/runs/<scale>.json per scale, and bench/results/latest.{md,json,png}
combining the newest run of each scale, with targets marked met or not met.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from measure import Sample, StepFailed, run_measured, summarize  # noqa: E402
from report import write_reports  # noqa: E402

PYTHON = sys.executable
DBT = str(Path(sys.executable).parent / "dbt")
PROJECT_FILES = ["dbt_project.yml", "profiles.yml", "privacy_policy.yml"]
PROJECT_DIRS = ["models", "macros", "seeds", "snapshots", "tests", "analyses"]
PRIVACY_OFF_ENV = "PRIVACY_LAKEHOUSE_BENCH_PRIVACY_OFF"
# Tests that check that a token is not the raw value: meaningless, and failing, when privacy is
# off. Excluded from the privacy-off build only (so the ratio also prices these tests).
PRIVACY_OFF_EXCLUDE = ["test_name:tokens_not_raw"]

# scale -> (customers, card transactions over the two generated batches)
SCALES = {
    "small": (2_000, 20_000),
    "1m": (100_000, 1_000_000),
    "10m": (1_000_000, 10_000_000),
}
DEFAULT_REPEAT = {"small": 1, "1m": 3, "10m": 2, "custom": 1}
ROTATION_SUBJECTS = [100_000, 1_000_000]
ROTATION_SUBJECTS_SMALL = [1_000, 10_000]
INCREMENT = 0.01  # share of new card transactions in the incremental batch
STEPS = [
    "floor",
    "full_build",
    "privacy_off",
    "bounded_build",
    "incremental",
    "erasure_1",
    "erasure_100",
    "erasure_1_delete",
    "erasure_100_delete",
    "salt_rotation",
    "master_key_rotation",
    "retention",
    "keyring_rotation",
    "profile",
]
# Steps measured per scale (the others run once: key stores without data, the UDF profile).
PER_SCALE_STEPS = set(STEPS) - {"keyring_rotation", "profile"}
# Steps that need the lake of a privacy-on full build: every per-scale step but the two that
# build their own output.
NEEDS_PRIVACY_ON_LAKE = PER_SCALE_STEPS - {"floor", "privacy_off", "bounded_build"}
MEMORY_LIMIT_ENV = "PRIVACY_LAKEHOUSE_DUCKDB_MEMORY_LIMIT"
# DuckDB's memory_limit and dbt threads of the bounded build: at 10M, 1GB and one model at a
# time keeps the whole process under 3 GB. With 2 threads, 1GB or 1.25GB ran out of memory in
# raw_cards__transactions (its neighbours' sorts share the limit), and 1.5GB peaked at 3.2 GB.
DEFAULT_MEMORY_BUDGET = "1GB"
DEFAULT_BOUNDED_THREADS = 1
# Environment that would point the bench at someone's real keys or lake: never inherited.
_SCRUBBED_ENV = (
    "PRIVACY_LAKEHOUSE_MASTER_KEY",
    "PRIVACY_LAKEHOUSE_NEW_MASTER_KEY",
    "PRIVACY_LAKEHOUSE_KEY_PROVIDER",
    "PRIVACY_LAKEHOUSE_TARGET",
    PRIVACY_OFF_ENV,
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Scale:
    name: str
    customers: int
    transactions: int
    repeat: int
    root: Path  # bench/work/<scale>

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def landing_incremental(self) -> Path:
        return self.root / "landing_incremental"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def target(self) -> Path:
        return self.root / "target"

    @property
    def pristine(self) -> Path:
        return self.root / "pristine"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.work_dir).resolve()
        self.results_dir = Path(args.results_dir).resolve()
        self.project = self.work / "project"
        self.only = set(args.only or STEPS)

    # --- set-up --------------------------------------------------------------------------

    def snapshot_project(self) -> None:
        """Copy the dbt project once, so every repetition builds the same code even while the
        tree is being edited, and dbt's target/ and logs/ never land in the repository."""
        shutil.rmtree(self.project, ignore_errors=True)
        self.project.mkdir(parents=True)
        for name in PROJECT_FILES:
            shutil.copy2(REPO / name, self.project / name)
        for name in PROJECT_DIRS:
            if (REPO / name).exists():
                shutil.copytree(REPO / name, self.project / name)

    def env(self, scale: Scale, landing: Path | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(
            {
                "PRIVACY_LAKEHOUSE_HOME": str(self.project),
                "PRIVACY_LAKEHOUSE_LAKE": str(scale.lake),
                "PRIVACY_LAKEHOUSE_BENCH_LAKE": str(scale.lake),
                "PRIVACY_LAKEHOUSE_LANDING": str(landing or scale.landing),
                "PRIVACY_LAKEHOUSE_KEYS": str(scale.keys),
                "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
                "PYTHONWARNINGS": "ignore",
            }
        )
        env.update(extra)
        return env

    def ensure_landing(self, scale: Scale) -> dict[str, Any]:
        from privacy_lakehouse.generate import generate_landing, read_summary, remove_generated

        wanted = {"customers": scale.customers, "transactions": scale.transactions}
        summary = read_summary(scale.landing)
        have = (summary or {}).get("parameters", {})
        if (
            summary
            and all(have.get(k) == v for k, v in wanted.items())
            and len(summary.get("batches", [])) == 2
        ):
            log(f"{scale.name}: reusing landing data in {scale.landing}")
            return {"generated": False, "seconds": 0.0}
        if summary:
            remove_generated(scale.landing)
        log(f"{scale.name}: generating {scale.customers:,} customers, "
            f"{scale.transactions:,} transactions")  # fmt: skip
        started = time.perf_counter()
        generate_landing(scale.landing, seed=42, **wanted)
        return {"generated": True, "seconds": round(time.perf_counter() - started, 1)}

    def ensure_incremental_landing(self, scale: Scale) -> int:
        """The base landing files (hard links: never modified) plus an appended batch 3 holding
        1% more card transactions, in a folder of its own so the base stays reusable."""
        from privacy_lakehouse.generate import append_batch

        added = max(1, round(scale.transactions * INCREMENT))
        shutil.rmtree(scale.landing_incremental, ignore_errors=True)
        for source in scale.landing.rglob("*"):
            if source.is_file():
                copy = scale.landing_incremental / source.relative_to(scale.landing)
                copy.parent.mkdir(parents=True, exist_ok=True)
                if source.name.startswith("_"):
                    shutil.copy2(source, copy)  # the summary is rewritten by append_batch
                else:
                    os.link(source, copy)
        append_batch(scale.landing_incremental, 3, transactions=added)
        return added

    # --- steps ---------------------------------------------------------------------------

    def fresh_lake(self, scale: Scale) -> None:
        for folder in (scale.lake, scale.keys, scale.target):
            shutil.rmtree(folder, ignore_errors=True)

    def dbt_build(self, scale: Scale, label: str, *, privacy: bool = True,
                  landing: Path | None = None,
                  memory_limit: str | None = None,
                  threads: int | None = None) -> Sample:  # fmt: skip
        argv = [DBT, "build", "--target", "bench", "--project-dir", str(self.project),
                "--profiles-dir", str(self.project), "--target-path", str(scale.target),
                "--log-path", str(scale.logs / "dbt")]  # fmt: skip
        if threads:
            argv += ["--threads", str(threads)]
        extra: dict[str, str] = {}
        if not privacy:
            argv += ["--vars", "{privacy_treatments: off}", "--exclude", *PRIVACY_OFF_EXCLUDE]
            extra[PRIVACY_OFF_ENV] = "1"
        if memory_limit:
            extra[MEMORY_LIMIT_ENV] = memory_limit
        sample = run_measured(
            argv,
            env=self.env(scale, landing, **extra),
            cwd=self.project,
            log_path=scale.logs / f"{label}.log",
            timeout=self.args.step_timeout,
        )
        sample.details = node_timings(scale.target / "run_results.json")
        return sample

    def python_step(self, scale: Scale, label: str, *args: str) -> Sample:
        return run_measured(
            [PYTHON, str(BENCH_DIR / "steps.py"), *args],
            env=self.env(scale),
            cwd=self.project,
            log_path=scale.logs / f"{label}.log",
            timeout=self.args.python_step_timeout,
        )

    def floor(self, scale: Scale) -> Sample:
        return run_measured(
            [
                PYTHON,
                str(BENCH_DIR / "floor.py"),
                "--landing",
                str(scale.landing),
                "--out",
                str(scale.root / "floor"),
            ],  # fmt: skip
            log_path=scale.logs / "floor.log",
            timeout=self.args.step_timeout,
        )

    def save_pristine(self, scale: Scale) -> None:
        shutil.rmtree(scale.pristine, ignore_errors=True)
        scale.pristine.mkdir(parents=True)
        for folder in (scale.lake, scale.keys, scale.target):
            shutil.copytree(folder, scale.pristine / folder.name, symlinks=True)
        (scale.pristine / "scale.json").write_text(json.dumps(self._lake_identity(scale)))

    def _lake_identity(self, scale: Scale) -> dict[str, Any]:
        return {"customers": scale.customers, "transactions": scale.transactions,
                "lake": str(scale.lake)}  # fmt: skip

    def pristine_matches(self, scale: Scale) -> bool:
        marker = scale.pristine / "scale.json"
        return marker.is_file() and json.loads(marker.read_text()) == self._lake_identity(scale)

    def restore_pristine(self, scale: Scale) -> None:
        """Back to the lake of the last privacy-on full build, at the same absolute paths (the
        DuckDB views name them), for steps that change the lake."""
        for folder in (scale.lake, scale.keys, scale.target):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(scale.pristine / folder.name, folder, symlinks=True)
        # The copy leaves gigabytes of dirty pages; flushed now, so the measured step's own
        # fsyncs (erasure rebuilds a DuckDB file) do not wait behind them.
        os.sync()

    # --- one scale -----------------------------------------------------------------------

    def run_scale(self, scale: Scale) -> dict[str, Any]:
        result: dict[str, Any] = {
            "scale": scale.name,
            "customers": scale.customers,
            "transactions": scale.transactions,
            "repeat": scale.repeat,
            "date": _now(),
            "steps": {},
            "not_measured": {},
        }
        scale.root.mkdir(parents=True, exist_ok=True)
        result["landing"] = self.ensure_landing(scale)
        steps = result["steps"]
        samples: dict[str, list[Sample]] = {
            "floor": [], "full_build": [], "privacy_off": [], "bounded_build": []
        }  # fmt: skip
        builds_wanted = self.only & NEEDS_PRIVACY_ON_LAKE
        # Steps on the built lake alone (no full_build asked): reuse the lake of an earlier run
        # at this scale when there is one; else build it once.
        reuse = "full_build" not in self.only and self.pristine_matches(scale)
        build_runs = 0 if reuse or not builds_wanted else scale.repeat
        if builds_wanted and "full_build" not in self.only and not reuse:
            build_runs = 1
        failed = result["not_measured"]

        def attempt(name: str, measure: Callable[[], Sample]) -> None:
            if name in failed:
                return
            try:
                samples[name].append(measure())
            except StepFailed as failure:
                failed[name] = str(failure).splitlines()[0]
                log(f"{scale.name}: {name}: {failed[name]}")
                samples[name].clear()

        for run in range(scale.repeat):
            # Interleaved, so a slow spell of the machine hits every variant alike.
            if "floor" in self.only:
                log(f"{scale.name}: floor, run {run + 1}/{scale.repeat}")
                attempt("floor", lambda: self.floor(scale))
            if "privacy_off" in self.only:
                log(f"{scale.name}: dbt build, privacy off, run {run + 1}/{scale.repeat}")
                self.fresh_lake(scale)
                attempt(
                    "privacy_off",
                    lambda r=run: self.dbt_build(scale, f"privacy_off_{r + 1}", privacy=False),
                )
            if "bounded_build" in self.only:
                log(
                    f"{scale.name}: dbt build, DuckDB memory {self.args.memory_budget}, "
                    f"{self.args.bounded_threads} thread(s), run {run + 1}/{scale.repeat}"
                )
                self.fresh_lake(scale)
                attempt(
                    "bounded_build",
                    lambda r=run: self.dbt_build(
                        scale,
                        f"bounded_build_{r + 1}",
                        memory_limit=self.args.memory_budget,
                        threads=self.args.bounded_threads,
                    ),
                )
            if run < build_runs:
                log(f"{scale.name}: dbt build, run {run + 1}/{build_runs}")
                self.fresh_lake(scale)
                attempt("full_build", lambda r=run: self.dbt_build(scale, f"full_build_{r + 1}"))
        for name, runs in samples.items():
            if runs:
                steps[name] = summarize(runs, "seconds" if name == "floor" else None)
        if samples["bounded_build"]:
            steps["bounded_build"]["memory_limit"] = self.args.memory_budget
            steps["bounded_build"]["threads"] = self.args.bounded_threads
        for name in ("full_build", "privacy_off", "bounded_build"):
            if samples[name]:
                steps[name]["slowest_nodes"] = samples[name][-1].details.get("slowest", [])
        sizes = {"landing": scale.landing, "floor": scale.root / "floor"}
        if samples["full_build"]:
            sizes["lake"] = scale.lake
        result["bytes_on_disk"] = {k: folder_bytes(v) for k, v in sizes.items() if v.exists()}
        if not builds_wanted:
            return result
        if "full_build" in failed:
            for name in builds_wanted - {"full_build"}:
                failed[name] = "the full build failed"
            return result
        if reuse:
            log(f"{scale.name}: reusing the lake of the last full build in {scale.pristine}")
        else:
            self.save_pristine(scale)

        def repeated(name: str, prepare: Callable[[], None] | None,
                     measure: Callable[[], Sample], inner: str | None = None) -> None:  # fmt: skip
            if name not in self.only:
                return
            runs = []
            for run in range(scale.repeat):
                log(f"{scale.name}: {name}, run {run + 1}/{scale.repeat}")
                if prepare:
                    prepare()
                try:
                    sample = measure()
                except StepFailed as failure:
                    # One failing measurement must not cost the others; the report says why.
                    result["not_measured"][name] = str(failure).splitlines()[0]
                    log(f"{scale.name}: {name}: {result['not_measured'][name]}")
                    return
                if "skipped" in sample.details:
                    result["not_measured"][name] = sample.details["skipped"]
                    return
                runs.append(sample)
            steps[name] = summarize(runs, inner)
            steps[name]["details"] = runs[-1].details

        if "incremental" in self.only:
            added = self.ensure_incremental_landing(scale)
            result["incremental_transactions"] = added
            repeated(
                "incremental",
                lambda: self.restore_pristine(scale),
                lambda: self.dbt_build(scale, "incremental", landing=scale.landing_incremental),
            )
        # The erase command as an operator runs it (with the verifier's scan of every file),
        # and its delete path alone (--no-verify), to tell where the time goes.
        for count, verify in ((1, True), (1, False), (100, True), (100, False)):
            name = f"erasure_{count}" + ("" if verify else "_delete")
            if count > scale.customers:
                result["not_measured"][name] = f"only {scale.customers} customers"
                continue
            flags = ["--subjects", str(count)] + ([] if verify else ["--no-verify"])
            repeated(
                name,
                lambda: self.restore_pristine(scale),
                lambda n=name, f=flags: self.python_step(scale, n, "erase", *f),
                "seconds",
            )
        repeated(
            "salt_rotation",
            lambda: self.restore_pristine(scale),
            lambda: self.python_step(scale, "salt_rotation", "rotate-salt", "--salt", "subject"),
            "seconds",
        )
        repeated(
            "master_key_rotation",
            lambda: self.restore_pristine(scale),
            lambda: self.python_step(scale, "master_key_rotation", "rotate-master-key"),
            "seconds",
        )
        repeated(
            "retention",
            lambda: self.restore_pristine(scale),
            lambda: self.python_step(
                scale, "retention", "retention", "--manifest", str(scale.target / "manifest.json")
            ),  # fmt: skip
            "seconds",
        )
        return result

    # --- key stores without data, and the UDF profile ------------------------------------

    def keyring_rotation(self, subjects: list[int], repeat: int) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for count in subjects:
            scale = Scale(f"keyring_{count}", 0, 0, repeat, self.work / "keyrings" / str(count))
            scale.root.mkdir(parents=True, exist_ok=True)
            log(f"key store with {count:,} subjects: making (once, cached)")
            made = self.python_step(scale, "make_keyring", "make-keyring", "--subjects",
                                    str(count))  # fmt: skip
            runs = []
            for run in range(repeat):
                log(f"key store with {count:,} subjects: master-key rotation {run + 1}/{repeat}")
                runs.append(self.python_step(scale, "rotate", "rotate-master-key"))
            results[str(count)] = summarize(runs, "seconds")
            results[str(count)]["data_keys"] = runs[-1].details.get("data_keys")
            results[str(count)]["setup_seconds"] = made.details.get("seconds")
        return results

    def profile(self, values: int) -> dict[str, Any]:
        scale = Scale("profile", 0, 0, 1, self.work / "profile")
        shutil.rmtree(scale.keys, ignore_errors=True)
        log(f"profiling the plugin's UDFs over {values:,} values")
        sample = self.python_step(
            scale, "profile", "profile-udfs", "--values", str(values),
            "--out", str(self.results_dir / "udf_profile.txt"),
        )  # fmt: skip
        return {**sample.details, "peak_rss_bytes": sample.peak_rss_bytes}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def merged(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """This run's steps over those of an earlier run of the same scale and parameters, so a
    scale can be measured in parts (`--only`); each step keeps its own run count and date."""
    if not path.is_file():
        return result
    earlier = json.loads(path.read_text())
    if (earlier.get("customers"), earlier.get("transactions")) != (
        result["customers"],
        result["transactions"],
    ):
        return result
    for step in result["steps"].values():
        step["date"] = result["date"]
    steps = {**earlier.get("steps", {}), **result["steps"]}
    not_measured = {
        k: v for k, v in earlier.get("not_measured", {}).items() if k not in result["steps"]
    }
    not_measured.update(result["not_measured"])
    for name in not_measured:
        steps.pop(name, None)
    repeat = max((s.get("runs", 1) for s in steps.values()), default=result["repeat"])
    sizes = {**earlier.get("bytes_on_disk", {}), **result.get("bytes_on_disk", {})}
    return {**earlier, **result, "steps": steps, "not_measured": not_measured, "repeat": repeat,
            "bytes_on_disk": sizes}  # fmt: skip


def node_timings(path: Path, top: int = 8) -> dict[str, Any]:
    """Per-node execution time from dbt's run_results.json: the slowest nodes and the total."""
    if not path.is_file():
        return {}
    results = json.loads(path.read_text()).get("results", [])
    nodes = [
        {
            "node": r["unique_id"].split(".", 2)[-1],
            "kind": r["unique_id"].split(".", 1)[0],
            "seconds": round(float(r.get("execution_time") or 0), 2),
            "rows": (r.get("adapter_response") or {}).get("rows_affected"),
            "status": r.get("status"),
        }
        for r in results
    ]
    nodes.sort(key=lambda n: n["seconds"], reverse=True)
    return {
        "slowest": nodes[:top],
        "nodes": len(nodes),
        "node_seconds_total": round(sum(n["seconds"] for n in nodes), 2),
        # Rows written per model: the privacy-off build must write exactly what privacy-on does.
        "model_rows": {n["node"]: n["rows"] for n in nodes if n["kind"] == "model"},
    }


def machine() -> dict[str, Any]:
    import platform
    from importlib import metadata

    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    versions = {"python": platform.python_version()}
    for package in ("dbt-core", "dbt-duckdb", "duckdb", "deltalake", "pyarrow", "cryptography",
                    "privacy-lakehouse"):  # fmt: skip
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True)  # fmt: skip
    return {
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "cpu_model": cpu_model or platform.processor(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": versions,
        "commit": commit.stdout.strip() if commit.returncode == 0 else None,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the privacy lakehouse against its own floor (see bench/README.md)."
    )
    parser.add_argument("--scale", nargs="+", choices=[*SCALES, "custom"], default=None,
                        help="scales to run (default: 1m 10m)")  # fmt: skip
    parser.add_argument("--customers", type=int, help="customers for --scale custom")
    parser.add_argument("--transactions", type=int, help="card transactions for --scale custom")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per measurement (default: small 1, 1m 3, 10m 2)")  # fmt: skip
    parser.add_argument("--only", nargs="+", choices=STEPS, metavar="NAME",
                        help=f"only these measurements: {', '.join(STEPS)}")  # fmt: skip
    parser.add_argument("--small", action="store_true",
                        help="tiny scale, one repetition: proves the benchmark works")  # fmt: skip
    parser.add_argument("--rotation-subjects", type=int, nargs="+", default=None,
                        help="key store sizes for master-key rotation without data "
                        "(default 100000 1000000; 1000 10000 with --small)")  # fmt: skip
    parser.add_argument("--step-timeout", type=float, default=1800,
                        help="stop a dbt or floor step after this many seconds and report it "
                        "as not measured (default 1800)")  # fmt: skip
    # The batch of 100 erasures with its proof scan takes about 500 s at 10M on 2 cores.
    parser.add_argument("--python-step-timeout", type=float, default=900,
                        help="the same for erasure, rotation and retention steps "
                        "(default 900)")  # fmt: skip
    parser.add_argument("--memory-budget", default=DEFAULT_MEMORY_BUDGET,
                        help="DuckDB memory_limit of the bounded_build step, which measures the "
                        f"peak-memory target (default {DEFAULT_MEMORY_BUDGET})")  # fmt: skip
    parser.add_argument("--bounded-threads", type=int, default=DEFAULT_BOUNDED_THREADS,
                        help="dbt threads of the bounded_build step "
                        f"(default {DEFAULT_BOUNDED_THREADS}: one model at a time)")  # fmt: skip
    parser.add_argument("--work-dir", default=str(BENCH_DIR / "work"))
    parser.add_argument("--results-dir", default=str(BENCH_DIR / "results"))
    args = parser.parse_args(argv)
    if args.small:
        args.scale = args.scale or ["small"]
        args.repeat = args.repeat or 1
    args.scale = args.scale or ["1m", "10m"]
    if "custom" in args.scale and not (args.customers and args.transactions):
        parser.error("--scale custom needs --customers N and --transactions N")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.rotation_subjects is None:
        small_only = set(args.scale) <= {"small"}
        args.rotation_subjects = ROTATION_SUBJECTS_SMALL if small_only else ROTATION_SUBJECTS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    bench.work.mkdir(parents=True, exist_ok=True)
    (bench.results_dir / "runs").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    host = machine()
    log(f"{host['cores']} cores, {host['memory_bytes'] / 2**30:.1f} GiB, {host['cpu_model']}; "
        f"load {host['load_average_at_start']}")  # fmt: skip
    bench.snapshot_project()
    failures = []
    for name in args.scale:
        customers, transactions = (
            (args.customers, args.transactions) if name == "custom" else SCALES[name]
        )
        repeat = args.repeat or DEFAULT_REPEAT[name]
        scale = Scale(name, customers, transactions, repeat, bench.work / name)
        if not bench.only & PER_SCALE_STEPS:
            continue
        try:
            result = bench.run_scale(scale)
        except StepFailed as failure:
            log(f"{name}: FAILED: {failure}")
            failures.append(name)
            continue
        result["machine"] = host
        path = bench.results_dir / "runs" / f"{name}.json"
        path.write_text(json.dumps(merged(path, result), indent=2) + "\n")
        log(f"{name}: results -> {path}")
    extras: dict[str, Any] = {"date": _now(), "machine": host}
    extras["not_measured"] = {}
    try:
        if "keyring_rotation" in bench.only:
            repeat = args.repeat or 3
            extras["keyring_rotation"] = bench.keyring_rotation(args.rotation_subjects, repeat)
    except StepFailed as failure:
        extras["not_measured"]["keyring_rotation"] = str(failure).splitlines()[0]
    try:
        if "profile" in bench.only:
            largest = max(SCALES.get(n, (args.customers or 0, 0))[0] for n in args.scale)
            extras["profile"] = bench.profile(min(max(largest, 1_000), 200_000))
    except StepFailed as failure:
        extras["not_measured"]["profile"] = str(failure).splitlines()[0]
    if len(extras) > 3 or extras["not_measured"]:
        (bench.results_dir / "runs" / "extras.json").write_text(json.dumps(extras, indent=2))
    paths = write_reports(bench.results_dir)
    log(f"done in {time.perf_counter() - started:.0f}s: " + ", ".join(str(p) for p in paths))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
