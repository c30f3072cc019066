"""Which engine converts a model (parent side): onnx2tf, litert, or auto (onnx2tf first, litert where
onnx2tf's route fails or its float32 numbers are wrong).

Each engine's conversion is one isolated child (isolation.py), with the same timeout, memory ceiling
and kill on SIGTERM. The litert engine runs in its own environment's interpreter (litert-torch pins
an ai-edge-litert that onnx2tf's stack cannot take), forked from a preloaded process of its own. Under auto, a model litert
rescues is delivered from litert's files with a recorded fix `engine:litert` naming onnx2tf's
failure; onnx2tf's log and intermediates stay in the artifacts folder, litert's run sits in its
`litert/` sub-folder. A model onnx2tf converts keeps onnx2tf's files and record. Under auto, onnx2tf's
float32 diagnosis runs only when litert cannot deliver the model either (its child prepares it).
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import os
import shutil
import sys
import traceback
from pathlib import Path

from . import diagnosis_run
from .environment import tool_versions
from .failures import Failure, FailureKind, Stage, normalise_message
from .isolation import run_diagnosis, run_isolated
from .recipes import FP32
from .results import Fix, Result

LITERT = "litert"
LITERT_FOLDER = "litert"  # under auto: where litert's run goes, beside onnx2tf's artifacts
SETUP = "python3 -m venv .venv-litert && .venv-litert/bin/pip install -r requirements_litert.txt"
ROUTE_STAGES = (Stage.EXPORT.value, Stage.SAVEDMODEL.value, Stage.TFLITE.value, Stage.VERIFY.value)  # onnx2tf's route
LITERT_PACKAGES = ("litert_torch", "torch", "ai_edge_litert", "ai_edge_quantizer")


def engine_fix(engine: str, failure) -> Fix:
    """A known fix, recorded here where it is applied (the parent chooses the engine, no child can):
    another engine converted the model after onnx2tf's route failed (`failure`, its one line)."""
    return Fix("engine", engine, f"onnx2tf's route failed: {_told(failure)}")


def _told(failure) -> str:
    """A failure in a line another message can carry: its kind, stage and first clause."""
    return f"{failure.kind.value} in {failure.stage}: {failure.message.split(';')[0][:300]}"


def missing(python: Path) -> str | None:
    """Why the litert engine cannot run here (one line), or None."""
    if Path(python).is_file() and os.access(python, os.X_OK):
        return None
    from .settings import IN_CHECKOUT

    where = "in the harness's checkout" if IN_CHECKOUT else \
        "in this repository, with requirements_litert.txt from the harness release (as requirements_tflite.txt)"
    shown = os.path.relpath(python)  # relative where it can be: a failure's line keeps no absolute path
    shown = str(python) if shown.startswith("..") else shown
    return (f"engine litert not installed: {shown} not found; run `{SETUP}` {where}, or give its interpreter with "
            "--tflite-litert-python / TFLITE_HARNESS_LITERT_PYTHON")


@functools.lru_cache(maxsize=None)  # one look per environment and process, not one per model
def litert_versions(python: Path) -> dict[str, str]:
    """The litert environment's tool versions, read from its installed packages' folders (no interpreter
    started): what the cache key must change with."""
    root = Path(python).resolve().parent.parent
    found = {}
    for package in LITERT_PACKAGES:
        hits = sorted(glob.glob(str(root / "lib" / "python*" / "site-packages" / f"{package}-*.dist-info")) +
                      glob.glob(str(root / "Lib" / "site-packages" / f"{package}-*.dist-info")))
        found[package] = Path(hits[-1]).name[len(package) + 1:-len(".dist-info")] if hits else "missing"
    return found


def convert(spec, artifacts: Path, *, litert_python: Path, **isolated) -> tuple[Result, Path]:
    """The model's Result, and the folder its files and samples are in (what the cache stores)."""
    if spec.engine == LITERT:
        return _litert(spec, artifacts, litert_python, isolated), artifacts
    # under auto, onnx2tf's float32 diagnosis (21 of 54 s on a small bidirectional LSTM) waits: litert may
    # deliver the model, and then nobody would read it
    litert_follows = spec.engine == "auto" and missing(litert_python) is None
    result = run_isolated(spec, artifacts, diagnose_later=litert_follows, **isolated)
    left = spec.timeout - result.seconds  # the model's timeout covers both engines
    if spec.engine != "auto" or not litert_may_mend(result) or left < 1:
        return _diagnosed(result, spec, artifacts, isolated), artifacts
    folder = artifacts / LITERT_FOLDER
    rescued = _litert(spec, folder, litert_python, {**isolated, "timeout": left})
    if rescued.passed:
        print(f"--- {spec.model_id}: onnx2tf's route failed ({result.failure.kind.value}); delivered by litert")
        _drop_pending(artifacts)  # the diagnosis left for later: nobody needs it now
        return _both(rescued, result, rescued, fixes=(engine_fix(LITERT, result.failure),) + rescued.fixes), folder
    kind = rescued.failure.kind
    if kind.machine and kind is not FailureKind.ENGINE_MISSING:
        # litert could not finish (its time, memory, a crash, the disk): that is the verdict, of a kind a rerun
        # may change, so it is not cached and the next run tries litert again; nothing is left to explain
        _drop_pending(artifacts)
        failure = Failure(kind, rescued.failure.stage, normalise_message(
            f"engine litert: {rescued.failure.message}; onnx2tf's route had failed first: {_told(result.failure)}"))
        return _both(result, result, rescued, failure=failure), artifacts
    # said before the diagnosis, which a long line would cut off
    also = f"; engine litert failed too: {_told(rescued.failure)}"
    failure = dataclasses.replace(result.failure, message=normalise_message(result.failure.message + also))
    return _diagnosed(_both(result, result, rescued, failure=failure), spec, artifacts, isolated), artifacts


