"""Numeric comparison of one output against its PyTorch reference (numpy only).

Elementwise relative error is meaningless for quantized models (near-zero outputs), so
the gate is the maximum absolute error relative to the reference's output range.
"""
from __future__ import annotations

import numpy as np

from .results import OutputComparison

_TINY = 1e-12


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float, *,
            channel_axis: int | None = None, samples: int = 1) -> OutputComparison:
    """The candidate against PyTorch's output on the same inputs. Where PyTorch's own output is NaN
    or infinite, the candidate must be the same there (a model of log(x) on negative inputs is
    converted right when it gives NaN where PyTorch does); a non-finite value where PyTorch's is
    finite (or the other way round) is an element off, and an infinite error.

    With `channel_axis`, each channel along that axis is judged against its own range (a
    detector's boxes span hundreds of pixels, its class scores a fraction of one: one range over
    the whole tensor hides the scores' error), and the worst channel's figures are reported."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        nan = float("nan")
        return OutputComparison(name, tuple(ref.shape), tuple(cand.shape), nan, nan, nan,
                                float("inf"), nan, None, int(ref.size), int(ref.size), tolerance)
    if ref.size == 0:
        return OutputComparison(name, ref.shape, cand.shape, 0.0, 0.0, 0.0, 0.0, 1.0, None, 0, 0, tolerance)
    both = np.isfinite(ref) & np.isfinite(cand)
    alike = (np.isnan(ref) & np.isnan(cand)) | (np.isinf(ref) & (ref == cand))
    disagree = ~(both | alike)
    finite_ref = ref[np.isfinite(ref)]
    output_range = float(finite_ref.max() - finite_ref.min()) if finite_ref.size else 0.0
    scale = scale_of(finite_ref if finite_ref.size else np.zeros(1), output_range)
    diff = np.where(both, np.abs(np.where(both, ref, 0.0) - np.where(both, cand, 0.0)), 0.0)
    diff = np.where(disagree, np.inf, diff)
    if channel_axis is not None:
        return _per_channel(name, ref, cand, diff, tolerance, channel_axis_of(name, ref.shape, channel_axis), samples)
    max_abs = float(diff.max())
    return OutputComparison(
        name=name,
        reference_shape=tuple(ref.shape),
        candidate_shape=tuple(cand.shape),
        max_abs_err=max_abs,
        mean_abs_err=float(diff.mean()),
        output_range=output_range,
        range_rel_err=max_abs / scale,
        cosine=cosine_similarity(ref[both], cand[both]) if both.any() else (1.0 if not disagree.any() else 0.0),
        top1_agreement=top1_agreement(ref, cand) if both.all() else None,
        mismatched=int((diff > tolerance * scale).sum()),
        elements=int(ref.size),
        tolerance=tolerance,
        p99_rel_err=float(np.percentile(diff, 99, method="higher")) / scale,
        samples=samples,
    )


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


def _per_channel(name, ref, cand, diff, tolerance, axis, samples) -> OutputComparison:
    moved_ref, moved_diff = np.moveaxis(ref, axis, 0), np.moveaxis(diff, axis, 0)
    errors, scales = [], []
    for channel_ref, channel_diff in zip(moved_ref, moved_diff):
        finite_ref = channel_ref[np.isfinite(channel_ref)]
        channel_range = float(finite_ref.max() - finite_ref.min()) if finite_ref.size else 0.0
        scale = scale_of(finite_ref if finite_ref.size else np.zeros(1), channel_range)
        scales.append(scale)
        errors.append(float(channel_diff.max()) / scale)
    worst = int(np.argmax(errors))
    scale_per_element = np.moveaxis(np.broadcast_to(np.reshape(scales, (-1,) + (1,) * (ref.ndim - 1)),
                                                    moved_ref.shape), 0, axis)
    relative = diff / scale_per_element
    both = np.isfinite(ref) & np.isfinite(cand)
    worst_ref, worst_diff = moved_ref[worst], moved_diff[worst]
    finite = worst_ref[np.isfinite(worst_ref)]
    return OutputComparison(
        name=name, reference_shape=tuple(ref.shape), candidate_shape=tuple(cand.shape),
        max_abs_err=float(worst_diff.max()), mean_abs_err=float(diff.mean()),
        output_range=float(finite.max() - finite.min()) if finite.size else 0.0,
        range_rel_err=errors[worst],
        cosine=cosine_similarity(ref[both], cand[both]) if both.any() else 0.0,
        top1_agreement=top1_agreement(ref, cand) if both.all() else None,
        mismatched=int((relative > tolerance).sum()), elements=int(ref.size), tolerance=tolerance,
        p99_rel_err=float(np.percentile(relative, 99, method="higher")), channel_axis=axis, worst_channel=worst, samples=samples)


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
