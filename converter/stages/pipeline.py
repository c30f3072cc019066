"""The conversion of one model, run inside the isolated child: `python -m converter.stages.pipeline JOB.json`.

load -> export (ONNX) -> savedmodel (onnx2tf) -> tflite (a file per recipe) -> verify, as the list
STAGES that one loop runs. Before each stage the child notes it in progress.json, so the parent
can say where a killed child was.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .. import lifeline
from ..environment import tool_versions
from ..failures import MEMORY_ADVICE, ConversionError, Failure, FailureKind, Stage, first_line, is_memory_error, normalise_message
from ..protocol import PROGRESS_FILE, RESULT_FILE, Job, Progress
from ..recipes import FP32
from ..results import Divergence, Fix, LoadResult, Result
from ..spec import ModelSpec, SpecError
from . import offline
from .fixes import flatten_fix, onnx2tf_mode_fix, pseudo_ops_for_flex, pseudo_ops_for_graph

PREPARED_ONNX = "model_prepared.onnx"  # the exported graph, simplified and rewritten for onnx2tf
DEFAULT_KIND = {Stage.LOAD: FailureKind.LOAD_ERROR, Stage.EXPORT: FailureKind.EXPORT_ERROR,
                Stage.SAVEDMODEL: FailureKind.SAVEDMODEL_ERROR, Stage.TFLITE: FailureKind.TFLITE_ERROR,
                Stage.VERIFY: FailureKind.TFLITE_ERROR}


def release_memory() -> None:
    """Free what the last stage dropped, and hand glibc's free pages back to the system: the
    next stage's peak then starts from what is really still in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # Windows: the parent's watch of the process tree still records the peak
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


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
                       normalise_message(f"{first_line(exc)}; {MEMORY_ADVICE}"))
    return Failure(DEFAULT_KIND.get(Stage(stage), FailureKind.CRASH), stage,
                   normalise_message(first_line(exc)))


@dataclass
class Conversion:
    """What one model's stages hand each other."""

    spec: ModelSpec
    artifacts: Path
    threads: int
    progress: Progress
    memory_limit_mb: float = 0.0  # the ceiling the parent enforces (0: unknown)
    started: float = 0.0  # perf_counter at the start of the conversion, for what is left of the timeout
    done: dict = field(default_factory=dict)  # stage name -> its result dataclass
    fixes: list[Fix] = field(default_factory=list)
    divergence: Divergence | None = None
    loaded: object = None
    arrays: list = field(default_factory=list)
    reference: list = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    flatten: bool = False
    deliverables: tuple = ()  # the TFLite files built, then verified (results.Deliverable)
    graph: object = None  # results.GraphResult: the exported graph, prepared for onnx2tf (None: not used)
    graph_fixes: tuple = ()  # the rewrites that made it
    onnx2tf_runs: int = 0
    delivered: str | None = None  # the recipe whose file verified first, in the requested order

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.loaded.inputs]


def _load(c: Conversion) -> None:
    from .load import load_model, make_inputs, run_torch

    set_threads(c.threads)
    t0 = time.perf_counter()
    c.loaded = load_model(c.spec)
    c.arrays = make_inputs(c.loaded.inputs, c.spec.seed)
    c.reference, structure = run_torch(c.loaded, c.arrays)
    c.done["load"] = LoadResult(c.loaded.format, time.perf_counter() - t0, tuple(c.input_names),
                                tuple(tuple(i.shape) for i in c.loaded.inputs))
    c.output_names = _output_names(c.spec, structure.names)
    c.flatten = structure.needs_flattening and c.spec.auto_fixes
    if c.flatten:
        c.fixes.append(flatten_fix(structure.kind, tuple(c.output_names)))


def _export(c: Conversion) -> None:
    from .export import export_onnx

    c.done["export"] = export_onnx(c.spec, c.loaded, c.arrays, c.reference, c.artifacts / "model.onnx",
                                   c.output_names, c.threads, flatten=c.flatten)
    c.fixes += c.done["export"].fixes
    # nothing after this needs the PyTorch model: its weights would count in TFLite's peak
    c.loaded = dataclasses.replace(c.loaded, module=None)
    release_memory()


