"""What the tables and JUnit show of a model's Result, each column declared once.

A column is a view of the one record (results.Result), never a copy of it: summary.md, the HTML
page and the JUnit properties all read these getters, so a figure cannot say one thing in one
report and another elsewhere. Per-recipe figures (size, error, cosine of each TFLite file built)
come from `recipe_figures`, for any recipe in the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .recipes import RECIPES
from .results import Deliverable, Result
from .signature import listed


@dataclass(frozen=True)
class Column:
    key: str                      # JUnit property name (and what tests and scripts call it)
    title: str | None             # table header; None: a JUnit property only
    fmt: str                      # str | int | bytes | err | float | secs
    get: Callable[[Result], object]
    junit: bool = False
    page: bool = True             # in the HTML page too (which must fit a laptop screen)
    wrap: bool = False            # may take several lines rather than widen the page


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _err(d: Deliverable | None) -> float | None:
    return finite(d.worst.range_rel_err) if d is not None and d.verified else None


def _cosine(d: Deliverable | None) -> float | None:
    return finite(min(c.cosine for c in d.outputs)) if d is not None and d.verified else None


def _p99(d: Deliverable | None) -> float | None:
    if d is None or not d.verified:
        return None
    values = [c.p99_rel_err for c in d.outputs if c.p99_rel_err is not None]
    return finite(max(values)) if values else None


def _inputs(d: Deliverable | None) -> int | None:
    """Over how many verification inputs the deliverable's figures are."""
    return max(c.samples for c in d.outputs) if d is not None and d.verified else None


def _tasks(d: Deliverable | None) -> str | None:
    """The deliverable's outputs judged by their declared tasks: decisions that agree, of how many."""
    if d is None or not d.verified:
        return None
    return "; ".join(f"{c.name}: {c.task.task} {c.task.agree}/{c.task.units}" for c in d.outputs if c.task) or None


def _invoke_ms(d: Deliverable | None) -> float | None:
    return d.runtime.invoke_ms if d is not None and d.runtime is not None else None


def _arena(d: Deliverable | None) -> int | None:
    return d.arena_bytes if d is not None else None


def device_of(d: Deliverable | None) -> str | None:
    """The device a file's recipe is for (the recipe table's), or None."""
    return RECIPES[d.recipe].device if d is not None and d.recipe in RECIPES else None


def _calibration(result: Result) -> str | None:
    """Whether the int8 figures are of the model's own data: what its int8 recipes were calibrated on."""
    if result.tflite is None or not result.tflite.calibration:
        return None
    return "random samples (not your data)" if result.tflite.random_calibration else "your samples"


def _slowest(result: Result) -> str | None:
    if not result.stage_seconds:
        return None
    stage, seconds = max(result.stage_seconds.items(), key=lambda item: item[1])
    return f"{stage} {seconds:.1f} s"


def _failure(attribute: str):
    return lambda r: getattr(r.failure, attribute).value if r.failure else None


COLUMNS: tuple[Column, ...] = (
    Column("outcome", "outcome", "str", lambda r: r.outcome.value if r.outcome else r.status),
    Column("failure_stage", "stage", "str", _failure("stage"), junit=True, page=False),
    Column("failure_kind", "kind", "str", _failure("kind"), junit=True),
    Column("exporter", "exporter", "str", lambda r: r.export.exporter if r.export else None, junit=True, page=False),
    Column("opset", "opset", "int", lambda r: r.export.opset if r.export else None, junit=True, page=False),
    Column("onnx_bytes", "ONNX", "bytes", lambda r: r.export.onnx_bytes if r.export else None, junit=True, page=False),
    Column("delivered", "deliverable", "str", lambda r: r.delivered, junit=True, wrap=True),
    Column("device", "for", "str", lambda r: device_of(r.chosen), page=False),  # the page: under the deliverable
    Column("tflite_bytes", "TFLite", "bytes", lambda r: r.chosen.bytes if r.chosen else None, junit=True),
    Column("tf_err", "TF err", "err", lambda r: finite(r.tf_error), junit=True, page=False),  # a dot in the chart
    Column("err", "err", "err", lambda r: _err(r.chosen)),
    Column("cosine", "cosine", "float", lambda r: _cosine(r.chosen), page=False),
    Column("verify_inputs", "inputs", "int", lambda r: _inputs(r.chosen), junit=True, page=False),  # the page: tooltips
    Column("task_agreement", "task", "str", lambda r: _tasks(r.chosen), junit=True, page=False, wrap=True),
    Column("invoke_ms", "invoke ms", "float", lambda r: _invoke_ms(r.chosen), junit=True, page=False),
    Column("micro_arena_bytes", "Micro arena", "bytes", lambda r: _arena(r.chosen), page=False),
    Column("calibration", "int8 calibrated on", "str", _calibration, page=False),
    Column("onnx2tf_runs", "onnx2tf runs", "int", lambda r: r.onnx2tf_runs or None, junit=True, page=False),
    Column("convert_seconds", "seconds", "secs", lambda r: r.seconds, junit=True, page=False),
    Column("slowest_stage", "slowest stage", "str", _slowest, wrap=True),
    Column("peak_rss_mb", "peak MB", "secs", lambda r: r.peak_rss_mb, junit=True),
    Column("fixes_applied", "fixes applied", "str", lambda r: "; ".join(f.label for f in r.fixes) or None,
           junit=True, wrap=True),
    Column("cache_hit", "cache", "str", lambda r: "hit" if r.cache_hit else None, junit=True),
    Column("vacuous_outputs", "vacuous check", "str", lambda r: ", ".join(c.output for c in r.caveats if c.output) or None,
           junit=True, wrap=True),
    Column("artifacts_bytes", "artifacts", "bytes", lambda r: r.artifacts_bytes, page=False),
)
TABLE = tuple(c for c in COLUMNS if c.title)
PAGE = tuple(c for c in TABLE if c.page)


