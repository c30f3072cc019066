"""The litert engine, for real: a model onnx2tf cannot convert is delivered by litert under
engine = auto (recorded as the fix engine:litert, restored from the cache like any other), its
children are forked from a preloaded process of its own environment, onnx2tf's float32 diagnosis
waits until litert has failed too, and a litert environment that is not there is one line, with no
child started."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import torch

from converter import forkserver
from converter.discovery import discover
from converter.failures import FailureKind
from converter.isolation import run_isolated
from converter.settings import LITERT_PYTHON

from ..builders import SLOW_TO_DIAGNOSE_SOURCE, factory_model, waiting_model_source
from ..support import ROOT, convert, gone_within, start_pytest, wait_for_pid, with_group_killed

# affine_grid + grid_sample: onnx2tf fails in every mode ("Dimensions must be equal, but are 2 and 784")
STN_SOURCE = """
import torch
import torch.nn.functional as F
from torch import nn

class STN(nn.Module):
    def __init__(self):
        super().__init__()
        self.loc = nn.Sequential(nn.Flatten(), nn.Linear(784, 6))
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        theta = self.loc(x).view(-1, 2, 3) * 0.1 + torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return self.fc(F.grid_sample(x, grid, align_corners=False).flatten(1))

def build():
    torch.manual_seed(0)
    return STN().eval()
"""


def test_auto_delivers_the_litert_engines_files_where_onnx2tf_fails(tmp_path):
    model = factory_model(tmp_path / "models", "stn", STN_SOURCE, "arch:build", (1, 1, 28, 28))
    model.with_suffix(".toml").write_text('factory = "arch:build"\ndeliverables = ["drq", "fp32"]\n'
                                          '[[inputs]]\nshape = [1, 1, 28, 28]\n')
    result = convert(tmp_path, model, engine="auto")
    assert result.passed, result.failure
    assert result.engine == "litert" and result.litert.source == "nn.Module"
    (fix,) = [f for f in result.fixes if f.name == "engine"]
    assert fix.label == "engine:litert" and "savedmodel_error" in fix.reason and "Dimensions must be equal" in fix.reason
    assert result.delivered == "drq" and {d.recipe for d in result.deliverables} == {"drq", "fp32"}
    fp32 = result.deliverable_of("fp32")
    # PyTorch's numbers, on the runtime without TF: over 8 inputs through grid_sample's interpolation,
    # 1.1e-5 of the range, a tenth of the float32 tolerance (onnx2tf could not convert it at all)
    assert fp32.worst.range_rel_err < 2e-5 and fp32.runtime.ok
    assert all(Path(d.path).parent.name == "litert" for d in result.deliverables)  # beside onnx2tf's own log
    artifacts = tmp_path / "reports" / "artifacts" / "stn"
    assert (artifacts / "convert.log").is_file() and (artifacts / "litert" / "convert.log").is_file()
    recorded = json.loads((artifacts / "result.json").read_text())
    assert recorded["engine"] == "litert" and recorded["fixes"][0]["name"] == "engine"
    assert (tmp_path / "out" / "stn.tflite").read_bytes() == Path(result.deliverable_of("drq").path).read_bytes()

    again = convert(tmp_path, model, engine="auto")  # unchanged: restored, its files proven by the runtime
    assert again.cache_hit and again.passed and again.engine == "litert"
    assert [f.label for f in again.fixes] == [f.label for f in result.fixes]


# (x + 1000).mean - 1000 in float32 keeps ~6e-5 of a range of ~0.14: no converter meets 1e-4
OFFSET_MEAN_SOURCE = """
import torch

class OffsetMean(torch.nn.Module):
    def forward(self, x):
        return (x + 1000.0).mean(-1) - 1000.0

def build():
    return OffsetMean().eval()
