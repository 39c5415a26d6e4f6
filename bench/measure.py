"""Run one benchmark step as a child process and measure its wall time and peak memory.

Peak memory is read from the kernel, not sampled: `os.wait4(pid)` returns the resource usage
of the finished child, and on Linux its `ru_maxrss` is the largest resident set size reached by
the child or by any of its descendants that it waited for (the kernel folds each reaped
grandchild's peak into its parent's). That is the peak of the biggest single process in the
step's tree, which for dbt (one process, many threads) and for our Python steps is the step's
peak. Sampling /proc would miss short spikes between samples; this cannot.
`resource.getrusage(RUSAGE_CHILDREN)` gives the same figure, but as a running maximum over
every child so far, so a small step after a big one would inherit the big one's peak.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class StepFailed(RuntimeError):
    """A measured step exited non-zero; the message holds the tail of its output."""


@dataclass
class Sample:
    """One run of one step."""

    seconds: float
    peak_rss_bytes: int
    returncode: int
    details: dict[str, Any] = field(default_factory=dict)


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    log_path: Path | None = None,
    check: bool = True,
) -> Sample:
    """Run argv to completion; return its wall time and its process tree's peak RSS.

    Output goes to `log_path` (or is discarded), so a chatty step costs no pipe handling here.
    A JSON object on the last line of the output is returned as the sample's details: the
    Python steps report their own inner timings and evidence this way.
    """
    log_path = Path(log_path) if log_path else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path or os.devnull, "wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux.
    sample = Sample(seconds, int(usage.ru_maxrss) * 1024, process.returncode)
    text = log_path.read_text(errors="replace") if log_path else ""
    sample.details = _last_json_line(text)
    if check and process.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-25:])
        raise StepFailed(
            f"{Path(argv[0]).name} exited with {process.returncode}"
            + (f" (log: {log_path})\n{tail}" if log_path else "")
        )
    return sample


def _last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                return {}
    return {}


def summarize(samples: Sequence[Sample], seconds_key: str | None = None) -> dict[str, Any]:
    """Median, min and max of time and peak memory over the repetitions.

    `seconds_key` names a detail holding the step's own inner time (without interpreter
    start-up) to summarise as `inner_seconds` too.
    """
    if not samples:
        return {}
    times = [s.seconds for s in samples]
    peaks = [s.peak_rss_bytes for s in samples]
    summary: dict[str, Any] = {
        "runs": len(samples),
        "seconds": {"median": statistics.median(times), "min": min(times), "max": max(times)},
        "peak_rss_bytes": {
            "median": statistics.median(peaks),
            "min": min(peaks),
            "max": max(peaks),
        },
        "samples": [asdict(s) for s in samples],
    }
    if seconds_key:
        inner = [s.details[seconds_key] for s in samples if seconds_key in s.details]
        if inner:
            summary["inner_seconds"] = {
                "median": statistics.median(inner),
                "min": min(inner),
                "max": max(inner),
            }
    return summary
