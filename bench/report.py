"""Turn the benchmark's per-scale results into bench/results/latest.{json,md,png}.

`write_reports(results_dir)` combines the newest run of each scale (`runs/<scale>.json`) and the
scale-free measurements (`runs/extras.json`: key stores without data, the UDF profile), checks
the targets, and writes the JSON, a Markdown table and a chart of time and memory against scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCALE_ORDER = ["small", "custom", "1m", "10m"]
STEP_LABELS = {
    "floor": "floor: landing -> Delta (DuckDB + delta-rs, no dbt)",
    "full_build": "full `dbt build`, fresh lake",
    "privacy_off": "full `dbt build`, privacy treatments off",
    "bounded_build": "full `dbt build`, DuckDB memory bounded (`--memory-budget`)",
    "incremental": "incremental `dbt build` after +1% landing data",
    "erasure_1": "erasure of 1 subject (the command: delete, vacuum, verifier scan)",
    "erasure_1_delete": "erasure of 1 subject without the verifier scan",
    "erasure_100": "erasure of 100 subjects in one batch (with verifier scan)",
    "erasure_100_delete": "erasure of 100 subjects in one batch without the verifier scan",
    "salt_rotation": "pseudonymization-salt rotation (subject salt, lake re-tokenized)",
    "master_key_rotation": "master-key rotation of the lake's key store",
    "retention": "retention run",
}
CHART_LABELS = {
    "floor": "floor (DuckDB + delta-rs)",
    "full_build": "full dbt build",
    "privacy_off": "full build, privacy off",
    "incremental": "incremental +1%",
}
CHART_STEPS = list(CHART_LABELS)
TARGET_SCALE = "10m"
GIB = 2**30
MIB = 2**20


def load_runs(results_dir: Path) -> tuple[dict[str, dict], dict[str, Any]]:
    runs: dict[str, dict] = {}
    for path in sorted((results_dir / "runs").glob("*.json")):
        if path.stem == "extras":
            continue
        runs[path.stem] = json.loads(path.read_text())
    ordered = dict(sorted(runs.items(), key=lambda item: item[1].get("transactions", 0)))
    extras_path = results_dir / "runs" / "extras.json"
    extras = json.loads(extras_path.read_text()) if extras_path.is_file() else {}
    return ordered, extras


def _median(step: dict[str, Any] | None, key: str = "seconds") -> float | None:
    if not step or key not in step:
        return None
    return float(step[key]["median"])


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(run: dict[str, Any]) -> dict[str, float | None]:
    steps = run.get("steps", {})
    full = _median(steps.get("full_build"))
    return {
        "full_build_over_floor": _ratio(full, _median(steps.get("floor"))),
        "privacy_on_over_off": _ratio(full, _median(steps.get("privacy_off"))),
        # CPU time shows what the wall-time ratio hides on a small machine: work done on
        # otherwise idle cores, or work serialised behind one interpreter lock.
        "privacy_on_over_off_cpu": _ratio(
            _median(steps.get("full_build"), "cpu_seconds"),
            _median(steps.get("privacy_off"), "cpu_seconds"),
        ),
        "incremental_over_full": _ratio(_median(steps.get("incremental")), full),
    }


def _target_run(runs: dict[str, dict]) -> tuple[str | None, dict[str, Any]]:
    """The scale the targets are judged at: 10M when measured, else the largest measured."""
    if TARGET_SCALE in runs:
        return TARGET_SCALE, runs[TARGET_SCALE]
    if runs:
        name = list(runs)[-1]
        return name, runs[name]
    return None, {}


def _rotation_points(runs: dict[str, dict], extras: dict[str, Any]) -> list[dict[str, Any]]:
    """Master-key rotation: seconds per data key, for stores with data (the lakes) and without."""
    points = []
    for name, run in runs.items():
        step = run.get("steps", {}).get("master_key_rotation")
        keys = ((step or {}).get("details") or {}).get("data_keys_rewrapped")
        seconds = _median(step, "inner_seconds") if step and "inner_seconds" in step else None
        if keys and seconds is not None:
            points.append({"store": f"lake {name}", "rows": run["transactions"], "keys": keys,
                           "seconds": seconds})  # fmt: skip
    for count, step in (extras.get("keyring_rotation") or {}).items():
        seconds = _median(step, "inner_seconds") if "inner_seconds" in step else None
        keys = (step.get("data_keys") or {}).get("active") or int(count)
        if seconds is not None:
            points.append({"store": f"{int(count):,} subjects, no data", "rows": 0, "keys": keys,
                           "seconds": seconds})  # fmt: skip
    for point in points:
        point["microseconds_per_key"] = point["seconds"] / point["keys"] * 1e6
    return points


def rotation_row_effects(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How rows change the time per key: each store with data rows against the store with fewer
    rows whose key count is closest, and within 1.25x (per-key time also falls as fixed costs
    spread over more keys, so only stores of similar key counts compare rows fairly)."""
    out = []
    for more in points:
        peers = [
            p for p in points
            if p["rows"] < more["rows"] and 0.8 <= p["keys"] / more["keys"] <= 1.25
        ]  # fmt: skip
        if not peers:
            continue
        fewer = min(peers, key=lambda p: abs(p["keys"] - more["keys"]))
        more_us, fewer_us = more["microseconds_per_key"], fewer["microseconds_per_key"]
        out.append({"more": more["store"], "fewer": fewer["store"], "more_us": more_us,
                    "fewer_us": fewer_us, "ratio": more_us / fewer_us})  # fmt: skip
    return out


