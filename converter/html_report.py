"""summary.html: one self-contained file (no scripts, no network assets) a reviewer reads at a glance.

Each row carries three inline SVG charts: the deliverable's size against the float32 model
(linear), the errors against PyTorch (float32 and DRQ, log scale) and the seconds each stage
took (stacked, one scale for all models). The page fits a 1400 px laptop screen.
"""
from __future__ import annotations

import html
import math

from .failures import Stage
from .report import format_cell
from .rows import PAGE

OUTCOME_COLOURS = {"passed": "#d8f3dc", "failed": "#ffd6d6", "xfailed": "#fff1c1"}
ERR_RANGE = (1e-9, 1.0)
W, H = 100, 28


def _log_x(value: float, low: float, high: float) -> float:
    value = min(max(value, low), high)
    return (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low)) * (W - 10) + 5


def size_chart(fp32: int | None, drq: int | None) -> str:
    """Linear, against the float32 size: the 4x of dynamic-range quantization shows as it is."""
    if not fp32 or not drq:
        return ""
    full = W - 10
    bars = []
    for y, value, colour, label in ((3, fp32, "#8ea9c8", "float32"), (15, drq, "#2b6cb0", "DRQ")):
        width = max(1.0, full * min(value / fp32, 1.0))
        bars.append(f'<rect x="5" y="{y}" width="{width:.1f}" height="10" fill="{colour}">'
                    f"<title>{label} {value / 1e3:.1f} kB ({value / fp32:.0%} of float32)</title></rect>")
    return (f'<svg width="{W}" height="{H}" role="img" aria-label="size: DRQ against float32">'
            + "".join(bars) + "</svg>")


STAGE_COLOURS = {"load": "#9ae6b4", "export": "#90cdf4", "savedmodel": "#f6ad55", "tflite": "#b794f4",
                 "verify": "#fc8181"}


def time_chart(stage_seconds: dict | None, longest: float) -> str:
    """Stacked seconds per stage, on one scale for every model: a slow model and why, at a glance."""
    if not stage_seconds or longest <= 0:
        return ""
    x, parts = 5.0, []
    order = [str(s) for s in Stage if str(s) in stage_seconds] + [s for s in stage_seconds if s not in set(map(str, Stage))]
    for stage, seconds in ((s, stage_seconds[s]) for s in order):  # pipeline order (JSON sorts keys)
        width = (W - 10) * seconds / longest
        parts.append(f'<rect x="{x:.1f}" y="6" width="{width:.1f}" height="16" '
                     f'fill="{STAGE_COLOURS.get(stage, "#a0aec0")}"><title>{stage} {seconds:.1f} s</title></rect>')
        x += width
    return f'<svg width="{W}" height="{H}" role="img" aria-label="seconds by stage">' + "".join(parts) + "</svg>"


def error_chart(fp32: float | None, drq: float | None, drq_tolerance: float = 5e-2) -> str:
    if fp32 is None and drq is None:
        return ""
    parts = [f'<line x1="5" y1="14" x2="{W - 5}" y2="14" stroke="#bbb"/>']
    for decade in range(-9, 1, 3):
        x = _log_x(10.0 ** decade, *ERR_RANGE)
        parts.append(f'<line x1="{x:.1f}" y1="9" x2="{x:.1f}" y2="19" stroke="#ccc"><title>1e{decade}</title></line>')
    x = _log_x(drq_tolerance, *ERR_RANGE)
    parts.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="24" stroke="#c53030" stroke-dasharray="2,2">'
                 f"<title>default DRQ tolerance {drq_tolerance:g}</title></line>")
    for value, colour, label in ((fp32, "#8ea9c8", "float32"), (drq, "#2b6cb0", "DRQ")):
        if value is not None and math.isfinite(value):
            parts.append(f'<circle cx="{_log_x(value, *ERR_RANGE):.1f}" cy="14" r="4.5" fill="{colour}">'
                         f"<title>{label} error {value:.3g}</title></circle>")
    return f'<svg width="{W}" height="{H}" role="img" aria-label="errors, log scale">' + "".join(parts) + "</svg>"


