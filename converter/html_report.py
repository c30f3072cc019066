"""summary.html: one self-contained file (no scripts, no network assets) a reviewer reads at a glance.

Each row carries three inline SVG charts, each with its numbers written beside it (a tooltip is
not read at a glance): the size of each file against the float32 ONNX file (linear, to one scale
the largest fills, so a file larger than its ONNX file looks larger), each file's error against
PyTorch on a log scale with its own tolerance marked on its row (a file that missed its own says
so, whichever was delivered), and the seconds each stage took (stacked, one scale for all models).
A model that regressed against the baseline is neither green nor "passed", and the headline counts
it. Under each deliverable: the device it is for, the TFLite Micro arena, what int8 was calibrated
on. Failures come first, then regressions; each model links to its log and record where they exist
(summaries.artifact_links: a merged page's are in the shards' folders). The page fits a 1400 px
laptop screen.
"""
from __future__ import annotations

import html
import math

from .checks import worst
from .columns import DEVICE_VIEW, PAGE, device_of, device_rows, row
from .failures import Stage
from .recipes import RECIPES
from .report import counts_of, ended_line, format_cell, partial_line, run_of
from .results import Outcome, Result

OUTCOME_COLOURS = {"passed": "#d8f3dc", "failed": "#ffd6d6", "xfailed": "#fff1c1", "regressed": "#ffc9a8"}
ERR_RANGE = (1e-9, 1.0)
ROW = 10      # px per file in the size and error charts: one row each, its number beside it
BARS = 70     # px of the size bars; the largest file (ONNX or TFLite) fills them
AXIS = 72     # px of the error axis (log, ERR_RANGE)
STAGES = 80   # px of the stacked seconds; the slowest model fills them
LABEL = 66    # px for the numbers after a chart
MISS_COLOUR = "#c53030"


def _log_x(value: float, low: float, high: float) -> float:
    value = min(max(value, low), high)
    return (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low)) * AXIS + 5


ONNX_COLOUR = TF_COLOUR = "#8ea9c8"  # float32 before any TFLite conversion
DEFAULT_COLOUR = "#718096"  # a recipe no longer in the table (a merged report of an older run)


def recipe_colour(recipe: str) -> str:
    return RECIPES[recipe].colour if recipe in RECIPES else DEFAULT_COLOUR


def _svg(width: float, rows: int, label: str, parts: list[str]) -> str:
    return (f'<svg width="{width:.0f}" height="{rows * ROW + 4}" role="img" aria-label="{label}">'
            + "".join(parts) + "</svg>")


def _text(x: float, row: int, text: str, css: str = "") -> str:
    css_class = f' class="{css}"' if css else ""
    return f'<text x="{x:.1f}" y="{row * ROW + 10:.1f}"{css_class}>{html.escape(text)}</text>'



def size_chart(record: Result) -> str:
    """Each TFLite file against the float32 ONNX file, linear, to one scale that the largest fills:
    a DRQ file larger than its ONNX file (small tensors stay float32) is drawn larger, and each bar
    says its share of the ONNX file."""
    onnx = record.export.onnx_bytes if record.export else None
    if not onnx or not record.deliverables:
        return ""
    rows = [("ONNX (float32)", onnx, ONNX_COLOUR)] + [
        (d.label + (" (the deliverable)" if d.recipe == record.delivered else ""), d.bytes,
         recipe_colour(d.recipe)) for d in record.deliverables]
    largest = max(size for _, size, _ in rows)
    parts = []
    for i, (label, size, colour) in enumerate(rows):
        width = max(1.0, BARS * size / largest)
        parts.append(f'<rect x="5" y="{i * ROW + 3}" width="{width:.1f}" height="{ROW - 2}" fill="{colour}">'
                     f"<title>{html.escape(label)} {size / 1e3:.1f} kB ({size / onnx:.0%} of the ONNX file)</title></rect>")
        parts.append(_text(8 + BARS, i, f"{size / onnx:.0%}"))
    return _svg(BARS + 8 + LABEL / 2, len(rows), "size of each file against the ONNX file", parts)


STAGE_COLOURS = {"load": "#9ae6b4", "export": "#90cdf4", "savedmodel": "#f6ad55", "tflite": "#b794f4",
                 "verify": "#fc8181"}


