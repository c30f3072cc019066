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
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import lifeline
from ..environment import tool_versions
from ..failures import (
    MEMORY_ADVICE,
    ConversionError,
    Failure,
    FailureKind,
    Stage,
    disk_full_message,
    first_line,
    is_disk_full,
    is_memory_error,
    normalise_message,
)
from ..protocol import (
    PROGRESS_FILE,
    RESULT_FILE,
    SAMPLES_FILE,
    Job,
    Progress,
    build,
    plain,
    sets_from_arrays,
    sets_to_arrays,
    write_json_atomic,
)
from ..recipes import FP32, RECIPES, calibrated
from ..results import Divergence, ExportResult, Fix, GraphResult, LoadResult, Result, SavedModelResult
from ..spec import InputSpec, ModelSpec, SpecError
from . import offline
from .fixes import flatten_fix, onnx2tf_mode_fix, pseudo_ops_for_flex, pseudo_ops_for_graph

PREPARED_ONNX = "model_prepared.onnx"  # the exported graph, simplified and rewritten for onnx2tf


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
    if is_disk_full(exc):
        return Failure(FailureKind.DISK_FULL, stage, normalise_message(disk_full_message(exc, stage)))
    return Failure(Stage(stage).default_kind, stage,
                   normalise_message(first_line(exc)))


@dataclass(frozen=True)
class BuiltSavedModel:
    """A SavedModel built and checked by the process that handed over before its TFLite conversion
    (see _hand_over): the next process's TFLite stage starts from it."""

    mode: str  # onnx2tf's mode that built it
    saved: SavedModelResult
    pseudo_ops: tuple[str, ...]
    pseudo_fixes: tuple[Fix, ...]  # the pseudo-op fixes it was built with, recorded once it converts


@dataclass
class Conversion:
    """What one model's stages hand each other."""

    spec: ModelSpec
    artifacts: Path
    threads: int
    progress: Progress
    memory_limit_mb: float = 0.0  # the ceiling the parent enforces (0: unknown)
    diagnosis_share: float = 0.25
    fail_on_vacuous: bool = False
    job_path: str = ""
    started: float = 0.0  # time.monotonic() at the start of the conversion, for what is left of the timeout
    done: dict = field(default_factory=dict)  # stage name -> its result dataclass
    fixes: list[Fix] = field(default_factory=list)
    divergence: Divergence | None = None
    loaded: object = None  # load.LoadedModel, until the export: nothing after it needs the model
    inputs: tuple = ()  # the model's inputs (spec.InputSpec), known from the load stage on
    arrays: list = field(default_factory=list)
    reference: list = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    flatten: bool = False
    deliverables: tuple = ()  # the TFLite files built, then verified (results.Deliverable)
    graph: object = None  # results.GraphResult: the exported graph, prepared for onnx2tf (None: not used)
    graph_fixes: tuple = ()  # the rewrites that made it
    onnx_outputs: list = field(default_factory=list)  # onnxruntime's, on the sample inputs
    tf_outputs: list = field(default_factory=list)  # the TF model's, in PyTorch's layout
    onnx2tf_runs: int = 0
    delivered: str | None = None  # the recipe whose file verified first, in the requested order
    # (inputs, PyTorch's outputs) the TFLite files are verified on: the seeded sample, or the samples
    # held out from calibration; and the int8 recipes' calibration samples (input sets, torch layout)
    verify_sets: list = field(default_factory=list)
    calibration_sets: list = field(default_factory=list)
    calibration_note: str | None = None
    random_calibration: bool = False
    model_sha256: str = ""  # of the bytes read, known before loading them can fail
    steps_done: tuple[str, ...] = ()  # the STAGES steps done, by this process or the one it replaced
    built: BuiltSavedModel | None = None  # what a hand-over before the TFLite conversion left it
    hand_over: Callable | None = None  # (conversion, BuiltSavedModel | None): a spawned child's, see main

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]