# what a cheaper onnx2tf mode can cause: a failed conversion, ops left for Flex, a layout onnx2tf
# could not map (and, checked in _verify, float32 outputs that differ from ONNX's)
RETRY_KINDS = (FailureKind.SAVEDMODEL_ERROR, FailureKind.TFLITE_ERROR, FailureKind.FLEX_OPS,
               FailureKind.SHAPE_MISMATCH)
NEXT_MODE = {"simplified": "strict", "strict": "defaults"}


def _prepare_graph(c: Conversion) -> None:
    """Once, before onnx2tf's first run: the graph simplified and rewritten (graph.py), checked
    against PyTorch like the exported one; a prepared graph that does not match is not used."""
    from .export import run_onnxruntime
    from .graph import prepare
    from .metrics import compare

    path = c.artifacts / PREPARED_ONNX
    c.graph, fixes = prepare(Path(c.done["export"].onnx_path), path)
    _, outputs = run_onnxruntime(path, c.input_names, c.arrays, c.threads)
    bad = [compare(n, r, o, c.spec.tolerance_for("onnx", n)) for n, r, o in zip(c.output_names, c.reference, outputs)]
    bad = [x for x in bad if not x.passed]
    if bad:
        print(f"--- the prepared graph differs from PyTorch ({bad[0].describe('prepared ONNX')}): onnx2tf converts "
              "the exported one", file=sys.stderr)
        c.graph = None
        return
    c.graph_fixes = fixes  # recorded once onnx2tf converted this graph
    release_memory()


def _first_mode(c: Conversion) -> str:
    if not c.spec.auto_fixes:
        return "defaults"  # no fixes: onnx2tf as it comes
    _prepare_graph(c)
    if c.graph is None:
        return "defaults"
    if c.graph.strict_reason:
        c.fixes.append(Fix("onnx2tf_mode", "strict", f"chosen before the first run: {c.graph.strict_reason}"))
        return "strict"
    return "simplified"


def _tensorflow(c: Conversion, mode: str | None = None) -> None:
    from .savedmodel import PREPARED_MODES

    mode = mode or _first_mode(c)
    if mode in PREPARED_MODES and c.graph is None:
        mode = "defaults"
    onnx_path = c.artifacts / PREPARED_ONNX if mode in PREPARED_MODES else Path(c.done["export"].onnx_path)

    def counted() -> None:
        c.onnx2tf_runs += 1

    try:
        c.done["savedmodel"], (c.done["tflite"], c.deliverables), fixes = tensorflow_stages(
            c.spec, c.progress, c.done["export"], c.input_names, c.output_names, c.artifacts, mode=mode,
            onnx_path=onnx_path, on_run=counted)
    except ConversionError as exc:
        if mode not in NEXT_MODE or not c.spec.auto_fixes or exc.kind not in RETRY_KINDS:
            raise
        traceback.print_exc()  # the first attempt's reason stays in the log
        reason = f"{c.progress.stage} failed: {exc.message.split(';')[0][:200]}"
        release_memory()
        _tensorflow(c, NEXT_MODE[mode])  # if it fails too, its error is the one onnx2tf gives
        c.fixes.append(onnx2tf_mode_fix(NEXT_MODE[mode], mode, reason))  # recorded once it worked
        return
    prepared = mode in PREPARED_MODES
    c.done["savedmodel"] = dataclasses.replace(c.done["savedmodel"], graph=c.graph if prepared else None)
    c.fixes += [f for f in (list(c.graph_fixes) if prepared else []) + list(fixes) if f not in c.fixes]