def time_chart(stage_seconds: dict | None, longest: float) -> str:
    """Stacked seconds per stage, on one scale for every model, and the total: a slow model and why,
    at a glance."""
    if not stage_seconds or longest <= 0:
        return ""
    x, parts = 5.0, []
    order = [str(s) for s in Stage if str(s) in stage_seconds] + [s for s in stage_seconds if s not in set(map(str, Stage))]
    for stage, seconds in ((s, stage_seconds[s]) for s in order):  # pipeline order (JSON sorts keys)
        width = STAGES * seconds / longest
        parts.append(f'<rect x="{x:.1f}" y="3" width="{width:.1f}" height="{ROW * 2 - 2}" '
                     f'fill="{STAGE_COLOURS.get(stage, "#a0aec0")}"><title>{stage} {seconds:.1f} s</title></rect>')
        x += width
    total = sum(stage_seconds.values())
    parts.append(f'<text x="{x + 3:.1f}" y="17">{total:.0f} s</text>' if total >= 10
                 else f'<text x="{x + 3:.1f}" y="17">{total:.1f} s</text>')
    return _svg(STAGES + 8 + LABEL / 2, 2, "seconds by stage", parts)


def _error_rows(record: Result) -> list[tuple[str, float | None, float | None, str, str]]:
    """(label, error, its own tolerance, colour, over how many inputs) per checked candidate: the TF
    model, then each file."""
    rows = []
    if record.savedmodel and record.savedmodel.outputs and record.tf_error is not None:
        tf_worst = worst(record.savedmodel.outputs)
        rows.append(("TF model (onnx2tf), float32", record.tf_error, tf_worst.tolerance, TF_COLOUR, tf_worst.over))
    for d in record.deliverables:
        rows.append((d.label, d.worst.range_rel_err if d.verified else None, d.worst.tolerance if d.verified else None,
                     recipe_colour(d.recipe), d.worst.over if d.verified else ""))
    return rows


def error_chart(record: Result) -> str:
    """Each candidate's error against PyTorch on one log axis, a row each, with its own tolerance
    marked on its row and its number beside it: a file that missed its tolerance says so."""
    rows = _error_rows(record)
    if not rows:
        return ""
    parts = [f'<line x1="{_log_x(10.0 ** d, *ERR_RANGE):.1f}" y1="2" x2="{_log_x(10.0 ** d, *ERR_RANGE):.1f}" '
             f'y2="{len(rows) * ROW + 2}" stroke="#e2e2e2"><title>1e{d}</title></line>' for d in range(-9, 1, 3)]
    for i, (label, value, tolerance, colour, over) in enumerate(rows):
        middle = i * ROW + 7
        parts.append(f'<line x1="5" y1="{middle}" x2="{AXIS + 5}" y2="{middle}" stroke="#ccc"/>')
        if value is None or tolerance is None:
            parts.append(_text(8 + AXIS, i, "did not run", "faint"))
            continue
        x = _log_x(tolerance, *ERR_RANGE)
        parts.append(f'<line x1="{x:.1f}" y1="{middle - 5}" x2="{x:.1f}" y2="{middle + 5}" stroke="{MISS_COLOUR}" '
                     f'stroke-dasharray="2,1"><title>{html.escape(label)} tolerance {tolerance:g}</title></line>')
        missed = not value <= tolerance
        if math.isfinite(value):
            ring = f' stroke="{MISS_COLOUR}" stroke-width="1.5"' if missed else ""
            parts.append(f'<circle cx="{_log_x(value, *ERR_RANGE):.1f}" cy="{middle}" r="3.5" fill="{colour}"{ring}>'
                         f"<title>{html.escape(label)} error {value:.3g} {over}, tolerance {tolerance:g}</title></circle>")
        parts.append(_text(8 + AXIS, i, f"{value:.2g} > {tolerance:g}" if missed else f"{value:.2g}",
                           "miss" if missed else ""))
    return _svg(AXIS + 8 + LABEL, len(rows), "errors, log scale, each against its own tolerance", parts)


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