def _load(c: Conversion) -> None:
    from .load import caveats, load_model, make_inputs, run_torch

    set_threads(c.threads)
    t0 = time.perf_counter()
    c.loaded = load_model(c.spec, max_bytes=c.memory_limit_mb * 2**20, on_read=lambda d: setattr(c, "model_sha256", d))
    c.inputs = c.loaded.inputs
    c.arrays = make_inputs(c.loaded.inputs, c.spec.seed)
    c.reference, structure = run_torch(c.loaded, c.arrays)
    c.output_names = _output_names(c.spec, structure.names)
    found = caveats(c.loaded, c.reference, c.output_names, c.spec.seed)
    c.done["load"] = LoadResult(c.loaded.format, time.perf_counter() - t0, tuple(c.input_names),
                                tuple(tuple(i.shape) for i in c.loaded.inputs), found, c.loaded.sha256)
    if found and c.fail_on_vacuous:
        raise ConversionError(FailureKind.VACUOUS_CHECK, found[0].describe() + " (--fail-on-vacuous)")
    c.flatten = structure.needs_flattening and c.spec.auto_fixes
    if c.flatten:
        c.fixes.append(flatten_fix(structure.kind, tuple(c.output_names)))
    _samples(c, run_torch)


def _samples(c: Conversion, run_torch) -> None:
    """The calibration samples and the sets the TFLite files are verified on (calibration.py)."""
    from . import calibration

    c.verify_sets = [(c.arrays, c.reference)]
    if c.spec.calibration:
        c.calibration_sets, held_out, c.calibration_note = calibration.from_folder(c.spec.calibration,
                                                                                   c.loaded.inputs)
        c.verify_sets = [(arrays, run_torch(c.loaded, arrays)[0]) for arrays in held_out]
    elif calibrated(c.spec.deliverables):
        c.calibration_sets, c.calibration_note = calibration.generated(c.loaded.inputs, c.spec.seed,
                                                                       c.spec.calibration_samples)
        c.random_calibration = True


def _export(c: Conversion) -> None:
    from .export import export_onnx

    c.done["export"] = export_onnx(c.spec, c.loaded, c.arrays, c.reference, c.artifacts / "model.onnx",
                                   c.output_names, c.threads, flatten=c.flatten, outputs=c.onnx_outputs)
    c.fixes += c.done["export"].fixes
    # nothing after this needs the PyTorch model: its weights would count in TFLite's peak
    c.loaded = None
    release_memory()


NEXT_MODE = {"simplified": "strict", "strict": "defaults"}


def _prepare_graph(c: Conversion) -> None:
    """Once, before onnx2tf's first run: the graph simplified and rewritten (graph.py), checked
    against PyTorch like the exported one; a prepared graph that does not match is not used."""
    from ..metrics import compare
    from .graph import prepare, run_onnxruntime

    path = c.artifacts / PREPARED_ONNX
    c.graph, fixes = prepare(Path(c.done["export"].onnx_path), path, integer=calibrated(c.spec.deliverables))
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


def _tensorflow(c: Conversion) -> None:
    """onnx2tf (in the cheapest mode that converts the model right), its TF model checked against
    PyTorch at once, then the TFLite files. Wrong numbers after every mode tried are diagnosed."""
    try:
        _in_mode(c, c.built.mode if c.built else _first_mode(c))
    except ConversionError as exc:
        if exc.kind is not FailureKind.NUMERIC_MISMATCH or getattr(exc, "saved", None) is None:
            raise
        c.done["savedmodel"] = exc.saved
        c.divergence = _diagnose(c, exc.saved)
        raise ConversionError(exc.kind, f"{exc.message}; {c.divergence.describe()}" if c.divergence else exc.message)


