"""The plugin's own collection: a node per models folder, per model file, and per model (the
item); the parameters of a test of your own that takes the `model_case` or `conversion` fixture;
and the one conversion a model gets per process, shared by the item and the fixture. Which files
are models is discovery's; the settings are the plugin's (SETTINGS_KEY).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .assertions import ExpectedConversionFailure, ModelFailed, assert_conversion
from .columns import junit_properties
from .discovery import discover
from .protocol import LOG_FILE
from .pytest_internals import message_only
from .results import Outcome, Result
from .runner import convert_case
from .settings import BY_NAME, Settings

OUTER_TIMEOUT_MARGIN = 120  # pytest-timeout fires only if the pipeline's own timeout did not
SETTINGS_KEY = pytest.StashKey[Settings]()
CONVERSIONS_KEY = pytest.StashKey[dict]()
RESULT_ON_ITEM = pytest.StashKey[Result]()
CONVERTED_IN = pytest.StashKey[str]()  # the phase of the test that converted (or restored) the model in this process
CASES_KEY = pytest.StashKey[list]()  # the discovered models, once per process
ACTIVE_KEY = pytest.StashKey[bool]()  # asked to convert models in this run
OUTCOME_ON_ITEM = pytest.StashKey[Outcome]()  # the model's verdict, on a test of your own that took its conversion
# what the `model_case` and `conversion` fixtures take, parametrized per model: a name of the
# harness's own, so that a repository's own fixture named `model_case` is never parametrized
CASE_FIXTURE = "_tflite_case"
MODELS = BY_NAME["models_dirs"]


def active(config) -> bool:
    return config.stash.get(ACTIVE_KEY, False)


def absolute(path) -> Path:
    return Path(os.path.abspath(path))


def cases(config):
    """The discovered models (once per process: every xdist worker discovers the same, sorted)."""
    if CASES_KEY not in config.stash:
        s = config.stash[SETTINGS_KEY]
        config.stash[CASES_KEY] = discover(s.models_dirs, input_shapes=s.input_shapes, timeout=s.timeout,
                                             deliverables=s.deliverables, engine=s.engine,
                                             verify_samples=s.verify_samples)
    return config.stash[CASES_KEY]


def timeout_mark(config, case):
    # a conversion may wait up to its timeout for a machine slot, then take up to its timeout
    return pytest.mark.timeout(2 * (case.spec.timeout if case.spec else config.stash[SETTINGS_KEY].timeout)
                               + OUTER_TIMEOUT_MARGIN)


def marks(config, case) -> list:
    """The model's own item: the timeout and, for a model expected to fail, the strict xfail."""
    given = [timeout_mark(config, case)]
    if case.spec and case.spec.expect:
        given.append(pytest.mark.xfail(reason=case.spec.expect.reason, strict=True, raises=ExpectedConversionFailure))
    return given


def fixture_params(config) -> list:
    """A test of your own taking `model_case` or `conversion`: one parameter per model, with the
    timeout only (a model's [expect] is about its conversion, not about your test), also in a run
    that leaves the models folder out (`pytest tests/`: `conversion` then skips). Where there is
    no model to run it for, one skipped parameter says why."""
    settings = config.stash[SETTINGS_KEY]
    found = cases(config) if settings.models_dirs else []
    if not found:
        why = (f"no model files (.pt, .pth, .pt2) under {', '.join(map(str, settings.models_dirs))}" if settings.models_dirs
               else f"no models folder is set: pass {MODELS.flag} DIR or set {MODELS.ini} in the ini file")
        return [pytest.param(None, id="no-models", marks=pytest.mark.skip(reason=why))]
    return [pytest.param(case, id=case.model_id, marks=[timeout_mark(config, case)]) for case in found]


def conversion_for_test(config, case, node) -> Result:
    """The model's conversion for a test of your own: its verified Result; for a model that failed,
    the test fails with the model's one-line verdict instead (or is skipped when the model fails
    as its [expect] says: its own item xfails). Converted only in a run that converts models."""
    if not active(config):
        folder = os.path.relpath(case.root, config.invocation_params.dir)
        pytest.skip(f"{case.model_id}: this run converts nothing, as it leaves out the models folder {folder}: name it "
                    f"too (pytest {folder} ...) or pass {MODELS.flag} {folder}")
    result = converted_for(node, case, phase="setup")
    expect = case.spec.expect if case.spec else None
    outcome, verdict = Outcome.PASSED, ""
    try:
        assert_conversion(result, expect)
    except ExpectedConversionFailure as exc:
        outcome, verdict = Outcome.XFAILED, f"{exc} (expected: {expect.reason})"
    except AssertionError as exc:
        outcome, verdict = Outcome.FAILED, str(exc)  # a model that converted against its [expect] too, as its item says
    node.stash[OUTCOME_ON_ITEM] = outcome
    if outcome is Outcome.XFAILED:
        pytest.skip(verdict)
    if not result.passed:
        pytest.fail(verdict, pytrace=False)
    return result


