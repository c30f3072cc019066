"""pytest plugin: every discovered model is a test item converted in an isolated child.

Installed, it is loaded by pytest's `pytest11` entry point everywhere and stays inert unless
asked: a models folder given with --models-dir (or TFLITE_HARNESS_MODELS_DIR), or named by the
ini key `models_dir` and inside what pytest collects (so `pytest tests` here converts nothing,
and `pytest -n 4 model_cases` converts the bundled examples). It then collects the models itself
(one item per model, `<models folder>::<model id>`), as pytest-mypy collects its checks: a
repository needs nothing but its models. Your own tests can take the same conversions through
the `model_case` and `conversion` fixtures.

Glue only: options, collection, JUnit properties and the controller-side summary. The work
happens in converter/ (runner, report).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import pytest

from . import baseline as baseline_file
from . import cache, slots
from .assertions import ExpectedConversionFailure, assert_conversion
from .baseline import Severity
from .columns import junit_properties, onnx2tf_runs_line
from .discovery import beyond_depth, discover, too_deep_note
from .environment import tool_versions
from .failures import FailureKind, Stage, is_disk_full
from .lifeline import BATCH_SIGNALS, signal_children, terminate_on_sigterm, terminated_by, terminating
from .live import StatusThread, cut_short, running_conversions, status_line, waiting_conversions
from .output_folders import OutputsError, prepare, prune_unclaimed
from .report import ended_line
from .results import Outcome, Result
from .runner import convert_case
from .settings import BY_NAME, SETTINGS, Settings, SettingsError, argparse_help, option_kwargs, resolve
from .spec import OPSET
from .summaries import SummariesUnwritten, conclude, relative_dirs

OUTER_TIMEOUT_MARGIN = 120  # pytest-timeout fires only if the pipeline's own timeout did not
SETTINGS_KEY = pytest.StashKey[Settings]()
CONVERSIONS_KEY = pytest.StashKey[dict]()
RESULT_ON_ITEM = pytest.StashKey[Result]()
LOCK_KEY = pytest.StashKey[object]()
CAPPED_KEY = pytest.StashKey[int]()  # the -n the user gave, when it was more than the machine's slots
CACHE_NOTE_KEY = pytest.StashKey[str]()  # why the cache is not used in this run
ACTIVE_KEY = pytest.StashKey[bool]()  # asked to convert models in this run
CASES_KEY = pytest.StashKey[list]()  # the discovered models, once per process
FOLDER_NOTES_KEY = pytest.StashKey[str]()  # deliverables of models no longer there removed; folders too deep


def pytest_addoption(parser):
    group = parser.getgroup("tflite", "PyTorch -> TFLite conversion harness")
    for setting in SETTINGS:  # every option, ini key and variable comes from the one table
        group.addoption(setting.flag, dest=f"tflite_{setting.name}", default=None,
                        help=argparse_help(f"{setting.help} [env {setting.env}, ini {setting.ini}]"),
                        **option_kwargs(setting))
        parser.addini(setting.ini, help=setting.help, type=setting.ini_type, default=None)
        for old in setting.old("ini"):
            parser.addini(old, help=f"deprecated: use {setting.ini}", type=setting.ini_type, default=None)
    group.addoption("--baseline-update", dest="tflite_baseline_update", action="store_true",
                    help="rewrite the baseline from this run instead of gating on it")


def _workers(config) -> int:
    if hasattr(config, "workerinput"):
        return int(config.workerinput.get("workercount", 1))
    n = getattr(config.option, "numprocesses", None)
    if n in (None, 0):
        return 1
    return n if isinstance(n, int) else (os.cpu_count() or 1)


def _cap_workers(config, slots: int) -> None:
    """No more local xdist workers than the machine's conversion slots: a worker beyond them
    would only wait for a slot, and pay its own preloaded process (6 s of imports, 0.7 GB) to
    do so. Run by the controller before xdist starts its workers."""
    tx = getattr(config.option, "tx", None) or []
    if len(tx) > slots and all(spec == "popen" for spec in tx):
        config.stash[CAPPED_KEY] = len(tx)
        config.option.tx = tx[:slots]
        config.option.numprocesses = slots


def _settings(config) -> Settings:
    cli, ini = {}, {}
    invocation = Path(config.invocation_params.dir)
    for setting in SETTINGS:
        value = config.getoption(f"tflite_{setting.name}")
        if value and setting.path:  # relative to where pytest ran
            value = [str(invocation / v) for v in value] if isinstance(value, list) else str(invocation / value)
        cli[setting.name] = value
        for key in [setting.ini] + setting.old("ini"):
            ini[key] = config.getini(key)
    try:
        return resolve(cli, os.environ, ini, workers=_workers(config), base=config.rootpath)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None


def _collected_paths(config) -> list[Path]:
    """What pytest was asked to collect: its arguments (node ids cut to their path), else testpaths."""
    invocation = Path(config.invocation_params.dir)
    return [Path(os.path.abspath(invocation / str(a).split("::", 1)[0])) for a in config.args]


def _asked(config, settings: Settings) -> bool:
    """A models folder given as an option or in the environment, or named in the ini and inside
    what pytest collects (or containing it: `pytest models/sub` reruns part of a folder)."""
    if not settings.models_dirs:
        return False
    if config.getoption("tflite_models_dir") or os.environ.get(BY_NAME["models_dir"].env):
        return True
    paths = _collected_paths(config)
    return any(_overlap(d, p) for d in map(_absolute, settings.models_dirs) for p in paths)


def _absolute(path) -> Path:
    return Path(os.path.abspath(path))


def _overlap(folder: Path, path: Path) -> bool:
    """pytest collecting `path` reaches (part of) `folder`."""
    return folder == path or path in folder.parents or folder in path.parents


def active(config) -> bool:
    return config.stash.get(ACTIVE_KEY, False)


@pytest.hookimpl(tryfirst=True)  # before pytest's junitxml plugin reads the path
def pytest_configure(config):
    settings = config.stash[SETTINGS_KEY] = _settings(config)
    config.stash[CONVERSIONS_KEY] = {}
    if getattr(config.option, "help", False) or getattr(config.option, "version", False):
        return
    if not _asked(config, settings):
        return  # installed everywhere, it acts only where a models folder is asked for
    config.stash[ACTIVE_KEY] = True
    for folder in map(_absolute, settings.models_dirs):  # asked by option, apart from what pytest collects
        if not any(_overlap(folder, p) for p in _collected_paths(config)):
            config.args.append(str(folder))
    if hasattr(config, "workerinput"):
        terminate_on_sigterm(signals=BATCH_SIGNALS)  # the controller passes a cancelled job's signal on: stop at once
        config.stash[SETTINGS_KEY] = cache.as_told(settings, config.workerinput)  # a cache it refused stays off
        return
    # a cancelled CI job ends like Ctrl-C (children killed, summaries written), and the workers
    # stop now, not after the model each is converting (which would then be delivered after the signal)
    terminate_on_sigterm(on_signal=signal_children, signals=BATCH_SIGNALS)  # SIGINT too: `kill -INT`, Ctrl-C
    settings = _usable_cache(config, settings)
    _cap_workers(config, settings.max_conversions)
    for note in settings.deprecations:  # old spellings still work for one release
        config.issue_config_time_warning(pytest.PytestDeprecationWarning(note), stacklevel=2)
    missing = [str(d) for d in settings.models_dirs if not d.exists()]
    if missing:  # before collection, so it is one line and not a collection error per test file
        raise pytest.UsageError(f"models folder not found: {', '.join(missing)}")
    files = [str(d) for d in settings.models_dirs if not d.is_dir()]
    if files:
        raise pytest.UsageError(f"models folder is a file, not a folder: {', '.join(files)} (the CLI converts one "
                                "model: python -m converter FILE)")
    if not cases(config):
        raise pytest.UsageError(f"no model files (.pt, .pth, .pt2) under {', '.join(map(str, settings.models_dirs))}")
    if getattr(config.option, "xmlpath", None) is None and not config.option.collectonly:
        # the JUnit report always goes beside the other reports, wherever pytest runs from (not a
        # --collect-only's, which would replace the last run's report with one that ran nothing)
        config.option.xmlpath = str(settings.reports_dir / "junit.xml")
    try:  # before the first conversion: a bad folder or a concurrent run is one line, not a crash per model
        config.stash[LOCK_KEY] = prepare(settings.tflite_dir, settings.reports_dir,
                                         lock=not config.option.collectonly)
    except OutputsError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not config.option.collectonly:  # the folder holds verified files only: none of a model that is gone
        pruned = prune_unclaimed(settings.tflite_dir, {settings.deliverable_for(c.model_id) for c in cases(config)},
                                 skip=(settings.cache_dir,))
        config.stash[FOLDER_NOTES_KEY] = "\n".join(filter(None, (pruned, too_deep_note(settings.models_dirs))))
    config.pluginmanager.register(ControllerReport(config), "tflite-controller-report")


def pytest_ignore_collect(collection_path, config):
    """Below a models folder, pytest collects no deeper than discovery searches (a RecursionError)."""
    if active(config) and beyond_depth(collection_path, config.stash[SETTINGS_KEY].models_dirs):
        return True
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist starts a worker: it gets the controller's decision on the cache with its input."""
    if active(node.config):
        cache.tell_worker(node.workerinput, node.config.stash[SETTINGS_KEY])