def _in_mode(c: Conversion, mode: str) -> None:
    import numpy as np

    from .savedmodel import PREPARED_MODES
    from .verify import check_tf

    if mode in PREPARED_MODES and c.graph is None:
        mode = "defaults"
    onnx_path = c.artifacts / PREPARED_ONNX if mode in PREPARED_MODES else Path(c.done["export"].onnx_path)

    def counted() -> None:
        c.onnx2tf_runs += 1

    built, c.built = c.built, None  # a retry in another mode builds its own

    def before_tflite(ready: BuiltSavedModel) -> None:
        if c.hand_over is not None and c.onnx2tf_runs == 1:  # not in a retry: it stays in this process
            c.hand_over(c, ready)

    def checked(saved, tf_outputs):
        saved, problem = check_tf(c.spec, c.reference, saved, tf_outputs, c.done["export"])
        c.tf_outputs = [np.transpose(o, np.argsort(p)) for o, p in zip(tf_outputs, saved.output_perms)]
        if problem is not None:
            problem.saved = saved  # the TF model stays at hand for the diagnosis
            raise problem
        return saved

    try:
        c.done["savedmodel"], (c.done["tflite"], c.deliverables), fixes = tensorflow_stages(
            c.spec, c.progress, c.done["export"], c.input_names, c.output_names, c.artifacts, mode=mode,
            onnx_path=onnx_path, on_run=counted, arrays=c.arrays, check=checked, calibration=c.calibration_sets,
            calibration_note=c.calibration_note, random_calibration=c.random_calibration,
            built=built, before_tflite=before_tflite)
    except ConversionError as exc:
        last = mode not in NEXT_MODE or (exc.kind.wrong_numbers and mode == "strict")
        if last or not c.spec.auto_fixes or not exc.kind.retried:
            raise
        traceback.print_exc()  # the first attempt's reason stays in the log
        again = NEXT_MODE[mode]
        if exc.kind.wrong_numbers:
            reason = "the float32 outputs of its TF model differed from ONNX's"
        else:
            reason = f"{c.progress.stage} failed: {exc.message.split(';')[0][:200]}"
        release_memory()
        try:
            _in_mode(c, again)
        except ConversionError as later:
            if not exc.kind.wrong_numbers:
                raise  # if it fails too, its error is the one onnx2tf gives
            also = "also" if later.kind.wrong_numbers else f"and it failed: {later.message.split(';')[0][:120]}"
            first = ConversionError(exc.kind, f"{exc.message} ({also} in onnx2tf's {again} mode)")
            first.saved = getattr(later, "saved", None) or exc.saved  # the first problem stays the model's failure
            raise first from later
        c.fixes.append(onnx2tf_mode_fix(again, mode, reason))  # recorded once it worked
        return
    prepared = mode in PREPARED_MODES
    c.done["savedmodel"] = dataclasses.replace(c.done["savedmodel"], graph=c.graph if prepared else None)
    c.fixes += [f for f in (list(c.graph_fixes) if prepared else []) + list(fixes) if f not in c.fixes]


def _verify(c: Conversion) -> None:
    from .verify import verdict, verify

    release_memory()  # what the TFLite converter left, before the runtime-check process starts beside this one
    c.done["verify"], c.deliverables = verify(c.spec, c.verify_sets or [(c.arrays, c.reference)],
                                              c.done["savedmodel"], c.deliverables, c.threads)
    problem, chosen, fixes = verdict(c.done["export"], c.done["savedmodel"], c.done["verify"], c.deliverables,
                                     c.done["tflite"], c.spec.deliverables, c.spec.allow_flex)
    c.delivered = chosen.recipe if problem is None else None
    c.fixes += list(fixes)
    if problem is not None and problem.kind is FailureKind.NUMERIC_MISMATCH:
        if all(x.passed for x in c.done["export"].outputs):
            explained = _explain_tflite(c, chosen)
        else:  # the ONNX file itself is off: the model's own float32 precision, or the export
            c.divergence = _diagnose(c, c.done["savedmodel"], steps=("precision",),
                                     outputs=c.done["export"].outputs)
            explained = c.divergence.describe() if c.divergence else None
        problem = ConversionError(problem.kind, f"{problem.message}; {explained}" if explained else problem.message)
    if problem is not None:
        raise problem


def _explain_tflite(c: Conversion, chosen) -> str:
    """The TF model matched PyTorch and a TFLite file did not: its quantization, or the TFLite
    converter? The float32 TFLite file tells (built now when it was not asked for); if that one
    is wrong too, the TFLite op where it departs is found."""
    from .tflite import to_tflite
    from .verify import verify

    fp32 = next((d for d in c.deliverables if d.recipe == FP32), None)
    if fp32 is None:
        spec = dataclasses.replace(c.spec, deliverables=(FP32,))
        _, files = to_tflite(spec, Path(c.done["savedmodel"].path), c.artifacts)
        _, (fp32,) = verify(spec, c.verify_sets or [(c.arrays, c.reference)], c.done["savedmodel"], files, c.threads,
                            deploy=False)
    if fp32.passed:
        if chosen.recipe == FP32:
            return "the float32 TFLite file passes"  # not reached: a passing chosen file raises no problem
        return (f"the float32 TFLite file matches PyTorch (range-relative {fp32.worst.range_rel_err:.3g}): the error "
                f"is {RECIPES[chosen.recipe].title}'s quantization, not the conversion")
    c.divergence = _diagnose(c, c.done["savedmodel"], fp32_tflite=fp32.path)
    return c.divergence.describe() if c.divergence else "the float32 TFLite file differs from PyTorch too"


