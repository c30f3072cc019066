"""pytest plugin: every discovered model is a test item converted in an isolated child.

Installed, it is loaded by pytest's `pytest11` entry point everywhere and stays inert unless
asked: a models folder given with --tflite-models-dir (or TFLITE_HARNESS_MODELS_DIR), or named by
the ini key `tflite_models_dir` and inside what pytest collects (so `pytest tests` here converts
nothing, and `pytest -n 4 model_cases` converts the bundled examples). It then collects the
models itself (one item per model, `<models folder>::<model id>`), as pytest-mypy collects its
checks: a repository needs nothing but its models. Your own tests can take the same conversions
through the `model_case` and `conversion` fixtures. Its options and ini keys are all in the
`tflite` namespace, so a repository's own option of a common name stays its own.

Glue only: where it acts, fixtures and hooks of one to three lines. The options are
plugin_options.py's; the items and the fixtures' parameters are model_items.py's; the
controller's records, expected items and verdict are batch_session.py's; what the terminal
shows is batch_terminal.py's; the conversions happen in converter/ (runner).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import cache, plugin_options, slots
from .baseline import GATE_PROPERTY
from .batch_session import BatchSession, GateCase
from .batch_terminal import StatusLine, end_open_line, header_lines, write_summary
from .columns import junit_properties
from .discovery import beyond_depth, too_deep_note
from .environment import tool_versions
from .lifeline import BATCH_SIGNALS, signal_children, terminate_on_sigterm, terminated_by, terminating
from .model_items import (
    ACTIVE_KEY,
    CASE_FIXTURE,
    CONVERSIONS_KEY,
    SETTINGS_KEY,
    ModelItem,
    ModelsDir,
    absolute,
    active,
    cases,
    conversion_for_test,
    fixture_params,
    label_report,
)
from .output_folders import OutputsError, prepare, prune_unclaimed
from .pytest_internals import escaped_id, guard_junit, message_only
from .results import Result
from .settings import BASELINE_UPDATE, BY_NAME, SETTINGS, Settings, SettingsError, resolve

LOCK_KEY = pytest.StashKey[object]()
CAPPED_KEY = pytest.StashKey[int]()  # the -n the user gave, when it was more than the machine's slots
CACHE_NOTE_KEY = pytest.StashKey[str]()  # why the cache is not used in this run
FOLDER_NOTES_KEY = pytest.StashKey[str]()  # deliverables of models no longer there removed; folders too deep


def pytest_addoption(parser):
    plugin_options.declare(parser)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Before the conftests load: the rootdir pytest picked without knowing these options; after: the old spellings."""
    plugin_options.before_conftests(early_config, parser, args)
    yield
    plugin_options.after_conftests(early_config, parser, args)


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
        value = config.getoption(plugin_options.dest(setting.option))
        if value and setting.path:  # relative to where pytest ran
            value = [str(invocation / v) for v in value] if isinstance(value, list) else str(invocation / value)
        cli[setting.option] = value
        ini[setting.ini] = config.getini(setting.ini)
    try:
        return resolve(cli, os.environ, ini, workers=_workers(config), base=config.rootpath,
                       deprecated=config.stash.get(plugin_options.OLD_SPELLINGS_KEY, ()))
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
    if config.getoption(plugin_options.dest("models_dir")) or os.environ.get(BY_NAME["models_dirs"].env):
        return True
    paths = _collected_paths(config)
    return any(_overlap(d, p) for d in map(absolute, settings.models_dirs) for p in paths)


def _overlap(folder: Path, path: Path) -> bool:
    """pytest collecting `path` reaches (part of) `folder`."""
    return folder == path or path in folder.parents or folder in path.parents


@pytest.hookimpl(tryfirst=True)  # before pytest's junitxml plugin reads the path
def pytest_configure(config):
    settings = config.stash[SETTINGS_KEY] = _settings(config)
    config.stash[CONVERSIONS_KEY] = {}
    if getattr(config.option, "help", False) or getattr(config.option, "version", False):
        return
    if not settings.models_dirs and (given := plugin_options.given(config)):
        raise pytest.UsageError(plugin_options.no_models_folder(config, given))
    if not _asked(config, settings):
        return  # installed everywhere, it acts only where a models folder is asked for
    config.stash[ACTIVE_KEY] = True
    for folder in map(absolute, settings.models_dirs):  # asked by option, apart from what pytest collects
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
    config.pluginmanager.register(ControllerHooks(config), "tflite-controller-report")


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
    if active(parent.config) and absolute(path) in map(absolute, parent.config.stash[SETTINGS_KEY].models_dirs):
        return ModelsDir.from_parent(parent, path=path)
    return None


def pytest_unconfigure(config):
    lock = config.stash.get(LOCK_KEY, None)
    if lock is not None:
        lock.release()


