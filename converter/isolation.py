"""Run one model's conversion in a fresh child process and classify how it ended.

The child gets its own session (so the whole process group can be killed), its share of
threads, a wall-clock timeout and a memory ceiling enforced by watching its resident
memory: TensorFlow reserves huge virtual memory, so an address-space rlimit is useless.
The child is forked from a preloaded process when it can be (forkserver.py), else spawned.
The parent never imports torch or tensorflow.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psutil

from . import diagnosis_run, forkserver
from .environment import PROJECT_ROOT, child_environment, interpreter_command, tool_versions
from .failures import DISK_ADVICE, DISK_MARKERS, MEMORY_ADVICE, MEMORY_MARKERS, Failure, FailureKind
from .lifeline import guardians_of_this_process
from .protocol import JOB_FILE, LOG_FILE, PROGRESS_FILE, RESULT_FILE, Job, read_progress
from .results import Result

POLL_SECONDS = 0.1


def tree_rss(proc: psutil.Process | None, seen: dict | None = None) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone); each descendant
    is also noted in `seen` (pid -> Process), to be killed at the end however it left the group."""
    total = 0
    if proc is None:
        return 0
    try:
        members = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    if seen is not None:
        for member in members[1:]:
            seen.setdefault(member.pid, member)
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def _kill_group(popen: subprocess.Popen) -> None:
    if hasattr(os, "killpg"):
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    else:  # Windows has no process groups to signal: kill the tree one by one
        try:
            tree = psutil.Process(popen.pid).children(recursive=True) + [psutil.Process(popen.pid)]
        except psutil.Error:
            tree = []
        for proc in tree:
            try:
                proc.kill()
            except psutil.Error:
                pass
    popen.wait()


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _log_tail(log: Path) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 20000))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


DISK_FREE_FLOOR = 2**20  # less than this free beside the artifacts: the child died of a full disk


def _disk_was_full(artifacts: Path, tail: str) -> bool:
    """The child's own log says so, or its disk has no room left (the log itself may not have fitted)."""
    if any(m in tail for m in DISK_MARKERS):
        return True
    try:
        return shutil.disk_usage(artifacts).free < DISK_FREE_FLOOR
    except OSError:
        return False


def run_isolated(spec, artifacts_dir: Path, *, threads: int, memory_limit_mb: float, timeout: float | None = None,
                 on_start: Callable[[int], None] | None = None, command: list[str] | None = None,
                 on_progress: Callable[[dict, float], None] | None = None, preload: bool = True,
                 diagnosis_share: float = 0.25, fail_on_vacuous: bool = False, engine: str = "onnx2tf",
                 python: str | None = None, diagnose_later: bool = False) -> Result:
    """Convert `spec` (a ModelSpec) in a child; always returns a Result, even when the child dies.

    The child is forked from the preloaded process (see forkserver.py) unless `preload` is
    false or that process is unavailable; then it is spawned. `command` spawns another child
    instead (tests use one-line children that crash, sleep or eat memory, to check the
    classification in seconds, without torch). `engine`: whose rows the child runs; `python`: the
    interpreter of an engine with its own environment (litert), whose children are forked from a
    preloaded process of that interpreter (each environment has its own). `diagnose_later`: a float32
    diagnosis is only prepared (engines.py runs it if the litert engine cannot deliver the model)."""
    artifacts = Path(artifacts_dir)
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    timeout = spec.timeout if timeout is None else timeout
    limit_mb = spec.memory_limit_mb or memory_limit_mb
    job_path = artifacts / JOB_FILE
    Job(spec.to_dict(), str(artifacts.resolve()), threads, guardians_of_this_process(), limit_mb,
        diagnosis_share, fail_on_vacuous, engine, diagnose_later).write(job_path)
    start = time.monotonic()
    child = _start_child(command, job_path.resolve(), (artifacts / LOG_FILE).resolve(), threads, preload, python)
    watch = (lambda elapsed: on_progress(read_progress(artifacts / PROGRESS_FILE), elapsed)) if on_progress else None
    ended_by, peak = _watch(child, limit_mb, timeout, on_start, watch)
    seconds, peak_mb = time.monotonic() - start, peak / 2**20
    result_path = artifacts / RESULT_FILE
    # the child writes result.json atomically as its last act: trust it even if the
    # interpreter died afterwards (TensorFlow's teardown), unless the parent killed it
    if ended_by is None and result_path.is_file():
        result = Result.read(result_path)
        result = dataclasses.replace(result, peak_rss_mb=round(max(result.peak_rss_mb, peak_mb), 1))
        result.write(result_path)  # the parent saw the whole process tree: its peak is the true one
        return result
    progress = read_progress(artifacts / PROGRESS_FILE)
    (artifacts / PROGRESS_FILE).unlink(missing_ok=True)  # no child runs here any more (live.py reads it so)
    tail = _log_tail(artifacts / LOG_FILE)
    failure = classify_death(child.returncode, ended_by, progress.get("stage", "load"), peak_mb=peak_mb,
                             limit_mb=limit_mb, timeout=timeout,
                             log_mentions_memory=any(m in tail for m in MEMORY_MARKERS),
                             disk_full=ended_by is None and _disk_was_full(artifacts, tail))
    result = Result.failed(spec.model_id, spec.path, failure.kind, failure.stage, failure.message,
                           stage_seconds=progress.get("stage_seconds", {}), seconds=round(seconds, 3),
                           peak_rss_mb=round(max(peak_mb, progress.get("peak_rss_mb", 0.0)), 1),
                           versions=tool_versions(), engine=engine)
    result.write(result_path)
    return result


