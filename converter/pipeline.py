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
from .fixes import flatten_fix, pseudo_ops_for_flex, pseudo_ops_for_graph
from .results import (MEMORY_ADVICE, ConversionError, Failure, FailureKind, Fix, LoadResult, Result,
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
        if self.stage and self._t is not None:  # a stage run twice (a fix's second pass) adds up
            spent = self.stage_seconds.get(self.stage, 0.0) + time.perf_counter() - self._t
            self.stage_seconds[self.stage] = round(spent, 3)
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
    from .verify import verdict, verify

    start = time.perf_counter()
    progress = Progress(artifacts / "progress.json")
    done: dict = {}
    fixes: list[Fix] = []
    divergence = None
    failure = None
    try:
        progress.start("load")
        set_threads(threads)
        t0 = time.perf_counter()
        loaded = load_model(spec)
        arrays = make_inputs(loaded.inputs, spec.seed)
        reference, structure = run_torch(loaded, arrays)
        done["load"] = LoadResult(loaded.format, time.perf_counter() - t0,
                                  tuple(i.name for i in loaded.inputs),
                                  tuple(tuple(i.shape) for i in loaded.inputs))
        output_names = _output_names(spec, structure.names)
        flatten = structure.needs_flattening and spec.auto_fixes
        if flatten:
            fixes.append(flatten_fix(structure.kind, tuple(output_names)))

        progress.start("export")
        done["export"] = export_onnx(spec, loaded, arrays, reference, artifacts / "model.onnx",
                                     output_names, threads, flatten=flatten)
        fixes += done["export"].fixes
        done["savedmodel"], done["tflite"], pseudo_fixes = tensorflow_stages(
            spec, progress, done["export"], [i.name for i in loaded.inputs], output_names, artifacts)
        fixes += pseudo_fixes
        progress.start("verify")
        done["verify"] = verify(spec, arrays, reference, done["savedmodel"], done["tflite"], threads)
        problem = verdict(done["export"], done["verify"], done["tflite"], spec.allow_flex)
        if problem is not None and _conversion_diverged(problem, done):
            divergence = _diagnose(spec, done, [i.name for i in loaded.inputs], arrays, artifacts)
            if divergence is not None:
                problem = ConversionError(problem.kind, f"{problem.message}; {divergence.describe()}")
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
        fixes=tuple(fixes), divergence=divergence, stage_seconds=dict(progress.stage_seconds),
        seconds=round(time.perf_counter() - start, 3), peak_rss_mb=round(peak_rss_mb(), 1),
        network_attempts=tuple(offline.attempts), versions=tool_versions(), **done)


def _output_names(spec: ModelSpec, found: tuple[str, ...]) -> list[str]:
    """The sidecar's names, else the model's own (dict keys, fields, output_<i>)."""
    names = list(spec.output_names) or list(found)
    if len(names) != len(found):
        raise SpecError(spec.path, "output_names", f"names {len(names)} outputs, the model returns {len(found)}")
    unknown = sorted(set(spec.output_tolerance) - set(names))
    if unknown:  # a typo would silently leave the default tolerance in force
        raise SpecError(spec.path, "tolerance.outputs",
                        f"names no output of this model: {', '.join(unknown)} (outputs: {', '.join(names)})")
    return names


def tensorflow_stages(spec: ModelSpec, progress: "Progress", export, input_names, output_names,
                      artifacts: Path, *, read_graph: bool = True):
    """onnx2tf, then TFLite; ops TFLite builtins lack are replaced in the first onnx2tf run (read
    from the ONNX graph: a second run costs minutes on a large model), and if the TFLite
    converter still names some (its report is the authority, the graph read a shortcut), they
    are replaced in one more run."""
    from .savedmodel import to_savedmodel
    from .tflite import to_tflite

    pseudo = tuple(spec.pseudo_ops)
    auto = spec.auto_fixes and not spec.allow_flex
    fixes = pseudo_ops_for_graph(Path(export.onnx_path), pseudo) if auto and read_graph else ()
    while True:
        pseudo += tuple(f.detail for f in fixes if f.detail not in pseudo)
        progress.start("savedmodel")
        saved = to_savedmodel(spec, Path(export.onnx_path), input_names, export.input_shapes, output_names,
                              artifacts, pseudo_ops=pseudo)
        progress.start("tflite")
        try:
            return saved, to_tflite(spec, Path(saved.path), artifacts), fixes
        except ConversionError as exc:
            more = pseudo_ops_for_flex(exc.ops, pseudo) if auto and exc.kind is FailureKind.FLEX_OPS else ()
            if not more:
                raise
            fixes += more


def _conversion_diverged(problem: ConversionError, done: dict) -> bool:
    """float32 TFLite off while ONNX matched PyTorch: onnx2tf or TFLite changed the numbers."""
    return (problem.kind is FailureKind.NUMERIC_MISMATCH and all(c.passed for c in done["export"].outputs)
            and not all(c.passed for c in done["verify"].fp32))


def _diagnose(spec: ModelSpec, done: dict, input_names, arrays, artifacts: Path):
    from .diagnose import first_divergence
    from .savedmodel import kept_layout_inputs

    export, saved = done["export"], done["savedmodel"]
    tolerance = min(spec.tolerance_for("fp32", c.name) for c in done["verify"].fp32 if not c.passed)
    try:
        return first_divergence(Path(export.onnx_path), input_names, arrays, saved.input_perms,
                                kept_layout_inputs(spec, input_names, export.input_shapes), saved.pseudo_ops,
                                tolerance, artifacts / "diagnosis")
    except Exception:  # a diagnosis that fails must not hide the failure it was asked to explain
        print("--- the per-node diagnosis failed:", file=sys.stderr)
        traceback.print_exc()
        return None


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
