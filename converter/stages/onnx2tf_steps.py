"""The onnx2tf engine's steps (child side): the exported graph prepared for onnx2tf, then onnx2tf in
the cheapest mode that converts the model right, its TF model checked against PyTorch at once, then
a TFLite file per recipe.

Two bounded loops, each returning values, never results riding on exceptions:
- the mode ladder (`ladder`): simplified -> strict -> defaults, one attempt a mode, each an
  `Attempt` (mode, outcome, what it saved), recorded in the checkpoint;
- the Flex pass (`flex_pass`): ops TFLite builtins lack are replaced in onnx2tf's first run (read
  from the ONNX graph: a second run costs minutes on a large model), and if the TFLite converter
  still names some (its report is the authority, the graph read a shortcut), in one more run per
  op it names, so at most one pass per known replacement.
"""
from __future__ import annotations

import dataclasses
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..failures import ConversionError, FailureKind, Stage
from ..recipes import calibrated
from ..results import Deliverable, Fix, TFLiteResult
from .checkpoint import Attempt, BuiltSavedModel, Checkpoint, Context, Problem
from .fixes import PSEUDO_OPS, onnx2tf_mode_fix, pseudo_ops_for_flex, pseudo_ops_for_graph
from .memory import release_memory
from .savedmodel import PREPARED_MODES

PREPARED_ONNX = "model_prepared.onnx"  # the exported graph, simplified and rewritten for onnx2tf
NEXT_MODE = {"simplified": "strict", "strict": "defaults"}


def prepare(ctx: Context, cp: Checkpoint) -> Checkpoint:
    """Once, before onnx2tf's first run: the graph simplified and rewritten (graph.py), checked
    against PyTorch like the exported one; a prepared graph that does not match is not used. A
    graph that needs onnx2tf's accuracy search gets strict mode from the first run (a fix)."""
    from ..metrics import compare
    from .graph import prepare as prepare_graph
    from .graph import run_onnxruntime

    if not ctx.spec.auto_fixes:
        return cp  # no fixes: onnx2tf as it comes, on the exported graph
    path = ctx.artifacts / PREPARED_ONNX
    graph, fixes = prepare_graph(Path(cp.export.onnx_path), path, integer=calibrated(ctx.spec.deliverables))
    _, outputs = run_onnxruntime(path, cp.input_names, cp.samples.inputs, ctx.threads)
    bad = [x for x in (compare(n, r, o, ctx.spec.tolerance_for("onnx", n))
                       for n, r, o in zip(cp.output_names, cp.samples.reference, outputs)) if not x.passed]
    if bad:
        print(f"--- the prepared graph differs from PyTorch ({bad[0].describe('prepared ONNX')}): onnx2tf converts "
              "the exported one", file=sys.stderr)
        return cp
    release_memory()
    cp = dataclasses.replace(cp, graph=graph, graph_fixes=tuple(fixes))
    if graph.strict_reason:
        cp = cp.with_fixes(Fix("onnx2tf_mode", "strict", f"chosen before the first run: {graph.strict_reason}"))
    return cp


def first_mode(cp: Checkpoint) -> str:
    if cp.built is not None:
        return cp.built.mode  # resumed before its TFLite conversion
    if cp.graph is None:
        return "defaults"
    return "strict" if cp.graph.strict_reason else "simplified"


def worth_another(attempt: Attempt) -> bool:
    """A failed attempt a later mode may mend: a kind a cheaper mode can cause, and modes left (the
    last, `defaults`, only changes what fails when the numbers are wrong)."""
    if attempt.converted or attempt.mode not in NEXT_MODE or not attempt.kind.retried:
        return False
    return not (attempt.kind.wrong_numbers and attempt.mode == "strict")


def ladder(first: str, attempt: Callable[[str, tuple[Attempt, ...]], Attempt], *, retry: bool) -> tuple[Attempt, ...]:
    """onnx2tf's modes from `first` on until one converts: at most one attempt a mode (NEXT_MODE has
    no cycle). `attempt(mode, earlier attempts)`."""
    attempts = (attempt(first, ()),)
    while retry and worth_another(attempts[-1]):
        print(f"--- onnx2tf's {attempts[-1].mode} mode: {attempts[-1].kind.value} in {attempts[-1].stage}: "
              f"{attempts[-1].message}", file=sys.stderr)  # the first attempt's reason stays in the log
        release_memory()
        attempts += (attempt(NEXT_MODE[attempts[-1].mode], attempts),)
    return attempts