def _both(base: Result, onnx2tf: Result, litert: Result, **fields) -> Result:
    """`base` with both engines' runs counted: their seconds, stages and peak memory."""
    return dataclasses.replace(base, stage_seconds=_added(onnx2tf.stage_seconds, litert.stage_seconds),
                               seconds=round(onnx2tf.seconds + litert.seconds, 3),
                               peak_rss_mb=max(onnx2tf.peak_rss_mb, litert.peak_rss_mb), **fields)


def _drop_pending(artifacts: Path) -> None:
    if diagnosis_run.pending(artifacts / diagnosis_run.FOLDER):
        shutil.rmtree(artifacts / diagnosis_run.FOLDER, ignore_errors=True)


def _diagnosed(result: Result, spec, artifacts: Path, isolated: dict) -> Result:
    """onnx2tf's wrong numbers explained by the float32 diagnosis its child left for later (litert could
    not deliver the model), run from here within the budgets the child would have given it; any other
    result as it is (a diagnosis prepared before a timeout or a kill is dropped)."""
    work = artifacts / diagnosis_run.FOLDER
    if not diagnosis_run.pending(work):
        return result
    if result.failure is None or result.failure.kind is not FailureKind.NUMERIC_MISMATCH:
        _drop_pending(artifacts)
        return result
    share = isolated.get("diagnosis_share", 0.25)
    limits = diagnosis_run.budget(share, spec.timeout, spec.timeout - result.seconds,
                                  spec.memory_limit_mb or isolated.get("memory_limit_mb", 0.0), 0.0)
    try:
        divergence, peak_mb = run_diagnosis(work, threads=isolated.get("threads", 1), **limits)
    except Exception:  # a diagnosis that fails must not hide the failure it was asked to explain
        print(f"--- {spec.model_id}: the diagnosis failed:\n{traceback.format_exc()}", file=sys.stderr)
        return result
    seconds = round(result.seconds + (divergence.seconds if divergence else 0.0), 3)
    result = dataclasses.replace(result, seconds=seconds, peak_rss_mb=round(max(result.peak_rss_mb, peak_mb), 1))
    if divergence is None:
        return result
    message = normalise_message(f"{result.failure.message}; {divergence.describe()}")
    return dataclasses.replace(result, failure=dataclasses.replace(result.failure, message=message),
                               divergence=divergence)


def litert_may_mend(result: Result) -> bool:
    """onnx2tf's route failed where another route may not: its export, onnx2tf, the TFLite converter
    (crashes included), or float32 numbers (ONNX, its TF model, or the float32 file) that are wrong; not
    a quantized recipe that misses while float32 is right, nor the model's file, spec or the machine."""
    failure = result.failure
    if failure is None or not failure.kind.another_engine_may_mend or failure.stage not in ROUTE_STAGES:
        return False
    if failure.kind is not FailureKind.NUMERIC_MISMATCH:
        return failure.stage != Stage.VERIFY.value or failure.kind is not FailureKind.TFLITE_ERROR
    fp32 = result.deliverable_of(FP32)
    wrong = [c for c in (result.export.outputs if result.export else ()) if not c.passed]
    wrong += [c for c in (result.savedmodel.outputs if result.savedmodel else ()) if not c.passed]
    wrong += [c for c in (fp32.outputs if fp32 else ()) if not c.passed]
    return bool(wrong) or failure.stage == Stage.SAVEDMODEL.value


def _litert(spec, artifacts: Path, python: Path, isolated: dict) -> Result:
    why = missing(python)
    if why is not None:
        return Result.failed(spec.model_id, spec.path, FailureKind.ENGINE_MISSING, Stage.LOAD, why,
                             versions=tool_versions(), engine=LITERT)
    spec = dataclasses.replace(spec, engine=LITERT)
    return run_isolated(spec, artifacts, engine=LITERT, python=str(python), **isolated)


def _added(a: dict, b: dict) -> dict:
    return {k: round(a.get(k, 0.0) + b.get(k, 0.0), 3) for k in {**a, **b}}