def _verify(c: Conversion) -> None:
    from .verify import verdict, verify

    def check() -> ConversionError | None:
        c.done["verify"], c.deliverables = verify(c.spec, c.arrays, c.reference, c.done["savedmodel"],
                                                  c.deliverables, c.threads)
        problem, chosen, fixes = verdict(c.done["export"], c.done["verify"], c.deliverables, c.done["tflite"],
                                         c.spec.deliverables, c.spec.allow_flex)
        c.delivered = chosen.recipe if problem is None else None
        c.fixes[:] = [f for f in c.fixes if f.name != "deliverable"] + list(fixes)  # a second check decides anew
        return problem

    problem = check()
    mode = c.done["savedmodel"].onnx2tf_mode
    if problem is not None and _conversion_diverged(problem, c, shapes_too=True) and c.spec.auto_fixes \
            and mode in NEXT_MODE:
        # the accuracy search exists to choose transpositions right: the next mode has it
        again = NEXT_MODE[mode]
        print(f"--- {problem.message}: converting again in onnx2tf's {again} mode", file=sys.stderr)
        release_memory()
        before = dict(c.done), c.deliverables
        try:
            _tensorflow(c, again)
        except ConversionError as exc:  # the first problem stays the model's failure
            traceback.print_exc()
            c.done.update(before[0])
            c.deliverables = before[1]
            problem = ConversionError(problem.kind, f"{problem.message} (onnx2tf's {again} mode failed: "
                                                    f"{exc.message.split(';')[0]})")
        else:
            c.progress.start(Stage.VERIFY.value)
            retried = check()
            if retried is None or not _conversion_diverged(retried, c, shapes_too=True):
                c.fixes.append(onnx2tf_mode_fix(again, mode, "the float32 TFLite outputs differed from ONNX's"))
                problem = retried
            else:
                problem = ConversionError(retried.kind, f"{retried.message} (also in onnx2tf's {again} mode)")
    if problem is not None and _conversion_diverged(problem, c):
        c.divergence = _diagnose(c)
        if c.divergence is not None:
            problem = ConversionError(problem.kind, f"{problem.message}; {c.divergence.describe()}")
    if problem is not None:
        raise problem


# The pipeline, in order: (progress stage, step). The TensorFlow step notes its second stage
# (tflite) itself, because a known fix may send it back to savedmodel once.
STAGES = ((Stage.LOAD, _load), (Stage.EXPORT, _export), (Stage.SAVEDMODEL, _tensorflow), (Stage.VERIFY, _verify))


def convert(spec: ModelSpec, artifacts: Path, threads: int, memory_limit_mb: float = 0.0) -> Result:
    """Run every stage; never raises for a model's own problems, returns a Result."""
    start = time.perf_counter()
    c = Conversion(spec, artifacts, threads, Progress(artifacts / PROGRESS_FILE, peak_rss_mb),
                   memory_limit_mb=memory_limit_mb, started=start)
    failure = None
    try:
        for stage, step in STAGES:
            c.progress.start(stage.value)
            step(c)
    except BaseException as exc:  # SystemExit from a library included: it is this model's failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        failure = classify(exc, c.progress.stage or Stage.LOAD.value)
    c.progress.finish()
    # the deliverable is the parent's to copy: only a run that is still alive delivers
    return Result(
        model_id=spec.model_id, model_path=spec.path,
        status="failed" if failure else "passed", failure=failure,
        deliverables=c.deliverables, requested=spec.deliverables, delivered=None if failure else c.delivered,
        fixes=tuple(c.fixes), divergence=c.divergence, stage_seconds=dict(c.progress.stage_seconds),
        seconds=round(time.perf_counter() - start, 3), peak_rss_mb=round(peak_rss_mb(), 1),
        network_attempts=tuple(offline.attempts), onnx2tf_runs=c.onnx2tf_runs, versions=tool_versions(), **c.done)


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
                      artifacts: Path, *, read_graph: bool = True, mode: str = "simplified",
                      onnx_path: Path | None = None, on_run=None):
    """onnx2tf, then TFLite; ops TFLite builtins lack are replaced in the first onnx2tf run (read
    from the ONNX graph: a second run costs minutes on a large model), and if the TFLite
    converter still names some (its report is the authority, the graph read a shortcut), they
    are replaced in one more run."""
    from .savedmodel import to_savedmodel
    from .tflite import to_tflite

    pseudo = tuple(spec.pseudo_ops)
    auto = spec.auto_fixes and not spec.allow_flex
    onnx_path = Path(onnx_path or export.onnx_path)
    fixes = pseudo_ops_for_graph(onnx_path, pseudo) if auto and read_graph else ()
    while True:
        pseudo += tuple(f.detail for f in fixes if f.detail not in pseudo)
        progress.start(Stage.SAVEDMODEL.value)
        if on_run is not None:
            on_run()
        saved = to_savedmodel(spec, onnx_path, input_names, export.input_shapes, output_names,
                              artifacts, pseudo_ops=pseudo, mode=mode)
        release_memory()  # onnx2tf's graph and the Keras model, before TFLite's own copies
        progress.start(Stage.TFLITE.value)
        try:
            return saved, to_tflite(spec, Path(saved.path), artifacts), fixes
        except ConversionError as exc:
            more = pseudo_ops_for_flex(exc.ops, pseudo) if auto and exc.kind is FailureKind.FLEX_OPS else ()
            if not more:
                raise
            fixes += more


