"""A spawned conversion child (the CLI's) replaces itself with a fresh interpreter after the export,
so that torch is not resident under TensorFlow's stages, and, for a large SavedModel, once more
before the TFLite conversion, so that onnx2tf's leftovers are not resident under the converter's
peak. Proven on real conversions, with every interpreter's imports recorded as they happen."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converter.results import Result
from converter.stages.handover import TFLITE_HAND_OVER_MB

from .. import builders
from ..support import ROOT

# Loaded first by every interpreter whose PYTHONPATH holds it: each conversion child's interpreter
# writes one line when it starts, then one per watched package it imports.
RECORDER = textwrap.dedent('''
    import json, os, sys
    with open("/proc/self/cmdline") as f:  # with -m, sys.argv does not name the module yet
        command = f.read().split("\\0")
    if "converter.stages.pipeline" in command:
        def note(**what):
            with open(os.environ["HANDOVER_TEST_LOG"], "a") as f:
                f.write(json.dumps(dict(pid=os.getpid(), **what)) + "\\n")
        note(start=command)
        WATCHED = ("torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "tf_keras")
        class Watch:
            def find_spec(self, name, path=None, target=None):
                if name in WATCHED and name not in sys.modules:
                    note(imported=name)
                return None
        sys.meta_path.insert(0, Watch())
''')


def _interpreters(log: Path) -> list[dict]:
    """The conversion child's interpreters in order, each with what it imported."""
    runs: list[dict] = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if "start" in entry:
            runs.append({"pid": entry["pid"], "resumed": "--resume" in entry["start"], "imported": set()})
        elif runs and entry["pid"] == runs[-1]["pid"]:
            runs[-1]["imported"].add(entry["imported"])
    return runs


def _cli(tmp_path: Path, model: Path, **env: str) -> tuple[subprocess.CompletedProcess, Result, list[dict], str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RECORDER)
    log = tmp_path / "imports.jsonl"
    env = {**os.environ, "PYTHONPATH": str(site), "HANDOVER_TEST_LOG": str(log), **env}
    proc = subprocess.run([sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "out"),
                           "--reports-dir", str(tmp_path / "r"), "--no-cache", "--conversion-timeout", "900"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200)
    artifacts = tmp_path / "r" / "artifacts" / model.stem
    return (proc, Result.read(artifacts / "result.json"), _interpreters(log),
            (artifacts / "convert.log").read_text())


