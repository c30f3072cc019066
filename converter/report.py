"""Human-readable views of Results: the one-model screen, and the batch summaries."""
from __future__ import annotations

from .results import OutputComparison, Result

STAGES = ("load", "export", "savedmodel", "tflite", "verify")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def worst(comparisons: tuple[OutputComparison, ...] | None) -> OutputComparison | None:
    if not comparisons:
        return None
    return max(comparisons, key=lambda c: (not c.shape_ok, c.range_rel_err))


def format_result(result: Result, settings=None) -> str:
    lines = [f"{result.model_id}: {'PASS' if result.passed else 'FAIL'}  ({result.model_path})"]
    if result.failure:
        lines.append(f"  {result.failure.one_line(result.model_id)}")
    times = "  ".join(f"{s} {result.stage_seconds[s]:.1f}s" for s in STAGES if s in result.stage_seconds)
    lines.append(f"  stages: {times or '-'}   total {result.seconds:.1f}s   peak RSS {result.peak_rss_mb:.0f} MB")
    if result.load:
        shapes = ", ".join(f"{n} {list(s)}" for n, s in zip(result.load.input_names, result.load.input_shapes))
        lines.append(f"  loaded: {result.load.format}; inputs {shapes}")
    if result.export:
        lines.append(f"  ONNX: {result.export.exporter} exporter, opset {result.export.opset}, "
                     f"{_mb(result.export.onnx_bytes)}  (tried: {'; '.join(result.export.attempts)})")
    if result.tflite:
        ratio = result.tflite.drq_bytes / max(result.export.onnx_bytes, 1) if result.export else 0
        flex = f", Flex ops {', '.join(result.tflite.flex_ops)}" if result.tflite.flex_ops else ""
        lines.append(f"  TFLite: DRQ {_mb(result.tflite.drq_bytes)} (x{ratio:.2f} of ONNX), "
                     f"float32 {_mb(result.tflite.fp32_bytes)}{flex}")
    groups = [("ONNX", result.export.outputs if result.export else ())]
    if result.verify:
        groups += [("float32 TFLite", result.verify.fp32), ("DRQ TFLite", result.verify.drq)]
    for label, comparisons in groups:
        for c in comparisons:
            lines.append(f"  {'ok ' if c.passed else 'BAD'} {c.describe(label)}")
    if result.verify:
        lines.append(f"  deployable without TensorFlow: {'yes' if result.verify.deployable else 'no'}"
                     + (f" ({result.verify.deploy_message})" if result.verify.deploy_message else ""))
    if result.deliverable:
        lines.append(f"  deliverable: {result.deliverable}")
    if settings is not None:
        lines.append(f"  artifacts and log: {settings.artifacts_dir / result.model_id}/")
    return "\n".join(lines)