def _conversion_diverged(problem: ConversionError, c: Conversion, shapes_too: bool = False) -> bool:
    """float32 TFLite off while ONNX matched PyTorch: onnx2tf or TFLite changed the numbers
    (or, with `shapes_too`, the shapes)."""
    kinds = (FailureKind.NUMERIC_MISMATCH, FailureKind.SHAPE_MISMATCH) if shapes_too else (FailureKind.NUMERIC_MISMATCH,)
    return (problem.kind in kinds and all(x.passed for x in c.done["export"].outputs)
            and not _fp32(c.deliverables).passed)


def _fp32(deliverables):
    return next(d for d in deliverables if d.recipe == FP32)


def _diagnose(c: Conversion) -> Divergence | None:
    """Where the float32 conversion departs, within its share of the timeout and memory ceiling."""
    from .diagnose import MEMORY_SHARE, TIME_SHARE, DiagnosisJob, run_bounded
    from .savedmodel import kept_layout_inputs

    export, saved, verified = c.done["export"], c.done["savedmodel"], c.done["verify"]
    tolerance = min(c.spec.tolerance_for(FP32, x.name) for x in _fp32(c.deliverables).outputs if not x.passed)
    left = c.spec.timeout - (time.perf_counter() - c.started) - 10  # leave the rest of the stage its time
    own = peak_rss_now()
    job = DiagnosisJob(
        onnx_path=saved.onnx_path or export.onnx_path, saved_model=saved.path, tflite_fp32=_fp32(c.deliverables).path,
        input_names=c.input_names, input_keys=[k for _, k in saved.input_names],
        input_perms=[list(p) for p in saved.input_perms], output_keys=[k for _, k in saved.output_names],
        output_perms=[list(p) for p in verified.output_perms],
        keep=kept_layout_inputs(c.spec, c.input_names, export.input_shapes), pseudo_ops=list(saved.pseudo_ops),
        mode=saved.onnx2tf_mode, tolerance=tolerance, work_dir=str(c.artifacts / "diagnosis"))
    release_memory()
    try:
        return run_bounded(job, c.arrays, c.reference, seconds=max(5.0, min(TIME_SHARE * c.spec.timeout, left)),
                           memory_mb=max(256.0, MEMORY_SHARE * ((c.memory_limit_mb or 4 * own) - own)))
    except Exception:  # a diagnosis that fails must not hide the failure it was asked to explain
        print("--- the diagnosis failed:", file=sys.stderr)
        traceback.print_exc()
        return None


def peak_rss_now() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def main(job_path: str, parent: int | None = None) -> int:
    """`parent`: the process that started this one, when it is not the first guardian (the
    preloaded process that forked it, see forkserver.py)."""
    job = Job.read(Path(job_path))
    lifeline.hold(job.guardians, parent)
    offline.install()
    artifacts = Path(job.artifacts_dir)
    spec = ModelSpec.from_dict(job.spec)
    result = convert(spec, artifacts, job.threads, memory_limit_mb=job.memory_limit_mb)
    result.write(artifacts / RESULT_FILE)
    (artifacts / PROGRESS_FILE).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    status = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # skip TensorFlow's interpreter teardown: the result is written, nothing is left to do
