"""Live progress in real runs: a line per stage on the CLI, the batch's status line, a model waiting for a slot."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from converter.live import status_line
from converter.protocol import WAITING_FILE
from converter.slots import conversion_slot

from .. import builders
from ..support import ROOT, run


def test_the_cli_prints_a_line_per_stage_when_not_on_a_terminal(tmp_path):
    model = builders.factory_model(tmp_path / "m", "net", builders.waiting_model_source(kill_parent=False),
                                   "nets:waits", (1, 4))
    # the load stage is made slow by the model itself (6 s), over 5% of a timeout no loaded machine reaches
    env = dict(os.environ, HARNESS_TEST_PID_FILE=str(tmp_path / "pid"), HARNESS_TEST_SLEEP="6")
    proc = subprocess.run([sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "o"),
                           "--reports-dir", str(tmp_path / "r"), "--slow-stage-fraction", "0.05",
                           "--conversion-timeout", "100", "--no-cache"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stages = [line.split(":")[1].split("(")[0].strip() for line in proc.stderr.splitlines()
              if line.startswith("net: ") and "(after" in line]
    assert stages == ["load", "export", "savedmodel", "tflite", "verify"]
    assert "net: slow: still in load after " in proc.stderr  # its forward waits 6 s, over 5% of 100 s
    assert proc.stdout.startswith("net: PASS")  # progress goes to stderr; stdout stays the result


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_the_batch_counts_models_waiting_for_a_slot_then_names_what_is_converting_and_what_is_slow(
        harness, monkeypatch, workers):
    """Another process (another run, the CLI) holds the machine's only slot for a few seconds: the
    batch waits and says so; then it converts one model at a time, and names the one that is slow
    (its forward pass waits 6 s: over 5 % of a timeout no loaded machine reaches) while it runs."""
    models = harness.path / "models"
    builders.torchscript_cnn(models, name="net")
    builders.factory_model(models, "slow", builders.waiting_model_source(kill_parent=False), "slowness:waits",
                           (1, 4))
    monkeypatch.setenv("HARNESS_TEST_PID_FILE", str(harness.path / "pid"))
    monkeypatch.setenv("HARNESS_TEST_SLEEP", "6")
    held = threading.Event()
    artifacts = harness.path / "reports" / "artifacts"

    def hold_the_slot():
        with conversion_slot(1):
            held.set()
            deadline = time.monotonic() + 300  # pytest starts, collects, and a model asks for the slot
            while not any(artifacts.glob(f"*/{WAITING_FILE}")) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3)  # three status intervals while it waits

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    assert held.wait(600)
    result = run(harness, "--tflite-models-dir", "models", "--tflite-status-interval", "1",
                 "--tflite-max-conversions", "1", "--tflite-slow-stage-fraction", "0.05",
                 "--tflite-conversion-timeout", "100", "--tflite-no-cache", *workers)  # a cache hit would convert nothing
    holder.join()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["[[]tflite[]] 0/2 done; * waiting for a conversion slot"])
    result.stdout.fnmatch_lines(["[[]tflite[]] */2 done; converting: slow (load, * s: slow, *% of its 100 s timeout)*"])
    summary = json.loads((harness.path / "reports" / "summary.json").read_text())
    assert "[tflite]" not in (harness.path / "junit.xml").read_text()
    stage, seconds, _ = summary["table"]["slow"]["slowest_stage"].split()
    assert stage in ("load", "export") and float(seconds) >= 6  # both run the model's 6 s forward pass
    assert status_line(1, 3, [], 0.5, waiting=2) == "[tflite] 1/3 done; 2 waiting for a conversion slot"
    # -q silencing it is the status line's own decision: tests/unit/test_batch_session.py
