"""summary.html: one self-contained file (no scripts, no network assets) a reviewer reads at a glance.

Each row carries three inline SVG charts: the size of each TFLite file against the float32 one
(linear), their errors against PyTorch (log scale) and the seconds each stage took (stacked, one
scale for all models). Failures come first, then regressions; each model links to its log and
result. The page fits a 1400 px laptop screen.
"""
from __future__ import annotations

import html
import math
import urllib.parse

from .columns import PAGE, row
from .failures import Stage
from .recipes import RECIPES
from .report import counts_of, ended_line, format_cell
from .results import Outcome, Result
from .settings import file_name

OUTCOME_COLOURS = {"passed": "#d8f3dc", "failed": "#ffd6d6", "xfailed": "#fff1c1"}
ERR_RANGE = (1e-9, 1.0)
W, H = 100, 28


def _log_x(value: float, low: float, high: float) -> float:
    value = min(max(value, low), high)
    return (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low)) * (W - 10) + 5


ONNX_COLOUR = TF_COLOUR = "#8ea9c8"  # float32 before any TFLite conversion
DEFAULT_COLOUR = "#718096"  # a recipe no longer in the table (a merged report of an older run)


def recipe_colour(recipe: str) -> str:
    return RECIPES[recipe].colour if recipe in RECIPES else DEFAULT_COLOUR


def size_chart(record: Result) -> str:
    """Linear, against the float32 ONNX file: each TFLite file as it is (DRQ's 4x shows as it is)."""
    onnx = record.export.onnx_bytes if record.export else None
    if not onnx or not record.deliverables:
        return ""
    rows = [("ONNX (float32)", onnx, ONNX_COLOUR)] + [
        (d.label + (" (the deliverable)" if d.recipe == record.delivered else ""), d.bytes,
         recipe_colour(d.recipe)) for d in record.deliverables]
    full, bar = W - 10, max(3.0, (H - 4) / len(rows) - 2)
    bars = [f'<rect x="5" y="{2 + i * (bar + 2):.1f}" width="{max(1.0, full * min(size / onnx, 1.0)):.1f}" '
            f'height="{bar:.1f}" fill="{colour}"><title>{html.escape(label)} {size / 1e3:.1f} kB '
            f"({size / onnx:.0%} of the ONNX file)</title></rect>" for i, (label, size, colour) in enumerate(rows)]
    return (f'<svg width="{W}" height="{H}" role="img" aria-label="size of each TFLite file against the ONNX file">'
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


def error_chart(record: Result) -> str:
    verified = [d for d in record.deliverables if d.verified]
    points = [("TF model (onnx2tf), float32", record.tf_error, TF_COLOUR)] if record.tf_error is not None else []
    points += [(f"{d.label} ({d.worst.over})", d.worst.range_rel_err, recipe_colour(d.recipe)) for d in verified]
    if not points:
        return ""
    parts = [f'<line x1="5" y1="14" x2="{W - 5}" y2="14" stroke="#bbb"/>']
    for decade in range(-9, 1, 3):
        x = _log_x(10.0 ** decade, *ERR_RANGE)
        parts.append(f'<line x1="{x:.1f}" y1="9" x2="{x:.1f}" y2="19" stroke="#ccc"><title>1e{decade}</title></line>')
    chosen = record.chosen
    if chosen is not None and chosen.verified:
        tolerance = chosen.worst.tolerance
        x = _log_x(tolerance, *ERR_RANGE)
        parts.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="24" stroke="#c53030" stroke-dasharray="2,2">'
                     f"<title>{html.escape(chosen.label)} tolerance {tolerance:g}</title></line>")
    for label, value, colour in points:
        if math.isfinite(value):
            parts.append(f'<circle cx="{_log_x(value, *ERR_RANGE):.1f}" cy="14" r="4.5" fill="{colour}">'
                         f"<title>{html.escape(label)} error {value:.3g}</title></circle>")
    return f'<svg width="{W}" height="{H}" role="img" aria-label="errors, log scale">' + "".join(parts) + "</svg>"


REGRESSIVE = ("regression", "error")  # baseline severities shown in red


def _breakable(text: str) -> str:
    """Escaped, with line-break chances after '_', '/', ':' and ';' only: a long id or fix label
    wraps between its words, never inside one."""
    out = html.escape(text)
    for mark in ("_", "/", ":", ";"):
        out = out.replace(mark, mark + "<wbr>")
    return out


def _order(records: dict[str, Result], marks: dict) -> list[str]:
    """Failures first, then regressions, then the rest, each by id."""
    def rank(model_id: str) -> int:
        r = records[model_id]
        if r.outcome is Outcome.FAILED or (r.outcome is None and not r.passed and r.status != "gone"):
            return 0
        return 1 if marks.get(model_id) in REGRESSIVE else 2
    return sorted(records, key=lambda m: (rank(m), m))


