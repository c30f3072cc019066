"""Known fixes applied automatically, then verified; and a numeric mismatch that names its node.

Every test converts for real; the bundled examples (convnext_block, bert_encoder,
segmentation_dict, detection_namedtuple, nested_outputs, squeezenet_tiny, diverging_pool) run
the same classes of model in the main job.
"""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from converter.failures import FailureKind

from .. import builders
from ..support import ROOT, convert, run

TRIG_SOURCE = """
import torch
class Trig(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
    def forward(self, x):
        y = torch.tanh(self.fc(x)) * 0.9
        return torch.asin(y) + torch.acos(y) + torch.atan(y) + torch.erf(y)
def trig():
    return Trig()
"""


def test_ops_tflite_builtins_lack_are_replaced_and_verified(tmp_path):
    model = builders.factory_model(tmp_path / "m", "trig", TRIG_SOURCE, "trigs:trig", (1, 8))
    result = convert(tmp_path, model)
    assert result.passed, result.failure
    assert [f.label for f in result.fixes] == ["pseudo_ops:acos", "pseudo_ops:asin", "pseudo_ops:atan",
                                               "pseudo_ops:erf"]
    assert "the ONNX graph has Erf, which TFLite builtins lack" in [f.reason for f in result.fixes]
    assert result.tflite.flex_ops == () and result.verify.deployable
    assert all(c.range_rel_err < 1e-4 for c in result.savedmodel.outputs)  # kept only because it verifies
    model.with_suffix(".toml").write_text("auto_fixes = false\n" + model.with_suffix(".toml").read_text())
    off = convert(tmp_path, model)
    assert off.failure.kind is FailureKind.FLEX_OPS and off.fixes == ()


