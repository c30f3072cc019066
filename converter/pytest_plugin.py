"""pytest plugin: every discovered model is a test case converted in an isolated child.

Glue only: options, parametrization, the conversion fixture, JUnit properties and the
controller-side summary. The work happens in converter/ (runner, report).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import baseline as baseline_file
from .assertions import ExpectedConversionFailure, junit_properties
from .baseline import parse_thresholds
from .discovery import discover
from .environment import tool_versions
from .html_report import render as render_html
from .lifeline import terminate_on_sigterm
from .output_folders import OutputsError, prepare
from .report import build_summary, summary_markdown, summary_row
from .results import FailureKind, Result, write_json_atomic, write_text_atomic
from .runner import convert_case
from .settings import SETTINGS, Settings, SettingsError, argparse_help, resolve
from .spec import OPSET

OPTIONS = {  # setting -> command-line flag
    "models_dir": "--models-dir", "tflite_dir": "--tflite-dir", "reports_dir": "--reports-dir",
    "input_shape": "--input-shape", "timeout": "--conversion-timeout",
    "memory_limit_mb": "--memory-limit-mb", "threads": "--conversion-threads",
    "baseline": "--baseline", "regression_threshold": "--regression-threshold",
}
PATH_OPTIONS = ("models_dir", "tflite_dir", "reports_dir", "baseline")
REPEATABLE = ("models_dir", "input_shape")
OUTER_TIMEOUT_MARGIN = 120  # pytest-timeout fires only if the pipeline's own timeout did not
SETTINGS_KEY = pytest.StashKey[Settings]()
CONVERSIONS_KEY = pytest.StashKey[dict]()
RESULT_ON_ITEM = pytest.StashKey[Result]()
LOCK_KEY = pytest.StashKey[object]()


def pytest_addoption(parser):
    group = parser.getgroup("tflite", "PyTorch -> TFLite conversion harness")
    for name, flag in OPTIONS.items():
        env_var, ini_key, default, help_text = SETTINGS[name]
        extra = {"type": _threshold_option} if name == "regression_threshold" else {}
        group.addoption(flag, dest=f"tflite_{name}", action="append" if name in REPEATABLE else "store",
                        default=None, help=argparse_help(f"{help_text} [env {env_var}, ini {ini_key}]"),
                        **extra)
        parser.addini(ini_key, help=help_text, default=None)
    group.addoption("--baseline-update", dest="tflite_baseline_update", action="store_true",
                    help="rewrite the baseline from this run instead of gating on it")


def _threshold_option(text: str) -> str:
    """Checked when options are parsed (a usage error), kept as a plain string for xdist."""
    import argparse

    try:
        parse_thresholds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _workers(config) -> int:
    if hasattr(config, "workerinput"):
        return int(config.workerinput.get("workercount", 1))
    n = getattr(config.option, "numprocesses", None)
    if n in (None, 0):
        return 1
    return n if isinstance(n, int) else (os.cpu_count() or 1)


def _settings(config) -> Settings:
    cli = {}
    invocation = Path(config.invocation_params.dir)
    for name in OPTIONS:
        value = config.getoption(f"tflite_{name}")
        if value and name in PATH_OPTIONS:  # relative to where pytest ran
            value = [str(invocation / v) for v in value] if isinstance(value, list) else str(invocation / value)
        cli[name] = value
    ini = {SETTINGS[n].ini: config.getini(SETTINGS[n].ini) for n in OPTIONS}
    try:
        return resolve(cli, os.environ, ini, workers=_workers(config), base=config.rootpath)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(tryfirst=True)  # before pytest's junitxml plugin reads the path
def pytest_configure(config):
    settings = config.stash[SETTINGS_KEY] = _settings(config)
    config.stash[CONVERSIONS_KEY] = {}
    if getattr(config.option, "help", False) or getattr(config.option, "version", False):
        return
    terminate_on_sigterm()  # a cancelled CI job ends like Ctrl-C: children killed, summaries written
    if hasattr(config, "workerinput"):
        return
    if getattr(config.option, "xmlpath", None) is None:
        # the JUnit report always goes beside the other reports, wherever pytest runs from
        config.option.xmlpath = str(settings.reports_dir / "junit.xml")
    try:  # before the first conversion: a bad folder or a concurrent run is one line, not a crash per model
        config.stash[LOCK_KEY] = prepare(settings.tflite_dir, settings.reports_dir,
                                         lock=not config.option.collectonly)
    except OutputsError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(ControllerReport(config), "tflite-controller-report")


def pytest_unconfigure(config):
    lock = config.stash.get(LOCK_KEY, None)
    if lock is not None:
        lock.release()


def pytest_report_header(config):
    s = config.stash[SETTINGS_KEY]
    versions = ", ".join(f"{k} {v}" for k, v in tool_versions().items())
    return [f"tflite harness: {versions}",
            f"models from: {', '.join(str(d) for d in s.models_dirs) or '(none)'}",
            f"deliverables: {s.tflite_dir}  reports: {s.reports_dir}",
            f"per conversion: {s.threads} thread(s), memory ceiling {s.memory_limit_mb} MB, "
            f"timeout {s.timeout:g} s",
            f"baseline: {s.baseline}{' (will be rewritten)' if config.getoption('tflite_baseline_update') else ''}"
            f"  regression thresholds: {s.thresholds.describe()}"]


def pytest_generate_tests(metafunc):
    if "model_case" not in metafunc.fixturenames:
        return
    s = metafunc.config.stash[SETTINGS_KEY]
    if not s.models_dirs:
        raise pytest.UsageError("no models folder: pass --models-dir DIR or set models_dir in pytest.ini")
    missing = [str(d) for d in s.models_dirs if not d.exists()]
    if missing:
        raise pytest.UsageError(f"models folder not found: {', '.join(missing)}")
    cases = discover(s.models_dirs, input_shapes=s.input_shapes, timeout=s.timeout)
    if not cases:
        raise pytest.UsageError(f"no model files (.pt, .pth, .pt2) under {', '.join(map(str, s.models_dirs))}")
    params = []
    for case in cases:
        timeout = (case.spec.timeout if case.spec else s.timeout) + OUTER_TIMEOUT_MARGIN
        marks = [pytest.mark.timeout(timeout)]
        if case.spec and case.spec.expect:
            marks.append(pytest.mark.xfail(reason=case.spec.expect.reason, strict=True,
                                           raises=ExpectedConversionFailure))
        params.append(pytest.param(case, id=case.model_id, marks=marks))
    metafunc.parametrize("model_case", params)


@pytest.fixture
def conversion(request, model_case, record_property) -> Result:
    """The model converted in its own child process, once per run; its figures go to JUnit."""
    cache = request.config.stash[CONVERSIONS_KEY]
    if model_case.model_id not in cache:
        cache[model_case.model_id] = convert_case(model_case, request.config.stash[SETTINGS_KEY])
    result = cache[model_case.model_id]
    request.node.stash[RESULT_ON_ITEM] = result
    for name, value in junit_properties(result):
        record_property(name, value)
    return result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    case = getattr(item, "callspec", None) and item.callspec.params.get("model_case")
    if case is None:
        return
    # plain data on the report travels from xdist workers to the controller
    report.tflite_model_id = case.model_id
    result = item.stash.get(RESULT_ON_ITEM, None)
    if result is not None and report.when == "call":
        report.tflite_result = result.to_dict()


def _relative_dirs(dirs, root: Path) -> list[str]:
    """Models folders as the baseline records them: relative to the rootdir where possible."""
    out = []
    for d in dirs:
        try:
            out.append(Path(d).resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            out.append(Path(d).resolve().as_posix())
    return sorted(out)


def _outcome(report) -> str:
    if "XPASS(strict)" in str(report.longrepr or ""):
        return "failed"
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    return report.outcome


def _no_result_message(report) -> str:
    lines = [ln.strip() for ln in str(report.longrepr or "").splitlines() if ln.strip()]
    reason = lines[0] if lines else "no report"
    if "crashed while running" in reason:  # xdist's words for a worker that died
        return f"the pytest worker converting it was killed or crashed ({reason})"
    return f"no result from the test process ({reason})"


class ControllerReport:
    """Collects every model's result from reports and writes the summaries.

    Registered only where reports are written: the xdist controller, or a plain run.
    """

    def __init__(self, config):
        self.config = config
        self.rows: dict[str, dict] = {}
        self.summary: dict | None = None
        self.baseline_lines: list[str] = []
        self._discovered_ids: set[str] | None = None

    def pytest_runtest_logreport(self, report):
        data = getattr(report, "tflite_result", None)
        if data is not None:
            result = Result.from_dict(data)
            row = summary_row(result)
            row["outcome"] = _outcome(report)
            self.rows[result.model_id] = row
        elif report.failed:
            # xdist builds the report of a crashed worker itself, without our attributes
            model_id = getattr(report, "tflite_model_id", None) or self._model_id_of(report.nodeid)
            if model_id and model_id not in self.rows:  # died before producing a result (worker crash, outer timeout)
                row = summary_row(Result.failed(model_id, "", FailureKind.CRASH, report.when,
                                                _no_result_message(report)))
                row["outcome"] = "failed"
                self.rows[model_id] = row

    def _model_id_of(self, nodeid: str) -> str | None:
        if not nodeid.endswith("]") or "[" not in nodeid:
            return None
        candidate = nodeid.split("[", 1)[1][:-1]
        return candidate if candidate in self._discovered(self.config.stash[SETTINGS_KEY]) else None

    def pytest_sessionfinish(self, session):
        if not self.rows:
            return
        s = self.config.stash[SETTINGS_KEY]
        versions = tool_versions()
        rows = dict(self.rows)
        labels = {}
        if session.exitstatus != pytest.ExitCode.INTERRUPTED:  # a partial run is not judged
            outcome = baseline_file.gate(
                s.baseline, rows, discovered=self._discovered(s), thresholds=s.thresholds,
                versions=versions, models_dirs=_relative_dirs(s.models_dirs, self.config.rootpath),
                update=self.config.getoption("tflite_baseline_update"))
            self.baseline_lines, labels = list(outcome.lines), outcome.labels
            if outcome.failed and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            for model_id in outcome.gone:  # listed, so the table shows what vanished
                rows[model_id] = {"outcome": "gone", "status": "gone"}
        settings = {"models_dirs": [str(d) for d in s.models_dirs], "tflite_dir": str(s.tflite_dir),
                    "threads": s.threads, "memory_limit_mb": s.memory_limit_mb, "timeout": s.timeout}
        self.summary = build_summary(rows, versions, settings)
        if self.baseline_lines:
            self.summary["baseline"] = {"path": str(s.baseline), "lines": self.baseline_lines,
                                        "labels": dict(sorted(labels.items()))}
        columns = [("vs baseline", lambda m, _row: labels.get(m, ""))] if labels else []
        write_json_atomic(s.reports_dir / "summary.json", self.summary)
        write_text_atomic(s.reports_dir / "summary.md", summary_markdown(self.summary, columns))
        write_text_atomic(s.reports_dir / "summary.html", render_html(self.summary, labels, self.baseline_lines))

    def _discovered(self, s: Settings) -> set[str]:
        if self._discovered_ids is None:
            self._discovered_ids = {c.model_id for c in discover(s.models_dirs, input_shapes=s.input_shapes)}
        return self._discovered_ids

    def pytest_terminal_summary(self, terminalreporter):
        if not self.summary:
            return
        s = self.config.stash[SETTINGS_KEY]
        counts = self.summary["counts"]
        terminalreporter.section("tflite conversion")
        run = len(self.summary["models"]) - counts.get("gone", 0)
        terminalreporter.line(
            f"{counts.get('passed', 0)} converted and verified, {counts.get('failed', 0)} failed, "
            f"{counts.get('xfailed', 0)} failed as expected, of {run} models")
        for model_id, row in self.summary["models"].items():
            if row["outcome"] == "failed" and row.get("failure_kind"):
                terminalreporter.line(f"  {model_id}: {row['failure_stage']} [{row['failure_kind']}] "
                                      f"{row['failure_message']}")
            elif row.get("opset") not in (None, OPSET):
                terminalreporter.line(f"  note {model_id}: the {row['exporter']} exporter wrote opset {row['opset']}, "
                                      f"not {OPSET} (its down-conversion failed); the model was converted and "
                                      "verified at that opset")
        terminalreporter.line(f"summary: {s.reports_dir / 'summary.md'} (and .html, .json)   "
                              f"deliverables: {s.tflite_dir}")
        if self.baseline_lines:
            terminalreporter.section("tflite baseline")
            for line in self.baseline_lines:
                terminalreporter.line(line, red=line.startswith(("REGRESSION", "ERROR")),
                                      green=line.startswith("improved"))
