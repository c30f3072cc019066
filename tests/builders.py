"""Tiny models built in code for the harness's own tests (fixed seeds, written to a folder)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def torchscript_cnn(folder: Path, name: str = "cnn", shape=(1, 3, 16, 16), seed: int = 0,
                    channels: int = 8, scale: float = 1.0, toml: str | None = None) -> Path:
    torch.manual_seed(seed)
    model = SmallCNN(channels).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    path = Path(folder) / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(model, torch.randn(*shape)).save(str(path))
    if toml is None:
        toml = f"[[inputs]]\nshape = {list(shape)}\n"
    if toml:
        path.with_suffix(".toml").write_text(toml)
    return path


def pickled_module(folder: Path, name: str = "pickled", trusted: bool = False) -> Path:
    path = Path(folder) / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(nn.Sequential(nn.Linear(4, 3)), path)
    path.with_suffix(".toml").write_text(
        f"trust_pickle = {'true' if trusted else 'false'}\n[[inputs]]\nshape = [1, 4]\n")
    return path


def factory_model(folder: Path, name: str, source: str, factory: str, shape) -> Path:
    """A state_dict whose architecture lives in a module beside it (imported by the child)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module_name, func = factory.split(":")
    (folder / f"{module_name}.py").write_text(textwrap.dedent(source))
    namespace: dict = {}
    exec(textwrap.dedent(source), namespace)
    path = folder / f"{name}.pt"
    torch.save(namespace[func]().state_dict(), path)
    path.with_suffix(".toml").write_text(f'factory = "{factory}"\n[[inputs]]\nshape = {list(shape)}\n')
    return path


SEGFAULT_SOURCE = """
import ctypes
import torch

class Segfaults(torch.nn.Module):
    def forward(self, x):
        ctypes.string_at(0)  # a native crash, like a broken custom op
        return x

def segfaults():
    return Segfaults()
"""

EIGH_SOURCE = """
import torch

class Eigh(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.eigh(x @ x.transpose(-1, -2))[0]

def eigh():
    return Eigh()
"""


def torchscript_mlp(folder: Path, name: str = "mlp", hidden: int = 64, outlier: float = 0.1) -> Path:
    """An MLP big enough for DRQ to quantize; `outlier` plants one large weight per layer,
    which coarsens the quantization grid and grows the DRQ error without changing the size."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, hidden), nn.ReLU(), nn.Linear(hidden, 8)).eval()
    with torch.no_grad():
        model[0].weight[0, 0] = outlier
        model[2].weight[0, 5] = outlier
    path = Path(folder) / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(model, torch.randn(1, 32)).save(str(path))
    path.with_suffix(".toml").write_text("[[inputs]]\nshape = [1, 32]\n")
    return path


def outlier_unit_cnn(folder: Path, name: str = "outlier_unit") -> Path:
    """A CNN whose first dense layer has one unit far larger than the rest (an "attention sink"), which
    the last layer ignores: the int8 grid of the last layer's input is then too coarse for every other
    unit, so DRQ and int8 miss, while keeping one or two layers in float32 repairs them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16)).eval()
    with torch.no_grad():
        model[8].bias[0] = 300.0
        model[10].weight[:, 0] = 0.0
    path = Path(folder) / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(model, torch.randn(1, 3, 16, 16)).save(str(path))
    return path


