"""Helpers the harness's tests share (the models themselves are built by builders.py): running a
conversion or a pytester batch, waiting for a process, and small records for the fast tier."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from converter.checks import OutputComparison
from converter.discovery import discover
from converter.results import GraphResult, Result, SavedModelResult
from converter.runner import convert_case
from converter.settings import resolve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "model_cases" / "examples"
# A user's pytest has no Hypothesis (this repository's own test tool, requirements_dev.txt); its
# plugin would cost every pytest these tests start, and each of its xdist workers, 0.9 s of imports.
NO_HYPOTHESIS = "-p no:hypothesispytest"


def write(path, text=""):
    """A file with its folders, for sidecars and specs written in a test."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=junit.xml",
                                         "--tflite-conversion-threads=1", *args)


def settings_for(tmp_path, **cli):
    """The tests of onnx2tf's route run it alone (engine onnx2tf), unless a test names another engine."""
    return resolve({"tflite_dir": str(tmp_path / "out"), "reports_dir": str(tmp_path / "reports"),
                    "tflite_cache_dir": str(tmp_path / "cache"), "engine": "onnx2tf",
                    "conversion_threads": "1", **cli}, env={}, ini={})


def convert(tmp_path, model: Path, **cli) -> Result:
    settings = settings_for(tmp_path, **cli)
    (case,) = [c for c in discover([model.parent], timeout=settings.timeout, engine=settings.engine) if c.path == model]
    return convert_case(case, settings)


def gone_within(pid: int, seconds: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout=seconds)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True

# A shell that starts a job in the background (`cmd &` without job control) has it ignore SIGINT, and
# Python then never turns SIGINT into KeyboardInterrupt: the run these tests signal gets the default a
# terminal gives, through an exec that keeps its pid.
DEFAULT_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"


def start_pytest(harness, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DEFAULT_SIGINT, sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "--junitxml=junit.xml", "--tflite-conversion-threads=1", *args], cwd=harness.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for_pid(pid_file: Path, proc: subprocess.Popen, seconds: float = 180) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pid_file.is_file() and pid_file.read_text().strip():
            return int(pid_file.read_text())
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    raise AssertionError("the conversion child never started")


def with_group_killed(proc: subprocess.Popen) -> None:
    """Whatever the test found, leave nothing running."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


# One model's exported graph, simplified and rewritten (if asked), converted by onnx2tf in one
# mode, then by TFLite: its float32 error against onnxruntime on the exported graph, or the failure.
COUNTERFACTUAL = """
import json, sys
from pathlib import Path
import numpy as np, onnx
from converter.spec import InputSpec, ModelSpec
from converter.stages import offline
from converter.stages.graph import run_onnxruntime
from converter.stages.graph import REWRITES, _simplify
from converter.stages.load import make_inputs
from converter.metrics import compare
from converter.stages.savedmodel import to_savedmodel
from converter.stages.tflite import to_tflite
from converter.stages.verify import run_tflite
offline.install()
exported, work, mode, rewrite = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
work.mkdir(parents=True)
model = onnx.load(str(exported))
model = _simplify(model)[0] if sys.argv[5] == "1" else model
applied = [name for name, apply, _ in REWRITES if rewrite and apply(model)]
onnx.save(model, str(work / "graph.onnx"))
inputs = tuple(InputSpec(i.name, tuple(d.dim_value for d in i.type.tensor_type.shape.dim)) for i in model.graph.input)
names, shapes = [i.name for i in inputs], tuple(i.shape for i in inputs)
spec = ModelSpec(model_id="m", path=str(exported), inputs=inputs, deliverables=("fp32",))
arrays = make_inputs(spec.inputs, 0)
_, reference = run_onnxruntime(exported, names, arrays, 1)
try:
    saved, _ = to_savedmodel(spec, work / "graph.onnx", names, shapes, [o.name for o in model.graph.output], work, mode=mode)
    _, files = to_tflite(spec, Path(saved.path), work)
    out = run_tflite(files[0].path, saved, arrays, 1)[0]
    print(json.dumps({"rewrites": applied, "fp32_err": compare("o", reference[0], out, 1e-4).range_rel_err}))
except Exception as exc:
    print(json.dumps({"rewrites": applied, "failed": str(exc)[:300]}))
"""


def counterfactual(tmp_path, exported: Path, mode: str, rewrite: bool, simplify: bool = True) -> dict:
    work = tmp_path / f"{mode}-{rewrite}-{simplify}"
    proc = subprocess.run([sys.executable, "-c", COUNTERFACTUAL, str(exported), str(work), mode, "1" if rewrite else "0",
                           "1" if simplify else "0"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def comparison(name="out") -> OutputComparison:
    """An output that matches PyTorch to float32 precision."""
    return OutputComparison(name, (1, 4), (1, 4), 1e-7, 1e-8, 2.0, 5e-8, 1.0, 1.0, 0, 4, 1e-4, p99_rel_err=4e-8)


def saved_model(mode="strict") -> SavedModelResult:
    """A SavedModel record onnx2tf's `mode` built, its TF model checked."""
    return SavedModelResult("/a/saved_model", "nchw", (("x", "input_x"),), ((0, 1),), (("out", "output_out"),), 1.5,
                            ("erf",), mode, "/a/model_prepared.onnx", GraphResult(10, 8, 0.3, True, "square"),
                            (comparison(),), ((0, 1),))