# dbt builds that run with DuckDB's default memory limit (80% of RAM): DuckDB keeps what it may
# as cache, so their peak says how much the machine offered, not what the pipeline needs.
UNBOUNDED_BUILDS = ("full_build", "privacy_off", "incremental")


def peak_memory_target(steps: dict[str, Any]) -> tuple[str, str, str | None, bool | None, str]:
    """The peak-memory target: the bounded build and every other step (floor, erasure,
    rotation, retention), with the unbounded builds' peaks quoted beside it."""
    goal = "< 3 GB"
    peaks = {
        name: step["peak_rss_bytes"]["max"]
        for name, step in steps.items()
        if "peak_rss_bytes" in step and name not in UNBOUNDED_BUILDS
    }
    unbounded = ", ".join(
        f"{name} {steps[name]['peak_rss_bytes']['max'] / GIB:.1f} GiB"
        for name in UNBOUNDED_BUILDS
        if "peak_rss_bytes" in steps.get(name, {})
    )
    if "bounded_build" not in peaks:
        note = "not measured: needs the bounded_build step"
        if unbounded:
            note += f"; unbounded builds: {unbounded}"
        return "peak memory", goal, None, None, note
    worst = max(peaks, key=peaks.get)
    budget = steps["bounded_build"].get("memory_limit", "?")
    threads = steps["bounded_build"].get("threads")
    if threads:
        budget += f" and {threads} dbt thread" + ("" if threads == 1 else "s")
    note = (
        f"largest: {worst}; the full build with DuckDB limited to {budget} took "
        f"{steps['bounded_build']['seconds']['median']:.1f} s"
    )
    if unbounded:
        note += f"; with DuckDB's default limit (80% of RAM, used as cache): {unbounded}"
    return "peak memory", goal, f"{peaks[worst] / GIB:.2f} GiB", peaks[worst] < 3 * 10**9, note


