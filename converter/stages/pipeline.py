"""The conversion of one model, run inside the isolated child: `python -m converter.stages.pipeline JOB.json`.

A table of steps (STEPS): each row names its step, the progress stage it notes, the engine it
belongs to (None: every engine's), and whether a hand-over to a fresh interpreter may come before
it. One loop runs the rows over a typed, frozen checkpoint (checkpoint.py): each step takes what it
needs from the context and the checkpoint and returns a new checkpoint. Before each step the child
notes its stage in progress.json, so the parent can say where a killed child was. A step that
reaches a verdict failing the model records it as the checkpoint's problem; only the rows that
explain a problem run after it. Any exception is the model's failure, classified in one place.
"""
from __future__ import annotations

import dataclasses
import io
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
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
    strip_ansi,
)
from ..protocol import PROGRESS_FILE, RESULT_FILE, SAMPLES_FILE, Job, Progress, SampleArrays
from ..recipes import calibrated
from ..results import LoadResult, Result
from ..spec import ModelSpec, SpecError
from . import explain, handover, litert_steps, offline, onnx2tf_steps, repair
from .checkpoint import Checkpoint, Context, Problem
from .fixes import flatten_fix
from .memory import peak_rss_mb, release_memory


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
        return Failure(FailureKind.OUT_OF_MEMORY, stage, normalise_message(f"{first_line(exc)}; {MEMORY_ADVICE}"))
    if is_disk_full(exc):
        return Failure(FailureKind.DISK_FULL, stage, normalise_message(disk_full_message(exc, stage)))
    return Failure(Stage(stage).default_kind, stage, normalise_message(first_line(exc)))


def read(ctx: Context, cp: Checkpoint) -> Checkpoint:
    """The model's bytes, read once, and their digest: known before loading them can fail (a refused
    pickle is cached under them too)."""
    import hashlib

    from .load import read_model_file

    data = read_model_file(Path(ctx.spec.path), ctx.memory_limit_mb * 2**20)
    return dataclasses.replace(cp, model_sha256=hashlib.sha256(data).hexdigest(), model_bytes=[data])


def load(ctx: Context, cp: Checkpoint) -> Checkpoint:
    """The model, its seeded sample inputs and PyTorch's outputs on them, what the check proves little
    of, and the samples the int8 recipes are calibrated and the files verified on."""
    from .load import caveats, load_model, make_inputs, run_torch

    set_threads(ctx.threads)
    t0 = time.perf_counter()
    spec = ctx.spec
    loaded = load_model(spec, data=cp.model_bytes.pop(), digest=cp.model_sha256)
    arrays = make_inputs(loaded.inputs, spec.seed)
    reference, structure = run_torch(loaded, arrays)
    names = _output_names(spec, structure.names)
    found = caveats(loaded, reference, names, spec.seed)
    flatten = structure.needs_flattening and spec.auto_fixes
    seeded = SampleArrays(inputs=tuple(arrays), reference=tuple(reference))
    cp = dataclasses.replace(cp, loaded=loaded, inputs=loaded.inputs, output_names=tuple(names), flatten=flatten,
                             load=_load_result(loaded, time.perf_counter() - t0, found), samples=seeded)
    if flatten:
        cp = cp.with_fixes(flatten_fix(structure.kind, tuple(names)))
    if found and ctx.fail_on_vacuous:  # before the calibration samples: nothing else is worth reading
        return dataclasses.replace(cp, problem=Problem(FailureKind.VACUOUS_CHECK,
                                                       found[0].describe() + " (--tflite-fail-on-vacuous)"))
    return dataclasses.replace(cp, **_samples(spec, loaded, seeded, run_torch))


def _load_result(loaded, seconds: float, found) -> LoadResult:
    return LoadResult(loaded.format, seconds, tuple(i.name for i in loaded.inputs),
                      tuple(tuple(i.shape) for i in loaded.inputs), found, loaded.sha256)


def _samples(spec: ModelSpec, loaded, seeded: SampleArrays, run_torch) -> dict:
    """The samples the TFLite files are verified on (the calibration folder's held-out samples, else
    `verify_samples` seeded inputs, the first the seeded sample), the int8 recipes' calibration
    samples, and what they are (calibration.py)."""
    from . import calibration

    def with_references(inputs) -> tuple:
        return tuple((tuple(a), tuple(run_torch(loaded, a)[0])) for a in inputs)

    if spec.calibration:
        sets, held_out, note = calibration.from_folder(spec.calibration, loaded.inputs)
        return {"samples": dataclasses.replace(seeded, verify_sets=with_references(held_out),
                                               calibration_sets=tuple(map(tuple, sets))),
                "calibration_note": note}
    more = with_references(calibration.verification(loaded.inputs, spec.seed, spec.verify_samples - 1))
    seeded = dataclasses.replace(seeded, verify_sets=((seeded.inputs, seeded.reference),) + more if more else ())
    if calibrated(spec.deliverables):
        sets, note = calibration.generated(loaded.inputs, spec.seed, spec.calibration_samples)
        return {"samples": dataclasses.replace(seeded, calibration_sets=tuple(map(tuple, sets))),
                "calibration_note": note, "random_calibration": True}
    return {"samples": seeded}


