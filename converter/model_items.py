"""The plugin's own collection: a node per models folder, per model file, and per model (the
item), and the one conversion a model gets per process, shared by the item and the `conversion`
fixture. Which files are models is discovery's; the settings are the plugin's (SETTINGS_KEY).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .assertions import ExpectedConversionFailure, assert_conversion
from .columns import junit_properties
from .discovery import discover
from .results import Result
from .runner import convert_case
from .settings import Settings

OUTER_TIMEOUT_MARGIN = 120  # pytest-timeout fires only if the pipeline's own timeout did not
SETTINGS_KEY = pytest.StashKey[Settings]()
CONVERSIONS_KEY = pytest.StashKey[dict]()
RESULT_ON_ITEM = pytest.StashKey[Result]()
CASES_KEY = pytest.StashKey[list]()  # the discovered models, once per process


def absolute(path) -> Path:
    return Path(os.path.abspath(path))


def cases(config):
    """The discovered models (once per process: every xdist worker discovers the same, sorted)."""
    if CASES_KEY not in config.stash:
        s = config.stash[SETTINGS_KEY]
        config.stash[CASES_KEY] = discover(s.models_dirs, input_shapes=s.input_shapes, timeout=s.timeout,
                                             deliverables=s.deliverables, verify_samples=s.verify_samples)
    return config.stash[CASES_KEY]


def marks(config, case) -> list:
    """The timeout and, for a model expected to fail, the strict xfail of its test."""
    # a conversion may wait up to its timeout for a machine slot, then take up to its timeout
    timeout = 2 * (case.spec.timeout if case.spec else config.stash[SETTINGS_KEY].timeout) + OUTER_TIMEOUT_MARGIN
    given = [pytest.mark.timeout(timeout)]
    if case.spec and case.spec.expect:
        given.append(pytest.mark.xfail(reason=case.spec.expect.reason, strict=True, raises=ExpectedConversionFailure))
    return given


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
                                           on_progress=controller.status.ticker() if controller else None)
    return done[case.model_id]