# The pipeline, in order: (progress stage, step). The TensorFlow step notes its second stage
# (tflite) itself, because a known fix may send it back to savedmodel once.
STAGES = ((Stage.LOAD, _load), (Stage.EXPORT, _export), (Stage.SAVEDMODEL, _tensorflow), (Stage.VERIFY, _verify))


def convert(spec: ModelSpec, artifacts: Path, threads: int, memory_limit_mb: float = 0.0, *,
            hand_over: Callable[[Conversion, BuiltSavedModel | None], None] | None = None,
            resumed: Conversion | None = None, diagnosis_share: float = 0.25, fail_on_vacuous: bool = False) -> Result:
    """Run every stage; never raises for a model's own problems, returns a Result. `hand_over`:
    called after the export (with None) and before the first TFLite conversion (with the SavedModel
    built), see _hand_over; `resumed`: the conversion it handed over."""
    c = resumed or Conversion(spec, artifacts, threads, Progress(artifacts / PROGRESS_FILE, peak_rss_mb),
                              memory_limit_mb=memory_limit_mb, started=time.monotonic())
    c.diagnosis_share, c.fail_on_vacuous = diagnosis_share, fail_on_vacuous
    c.hand_over = hand_over
    start = c.started
    failure = None
    try:
        for stage, step in STAGES:
            if stage.value in c.steps_done:
                continue  # done before the hand-over
            if c.built is None or stage is not Stage.SAVEDMODEL:  # else its TFLite stage is where it resumes
                c.progress.start(stage.value)
            step(c)
            c.steps_done += (stage.value,)
            if stage is Stage.EXPORT and hand_over is not None:  # not reached by a resumed run: export is done
                hand_over(c, None)
    except BaseException as exc:  # SystemExit from a library included: it is this model's failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        failure = classify(exc, c.progress.stage or Stage.LOAD.value)
    c.progress.finish()
    _write_samples(c)
    # the deliverable is the parent's to copy: only a run that is still alive delivers
    return Result(
        model_id=spec.model_id, model_path=spec.path,
        status="failed" if failure else "passed", failure=failure,
        deliverables=c.deliverables, requested=spec.deliverables, delivered=None if failure else c.delivered,
        fixes=tuple(c.fixes), divergence=c.divergence, stage_seconds=dict(c.progress.stage_seconds),
        seconds=round(time.monotonic() - start, 3), peak_rss_mb=round(peak_rss_mb(), 1),
        network_attempts=tuple(offline.attempts), onnx2tf_runs=c.onnx2tf_runs, versions=tool_versions(),
        model_sha256=c.model_sha256 or (c.done["load"].model_sha256 if "load" in c.done else ""), **c.done)