class Payload:
    """Unpickling this runs code: it writes `marker` (what a hostile model file would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _plain_pt2_bytes() -> bytes:
    import io

    torch.manual_seed(0)
    program = torch.export.export(nn.Sequential(nn.Linear(4, 3)).eval(), (torch.randn(1, 4),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def plain_pt2(folder: Path, name: str = "plain") -> Path:
    path = Path(folder) / f"{name}.pt2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_plain_pt2_bytes())
    return path


PT2_ATTACKS = ("sample_inputs", "pickled_weight", "opaque_constant", "repeated_member")


def crafted_pt2(folder: Path, attack: str, marker: Path) -> Path:
    """A real torch.export archive rewritten so that `torch.export.load` unpickles `Payload`
    through one of the three paths it has: sample inputs (its weights_only=False fallback),
    a weight marked use_pickle, an opaque_obj_* constant (plain pickle.loads); or hides that
    constant behind a second, benign copy of its config (zipfile reads the last, torch the first)."""
    import io
    import json
    import pickle
    import warnings
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(_plain_pt2_bytes()))
    members = {n: source.read(n) for n in source.namelist()}
    evil = io.BytesIO()
    torch.save(Payload(marker), evil)
    if attack == "sample_inputs":
        (name,) = [n for n in members if "/sample_inputs/" in n]
        members[name] = evil.getvalue()
    elif attack == "pickled_weight":
        (name,) = [n for n in members if n.endswith("model_weights_config.json")]
        config = json.loads(members[name])
        entry = config["config"][sorted(config["config"])[0]]
        entry["use_pickle"] = True
        members[name] = json.dumps(config).encode()
        members[name.rsplit("/", 1)[0] + "/" + entry["path_name"]] = evil.getvalue()
    elif attack in ("opaque_constant", "repeated_member"):
        (name,) = [n for n in members if n.endswith("model_constants_config.json")]
        config = json.loads(members[name])
        benign = json.dumps(config).encode()
        config["config"]["hidden"] = {"path_name": "opaque_obj_0", "is_param": False,
                                      "use_pickle": True, "tensor_meta": None}
        members[name] = json.dumps(config).encode()
        members[name.rsplit("/", 1)[0] + "/opaque_obj_0"] = pickle.dumps(Payload(marker))
    else:
        raise ValueError(attack)
    path = Path(folder) / f"{attack}.pt2"
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as out:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": the point of that attack
        for member, data in members.items():
            out.writestr(member, data)
            if attack == "repeated_member" and member == name:
                out.writestr(member, benign)  # torch reads the first copy, zipfile the last
    return path


def waiting_model_source(kill_parent: bool) -> str:
    """A factory module whose first forward pass writes its process id where a test can see it, then
    waits: a conversion child that is busy when its run is cancelled, or slow in its load stage.
    Only the first pass waits: the load stage runs the model once per verification input, and a
    test needs one slow stage, not eight. With kill_parent it first kills the process that started
    it (an xdist worker), as the out-of-memory killer or a stray `kill -9` would, mid-conversion."""
    kill = "os.kill(os.getppid(), signal.SIGKILL)" if kill_parent else "pass"
    return f"""
import os, signal, time, torch

class Waits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    waited = False

    def forward(self, x):
        if not Waits.waited:
            Waits.waited = True
            with open(os.environ["HARNESS_TEST_PID_FILE"], "w") as fh:
                fh.write(str(os.getpid()))
            {kill}
            time.sleep(float(os.environ.get("HARNESS_TEST_SLEEP", "60")))
        return self.fc(x)

def waits():
    return Waits()
"""


def record(outcome="passed", kind=None, message=None, drq=1e-3, fp32=1e-7, size=10_000, seconds=3.0,
           cache_hit=False, model_id="m"):
    """A model's Result as the controller holds it (no conversion): for the gate's and reports' unit tests."""
    from converter.checks import OutputComparison
    from converter.failures import Failure, FailureKind, Stage
    from converter.results import Deliverable, ExportResult, Outcome, Result, SavedModelResult

    def outputs(err):
        return (OutputComparison("output_0", (1, 8), (1, 8), err * 2, err, 2.0, err, 0.9999, None, 0, 8, 0.05),)

    failed = outcome != "passed"
    return Result(
        model_id=model_id, model_path=f"{model_id}.pt", status="failed" if failed else "passed",
        failure=Failure(FailureKind(kind), Stage.EXPORT, message) if kind else None, outcome=Outcome(outcome),
        export=ExportResult("legacy", 17, "model.onnx", 20_000, ((1, 32),), (), outputs(1e-8), 1.0),
        savedmodel=SavedModelResult("saved_model", "nhwc", (("input", "input"),), ((0, 1),), (("output_0", "output_0"),),
                                    1.0, outputs=outputs(fp32), output_perms=((0, 1),)),
        deliverables=(Deliverable("drq", "model_drq.tflite", size, outputs(drq)),),
        requested=("drq",), delivered=None if failed else "drq", seconds=seconds, peak_rss_mb=800.0,
        cache_hit=cache_hit)


# onnx2tf mistranslates this adaptive pool (as in the bundled diverging_pool); only the diagnosis runs the
# model in float64, and there it waits (300 s), as a large model's diagnosis takes minutes, having written
# its process id where a test can find it (HARNESS_TEST_PID_FILE, when set)
SLOW_TO_DIAGNOSE_SOURCE = """
import os, time
import torch


class SlowInDouble(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d((7, 7))
        self.head = torch.nn.Linear(4 * 7 * 7, 5)

    def forward(self, x):
        if x.dtype == torch.float64:
            if os.environ.get("HARNESS_TEST_PID_FILE"):
                with open(os.environ["HARNESS_TEST_PID_FILE"], "w") as fh:
                    fh.write(str(os.getpid()))
            time.sleep(300)
        return self.head(torch.flatten(self.pool(self.conv(x)), 1))


def slow():
    return SlowInDouble()
"""
