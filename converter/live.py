"""Progress while it works, read from what the conversion child already writes (progress.json),
so that a slow model can be told from a hung one before its timeout.

The child rewrites progress.json as each stage starts, so the file's modification time is when
the current stage began; it deletes the file when it ends (the parent does, when it dies). The
one-model CLI shows a live line; the batch's controller scans the artifacts folders for the
conversions running now, whichever worker runs them: no new channel between processes.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import psutil

from .failures import Stage
from .protocol import JOB_FILE, PROGRESS_FILE, WAITING_FILE


@dataclass(frozen=True)
class Running:
    model_id: str
    stage: str
    stage_seconds: float  # in the current stage
    timeout: float

    def slow(self, fraction: float) -> bool:
        return self.stage_seconds > fraction * self.timeout

    def describe(self, fraction: float) -> str:
        text = f"{self.model_id} ({self.stage}, {self.stage_seconds:.0f} s"
        if self.slow(fraction):
            text += f": slow, {self.stage_seconds / self.timeout:.0%} of its {self.timeout:g} s timeout"
        return text + ")"


def running_conversions(artifacts_dir: Path, now: float | None = None, since: float = 0.0) -> list[Running]:
    """Every conversion of this run (its job written since `since`) whose parent still lives,
    from its progress.json and job.json: a file a killed worker or an earlier run left is no
    conversion."""
    now = time.time() if now is None else now
    found = []
    for progress in sorted(Path(artifacts_dir).glob(f"*/{PROGRESS_FILE}")):
        try:
            job_file = progress.parent / JOB_FILE
            job = json.loads(job_file.read_text())
            stage = json.loads(progress.read_text())["stage"]
            started = progress.stat().st_mtime
            if job_file.stat().st_mtime < since or not all(psutil.pid_exists(p) for p in job.get("guardians", [])):
                continue
            spec = job["spec"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # written or removed at this very moment: next time
        found.append(Running(spec["model_id"], stage, max(0.0, now - started), float(spec["timeout"])))
    return found


def cut_short(artifacts_dir: Path, since: float, done) -> list[str]:
    """Models of this run (job written since `since`) whose conversion a signal stopped midway: their
    progress file stays (only a conversion that ended removes it) and they have no result in `done`.
    They ran, so a summary does not count them among the models that did not run."""
    found = []
    for progress in sorted(Path(artifacts_dir).glob(f"*/{PROGRESS_FILE}")):
        try:
            job_file = progress.parent / JOB_FILE
            if job_file.stat().st_mtime < since:
                continue
            model_id = json.loads(job_file.read_text())["spec"]["model_id"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if model_id not in done:
            found.append(model_id)
    return found


def waiting_conversions(artifacts_dir: Path, since: float = 0.0) -> int:
    """Models of this run waiting for one of the machine's conversion slots."""
    count = 0
    for marker in Path(artifacts_dir).glob(f"*/{WAITING_FILE}"):
        try:
            guardians = json.loads(marker.read_text())["guardians"]
            count += marker.stat().st_mtime >= since and all(psutil.pid_exists(p) for p in guardians)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return count


def status_line(done: int, total: int | None, running: list[Running], fraction: float, waiting: int = 0) -> str:
    head = f"[tflite] {done}/{total} done" if total else f"[tflite] {done} done"
    if running:
        head += "; converting: " + ", ".join(r.describe(fraction) for r in running)
    if waiting:  # more workers than the machine's slots (--tflite-max-conversions)
        head += f"; {waiting} waiting for a conversion slot"
    return head


class StatusThread:
    """The controller's status line every `every` seconds, until stopped."""

    def __init__(self, write: Callable[[str], None], snapshot: Callable[[], str], every: float = 10.0):
        self._write, self._snapshot, self._every = write, snapshot, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tflite-status", daemon=True)

    def start(self) -> "StatusThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last = None
        while not self._stop.wait(self._every):
            try:
                line = self._snapshot()
                if line != last:  # nothing new (the run is busy elsewhere): no line, CI logs stay short
                    self._write(line)
                last = line
            except Exception:  # a status line must never break the run it describes
                pass


class StageTicker:
    """The one-model CLI's live progress: one updating line on a terminal, a line per stage
    otherwise (CI logs). Fed by the parent's watch loop with the child's progress.json."""

    def __init__(self, model_id: str, timeout: float, fraction: float, stream: TextIO = sys.stderr,
                 tty: bool | None = None):
        self.model_id, self.timeout, self.fraction, self.stream = model_id, timeout, fraction, stream
        self.tty = stream.isatty() if tty is None else tty
        self.stage, self.stage_start, self.drawn, self.warned = None, 0.0, 0.0, False
        self.announced: list[str] = []
        self.waited = False

    def __call__(self, progress: dict, elapsed: float) -> None:
        if progress.get("waiting"):  # for one of the machine's conversion slots (another run holds them)
            if not self.waited:
                self.waited = True
                self._line(f"{self.model_id}: waiting for a conversion slot (--tflite-max-conversions)")
            return
        stage = progress.get("stage")
        # a stage shorter than the watch's poll is never seen running: its seconds say it ran
        self._announce_finished(progress.get("stage_seconds", {}))
        if stage and stage != self.stage:
            self._announce(stage, elapsed)
            self.stage, self.stage_start, self.warned = stage, elapsed, False
        if self.stage is None:
            return
        in_stage = elapsed - self.stage_start
        if not self.warned and in_stage > self.fraction * self.timeout:
            self.warned = True
            self._line(f"{self.model_id}: slow: still in {self.stage} after {in_stage:.0f} s "
                       f"({in_stage / self.timeout:.0%} of its {self.timeout:g} s timeout)")
        elif self.tty and elapsed - self.drawn >= 0.5:
            self.drawn = elapsed
            self.stream.write(f"\r\x1b[2K{self.model_id}: {self.stage} {in_stage:.0f} s (total {elapsed:.0f} s)")
        self.stream.flush()

    def _announce(self, stage: str, elapsed: float) -> None:
        if stage in self.announced:
            return  # a known fix sends the conversion back to savedmodel once: one line is enough
        self.announced.append(stage)
        if not self.tty:
            self.stream.write(f"{self.model_id}: {stage} (after {elapsed:.1f} s)\n")

    def _announce_finished(self, stage_seconds: dict) -> None:
        start = 0.0
        for stage in [s.value for s in Stage if s.value in stage_seconds]:  # the JSON's keys are sorted
            self._announce(stage, start)
            start += stage_seconds[stage]

    def _line(self, text: str) -> None:
        self.stream.write(("\r\x1b[2K" if self.tty else "") + text + "\n")

    def close(self, stage_seconds: dict | None = None) -> None:
        """`stage_seconds`: the finished conversion's, to name the stages that ended unseen."""
        self._announce_finished(stage_seconds or {})
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