def _usable_cache(config, settings: Settings) -> Settings:
    """A cache folder that cannot be written, or that others could plant entries in, is not used:
    the run goes on without it and says so (checked before the first conversion, like the other folders)."""
    if config.option.collectonly:
        return settings
    settings, note = cache.usable(settings)
    if note:
        config.stash[CACHE_NOTE_KEY] = note
        config.stash[SETTINGS_KEY] = settings  # xdist workers are told through pytest_configure_node
    return settings


def pytest_collect_directory(path, parent):
    """A models folder is collected by the plugin: what pytest finds there, then one item per model."""
    if active(parent.config) and _absolute(path) in map(_absolute, parent.config.stash[SETTINGS_KEY].models_dirs):
        return ModelsDir.from_parent(parent, path=path)
    return None


def cases(config):
    """The discovered models (once per process: every xdist worker discovers the same, sorted)."""
    if CASES_KEY not in config.stash:
        s = config.stash[SETTINGS_KEY]
        config.stash[CASES_KEY] = discover(s.models_dirs, input_shapes=s.input_shapes, timeout=s.timeout,
                                             deliverables=s.deliverables)
    return config.stash[CASES_KEY]


def _marks(config, case) -> list:
    # a conversion may wait up to its timeout for a machine slot, then take up to its timeout
    timeout = 2 * (case.spec.timeout if case.spec else config.stash[SETTINGS_KEY].timeout) + OUTER_TIMEOUT_MARGIN
    marks = [pytest.mark.timeout(timeout)]
    if case.spec and case.spec.expect:
        marks.append(pytest.mark.xfail(reason=case.spec.expect.reason, strict=True, raises=ExpectedConversionFailure))
    return marks


