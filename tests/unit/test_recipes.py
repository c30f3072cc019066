"""Each recipe judged on its own: a file the converter refuses, the chain's recorded fix (tflite.py, verdict.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.failures import ConversionError, FailureKind
from converter.results import (
    Deliverable,
)
from converter.spec import ModelSpec

from ..support import comparison


def _fake_converter(monkeypatch, refuses: dict):
    """tflite.py's converter call, faked: bytes for a recipe, or the error it is told to raise."""
    from converter.stages import tflite

    def convert(saved_model, *, recipe, allow_flex, calibration=()):
        if recipe in refuses:
            raise refuses[recipe]
        return b"TFL3" + recipe.encode()
    monkeypatch.setattr(tflite, "_convert", convert)
    return tflite


def test_a_recipe_the_converter_refuses_is_recorded_and_the_others_are_built(tmp_path, monkeypatch):
    tflite = _fake_converter(monkeypatch, {"int8": RuntimeError("error: 'tfl.atan2' op is neither a custom op nor a flex op")})
    spec = ModelSpec.from_dict({"model_id": "m", "path": str(tmp_path / "m.pt"), "deliverables": ["int8", "fp16"]})
    result, files = tflite.to_tflite(spec, tmp_path / "saved_model", tmp_path, calibration=[{"x": np.zeros(1)}])
    assert [f.recipe for f in files] == ["fp16"] and Path(files[0].path).read_bytes() == b"TFL3fp16"
    (refusal,) = result.refused
    assert refusal.recipe == "int8" and "tfl.atan2" in refusal.reason
    assert refusal.describe().startswith("int8 TFLite could not be built: TFLiteConverter (int8): RuntimeError")


def test_a_conversion_fails_when_every_recipe_is_refused_or_ops_need_flex(tmp_path, monkeypatch):
    spec = ModelSpec.from_dict({"model_id": "m", "path": str(tmp_path / "m.pt"), "deliverables": ["drq", "fp16"]})
    tflite = _fake_converter(monkeypatch, {"drq": RuntimeError("error: first"), "fp16": RuntimeError("error: second")})
    with pytest.raises(ConversionError, match="TFLiteConverter \\(drq\\)") as raised:
        tflite.to_tflite(spec, tmp_path / "saved_model", tmp_path)
    assert raised.value.kind is FailureKind.TFLITE_ERROR  # what the ladder may retry in another mode
    flex = RuntimeError("Some ops are not supported by the native TFLite runtime, you can enable TF kernels fallback "
                        "using TF Select (Select TF ops). tf.Erf {device = \"\"}")
    tflite = _fake_converter(monkeypatch, {"drq": flex})
    with pytest.raises(ConversionError) as raised:
        tflite.to_tflite(spec, tmp_path / "saved_model", tmp_path)
    assert raised.value.kind is FailureKind.FLEX_OPS and raised.value.ops == ("Erf",)  # the Flex pass's to mend


def test_the_chain_names_the_first_recipe_passed_over_whether_refused_or_failing():
    from converter.checks import RuntimeCheck
    from converter.results import Refusal
    from converter.verdict import fallback_fixes

    drq = Deliverable("drq", "/a/drq.tflite", 10, (comparison(),))
    int8 = Deliverable("int8", "/a/int8.tflite", 9, runtime=RuntimeCheck(False, "RuntimeError: XNNPACK failed to prepare"))
    (fix,) = fallback_fixes(("int8_io", "int8", "drq"), (int8, drq), drq, (Refusal("int8_io", "no int8 kernel"),))
    assert fix.label == "deliverable:drq" and fix.reason == "int8-IO TFLite could not be built: no int8 kernel"
    (fix,) = fallback_fixes(("int8", "drq"), (int8, drq), drq)
    assert "XNNPACK failed to prepare" in fix.reason and fix.reason.startswith("int8 TFLite does not run")
    assert fallback_fixes(("drq",), (drq,), drq) == ()


def test_a_file_that_never_ran_is_never_passed_not_even_where_flex_is_allowed():
    from converter.checks import RuntimeCheck
    from converter.failures import FailureKind
    from converter.verdict import first_problem

    unrun = Deliverable("drq", "/a/drq.tflite", 9, runtime=RuntimeCheck(False, "RuntimeError: failed to prepare"))
    for allow_flex, flex in ((False, ()), (True, ("FlexErf",))):
        problem = first_problem(None, None, unrun, deployable=False, deploy_message="", flex_ops=flex,
                                allow_flex=allow_flex)
        assert problem is not None and problem.kind is FailureKind.TFLITE_ERROR and "failed to prepare" in problem.message
