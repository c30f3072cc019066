"""The per-model summary row: one typed record behind summary.json/.md/.html, the JUnit
properties and the baseline, with each column declared once (its title and format in the
tables, whether it is a JUnit property, whether the baseline records it).
"""
from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field

from .results import OutputComparison, Result


class Outcome(str, enum.Enum):
    """What the test made of a model (xfails are strict: a model that passes against its
    [expect] is a failure, so there is no xpassed)."""

    PASSED = "passed"
    FAILED = "failed"
    XFAILED = "xfailed"
    GONE = "gone"  # in the baseline, no longer in the models folder


def column(title: str | None, fmt: str = "str", *, junit: bool = False, record: bool = False, page: bool = True,
           **default):
    """title None: in summary.json only, not a table column; page False: in summary.md, not in the
    HTML page (which must fit a laptop screen, and shows those figures in its charts). `default`:
    field()'s own (default=..., default_factory=...), None when not given."""
    default = default or {"default": None}
    return field(**default, metadata={"title": title, "fmt": fmt, "junit": junit, "record": record, "page": page})


@dataclass(frozen=True)
class SummaryRow:
    outcome: Outcome = column("outcome", default=dataclasses.MISSING)
    status: str = column(None, record=True)  # the Result's own verdict; outcome adds expectations
    failure_stage: str | None = column("stage", junit=True, page=False)
    failure_kind: str | None = column("kind", junit=True, record=True)
    failure_message: str | None = column(None)
    failure_signature: str | None = column(None, record=True)
    exporter: str | None = column("exporter", junit=True, record=True, page=False)
    opset: int | None = column("opset", "int", junit=True, record=True)
    onnx_bytes: int | None = column("ONNX", "bytes", junit=True, page=False)
    tflite_bytes: int | None = column("TFLite DRQ", "bytes", junit=True, record=True)
    tflite_fp32_bytes: int | None = column(None, "bytes", junit=True, record=True)
    size_ratio: float | None = column("DRQ/ONNX", "float", page=False)
    fp32_range_rel_err: float | None = column("fp32 err", "err", junit=True, record=True)
    drq_range_rel_err: float | None = column("DRQ err", "err", junit=True, record=True)
    drq_cosine: float | None = column("DRQ cosine", "float", junit=True, record=True)
    flex_ops: tuple[str, ...] = column(None, default=())
    convert_seconds: float | None = column("seconds", "secs", junit=True, record=True, page=False)
    slowest_stage: str | None = column("slowest stage")
    stage_seconds: dict = column(None, default_factory=dict)
    peak_rss_mb: float | None = column("peak MB", "secs", junit=True)
    deliverable: str | None = column(None)
    fixes_applied: str | None = column("fixes applied", junit=True, record=True)
    cache_hit: str | None = column("cache", junit=True)  # "hit": restored, not converted again
    artifacts_bytes: int | None = column("artifacts", "bytes", page=False)  # the disk it keeps
    first_divergence: str | None = column(None)

    @classmethod
    def of(cls, result: Result, outcome: Outcome) -> "SummaryRow":
        export, tfl = result.export, result.tflite
        fp32 = worst(result.verify.fp32) if result.verify else None
        drq = worst(result.verify.drq) if result.verify else None
        failure = result.failure
        return cls(
            outcome=outcome, status=result.status,
            failure_stage=failure.stage.value if failure else None,
            failure_kind=failure.kind.value if failure else None,
            failure_message=failure.message if failure else None,
            failure_signature=failure.signature if failure else None,
            exporter=export.exporter if export else None,
            opset=export.opset if export else None,
            onnx_bytes=export.onnx_bytes if export else None,
            tflite_bytes=tfl.drq_bytes if tfl else None,
            tflite_fp32_bytes=tfl.fp32_bytes if tfl else None,
            size_ratio=round(tfl.drq_bytes / export.onnx_bytes, 4) if tfl and export else None,
            fp32_range_rel_err=_finite(fp32.range_rel_err) if fp32 else None,
            drq_range_rel_err=_finite(drq.range_rel_err) if drq else None,
            drq_cosine=_finite(min(c.cosine for c in result.verify.drq)) if result.verify and result.verify.drq
            else None,
            flex_ops=tuple(tfl.flex_ops) if tfl else (),
            convert_seconds=result.seconds,
            slowest_stage=_slowest(result.stage_seconds),
            stage_seconds=dict(result.stage_seconds),
            peak_rss_mb=result.peak_rss_mb,
            deliverable=result.deliverable,
            fixes_applied="; ".join(f.label for f in result.fixes) or None,
            cache_hit="hit" if result.cache_hit else None,
            artifacts_bytes=result.artifacts_bytes,
            first_divergence=(result.divergence.first.node if result.divergence and result.divergence.first
                              else None),
        )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["outcome"] = self.outcome.value
        data["flex_ops"] = list(self.flex_ops)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SummaryRow":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["outcome"] = Outcome(values["outcome"])
        values["flex_ops"] = tuple(values.get("flex_ops", ()))
        return cls(**values)

    def junit_properties(self) -> list[tuple[str, object]]:
        """The per-model figures CI dashboards read, under stable names ('' when unknown)."""
        return [(f.name, "" if getattr(self, f.name) is None else getattr(self, f.name)) for f in JUNIT]


def _fields(flag: str) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(SummaryRow) if f.metadata.get(flag))


JUNIT = _fields("junit")
RECORDED = tuple(f.name for f in _fields("record"))
RECORDED_NUMBERS = tuple(f.name for f in _fields("record") if f.metadata["fmt"] != "str")
TABLE = tuple((f.metadata["title"], f.name, f.metadata["fmt"]) for f in _fields("title"))
PAGE = tuple((f.metadata["title"], f.name, f.metadata["fmt"]) for f in _fields("title") if f.metadata["page"])
PROPERTY_NAMES = tuple(f.name for f in JUNIT)


def worst(comparisons: tuple[OutputComparison, ...] | None) -> OutputComparison | None:
    if not comparisons:
        return None
    return max(comparisons, key=lambda c: (not c.shape_ok, c.range_rel_err))


def _slowest(stage_seconds: dict[str, float]) -> str | None:
    if not stage_seconds:
        return None
    stage, seconds = max(stage_seconds.items(), key=lambda item: item[1])
    return f"{stage} {seconds:.1f} s"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