def _write_samples(c: Conversion) -> None:
    """What the cache proves a restored entry with: the sample inputs, PyTorch's outputs, and
    onnxruntime's and the TF model's (in PyTorch's layout), as far as the conversion got."""
    import numpy as np

    if not c.arrays or not c.reference:
        return
    arrays = {f"input_{i}": a for i, a in enumerate(c.arrays)}
    arrays.update({f"reference_{i}": a for i, a in enumerate(c.reference)})
    arrays.update({f"onnx_{i}": a for i, a in enumerate(c.onnx_outputs)})
    arrays.update({f"tf_{i}": a for i, a in enumerate(c.tf_outputs)})
    own = _own_verify_sets(c)
    if own:  # the TFLite files were verified on other samples (held out from calibration): those too
        arrays.update(sets_to_arrays(own))
    try:
        np.savez(c.artifacts / SAMPLES_FILE, **arrays)
    except OSError:  # a full disk costs the cache its proof, not the model its result
        (c.artifacts / SAMPLES_FILE).unlink(missing_ok=True)


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
                      onnx_path: Path | None = None, on_run=None, arrays=None, check=None, calibration=(),
                      calibration_note=None, random_calibration=False, built: BuiltSavedModel | None = None,
                      before_tflite: Callable[[BuiltSavedModel], None] | None = None):
    """onnx2tf, then TFLite; ops TFLite builtins lack are replaced in the first onnx2tf run (read
    from the ONNX graph: a second run costs minutes on a large model), and if the TFLite
    converter still names some (its report is the authority, the graph read a shortcut), they
    are replaced in one more run. `built`: a SavedModel built and checked already, to start from;
    `before_tflite`: called with one built here before its TFLite conversion (it may hand over,
    see _hand_over)."""
    from ..tflite_run import tf_layout_feed
    from .savedmodel import to_savedmodel
    from .tflite import to_tflite

    pseudo = tuple(spec.pseudo_ops)
    auto = spec.auto_fixes and not spec.allow_flex
    onnx_path = Path(onnx_path or export.onnx_path)
    if built is not None:
        saved, pseudo, fixes = built.saved, built.pseudo_ops, built.pseudo_fixes
    else:
        fixes = pseudo_ops_for_graph(onnx_path, pseudo) if auto and read_graph else ()
    while True:
        pseudo += tuple(f.detail for f in fixes if f.detail not in pseudo)
        if built is None:
            progress.start(Stage.SAVEDMODEL.value)
            if on_run is not None:
                on_run()
            saved, tf_outputs = to_savedmodel(spec, onnx_path, input_names, export.input_shapes, output_names,
                                              artifacts, pseudo_ops=pseudo, mode=mode, arrays=arrays)
            release_memory()  # onnx2tf's graph and the Keras model, before TFLite's own copies
            if check is not None:  # the TF model's float32 numbers, before any TFLite conversion
                saved = check(saved, tf_outputs)
            if before_tflite is not None:
                before_tflite(BuiltSavedModel(mode, saved, pseudo, tuple(fixes)))
        built = None  # a second pass (ops replaced for Flex) builds its own
        progress.start(Stage.TFLITE.value)
        feeds = [tf_layout_feed(saved, arrays) for arrays in calibration]
        try:
            return saved, to_tflite(spec, Path(saved.path), artifacts, feeds, calibration_note, random_calibration), fixes
        except ConversionError as exc:
            more = pseudo_ops_for_flex(exc.ops, pseudo) if auto and exc.kind is FailureKind.FLEX_OPS else ()
            if not more:
                raise
            fixes += more


def _diagnose(c: Conversion, saved, fp32_tflite: str | None = None, steps=("precision", "convert"),
              outputs=None) -> Divergence | None:
    """Where the float32 conversion departs, within its share of the timeout and memory ceiling:
    the model's own float32 precision first, then onnx2tf's TF model against ONNX node by node, or
    (with `fp32_tflite`, the TF model being right) the float32 TFLite file against the TF model."""
    from .diagnose import DiagnosisJob, run_bounded
    from .savedmodel import kept_layout_inputs

    export = c.done["export"]
    outputs = saved.outputs if outputs is None else outputs
    failing = [x for x in outputs if not x.passed] or list(outputs)
    tolerance = min(x.tolerance for x in failing) if failing else c.spec.tolerance["fp32"]
    left = c.spec.timeout - (time.monotonic() - c.started) - 10  # leave the rest of the stage its time
    own = peak_rss_now()
    job = DiagnosisJob(
        onnx_path=saved.onnx_path or export.onnx_path, saved_model=saved.path, tflite_fp32=fp32_tflite or "",
        input_names=c.input_names, input_keys=[k for _, k in saved.input_names],
        input_perms=[list(p) for p in saved.input_perms], output_keys=[k for _, k in saved.output_names],
        output_perms=[list(p) for p in saved.output_perms],
        keep=kept_layout_inputs(c.spec, c.input_names, export.input_shapes), pseudo_ops=list(saved.pseudo_ops),
        mode=saved.onnx2tf_mode, tolerance=tolerance, work_dir=str(c.artifacts / "diagnosis"), spec=c.spec.to_dict(),
        steps=tuple(steps), observed=max((x.range_rel_err for x in failing), default=0.0))
    release_memory()
    try:
        # a share of the timeout (never past it), and of the memory the ceiling leaves this process
        return run_bounded(job, c.arrays, c.reference, seconds=max(5.0, min(c.diagnosis_share * c.spec.timeout, left)),
                           memory_mb=max(256.0, c.diagnosis_share * 2 * ((c.memory_limit_mb or 4 * own) - own)),
                           share=c.diagnosis_share)
    except Exception:  # a diagnosis that fails must not hide the failure it was asked to explain
        print("--- the diagnosis failed:", file=sys.stderr)
        traceback.print_exc()
        return None