def test_tensorflow_stages_run_in_an_interpreter_that_never_imports_torch(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m")
    proc, result, runs, log = _cli(tmp_path, model)
    assert proc.returncode == 0 and result.status == "passed", proc.stdout + proc.stderr
    assert [r["resumed"] for r in runs] == [False, True], runs  # a small model: one hand-over, after the export
    assert len({r["pid"] for r in runs}) == 1  # the same process: the parent's watch and kill still reach it
    assert "torch" in runs[0]["imported"] and "tensorflow" not in runs[0]["imported"]
    assert runs[1]["imported"] >= {"onnx2tf", "tensorflow"} and "torch" not in runs[1]["imported"]
    assert "a fresh interpreter takes over for TensorFlow's stages, without torch" in log
    assert "TFLite conversion of its" not in log
    assert set(result.stage_seconds) == {"load", "export", "savedmodel", "tflite", "verify"}


class Wide(nn.Module):
    """One linear layer whose weights alone make a SavedModel over the hand-over size, and an
    exact GELU (Erf, which TFLite builtins lack): the pseudo-op fix onnx2tf's run applied must be
    recorded by the interpreter that converts to TFLite."""

    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(1024, width)

    def forward(self, x):
        return nn.functional.gelu(self.fc(x))


def test_a_large_savedmodel_is_converted_to_tflite_by_an_interpreter_without_onnx2tf(tmp_path):
    """One conversion through both hand-overs, building DRQ and a calibrated int8 file: the samples,
    the pseudo-op fix and the checks made before the exec are all on record after it."""
    width = int(TFLITE_HAND_OVER_MB * 2**20 / 4 / 1024) + 1024  # float32 weights a little over the size
    torch.manual_seed(0)
    model = tmp_path / "m" / "wide.pt"
    model.parent.mkdir()
    torch.jit.trace(Wide(width).eval(), torch.randn(1, 1024)).save(str(model))
    model.with_suffix(".toml").write_text('deliverables = ["int8", "drq"]\ncalibration_samples = 8\n'
                                          "[[inputs]]\nshape = [1, 1024]\n")
    proc, result, runs, log = _cli(tmp_path, model)
    assert proc.returncode == 0 and result.status == "passed", proc.stdout + proc.stderr
    assert [r["resumed"] for r in runs] == [False, True, True], runs
    assert "torch" in runs[0]["imported"] and not runs[0]["imported"] & {"onnx2tf", "tensorflow"}
    assert {"onnx2tf", "tensorflow"} <= runs[1]["imported"] and "torch" not in runs[1]["imported"]
    # the TFLite converter's interpreter imports TensorFlow, and none of onnx, onnx2tf or torch
    assert "tensorflow" in runs[2]["imported"]
    assert not runs[2]["imported"] & {"torch", "onnx", "onnxruntime", "onnx2tf"}, runs[2]
    assert "TFLite conversion of its" in log and result.onnx2tf_runs == 1
    assert set(result.stage_seconds) == {"load", "export", "savedmodel", "tflite", "verify"}
    # what onnx2tf's interpreter did is on record: the pseudo-op fix, the mode, the checks
    assert {f.name for f in result.fixes} >= {"pseudo_ops"} and result.savedmodel.pseudo_ops == ("erf",)
    assert result.savedmodel.onnx2tf_mode == "simplified" and all(x.passed for x in result.savedmodel.outputs)
    assert [d.recipe for d in result.deliverables] == ["int8", "drq"]
    assert all(d.passed and d.runtime.ok for d in result.deliverables)
    # the samples crossed both hand-overs
    assert result.tflite.random_calibration and "8 random samples" in result.tflite.calibration
    with np.load(tmp_path / "r" / "artifacts" / "wide" / "samples.npz") as samples:
        assert {"input_0", "reference_0", "onnx_0", "tf_0"} <= set(samples.files)


def test_a_hand_over_that_cannot_be_written_goes_on_in_the_same_interpreter(tmp_path):
    # the model's forward pass (load stage) writes a file where the hand-over's folder must go
    model = builders.factory_model(tmp_path / "m", "net", builders.waiting_model_source(kill_parent=False),
                                   "nets:waits", (1, 4))
    blocker = tmp_path / "r" / "artifacts" / "net" / "handoff"
    proc, result, runs, log = _cli(tmp_path, model, HARNESS_TEST_PID_FILE=str(blocker), HARNESS_TEST_SLEEP="0")
    assert proc.returncode == 0 and result.status == "passed", proc.stdout + proc.stderr
    assert blocker.is_file() and "no hand-over to a fresh interpreter (FileExistsError" in log
    assert [r["resumed"] for r in runs] == [False]  # one interpreter did every stage
    assert {"torch", "onnx2tf", "tensorflow"} <= runs[0]["imported"]
    assert set(result.stage_seconds) == {"load", "export", "savedmodel", "tflite", "verify"}


REFUSING_ONNXRUNTIME = """
import sys
if "--resume" in sys.argv:  # the interpreter that takes over after the export, alone
    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name == "onnxruntime":
                raise ImportError("onnxruntime refused by this test")
    sys.meta_path.insert(0, Refuse())
"""


def test_a_library_the_fresh_interpreter_cannot_import_is_the_steps_one_line_failure(tmp_path):
    """The interpreter that takes over imports its steps' libraries before them: one that fails to
    import there still fails in its step, in words (it was a crash without a reason), and no step
    tries to install it."""
    model = builders.torchscript_cnn(tmp_path / "m")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(REFUSING_ONNXRUNTIME)
    proc = subprocess.run([sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "out"),
                           "--reports-dir", str(tmp_path / "r"), "--no-cache", "--engine", "onnx2tf"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "savedmodel failed [savedmodel_error]: ImportError: onnxruntime refused by this test" in proc.stdout, \
        proc.stdout
    # and nothing tried to install it: onnxsim's import runs `pip install onnxruntime` when it cannot
    log = (tmp_path / "r" / "artifacts" / "cnn" / "convert.log").read_text()
    assert "ImportError: onnxruntime refused by this test" in log and "pip install" not in log, log[-3000:]