def test_flex_ops_the_converter_still_names_are_replaced_in_a_second_pass(tmp_path):
    """The graph read is a shortcut; without it the TFLite converter's own report drives the fix."""
    model = builders.factory_model(tmp_path / "m", "trig", TRIG_SOURCE, "trigs:trig", (1, 8))
    script = """
import json, sys
from pathlib import Path
from converter.stages import offline
from converter.stages.export import export_onnx
from converter.stages.load import load_model, make_inputs, run_torch
from converter.protocol import Progress
from converter.stages.onnx2tf_steps import flex_pass
from converter.stages.checkpoint import BuiltSavedModel
from converter.stages.savedmodel import to_savedmodel
from converter.stages.tflite import to_tflite
from converter.spec import load_spec
offline.install()
spec = load_spec(Path(sys.argv[1]), "trig")
loaded = load_model(spec)
arrays = make_inputs(loaded.inputs, 0)
reference, structure = run_torch(loaded, arrays)
work = Path(sys.argv[2])
work.mkdir()
export = export_onnx(spec, loaded, arrays, reference, work / "model.onnx", list(structure.names), 1)
progress = Progress(work / "progress.json")
def build(fixes):
    progress.start("savedmodel")
    saved, _ = to_savedmodel(spec, Path(export.onnx_path), ["input"], export.input_shapes, list(structure.names), work,
                             pseudo_ops=tuple(f.detail for f in fixes))
    return BuiltSavedModel("simplified", saved, saved.pseudo_ops, fixes)
def tflite(built):
    progress.start("tflite")
    return to_tflite(spec, Path(built.saved.path), work)
# no graph read first: the TFLite converter's own report drives the fix
done = flex_pass(None, build, tflite, fixes=(), auto=True)
progress.finish()
print(json.dumps({"fixes": [[f.label, f.reason] for f in done.fixes], "flex": list(done.tflite.flex_ops),
                  "seconds": progress.stage_seconds}))
"""
    proc = subprocess.run([sys.executable, "-c", script, str(model), str(tmp_path / "work")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["flex"] == []
    assert [label for label, _ in out["fixes"]] == ["pseudo_ops:acos", "pseudo_ops:asin", "pseudo_ops:atan",
                                                    "pseudo_ops:erf"]
    assert all("the TFLite converter needs Flex" in reason for _, reason in out["fixes"])
    assert set(out["seconds"]) == {"savedmodel", "tflite"}  # both passes counted in their stages


def test_dict_namedtuple_and_nested_outputs_are_flattened_and_named(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    source = """
import collections, torch
Pair = collections.namedtuple("Pair", ["scores", "boxes"])
class Heads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(6, 3)
        self.b = torch.nn.Linear(6, 4)
    def forward(self, x):
        return Pair(torch.softmax(self.a(x), -1), self.b(x))
def heads():
    return Heads()
"""
    builders.factory_model(folder, "named", source, "headsmod:heads", (1, 6))

    class Seg(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Conv2d(3, 4, 1)
            self.aux = torch.nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x):
            return {"out": self.out(x), "aux": self.aux(x)}

    torch.manual_seed(0)
    torch.jit.trace(Seg().eval(), torch.randn(1, 3, 8, 8), strict=False).save(str(folder / "seg.pt"))
    (folder / "seg.toml").write_text("[[inputs]]\nshape = [1, 3, 8, 8]\n")

    class Nested(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(5, 5)

        def forward(self, x):
            h = self.fc(x)
            return (h, torch.relu(h)), torch.sigmoid(h)

    torch.export.save(torch.export.export(Nested().eval(), (torch.randn(1, 5),)), str(folder / "nested.pt2"))

    results = {name: convert(tmp_path, folder / name) for name in ("named.pt", "seg.pt", "nested.pt2")}
    for result in results.values():
        assert result.passed, result.failure
    def names(r):
        return [n for n, _ in r.savedmodel.output_names]

    assert names(results["named.pt"]) == ["scores", "boxes"]
    assert results["named.pt"].fixes[0].label == "flatten_outputs:namedtuple -> scores, boxes"
    assert names(results["seg.pt"]) == ["out", "aux"]
    assert results["seg.pt"].savedmodel.output_perms == ((0, 2, 3, 1), (0, 2, 3, 1))  # maps come out NHWC
    assert names(results["nested.pt2"]) == ["output_0_0", "output_0_1", "output_1"]
    assert [f.name for f in results["nested.pt2"].fixes] == ["flatten_outputs", "pt2_legacy_trace"]
    # the sidecar's names win over the keys; without automatic fixes the dict is not exportable
    (folder / "seg.toml").write_text('output_names = ["mask", "deep"]\n[[inputs]]\nshape = [1, 3, 8, 8]\n')
    assert [n for n, _ in convert(tmp_path, folder / "seg.pt").savedmodel.output_names] == ["mask", "deep"]
    (folder / "seg.toml").write_text("auto_fixes = false\n[[inputs]]\nshape = [1, 3, 8, 8]\n")
    off = convert(tmp_path, folder / "seg.pt")
    assert off.failure.kind is FailureKind.EXPORT_ERROR and "DictConstruct" in off.failure.message


def test_number_keys_none_outputs_and_square_maps_are_named_and_laid_out_right(tmp_path):
    """A feature-pyramid style dict: {8: [1, 4, 8, 8], 16: [1, 4, 4, 4], "extra": None}. The
    second map reads the same in both layouts (C == H == W); the values decide which onnx2tf chose."""
    source = """
import torch
class Pyramid(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p3 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.p4 = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
    def forward(self, x):
        p3 = torch.relu(self.p3(x))
        return {8: p3, 16: self.p4(p3), "extra": None}
def pyramid():
    return Pyramid()
"""
    model = builders.factory_model(tmp_path / "m", "pyramid", source, "pyramids:pyramid", (1, 3, 8, 8))
    result = convert(tmp_path, model)
    assert result.passed, result.failure
    assert [n for n, _ in result.savedmodel.output_names] == ["output_8", "output_16"]
    assert result.export.exporter == "legacy" and result.export.opset == 17
    assert result.savedmodel.output_perms == ((0, 2, 3, 1), (0, 2, 3, 1))
    assert all(c.range_rel_err < 1e-4 for c in result.savedmodel.outputs)


def test_a_pt2_that_dynamo_leaves_at_opset_18_exports_at_17(tmp_path):
    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    torch.manual_seed(0)
    path = tmp_path / "m" / "pooled.pt2"
    path.parent.mkdir()
    torch.export.save(torch.export.export(Pooled().eval(), (torch.randn(1, 3, 16, 16),)), str(path))
    result = convert(tmp_path, path)
    assert result.passed, result.failure
    assert (result.export.exporter, result.export.opset) == ("legacy", 17)
    assert [f.name for f in result.fixes] == ["pt2_legacy_trace"]
    path.with_suffix(".toml").write_text("auto_fixes = false\n")
    dynamo = convert(tmp_path, path)
    assert dynamo.passed and dynamo.export.opset == 18  # what the trace route avoids
    assert dynamo.export.exporter == "dynamo" and dynamo.fixes == ()


def test_a_wrong_float32_conversion_names_its_first_diverging_node(diverging_pool):
    result = diverging_pool.result  # the bundled example onnx2tf mistranslates
    assert result.failure.kind is FailureKind.NUMERIC_MISMATCH
    assert result.failure.stage == "savedmodel" and "TF model (onnx2tf) output" in result.failure.message
    assert result.divergence.where == "onnx2tf"
    first = result.divergence.first
    assert first is not None and first.range_rel_err > 1e-4
    assert f"first divergence at node {first.node} ({first.op_type}), max err" in result.failure.message
    table = Path(result.divergence.table).read_text()
    assert "FIRST DIVERGENCE" in table and first.node in table
    rows = json.loads((Path(result.divergence.table).parent / "node_errors.json").read_text())
    before = rows[:[r["node"] for r in rows].index(first.node)]
    assert before and all(r["range_rel_err"] is None or r["range_rel_err"] <= 1e-4 for r in before)
    assert any(r["range_rel_err"] is not None for r in before)  # nodes before it were measured, and held


LSTM_SOURCE = """
import torch
class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 3)
    def forward(self, x):
        return self.head(self.lstm(x)[0])
def tagger():
    return Tagger()
"""


def test_a_graph_that_needs_simplifying_converts_in_one_onnx2tf_run(tmp_path):
    """An LSTM's exported graph computes shapes that onnx2tf's non-strict mode cannot follow: the
    harness simplifies it in-process before the first run (no retry, no fix to record); without
    fixes onnx2tf runs with its own defaults, which simplify it in subprocesses."""
    model = builders.factory_model(tmp_path / "m", "lstm", LSTM_SOURCE, "taggers:tagger", (1, 6, 8))
    result = convert(tmp_path, model, keep_intermediates="1")
    assert result.passed, result.failure
    assert result.onnx2tf_runs == 1 and result.savedmodel.onnx2tf_mode == "simplified" and result.fixes == ()
    assert result.savedmodel.graph.nodes_after < result.savedmodel.graph.nodes_before
    from ..support import counterfactual

    raw = counterfactual(tmp_path, Path(result.export.onnx_path), "simplified", rewrite=False, simplify=False)
    assert "onnx2tf" in raw.get("failed", ""), raw  # as exported, onnx2tf's non-strict mode cannot convert it
    model.with_suffix(".toml").write_text("auto_fixes = false\n" + model.with_suffix(".toml").read_text())
    plain = convert(tmp_path, model)
    assert plain.passed and plain.fixes == () and plain.savedmodel.onnx2tf_mode == "defaults"
    assert plain.onnx2tf_runs == 1 and plain.savedmodel.graph is None


DIFF_SOURCE = """
import torch
class Packed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
    def forward(self, ids):
        # transformers' packed-sequence detection (masking_utils), as GPT-2 traces it without a mask
        steps = torch.diff(ids, prepend=ids[:, :1] - 1, dim=-1)
        sequence = (steps != 1).cumsum(-1)
        return self.embed(ids) * (sequence.unsqueeze(-1).float() + 1)
"""


def test_ops_without_a_legacy_symbolic_get_one_and_are_verified(tmp_path):
    """A TorchScript file can only take the legacy exporter, which has no symbolic for aten::diff
    and writes CumSum over bools that onnx.checker refuses (GPT-2 fed only input_ids hits both)."""
    namespace: dict = {}
    exec(DIFF_SOURCE, namespace)
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (1, 12))
    path = tmp_path / "m" / "packed.pt"
    path.parent.mkdir()
    torch.jit.trace(namespace["Packed"]().eval(), ids).save(str(path))
    path.with_suffix(".toml").write_text('[[inputs]]\nname = "ids"\nshape = [1, 12]\ndtype = "int64"\nrange = [0, 50]\n')
    result = convert(tmp_path, path)
    assert result.passed, result.failure
    assert [f.label for f in result.fixes] == ["onnx_symbolic:aten::diff", "onnx_symbolic:aten::cumsum"]
    assert result.export.exporter == "legacy" and all(c.passed for c in result.export.outputs)
    path.with_suffix(".toml").write_text("auto_fixes = false\n" + path.with_suffix(".toml").read_text())
    plain = convert(tmp_path, path)
    assert plain.failure.kind is FailureKind.EXPORT_ERROR
    assert "Exporting the operator 'aten::diff' to ONNX opset version 17 is not supported" in plain.failure.message


def test_fixes_reach_junit_the_summaries_and_the_baseline(harness):
    models = harness.path / "models"
    builders.factory_model(models, "trig", TRIG_SOURCE, "trigs:trig", (1, 8))
    assert run(harness, "--tflite-models-dir", "models", "--tflite-baseline-update").ret == 0
    baseline = json.loads((harness.path / "tflite_baseline.json").read_text())
    assert baseline["models"]["trig"]["fixes_applied"].startswith("pseudo_ops:acos; pseudo_ops:asin")
    cases = ET.parse(harness.path / "junit.xml").getroot().iter("testcase")
    props = {p.get("name"): p.get("value") for c in cases for p in c.iter("property")}
    assert props["fixes_applied"] == baseline["models"]["trig"]["fixes_applied"]
    assert "| fixes applied |" in (harness.path / "reports" / "summary.md").read_text()
    # a change in the fixes a model needs is reported, never gated
    (models / "trig.toml").write_text('pseudo_ops = ["erf"]\n' + (models / "trig.toml").read_text())
    rerun = run(harness, "--tflite-models-dir", "models")
    assert rerun.ret == 0
    rerun.stdout.fnmatch_lines(["note trig: fixes_applied changed: pseudo_ops:acos; * -> pseudo_ops:acos; *"])