REGRESSIVE = ("regression", "error")  # baseline severities shown in red
WRAPPED = ("fixes_applied", "slowest_stage")  # may take several lines rather than widen the page


def render(summary: dict) -> str:
    gate = summary.get("baseline", {})
    labels, marks = gate.get("labels", {}), gate.get("marks", {})
    models = summary["models"]
    longest = max([sum((r.get("stage_seconds") or {}).values()) for r in models.values()] + [0.0])
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["model", *(t for t, _, _ in PAGE)])
    head += "<th>vs baseline</th>" if labels else ""
    head += ("<th>size: DRQ against float32</th><th>error vs PyTorch (log, 1e-9..1)</th>"
             "<th>seconds by stage</th>")
    rows = []
    for model_id, row in models.items():
        colour = OUTCOME_COLOURS.get(row["outcome"], "#eee")
        cells = [f'<td class="id"><code>{html.escape(model_id)}</code></td>']
        cells += [f'<td{" class=wrap" if key in WRAPPED else ""}>{html.escape(format_cell(row.get(key), kind))}</td>'
                  for _, key, kind in PAGE]
        if labels:
            bad = marks.get(model_id) in REGRESSIVE
            cells.append(f'<td class="wrap{" regress" if bad else ""}">{html.escape(labels.get(model_id, ""))}</td>')
        cells.append(f"<td>{size_chart(row.get('tflite_fp32_bytes'), row.get('tflite_bytes'))}</td>")
        cells.append(f"<td>{error_chart(row.get('fp32_range_rel_err'), row.get('drq_range_rel_err'))}</td>")
        cells.append(f"<td>{time_chart(row.get('stage_seconds'), longest)}</td>")
        title = html.escape(row.get("failure_message") or "")
        rows.append(f'<tr style="background:{colour}" title="{title}">' + "".join(cells) + "</tr>")
    counts = ", ".join(f"{n} {k}" for k, n in summary["counts"].items())
    failures = "".join(f"<li><code>{html.escape(m)}</code> ({html.escape(r['outcome'])}): "
                       f"{html.escape(str(r['failure_stage']))} [{html.escape(str(r['failure_kind']))}]: "
                       f"{html.escape(r['failure_message'])}</li>"
                       for m, r in models.items() if r.get("failure_message"))
    verdict = "".join(f'<li class="{"regress" if line["severity"] in REGRESSIVE else ""}">'
                      f"{html.escape(line['text'])}</li>" for line in gate.get("lines", ()))
    versions = ", ".join(f"{k} {v}" for k, v in summary["versions"].items())
    stage_legend = "".join(f'<span style="background:{c}"></span>{html.escape(s)}' for s, c in STAGE_COLOURS.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>TFLite conversion summary</title>
<style>
body {{ font: 13px/1.35 system-ui, sans-serif; margin: 12px; color: #222; max-width: 1400px; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 2px 4px; text-align: left; }}
th {{ font-size: 12px; vertical-align: bottom; }} td {{ white-space: nowrap; }}
td.wrap {{ white-space: normal; overflow-wrap: anywhere; min-width: 70px; max-width: 150px; }}
td.id {{ white-space: normal; overflow-wrap: anywhere; min-width: 150px; max-width: 190px; }}
th {{ background: #f3f3f3; }} .regress {{ color: #b00020; font-weight: bold; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }}
</style></head><body>
<h1>TFLite conversion summary</h1>
<p>{len(models)} models: {html.escape(counts)}. Errors are the largest |TFLite - PyTorch| relative to the
output's range. <span class="legend"><span style="background:#8ea9c8"></span>float32
<span style="background:#2b6cb0"></span>DRQ (deliverable)
<span style="border-left:2px dashed #c53030"></span>default DRQ tolerance;
seconds by stage: {stage_legend}</span></p>
{f"<h2>Baseline</h2><ul>{verdict}</ul>" if verdict else ""}
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
{f"<h2>Failures</h2><ul>{failures}</ul>" if failures else ""}
<p><small>Versions: {html.escape(versions)}</small></p>
</body></html>
"""