def pytest_report_header(config):
    if not active(config):
        return []
    return header_lines(config.stash[SETTINGS_KEY], cache_note=config.stash.get(CACHE_NOTE_KEY, None),
                        capped=config.stash.get(CAPPED_KEY, None), update=config.getoption(plugin_options.dest(BASELINE_UPDATE)))


def pytest_generate_tests(metafunc):
    """Your own tests taking `model_case` or `conversion` run once per model, on the same conversions as the items."""
    if CASE_FIXTURE in metafunc.fixturenames:  # the harness's fixtures ask for it; a fixture of yours named alike does not
        metafunc.parametrize(CASE_FIXTURE, fixture_params(metafunc.config))


@pytest.fixture
def model_case(_tflite_case):
    """The discovered model (discovery.Case) your test runs for."""
    return _tflite_case


@pytest.fixture
def conversion(request, _tflite_case, record_property) -> Result:
    """The model converted in its own child process, once per run; its figures go to JUnit. A model
    that failed fails your test with its one-line verdict (or skips it, where [expect] says so)."""
    result = conversion_for_test(request.config, _tflite_case, request.node)
    for name, value in junit_properties(result):
        record_property(name, value)
    return result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    label_report(item, outcome.get_result())


def report_gate_cases(session, cases: list[GateCase]) -> None:
    """Each failure of the baseline gate reported as a failed test, through pytest's own report hook:
    junitxml writes it as a failed <testcase> with the regression as its message, the terminal
    counts it in its last line and lists it under FAILURES, the cache provider's `--lf` reruns it."""
    session.testscollected += sum(not case.collected for case in cases)  # a progress of 100 %, not 125 %
    if cases:
        end_open_line(session.config)  # pytest writes no progress figure past the last test's then
    for case in cases:
        location = (case.path, None, case.headline)
        properties = [(GATE_PROPERTY, case.failure.kind)]
        for when, outcome, longrepr in (("call", "failed", message_only(case.failure.text)), ("teardown", "passed", None)):
            session.config.hook.pytest_runtest_logreport(report=pytest.TestReport(
                case.nodeid, location, {}, outcome, longrepr, when, user_properties=properties,
                tflite_gate=case.failure.kind))


class ControllerHooks:
    """The controller's hooks (the xdist controller, or a plain run: where reports are written),
    each handing off to the batch session (records, expected items, the verdict) or to the terminal."""

    def __init__(self, config):
        self.config = config
        self.batch = BatchSession(config.stash[SETTINGS_KEY], discover=lambda: (c.model_id for c in cases(config)),
                                  escape=lambda model_id: escaped_id(model_id, config), rootpath=config.rootpath,
                                  update=config.getoption(plugin_options.dest(BASELINE_UPDATE)))
        self.status = StatusLine(config, self.batch)

    def pytest_sessionstart(self, session):
        self.status.start()

    def pytest_collection_finish(self, session):
        self.batch.expect(item.nodeid for item in session.items
                          if isinstance(item, ModelItem) or CASE_FIXTURE in getattr(item, "fixturenames", ()))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self.batch.expect_collected_by_worker(ids)

    @pytest.hookimpl(optionalhook=True)  # xdist's public hook for the item a dead worker was running
    def pytest_handlecrashitem(self, crashitem, report, sched):
        self.batch.attribute_crash(crashitem, report)

    def pytest_runtest_logreport(self, report):
        self.batch.record(report)

    @pytest.hookimpl(tryfirst=True)  # before junitxml's: guard_junit must see the folder before it writes
    def pytest_sessionfinish(self, session):
        self.status.stop()
        ended_by = terminated_by() if terminating() else (
            "an interrupt" if session.exitstatus == pytest.ExitCode.INTERRUPTED else None)
        if self.batch.finish(ended_by=ended_by, versions=tool_versions(), signalled=terminating()):
            self.batch.unwritten += [line for line in (guard_junit(self.config),) if line]
            report_gate_cases(session, self.batch.gate_cases())  # before junitxml writes: CI's JUnit widgets show them
            if self.batch.fails_the_run(run_passed=session.exitstatus == pytest.ExitCode.OK):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report):
        if getattr(report, "tflite_gate", None) and report.when == "call":  # no progress letter after the last test's
            return "failed", "", "FAILED"
        return None

    def pytest_terminal_summary(self, terminalreporter):
        notes = [line for n in (self.config.stash.get(CACHE_NOTE_KEY, None), slots.default_folder()[1],
                                self.config.stash.get(FOLDER_NOTES_KEY, None)) for line in (n or "").splitlines()]
        write_summary(terminalreporter, self.batch, notes, causes=self.config.option.tbstyle == "no")
