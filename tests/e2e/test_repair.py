"""A quantized file that misses is repaired before it is refused (stages/repair.py), for real: its
layers ranked against the float32 file, the worst kept in float32 until it passes, the result
verified like any file and delivered as its recipe with the fix `selective:<recipe>`; a repair that
would keep too little quantized is refused with its reason, and the chain goes on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from converter.failures import FailureKind
from converter.report import format_result
from converter.stages.layers import weight_elements

from .. import builders
from ..support import convert

SHAPE = '[[inputs]]\nname = "image"\nshape = [1, 3, 16, 16]\n'


def _model(tmp_path, toml: str) -> Path:
    model = builders.outlier_unit_cnn(tmp_path / "m")
    model.with_suffix(".toml").write_text(toml + "\n" + SHAPE)
    return model


def _float_weights_of_last_layer(path: str) -> bool:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    last = [d for d in it._get_ops_details() if d["op_name"] == "FULLY_CONNECTED"][-1]
    return it.get_tensor_details()[last["inputs"][1]]["dtype"] == np.float32


def test_a_drq_file_that_misses_is_delivered_with_its_worst_layer_in_float32(tmp_path):
    result = convert(tmp_path, _model(tmp_path, 'deliverables = ["drq"]'))
    assert result.passed and result.delivered == "drq", result.failure
    drq = result.deliverable_of("drq")
    repair = drq.repair
    assert repair.passed and repair.kept_float == ("PartitionedCall:0",)  # the last layer, whose input grid broke
    assert "range-relative max error" in repair.plain_miss and "> tolerance 0.05" in repair.plain_miss
    assert 0.95 < repair.quantized_share < 1.0 and repair.rebuilds == 1
    assert drq.numbers_pass and drq.worst.range_rel_err < 0.01 and drq.runtime.ok
    # the delivered file is the repaired one: int8 weights but in its last layer
    assert Path(result.deliverable).read_bytes() == Path(drq.path).read_bytes()
    assert drq.path.endswith("model_drq_selective.tflite") and _float_weights_of_last_layer(drq.path)
    quantized, floating = weight_elements(Path(drq.path).read_bytes())
    assert quantized > 9 * floating
    (fix,) = [f for f in result.fixes if f.name == "selective"]
    assert fix.label == "selective:drq" and "1 layer kept in float32 (PartitionedCall:0)" in fix.reason
    # the per-layer report: the layer kept float ranks first, and it is on the screen and in result.json
    assert drq.layers[0].name == "PartitionedCall:0" and drq.layers[0].own > 10 * drq.layers[1].own
    screen = format_result(result)
    assert "fixed automatically: selective:drq" in screen and "DRQ TFLite layer by layer" in screen
    written = json.loads((Path(drq.path).parent / "result.json").read_text())
    assert written["deliverables"][0]["repair"]["kept_float"] == ["PartitionedCall:0"]


def test_an_int8_io_file_is_repaired_layer_by_layer_and_still_runs_on_micro(tmp_path):
    result = convert(tmp_path, _model(tmp_path, 'deliverables = ["int8_io", "fp16"]'))
    assert result.passed and result.delivered == "int8_io", result.failure
    int8 = result.deliverable_of("int8_io")
    # the layer whose int8 output grid is coarse goes first; its float output is then requantized on the
    # same grid for the last layer's input, so the next round finds the last layer too
    assert int8.repair.passed and len(int8.repair.kept_float) == 2 and int8.repair.rebuilds == 2
    first, second = int8.repair.kept_float
    assert "matmul/MatMul" in first and second == "PartitionedCall:0"
    assert int8.layers[0].name == first and int8.layers[0].weights == 64 * 64
    assert 0.8 < int8.repair.quantized_share < 0.95
    assert int8.runtime.micro.runs and int8.signature.inputs[0].dtype == "int8"
    assert [f.label for f in result.fixes if f.name in ("selective", "deliverable")] == ["selective:int8_io"]


def test_a_repair_that_keeps_too_little_quantized_is_refused_and_the_chain_goes_on(tmp_path):
    model = _model(tmp_path, 'deliverables = ["drq", "fp16"]\nrepair_min_quantized = 0.99')
    result = convert(tmp_path, model)
    assert result.passed and result.delivered == "fp16"
    drq = result.deliverable_of("drq")
    assert not drq.numbers_pass and drq.layers and drq.repair is not None and not drq.repair.passed
    assert "below repair_min_quantized 99%" in drq.repair.note
    assert drq.repair.rebuilds == 0 and drq.repair.note.startswith(
        "keeping the layer that adds most error, FULLY_CONNECTED 'PartitionedCall:0' (1,024 int8 weights), in float32 "
        "would leave 98.0% of the plain file's int8 weights int8")  # known before any rebuild: too many int8 weights
    assert "DRQ TFLite not repaired: keeping the layer" in format_result(result)
    # repair = false: the miss fails the model, with its per-layer report kept
    model.with_suffix(".toml").write_text('deliverables = ["drq"]\nrepair = false\n' + SHAPE)
    refused = convert(tmp_path, model)
    assert refused.failure.kind is FailureKind.NUMERIC_MISMATCH
    assert "the error is DRQ's quantization" in refused.failure.message
    drq = refused.deliverable_of("drq")
    assert drq.repair is None and drq.layers[0].name == "PartitionedCall:0"