class ModelsDir(pytest.Dir):
    """A folder holding models (a models folder, or a folder below it): what pytest finds there as
    usual, then a node per model file, and a ModelsDir per subfolder holding models. The tree follows
    the files, so `pytest models/a/net.pt` reruns one model as pytest reruns one test file; which
    files are models is discovery's (the same as the CLI's: links, FIFOs and all)."""

    models: list | None = None  # the cases below this folder (None: a models folder's own, from discovery)

    @classmethod
    def from_parent(cls, parent, *, path, models=None):
        node = super().from_parent(parent, path=path)
        node.models = models
        return node

    def collect(self):
        here = _absolute(self.path)
        models = self.models
        if models is None:
            models = [c for c in cases(self.config) if _absolute(c.root) == here]
        direct, below = [], {}
        for case in models:
            first, *rest = _absolute(case.path).relative_to(here).parts
            if rest:
                below.setdefault(first, []).append(case)
            else:
                direct.append(case)
        for node in super().collect():
            if not (isinstance(node, pytest.Directory) and _absolute(node.path).parent == here
                    and _absolute(node.path).name in below):
                yield node  # anything else pytest finds here; the folders holding models are ours
        for name in sorted(below):
            yield ModelsDir.from_parent(self, path=here / name, models=below[name])
        for case in direct:
            yield ModelFile.from_parent(self, path=_absolute(case.path), case=case)


class ModelFile(pytest.File):
    """A model file (or what is named like one): one item, named by the model id."""

    @classmethod
    def from_parent(cls, parent, *, path, case):
        node = super().from_parent(parent, path=path)
        node.case = case
        return node

    def collect(self):
        yield ModelItem.from_parent(self, name=self.case.model_id, case=self.case)


class ModelItem(pytest.Item):
    """One model: converted in its own child process, its figures recorded in JUnit, its verdict
    asserted (one line naming the model, the stage and the cause when it fails)."""

    def __init__(self, *, case, **kwargs):
        super().__init__(**kwargs)
        self.case = case
        for mark in _marks(self.config, case):
            self.add_marker(mark)

    def runtest(self) -> None:
        result = converted(self.config, self.case)
        self.stash[RESULT_ON_ITEM] = result
        self.user_properties.extend(junit_properties(result))
        assert_conversion(result, self.case.spec.expect if self.case.spec else None)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, AssertionError):
            return str(excinfo.value)  # the verdict is the message: no traceback of the harness's own code
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.case.path, None, f"model {self.case.model_id}"


