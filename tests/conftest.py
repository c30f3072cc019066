"""Fixtures for the harness's own tests: a pytester project wired to this repo's plugin."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
from filelock import FileLock

from converter.results import Result

from .support import EXAMPLES, NO_HYPOTHESIS, ROOT, convert

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
    monkeypatch.setenv("PYTEST_ADDOPTS", NO_HYPOTHESIS)  # a developer's own PYTEST_ADDOPTS stays out too
    pytester.makeconftest('pytest_plugins = ["converter.pytest_plugin"]')  # as an installed copy's entry point would
    pytester.makeini("[pytest]\njunit_family = xunit1\n")
    return pytester


def once_per_run(tmp_path_factory, name: str, make) -> Path:
    """A folder `make(folder)` fills once for the whole run, whichever xdist worker asks first (the
    others wait for it, then read it): pytest-xdist's own recipe for a session fixture."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's own temporary folder, above each worker's
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed to make it left
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


class Converted(NamedTuple):
    work: Path  # the folder of its conversion (tests/support.py's settings_for: out/, reports/, cache/)
    model: Path
    result: Result


@pytest.fixture(scope="session")
def diverging_pool(torch_warmed_up, tmp_path_factory) -> Converted:
    """The bundled example onnx2tf mistranslates in every mode, converted once per run (two onnx2tf
    runs and a diagnosis: 15-20 s), from a copy of its folder; the tests of its retries, its
    diagnosis and its cache entry each read this one conversion (and must not change its folder)."""
    def make(work: Path) -> None:
        (work / "m").mkdir()
        for name in ("diverging_pool.pt", "diverging_pool.toml", "architectures.py", "models.toml"):
            shutil.copy(EXAMPLES / name, work / "m" / name)
        convert(work, work / "m" / "diverging_pool.pt").write(work / "result.json")

    work = once_per_run(tmp_path_factory, "diverging_pool", make)
    return Converted(work, work / "m" / "diverging_pool.pt", Result.read(work / "result.json"))


@pytest.fixture(scope="session")
def two_cached_cnns(torch_warmed_up, tmp_path_factory) -> Path:
    """A models folder of two small CNNs and a cache folder holding their conversions, made once per
    run: a batch that must find models cached copies both instead of a run of its own to fill it."""
    from . import builders

    def make(work: Path) -> None:
        for name in ("b_net", "c_net"):
            assert convert(work, builders.torchscript_cnn(work / "models", name=name, seed=len(name))).passed

    return once_per_run(tmp_path_factory, "cached_cnns", make)
