"""What verifying on more inputs costs and what it catches, measured on a ResNet-18 built in code.

    .venv/bin/python benchmarks/verify_inputs.py [--counts 1,4,8,16] [--repeats 2] [--work DIR]

The network is torchvision's ResNet-18 written out in plain torch (the same layers, shapes and
parameter count: 11.7 M), random weights with its BatchNorm statistics recalibrated on N(0, 1)
images (otherwise its output hardly depends on its input), saved as TorchScript. For each count of
verification inputs it runs the verify stage (converter.stages.verify.verify: every input through
the DRQ file the one-model CLI built, then the runtime checks in their own process) on the same
inputs the pipeline draws, and prints its CPU seconds (this process's and the runtime-check
process's: wall time on a shared machine is noise), the CPU seconds PyTorch takes for the
reference outputs (the load stage's share), and the DRQ file's figures over those inputs. One
input is the verify stage as it was before `verify_samples`. Figures only: the default in
converter/spec.py and the README cite what this printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from converter.results import Result  # noqa: E402


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision.models.resnet18's layers, written out (no torchvision beside the project's torch)."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        layers, inplanes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)]
            inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


def build(folder: Path) -> Path:
    torch.manual_seed(0)
    model = ResNet18()
    model.train()
    with torch.no_grad():  # BatchNorm statistics from N(0, 1) images: the harness's sample distribution
        for _ in range(4):
            model(torch.randn(8, 3, 224, 224))
    model.eval()
    path = folder / "resnet18.pt"
    torch.jit.trace(model, torch.randn(1, 3, 224, 224)).save(str(path))
    path.with_suffix(".toml").write_text('[[inputs]]\nname = "image"\nshape = [1, 3, 224, 224]\n'
                                         '[tolerance]\ndrq = 10.0\n')  # this measures, it does not judge
    return path


def convert(model: Path, work: Path) -> Result:
    """The model converted once by the one-model CLI (DRQ), its artifacts kept."""
    reports = work / "reports"
    shutil.rmtree(reports, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "converter", str(model), "--no-cache", "--verify-samples", "1",
                           "--tflite-dir", str(work / "tflite"), "--reports-dir", str(reports)],
                          cwd=ROOT, capture_output=True, text=True)
    result = Result.read(reports / "artifacts" / model.stem / "result.json")
    if result.failure:
        raise SystemExit(f"{model.name} failed: {result.failure.message}\n{proc.stdout}")
    return result


def cpu_seconds() -> float:
    """This process's CPU time and its finished children's (the runtime-check process): what the
    stage costs the machine, whatever else runs beside it (wall time on a shared machine swung 1.1 to
    4.8 s for the same verify stage)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measure(model: Path, result: Result, count: int, threads: int) -> dict:
    """The verify stage on `count` inputs, as the pipeline runs it (the same sets, the same function),
    and the PyTorch outputs on the inputs beyond the first (the load stage's share of the cost)."""
    from converter.spec import InputSpec, ModelSpec
    from converter.stages.calibration import verification
    from converter.stages.load import make_inputs
    from converter.stages.verify import verify

    inputs = (InputSpec("image", (1, 3, 224, 224)),)
    spec = ModelSpec(model_id="resnet18", path=str(model), inputs=inputs, tolerance={"drq": 10.0, "onnx": 1e-4,
                                                                                  "fp32": 1e-4})
    module = torch.jit.load(str(model)).eval()
    arrays = [make_inputs(inputs, 0)] + verification(inputs, 0, count - 1)
    start = cpu_seconds()
    with torch.no_grad():
        sets = [(tuple(a), (module(torch.from_numpy(a[0])).numpy(),)) for a in arrays]
    torch_cpu = cpu_seconds() - start
    files = tuple(dataclasses.replace(d, outputs=(), runtime=None) for d in result.deliverables)
    start, wall = cpu_seconds(), time.perf_counter()
    _, (drq,) = verify(spec, sets, result.savedmodel, files, threads)
    verify_cpu, verify_wall = cpu_seconds() - start, time.perf_counter() - wall
    (out,) = drq.outputs
    return {"count": count, "verify_cpu": verify_cpu, "verify_wall": verify_wall, "torch_cpu": torch_cpu,
            "samples": out.samples, "max": out.range_rel_err, "p99": out.p99_rel_err, "cosine": out.cosine,
            "top1": out.top1_agreement, "passed": drq.passed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1,4,8,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "reports" / "verify_inputs")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = build(args.work)
    result = convert(model, args.work)
    torch.set_num_threads(args.threads)
    rows = []
    for _ in range(args.repeats):  # round after round, so that a busy minute spreads over every count
        for count in map(int, args.counts.split(",")):
            rows.append(measure(model, result, count, args.threads))
    print(f"{'inputs':>6}  {'verify CPU s (min)':>18}  {'wall s (min)':>12}  {'PyTorch CPU s':>13}  DRQ figures over the inputs")
    for count in map(int, args.counts.split(",")):
        mine = [r for r in rows if r["count"] == count]
        r = min(mine, key=lambda x: x["verify_cpu"])
        print(f"{count:>6}  {r['verify_cpu']:>18.2f}  {min(x['verify_wall'] for x in mine):>12.2f}  "
              f"{min(x['torch_cpu'] for x in mine):>13.2f}  max err {r['max']:.4f}, p99 {r['p99']:.4f}, cosine "
              f"{r['cosine']:.6f}, top-1 {r['top1']:.0%}")
    (args.work / "verify_inputs.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
