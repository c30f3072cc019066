"""Numeric comparison of one output against its PyTorch reference (numpy only).

Elementwise relative error is meaningless for quantized models (near-zero outputs), so
the gate is the maximum absolute error relative to the reference's output range.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .checks import OutputComparison

_TINY = 1e-12


def judge_outputs(spec, recipe: str, names, reference, candidates, samples: int) -> tuple[OutputComparison, ...]:
    """A recipe's file judged against PyTorch, output by output, over `samples` verification inputs
    stacked along the batch axis: the one verdict on a file, wherever it is taken (the verification,
    the reference kernels, a cache restore; a repair step asks it the same). A quantized recipe's
    output that declares a task is judged by the task, its tensor figures beside; an undeclared one
    by the tensor check with the recipe's outlier allowance, over the whole tensor and, from rank 3
    on, channel by channel along axis 1 (a detector's scores beside its boxes); one declared
    `regression` over the whole tensor only; a float32 file by the strict tensor check."""
    from .failures import ConversionError, FailureKind
    from .recipes import RECIPES

    unknown = sorted(set(spec.outputs) - set(names))
    if unknown:  # the sidecar's mistake, told before anything is judged
        raise ConversionError(FailureKind.SPEC_ERROR, f"[outputs.{unknown[0]}] names no output of the model (its "
                                                      f"outputs: {', '.join(names)})")
    quantized = RECIPES[recipe].quantized_dtype is not None
    return tuple(compare(name, ref, out, spec.tolerance_for(recipe, name), channel_axis=spec.channel_axis.get(name),
                         samples=samples, task=spec.task_for(name) if quantized else None,
                         outlier_share=RECIPES[recipe].outliers,
                         channel_guard=quantized and (spec.task_for(name) or {}).get("task") != "regression")
                 for name, ref, out in zip(names, reference, candidates))


def _per_channel(diff: np.ndarray, ref: np.ndarray, samples: int, axis: int):
    """Each element's error against its channel's own range (per input), each channel's worst, and
    the worst channel."""
    relative = diff / _scales(ref, samples, axis)
    errors = np.moveaxis(relative, axis, 0).reshape(ref.shape[axis], -1).max(axis=1)
    return relative, errors, int(np.argmax(errors))


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float, *,
            channel_axis: int | None = None, samples: int = 1, task: dict | None = None,
            outlier_share: float = 0.0, channel_guard: bool = False) -> OutputComparison:
    """The candidate against PyTorch's output on the same inputs (`samples` verification inputs,
    stacked along the batch axis). Each element's error is relative to the range of PyTorch's output
    on its own input: a wide output on one input never hides another input's error, so more inputs
    can only find more. Where PyTorch's own output is NaN or infinite, the candidate must be the
    same there (a model of log(x) on negative inputs is converted right when it gives NaN where
    PyTorch does); a non-finite value where PyTorch's is finite (or the other way round) is an
    element off, and an infinite error.

    With `channel_axis`, each channel along that axis is judged against its own range (a
    detector's boxes span hundreds of pixels, its class scores a fraction of one: one range over
    the whole tensor hides the scores' error), and the worst channel's figures are reported."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        nan = float("nan")
        return OutputComparison(name, tuple(ref.shape), tuple(cand.shape), nan, nan, nan,
                                float("inf"), nan, None, int(ref.size), int(ref.size), tolerance, samples=samples)
    if ref.size == 0:
        return OutputComparison(name, ref.shape, cand.shape, 0.0, 0.0, 0.0, 0.0, 1.0, None, 0, 0, tolerance,
                                samples=samples)
    both = np.isfinite(ref) & np.isfinite(cand)
    alike = (np.isnan(ref) & np.isnan(cand)) | (np.isinf(ref) & (ref == cand))
    disagree = ~(both | alike)
    diff = np.where(both, np.abs(np.where(both, ref, 0.0) - np.where(both, cand, 0.0)), 0.0)
    diff = np.where(disagree, np.inf, diff)
    judged = {"samples": samples, "outliers": math.floor(outlier_share * ref.size),
              "task": _task(task, name, ref, cand, tolerance), "elements": int(ref.size), "tolerance": tolerance,
              "cosine": cosine_similarity(ref[both], cand[both]) if both.any() else (1.0 if not disagree.any() else 0.0),
              "top1_agreement": top1_agreement(ref, cand) if both.all() else None, "mean_abs_err": float(diff.mean())}
    if channel_guard and channel_axis is None and ref.ndim >= 3 and ref.shape[1] > 1:
        # one range over [N, 4 + C, A] hides a detector's scores beside its boxes: each channel along
        # axis 1 against its own range too (an int8 file sharing one grid for both detected on every anchor)
        relative, errors, worst = _per_channel(diff, ref, samples, 1)
        judged.update(channel_err=float(errors[worst]), channel_worst=worst,
                      channel_off=int((relative > tolerance).sum()))
    if channel_axis is not None:
        axis = channel_axis_of(name, _per_input_shape(ref.shape, samples), channel_axis)
        relative, errors, worst = _per_channel(diff, ref, samples, axis)
        channel = np.moveaxis(ref, axis, 0)[worst]
        return OutputComparison(
            name=name, reference_shape=tuple(ref.shape), candidate_shape=tuple(cand.shape),
            max_abs_err=float(np.moveaxis(diff, axis, 0)[worst].max()), output_range=_range(channel),
            range_rel_err=float(errors[worst]), mismatched=int((relative > tolerance).sum()),
            p99_rel_err=float(np.percentile(relative, 99, method="higher")), channel_axis=axis, worst_channel=worst,
            **judged)
    relative = diff / _scales(ref, samples)
    return OutputComparison(
        name=name,
        reference_shape=tuple(ref.shape),
        candidate_shape=tuple(cand.shape),
        max_abs_err=float(diff.max()),
        output_range=_range(ref),
        range_rel_err=float(relative.max()),
        mismatched=int((relative > tolerance).sum()),
        p99_rel_err=float(np.percentile(relative, 99, method="higher")),
        **judged,
    )


def _range(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max() - finite.min()) if finite.size else 0.0


def _per_input_shape(shape: tuple, samples: int) -> tuple:
    """An output's shape on one verification input (its batch axis unstacked)."""
    if samples > 1 and len(shape) and shape[0] % samples == 0:
        return (shape[0] // samples,) + tuple(shape[1:])
    return tuple(shape)


def _scales(ref: np.ndarray, samples: int, axis: int | None = None) -> np.ndarray:
    """What each element's error is relative to (scale_of): the range of PyTorch's output on the same
    verification input, and with `axis`, of its own channel along that axis there."""
    groups = samples if samples > 1 and ref.ndim and ref.shape[0] % samples == 0 else 1
    shaped = ref.reshape((groups, -1) + ref.shape[1:]) if ref.ndim else ref.reshape(1, 1)
    keep = {0} | ({axis + 1} if axis is not None else set())
    over = tuple(i for i in range(shaped.ndim) if i not in keep)
    finite = np.where(np.isfinite(shaped), shaped, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice (NaN where PyTorch is): its scale is 1
        spread = np.nan_to_num(np.nanmax(finite, axis=over, keepdims=True) - np.nanmin(finite, axis=over, keepdims=True))
        magnitude = np.nan_to_num(np.nanmax(np.abs(finite), axis=over, keepdims=True))
    scale = np.where(spread > _TINY, spread, np.maximum(magnitude, 1.0))
    return np.broadcast_to(scale, shaped.shape).reshape(ref.shape)


def _task(declared: dict | None, name: str, ref: np.ndarray, cand: np.ndarray, tolerance: float):
    """The declared task's verdict; a shape the task cannot read is the sidecar's mistake, in one line."""
    from .failures import ConversionError, FailureKind
    from .tasks import TaskError, judge

    if declared is None:
        return None
    try:
        return judge(declared, name, ref, cand, tolerance)
    except TaskError as exc:
        raise ConversionError(FailureKind.SPEC_ERROR, f"the task of output '{name}': {exc}") from None


def channel_axis_of(name: str, shape: tuple, axis: int) -> int:
    """The sidecar's axis on this output, counted from 0: one it does not have, or its batch axis
    (which -ndim names), is the sidecar's mistake, not an axis to wrap around to."""
    from .failures import ConversionError, FailureKind

    ndim = len(shape)
    if not -ndim <= axis < ndim or axis % ndim == 0:
        raise ConversionError(FailureKind.SPEC_ERROR,
                              f"[channel_axis] {name} = {axis} is not an axis of output '{name}' (shape "
                              f"{list(shape)}) other than its batch axis 0: use 1 to {ndim - 1}, or -1 to {1 - ndim}"
                              if ndim > 1 else f"[channel_axis] {name} = {axis}: output '{name}' (shape {list(shape)}) "
                              "has no axis besides its batch axis to judge per channel")
    return axis % ndim


def scale_of(reference: np.ndarray, output_range: float) -> float:
    """What an error is relative to: the output's range; a constant output has none, so its
    magnitude, then 1 (absolute error)."""
    return output_range if output_range > _TINY else max(float(np.abs(reference).max()), 1.0)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < _TINY and nb < _TINY:
        return 1.0
    if na < _TINY or nb < _TINY:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def top1_agreement(ref: np.ndarray, cand: np.ndarray) -> float | None:
    """Share of rows whose arg-max agrees, for outputs shaped like class scores [N, C]."""
    if ref.ndim != 2 or ref.shape[1] < 2 or not np.isfinite(cand).all():
        return None
    return float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean())
