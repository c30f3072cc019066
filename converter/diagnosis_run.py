"""The float32 diagnosis's own process, from either side: the conversion child runs it at once
(stages/explain.py), or, under engine auto, prepares it and leaves it to the parent, which runs it
only if the litert engine cannot deliver the model either (engines.py). Either runs it through
isolation.run_diagnosis, as a child is run. What the process does is converter/stages/diagnose.py's;
this module only prepares it, names its command and reads what it found, so the parent imports none
of the child's stages."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from .protocol import build, write_json_atomic
from .results import Divergence

FOLDER = "diagnosis"  # in the model's artifacts
JOB = "diagnosis_job.json"
FOUND = "diagnosis.json"  # what it found so far, rewritten as it goes


def prepare(job, arrays, reference) -> None:
    """The diagnosis's folder, ready for its process: the job (a diagnose.DiagnosisJob) and the seeded
    inputs and references."""
    work = Path(job.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for i, array in enumerate(arrays):
        np.save(work / f"input_{i}.npy", array)
    for i, array in enumerate(reference):
        np.save(work / f"reference_{i}.npy", array)
    write_json_atomic(work / JOB, dataclasses.asdict(job))


def pending(work: Path) -> bool:
    """A diagnosis prepared and left for later (engine auto, while litert may still deliver the model)."""
    return (Path(work) / JOB).is_file() and not (Path(work) / "diagnosis.log").exists()


def command(work: Path, guardians: list[int]) -> list[str]:
    """The diagnosis process of the job prepared in `work`, which dies with any of `guardians`."""
    return [sys.executable, "-m", "converter.stages.diagnose", str(work / JOB), *map(str, guardians)]


def why_stopped(out_of_time: bool, out_of_memory: bool, seconds: float, memory_mb: float, share: float) -> str | None:
    if out_of_time:
        return f"its time budget of {seconds:.0f} s ran out (diagnosis_share {share:g} of the timeout)"
    if out_of_memory:
        return f"it reached its memory budget of {memory_mb:.0f} MB (diagnosis_share {share:g})"
    return None


def outcome(work: Path, stopped: str | None, status: int | None, seconds: float) -> Divergence | None:
    """What a diagnosis process left in `work`: its finding, marked as stopped early if it was."""
    found = read_found(work)
    if found is None:
        if stopped is None:
            print(f"--- the diagnosis process ended with status {status}; its log: {work / 'diagnosis.log'}",
                  file=sys.stderr)
            return None
        # stopped before it wrote a table: its log is what there is to read
        tolerance = json.loads((work / JOB).read_text())["tolerance"]
        found = Divergence("unknown", None, tolerance, 0, str(work / "diagnosis.log"))
    return dataclasses.replace(found, stopped=stopped or found.stopped, seconds=round(seconds, 1))


AFTER_SECONDS = 10.0  # of the model's timeout, kept for what follows the diagnosis (the rest of its stage, the record)


def budget(share: float, timeout: float, seconds_left: float, memory_limit_mb: float, own_mb: float) -> dict:
    """A diagnosis's budgets: a share of the timeout (never past what is left of it, less AFTER_SECONDS),
    and of the memory the ceiling leaves the process that runs it."""
    return {"seconds": max(5.0, min(share * timeout, seconds_left - AFTER_SECONDS)),
            "memory_mb": max(256.0, share * 2 * ((memory_limit_mb or 4 * own_mb) - own_mb)), "share": share}


def read_found(work: Path) -> Divergence | None:
    try:
        return build(Divergence, json.loads((Path(work) / FOUND).read_text()))
    except (OSError, ValueError, TypeError):
        return None
