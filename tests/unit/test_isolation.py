"""How a dead child is classified, with fake one-line children: seconds, no torch.

The real conversions that crash, time out or run out of memory are in test_pipeline.py; these
pin down the classification itself, so that changing it takes seconds to check.
"""
from __future__ import annotations

import sys

import pytest

from converter.failures import FailureKind, Stage
from converter.isolation import classify_death, run_isolated
from converter.spec import ModelSpec

CHILDREN = {
    "segfault": "import ctypes; ctypes.string_at(0)",
    "sleeps": "import time; time.sleep(60)",
    "eats memory": "import time; hog = bytearray(400 * 2**20); hog[::4096] = b'x' * len(hog[::4096]); time.sleep(60)",
    "exits": "import sys; sys.exit(3)",
    "bad_alloc": "import os, sys; print('terminate called after throwing an instance of std::bad_alloc', "
                 "flush=True); os.abort()",
    # /dev/full answers every write with ENOSPC, as a full disk does
    "finds the disk full": "f = open('/dev/full', 'w'); f.write('x' * 8192); f.flush()",
    "writes progress, then dies": (
        "import json, os, sys, pathlib; "
        "pathlib.Path(sys.argv[1]).parent.joinpath('progress.json').write_text("
        "json.dumps({'stage': 'savedmodel', 'stage_seconds': {'load': 1.5}, 'peak_rss_mb': 12})); os._exit(9)"),
}


def run_fake(tmp_path, child: str, **limits):
    spec = ModelSpec(model_id="fake", path=str(tmp_path / "fake.pt"), timeout=limits.pop("timeout", 30.0))
    job = tmp_path / "a" / "job.json"
    return run_isolated(spec, tmp_path / "a", threads=1, memory_limit_mb=limits.pop("memory_limit_mb", 4000),
                        command=[sys.executable, "-c", CHILDREN[child], str(job)])


@pytest.mark.parametrize("child, kind, words", [
    ("segfault", FailureKind.CRASH, "killed by SIGSEGV during load"),
    ("exits", FailureKind.CRASH, "exited with status 3 during load without a result"),
    ("bad_alloc", FailureKind.OUT_OF_MEMORY, "allocation failed during load; give the conversion more memory"),
    ("writes progress, then dies", FailureKind.CRASH, "exited with status 9 during savedmodel"),
    ("finds the disk full", FailureKind.DISK_FULL, "ended (status 1) during load with no space left on the disk"),
])
def test_a_child_that_dies_is_classified_from_how_it_died(tmp_path, child, kind, words):
    result = run_fake(tmp_path, child)
    assert result.failure.kind is kind and words in result.failure.message
    assert (tmp_path / "a" / "result.json").is_file()  # the parent writes what the child could not


def test_the_stage_and_seconds_come_from_the_progress_file(tmp_path):
    result = run_fake(tmp_path, "writes progress, then dies")
    assert result.failure.stage is Stage.SAVEDMODEL and result.stage_seconds == {"load": 1.5}


def test_a_child_past_its_timeout_or_memory_ceiling_is_killed(tmp_path):
    slow = run_fake(tmp_path, "sleeps", timeout=1.0)
    assert slow.failure.kind is FailureKind.TIMEOUT and "no result after the 1 s timeout" in slow.failure.message
    assert slow.seconds < 10
    greedy = run_fake(tmp_path, "eats memory", memory_limit_mb=200)
    assert greedy.failure.kind is FailureKind.OUT_OF_MEMORY and "200 MB ceiling" in greedy.failure.message
    assert greedy.peak_rss_mb > 200


def test_sigkill_names_the_out_of_memory_killer():
    failure = classify_death(-9, None, "export", peak_mb=900, limit_mb=4000, timeout=60, log_mentions_memory=False)
    assert failure.kind is FailureKind.CRASH and "out-of-memory killer" in failure.message
    assert failure.one_line("m") == f"m: export failed [crash]: {failure.message}"
