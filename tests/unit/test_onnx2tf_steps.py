"""onnx2tf's mode ladder and the Flex pass, with fake attempts and a fake converter (onnx2tf_steps.py)."""
from __future__ import annotations

import dataclasses

import pytest

from converter.failures import ConversionError, FailureKind
from converter.results import (
    Fix,
    TFLiteResult,
)
from converter.stages.checkpoint import Attempt, BuiltSavedModel
from converter.stages.onnx2tf_steps import Converted, failure_of, flex_pass, ladder, mode_fixes

from ..support import saved_model


def _failing(mode, kind, stage="savedmodel", message="boom; details"):
    return Attempt(mode, 1, kind, stage, message, saved=saved_model(mode) if kind.wrong_numbers else None)


def _run_ladder(outcomes: dict, first="simplified", retry=True):
    seen = []

    def attempt(mode, earlier):
        seen.append((mode, len(earlier)))
        return outcomes[mode]
    return ladder(first, attempt, retry=retry), seen


def _flex_fakes(names_by_pass):
    """A converter that needs Flex for the ops listed for each pass (what stays unreplaced)."""
    builds = []

    def build(fixes):
        builds.append(tuple(f.detail for f in fixes))
        return BuiltSavedModel("simplified", saved_model(), tuple(f.detail for f in fixes), fixes)

    conversions = []

    def tflite(built):
        conversions.append(built)
        needed = [op for op in names_by_pass[len(conversions) - 1] if op.lower() not in built.pseudo_ops]
        if needed:
            raise ConversionError(FailureKind.FLEX_OPS, f"needs {needed}", ops=tuple(needed))
        return TFLiteResult((), 0.1), ()
    return builds, build, tflite


def test_the_ladder_stops_at_the_first_mode_that_converts():
    attempts, seen = _run_ladder({"simplified": Attempt("simplified", 1)})
    assert seen == [("simplified", 0)] and mode_fixes(attempts) == ()


def test_wrong_numbers_go_to_strict_mode_and_no_further():
    wrong = _failing("simplified", FailureKind.NUMERIC_MISMATCH, message="TF model off 0.3")
    attempts, seen = _run_ladder({"simplified": wrong, "strict": Attempt("strict", 1)})
    assert seen == [("simplified", 0), ("strict", 1)]
    (fix,) = mode_fixes(attempts)
    assert fix.label == "onnx2tf_mode:strict" and "differed from ONNX's" in fix.reason
    # wrong in strict mode too: defaults would only change what fails, so the first problem stays
    attempts, seen = _run_ladder({"simplified": wrong, "strict": _failing("strict", FailureKind.NUMERIC_MISMATCH)})
    assert [m for m, _ in seen] == ["simplified", "strict"]
    final = failure_of(attempts)
    assert final.kind is FailureKind.NUMERIC_MISMATCH and final.message == "TF model off 0.3 (also in onnx2tf's strict mode)"
    assert final.saved.onnx2tf_mode == "strict"  # the latest TF model is the one diagnosed


def test_a_failed_conversion_walks_every_mode_and_records_each_change():
    outcomes = {"simplified": _failing("simplified", FailureKind.SAVEDMODEL_ERROR, message="ValueError: 4 is not in list"),
                "strict": _failing("strict", FailureKind.TFLITE_ERROR, stage="tflite", message="converter says no"),
                "defaults": Attempt("defaults", 1)}
    attempts, seen = _run_ladder(outcomes)
    assert seen == [("simplified", 0), ("strict", 1), ("defaults", 2)]
    assert [f.label for f in mode_fixes(attempts)] == ["onnx2tf_mode:defaults", "onnx2tf_mode:strict"]  # latest first
    assert mode_fixes(attempts)[0].reason == "in onnx2tf's strict mode tflite failed: converter says no"
    outcomes["defaults"] = _failing("defaults", FailureKind.SAVEDMODEL_ERROR, message="last words")
    assert failure_of(_run_ladder(outcomes)[0]).message == "last words"  # its error is the one onnx2tf gives


