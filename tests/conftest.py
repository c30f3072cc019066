"""Fixtures for the harness's own tests: a pytester project wired to this repo's plugin."""
from __future__ import annotations

import os

import pytest

from .support import NO_HYPOTHESIS, ROOT

# this repository's own tests drive pytest in pytest; no user of the plugin needs pytester's options
pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def torch_warmed_up(tmp_path_factory):
    """Run every model builder once before any pytester snapshot of sys.modules.

    pytester restores sys.modules after each test; torch modules imported lazily during a
    test (by tracing, export) would then be imported a second time, and torch refuses to
    register its operator libraries twice.
    """
    from . import builders

    folder = tmp_path_factory.mktemp("warm")
    builders.torchscript_cnn(folder)
    builders.torchscript_mlp(folder)
    builders.pickled_module(folder)
    builders.factory_model(folder, "eig", builders.EIGH_SOURCE, "eighs:eigh", (1, 4, 4))


@pytest.fixture
def harness(torch_warmed_up, pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    for var in [v for v in os.environ if v.startswith("TFLITE_HARNESS_")]:  # a developer's own settings
        monkeypatch.delenv(var)
    # the batch's own behaviours are tested on onnx2tf's route, as tests/support.py's conversions are:
    # a model made to fail there must not cost a second engine's conversion (tests/e2e/test_engines.py
    # tests `auto`)
    monkeypatch.setenv("TFLITE_HARNESS_ENGINE", "onnx2tf")
    monkeypatch.setenv("PYTEST_ADDOPTS", NO_HYPOTHESIS)
    pytester.makeconftest('pytest_plugins = ["converter.pytest_plugin"]')  # as an installed copy's entry point would
    pytester.makeini("[pytest]\njunit_family = xunit1\n")
    return pytester