def peak_rss_now() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


HANDOFF = "handoff.json"  # what a spawned child carries across its exec (see _hand_over)
# A SavedModel this large is converted to TFLite by a fresh interpreter (see _hand_over): the
# converter's peak is several times the model's constants, on top of what onnx2tf's process still
# holds. ConvNeXt-tiny (109 MB): 1769 MB in the child after onnx2tf, 1400 MB in a fresh one. The
# exec costs a TensorFlow import (2-3 s), which a small model would feel and not need: on
# ResNet-18 (45 MB) the TFLite conversion's peak is no higher than onnx2tf's.
TFLITE_HAND_OVER_MB = 64.0


def _hand_over(c: Conversion, built: BuiltSavedModel | None, size_mb: float = 0.0) -> None:
    """A spawned child drops what it no longer needs by replacing itself with a fresh interpreter
    (os.execv: the same pid, process group and output, so the parent's watch goes on as before)
    that resumes where it left off, from what it wrote here. After the export (`built` None):
    torch and the model (about 250 MB on ResNet-18) are then not resident under TensorFlow's peak.
    Before a large model's TFLite conversion (`built`: the SavedModel and how it was made):
    onnx2tf's leftovers are not resident under the converter's. A child forked from the preloaded
    process keeps going: its imports are shared pages."""
    import numpy as np

    work = c.artifacts / "handoff"
    work.mkdir(exist_ok=True)
    arrays = {f"input_{i}": a for i, a in enumerate(c.arrays)}
    arrays.update({f"reference_{i}": a for i, a in enumerate(c.reference)})
    arrays.update({f"onnx_{i}": a for i, a in enumerate(c.onnx_outputs)})
    arrays.update({f"tf_{i}": a for i, a in enumerate(c.tf_outputs)})
    np.savez(work / "arrays.npz", **arrays)
    np.savez(work / "sets.npz", **sets_to_arrays(_own_verify_sets(c), c.calibration_sets))
    state = {"done": {k: plain(dataclasses.asdict(v)) for k, v in c.done.items()},
             "fixes": [plain(dataclasses.asdict(f)) for f in c.fixes], "output_names": c.output_names,
             "inputs": plain([dataclasses.asdict(i) for i in c.inputs]),
             "stage_seconds": c.progress.stage_seconds, "started": c.started, "threads": c.threads,
             "memory_limit_mb": c.memory_limit_mb, "network_attempts": list(offline.attempts),
             "counts": {"input": len(c.arrays), "reference": len(c.reference), "onnx": len(c.onnx_outputs),
                        "tf": len(c.tf_outputs)},
             "calibration_note": c.calibration_note, "random_calibration": c.random_calibration,
             "steps_done": list(c.steps_done), "onnx2tf_runs": c.onnx2tf_runs,
             "graph": plain(dataclasses.asdict(c.graph)) if c.graph else None,
             "graph_fixes": [plain(dataclasses.asdict(f)) for f in c.graph_fixes],
             "built": plain(dataclasses.asdict(built)) if built else None}
    write_json_atomic(c.artifacts / HANDOFF, state)
    at = f"the TFLite conversion of its {size_mb:.0f} MB SavedModel" if built else "TensorFlow's stages, without torch"
    print(f"--- a fresh interpreter takes over for {at} (same process)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "converter.stages.pipeline", c.job_path, "--resume"])


def _hand_over_if_worth_it(c: Conversion, built: BuiltSavedModel | None) -> None:
    """After the export always; before the TFLite conversion when the SavedModel is large enough.
    A hand-over only saves memory: if its state cannot be written (a full disk) or the exec fails,
    the conversion goes on in this process, and says so in its log."""
    size_mb = _saved_model_mb(built.saved.path) if built else 0.0
    if built is not None and size_mb < TFLITE_HAND_OVER_MB:
        return
    c.progress.finish()
    try:
        _hand_over(c, built, size_mb)
    except OSError as exc:
        print(f"--- no hand-over to a fresh interpreter ({type(exc).__name__}: {exc}): going on in this process",
              file=sys.stderr)


def _own_verify_sets(c: Conversion) -> list:
    """The verification sets when they are not just the seeded sample (which travels as arrays)."""
    seeded = len(c.verify_sets) == 1 and c.verify_sets[0][0] is c.arrays
    return [] if seeded or not c.verify_sets else c.verify_sets


def _resumed(spec: ModelSpec, artifacts: Path) -> Conversion:
    import numpy as np

    state = json.loads((artifacts / HANDOFF).read_text())
    progress = Progress(artifacts / PROGRESS_FILE, peak_rss_mb)
    progress.stage_seconds = dict(state["stage_seconds"])
    if state["built"] is not None:
        progress.start(Stage.TFLITE.value)  # reading the state back is the TFLite stage's cost, like the import
    work = artifacts / "handoff"
    with np.load(work / "sets.npz") as data:
        verify_sets, calibration_sets = sets_from_arrays(data)
    with np.load(work / "arrays.npz") as data:
        arrays = {k: [data[f"{k}_{i}"] for i in range(n)] for k, n in state["counts"].items()}
    offline.attempts.extend(state["network_attempts"])
    types = {"load": LoadResult, "export": ExportResult}
    return Conversion(
        spec, artifacts, state["threads"], progress, memory_limit_mb=state["memory_limit_mb"], started=state["started"],
        done={k: build(types[k], v) for k, v in state["done"].items()},
        fixes=[build(Fix, f) for f in state["fixes"]], output_names=state["output_names"],
        inputs=tuple(build(InputSpec, i) for i in state["inputs"]),
        arrays=arrays["input"], reference=arrays["reference"], onnx_outputs=arrays["onnx"], tf_outputs=arrays["tf"],
        calibration_note=state["calibration_note"], random_calibration=state["random_calibration"],
        verify_sets=verify_sets, calibration_sets=calibration_sets, steps_done=tuple(state["steps_done"]),
        onnx2tf_runs=state["onnx2tf_runs"], graph=build(GraphResult, state["graph"]),
        graph_fixes=tuple(build(Fix, f) for f in state["graph_fixes"]),
        built=build(BuiltSavedModel, state["built"]))


def _saved_model_mb(path: str) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def main(job_path: str, parent: int | None = None, *, spawned: bool = False, resume: bool = False) -> int:
    """`parent`: the process that started this one, when it is not the first guardian (the
    preloaded process that forked it, see forkserver.py). `spawned`: started from nothing, so it
    hands over to a fresh interpreter after the export, and a large model's before its TFLite
    conversion."""
    job = Job.read(Path(job_path))
    lifeline.hold(job.guardians, parent)
    offline.install()
    artifacts = Path(job.artifacts_dir)
    # TensorFlow's autograph leaves a __autograph_generated_file*.py per function in the temp folder:
    # this conversion's own, removed with the rest of its scratch files
    scratch = artifacts / "tmp"
    scratch.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = str(scratch)
    spec = ModelSpec.from_dict(job.spec)
    resumed = None
    if resume:
        resumed = _resumed(spec, artifacts)
    hand_over = None
    if spawned:
        def hand_over(c: Conversion, built: BuiltSavedModel | None) -> None:
            c.job_path = str(job_path)
            _hand_over_if_worth_it(c, built)
    result = convert(spec, artifacts, job.threads, memory_limit_mb=job.memory_limit_mb, hand_over=hand_over,
                     resumed=resumed, diagnosis_share=job.diagnosis_share, fail_on_vacuous=job.fail_on_vacuous)
    result.write(artifacts / RESULT_FILE)
    (artifacts / PROGRESS_FILE).unlink(missing_ok=True)
    (artifacts / HANDOFF).unlink(missing_ok=True)
    shutil.rmtree(artifacts / "handoff", ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    status = main(sys.argv[1], spawned=True, resume="--resume" in sys.argv[2:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # skip TensorFlow's interpreter teardown: the result is written, nothing is left to do