def converted(config, case) -> Result:
    """The model converted once per run in this process (the items and the `conversion` fixture share it)."""
    done = config.stash[CONVERSIONS_KEY]
    if case.model_id not in done:
        controller = config.pluginmanager.get_plugin("tflite-controller-report")  # None on a worker
        done[case.model_id] = convert_case(case, config.stash[SETTINGS_KEY],
                                           on_progress=controller.status_ticker() if controller else None)
    return done[case.model_id]


def pytest_unconfigure(config):
    lock = config.stash.get(LOCK_KEY, None)
    if lock is not None:
        lock.release()


def pytest_report_header(config):
    if not active(config):
        return []
    s = config.stash[SETTINGS_KEY]
    versions = ", ".join(f"{k} {v}" for k, v in tool_versions().items())
    lines = [f"tflite harness: {versions}",
             f"models from: {', '.join(str(d) for d in s.models_dirs) or '(none)'}",
             f"deliverables: {s.tflite_dir}  reports: {s.reports_dir}",
             f"per conversion: {s.threads} thread(s), memory ceiling {s.memory_limit_mb} MB, "
             f"timeout {s.timeout:g} s; at most {s.max_conversions} at once on this machine"
             f"{'' if s.preload else '; no preloaded process'}"]
    note = config.stash.get(CACHE_NOTE_KEY, None)
    lines = lines + [f"cache: {note}"] if note else lines
    capped = config.stash.get(CAPPED_KEY, None)
    lines += [f"workers: -n {capped} capped at {s.max_conversions}: more would only wait for a conversion "
              "slot (--max-conversions)"] if capped else []
    return lines + [
        f"baseline: {s.baseline}{' (will be rewritten)' if config.getoption('tflite_baseline_update') else ''}"
        f"  regression thresholds: {s.thresholds.describe()}"] + [f"deprecated: {d}" for d in s.deprecations]


def pytest_generate_tests(metafunc):
    """Your own tests taking `model_case` run once per model, on the same conversions as the items."""
    if "model_case" not in metafunc.fixturenames:
        return
    if not active(metafunc.config):
        raise pytest.UsageError("no models folder asked for: pass --models-dir DIR or set models_dir in the ini file "
                                "(pytest.ini)")
    params = [pytest.param(case, id=case.model_id, marks=_marks(metafunc.config, case))
              for case in cases(metafunc.config)]
    metafunc.parametrize("model_case", params)


@pytest.fixture
def conversion(request, model_case, record_property) -> Result:
    """The model converted in its own child process, once per run; its figures go to JUnit."""
    result = converted(request.config, model_case)
    request.node.stash[RESULT_ON_ITEM] = result
    for name, value in junit_properties(result):
        record_property(name, value)
    return result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    case = getattr(item, "case", None) or (getattr(item, "callspec", None) and item.callspec.params.get("model_case"))
    if case is None:
        return
    # plain data on the report travels from xdist workers to the controller
    report.tflite_model_id = case.model_id
    result = item.stash.get(RESULT_ON_ITEM, None)
    if result is not None and report.when == "call":
        report.tflite_result = result.to_dict()


def escaped_id(model_id: str, config) -> str:
    """A model id as pytest writes it into node ids: non-ASCII escaped, unless the ini key that
    turns that off is set (pytest 9.2's `_pytest.compat.ascii_escaped`, the function it uses;
    tests/test_trust.py checks a killed worker's model with a Chinese name is still found)."""
    from _pytest.compat import ascii_escaped

    if config.getini("disable_test_id_escaping_and_forfeit_all_rights_to_community_support"):
        return model_id
    return ascii_escaped(model_id)


JUNIT_PROBE_BYTES = 256 * 1024  # a generous JUnit report of a large batch


