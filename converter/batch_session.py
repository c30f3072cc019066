"""The batch as the controller sees it: the model tests it expects, every model's record as its
report arrives, the model a dead worker was running, and the verdict at the end of the run.

Plain Python, as syrupy's `SnapshotSession` is to its plugin: the hooks in pytest_plugin.py hand
it reports and node ids, one to three lines each, and nothing here is a hook, so a fast test
drives it with fake reports (tests/test_batch_session.py). It lives only where reports are
written: the xdist controller, or a plain run.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .baseline import GateFailure, GateOutcome
from .failures import FailureKind, Stage
from .live import cut_short, running_conversions, status_line, waiting_conversions
from .results import Outcome, Result
from .settings import Settings
from .summaries import SummariesUnwritten, conclude, relative_dirs

# what xdist writes into the report of an item whose worker died (xdist 3.8's DSession.handle_crashitem)
WORKER_CRASH_WORDS = "crashed while running"


@dataclass(frozen=True)
class GateCase:
    """A failure of the baseline gate as a test case: its node id, the file it names, its headline."""

    nodeid: str
    path: str
    headline: str
    failure: GateFailure
    collected: bool  # the node id is a test of this run (a regressed model's), not the baseline's


def outcome_of(report) -> Outcome:
    if hasattr(report, "wasxfail") and report.skipped:
        return Outcome.XFAILED
    # xfails are strict: a model that passes against its [expect] is a failed test (XPASS(strict))
    return Outcome.PASSED if report.passed else Outcome.FAILED


def no_result_message(report) -> str:
    lines = [ln.strip() for ln in str(report.longrepr or "").splitlines() if ln.strip()]
    reason = lines[0] if lines else "no report"
    if WORKER_CRASH_WORDS in reason:
        return f"the pytest worker converting it was killed or crashed ({reason})"
    return f"no result from the test process ({reason})"


class BatchSession:
    """Records, expected items and the end-of-run verdict of one batch.

    `discover`: the discovered model ids (called once, when first needed); `escape`: a model id
    as pytest writes it into a parametrized test's node id (pytest_internals.escaped_id)."""

    def __init__(self, settings: Settings, *, discover: Callable[[], Iterable[str]], escape: Callable[[str], str],
                 rootpath: Path, update: bool = False):
        self.settings = settings
        self.rootpath = Path(rootpath)
        self.update = update
        self.records: dict[str, Result] = {}
        self.expected: set[str] = set()  # node ids of the model tests collected (under xdist: by the workers)
        self.started = time.time()  # a progress file from before this run describes no conversion of it
        self.summary: dict | None = None
        self.gate: GateOutcome | None = None
        self.unwritten: list[str] = []  # reports the disk had no room for
        self._discover, self._escape = discover, escape
        self._discovered: set[str] | None = None
        self._escaped: dict[str, str] | None = None
        self._model_of_node: dict[str, str] = {}  # node id -> model id, from every report that named it
        self._from_items: set[str] = set()  # models whose record came from their own item

    def discovered(self) -> set[str]:
        if self._discovered is None:
            self._discovered = set(self._discover())
        return self._discovered

    # --- what runs -------------------------------------------------------------------------

    def expect(self, nodeids: Iterable[str]) -> None:
        """Model tests collected here (a plain run, or the controller's own collection)."""
        self.expected |= set(nodeids)

    def expect_collected_by_worker(self, nodeids: Iterable[str]) -> None:
        """xdist hands the controller a worker's collection as node ids only: the model tests among them."""
        self.expected |= {i for i in nodeids if self.model_of(i)}

    def record(self, report) -> None:
        """A test's report: its model's record (with the test's outcome; for a test of your own that
        took the model's conversion, the model's own verdict, unless the model's item gave one), or,
        for a test that failed before the model had a result (a dead worker, the outer timeout), a crash."""
        if getattr(report, "tflite_gate", None):
            return  # the gate's own verdict, reported back as a test case (gate_cases)
        model_id = getattr(report, "tflite_model_id", None)
        if model_id:
            self._model_of_node[report.nodeid] = model_id
        data = getattr(report, "tflite_result", None)
        judged = getattr(report, "tflite_outcome", None)  # a test of your own: the model's verdict, not the test's
        if data is not None and not (judged and model_id in self._from_items):  # the model's own item speaks for it
            result = dataclasses.replace(Result.from_dict(data), outcome=Outcome(judged) if judged else outcome_of(report))
            self.records[result.model_id] = result
            if not judged:
                self._from_items.add(result.model_id)
        elif report.failed and (model_id := model_id or self.model_of(report.nodeid)) and model_id not in self.records:
            # a report xdist built for a dead worker carries no id of ours (and an xdist without
            # pytest_handlecrashitem never tells us the item): its node id names the model
            self.records[model_id] = Result.failed(model_id, "", FailureKind.CRASH, Stage.TEST,
                                                   no_result_message(report), outcome=Outcome.FAILED)

    def attribute_crash(self, nodeid: str, report) -> None:
        """xdist's report of the item a dead worker was running (`pytest_handlecrashitem`) carries
        the node id only: it is given the model's id, so that `record` fails that model."""
        model_id = self.model_of(nodeid)
        if model_id:
            report.tflite_model_id = model_id

    def nodeid_of(self, model_id: str) -> str | None:
        """The node id of the model's test in this run: the plugin's item (named by the id), else the
        first test of your own that took its conversion."""
        ids = sorted(n for n, m in self._model_of_node.items() if m == model_id)
        items = [n for n in ids if n.rsplit("::", 1)[-1] == model_id]
        return (items or ids or [None])[0]

    def model_of(self, nodeid: str) -> str | None:
        """The model a node id names: the one a report of it named (its setup's report arrives
        before its worker can die in the call), else read from the id: `<models folder>::<id>` for
        the plugin's items, `…::test_x[<escaped id>]` for a test of your own taking `model_case`
        (whose `conversion` fixture converts during setup, before any report names the model)."""
        if nodeid in self._model_of_node:
            return self._model_of_node[nodeid]
        discovered = self.discovered()
        item = nodeid.rsplit("::", 1)[-1]
        if "::" in nodeid and item in discovered:
            return item
        if not nodeid.endswith("]") or "[" not in item:
            return None
        if self._escaped is None:
            self._escaped = {self._escape(m): m for m in discovered}
        return self._escaped.get(item.split("[", 1)[1][:-1])

    def status_line(self) -> str:
        s = self.settings
        return status_line(len(self.records), len(self.expected) or None,
                           running_conversions(s.artifacts_dir, since=self.started - 1), s.slow_stage_fraction,
                           waiting_conversions(s.artifacts_dir, since=self.started - 1))

    # --- the end of the run ----------------------------------------------------------------

    def finish(self, *, ended_by: str | None, versions: dict, signalled: bool = False) -> bool:
        """Judge the records against the baseline and write the summaries; False when there was
        nothing to conclude (no model ran, and no signal to say so). `ended_by`: the signal
        ("SIGTERM", "SIGINT") or "an interrupt" for a run cut short, which says which models were
        stopped midway and how many did not run, and is not judged."""
        if not self.records and not signalled:
            return False
        s = self.settings
        selected = {m for m in map(self.model_of, self.expected) if m} | set(self.records)
        ended = None
        if ended_by:  # what did not run is said, not left out: a cut run must not read as complete
            stopped = cut_short(s.artifacts_dir, self.started, self.records)  # they ran: not "did not run"
            ended = {"by": ended_by, "stopped": stopped,
                     "not_run": max(0, len(self.expected) - len(self.records) - len(stopped))}
        try:
            self.summary, self.gate = conclude(
                self.records, reports_dir=s.reports_dir, versions=versions,
                settings={"models_dirs": [str(d) for d in s.models_dirs], "tflite_dir": str(s.tflite_dir),
                          "threads": s.threads, "memory_limit_mb": s.memory_limit_mb, "timeout": s.timeout,
                          "max_conversions": s.max_conversions, "preload": s.preload},
                baseline=s.baseline, thresholds=s.thresholds,
                models_dirs=relative_dirs(s.models_dirs, self.rootpath), discovered=self.discovered(),
                update=self.update, judge=ended is None, ended=ended,
                unselected=self.discovered() - selected, started=self.started)
        except SummariesUnwritten as exc:
            self.summary, self.gate = exc.summary, exc.gate
            self.unwritten.append(str(exc))
        return True

    def gate_cases(self) -> list[GateCase]:
        """What fails the gate and no test shows yet, as test cases for JUnit and the terminal: a
        regressed model under its own test's node id (so `--lf` reruns it), a model gone from the
        baseline and an unusable baseline under the baseline file's path."""
        if self.gate is None:
            return []
        (baseline,) = relative_dirs([self.settings.baseline], self.rootpath)
        cases = []
        for failure in self.gate.unseen_failures(self.records):
            test = failure.model_id and self.nodeid_of(failure.model_id)
            nodeid = test or "::".join(filter(None, (baseline, failure.model_id)))
            cases.append(GateCase(nodeid, nodeid.split("::", 1)[0],
                                  f"{failure.model_id or 'the baseline'} against the baseline", failure, bool(test)))
        return cases

    def fails_the_run(self, run_passed: bool) -> bool:
        """A run whose reports are missing must not read as a success; a regression against the
        baseline fails a run that otherwise passed."""
        return bool(self.unwritten) or (run_passed and self.gate is not None and self.gate.failed)