def _device_note(cells: dict) -> str:
    """Under the deliverable: the device it is for, the arena TFLite Micro needs, and whether its
    int8 figures come from the model's own samples."""
    notes = [f"for {cells['device']}" if cells["device"] else "",
             f"Micro arena {format_cell(cells['micro_arena_bytes'], 'bytes')}" if cells["micro_arena_bytes"] else "",
             f"int8 calibrated on {cells['calibration']}" if cells["calibration"] else ""]
    notes = [n for n in notes if n]
    return f'<br><small class="device">{html.escape("; ".join(notes))}</small>' if notes else ""


def _link_cell(model_id: str, links: dict) -> str:
    found = (links or {}).get(model_id, ())
    return ("<br><small>" + " ".join(f'<a href="{html.escape(href)}">{html.escape(name)}</a>' for name, href in found)
            + "</small>") if found else ""


def _device_table(records: dict[str, Result]) -> str:
    rows = "".join(f"<tr><td><code>{_breakable(m)}</code></td><td>{html.escape(d.label)}"
                   f"{' (delivered)' if delivered else ''}</td>"
                   f"<td>{html.escape(device_of(d) or '-')}</td>"
                   f'<td class="view">{html.escape(d.device_view())}</td></tr>' for m, d, delivered in device_rows(records))
    if not rows:
        return ""
    return (f"<h2>Each file as the device sees it</h2><p>{html.escape(DEVICE_VIEW)}</p><table><thead><tr>"
            f"<th>model</th><th>file</th><th>for</th><th>inputs and outputs</th></tr></thead><tbody>{rows}</tbody></table>")


def _layer_table(records: dict[str, Result]) -> str:
    """Each quantized file that missed or was repaired, with its layers ranked by the error they add."""
    rows = []
    for model_id, record in sorted(records.items()):
        for d in record.deliverables:
            if not d.layers:
                continue
            if d.repair is not None and d.repair.passed:
                outcome = f"repaired: {len(d.repair.kept_float)} layer(s) in float32, {d.repair.quantized_share:.1%} " \
                          "of the plain file's int8 weights still int8"
            else:
                outcome = f"not repaired: {d.repair.note}" if d.repair is not None else "missed"
            layers = "".join(f"<li>{_breakable(e.describe(d.kept_float))}</li>" for e in d.layers[:5])
            rows.append(f"<tr><td><code>{_breakable(model_id)}</code></td><td>{html.escape(d.label)}</td>"
                        f'<td class="view">{_breakable(outcome)}</td><td class="view"><ol>{layers}</ol></td></tr>')
    if not rows:
        return ""
    return ("<h2>Quantized files layer by layer</h2><p>Each quantized file that missed or was repaired, its layers "
            "against the float32 file's on the first two verification inputs: a layer's output error relative to each "
            "channel's spread, and what it adds to its inputs' error (the ranking the repair keeps layers in "
            "float32 by).</p><table><thead><tr><th>model</th><th>file</th><th>outcome</th><th>worst layers</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def render(records: dict[str, Result], versions: dict, gate: dict | None = None, ended: dict | None = None,
           links: dict[str, tuple[tuple[str, str], ...]] | None = None, *, run: dict | None = None,
           kept: dict | None = None) -> str:
    """The page. `links`: per model, (name, href) of its files that exist (summaries.artifact_links),
    relative to the page; `gate`: the baseline's verdict, whose marks say which models regressed;
    `run`, `kept`: this run, and the rows a partial run kept from earlier runs (each says which)."""
    gate, kept = gate or {}, kept or {}
    labels, marks = gate.get("labels", {}), gate.get("marks", {})
    regressed = {m for m in records if marks.get(m) in REGRESSIVE}
    longest = max([sum(r.stage_seconds.values()) for r in records.values()] + [0.0])
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["model", *(c.title for c in PAGE)])
    head += "<th>vs baseline</th>" if labels else ""
    head += ("<th>size against ONNX</th><th>error vs PyTorch (log, 1e-9..1), each against its tolerance</th>"
             "<th>seconds by stage</th>")
    rows = []
    for model_id in _order(records, marks):
        record = records[model_id]
        cells_by_key = row(record)
        if model_id in regressed and cells_by_key["outcome"] == "passed":
            cells_by_key["outcome"] = "regressed"  # it passed its checks, and lost what the baseline had
        colour = OUTCOME_COLOURS["regressed"] if model_id in regressed else OUTCOME_COLOURS.get(cells_by_key["outcome"],
                                                                                                  "#eee")
        earlier = f"<br><small>from {html.escape(run_of(model_id, kept))}</small>" if model_id in kept else ""
        cells = [f'<td class="id"><code>{_breakable(model_id)}</code>{_link_cell(model_id, links)}{earlier}</td>']
        cells += [f'<td{" class=wrap" if c.wrap else ""}>{_breakable(format_cell(cells_by_key[c.key], c.fmt))}'
                  f'{_device_note(cells_by_key) if c.key == "delivered" else ""}</td>' for c in PAGE]
        if labels:
            bad = model_id in regressed
            cells.append(f'<td class="wrap{" regress" if bad else ""}">{_breakable(labels.get(model_id, ""))}</td>')
        cells.append(f"<td>{size_chart(record)}</td>")
        cells.append(f"<td>{error_chart(record)}</td>")
        cells.append(f"<td>{time_chart(record.stage_seconds, longest)}</td>")
        title = html.escape(record.failure.message if record.failure else "")
        rows.append(f'<tr style="background:{colour}" title="{title}">' + "".join(cells) + "</tr>")
    counts = ", ".join(f"{n} {k}" for k, n in counts_of(records).items())
    counts += f"; {len(regressed)} regressed against the baseline" if regressed else ""
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
    partial = partial_line(run, kept, len(records))
    stage_legend = "".join(f'<span style="background:{c}"></span>{html.escape(s)}' for s, c in STAGE_COLOURS.items())
    recipe_legend = f'<span style="background:{TF_COLOUR}"></span>float32 (ONNX, TF model)' + "".join(
        f'<span class="key"><span style="background:{recipe.colour}"></span>{html.escape(recipe.label)}: '
        f"{html.escape(recipe.device)}</span>" for recipe in RECIPES.values())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>TFLite conversion summary</title>