def mode_fixes(attempts: tuple[Attempt, ...]) -> tuple[Fix, ...]:
    """Each change of mode that led to the one that converted, the latest first."""
    def reason(a: Attempt) -> str:
        if a.kind.wrong_numbers:
            return "the float32 outputs of its TF model differed from ONNX's"
        return f"{a.stage} failed: {a.message.split(';')[0][:200]}"
    return tuple(onnx2tf_mode_fix(b.mode, a.mode, reason(a)) for a, b in reversed(list(zip(attempts, attempts[1:]))))


def failure_of(attempts: tuple[Attempt, ...]) -> Attempt:
    """What fails the model when no mode converted it: the last attempt's error, except that wrong
    numbers in an earlier mode stay the model's failure, saying what the next mode did."""
    final = attempts[-1]
    for earlier, later in reversed(list(zip(attempts, attempts[1:]))):
        if earlier.kind.wrong_numbers:
            also = "also" if final.kind.wrong_numbers else f"and it failed: {final.message.split(';')[0][:120]}"
            checked = final if final.saved is not None else earlier  # its TF model and that model's outputs
            final = dataclasses.replace(earlier, message=f"{earlier.message} ({also} in onnx2tf's {later.mode} mode)",
                                        saved=checked.saved, tf_outputs=checked.tf_outputs)
    return final


@dataclass(frozen=True)
class Converted:
    """What a Flex pass ends with when the TFLite converter took the SavedModel."""

    built: BuiltSavedModel
    tflite: TFLiteResult
    files: tuple[Deliverable, ...]
    fixes: tuple[Fix, ...]  # the pseudo-op fixes it took


def flex_pass(first: BuiltSavedModel | None, build: Callable[[tuple[Fix, ...]], BuiltSavedModel | Attempt],
              tflite: Callable[[BuiltSavedModel], tuple[TFLiteResult, tuple[Deliverable, ...]]], *,
              fixes: tuple[Fix, ...], auto: bool) -> Converted | Attempt:
    """Build (unless `first` is built already) and convert to TFLite; where the converter needs Flex
    for ops onnx2tf can replace, build again with them replaced. `build(fixes)`: a SavedModel with
    those pseudo ops, or the failed Attempt its check gave; `tflite` raises ConversionError."""
    built = first
    for _ in range(len(PSEUDO_OPS) + 1):  # every pass replaces at least one more op
        if built is None:
            found = build(fixes)
            if isinstance(found, Attempt):
                return found
            built = found
        try:
            converted, files = tflite(built)
        except ConversionError as exc:
            more = pseudo_ops_for_flex(exc.ops, built.pseudo_ops) if auto and exc.kind is FailureKind.FLEX_OPS else ()
            if not more:
                raise
            fixes, built = fixes + more, None
            continue
        return Converted(built, converted, files, fixes)
    raise ConversionError(FailureKind.FLEX_OPS, "the TFLite converter kept naming ops to replace")


def convert(ctx: Context, cp: Checkpoint) -> Checkpoint:
    """The ladder of onnx2tf modes; the checkpoint of the attempt that converted, or one holding the
    problem (wrong numbers are diagnosed by the explain step)."""
    attempts = ladder(first_mode(cp), lambda mode, earlier: _attempt(ctx, cp, mode, earlier), retry=ctx.spec.auto_fixes)
    runs = cp.onnx2tf_runs + sum(a.runs for a in attempts)
    records = cp.attempts + tuple(dataclasses.replace(a, tf_outputs=(), result=None) for a in attempts)
    tf_outputs = next((a.tf_outputs for a in reversed(attempts) if a.tf_outputs), cp.samples.tf)
    cp = dataclasses.replace(cp, built=None, attempts=records, onnx2tf_runs=runs,
                             samples=dataclasses.replace(cp.samples, tf=tf_outputs))
    last = attempts[-1]
    if not last.converted:
        failed = failure_of(attempts)
        numbers = failed.kind is FailureKind.NUMERIC_MISMATCH and failed.saved is not None
        if numbers:  # the TF model diagnosed and cached is the one whose outputs are kept beside it
            cp = dataclasses.replace(cp, savedmodel=failed.saved, samples=dataclasses.replace(cp.samples, tf=failed.tf_outputs))
        return dataclasses.replace(cp, problem=Problem(failed.kind, failed.message, "tf" if numbers else ""))
    done: Converted = last.result
    prepared = last.mode in PREPARED_MODES
    saved = dataclasses.replace(done.built.saved, graph=cp.graph if prepared else None)
    cp = dataclasses.replace(cp, savedmodel=saved, tflite=done.tflite, deliverables=done.files)
    return cp.with_fixes(*(cp.graph_fixes if prepared else ()), *done.fixes, *mode_fixes(attempts))