"""


def test_under_auto_onnx2tfs_diagnosis_runs_only_when_litert_fails_too(tmp_path):
    # ONNX's float32 answer misses 1e-4 (the ONNX route fails); litert's DRQ file meets DRQ's own tolerance
    model = factory_model(tmp_path / "models", "offset", OFFSET_MEAN_SOURCE, "arch:build", (1, 64, 1024))
    model.with_suffix(".toml").write_text('factory = "arch:build"\n[[inputs]]\nshape = [1, 64, 1024]\n'
                                          '[tolerance]\nonnx = 1e-4\nfp32 = 1e-4\n')
    result = convert(tmp_path, model, engine="auto")
    assert result.passed and result.engine == "litert" and result.delivered == "drq", result.failure
    (fix,) = [f for f in result.fixes if f.name == "engine"]
    assert "numeric_mismatch in verify: ONNX output 'output_0'" in fix.reason
    artifacts = tmp_path / "reports" / "artifacts" / "offset"
    assert "the diagnosis is left for later" in (artifacts / "convert.log").read_text()
    assert result.divergence is None and not (artifacts / "diagnosis").exists()  # litert delivered: none ran

    # litert's float32 file misses too (no float32 converter can meet this tolerance): onnx2tf's failure is
    # explained after all, by the diagnosis its child left for later
    model.with_suffix(".toml").write_text('factory = "arch:build"\ndeliverables = ["fp32"]\n[[inputs]]\n'
                                          'shape = [1, 64, 1024]\n[tolerance]\nonnx = 1e-4\nfp32 = 1e-4\n')
    failed = convert(tmp_path, model, engine="auto")  # another spec: converted again, not restored
    assert failed.failure.kind is FailureKind.NUMERIC_MISMATCH and failed.engine == "onnx2tf", failed.failure
    message = failed.failure.message
    litert_said = message.find("; engine litert failed too: numeric_mismatch")
    diagnosed = message.find("; float32 precision, not the conversion")
    assert 0 < litert_said < diagnosed, message  # litert's failure first: a long diagnosis is cut, not it
    assert failed.divergence.where == "precision" and failed.divergence.stopped is None
    assert (artifacts / "diagnosis" / "diagnosis.json").is_file() and not (artifacts / "diagnosis" / "tmp").exists()
    assert json.loads((artifacts / "result.json").read_text())["divergence"]["where"] == "precision"


def test_sigterm_while_the_harness_runs_a_diagnosis_itself_leaves_nothing_running(tmp_path):
    torch.manual_seed(0)
    model = factory_model(tmp_path / "m", "slow", SLOW_TO_DIAGNOSE_SOURCE, "slows:slow", (1, 3, 20, 20))
    # litert converts it, but no float32 file meets this tolerance: litert fails too, on the model's numbers
    model.with_suffix(".toml").write_text('factory = "slows:slow"\ndeliverables = ["fp32"]\n[[inputs]]\n'
                                          'shape = [1, 3, 20, 20]\n[tolerance]\nfp32 = 1e-12\n')
    pid_file = tmp_path / "diagnosis.pid"
    proc = subprocess.Popen([sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "o"),
                             "--reports-dir", str(tmp_path / "r"), "--engine", "auto", "--no-cache"], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, HARNESS_TEST_PID_FILE=str(pid_file)), start_new_session=True)
    try:
        busy = wait_for_pid(pid_file, proc, seconds=300)  # litert has failed; the diagnosis runs the model in float64
        diagnosis = psutil.Process(busy)
        assert "converter.stages.diagnose" in " ".join(diagnosis.cmdline())
        assert diagnosis.ppid() == proc.pid and os.getsid(busy) == busy  # the CLI's own child, in its own session
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        with_group_killed(proc)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "python -m converter: terminated by SIGTERM during the conversion of slow"
    assert gone_within(busy, 10)  # its own session is no shelter: the harness killed it on its way out
    assert (tmp_path / "r" / "artifacts" / "slow" / "litert" / "convert.log").is_file()  # litert ran before it


def test_sigterm_to_a_batch_on_the_litert_engine_leaves_none_of_its_processes(harness, tmp_path):
    factory_model(harness.path / "models", "slow", waiting_model_source(kill_parent=False), "slowness:waits", (1, 4))
    pid_file = tmp_path / "child.pid"
    proc = start_pytest(harness, "--tflite-models-dir", "models", "--tflite-engine", "litert",
                        env=dict(os.environ, HARNESS_TEST_PID_FILE=str(pid_file)))
    try:
        child = wait_for_pid(pid_file, proc)
        family = psutil.Process(proc.pid).children(recursive=True)
        # a forked child keeps its preloaded process's command line: the one that is not the child is the server
        (preloaded,) = [p for p in family if "converter.stages.forkserver" in " ".join(p.cmdline()) and p.pid != child]
        assert preloaded.cmdline()[-1] == "litert" and psutil.Process(child).ppid() == preloaded.pid
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        with_group_killed(proc)
    assert proc.returncode != 0 and "The run was ended by SIGTERM" in out, out
    assert gone_within(child, 30)
    assert all(gone_within(p.pid, 15) for p in family), "a process of the run outlived it"  # litert's preloaded one too


def test_litert_children_are_forked_from_a_preloaded_process_of_its_own_environment(tmp_path):
    model = factory_model(tmp_path / "models", "stn", STN_SOURCE, "arch:build", (1, 1, 28, 28))
    (case,) = discover([model.parent])
    spec = dataclasses.replace(case.spec, engine="litert", deliverables=("fp32",))
    parents: list = []

    def convert_once(folder, preload):
        result = run_isolated(spec, tmp_path / folder, threads=1, memory_limit_mb=6000, engine="litert",
                              python=str(LITERT_PYTHON), preload=preload,
                              on_start=lambda pid: parents.append(psutil.Process(pid).ppid()))
        assert result.passed, result.failure
        return Path(result.deliverable_of("fp32").path).read_bytes()

    forked, spawned = convert_once("fork", True), convert_once("spawn", False)
    server = forkserver._servers[str(LITERT_PYTHON), 1].process
    command = " ".join(psutil.Process(server.pid).cmdline())
    assert command.startswith(str(LITERT_PYTHON)) and "converter.stages.forkserver" in command
    assert parents == [server.pid, psutil.Process().pid]  # forked by litert's own preloaded process, then spawned
    assert forked == spawned  # the same file either way


def test_the_litert_child_is_held_to_the_timeout_and_the_memory_ceiling(tmp_path, monkeypatch):
    slow = factory_model(tmp_path / "m", "slow", waiting_model_source(kill_parent=False), "slowness:waits", (1, 4))
    slow.with_suffix(".toml").write_text("timeout = 10\n" + slow.with_suffix(".toml").read_text())
    monkeypatch.setenv("HARNESS_TEST_PID_FILE", str(tmp_path / "pid"))
    result = convert(tmp_path, slow, engine="litert")
    assert result.failure.kind is FailureKind.TIMEOUT and result.engine == "litert", result.failure
    assert "10 s timeout (still in load)" in result.failure.message
    assert gone_within(int((tmp_path / "pid").read_text()), 10)  # killed, whatever it was doing

    stn = factory_model(tmp_path / "n", "stn", STN_SOURCE, "arch:build", (1, 1, 28, 28))
    result = convert(tmp_path, stn, engine="litert", memory_limit_mb="400")
    assert result.failure.kind is FailureKind.OUT_OF_MEMORY and "400 MB ceiling" in result.failure.message
    assert not (tmp_path / "out" / "stn.tflite").exists()


def test_a_missing_litert_environment_is_one_line_and_starts_no_child(tmp_path):
    model = factory_model(tmp_path / "models", "stn", STN_SOURCE, "arch:build", (1, 1, 28, 28))
    absent = tmp_path / "no-venv" / "bin" / "python"
    result = convert(tmp_path, model, engine="litert", litert_python=str(absent))
    assert result.failure.kind is FailureKind.ENGINE_MISSING
    assert result.failure.message.startswith("engine litert not installed: ")  # the path is shortened: …/python
    assert "not found; run `python3 -m venv .venv-litert && .venv-litert/bin/pip install -r requirements_litert.txt`" \
        in result.failure.message
    assert "\n" not in result.failure.message and "Traceback" not in result.failure.message
    assert not (tmp_path / "reports" / "artifacts" / "stn" / "convert.log").exists()  # no child ran
