"""What a sidecar may declare about an output's meaning: the tasks, their options, and the check of a
declaration (tasks.py judges by them). Plain Python: the parent reads sidecars without numpy (the
merge, an installed harness with nothing but psutil beside it)."""
from __future__ import annotations

import math

TASKS = ("classification", "dense", "embedding", "detection", "regression")
DECISIONS = ("classification", "dense", "detection")  # judged decision by decision
# the share of a file's clear decisions that may differ from PyTorch's (the README gives the figures
# behind them): a classifier's answers are its point, a dense map's or a detector's thousands of
# positions hold a few borderline ones that no tolerance separates from the rest
CLEAR_FLIPS = {"classification": 0.0, "dense": 0.01, "detection": 0.01}
DEFAULT_MIN_COSINE = 0.99
# the options each task takes, with what each must be
OPTIONS = {
    "classification": {"axis": int, "top_k": int, "threshold": float},
    "dense": {"axis": int, "threshold": float},
    "embedding": {"axis": int, "min_cosine": float},
    "detection": {"axis": int, "score_threshold": float, "iou": float, "box_format": str},
    "regression": {},
}
BOX_FORMATS = ("cxcywh", "xyxy")


def check_task(value) -> dict:
    """A sidecar's `task = "..."` or an `[outputs.<name>]` table, as {"task": name, option: value}
    (ValueError, in one line, otherwise)."""
    table = {"task": value} if isinstance(value, str) else value
    if not isinstance(table, dict) or "task" not in table:
        raise ValueError(f"must be a task ({', '.join(TASKS)}) or a table with a task key, not {value!r}")
    task = table["task"]
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    known = OPTIONS[task]
    unknown = sorted(set(table) - {"task"} - set(known))
    if unknown:
        raise ValueError(f"task {task!r} takes no {', '.join(unknown)} (it takes: {', '.join(known) or 'no options'})")
    out = {"task": task}
    for key, value in table.items():
        if key == "task":
            continue
        kind = known[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{key} must be an integer, not {value!r}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ValueError(f"{key} must be a finite number, not {value!r}")
        if kind is str and value not in BOX_FORMATS:
            raise ValueError(f"{key} must be one of {', '.join(BOX_FORMATS)}, not {value!r}")
        out[key] = float(value) if kind is float else value
    if out.get("top_k", 1) < 1:
        raise ValueError(f"top_k must be at least 1, not {out['top_k']}")
    for key in ("min_cosine", "iou"):
        if key in out and not 0 < out[key] <= 1:
            raise ValueError(f"{key} must be in (0, 1], not {out[key]}")
    return out