def _attempt(ctx: Context, cp: Checkpoint, mode: str, earlier: tuple[Attempt, ...]) -> Attempt:
    """onnx2tf in one mode, checked, then TFLite (with the Flex pass). A SavedModel built by this
    interpreter's predecessor (cp.built) is where the first attempt starts."""
    import numpy as np

    from .savedmodel import to_savedmodel
    from .verify import check_tf

    spec, done_before = ctx.spec, cp.onnx2tf_runs + sum(a.runs for a in earlier)
    onnx_path = ctx.artifacts / PREPARED_ONNX if mode in PREPARED_MODES else Path(cp.export.onnx_path)
    auto = spec.auto_fixes and not spec.allow_flex
    first = None if earlier else cp.built
    graph_fixes = () if first else (pseudo_ops_for_graph(onnx_path, tuple(spec.pseudo_ops)) if auto else ())
    runs, tf_outputs = 0, ()

    def build(fixes: tuple[Fix, ...]) -> BuiltSavedModel | Attempt:
        nonlocal runs, tf_outputs
        pseudo = tuple(spec.pseudo_ops) + tuple(dict.fromkeys(f.detail for f in fixes if f.detail not in spec.pseudo_ops))
        ctx.progress.start(Stage.SAVEDMODEL.value)
        runs += 1
        saved, outputs = to_savedmodel(spec, onnx_path, cp.input_names, cp.export.input_shapes, cp.output_names,
                                       ctx.artifacts, pseudo_ops=pseudo, mode=mode, arrays=cp.samples.inputs)
        release_memory()  # onnx2tf's graph and the Keras model, before TFLite's own copies
        saved, problem = check_tf(spec, cp.samples.reference, saved, outputs, cp.export)
        tf_outputs = tuple(np.transpose(o, np.argsort(p)) for o, p in zip(outputs, saved.output_perms))
        if problem is not None:
            return Attempt(mode, runs, problem.kind, Stage.SAVEDMODEL.value, problem.message, saved, tf_outputs)
        built = BuiltSavedModel(mode, saved, pseudo, fixes)
        if ctx.hand_over is not None and done_before + runs == 1:  # a retry stays in this process
            samples = dataclasses.replace(cp.samples, tf=tf_outputs)
            ctx.hand_over(ctx, dataclasses.replace(cp, built=built, onnx2tf_runs=1, samples=samples), "tflite")
        return built

    try:
        outcome = flex_pass(first, build, lambda built: _tflite(ctx, cp, built), auto=auto,
                            fixes=first.pseudo_fixes if first else graph_fixes)
    except ConversionError as exc:
        traceback.print_exc()
        return Attempt(mode, runs, exc.kind, ctx.progress.stage or "", exc.message, tf_outputs=tf_outputs)
    if isinstance(outcome, Attempt):
        return outcome
    return Attempt(mode, runs, tf_outputs=tf_outputs or cp.samples.tf, result=outcome)


def _tflite(ctx: Context, cp: Checkpoint, built: BuiltSavedModel) -> tuple[TFLiteResult, tuple[Deliverable, ...]]:
    from ..tflite_run import tf_layout_feed
    from .tflite import to_tflite

    ctx.progress.start(Stage.TFLITE.value)
    feeds = [tf_layout_feed(built.saved, arrays) for arrays in cp.samples.calibration_sets]
    return to_tflite(ctx.spec, Path(built.saved.path), ctx.artifacts, feeds, cp.calibration_note, cp.random_calibration)