def label_report(item, report) -> None:
    """Plain data on a test's report (it travels from xdist workers to the controller): the model
    it tested, and its Result once known (from the call; from the setup where `conversion` failed
    or skipped the test), with the model's own verdict where the test is one of your own."""
    case = getattr(item, "case", None) or (getattr(item, "callspec", None) and item.callspec.params.get(CASE_FIXTURE))
    if case is None:
        return
    report.tflite_model_id = case.model_id
    result = item.stash.get(RESULT_ON_ITEM, None)
    if result is not None:
        report.duration = split_duration(item, report, result)
    if result is not None and (report.when == "call" or (report.when == "setup" and not report.passed)):
        report.tflite_result = result.to_dict()
        outcome = item.stash.get(OUTCOME_ON_ITEM, None)
        if outcome is not None:
            report.tflite_outcome = outcome.value


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
        here = absolute(self.path)
        models = self.models
        if models is None:
            models = [c for c in cases(self.config) if absolute(c.root) == here]
        direct, below = [], {}
        for case in models:
            first, *rest = absolute(case.path).relative_to(here).parts
            if rest:
                below.setdefault(first, []).append(case)
            else:
                direct.append(case)
        for node in super().collect():
            if not (isinstance(node, pytest.Directory) and absolute(node.path).parent == here
                    and absolute(node.path).name in below):
                yield node  # anything else pytest finds here; the folders holding models are ours
        for name in sorted(below):
            yield ModelsDir.from_parent(self, path=here / name, models=below[name])
        for case in direct:
            yield ModelFile.from_parent(self, path=absolute(case.path), case=case)


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
        for mark in marks(self.config, case):
            self.add_marker(mark)

    def runtest(self) -> None:
        result = converted_for(self, self.case, phase="call")
        self.user_properties.extend(junit_properties(result))
        assert_conversion(result, self.case.spec.expect if self.case.spec else None)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ModelFailed):  # the verdict is the message: no traceback of the harness's own code
            text = excinfo.value.describe(log=shown_log(self.config, self.case.model_id))
            return text if self.config.option.tbstyle == "line" else message_only(text)  # "line" prints no reprcrash
        if isinstance(excinfo.value, AssertionError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.case.path, None, f"model {self.case.model_id}"


def shown_log(config, model_id: str) -> str | None:
    """The model's conversion log (the child's, with the library's traceback), as the reader finds it
    from where pytest ran; None where no child ran (a sidecar error)."""
    log = config.stash[SETTINGS_KEY].artifacts_for(model_id) / LOG_FILE
    if not log.is_file():
        return None
    here = absolute(config.invocation_params.dir)
    return str(log.relative_to(here)) if here in log.parents else str(log)
def converted_for(item, case, *, phase: str) -> Result:
    """The model's conversion for this test (`phase`: the test's phase that asks for it); the test
    that converted it, or restored it from the cache, is marked, for `split_duration`."""
    fresh = case.model_id not in item.config.stash[CONVERSIONS_KEY]
    result = item.stash[RESULT_ON_ITEM] = converted(item.config, case)
    if fresh:
        item.stash[CONVERTED_IN] = phase
    return result


def split_duration(item, report, result: Result) -> float:
    """The duration pytest-split's `--store-durations` stores for this report: it sums each test's
    report durations, and balances shards by them. A model restored from the cache took a restore's
    0.05 s here, but costs a shard whose cache is cold its conversion: that run stores the seconds
    the conversion took when it was converted (as its record keeps them)."""
    storing = getattr(item.config.option, "store_durations", False)  # pytest-split's option, when installed
    if storing and result.cache_hit and item.stash.get(CONVERTED_IN, None) == report.when:
        return max(report.duration, result.seconds)
    return report.duration


def converted(config, case) -> Result:
    """The model converted once per run in this process (the items and the `conversion` fixture share it)."""
    done = config.stash[CONVERSIONS_KEY]
    if case.model_id not in done:
        controller = config.pluginmanager.get_plugin("tflite-controller-report")  # None on a worker
        done[case.model_id] = convert_case(case, config.stash[SETTINGS_KEY],
                                           on_progress=controller.status.ticker() if controller else None)
    return done[case.model_id]