def guard_junit(config) -> str | None:
    """Before pytest's junitxml writes (its sessionfinish runs after this plugin's): a report it
    cannot write whole would be cut off midway, under a 59-line traceback. Where its folder has no
    room, the stale report is removed and the new one not written, and the reason is one line.
    (pytest 9.2: `_pytest.junitxml.xml_key`, `LogXML.logfile`; the full-disk test covers both.)"""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return None
    path = Path(xml.logfile)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent, prefix=".junit-probe-") as probe:
            probe.write(b"\0" * JUNIT_PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        if not is_disk_full(exc):
            return None  # its own error, as pytest reports it
        path.unlink(missing_ok=True)
        xml.logfile = os.devnull
        return f"the JUnit report cannot be written to {path}: no space left on its disk (the previous one was removed)"
    return None


def _outcome(report) -> Outcome:
    if hasattr(report, "wasxfail") and report.skipped:
        return Outcome.XFAILED
    # xfails are strict: a model that passes against its [expect] is a failed test (XPASS(strict))
    return Outcome.PASSED if report.passed else Outcome.FAILED


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
        self.records: dict[str, Result] = {}
        self.summary: dict | None = None
        self.gate: baseline_file.GateOutcome | None = None
        self._discovered_ids: set[str] | None = None
        self._escaped_ids: dict[str, str] | None = None
        self.unwritten: list[str] = []  # reports the disk had no room for
        self._expected: set[str] = set()  # model tests collected (under xdist: by the workers)
        self._started = time.time()  # a progress file from before this run describes no conversion of it
        self._status: StatusThread | None = None

    def pytest_sessionstart(self, session):
        if not self._wants_status() or not getattr(self.config.option, "numprocesses", None):
            return  # a plain run converts in this very thread: it reports from its watch loop instead
        # the xdist controller only waits for reports: a thread of its own writes the status line
        self._status = StatusThread(self.write_status, self._status_line,
                                    self.config.stash[SETTINGS_KEY].status_interval).start()

    def _wants_status(self) -> bool:
        """Quiet under -q; never in JUnit or the summaries."""
        return (self.config.option.verbose >= 0 and not self.config.option.collectonly
                and self.config.pluginmanager.get_plugin("terminalreporter") is not None)

    def write_status(self, line: str | None = None) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if reporter._tw.width_of_current_line:  # after the progress dots, on a line of its own
                reporter.write("\n")
            reporter.write_line(line or self._status_line())

    def status_ticker(self):
        """For a plain run: the conversion's watch loop calls this, in the main thread."""
        if not self._wants_status():
            return None
        interval, last = self.config.stash[SETTINGS_KEY].status_interval, [time.monotonic()]

        def tick(_progress: dict, _elapsed: float) -> None:  # also while waiting for a conversion slot
            if time.monotonic() - last[0] >= interval:
                last[0] = time.monotonic()
                self.write_status()
        return tick

    def _status_line(self) -> str:
        s = self.config.stash[SETTINGS_KEY]
        return status_line(len(self.records), len(self._expected) or None,
                           running_conversions(s.artifacts_dir, since=self._started - 1), s.slow_stage_fraction,
                           waiting_conversions(s.artifacts_dir, since=self._started - 1))

    def pytest_collection_finish(self, session):
        self._expected |= {item.nodeid for item in session.items
                           if isinstance(item, ModelItem) or "model_case" in getattr(item, "fixturenames", ())}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self._expected |= {i for i in ids if self._model_id_of(i)}

    def pytest_runtest_logreport(self, report):
        data = getattr(report, "tflite_result", None)
        if data is not None:
            result = dataclasses.replace(Result.from_dict(data), outcome=_outcome(report))
            self.records[result.model_id] = result
        elif report.failed:
            # xdist builds the report of a crashed worker itself, without our attributes
            model_id = getattr(report, "tflite_model_id", None) or self._model_id_of(report.nodeid)
            if model_id and model_id not in self.records:  # died before producing a result (worker crash, outer timeout)
                self.records[model_id] = Result.failed(model_id, "", FailureKind.CRASH, Stage.TEST,
                                                       _no_result_message(report), outcome=Outcome.FAILED)

    def _model_id_of(self, nodeid: str) -> str | None:
        """The model a node id names (xdist's report of a dead worker carries only the node id):
        `<models folder>::<id>` for the plugin's items; `…::test_x[<id>]` for a test of your own
        taking `model_case`, where pytest escapes non-ASCII ('模型' reads '\\u6a21\\u578b')."""
        discovered = self._discovered(self.config.stash[SETTINGS_KEY])
        item = nodeid.rsplit("::", 1)[-1]
        if "::" in nodeid and item in discovered:
            return item
        if not nodeid.endswith("]") or "[" not in item:
            return None
        if self._escaped_ids is None:
            self._escaped_ids = {escaped_id(m, self.config): m for m in discovered}
        return self._escaped_ids.get(item.split("[", 1)[1][:-1])

    @pytest.hookimpl(tryfirst=True)  # before junitxml's: guard_junit must see the folder before it writes
    def pytest_sessionfinish(self, session):
        if self._status is not None:
            self._status.stop()
        if not self.records and not terminating():
            return
        s = self.config.stash[SETTINGS_KEY]
        interrupted = terminating() or session.exitstatus == pytest.ExitCode.INTERRUPTED
        ended = None
        if interrupted:  # what did not run is said, not left out: a cut run must not read as complete
            stopped = cut_short(s.artifacts_dir, self._started, self.records)  # they ran: not "did not run"
            ended = {"by": terminated_by() if terminating() else "an interrupt", "stopped": stopped,
                     "not_run": max(0, len(self._expected) - len(self.records) - len(stopped))}
        try:
            self.summary, self.gate = conclude(
                self.records, reports_dir=s.reports_dir, versions=tool_versions(),
                settings={"models_dirs": [str(d) for d in s.models_dirs], "tflite_dir": str(s.tflite_dir),
                          "threads": s.threads, "memory_limit_mb": s.memory_limit_mb, "timeout": s.timeout,
                          "max_conversions": s.max_conversions, "preload": s.preload},
                baseline=s.baseline, thresholds=s.thresholds,
                models_dirs=relative_dirs(s.models_dirs, self.config.rootpath), discovered=self._discovered(s),
                update=self.config.getoption("tflite_baseline_update"), judge=not interrupted, ended=ended)
        except SummariesUnwritten as exc:
            self.summary, self.gate = exc.summary, exc.gate
            self.unwritten.append(str(exc))
        self.unwritten += [line for line in (guard_junit(self.config),) if line]
        if self.unwritten:  # a run whose reports are missing must not read as a success
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.gate is not None and self.gate.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _discovered(self, s: Settings) -> set[str]:
        if self._discovered_ids is None:
            self._discovered_ids = {c.model_id for c in cases(self.config)}
        return self._discovered_ids

    def pytest_terminal_summary(self, terminalreporter):
        for line in self.unwritten:
            terminalreporter.line(f"ERROR: {line}", red=True)
        for note in (self.config.stash.get(CACHE_NOTE_KEY, None), slots.default_folder()[1],
                     self.config.stash.get(FOLDER_NOTES_KEY, None)):
            for line in (note or "").splitlines():
                terminalreporter.line(f"note: {line}")
        if not self.summary:
            return
        s = self.config.stash[SETTINGS_KEY]
        counts = self.summary["counts"]
        terminalreporter.section("tflite conversion")
        if self.summary.get("ended"):
            terminalreporter.line(ended_line(self.summary["ended"]), red=True)
        run = len(self.summary["models"]) - counts.get("gone", 0)
        terminalreporter.line(
            f"{counts.get('passed', 0)} converted and verified, {counts.get('failed', 0)} failed, "
            f"{counts.get('xfailed', 0)} failed as expected, of {run} model{'s' if run != 1 else ''}")
        runs = onnx2tf_runs_line(self.records.values())
        if runs:
            terminalreporter.line(runs)
        for model_id, record in sorted(self.records.items()):
            if record.outcome is Outcome.FAILED and record.failure:
                terminalreporter.line(f"  {model_id}: {record.failure.stage} [{record.failure.kind.value}] "
                                      f"{record.failure.message}")
            for caveat in record.caveats:
                terminalreporter.line(f"  warning {model_id}: {caveat.describe()}", yellow=True)
            if record.export and record.export.opset != OPSET and record.outcome is not Outcome.FAILED:
                terminalreporter.line(f"  note {model_id}: the {record.export.exporter} exporter wrote opset "
                                      f"{record.export.opset}, not {OPSET} (its down-conversion failed); the model "
                                      "was converted and verified at that opset")
        written = (s.reports_dir / "summary.md").is_file()  # a full disk: named in the ERROR above, not here
        terminalreporter.line(f"summary: {s.reports_dir / 'summary.md' if written else 'not written'} (and .html, .json)   "
                              f"deliverables: {s.tflite_dir}")
        if self.gate is not None:
            terminalreporter.section("tflite baseline")
            for line in self.gate.lines:
                terminalreporter.line(line.text, red=line.severity in (Severity.REGRESSION, Severity.ERROR),
                                      green=line.severity is Severity.IMPROVEMENT)
