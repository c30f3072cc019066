"""The verdict on a conversion's figures, both sides: the child takes it after verifying, the cache
takes it again when it restores an entry under today's tolerances. Numpy-free and import-light.
"""
from __future__ import annotations

import dataclasses

from .failures import ConversionError, Failure, FailureKind, Stage, normalise_message
from .results import Deliverable, ExportResult, Fix, Result, SavedModelResult, labelled_comparisons


def choose(requested: tuple[str, ...], deliverables) -> Deliverable | None:
    """The first requested recipe whose file verified; the first requested when none did."""
    mine = [d for r in requested for d in deliverables if d.recipe == r]
    return next((d for d in mine if d.passed), mine[0] if mine else None)


def repair_fixes(chosen: Deliverable | None) -> tuple[Fix, ...]:
    """The fix `selective:<recipe>` when the file delivered is a quantized one repaired with layers in
    float32 (stages/repair.py)."""
    if chosen is None or chosen.repair is None or not chosen.repair.passed:
        return ()
    return (Fix("selective", chosen.recipe, chosen.repair.describe(chosen.label, chosen.bytes)),)


def first_problem(export: ExportResult | None, saved: SavedModelResult | None, chosen: Deliverable | None, *,
                  deployable: bool, deploy_message: str, flex_ops: tuple[str, ...],
                  allow_flex: bool) -> ConversionError | None:
    """The first failed check, in a fixed order: shapes, then ONNX / TF model / the chosen recipe's
    values, then deployability."""
    labelled = labelled_comparisons(export, saved, (chosen,) if chosen else ())
    for label, comparison in labelled:
        if not comparison.shape_ok:
            return ConversionError(FailureKind.SHAPE_MISMATCH, comparison.describe(label))
    for label, comparison in labelled:
        if not comparison.passed:
            return ConversionError(FailureKind.NUMERIC_MISMATCH, comparison.brief(label))
    runtime = chosen.runtime if chosen is not None else None
    if chosen is not None and not chosen.verified and runtime is not None:  # it never ran: nothing was checked
        return ConversionError(FailureKind.TFLITE_ERROR, f"{chosen.label} {runtime.problem}")
    if runtime is not None:  # where it goes: the TFLite runtime without TensorFlow, both kernels, Micro
        flex = tuple(flex_ops) + runtime.flex_ops
        if runtime.ok or (allow_flex and flex):
            return None
        kind = FailureKind.FLEX_OPS if flex and not runtime.runs else FailureKind.TFLITE_ERROR
        return ConversionError(kind, f"{chosen.label} {runtime.problem}")
    if not deployable and not (allow_flex and flex_ops):
        kind = FailureKind.FLEX_OPS if flex_ops else FailureKind.TFLITE_ERROR
        return ConversionError(kind, f"deliverable does not run on the TFLite runtime without TensorFlow: {deploy_message}")
    return None


def fallback_fixes(requested: tuple[str, ...], deliverables, chosen: Deliverable, refused=()) -> tuple[Fix, ...]:
    """The first requested recipe passed over for the chosen one (its numbers, where it does not
    run, or a file the converter would not build): a recorded fix."""
    before = requested[:requested.index(chosen.recipe)]
    why = {r.recipe: r.describe() for r in refused if r.recipe in before}
    why.update({d.recipe: _why_not(d) for d in deliverables if d.recipe in before})
    return tuple(Fix("deliverable", chosen.recipe, why[r]) for r in before if r in why)[:1]


def _why_not(d: Deliverable) -> str:
    """Why a recipe was passed over: its numbers, or where it does not run."""
    if not d.verified and d.runtime is not None:
        return f"{d.label} {d.runtime.problem}"
    if d.numbers_pass and d.runtime is not None and d.runtime.problem:
        return f"{d.label} {d.runtime.problem}"
    failing = next((c for c in d.outputs if not c.passed), d.worst)
    if failing.task is not None:
        return f"{d.label} output '{failing.name}' judged by its task, {failing.task.describe()} {failing.over}"
    return (f"{d.label} output '{failing.name}' missed its tolerance (range-relative max error "
            f"{failing.range_rel_err:.3g} > {failing.tolerance:g}, {failing.mismatched}/{failing.elements} elements "
            f"off {failing.over})")


def judge(result: Result, spec) -> Result:
    """A record's verdict taken again from its comparisons (their tolerances today's): what the
    cache restores. Only a verdict on figures changes; a failure of another kind stays as it was."""
    if result.failure is not None and not result.failure.kind.rejudged:
        return result
    chosen = choose(spec.deliverables, result.deliverables)
    verify = result.verify
    problem = first_problem(result.export, result.savedmodel, chosen,
                            deployable=verify.deployable if verify else False,
                            deploy_message=verify.deploy_message if verify else "not verified",
                            flex_ops=result.tflite.flex_ops if result.tflite else (), allow_flex=spec.allow_flex)
    fixes = tuple(f for f in result.fixes if f.name not in ("deliverable", "selective"))  # taken again below
    if problem is None:
        refused = result.tflite.refused if result.tflite else ()
        return dataclasses.replace(result, status="passed", failure=None, delivered=chosen.recipe,
                                   fixes=fixes + fallback_fixes(spec.deliverables, result.deliverables, chosen, refused)
                                   + repair_fixes(chosen))
    if result.failure is not None and result.failure.message.startswith(normalise_message(problem.message)):
        return result  # the same failure: its message keeps what the retries and the diagnosis found then
    stage = Stage.VERIFY if chosen is not None and not chosen.passed else Stage.SAVEDMODEL
    return dataclasses.replace(result, status="failed", delivered=None, fixes=fixes,
                               failure=Failure(problem.kind, stage, normalise_message(
                                   f"{problem.message} (judged again from the cache; --tflite-no-cache converts and "
                                   "diagnoses it)")))