def export(ctx: Context, cp: Checkpoint) -> Checkpoint:
    from .export import export_onnx

    onnx_outputs: list = []
    result = export_onnx(ctx.spec, cp.loaded, list(cp.samples.inputs), list(cp.samples.reference),
                         ctx.artifacts / "model.onnx", list(cp.output_names), ctx.threads, flatten=cp.flatten,
                         outputs=onnx_outputs)
    # nothing after this needs the PyTorch model: its weights would count in TFLite's peak
    cp = dataclasses.replace(cp, export=result, loaded=None, samples=dataclasses.replace(cp.samples, onnx=tuple(onnx_outputs)))
    release_memory()
    return cp.with_fixes(*result.fixes)


def verify(ctx: Context, cp: Checkpoint) -> Checkpoint:
    """Every TFLite file on the verification samples and where it runs."""
    from .verify import verify as verify_files

    release_memory()  # what the TFLite converter left, before the runtime-check process starts beside this one
    result, files = verify_files(ctx.spec, cp.samples.sets, cp.signature, cp.deliverables, ctx.threads)
    return dataclasses.replace(cp, verify=result, deliverables=files)


def verdict(ctx: Context, cp: Checkpoint) -> Checkpoint:
    """The recipe delivered (the first requested whose file passes), or the problem that fails the model."""
    from ..verdict import repair_fixes
    from .verify import verdict as take_verdict

    problem, chosen, fixes = take_verdict(cp.export, cp.savedmodel, cp.verify, cp.deliverables, cp.tflite,
                                          ctx.spec.deliverables, ctx.spec.allow_flex)
    cp = dataclasses.replace(cp, delivered=chosen.recipe if problem is None else None)
    if problem is None:
        return cp.with_fixes(*fixes, *repair_fixes(chosen))
    explain_by = ""
    if problem.kind is FailureKind.NUMERIC_MISMATCH and cp.export is not None:  # the explanations are onnx2tf's
        explain_by = "tflite" if all(x.passed for x in cp.export.outputs) else "onnx"
    return dataclasses.replace(cp, problem=Problem(problem.kind, problem.message, explain_by,
                                                   chosen.recipe if chosen is not None else None))


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Context, Checkpoint], Checkpoint]
    stage: Stage | None  # noted in progress.json before it runs (None: it notes its own stages)
    engine: str | None = None  # None: every engine's
    hand_over_before: bool = False  # a spawned child may hand over to a fresh interpreter before it
    after_problem: bool = False  # it runs when an earlier step failed the model (to explain why)


# The pipeline, in order. onnx2tf's rows run the mode ladder and the Flex pass (onnx2tf_steps.py);
# its TFLite stage is noted by the ladder itself, which may go back to savedmodel for another mode.
# litert's row converts the PyTorch model itself (litert_steps.py), in the litert-torch environment.
STEPS = (
    Step("read", read, Stage.LOAD),
    Step("load", load, Stage.LOAD),
    Step("export", export, Stage.EXPORT, engine="onnx2tf"),
    Step("prepare", onnx2tf_steps.prepare, Stage.SAVEDMODEL, engine="onnx2tf", hand_over_before=True),
    Step("onnx2tf", onnx2tf_steps.convert, None, engine="onnx2tf"),
    Step("litert", litert_steps.convert, Stage.TFLITE, engine="litert"),
    Step("verify", verify, Stage.VERIFY),
    Step("repair", repair.repair, None, engine="onnx2tf"),
    Step("verdict", verdict, None),
    Step("explain", explain.explain, None, after_problem=True),
)
# ENGINES (spec.py, where sidecars and settings read it): the conversion routes the table has rows for


def run_steps(ctx: Context, cp: Checkpoint, steps=STEPS) -> tuple[Checkpoint, Failure | None]:
    """Every row of the context's engine (and of every engine) not done yet; the last checkpoint, and the
    model's failure (None: it passed)."""
    ran_here = False  # a fresh interpreter has nothing to drop: it never hands over before its first step
    try:
        for step in steps:
            if step.name in cp.steps_done or step.engine not in (None, ctx.engine) or (cp.problem and not step.after_problem):
                continue
            if step.hand_over_before and ran_here and ctx.hand_over is not None:
                ctx.hand_over(ctx, cp, step.name)
            if step.stage is not None:
                ctx.progress.start(step.stage.value)
            cp = dataclasses.replace(step.run(ctx, cp), steps_done=cp.steps_done + (step.name,))
            ran_here = True
    except BaseException as exc:  # SystemExit from a library included: it is this model's failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        return cp, classify(exc, ctx.progress.stage or Stage.LOAD.value)
    if cp.problem is not None:
        return cp, Failure(cp.problem.kind, ctx.progress.stage or Stage.LOAD.value, normalise_message(cp.problem.message))
    return cp, None


