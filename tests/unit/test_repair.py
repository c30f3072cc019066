"""Which quantized files the repair takes on, how its outcome is recorded and shown (fast tier: no
conversion; tests/e2e/test_repair.py repairs real files)."""
from __future__ import annotations

import dataclasses

import pytest

from converter.html_report import render
from converter.report import layer_lines
from converter.results import Deliverable, LayerError, Repair, Result
from converter.spec import SpecError, validate_layer
from converter.stages.repair import candidates, fixes_of

from ..support import comparison

MISS = dataclasses.replace(comparison(), range_rel_err=0.3, mismatched=3)


def file(recipe: str, passes: bool = True, runs: bool = True) -> Deliverable:
    from converter.checks import RuntimeCheck

    return Deliverable(recipe, f"/a/model_{recipe}.tflite", 100, (comparison() if passes else MISS,),
                       runtime=RuntimeCheck(runs, "" if runs else "failed to prepare"))


def test_only_int8_weight_recipes_ahead_of_the_first_passing_file_whose_numbers_missed_are_repaired():
    files = (file("fp16", passes=False), file("drq", passes=False), file("int8", passes=False), file("fp32"))
    assert [d.recipe for d in candidates(("fp16", "drq", "int8", "fp32"), files)] == ["drq", "int8"]
    # behind a file that passes: never needed
    assert candidates(("fp32", "drq"), (file("drq", passes=False), file("fp32"))) == []
    # a file whose numbers pass but that does not run where it goes is not the quantization's to mend
    assert candidates(("int8",), (file("int8", runs=False),)) == []
    # a file that never ran has nothing to rank
    unverified = dataclasses.replace(file("drq"), outputs=())
    assert candidates(("drq",), (unverified,)) == []


LAYERS = (LayerError("dense_1", "FULLY_CONNECTED", 130.0, 129.5, True), LayerError("mean", "MEAN", 0.2, 0.1, False))


def test_a_repaired_file_is_a_recorded_fix_and_its_layers_are_shown():
    repair = Repair(("dense_1",), 0.987, 113944, "DRQ TFLite output 'out': range-relative max error 0.3 > 0.05", 1,
                    passed=True)
    repaired = dataclasses.replace(file("drq"), path="/a/model_drq_selective.tflite", bytes=117856, layers=LAYERS,
                                   repair=repair)
    (fix,) = fixes_of(repaired)
    assert fix.label == "selective:drq"
    assert fix.reason.startswith("DRQ TFLite with 1 layer kept in float32 (dense_1): 98.7% of its weights still "
                                 "quantized, 0.12 MB against 0.11 MB; the plain file: DRQ TFLite output 'out'")
    assert fixes_of(file("drq")) == () and fixes_of(dataclasses.replace(repaired, repair=dataclasses.replace(
        repair, passed=False))) == ()
    (shown,) = layer_lines(repaired)
    assert "FULLY_CONNECTED 'dense_1' adds 130 (output error 130); MEAN 'mean' adds 0.1" in shown
    assert "runs in float32" in shown  # a layer the recipe never quantized is not one the repair kept
    refused = dataclasses.replace(repaired, repair=dataclasses.replace(repair, passed=False, note="too little left"))
    assert layer_lines(refused)[1] == "  DRQ TFLite not repaired: too little left"
    page = render({"m": Result(model_id="m", model_path="/m.pt", status="passed", deliverables=(repaired,))}, {})
    assert "Quantized files layer by layer" in page and "repaired: 1 layer(s) in float32, 98.7%" in page
    assert "FULLY_CONNECTED &#x27;dense_1&#x27; adds 130" in page
    assert "layer by layer" not in render({"m": Result(model_id="m", model_path="/m.pt", status="passed",
                                                       deliverables=(file("drq"),))}, {})


@pytest.mark.parametrize("value", [1.5, -0.1, "most"])
def test_the_share_a_repair_must_keep_quantized_is_a_share(value):
    with pytest.raises(SpecError, match="repair_min_quantized"):
        validate_layer({"repair_min_quantized": value}, "m.toml")
    assert validate_layer({"repair_min_quantized": 0.9, "repair": False}, "m.toml") == {
        "repair_min_quantized": 0.9, "repair": False}
