"""The end of a batch, wherever it ran: the verdict against the baseline and the summaries.

The pytest controller calls `conclude` once with every worker's rows; `python -m
converter.merge` calls it once with every shard's rows, so a model regressing in shard 3 fails
the merged gate exactly as in a single run.
"""
from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path

from . import baseline as baseline_file
from .failures import is_disk_full
from .html_report import render as render_html
from .protocol import write_json_atomic, write_text_atomic
from .report import build_summary, summary_markdown
from .results import Outcome, Result
from .settings import file_name
from .summary_file import StoredSummary, SummaryUnreadable, read_summary
from .thresholds import Thresholds

SUMMARY_FILES = ("summary.json", "summary.md", "summary.html")


class SummariesUnwritten(Exception):
    """The summaries could not be written (a full disk): one line, and no stale ones left behind;
    the summary and the gate's outcome it holds are still shown."""

    def __init__(self, message: str, summary: dict, gate):
        super().__init__(message)
        self.summary, self.gate = summary, gate


def relative_dirs(dirs, root: Path) -> list[str]:
    """Models folders as the baseline records them: relative to the rootdir where possible."""
    out = []
    for d in dirs:
        try:
            out.append(Path(d).resolve().relative_to(Path(root).resolve()).as_posix())
        except ValueError:
            out.append(Path(d).resolve().as_posix())
    return sorted(out)


ARTIFACT_LINKS = (("log", "convert.log"), ("result", "result.json"))


def artifact_links(records: dict[str, Result], page_folder: Path,
                   reports_of: dict[str, Path] | None = None) -> dict[str, tuple[tuple[str, str], ...]]:
    """Per model, its log and record that exist, as links relative to the page's folder: a model's
    artifacts lie in the reports folder that converted it (`reports_of`; a merge's are its shards'),
    not beside a merged page, and a model that never converted has none."""
    links = {}
    for model_id in records:
        folder = Path((reports_of or {}).get(model_id, page_folder)) / "artifacts" / file_name(model_id)
        found = tuple((name, urllib.parse.quote(Path(os.path.relpath(folder / file, page_folder)).as_posix()))
                      for name, file in ARTIFACT_LINKS if (folder / file).is_file())
        if found:
            links[model_id] = found
    return links


def conclude(records: dict[str, Result], *, reports_dir: Path, versions: dict, settings: dict, baseline: Path,
             thresholds: Thresholds, models_dirs: list[str], discovered: set[str], update: bool = False,
             judge: bool = True, ended: dict | None = None, unselected: set[str] = frozenset(),
             started: float | None = None,
             reports_of: dict[str, Path] | None = None) -> tuple[dict, baseline_file.GateOutcome | None]:
    """Judge `records` (model id -> Result, its outcome set) against the baseline, then write the
    summaries. `ended`: how a run cut short ended ({"by": "SIGTERM", "not_run": 15}), said in each.
    `unselected`: the models a partial run (`-k`, `--lf`, a split) did not select: not judged, and
    their rows in the summary already in `reports_dir` are kept, each saying which run it comes from.
    `reports_of`: the reports folder holding each model's artifacts, where it is not `reports_dir`."""
    records = dict(records)
    gate = None
    if judge:  # a partial (interrupted) run is not judged
        gate = baseline_file.gate(baseline, records, discovered=discovered, thresholds=thresholds,
                                  versions=versions, models_dirs=models_dirs, update=update)
        for model_id in gate.gone:  # listed, so the table shows what vanished
            records[model_id] = Result.gone(model_id)
    folder = Path(reports_dir)
    run = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if started is None else started)),
           "partial": bool(unselected)}
    earlier = _earlier_rows(folder / "summary.json", unselected, settings.get("models_dirs"))
    summary = build_summary({**records, **earlier.rows}, versions, settings)
    summary["run"] = run
    if earlier.rows:
        summary["kept_from_earlier_runs"] = dict(sorted(earlier.kept.items()))
    verdict = None
    if gate is not None:
        verdict = summary["baseline"] = {"path": str(baseline), **gate.to_dict()}
        verdict["labels"] = dict(sorted({**earlier.labels, **verdict["labels"]}.items()))  # the kept rows' column too
        verdict["marks"] = dict(sorted({**earlier.marks, **verdict["marks"]}.items()))
    if ended is not None:
        summary["ended"] = ended
    rows, kept = {**records, **earlier.rows}, summary.get("kept_from_earlier_runs", {})
    try:
        write_json_atomic(folder / "summary.json", summary)
        write_text_atomic(folder / "summary.md", summary_markdown(rows, versions, verdict, ended, run=run, kept=kept))
        write_text_atomic(folder / "summary.html", render_html(rows, versions, verdict, ended,
                                                              artifact_links(rows, folder, reports_of), run=run, kept=kept))
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        for name in SUMMARY_FILES:  # a previous run's summaries must not pass for this one's
            (folder / name).unlink(missing_ok=True)
        raise SummariesUnwritten(f"the summaries cannot be written to {folder}: no space left on its disk "
                                 "(the previous run's were removed)", summary, gate) from None
    return summary, gate


def _earlier_rows(path: Path, unselected: set[str], models_dirs) -> StoredSummary:
    """The rows of the unselected models in the summary a partial run replaces (of the same models
    folders), with the run each comes from; none where there is no usable summary."""
    if not unselected or not path.exists():
        return StoredSummary({})
    try:
        earlier = read_summary(path)
    except SummaryUnreadable:
        return StoredSummary({})  # nothing to keep: the new summary holds this run's rows only, and says it is partial
    if earlier.models_dirs != models_dirs:
        return StoredSummary({})
    keep = {m: r for m, r in earlier.rows.items() if m in unselected and r.outcome is not Outcome.GONE}
    return StoredSummary(keep, kept={m: earlier.run_of(m) for m in keep},
                         labels={m: v for m, v in earlier.labels.items() if m in keep},
                         marks={m: v for m, v in earlier.marks.items() if m in keep})
