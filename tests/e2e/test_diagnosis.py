"""Checks that prove little, and what a float32 mismatch is put down to, on real conversions.

A model whose output hardly depends on its input passes with a warning (or fails when asked to),
and every report names the output; a wrong float32 result is explained: the tolerance asks more
than float32 gives, TFLite's own kernel departs from a right TF model (named op, per-op table), or
the diagnosis ran out of its share of the timeout and says so. Every model here is built in code,
except large_mean, the bundled example of a TFLite kernel that loses precision.
"""
from __future__ import annotations

import html
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

from converter.failures import FailureKind
from converter.results import Result
from converter.spec import load_spec
from converter.stages.load import make_inputs

from .. import builders
from ..support import EXAMPLES, ROOT, run


def cli(tmp_path: Path, model: Path, *args: str) -> tuple[subprocess.CompletedProcess, Result]:
    """`python -m converter MODEL` converted afresh (no cache) on onnx2tf's route, whose failures these
    tests diagnose (under `auto` the litert engine may deliver them), and the result.json it wrote."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFLITE_HARNESS_")}  # a developer's own settings
    proc = subprocess.run([sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "out"),
                           "--reports-dir", str(tmp_path / "reports"), "--no-cache", "--conversion-threads", "1",
                           "--engine", "onnx2tf", *args], capture_output=True, text=True, cwd=ROOT, env=env)
    record = tmp_path / "reports" / "artifacts" / model.stem / "result.json"
    assert record.is_file(), proc.stdout + proc.stderr[-3000:]
    return proc, Result.read(record)


def flat_model(folder: Path, name: str = "flat") -> Path:
    """Two heads on one input: `scores` is its bias plus weights a million times too small (any
    input gives the same scores, as from an untrained network), `features` a plain linear layer."""

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scores = torch.nn.Linear(16, 4)
            self.features = torch.nn.Linear(16, 6)
            with torch.no_grad():
                self.scores.weight.mul_(1e-6)
                self.scores.bias.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))

        def forward(self, x):
            return self.scores(x), self.features(x)

    torch.manual_seed(0)
    path = Path(folder) / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(TwoHeads().eval(), torch.randn(1, 16)).save(str(path))
    path.with_suffix(".toml").write_text('output_names = ["scores", "features"]\n[[inputs]]\nshape = [1, 16]\n')
    return path


def test_an_output_that_ignores_its_input_warns_on_the_cli_and_fails_only_when_asked(tmp_path):
    model = flat_model(tmp_path / "m")
    proc, result = cli(tmp_path, model)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert result.passed and "flat: PASS" in proc.stdout
    (caveat,) = result.caveats  # the features head moves with its input: no caveat of its own
    assert caveat.output == "scores" and caveat.moved < 1e-3
    warnings = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("warning:")]
    assert warnings == [f"warning: {caveat.describe()}"]
    assert "the numeric check of output 'scores' proves little" in warnings[0]
    assert (tmp_path / "out" / "flat.tflite").is_file()  # delivered all the same, by default

    proc, result = cli(tmp_path, model, "--fail-on-vacuous")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert result.failure.kind is FailureKind.VACUOUS_CHECK and result.failure.stage == "load"
    assert result.export is None  # refused before any conversion
    (line,) = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("flat: load failed")]
    assert line.startswith("flat: load failed [vacuous_check]: the numeric check of output 'scores' proves little")
    assert line.endswith("(--tflite-fail-on-vacuous)")
    assert not (tmp_path / "out" / "flat.tflite").exists()  # the earlier deliverable no longer stands


def test_a_vacuous_output_is_named_in_junit_the_summaries_and_the_terminal(harness):
    models = harness.path / "models"
    flat_model(models)
    builders.torchscript_cnn(models, name="cnn")  # an output that follows its input: no caveat
    result = run(harness, "--tflite-models-dir", "models")
    result.assert_outcomes(passed=2)
    text = result.stdout.str()
    warned = [ln.strip() for ln in result.outlines if ln.strip().startswith("warning ")]
    assert len(warned) == 1 and warned[0].startswith("warning flat: the numeric check of output 'scores' proves little"), text
    assert "warning cnn" not in text

    cases = ET.parse(harness.path / "junit.xml").getroot().iter("testcase")
    props = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in cases}
    assert props["flat"]["vacuous_outputs"] == "scores"  # not "features": the check is per output
    assert props["cnn"]["vacuous_outputs"] == ""

    describe = warned[0].removeprefix("warning flat: ")
    markdown = (harness.path / "reports" / "summary.md").read_text()
    section = markdown.split("## Checks that prove little", 1)[1].split("\n\n", 2)[1]
    assert section.splitlines() == [f"- `flat`: {describe}"]
    page = (harness.path / "reports" / "summary.html").read_text()
    section = page.split("<h2>Checks that prove little</h2>", 1)[1].split("</ul>", 1)[0]
    assert section == f"<ul><li><code>flat</code>: {html.escape(describe)}</li>"


class OffsetMean(torch.nn.Module):
    """Rows of 1024 values, each shifted by 1000, averaged, less 1000: in float32 the shift leaves
    about 6e-5 of resolution to a result that spans about 0.14 (PyTorch's own float32 answer is
    already off from float64 by several 1e-4 of its range)."""

    def forward(self, x):
        return (x + 1000.0).mean(-1) - 1000.0


def test_a_tolerance_tighter_than_float32_gives_is_put_down_to_precision(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    shape = (1, 64, 1024)
    model = folder / "offset_mean.pt"
    torch.jit.trace(OffsetMean().eval(), torch.randn(*shape)).save(str(model))
    model.with_suffix(".toml").write_text(f"[[inputs]]\nshape = {list(shape)}\n[tolerance]\nonnx = 1e-4\nfp32 = 1e-4\n")
    proc, result = cli(tmp_path, model)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert result.failure.kind is FailureKind.NUMERIC_MISMATCH
    message = result.failure.message
    assert message.startswith("ONNX output 'output_0': range-relative max error"), message
    # not a bare mismatch: the verdict follows the figures
    assert "; float32 precision, not the conversion: PyTorch's own float32 outputs differ from its float64 ones" in message
    divergence = result.divergence
    assert divergence.where == "precision" and divergence.tolerance == 1e-4 and divergence.stopped is None
    # the figure is PyTorch's own float32 error, measured here again on the same seeded input
    spec = load_spec(model, model.stem)
    (x,) = make_inputs(spec.inputs, spec.seed)
    with torch.no_grad():
        single = OffsetMean()(torch.from_numpy(x)).numpy().astype(np.float64)
        double = OffsetMean()(torch.from_numpy(x.astype(np.float64))).numpy()
    own = np.abs(single - double).max() / np.ptp(double)
    assert divergence.float64_error > divergence.tolerance / 2
    assert abs(divergence.float64_error - own) <= 0.05 * own
    onnx = result.export.outputs[0]
    assert not onnx.passed and onnx.range_rel_err <= 10 * divergence.float64_error  # as far as float32 itself is
    (line,) = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("diagnosis:")]
    assert "so no converter's float32 result can be held to 0.0001; widen that tolerance knowingly" in line


def test_a_tflite_kernel_that_loses_precision_is_named_by_its_op(tmp_path):
    proc, result = cli(tmp_path, EXAMPLES / "large_mean.pt")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert result.failure.kind is FailureKind.NUMERIC_MISMATCH and result.failure.stage == "verify"
    message = result.failure.message
    assert "the TF model onnx2tf built matches PyTorch" in message and "the TFLite conversion changes the numbers" in message
    divergence = result.divergence
    assert divergence.where == "tflite" and divergence.tf_error <= result.savedmodel.outputs[0].tolerance
    first = divergence.first
    assert first is not None and first.op_type == "MEAN" and first.range_rel_err > divergence.tolerance
    assert f"first divergence at op {first.node} (MEAN), max err" in message
    assert "float32 precision" not in message  # PyTorch's own float32 result holds: the kernel is to blame
    table = tmp_path / "reports" / "artifacts" / "large_mean" / "diagnosis" / "node_errors.md"
    assert table.is_file() and Path(divergence.table) == table
    rows = [ln for ln in table.read_text().splitlines() if "FIRST DIVERGENCE" in ln]
    assert len(rows) == 1 and "| MEAN |" in rows[0] and first.node in rows[0]


def test_the_diagnosis_stops_at_its_share_of_the_timeout_and_says_so(tmp_path):
    torch.manual_seed(0)
    model = builders.factory_model(tmp_path / "m", "slow", builders.SLOW_TO_DIAGNOSE_SOURCE, "slows:slow",
                                   (1, 3, 20, 20))
    timeout, share = 200, 0.05  # a budget of 10 s, against a diagnosis that would take minutes
    proc, result = cli(tmp_path, model, "--conversion-timeout", str(timeout), "--diagnosis-share", str(share))
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    # the model keeps its own failure: the diagnosis ran out, not the conversion
    assert result.failure.kind is FailureKind.NUMERIC_MISMATCH and result.failure.stage == "savedmodel"
    assert result.failure.message.startswith("TF model (onnx2tf) output 'output_0'")
    divergence = result.divergence
    budget = share * timeout
    assert divergence.stopped == f"its time budget of {budget:.0f} s ran out (diagnosis_share {share:g} of the timeout)"
    assert divergence.where == "unknown" and divergence.first is None  # stopped before any verdict
    assert f"diagnosis stopped early ({divergence.stopped})" in result.failure.message
    # stopped when its budget ran out, not when the model's float64 run ended (or the default share's 50 s)
    assert budget <= divergence.seconds < budget + 10
    (line,) = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("diagnosis:")]
    assert line.startswith(f"diagnosis: diagnosis stopped early ({divergence.stopped})")
