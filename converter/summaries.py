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
from .results import Result
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


def conclude(records: dict[str, Result], *, reports_dir: Path, versions: dict, settings: dict, baseline: Path,
             thresholds: Thresholds, models_dirs: list[str], discovered: set[str], update: bool = False,
             judge: bool = True) -> tuple[dict, baseline_file.GateOutcome | None]:
    """Judge `records` (model id -> Result, its outcome set) against the baseline, then write the summaries."""
    records = dict(records)
    gate = None
    if judge:  # a partial (interrupted) run is not judged
        gate = baseline_file.gate(baseline, records, discovered=discovered, thresholds=thresholds,
                                  versions=versions, models_dirs=models_dirs, update=update)
        for model_id in gate.gone:  # listed, so the table shows what vanished
            records[model_id] = Result.gone(model_id)
    summary = build_summary(records, versions, settings)
    verdict = None
    if gate is not None:
        verdict = summary["baseline"] = {"path": str(baseline), **gate.to_dict()}
    write_json_atomic(Path(reports_dir) / "summary.json", summary)
    write_text_atomic(Path(reports_dir) / "summary.md", summary_markdown(records, versions, verdict))
    write_text_atomic(Path(reports_dir) / "summary.html", render_html(records, versions, verdict))
    return summary, gate
