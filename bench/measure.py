"""Run one benchmark step as a child process and measure its wall time and peak memory.

Peak memory is read from the kernel, not sampled: `os.wait4(pid)` returns the resource usage
of the finished child, and on Linux its `ru_maxrss` is the largest resident set size reached by
the child or by any of its descendants that it waited for (the kernel folds each reaped
grandchild's peak into its parent's). That is the peak of the biggest single process in the
step's tree, which for dbt (one process, many threads) and for our Python steps is the step's
peak. Sampling /proc would miss short spikes between samples; this cannot.
`resource.getrusage(RUSAGE_CHILDREN)` gives the same figure as a running maximum over every
child so far, so a small step after a big one would inherit the big one's peak.

One trap: a child inherits its parent's high-water mark through fork and exec (Linux carries
the old address space's peak into the new program's `maxrss`), so a step started straight
from the benchmark process would report at least the benchmark's own size. Each step is
therefore started by a small launcher (this file run with `python -S`, about 15 MB: the floor
of every figure), which forks the step and reports the step's `wait4` figures and wall time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class StepFailed(RuntimeError):
    """A measured step exited non-zero; the message holds the tail of its output."""


class StepTimedOut(StepFailed):
    """A measured step ran longer than its time limit and was stopped."""


@dataclass
class Sample:
    """One run of one step."""

    seconds: float
    peak_rss_bytes: int
    returncode: int
    details: dict[str, Any] = field(default_factory=dict)
    # User + system CPU time of the step's process tree: above the wall time when it used
    # several cores, about equal to it when it ran on one (an interpreter lock, say).
    cpu_seconds: float = 0.0


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    log_path: Path | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> Sample:
    """Run argv to completion; return its wall time, CPU time and its process tree's peak RSS.

    Output goes to `log_path` (or is discarded), so a chatty step costs no pipe handling here.
    A JSON object on the last line of the output is returned as the sample's details: the
    Python steps report their own inner timings and evidence this way. After `timeout`
    seconds the step's whole process group is stopped and StepTimedOut raised.
    """
    log_path = Path(log_path) if log_path else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    launcher = [sys.executable, "-S", str(Path(__file__).resolve()), str(write_end), *argv]
    with open(log_path or os.devnull, "wb") as out:
        started = time.perf_counter()
        # A session of its own, so a time-out stops the launcher and the step together.
        process = subprocess.Popen(
            launcher,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(write_end,),
        )
        os.close(write_end)
        timer = threading.Timer(timeout, _stop, (process.pid,)) if timeout else None
        if timer:
            timer.start()
        try:
            with os.fdopen(read_end, "rb") as report:
                reported = report.read()
            process.wait()
        finally:
            if timer:
                timer.cancel()
        seconds = time.perf_counter() - started
    figures = json.loads(reported) if reported else {}
    returncode = figures.get("returncode", process.returncode or -1)
    sample = Sample(
        figures.get("seconds", seconds),
        int(figures.get("maxrss_kb", 0)) * 1024,
        returncode,
        cpu_seconds=float(figures.get("cpu_seconds", 0.0)),
    )
    text = log_path.read_text(errors="replace") if log_path else ""
    sample.details = _last_json_line(text)
    if timeout and seconds >= timeout and not figures:
        raise StepTimedOut(f"{Path(argv[0]).name} stopped after {timeout:.0f} s (time limit)")
    if check and returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-25:])
        raise StepFailed(
            f"{Path(argv[0]).name} exited with {returncode}"
            + (f" (log: {log_path})\n{tail}" if log_path else "")
        )
    return sample


def _launch(report_fd: int, argv: list[str]) -> int:
    """The launcher: run argv, then write its exit code, wall time, CPU time and peak RSS to
    report_fd (wait4's usage covers the child and every descendant it waited for)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv)
    _, status, usage = os.wait4(child.pid, 0)
    figures = {
        "returncode": os.waitstatus_to_exitcode(status),
        "seconds": time.perf_counter() - started,
        "maxrss_kb": usage.ru_maxrss,  # kilobytes on Linux
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }
    with os.fdopen(report_fd, "w") as report:
        report.write(json.dumps(figures))
    return 0


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


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
    cpu = [s.cpu_seconds for s in samples]
    if any(cpu):
        summary["cpu_seconds"] = {
            "median": statistics.median(cpu),
            "min": min(cpu),
            "max": max(cpu),
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


if __name__ == "__main__":
    sys.exit(_launch(int(sys.argv[1]), sys.argv[2:]))
