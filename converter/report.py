"""Human-readable views of Results: the one-model screen, and the batch summaries."""
from __future__ import annotations

from pathlib import Path

from .columns import DEVICE_VIEW, TABLE, device_of, device_rows, onnx2tf_runs_line, row
from .failures import Stage
from .recipes import RECIPES
from .results import Result, labelled_comparisons


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def format_result(result: Result, settings=None) -> str:
    lines = [f"{result.model_id}: {'PASS' if result.passed else 'FAIL'}  ({result.model_path})"]
    if result.failure:
        lines.append(f"  {result.failure.one_line(result.model_id)}")
    times = "  ".join(f"{s} {result.stage_seconds[s]:.1f}s" for s in map(str, Stage) if s in result.stage_seconds)
    runs = f"   onnx2tf runs {result.onnx2tf_runs}" if result.onnx2tf_runs else ""
    when = " when it was converted" if result.cache_hit else ""  # not this run's: it converted nothing
    lines.append(f"  stages{when}: {times or '-'}   total {result.seconds:.1f}s   peak RSS {result.peak_rss_mb:.0f} MB{runs}")
    if result.load:
        shapes = ", ".join(f"{n} {list(s)}" for n, s in zip(result.load.input_names, result.load.input_shapes))
        lines.append(f"  loaded: {result.load.format}; PyTorch's inputs {shapes}")
    if result.export:
        lines.append(f"  ONNX: {result.export.exporter} exporter, opset {result.export.opset}, "
                     f"{_mb(result.export.onnx_bytes)}  (tried: {'; '.join(result.export.attempts)})")
    for caveat in result.caveats:
        lines.append(f"  warning: {caveat.describe()}")
    if result.cache_hit:
        lines.append("  restored from the cache: the same model bytes, spec and tools; its TFLite files run again and judged "
                     "against today's tolerances (--tflite-no-cache converts it again)")
    for fix in result.fixes:
        lines.append(f"  fixed automatically: {fix.label} ({fix.reason})")
    if result.divergence:
        what = "its log" if result.divergence.table.endswith(".log") else "per-node table"
        lines.append(f"  diagnosis: {result.divergence.describe()}; {what} {result.divergence.table}")
    if result.deliverables:
        onnx = result.export.onnx_bytes if result.export else 0
        sizes = ", ".join(f"{d.recipe} {_mb(d.bytes)}" + (f" (x{d.bytes / onnx:.2f} of ONNX)" if onnx else "")
                          for d in result.deliverables)
        flex = f"; Flex ops {', '.join(result.tflite.flex_ops)}" if result.tflite and result.tflite.flex_ops else ""
        lines.append(f"  TFLite: {sizes}{flex}")
    for refusal in result.tflite.refused if result.tflite else ():
        lines.append(f"  BAD {refusal.describe()}")
    for label, c in labelled_comparisons(result.export, result.savedmodel, result.deliverables):
        lines.append(f"  {'ok ' if c.passed else 'BAD'} {c.describe(label)}")
    if result.savedmodel:
        moved = [name for (name, _), perm in zip(result.savedmodel.output_names, result.savedmodel.output_perms)
                 if list(perm) != sorted(perm)]
        if moved:
            lines.append(f"  channels-last TFLite outputs (compared after transposing back): {', '.join(moved)}")
    for d in result.deliverables:
        if d.runtime is not None:
            lines.append(f"  {'ok ' if d.runtime.ok else 'BAD'} {d.label} where it goes: {d.runtime.describe()}")
    for d in result.deliverables:
        lines += layer_lines(d)
    for d in result.deliverables:
        if d.device_view():
            lines.append(f"  {d.label} as the device sees it: {d.device_view()}")
    if result.tflite and result.tflite.calibration and not result.tflite.random_calibration:
        lines.append(f"  int8 calibrated on {result.tflite.calibration}")  # random: a warning line above
    if result.verify and not any(d.runtime for d in result.deliverables):
        lines.append(f"  deployable without TensorFlow: {'yes' if result.verify.deployable else 'no'}"
                     + (f" ({result.verify.deploy_message})" if result.verify.deploy_message else ""))
    if result.deliverable:
        lines.append(f"  deliverable ({result.delivered}): {result.deliverable}")
        if result.delivered in RECIPES and RECIPES[result.delivered].integer_io:
            stem = Path(result.deliverable).with_suffix("")
            lines.append(f"  C array for TensorFlow Lite Micro firmware: {stem}.cc, {stem}.h")
    if settings is not None:
        lines.append(f"  artifacts and log: {settings.artifacts_for(result.model_id)}/")
    return "\n".join(lines)


def layer_lines(d) -> list[str]:
    """A quantized file that missed or was repaired: its worst layers against the float32 file, and
    what the repair did (stages/repair.py)."""
    lines = []
    if d.layers:
        worst = "; ".join(e.describe(d.kept_float) for e in d.layers[:3])
        lines.append(f"  {d.label} layer by layer against the float32 file (worst first, on the first two "
                     f"verification inputs): {worst}")
    if d.repair is not None and not d.repair.passed:
        lines.append(f"  {d.label} not repaired: {d.repair.note}")
    return lines