def test_wrong_numbers_then_a_failure_say_both():
    outcomes = {"simplified": _failing("simplified", FailureKind.NUMERIC_MISMATCH, message="off 0.3"),
                "strict": _failing("strict", FailureKind.SAVEDMODEL_ERROR, message="ValueError: no; more"),
                "defaults": _failing("defaults", FailureKind.SAVEDMODEL_ERROR, message="ValueError: still no")}
    attempts, _ = _run_ladder(outcomes)
    assert len(attempts) == 3
    final = failure_of(attempts)
    assert final.kind is FailureKind.NUMERIC_MISMATCH
    assert final.message == "off 0.3 (and it failed: ValueError: still no in onnx2tf's strict mode)"
    assert final.saved.onnx2tf_mode == "simplified"


@pytest.mark.parametrize("kind", [k for k in FailureKind if not k.retried])
def test_what_no_mode_causes_is_not_retried(kind):
    attempts, seen = _run_ladder({"simplified": _failing("simplified", kind)})
    assert len(seen) == 1 and failure_of(attempts).kind is kind


def test_without_auto_fixes_or_past_the_last_mode_there_is_no_retry():
    bad = {"simplified": _failing("simplified", FailureKind.SAVEDMODEL_ERROR),
           "defaults": _failing("defaults", FailureKind.SAVEDMODEL_ERROR)}
    assert len(_run_ladder(bad, retry=False)[1]) == 1
    assert len(_run_ladder(bad, first="defaults")[1]) == 1


def test_the_flex_pass_replaces_what_the_converter_names_in_one_more_build():
    builds, build, tflite = _flex_fakes({0: ["Erf", "Asin"], 1: []})
    done = flex_pass(None, build, tflite, fixes=(), auto=True)
    assert isinstance(done, Converted) and builds == [(), ("asin", "erf")]
    assert [f.label for f in done.fixes] == ["pseudo_ops:asin", "pseudo_ops:erf"]
    assert all("the TFLite converter needs Flex" in f.reason for f in done.fixes)


def test_the_flex_pass_gives_up_on_ops_it_cannot_replace_or_when_told_not_to():
    builds, build, tflite = _flex_fakes({0: ["Erf", "Einsum"], 1: ["Erf", "Einsum"]})
    with pytest.raises(ConversionError, match="Einsum") as raised:
        flex_pass(None, build, tflite, fixes=(), auto=True)
    assert raised.value.kind is FailureKind.FLEX_OPS and builds == [(), ("erf",)]  # Erf replaced, Einsum has no fix
    builds, build, tflite = _flex_fakes({0: ["Erf"]})
    with pytest.raises(ConversionError):
        flex_pass(None, build, tflite, fixes=(), auto=False)
    assert builds == [()]


def test_the_flex_pass_starts_from_a_built_savedmodel_and_returns_a_failed_check():
    builds, build, tflite = _flex_fakes({0: []})
    built = BuiltSavedModel("strict", saved_model(), ("erf",), (Fix("pseudo_ops", "erf", "graph"),))
    done = flex_pass(built, build, tflite, fixes=built.pseudo_fixes, auto=True)
    assert builds == [] and done.built is built and done.fixes == built.pseudo_fixes
    wrong = _failing("simplified", FailureKind.NUMERIC_MISMATCH)
    assert flex_pass(None, lambda fixes: wrong, tflite, fixes=(), auto=True) is wrong


def test_the_failures_tf_model_and_its_outputs_come_from_one_attempt():
    import numpy as np

    wrong = dataclasses.replace(_failing("simplified", FailureKind.NUMERIC_MISMATCH), tf_outputs=(np.ones(2),))
    broken = _failing("strict", FailureKind.SAVEDMODEL_ERROR)  # no TF model to check
    final = failure_of((wrong, broken, _failing("defaults", FailureKind.SAVEDMODEL_ERROR)))
    assert final.saved.onnx2tf_mode == "simplified" and final.tf_outputs[0].tolist() == [1.0, 1.0]
    also = dataclasses.replace(_failing("strict", FailureKind.NUMERIC_MISMATCH), tf_outputs=(np.zeros(3),))
    final = failure_of((wrong, also))
    assert final.saved.onnx2tf_mode == "strict" and final.tf_outputs[0].tolist() == [0.0, 0.0, 0.0]