def recipe_figures(result: Result) -> list[tuple[str, object]]:
    """Per TFLite file built: `<recipe>_bytes`, `<recipe>_range_rel_err`, `<recipe>_p99_rel_err`,
    `<recipe>_cosine` (over `<recipe>_verify_inputs` verification inputs), `<recipe>_invoke_ms`, once
    the runtime read its signature `<recipe>_inputs` and `<recipe>_outputs` (as the device sees them:
    name, shape, layout, dtype, scale and zero point) and, run on TFLite Micro,
    `<recipe>_micro_arena_bytes`."""
    figures = []
    for d in result.deliverables:
        figures += [(f"{d.recipe}_bytes", d.bytes), (f"{d.recipe}_range_rel_err", _err(d)),
                    (f"{d.recipe}_p99_rel_err", _p99(d)), (f"{d.recipe}_cosine", _cosine(d)),
                    (f"{d.recipe}_verify_inputs", _inputs(d)),
                    (f"{d.recipe}_invoke_ms", _invoke_ms(d))]
        if d.signature is not None:
            figures += [(f"{d.recipe}_inputs", listed(d.signature.inputs)),
                        (f"{d.recipe}_outputs", listed(d.signature.outputs))]
        if _arena(d) is not None:
            figures.append((f"{d.recipe}_micro_arena_bytes", _arena(d)))
    return figures


DEVICE_VIEW = ("Inputs and outputs in the order TFLite Micro addresses them, as the TFLite runtime read them from the "
               "file (onnx2tf lays images out channels-last; int8 tensors take and give real = scale * (q - zero point)).")


def device_rows(records: dict[str, Result]) -> list[tuple[str, Deliverable, bool]]:
    """Every TFLite file whose signature the runtime read, by model: (model id, the file, delivered?)."""
    return [(model_id, d, d.recipe == records[model_id].delivered) for model_id in sorted(records)
            for d in records[model_id].deliverables if d.device_view()]


def junit_properties(result: Result) -> list[tuple[str, object]]:
    """The per-model figures CI dashboards read, under stable names ('' when unknown)."""
    pairs = [(c.key, c.get(result)) for c in COLUMNS if c.junit] + recipe_figures(result)
    return [(name, "" if value is None else value) for name, value in pairs]


def onnx2tf_runs_line(records) -> str | None:
    """How many models onnx2tf converted in one run: a figure anyone can read off a batch."""
    runs = [r.onnx2tf_runs for r in records if r.onnx2tf_runs]
    if not runs:
        return None
    one = sum(n == 1 for n in runs)
    return (f"onnx2tf converted {one} of {len(runs)} model{'s' if len(runs) != 1 else ''} in one run ({one / len(runs):.0%})"
            + (f"; {len(runs) - one} needed more (a retry in another mode, or a second pass for ops TFLite lacks)"
               if one < len(runs) else ""))


def row(result: Result) -> dict:
    """The table's cells of one model, by key (summary.json keeps the record itself)."""
    return {c.key: c.get(result) for c in COLUMNS}
