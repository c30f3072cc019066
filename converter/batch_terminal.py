"""What the batch says on the terminal: the header, the status line while it runs, and the
summary at the end. Written through pytest's public terminal API only (`write_line`, `line`,
`section`, `Config.get_terminal_writer`); the words come from the batch session and the records.
"""
from __future__ import annotations

import contextlib
import time

from .baseline import Severity
from .batch_session import BatchSession
from .columns import onnx2tf_runs_line
from .environment import tool_versions
from .live import StatusThread
from .report import counts_of, ended_line
from .results import Outcome
from .settings import Settings
from .spec import OPSET


def header_lines(s: Settings, *, cache_note: str | None, capped: int | None, update: bool) -> list[str]:
    """The run's versions, folders, limits and gate, under pytest's own header."""
    versions = ", ".join(f"{k} {v}" for k, v in tool_versions().items())
    lines = [f"tflite harness: {versions}",
             f"models from: {', '.join(str(d) for d in s.models_dirs) or '(none)'}",
             f"deliverables: {s.tflite_dir}  reports: {s.reports_dir}",
             f"per conversion: {s.threads} thread(s), memory ceiling {s.memory_limit_mb} MB, "
             f"timeout {s.timeout:g} s; at most {s.max_conversions} at once on this machine"
             f"{'' if s.preload else '; no preloaded process'}"]
    lines += [f"cache: {cache_note}"] if cache_note else []
    lines += [f"workers: -n {capped} capped at {s.max_conversions}: more would only wait for a conversion "
              "slot (--tflite-max-conversions)"] if capped else []
    return lines + [
        f"baseline: {s.baseline}{' (will be rewritten)' if update else ''}"
        f"  regression thresholds: {s.thresholds.describe()}"] + [f"deprecated: {d}" for d in s.deprecations]


def end_open_line(config) -> None:
    """What follows the progress dots starts a line of its own: xdist's dots leave the reporter's own
    newline bookkeeping (`ensure_newline`) unset, so ask the terminal writer where the line is
    (Config's public get_terminal_writer, checked against pytest 9.2; tests/e2e/test_progress.py
    shows the status line)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and config.get_terminal_writer().width_of_current_line:
        reporter.write("\n")


class StatusLine:
    """The batch's status line every `status_interval` seconds: from a thread of its own on the
    xdist controller (which only waits for reports), from the conversion's watch loop in a plain
    run (which converts in its main thread). Quiet under -q; never in JUnit or the summaries."""

    def __init__(self, config, batch: BatchSession):
        self.config, self.batch = config, batch
        self._thread: StatusThread | None = None

    def wanted(self) -> bool:
        return (self.config.option.verbose >= 0 and not self.config.option.collectonly
                and self.config.pluginmanager.get_plugin("terminalreporter") is not None)

    def start(self) -> None:
        if self.wanted() and getattr(self.config.option, "numprocesses", None):
            self._thread = StatusThread(self.write, self.batch.status_line,
                                        self.batch.settings.status_interval).start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    def write(self, line: str | None = None) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            end_open_line(self.config)
            reporter.write_line(line or self.batch.status_line())

    def ticker(self):
        """For a plain run: the conversion's watch loop calls this, in the main thread."""
        if not self.wanted():
            return None
        interval, last = self.batch.settings.status_interval, [time.monotonic()]

        def tick(_progress: dict, _elapsed: float) -> None:  # also while waiting for a conversion slot
            if time.monotonic() - last[0] >= interval:
                last[0] = time.monotonic()
                self.write()
        return tick


def write_summary(reporter, batch: BatchSession, notes: list[str], *, causes: bool = True) -> None:
    """The end of the run on the terminal: missing reports, notes, the counts, one line per failed
    model, warnings, and the verdict against the baseline. A failed model's line is its stage and
    kind, an index to its FAILURES entry, which tells the cause, the log and what to do once;
    with `causes` (no FAILURES section: --tb=no) the line carries the cause (Failure.line, as
    in every report)."""
    for line in batch.unwritten:
        reporter.line(f"ERROR: {line}", red=True)
    for note in notes:
        reporter.line(f"note: {note}")
    summary = batch.summary
    if not summary:
        return
    s, counts = batch.settings, counts_of(batch.records)  # this run's, not the rows a partial run kept
    reporter.section("tflite conversion")
    if summary.get("ended"):
        reporter.line(ended_line(summary["ended"]), red=True)
    run = len(batch.records)
    reporter.line(f"{counts.get('passed', 0)} converted and verified, {counts.get('failed', 0)} failed, "
                  f"{counts.get('xfailed', 0)} failed as expected, of {run} model{'s' if run != 1 else ''}")
    runs = onnx2tf_runs_line(batch.records.values())
    if runs:
        reporter.line(runs)
    for model_id, record in sorted(batch.records.items()):
        if record.outcome is Outcome.FAILED and record.failure:
            failure = record.failure
            index = f"{model_id}: {failure.stage} [{failure.kind}]"
            reporter.line(f"  {failure.line(model_id, style='terminal') if causes else index}")
        for caveat in record.caveats:
            reporter.line(f"  warning {model_id}: {caveat.describe()}", yellow=True)
        if record.export and record.export.opset != OPSET and record.outcome is not Outcome.FAILED:
            reporter.line(f"  note {model_id}: the {record.export.exporter} exporter wrote opset "
                          f"{record.export.opset}, not {OPSET} (its down-conversion failed); the model "
                          "was converted and verified at that opset")
    written = (s.reports_dir / "summary.md").is_file()  # a full disk: named in the ERROR above, not here
    kept = len(summary.get("kept_from_earlier_runs", {}))
    rows = f"; {run} row{'s' if run != 1 else ''} from this run, {kept} kept from earlier runs" if kept else ""
    reporter.line(f"summary: {s.reports_dir / 'summary.md' if written else 'not written'} (and .html, .json{rows})   "
                  f"deliverables: {s.tflite_dir}")
    if batch.gate is not None:
        reporter.section("tflite baseline")
        for line in batch.gate.lines:
            reporter.line(line.text, red=line.severity in (Severity.REGRESSION, Severity.ERROR),
                          green=line.severity is Severity.IMPROVEMENT)