def convert(job: Job, *, hand_over: Callable | None = None,
            resumed: tuple[Checkpoint, Progress, float] | None = None) -> Result:
    """Run every step; never raises for a model's own problems, returns a Result. `hand_over`: see
    handover.py; `resumed`: what the interpreter this one replaced left (handover.resume)."""
    artifacts = Path(job.artifacts_dir)
    cp, progress, started = resumed or (Checkpoint(), Progress(artifacts / PROGRESS_FILE, peak_rss_mb), time.monotonic())
    ctx = Context.of(job, progress, started, hand_over)
    spec, engine = ctx.spec, ctx.engine
    cp, failure = run_steps(ctx, cp)
    progress.finish()
    _write_samples(cp, artifacts)
    # the deliverable is the parent's to copy: only a run that is still alive delivers
    return Result(
        model_id=spec.model_id, model_path=spec.path, status="failed" if failure else "passed", failure=failure,
        load=cp.load, export=cp.export, savedmodel=cp.savedmodel, tflite=cp.tflite, verify=cp.verify,
        deliverables=cp.deliverables, requested=spec.deliverables, delivered=None if failure else cp.delivered,
        fixes=cp.fixes, divergence=cp.divergence, stage_seconds=dict(progress.stage_seconds),
        seconds=round(time.monotonic() - started, 3), peak_rss_mb=round(peak_rss_mb(), 1),
        network_attempts=tuple(offline.attempts), onnx2tf_runs=cp.onnx2tf_runs, versions=tool_versions(),
        model_sha256=cp.model_sha256, engine=engine, litert=cp.litert)


def _write_samples(cp: Checkpoint, artifacts: Path) -> None:
    """What the cache proves a restored entry with: the sample inputs, PyTorch's outputs, and
    onnxruntime's and the TF model's (in PyTorch's layout), as far as the conversion got; and the
    held-out samples the files were verified on (the calibration samples are not needed)."""
    if not cp.samples.inputs or not cp.samples.reference:
        return
    try:
        dataclasses.replace(cp.samples, calibration_sets=()).save(artifacts / SAMPLES_FILE)
    except OSError:  # a full disk costs the cache its proof, not the model its result
        (artifacts / SAMPLES_FILE).unlink(missing_ok=True)


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


class PlainText(io.TextIOBase):
    """convert.log as text: what the libraries print reaches it without terminal colour codes."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(strip_ansi(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return self.stream.encoding

    def __getattr__(self, name):  # buffer, errors, ...: the stream's own
        return getattr(self.stream, name)


def main(job_path: str, parent: int | None = None, *, spawned: bool = False, resume: bool = False) -> int:
    """`parent`: the process that started this one, when it is not the first guardian (the
    preloaded process that forked it, see forkserver.py). `spawned`: started from nothing, so it
    hands over to a fresh interpreter after the export, and a large model's before its TFLite
    conversion (handover.py)."""
    job = Job.read(Path(job_path))
    if not isinstance(sys.stdout, PlainText):
        sys.stdout, sys.stderr = PlainText(sys.stdout), PlainText(sys.stderr)
    lifeline.hold(job.guardians, parent)
    offline.install()
    artifacts = Path(job.artifacts_dir)
    # TensorFlow's autograph leaves a __autograph_generated_file*.py per function in the temp folder:
    # this conversion's own, removed with the rest of its scratch files
    scratch = artifacts / "tmp"
    scratch.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = str(scratch)
    # a hand-over comes only before the rows that allow one (hand_over_before): litert's have none
    result = convert(job, hand_over=handover.hand_over(str(job_path)) if spawned else None,
                     resumed=handover.resume(artifacts) if resume else None)
    result.write(artifacts / RESULT_FILE)
    (artifacts / PROGRESS_FILE).unlink(missing_ok=True)
    handover.clean(artifacts)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


def spawned_main() -> None:
    """`python -m converter.stages.pipeline JOB.json [--resume]`, or an engine's own interpreter's
    bootstrap (isolation.engine_command), with the job's path as the first argument."""
    status = main(sys.argv[1], spawned=True, resume="--resume" in sys.argv[2:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # skip TensorFlow's interpreter teardown: the result is written, nothing is left to do


if __name__ == "__main__":
    spawned_main()