<style>
body {{ font: 13px/1.35 system-ui, sans-serif; margin: 12px; color: #222; max-width: 1400px; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 2px 4px; text-align: left; }}
th {{ font-size: 12px; vertical-align: bottom; }} td {{ white-space: nowrap; }}
td.wrap {{ white-space: normal; min-width: 60px; max-width: 130px; }} small.device {{ color: #444; }}
td.id {{ white-space: normal; min-width: 150px; max-width: 210px; }}
td.view {{ white-space: normal; max-width: 900px; }}
th {{ background: #f3f3f3; }} .regress {{ color: #b00020; font-weight: bold; }}
svg text {{ font: 9px system-ui, sans-serif; fill: #222; }} svg text.miss {{ fill: {MISS_COLOUR}; font-weight: bold; }}
svg text.faint {{ fill: #888; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }}
.legend span.key {{ display: inline; width: auto; height: auto; margin: 0; white-space: nowrap; }}
</style></head><body>
<h1>TFLite conversion summary</h1>
{f'<p class="regress">{html.escape(ended_line(ended))}</p>' if ended else ""}
{f"<p>{html.escape(partial)}</p>" if partial else ""}
<p>{len(records)} models: {html.escape(counts)}. Errors are the largest |TFLite - PyTorch| relative to the
output's range on the same input, over the verification inputs (each error's tooltip says how many);
<code>err</code> and <code>cosine</code> are the deliverable's.</p>
<p class="legend">{recipe_legend}</p>
<p class="legend"><span style="border-left:2px dashed {MISS_COLOUR}"></span>each file's own tolerance (a number in
red: missed); seconds by stage: {stage_legend}</p>
{f"<h2>Failures</h2><ul>{failures}</ul>" if failures else ""}
{f"<h2>Checks that prove little</h2><ul>{caveats}</ul>" if caveats else ""}
{f"<h2>Baseline</h2><ul>{verdict}</ul>" if verdict else ""}
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
{_device_table(records)}
{_layer_table(records)}
<p><small>Versions: {html.escape(version_text)}</small></p>
</body></html>
"""
