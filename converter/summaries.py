"""The end of a batch, wherever it ran: the verdict against the baseline and the summaries.

The pytest controller calls `conclude` once with every worker's rows; `python -m
converter.merge` calls it once with every shard's rows, so a model regressing in shard 3 fails
the merged gate exactly as in a single run.
"""
from __future__ import annotations

from pathlib import Path

from . import baseline as baseline_file
from .html_report import render as render_html
from .protocol import write_json_atomic, write_text_atomic
from .report import build_summary, summary_markdown
from .rows import Outcome, SummaryRow
from .thresholds import Thresholds

SUMMARY_FILES = ("summary.json", "summary.md", "summary.html")


def relative_dirs(dirs, root: Path) -> list[str]:
    """Models folders as the baseline records them: relative to the rootdir where possible."""
    out = []
    for d in dirs:
        try:
            out.append(Path(d).resolve().relative_to(Path(root).resolve()).as_posix())
        except ValueError:
            out.append(Path(d).resolve().as_posix())
    return sorted(out)


def conclude(rows: dict[str, dict], *, reports_dir: Path, versions: dict, settings: dict, baseline: Path,
             thresholds: Thresholds, models_dirs: list[str], discovered: set[str], update: bool = False,
             judge: bool = True) -> tuple[dict, baseline_file.GateOutcome | None]:
    """Judge `rows` (model id -> SummaryRow dict) against the baseline, then write the summaries."""
    rows = dict(rows)
    gate = None
    if judge:  # a partial (interrupted) run is not judged
        gate = baseline_file.gate(baseline, rows, discovered=discovered, thresholds=thresholds,
                                  versions=versions, models_dirs=models_dirs, update=update)
        for model_id in gate.gone:  # listed, so the table shows what vanished
            rows[model_id] = SummaryRow(outcome=Outcome.GONE, status="gone").to_dict()
    summary = build_summary(rows, versions, settings)
    if gate is not None:
        summary["baseline"] = {"path": str(baseline), **gate.to_dict()}
    write_json_atomic(Path(reports_dir) / "summary.json", summary)
    write_text_atomic(Path(reports_dir) / "summary.md", summary_markdown(summary))
    write_text_atomic(Path(reports_dir) / "summary.html", render_html(summary))
    return summary, gate