def format_cell(value, kind: str) -> str:
    if value is None or value == "":
        return "-"
    if kind == "bytes":
        return _mb(value)
    if kind == "err":
        return f"{value:.2e}"
    if kind == "float":
        return f"{value:.4f}"
    if kind == "secs":
        return f"{value:.1f}"
    return str(value)


def _cell(text: str) -> str:
    """One Markdown table cell: a '|' or a line break (a model named 'a\\nb') would split its row."""
    return " ".join(text.replace("|", "\\|").splitlines())


def counts_of(records: dict[str, Result]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records.values():
        key = record.outcome.value if record.outcome else record.status
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def build_summary(records: dict[str, Result], versions: dict, settings: dict) -> dict:
    """summary.json: every model's record as it is (`models`: what the merge reads back), the counts,
    and the table's cells of each model (`table`: for people and scripts, never read back)."""
    from .results import SCHEMA_VERSION

    return {"schema_version": SCHEMA_VERSION, "versions": versions, "settings": settings,
            "counts": counts_of(records), "models": {m: records[m].to_dict() for m in sorted(records)},
            "table": {m: row(records[m]) for m in sorted(records)}}


def ended_line(ended: dict | None) -> str | None:
    if not ended:
        return None
    stopped = ended.get("stopped") or []
    midway = f"{len(stopped)} model(s) were stopped mid-conversion ({', '.join(stopped)}), " if stopped else ""
    return (f"The run was ended by {ended['by']} before it finished: {midway}{ended['not_run']} model(s) did not run, "
            "and nothing was delivered after it.")


def partial_line(run: dict | None, kept: dict, rows: int) -> str | None:
    """What a partial run (`-k`, `--lf`, a split) wrote: its own rows, and those kept from earlier runs."""
    if not run or not run.get("partial"):
        return None
    if not kept:
        return (f"A partial run (-k, --lf or a split), started {run['started']}: its {rows} row(s) only, "
                "no earlier summary of these models folders held the models it did not select.")
    return (f"A partial run (-k, --lf or a split), started {run['started']}: {rows - len(kept)} row(s) from this run; "
            f"{len(kept)} rows are kept from earlier runs, each saying which run it comes from.")


def run_of(model_id: str, kept: dict) -> str:
    """The run a row comes from, for the "run" column of a partial run's summary."""
    return (kept[model_id] or "an earlier run") if model_id in kept else "this run"


def summary_markdown(records: dict[str, Result], versions: dict, gate: dict | None = None,
                     ended: dict | None = None, *, run: dict | None = None, kept: dict | None = None) -> str:
    """The table with the row's columns, and the verdict against the baseline when there is one.
    `kept`: rows a partial run kept from earlier runs (model -> the start of the run each comes from)."""
    labels, kept = (gate or {}).get("labels", {}), kept or {}
    counts = ", ".join(f"{n} {k}" for k, n in counts_of(records).items()) or "no models"
    partial = partial_line(run, kept, len(records))
    lines = ["# TFLite conversion summary", ""] + ([ended_line(ended), ""] if ended else []) + [
             f"{len(records)} models: {counts}.", ""] + ([partial, ""] if partial else []) + [
             "Errors are the largest |TFLite - PyTorch| relative to the output's range on the same input, over "
             "all outputs and the verification inputs (`inputs` says how many); `err` and `cosine` are the "
             "deliverable's; `task` counts the decisions that agree, for outputs that declare their task.", ""]
    titles = ["model"] + [c.title for c in TABLE] + (["vs baseline"] if labels else []) + (["run"] if kept else [])
    lines += ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for model_id in sorted(records):
        cells = row(records[model_id])
        out = [f"`{model_id}`"] + [format_cell(cells[c.key], c.fmt) for c in TABLE]
        out += [labels.get(model_id, "")] if labels else []
        out += [run_of(model_id, kept)] if kept else []
        lines.append("| " + " | ".join(_cell(c) for c in out) + " |")
    failures = [(m, r) for m, r in sorted(records.items()) if r.failure]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- `{_cell(m)}` ({row(r)['outcome']}): {r.failure.line()}" for m, r in failures]
    runs = onnx2tf_runs_line(records.values())
    lines += ["", runs + "."] if runs else []
    caveats = [(m, c) for m, r in sorted(records.items()) for c in r.caveats]
    if caveats:
        lines += ["", "## Checks that prove little", ""]
        lines += [f"- `{_cell(m)}`: {c.describe()}" for m, c in caveats]
    devices = device_rows(records)
    if devices:
        lines += ["", "## Each file as the device sees it", "", DEVICE_VIEW, "",
                  "| model | file | for | inputs and outputs |", "|---|---|---|---|"]
        lines += [f"| `{_cell(m)}` | {d.label}{' (delivered)' if delivered else ''} | "
                  f"{_cell(device_of(d) or '-')} | {_cell(d.device_view())} |"
                  for m, d, delivered in devices]
    kept = sum(r.artifacts_bytes or 0 for r in records.values())
    lines += ["", f"Artifacts on disk: {_mb(kept)} (ONNX files and SavedModels are kept for failed models only, "
                  "unless --tflite-keep-intermediates).",
              "", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)
