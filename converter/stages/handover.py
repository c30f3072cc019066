"""A spawned conversion child drops what it no longer needs by replacing itself with a fresh
interpreter (os.execv: the same pid, process group and output, so the parent's watch goes on as
before) that resumes from the checkpoint it wrote (checkpoint.save).

- After the export: torch and the model (about 250 MB on ResNet-18) are then not resident under
  TensorFlow's peak.
- Before a large model's TFLite conversion: onnx2tf's leftovers are not resident under the
  converter's (benchmarks/README.md has the figures behind TFLITE_HAND_OVER_MB).

A child forked from the preloaded process keeps going: its imports are shared pages. A hand-over
only saves memory: if its state cannot be written (a full disk) or the exec fails, the conversion
goes on in this process, and says so in its log.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

from ..protocol import PROGRESS_FILE, Progress
from . import checkpoint, offline
from .checkpoint import Checkpoint, Context
from .memory import freeze_imports, peak_rss_mb

FOLDER = "handoff"  # in the artifacts: what the next interpreter starts from
STATE = "state.json"  # the checkpoint and the run's clocks
ARRAYS = "arrays.npz"  # its arrays (protocol.SampleArrays)
# A SavedModel this large is converted to TFLite by a fresh interpreter: the converter's peak is
# several times the model's constants, on top of what onnx2tf's process still holds; the exec costs
# a TensorFlow import (2-3 s), which a small model would feel and not need.
TFLITE_HAND_OVER_MB = 64.0


def saved_model_mb(path: str) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def worth_it(cp: Checkpoint, before: str) -> str | None:
    """Why a hand-over before `before` ("tflite", or the first step after the export) pays, or None."""
    if before != "tflite":
        return "TensorFlow's stages, without torch"
    size_mb = saved_model_mb(cp.built.saved.path)
    return f"the TFLite conversion of its {size_mb:.0f} MB SavedModel" if size_mb >= TFLITE_HAND_OVER_MB else None


def hand_over(job_path: str):
    """The hand-over a spawned child gives its pipeline: (context, checkpoint, before) -> None."""
    def go(ctx: Context, cp: Checkpoint, before: str) -> None:
        why = worth_it(cp, before)
        if why is None:
            return
        ctx.progress.finish()
        try:
            work = ctx.artifacts / FOLDER
            work.mkdir(exist_ok=True)
            checkpoint.save(cp, work / STATE, work / ARRAYS, stage_seconds=ctx.progress.stage_seconds,
                            started=ctx.started, network_attempts=list(offline.attempts))
            print(f"--- a fresh interpreter takes over for {why} (same process)", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, [sys.executable, "-m", "converter.stages.pipeline", job_path, "--resume"])
        except OSError as exc:
            print(f"--- no hand-over to a fresh interpreter ({type(exc).__name__}: {exc}): going on in this process",
                  file=sys.stderr)
    return go


def resume(artifacts: Path) -> tuple[Checkpoint, Progress, float]:
    """The checkpoint the replaced interpreter wrote, its progress clocks, and when the run started."""
    progress = Progress(artifacts / PROGRESS_FILE, peak_rss_mb)
    cp, state = checkpoint.load(artifacts / FOLDER / STATE, artifacts / FOLDER / ARRAYS)
    progress.stage_seconds = dict(state["stage_seconds"])
    # reading the state back and the imports are the next stage's cost (onnx2tf's, or the TFLite conversion's)
    progress.start("tflite" if cp.built is not None else "savedmodel")
    # What the steps left to this interpreter import anyway (for the TFLite conversion alone, not
    # onnx's), frozen with the checkpoint just read: it holds no cycle (its arrays are not even
    # tracked), and reference counts still free it. onnx2tf itself is imported by its own step, whose
    # import changes the recursion limit, the warnings and the seeds (savedmodel.prepare_onnx2tf).
    # An import that fails here fails again in the step that needs it, which names the cause.
    with contextlib.suppress(Exception):
        freeze_imports(*(("tensorflow",) if cp.built is not None else ("tensorflow", "onnx", "onnxruntime")))
    offline.attempts.extend(state["network_attempts"])
    return cp, progress, float(state.get("started", time.monotonic()))


def clean(artifacts: Path) -> None:
    shutil.rmtree(artifacts / FOLDER, ignore_errors=True)
