"""The explain step (child side): a verdict that fails the model on wrong numbers is explained before
it is reported: where the float32 conversion departs (diagnose.py), or, when a TFLite file misses
and onnx2tf's TF model matched PyTorch, whether the file's quantization or the TFLite converter is
to blame (the float32 TFLite file tells; built now when it was not asked for).
"""
from __future__ import annotations

import dataclasses
import sys
import traceback

from ..diagnosis_run import FOLDER, budget, prepare
from ..recipes import RECIPES
from ..results import Divergence
from .checkpoint import Checkpoint, Context
from .memory import release_memory, rss_now_mb


def explain(ctx: Context, cp: Checkpoint) -> Checkpoint:
    """The checkpoint with its problem's message explained, and the divergence found."""
    problem = cp.problem
    if problem is None or not problem.explain:
        return cp
    divergence, explained = None, None
    if problem.explain == "tf":  # onnx2tf's TF model is wrong in every mode tried
        divergence = diagnose(ctx, cp, cp.savedmodel)
    elif problem.explain == "onnx":  # the ONNX file itself is off: the model's own float32 precision, or the export
        divergence = diagnose(ctx, cp, cp.savedmodel, steps=("precision",), outputs=cp.export.outputs)
    else:
        divergence, explained = _explain_tflite(ctx, cp, problem.recipe)
    explained = explained or (divergence.describe() if divergence else None)
    message = f"{problem.message}; {explained}" if explained else problem.message
    return dataclasses.replace(cp, divergence=divergence, problem=dataclasses.replace(problem, message=message, explain=""))


def _explain_tflite(ctx: Context, cp: Checkpoint, recipe: str) -> tuple[Divergence | None, str]:
    """The TF model matched PyTorch and the `recipe` file did not: its quantization, or the TFLite
    converter? If the float32 file is wrong too, the TFLite op where it departs is found."""
    from .repair import float32_file

    cp, fp32 = float32_file(ctx, cp)
    if fp32.passed:  # the verdict was on a quantized file (a float32 one that passes raises no problem)
        missed = next((d for d in cp.deliverables if d.recipe == recipe), None)
        repair = missed.repair if missed is not None and missed.repair is not None else None
        return None, (f"the float32 TFLite file matches PyTorch (range-relative {fp32.worst.range_rel_err:.3g}): the "
                      f"error is {RECIPES[recipe].title}'s quantization, not the conversion"
                      + (f"; not repaired: {repair.note}" if repair is not None and repair.note else ""))
    divergence = diagnose(ctx, cp, cp.savedmodel, fp32_tflite=fp32.path)
    return divergence, divergence.describe() if divergence else "the float32 TFLite file differs from PyTorch too"


def diagnose(ctx: Context, cp: Checkpoint, saved, fp32_tflite: str | None = None, steps=("precision", "convert"),
             outputs=None) -> Divergence | None:
    """Where the float32 conversion departs, within its share of the timeout and memory ceiling:
    the model's own float32 precision first, then onnx2tf's TF model against ONNX node by node, or
    (with `fp32_tflite`, the TF model being right) the float32 TFLite file against the TF model."""
    from .diagnose import DiagnosisJob, run_bounded
    from .savedmodel import kept_layout_inputs

    export, spec = cp.export, ctx.spec
    outputs = saved.outputs if outputs is None else outputs
    failing = [x for x in outputs if not x.passed] or list(outputs)
    tolerance = min(x.tolerance for x in failing) if failing else spec.tolerance["fp32"]
    own = rss_now_mb()
    job = DiagnosisJob(
        onnx_path=saved.onnx_path or export.onnx_path, saved_model=saved.path, tflite_fp32=fp32_tflite or "",
        input_names=cp.input_names, input_keys=[k for _, k in saved.input_names],
        input_perms=[list(p) for p in saved.input_perms], output_keys=[k for _, k in saved.output_names],
        output_perms=[list(p) for p in saved.output_perms],
        keep=kept_layout_inputs(spec, cp.input_names, export.input_shapes), pseudo_ops=list(saved.pseudo_ops),
        mode=saved.onnx2tf_mode, tolerance=tolerance, work_dir=str(ctx.artifacts / FOLDER), spec=spec.to_dict(),
        steps=tuple(steps), observed=max((x.range_rel_err for x in failing), default=0.0))
    release_memory()
    try:
        if ctx.diagnose_later:  # engine auto: litert may deliver the model yet, and then nobody reads this
            prepare(job, cp.samples.inputs, cp.samples.reference)
            print(f"--- the diagnosis is left for later: it runs if the litert engine fails too ({job.work_dir})")
            return None
        return run_bounded(job, cp.samples.inputs, cp.samples.reference, threads=ctx.threads,
                           **budget(ctx.diagnosis_share, spec.timeout, ctx.seconds_left, ctx.memory_limit_mb, own))
    except Exception:  # a diagnosis that fails must not hide the failure it was asked to explain
        print("--- the diagnosis failed:", file=sys.stderr)
        traceback.print_exc()
        return None