def render(records: dict[str, Result], versions: dict, gate: dict | None = None, ended: dict | None = None) -> str:
    gate = gate or {}
    labels, marks = gate.get("labels", {}), gate.get("marks", {})
    longest = max([sum(r.stage_seconds.values()) for r in records.values()] + [0.0])
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["model", *(c.title for c in PAGE)])
    head += "<th>vs baseline</th>" if labels else ""
    head += ("<th>size against ONNX</th><th>error vs PyTorch (log, 1e-9..1)</th>"
             "<th>seconds by stage</th>")
    rows = []
    for model_id in _order(records, marks):
        record = records[model_id]
        cells_by_key = row(record)
        colour = OUTCOME_COLOURS.get(cells_by_key["outcome"], "#eee")
        folder = urllib.parse.quote(file_name(model_id))
        links = "" if record.status == "gone" else (
            f'<br><small><a href="artifacts/{folder}/convert.log">log</a> '
            f'<a href="artifacts/{folder}/result.json">result</a></small>')
        cells = [f'<td class="id"><code>{_breakable(model_id)}</code>{links}</td>']
        cells += [f'<td{" class=wrap" if c.wrap else ""}>{_breakable(format_cell(cells_by_key[c.key], c.fmt))}</td>'
                  for c in PAGE]
        if labels:
            bad = marks.get(model_id) in REGRESSIVE
            cells.append(f'<td class="wrap{" regress" if bad else ""}">{_breakable(labels.get(model_id, ""))}</td>')
        cells.append(f"<td>{size_chart(record)}</td>")
        cells.append(f"<td>{error_chart(record)}</td>")
        cells.append(f"<td>{time_chart(record.stage_seconds, longest)}</td>")
        title = html.escape(record.failure.message if record.failure else "")
        rows.append(f'<tr style="background:{colour}" title="{title}">' + "".join(cells) + "</tr>")
    counts = ", ".join(f"{n} {k}" for k, n in counts_of(records).items())
    failures = "".join(f"<li><code>{html.escape(m)}</code> ({html.escape(row(r)['outcome'])}): "
                       f"{html.escape(r.failure.line())}</li>"
                       for m, r in ((m, records[m]) for m in _order(records, marks)) if r.failure)
    caveats = "".join(f"<li><code>{html.escape(m)}</code>: {html.escape(c.describe())}</li>"
                      for m, r in sorted(records.items()) for c in r.caveats)
    lines = gate.get("lines", ())
    serious = [ln for ln in lines if ln["severity"] in REGRESSIVE + ("improvement", "info")]
    notes = [ln for ln in lines if ln not in serious]
    verdict = "".join(f'<li class="{"regress" if line["severity"] in REGRESSIVE else ""}">'
                      f"{html.escape(line['text'])}</li>" for line in serious)
    if notes:  # timing and how-it-converted notes: reported, never gated, folded away
        verdict += (f"<li><details><summary>{len(notes)} note(s), not gated</summary><ul>"
                    + "".join(f"<li>{html.escape(n['text'])}</li>" for n in notes) + "</ul></details></li>")
    version_text = ", ".join(f"{k} {v}" for k, v in versions.items())
    stage_legend = "".join(f'<span style="background:{c}"></span>{html.escape(s)}' for s, c in STAGE_COLOURS.items())
    recipe_legend = f'<span style="background:{TF_COLOUR}"></span>float32 (ONNX, TF model)' + "".join(
        f'<span style="background:{recipe.colour}"></span>{html.escape(recipe.label)}'
        for name, recipe in RECIPES.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>TFLite conversion summary</title>
<style>
body {{ font: 13px/1.35 system-ui, sans-serif; margin: 12px; color: #222; max-width: 1400px; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 2px 4px; text-align: left; }}
th {{ font-size: 12px; vertical-align: bottom; }} td {{ white-space: nowrap; }}
td.wrap {{ white-space: normal; min-width: 70px; max-width: 150px; }}
td.id {{ white-space: normal; min-width: 150px; max-width: 210px; }}
th {{ background: #f3f3f3; }} .regress {{ color: #b00020; font-weight: bold; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }}
</style></head><body>
<h1>TFLite conversion summary</h1>
{f'<p class="regress">{html.escape(ended_line(ended))}</p>' if ended else ""}
<p>{len(records)} models: {html.escape(counts)}. Errors are the largest |TFLite - PyTorch| relative to the
output's range on the same input, over the verification inputs (<code>inputs</code> says how many);
<code>err</code> and <code>cosine</code> are the deliverable's. <span class="legend">{recipe_legend}
<span style="border-left:2px dashed #c53030"></span>the deliverable's tolerance;
seconds by stage: {stage_legend}</span></p>
{f"<h2>Failures</h2><ul>{failures}</ul>" if failures else ""}
{f"<h2>Checks that prove little</h2><ul>{caveats}</ul>" if caveats else ""}
{f"<h2>Baseline</h2><ul>{verdict}</ul>" if verdict else ""}
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<p><small>Versions: {html.escape(version_text)}</small></p>
</body></html>
"""
