"""The graph made ready for onnx2tf before its first run (converter/stages/graph.py): each rewrite is
exact, each is what makes its pattern convert, and a model needs one onnx2tf run.

The patterns are the bundled examples built from real architectures (torchvision's ConvNeXt block,
MobileViT-v2's patch GroupNorm, SegFormer's square token map); every conversion here is real. The
counterfactual runs convert the same simplified graph without the rewrite (or without strict mode)
and show the failure the fix exists for.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from converter.failures import FailureKind

from ..support import EXAMPLES, ROOT, convert, counterfactual


@pytest.mark.parametrize("example, fix, mode, without", [
    ("layer_scale_convnext", "graph_rewrite:layer_scale", "simplified", "Dimensions must be equal"),
    ("patch_group_norm", "graph_rewrite:group_norm", "simplified", "fp32_err"),
    ("square_tokens", "onnx2tf_mode:strict", "strict", "fp32_err"),
])
def test_each_pattern_converts_in_one_run_with_its_fix_and_not_without_it(tmp_path, example, fix, mode, without):
    result = convert(tmp_path, EXAMPLES / f"{example}.pt", keep_intermediates="1")
    assert result.passed, result.failure
    assert result.onnx2tf_runs == 1 and result.savedmodel.onnx2tf_mode == mode
    assert fix in [f.label for f in result.fixes]
    assert result.tf_error < 1e-4 and result.chosen.passed
    graph = result.savedmodel.graph
    assert graph.simplified and graph.nodes_after <= graph.nodes_before
    exported = Path(result.export.onnx_path)
    # the same simplified graph, without the fix: onnx2tf's non-strict mode fails, or is silently wrong
    rewrite = fix.startswith("onnx2tf_mode")  # strict mode is that model's fix: keep its rewrites
    bare = counterfactual(tmp_path, exported, "simplified", rewrite)
    if without == "fp32_err":
        assert "failed" not in bare and bare["fp32_err"] > 1e-2, bare
    else:
        assert without in bare.get("failed", ""), bare


def test_the_rewrites_are_exact_and_leave_no_pattern_behind(tmp_path):
    """onnxruntime on the prepared graph gives the exported graph's outputs: the rewrites are
    identities, not approximations, and none of the patterns they target is left."""
    for example in ("layer_scale_convnext", "patch_group_norm", "square_tokens"):
        result = convert(tmp_path / example, EXAMPLES / f"{example}.pt", keep_intermediates="1")
        prepared = Path(result.export.onnx_path).with_name("model_prepared.onnx")
        proc = subprocess.run([sys.executable, "-c", EXACT, str(result.export.onnx_path), str(prepared)],
                              capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        check = json.loads(proc.stdout.strip().splitlines()[-1])
        assert check["max_abs_diff"] < 1e-5, (example, check)
        assert check["instance_norms"] == 0 and check["scale_after_transpose"] == 0, (example, check)


EXACT = """
import json, sys
import numpy as np, onnx
from onnx import numpy_helper
from converter.spec import InputSpec
from converter.stages.graph import run_onnxruntime
from converter.stages.load import make_inputs
exported, prepared = sys.argv[1], sys.argv[2]
arrays = make_inputs((InputSpec("image", (1, 3, 32, 32)),), 3)
_, a = run_onnxruntime(exported, ["image"], arrays, 1)
_, b = run_onnxruntime(prepared, ["image"], arrays, 1)
graph = onnx.load(prepared).graph
producer = {o: n for n in graph.node for o in n.output}
constants = {i.name for i in graph.initializer}
after = 0
for n in graph.node:
    if n.op_type in ("Mul", "Add") and any(i in producer and producer[i].op_type == "Transpose"
                                           and [x.ints for x in producer[i].attribute][0] == [0, 3, 1, 2]
                                           for i in n.input) and any(i in constants for i in n.input):
        after += 1
print(json.dumps({"max_abs_diff": float(max(np.abs(x - y).max() for x, y in zip(a, b))),
                  "instance_norms": sum(n.op_type == "InstanceNormalization" for n in graph.node),
                  "scale_after_transpose": after}))
"""


def test_a_float32_mismatch_in_the_first_mode_is_converted_again_in_strict_mode(tmp_path, diverging_pool):
    """No rule sees square_patches coming (16 channels folded back into a 16x16 map): verification
    does, and the harness converts again in strict mode. A model wrong in every mode keeps its
    first failure and is diagnosed in the last mode tried."""
    retried = convert(tmp_path, EXAMPLES / "square_patches.pt")
    assert retried.passed, retried.failure
    assert retried.onnx2tf_runs == 2 and retried.savedmodel.onnx2tf_mode == "strict"
    assert [f.label for f in retried.fixes][-1] == "onnx2tf_mode:strict"
    assert retried.fixes[-1].reason == "in onnx2tf's simplified mode the float32 outputs of its TF model differed from ONNX's"
    assert [d.recipe for d in retried.deliverables] == ["drq"]  # the wrong first TF model was never converted to TFLite
    diverging = diverging_pool.result
    assert diverging.onnx2tf_runs == 2 and diverging.savedmodel.onnx2tf_mode == "strict"
    assert diverging.fixes == ()  # a fix is recorded only where it cured the model
    assert diverging.failure.kind is FailureKind.NUMERIC_MISMATCH and diverging.divergence is not None
    assert diverging.failure.stage == "savedmodel" and diverging.deliverables == ()
    assert ("(also in onnx2tf's strict mode); the TF model onnx2tf built already differs from PyTorch (range-relative "
            "0.461); first divergence at node node_index (Transpose)") in diverging.failure.message
