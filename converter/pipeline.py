"""The conversion of one model, run inside the isolated child: `python -m converter.pipeline JOB.json`.

load -> export (ONNX) -> savedmodel (onnx2tf) -> tflite (DRQ + fp32) -> verify. Before each
stage the child notes it in progress.json, so the parent can say where a killed child was.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from . import lifeline, offline
from .environment import tool_versions
from .isolation import Job
from .results import (MEMORY_ADVICE, ConversionError, Failure, FailureKind, LoadResult, Result,
                      is_memory_error, normalise_message, write_json_atomic)
from .spec import ModelSpec, SpecError

DEFAULT_KIND = {"load": FailureKind.LOAD_ERROR, "export": FailureKind.EXPORT_ERROR,
                "savedmodel": FailureKind.SAVEDMODEL_ERROR, "tflite": FailureKind.TFLITE_ERROR,
                "verify": FailureKind.TFLITE_ERROR}


def peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # Windows: the parent's watch of the process tree still records the peak
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


class Progress:
    def __init__(self, path: Path):
        self.path, self.stage_seconds, self.stage, self._t = path, {}, None, None

    def start(self, stage: str) -> None:
        self.finish()
        self.stage, self._t = stage, time.perf_counter()
        write_json_atomic(self.path, {"stage": stage, "stage_seconds": self.stage_seconds,
                                      "peak_rss_mb": peak_rss_mb()})

    def finish(self) -> None:
        if self.stage and self._t is not None:
            self.stage_seconds[self.stage] = round(time.perf_counter() - self._t, 3)
            self._t = None


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set once in this process


def classify(exc: BaseException, stage: str) -> Failure:
    if isinstance(exc, ConversionError):
        return Failure(exc.kind, stage, normalise_message(exc.message))
    if isinstance(exc, SpecError):
        return Failure(FailureKind.SPEC_ERROR, stage, normalise_message(str(exc)))
    if is_memory_error(exc):
        return Failure(FailureKind.OUT_OF_MEMORY, stage,
                       normalise_message(f"{type(exc).__name__}: {exc}; {MEMORY_ADVICE}"))
    return Failure(DEFAULT_KIND.get(stage, FailureKind.CRASH), stage,
                   normalise_message(f"{type(exc).__name__}: {exc}"))


def convert(spec: ModelSpec, artifacts: Path, threads: int) -> Result:
    """Run every stage; never raises for a model's own problems, returns a Result."""
    from .export import export_onnx
    from .load import load_model, make_inputs, run_torch
    from .savedmodel import to_savedmodel
    from .tflite import to_tflite
    from .verify import verdict, verify

    start = time.perf_counter()
    progress = Progress(artifacts / "progress.json")
    done: dict = {}
    failure = None
    try:
        progress.start("load")
        set_threads(threads)
        t0 = time.perf_counter()
        loaded = load_model(spec)
        arrays = make_inputs(loaded.inputs, spec.seed)
        reference = run_torch(loaded, arrays)
        done["load"] = LoadResult(loaded.format, time.perf_counter() - t0,
                                  tuple(i.name for i in loaded.inputs),
                                  tuple(tuple(i.shape) for i in loaded.inputs))
        output_names = list(spec.output_names) or [f"output_{i}" for i in range(len(reference))]
        if len(output_names) != len(reference):
            raise SpecError(spec.path, "output_names",
                            f"names {len(output_names)} outputs, the model returns {len(reference)}")
        unknown = sorted(set(spec.output_tolerance) - set(output_names))
        if unknown:  # a typo would silently leave the default tolerance in force
            raise SpecError(spec.path, "tolerance.outputs",
                            f"names no output of this model: {', '.join(unknown)} (outputs: {', '.join(output_names)})")

        progress.start("export")
        done["export"] = export_onnx(spec, loaded, arrays, reference, artifacts / "model.onnx",
                                     output_names, threads)
        progress.start("savedmodel")
        done["savedmodel"] = to_savedmodel(spec, Path(done["export"].onnx_path),
                                           [i.name for i in loaded.inputs], done["export"].input_shapes,
                                           output_names, artifacts)
        progress.start("tflite")
        done["tflite"] = to_tflite(spec, Path(done["savedmodel"].path), artifacts)
        progress.start("verify")
        done["verify"] = verify(spec, arrays, reference, done["savedmodel"], done["tflite"], threads)
        problem = verdict(done["export"], done["verify"], done["tflite"], spec.allow_flex)
        if problem is not None:
            raise problem
    except BaseException as exc:  # SystemExit from a library included: it is this model's failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        failure = classify(exc, progress.stage or "load")
    progress.finish()
    # the deliverable is the parent's to copy: only a run that is still alive delivers
    return Result(
        model_id=spec.model_id, model_path=spec.path,
        status="failed" if failure else "passed", failure=failure,
        stage_seconds=dict(progress.stage_seconds),
        seconds=round(time.perf_counter() - start, 3), peak_rss_mb=round(peak_rss_mb(), 1),
        network_attempts=tuple(offline.attempts), versions=tool_versions(), **done)


def main(job_path: str) -> int:
    job = Job.read(Path(job_path))
    lifeline.hold(job.guardians)
    offline.install()
    artifacts = Path(job.artifacts_dir)
    spec = ModelSpec.from_dict(job.spec)
    result = convert(spec, artifacts, job.threads)
    result.write(artifacts / "result.json")
    (artifacts / "progress.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    status = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # skip TensorFlow's interpreter teardown: the result is written, nothing is left to do
