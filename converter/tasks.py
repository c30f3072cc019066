"""What an output means, and the verdict that follows from it (numpy only, both sides).

A model (or one of its outputs) may declare its task in its sidecar: `task = "classification"`, or
per output `[outputs.<name>] task = "dense"`. A quantized file is then judged by the task's
answers over the verification inputs, with the tensor figures (max error, cosine) reported beside:

- classification: logits or probabilities, classes along `axis` (default the last): every row's
  top-1 class (or its set of `top_k` classes) must be PyTorch's (one score: thresholded, as below);
- dense: a per-position class map (classes along `axis`, default 1: [N, C, H, W]) or a one-channel
  score map thresholded at `threshold` (default 0.5 for scores within [0, 1], else 0): every
  position's decision;
- embedding: vectors along `axis` (default the last): each input's vector must point the way
  PyTorch's does (cosine >= `min_cosine`);
- detection: a raw detector head, per anchor 4 box coordinates then class scores along `axis`
  (default 1: [N, 4 + C, A], as YOLO's): the same anchors detect (best score above
  `score_threshold`), with the same class and boxes that overlap (IoU >= `iou`);
- regression: the tensor check, as for an output that declares nothing.

A decision PyTorch itself takes within the tolerance of a tie (two class scores closer than twice
the recipe's tolerance of the output's range, a score that close to its threshold) may go either
way in any valid quantized file: such near ties are counted and reported, not held against it.
Every other decision is a clear one, and at most `CLEAR_FLIPS[task]` of them may differ (of a
detector's, that share of the anchors PyTorch detects with).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .checks import TaskCheck
from .task_spec import CLEAR_FLIPS, DEFAULT_MIN_COSINE


class TaskError(ValueError):
    """An output whose shape its declared task cannot read (the sidecar's mistake)."""


def _rows(array: np.ndarray, axis: int, name: str, task: str) -> np.ndarray:
    """The output as rows of values along `axis` (one row per decision)."""
    if array.ndim == 0 or not -array.ndim <= axis < array.ndim:
        raise TaskError(f"output '{name}' (shape {list(array.shape)}) has no axis {axis} for its task {task!r}")
    moved = np.moveaxis(array, axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _spread(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    return spread if spread > 1e-12 else max(float(np.abs(finite).max()) if finite.size else 0.0, 1.0)


def _check(task: str, units: int, agree: np.ndarray, near: np.ndarray, detail: str, **figures) -> TaskCheck:
    flipped = int((~agree & ~near).sum())
    return TaskCheck(task=task, units=units, agree=int(agree.sum()), near_ties=int((~agree & near).sum()),
                     flipped=flipped, allowed=math.floor(CLEAR_FLIPS.get(task, 0.0) * units), detail=detail, **figures)


def _classes(task: str, ref: np.ndarray, cand: np.ndarray, tolerance: float, top_k: int) -> TaskCheck:
    """Rows of class scores: the same top-k set; a near tie where PyTorch's k-th and (k+1)-th scores
    are within twice the tolerance of the output's range (each may move by the tolerance)."""
    classes = ref.shape[1]
    k = min(top_k, classes)
    what = ("class" if task == "dense" else "top-1 class") if k == 1 else f"top-{k} classes"
    if k >= classes:  # every class is in the set: nothing to decide
        return _check(task, len(ref), np.ones(len(ref), bool), np.zeros(len(ref), bool), what)
    order_ref = np.argsort(-ref, axis=1, kind="stable")
    order_cand = np.argsort(-np.nan_to_num(cand, nan=-np.inf), axis=1, kind="stable")
    agree = np.sort(order_ref[:, :k], axis=1) == np.sort(order_cand[:, :k], axis=1)
    agree = agree.all(axis=1) & np.isfinite(cand).all(axis=1)
    ranked = np.take_along_axis(ref, order_ref, axis=1)
    near = (ranked[:, k - 1] - ranked[:, k]) <= 2 * tolerance * _spread(ref)
    return _check(task, len(ref), agree, near, what)


def _thresholded(task: str, ref: np.ndarray, cand: np.ndarray, tolerance: float, threshold: float | None) -> TaskCheck:
    """One score per position, decided against a threshold; a near tie where PyTorch's score is
    within the tolerance of the output's range from it."""
    ref, cand = ref[:, 0], cand[:, 0]
    if threshold is None:
        threshold = 0.5 if ref.min() >= 0 and ref.max() <= 1 else 0.0
    agree = (ref > threshold) == (cand > threshold)
    near = np.abs(ref - threshold) <= tolerance * _spread(ref)
    return _check(task, len(ref), agree & np.isfinite(cand), near, f"score above {threshold:g}")


def _embedding(ref: np.ndarray, cand: np.ndarray, min_cosine: float) -> TaskCheck:
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    both_zero = (np.linalg.norm(ref, axis=1) < 1e-12) & (np.linalg.norm(cand, axis=1) < 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(both_zero, 1.0, np.where(norms > 0, (ref * cand).sum(axis=1) / norms, 0.0))
    cosine = np.nan_to_num(cosine, nan=-1.0)
    agree = cosine >= min_cosine
    return _check("embedding", len(ref), agree, np.zeros(len(ref), bool), f"cosine >= {min_cosine:g}",
                  min_cosine=float(cosine.min()) if cosine.size else 1.0)


def _corners(boxes: np.ndarray, box_format: str) -> np.ndarray:
    if box_format == "xyxy":
        return boxes
    cx, cy, w, h = boxes.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row by row: the overlap of box a[i] with box b[i], both as corners."""
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = width * height

    def area(x):
        return np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)

    union = area(a) + area(b) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, (np.abs(a - b).max(axis=1) == 0).astype(float))


def _detections(ref: np.ndarray, cand: np.ndarray, tolerance: float, score_threshold: float, iou: float,
                box_format: str) -> TaskCheck:
    """Per anchor: detected or not (its best score above the threshold), and if so its class and box."""
    ref_scores, cand_scores = ref[:, 4:], np.nan_to_num(cand[:, 4:], nan=-np.inf)
    ref_best, cand_best = ref_scores.max(axis=1), cand_scores.max(axis=1)
    ref_hit, cand_hit = ref_best > score_threshold, cand_best > score_threshold
    same_class = ref_scores.argmax(axis=1) == cand_scores.argmax(axis=1)
    overlap = _iou(_corners(ref[:, :4], box_format), _corners(np.nan_to_num(cand[:, :4]), box_format))
    agree = (ref_hit == cand_hit) & (~ref_hit | (same_class & (overlap >= iou)))
    scale = _spread(ref_scores)
    near = np.abs(ref_best - score_threshold) <= tolerance * scale
    if ref_scores.shape[1] > 1:  # two classes as close as the tolerance allows to swap
        top2 = np.sort(ref_scores, axis=1)[:, -2:]
        near |= ref_hit & ~same_class & ((top2[:, 1] - top2[:, 0]) <= 2 * tolerance * scale)
    check = _check("detection", len(ref), agree, near, f"score above {score_threshold:g}, IoU >= {iou:g}")
    # the share is of the detections, not of the anchors (most of which detect nothing)
    detected = int(ref_hit.sum())
    return dataclasses.replace(check, detected=detected, allowed=math.floor(CLEAR_FLIPS["detection"] * detected))


def judge(declared: dict, name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float) -> TaskCheck | None:
    """The task's verdict on one output (None for regression: the tensor check is its verdict).
    `declared`: what check_task returned. TaskError when the output's shape does not fit the task."""
    task = declared["task"]
    if task == "regression":
        return None
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    axis = declared.get("axis", 1 if task in ("dense", "detection") else -1)
    ref_rows, cand_rows = _rows(ref, axis, name, task), _rows(cand, axis, name, task)
    if task == "embedding":
        return _embedding(ref_rows, cand_rows, declared.get("min_cosine", DEFAULT_MIN_COSINE))
    if task == "detection":
        if ref_rows.shape[1] < 5:
            raise TaskError(f"output '{name}' (shape {list(ref.shape)}) has {ref_rows.shape[1]} values along axis "
                            f"{axis}: a detection needs 4 box coordinates and at least one class score there")
        return _detections(ref_rows, cand_rows, tolerance, declared.get("score_threshold", 0.25),
                           declared.get("iou", 0.5), declared.get("box_format", "cxcywh"))
    if ref_rows.shape[1] == 1:
        return _thresholded(task, ref_rows, cand_rows, tolerance, declared.get("threshold"))
    return _classes(task, ref_rows, cand_rows, tolerance, declared.get("top_k", 1))