def targets(runs: dict[str, dict], extras: dict[str, Any]) -> list[dict[str, Any]]:
    scale, run = _target_run(runs)
    steps = run.get("steps", {})
    found = ratios(run) if run else {}
    at = f"at {scale}" + ("" if scale == TARGET_SCALE else " (the target is stated for 10m)")
    out: list[dict[str, Any]] = []

    def add(name: str, goal: str, figure: str | None, met: bool | None, why: str = "") -> None:
        out.append({"target": name, "goal": goal, "scale": scale, "figure": figure or "n/a",
                    "met": met, "note": why or (at if figure else "not measured")})  # fmt: skip

    ratio = found.get("full_build_over_floor")
    add("full build vs floor", "<= 3x the floor", f"{ratio:.2f}x" if ratio else None,
        None if ratio is None else ratio <= 3)  # fmt: skip
    ratio = found.get("privacy_on_over_off")
    cpu_ratio = found.get("privacy_on_over_off_cpu")
    add("price of privacy", "privacy-on <= 1.3x privacy-off", f"{ratio:.2f}x" if ratio else None,
        None if ratio is None else ratio <= 1.3,
        f"{at}; CPU time {cpu_ratio:.2f}x" if ratio and cpu_ratio else "")  # fmt: skip
    ratio = found.get("incremental_over_full")
    add("incremental +1%", "<= 10% of a full build", f"{ratio:.1%}" if ratio else None,
        None if ratio is None else ratio <= 0.10)  # fmt: skip
    erasure, delete = steps.get("erasure_1"), steps.get("erasure_1_delete")
    not_measured = run.get("not_measured", {})
    delete_note = (
        f"; without the verifier scan {delete['inner_seconds']['median']:.2f} s"
        if delete and "inner_seconds" in delete
        else ""
    )
    if erasure and "inner_seconds" in erasure:
        seconds = erasure["inner_seconds"]["median"]
        add("erasure of one subject: time", "< 5 s", f"{seconds:.2f} s", seconds < 5,
            f"{at}; the whole erase command{delete_note}")  # fmt: skip
    else:
        reason = not_measured.get("erasure_1", "")
        timed_out = "time limit" in reason
        note = f"{at}; the whole erase command" if timed_out else f"not measured: {reason}"
        add("erasure of one subject: time", "< 5 s",
            f"{reason}{delete_note}" if timed_out else None, False if timed_out else None,
            note)  # fmt: skip
    details = (erasure or delete or {}).get("details") or {}
    total, rewritten = details.get("files_total"), details.get("files_rewritten")
    if total:
        share = rewritten / total
        add("erasure of one subject: files rewritten", "< 5% of files",
            f"{rewritten} of {total} files ({share:.1%})", share < 0.05,
            f"{at}; files of the tables erasure touched")  # fmt: skip
    else:
        reason = not_measured.get("erasure_1_delete", "no erasure evidence")
        add("erasure of one subject: files rewritten", "< 5% of files", None, None,
            f"not measured: {reason}")  # fmt: skip
    comparisons = rotation_row_effects(_rotation_points(runs, extras))
    if comparisons:
        worst = max(comparisons, key=lambda c: c["ratio"])
        add("master-key rotation flat in rows",
            "time per key with more rows <= 1.5x that with fewer rows, at a similar key count",
            "; ".join(
                f"{c['more']} {c['more_us']:.1f} us/key vs {c['fewer']} "
                f"{c['fewer_us']:.1f} us/key: {c['ratio']:.2f}x"
                for c in comparisons
            ),
            worst["ratio"] <= 1.5,
            "rotation rewraps keys only; no data file is read or written")  # fmt: skip
    else:
        add("master-key rotation flat in rows", "time per key independent of rows", None, None,
            "not measured: needs a lake and a data-free store of similar key counts")  # fmt: skip
    name, goal, figure, met, note = peak_memory_target(steps)
    add(name, goal, figure, met, f"{at}; {note}")
    return out


def write_reports(results_dir: Path) -> list[Path]:
    results_dir = Path(results_dir)
    runs, extras = load_runs(results_dir)
    # Runs of each scale and the scale-free extras are written at different times: the header
    # names the newest of them (its date, machine and commit).
    dated = [r for r in (extras, *runs.values()) if r.get("date")]
    newest = max(dated, key=lambda r: r["date"], default={})
    document = {
        "date": newest.get("date"),
        "machine": newest.get("machine")
        or next((r.get("machine") for r in dated if r.get("machine")), None),
        "scales": {name: {**run, "ratios": ratios(run)} for name, run in runs.items()},
        "keyring_rotation": extras.get("keyring_rotation"),
        "master_key_rotation_per_key": _rotation_points(runs, extras),
        "profile": extras.get("profile"),
        "targets": targets(runs, extras),
    }
    paths = [results_dir / "latest.json", results_dir / "latest.md"]
    paths[0].write_text(json.dumps(document, indent=2) + "\n")
    paths[1].write_text(markdown(document))
    chart = results_dir / "latest.png"
    if write_chart(runs, chart):
        paths.append(chart)
    return paths


def _span(step: dict[str, Any], key: str = "seconds") -> str:
    stats = step[key]
    if step.get("runs", 1) == 1:
        return f"{stats['median']:.2f}"
    return f"{stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"