class _Spawned:
    """A child started from nothing, with the interface the watch uses (ForkedChild's)."""

    def __init__(self, command: list[str], log_path: Path, threads: int):
        with open(log_path, "wb") as log:
            self.popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=str(PROJECT_ROOT), env=child_environment(threads),
                                          start_new_session=True)
        self.pid = self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def kill_group(self) -> None:
        _kill_group(self.popen)


def engine_command(python: str, job_path: Path) -> list[str]:
    """A child in another environment's interpreter (see interpreter_command)."""
    return interpreter_command(python, "converter.stages.pipeline", "spawned_main", str(job_path))


def run_diagnosis(work: Path, *, seconds: float, memory_mb: float, share: float, threads: int) -> tuple:
    """The float32 diagnosis prepared in `work` (diagnosis_run.prepare), run as a conversion child is: in
    its own session, with a child's environment, dying with this process (and, under xdist, the
    controller), watched, and killed with all it started when its budget runs out or this process is
    stopped. The conversion child runs its own so; the harness, one a child left for later (engines.py).
    Returns (the Divergence or None, its peak MB)."""
    start = time.monotonic()
    child = _Spawned(diagnosis_run.command(work, guardians_of_this_process()), work / "diagnosis.log", threads)
    ended_by, peak = _watch(child, memory_mb, seconds, None, None)
    stopped = diagnosis_run.why_stopped(ended_by is FailureKind.TIMEOUT, ended_by is FailureKind.OUT_OF_MEMORY,
                                        seconds, memory_mb, share)
    return diagnosis_run.outcome(work, stopped, child.returncode, time.monotonic() - start), peak / 2**20


def _start_child(command, job_path: Path, log_path: Path, threads: int, preload: bool, python: str | None):
    if command is None and preload:
        try:
            return forkserver.launch(job_path, log_path, threads, python)
        except forkserver.Unavailable:
            pass  # spawning works everywhere; it only costs the imports
    if command is None:
        command = (engine_command(python, job_path) if python is not None
                   else [sys.executable, "-m", "converter.stages.pipeline", str(job_path)])
    return _Spawned(command, log_path, threads)


def _watch(child, limit_mb: float, timeout: float, on_start, watch) -> tuple[FailureKind | None, int]:
    """Watch the child's tree's memory and the clock; the parent kills the whole group when
    it ends, however it ends. Returns (why the parent killed it or None, peak bytes)."""
    start, peak, ended_by = time.monotonic(), 0, None
    descendants: dict[int, psutil.Process] = {}
    watched = None
    try:
        if on_start is not None:
            on_start(child.pid)
        try:
            watched = psutil.Process(child.pid)
        except psutil.NoSuchProcess:  # a forked child that ended at once was reaped already
            watched = None
        while child.poll() is None:
            peak = max(peak, tree_rss(watched, descendants))
            if peak > limit_mb * 2**20:
                ended_by = FailureKind.OUT_OF_MEMORY
            elif time.monotonic() - start > timeout:
                ended_by = FailureKind.TIMEOUT
            if ended_by:
                break
            if watch is not None:
                watch(time.monotonic() - start)
            time.sleep(POLL_SECONDS)
    finally:
        # also on Ctrl-C or pytest-timeout: the child has its own session, so nothing else
        # would stop it; this also reaps whatever the child left running in its group
        if watched is not None:
            tree_rss(watched, descendants)  # the last look, while the child may still hold them
        child.kill_group()
        _kill_seen(descendants)
    return ended_by, peak


def _kill_seen(descendants: dict) -> None:
    """Every descendant the watch saw, still running: one that left the child's group (a factory's
    `setsid` subprocess) would outlive the run, and once its parent is gone it is no one's child.
    psutil refuses a pid reused by another process since it was seen."""
    for proc in descendants.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()


def classify_death(returncode: int, ended_by: FailureKind | None, stage: str, *, peak_mb: float,
                   limit_mb: float, timeout: float, log_mentions_memory: bool, disk_full: bool = False) -> Failure:
    """Why a child ended without a result, in one line."""
    if ended_by is FailureKind.OUT_OF_MEMORY:
        return Failure(ended_by, stage, f"resident memory exceeded the {limit_mb:.0f} MB ceiling "
                                        f"during {stage}; {MEMORY_ADVICE}")
    if ended_by is FailureKind.TIMEOUT:
        return Failure(ended_by, stage, f"no result after the {timeout:g} s timeout (still in {stage}); "
                                        "raise timeout in the model's .toml if it is just slow")
    if disk_full:  # it could not write its result, or died trying: the machine's, not the model's
        return Failure(FailureKind.DISK_FULL, stage, f"the conversion process ended (status {returncode}) during "
                                                     f"{stage} with no space left on the disk of its artifacts; "
                                                     f"{DISK_ADVICE}")
    if log_mentions_memory:  # e.g. an uncaught std::bad_alloc aborts with SIGABRT
        return Failure(FailureKind.OUT_OF_MEMORY, stage, f"allocation failed during {stage}; {MEMORY_ADVICE}")
    if returncode == -getattr(signal, "SIGKILL", 9):
        return Failure(FailureKind.CRASH, stage,
                       f"conversion process killed by SIGKILL during {stage} (peak {peak_mb:.0f} MB; the "
                       f"system's out-of-memory killer sends SIGKILL: if memory was short, {MEMORY_ADVICE})")
    if returncode < 0:
        return Failure(FailureKind.CRASH, stage,
                       f"conversion process killed by {_signal_name(returncode)} during {stage}")
    return Failure(FailureKind.CRASH, stage,
                   f"conversion process exited with status {returncode} during {stage} without a result")