def _memory(step: dict[str, Any]) -> str:
    stats = step["peak_rss_bytes"]
    if step.get("runs", 1) == 1:
        return f"{stats['median'] / MIB:,.0f}"
    return f"{stats['median'] / MIB:,.0f} ({stats['min'] / MIB:,.0f}-{stats['max'] / MIB:,.0f})"


def markdown(document: dict[str, Any]) -> str:
    machine = document.get("machine") or {}
    versions = machine.get("versions") or {}
    scales = document["scales"]
    lines = [
        "# Benchmark results",
        "",
        f"Date of the newest run: {document.get('date')}. Machine: {machine.get('cores')} cores, "
        f"{(machine.get('memory_bytes') or 0) / GIB:.1f} GiB RAM, {machine.get('cpu_model')}; "
        f"load average at start {machine.get('load_average_at_start')}. Commit "
        f"{machine.get('commit')}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
        "",
        "Wall time in seconds, peak memory (largest resident set of the step's process tree)"
        " in MiB and CPU time (user + system, all cores) in seconds, each the median of the runs"
        " with (min-max). Every step runs as its own process; dbt steps include dbt's start-up"
        " and parsing.",
        "",
    ]
    header = (
        "| step | "
        + " | ".join(
            f"{name}: {run['transactions']:,} tx, {run['customers']:,} customers "
            f"({run['repeat']} run{'s' if run['repeat'] != 1 else ''})"
            for name, run in scales.items()
        )
        + " |"
    )
    lines += [header, "|---|" + "---|" * len(scales)]
    for step, label in STEP_LABELS.items():
        cells = []
        for run in scales.values():
            measured = run.get("steps", {}).get(step)
            if measured:
                cell = f"{_span(measured)} s, {_memory(measured)} MiB"
                if "cpu_seconds" in measured:
                    cell += f", CPU {_span(measured, 'cpu_seconds')} s"
                if "inner_seconds" in measured:
                    cell += f"; operation {_span(measured, 'inner_seconds')} s"
                cells.append(cell)
            else:
                reason = run.get("not_measured", {}).get(step)
                cells.append(f"not measured: {reason}" if reason else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    sizes = [
        f"{name}: " + ", ".join(f"{k} {v / MIB:,.0f} MiB" for k, v in run["bytes_on_disk"].items())
        for name, run in scales.items()
        if run.get("bytes_on_disk")
    ]
    if sizes:
        lines += ["", "On disk: " + "; ".join(sizes) + "."]
    lines += ["", "Ratios (medians):", "", "| ratio | " + " | ".join(scales) + " |",
              "|---|" + "---|" * len(scales)]  # fmt: skip
    for key, label in (
        ("full_build_over_floor", "full build / floor"),
        ("privacy_on_over_off", "privacy on / privacy off"),
        ("privacy_on_over_off_cpu", "privacy on / privacy off, CPU time"),
        ("incremental_over_full", "incremental +1% / full build"),
    ):
        cells = [
            f"{run['ratios'][key]:.2f}" if run["ratios"].get(key) is not None else "-"
            for run in scales.values()
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets", "", "| target | goal | figure | met | note |",
              "|---|---|---|---|---|"]  # fmt: skip
    for target in document["targets"]:
        met = {True: "met", False: "**not met**", None: "not measured"}[target["met"]]
        lines.append(
            f"| {target['target']} | {target['goal']} | {target['figure']} | {met} | "
            f"{target['note']} |"
        )
    erasures = [
        (name, step, run["steps"][step]["details"])
        for name, run in scales.items()
        for step in ("erasure_1", "erasure_1_delete", "erasure_100", "erasure_100_delete")
        if step in run.get("steps", {})
    ]
    if erasures:
        lines += ["", "## Erasure evidence (last run)", "",
                  "| scale | step | subjects | rows deleted | files rewritten / files in touched "
                  "tables | delete phase s | verification | files scanned |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, step, d in erasures:
            lines.append(
                f"| {name} | {step} | {d.get('subjects')} | {d.get('rows_deleted')} | "
                f"{d.get('files_rewritten')} / {d.get('files_total')} | {d.get('delete_seconds')}"
                f" | {'passed' if d.get('verification_passed') else d.get('verification_passed')}"
                f" | {d.get('files_scanned')} |"
            )
    points = document.get("master_key_rotation_per_key") or []
    if points:
        lines += ["", "## Master-key rotation", "",
                  "| key store | data rows | data keys | seconds | microseconds per key |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for p in points:
            lines.append(f"| {p['store']} | {p['rows']:,} | {p['keys']:,} | {p['seconds']:.3f} | "
                         f"{p['microseconds_per_key']:.1f} |")  # fmt: skip
    for name, run in scales.items():
        slow = run.get("steps", {}).get("full_build", {}).get("slowest_nodes") or []
        off = {
            n["node"]: n["seconds"]
            for n in run.get("steps", {}).get("privacy_off", {}).get("slowest_nodes") or []
        }
        if slow:
            lines += ["", f"## Where the full build's time goes ({name}, last run)", "",
                      "| node | seconds | seconds with privacy off | rows |",
                      "|---|---|---|---|"]  # fmt: skip
            for n in slow:
                lines.append(f"| {n['node']} | {n['seconds']:.2f} | {off.get(n['node'], '-')} | "
                             f"{n['rows'] if n['rows'] is not None else ''} |")  # fmt: skip
        # The incremental target is missed by the models an increment rebuilds whole.
        incremental = run.get("steps", {}).get("incremental", {}).get("details") or {}
        if incremental.get("slowest"):
            full = {n["node"]: n["seconds"] for n in slow}
            lines += ["", f"## Where the incremental build's time goes ({name}, last run)", "",
                      f"{incremental.get('nodes')} nodes, "
                      f"{incremental.get('node_seconds_total')} s of node time in all (dbt runs "
                      "them on its threads side by side).", "",
                      "| node | seconds | seconds in the full build | rows written |",
                      "|---|---|---|---|"]  # fmt: skip
            for n in incremental["slowest"]:
                lines.append(f"| {n['node'][:60]} | {n['seconds']:.2f} | "
                             f"{full.get(n['node'], '-')} | "
                             f"{n['rows'] if n['rows'] is not None else ''} |")  # fmt: skip
    profile = document.get("profile")
    if profile:
        lines += ["", f"## The plugin's UDFs over {profile.get('values'):,} values", "",
                  f"Through DuckDB: `sha256` in SQL {profile.get('sha256_sql_seconds')} s, "
                  f"`pl_token` {profile.get('pl_token_seconds')} s, `pl_token` + `pl_encrypt` "
                  f"{profile.get('pl_token_then_encrypt_seconds')} s. cProfile of the Python "
                  "bodies (top functions by own time):", "",
                  "| function | calls | own s | cumulative s |", "|---|---|---|---|"]  # fmt: skip
        for f in profile.get("top_functions_by_own_time") or []:
            lines.append(f"| `{f['function']}` | {f['calls']:,} | {f['own_seconds']} | "
                         f"{f['cumulative_seconds']} |")  # fmt: skip
    missing = [
        f"- {name}: {step}: {why}"
        for name, run in scales.items()
        for step, why in run.get("not_measured", {}).items()
    ]
    if missing:
        lines += ["", "## Not measured", "", *missing]
    return "\n".join(lines) + "\n"


def write_chart(runs: dict[str, dict], path: Path) -> bool:
    """Time and peak memory against scale (card transactions), log-log."""
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for step in CHART_STEPS:
        points = [
            (run["transactions"], run["steps"][step])
            for run in runs.values()
            if step in run.get("steps", {})
        ]
        if not points:
            continue
        x = [p[0] for p in points]
        label = CHART_LABELS[step]
        time_axis.plot(x, [p[1]["seconds"]["median"] for p in points], marker="o", label=label)
        memory_axis.plot(x, [p[1]["peak_rss_bytes"]["median"] / MIB for p in points],
                         marker="o", label=label)  # fmt: skip
    for axis, title, unit in ((time_axis, "Wall time", "seconds"),
                              (memory_axis, "Peak memory", "MiB")):  # fmt: skip
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("card transactions")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:  # a run without measured steps has no lines
            axis.legend(fontsize=8)
    memory_axis.axhline(3 * 10**9 / MIB, color="red", linestyle="--", linewidth=1,
                        label="3 GB target")  # fmt: skip
    memory_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
