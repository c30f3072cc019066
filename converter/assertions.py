"""Assertions on a conversion Result, written for the person reading a failing test."""
from __future__ import annotations

from .results import Result, labelled_comparisons
from .spec import Expectation


class ExpectedConversionFailure(Exception):
    """Raised when a model fails exactly as its spec's `expect` says (xfail(raises=...))."""


def assert_conversion(result: Result, expect: Expectation | None = None) -> None:
    """Fail with the model, stage and cause; checks in a fixed order: converted, shapes, values, deployable."""
    __tracebackhide__ = True
    failure = result.failure
    if expect is not None:
        if failure is None:
            raise AssertionError(f"{result.model_id}: expected to fail with {expect.kind} "
                                 f"({expect.reason}) but converted and passed every check: remove [expect]")
        if failure.kind.value == expect.kind:
            raise ExpectedConversionFailure(failure.one_line(result.model_id))
        raise AssertionError(f"expected {expect.kind} ({expect.reason}), got instead: "
                             f"{failure.one_line(result.model_id)}")
    chosen = result.chosen  # ONNX, the TF model and the deliverable must hold; see verify.verdict
    labelled = labelled_comparisons(result.export, result.savedmodel, (chosen,) if chosen else ())
    for label, c in labelled:
        assert c.shape_ok, f"{result.model_id}: {c.describe(label)}"
    for label, c in labelled:
        assert c.passed, f"{result.model_id}: {c.describe(label)}"
    assert failure is None, failure.one_line(result.model_id)
    # a Flex model (allow_flex) needs the Flex delegate on the device: reported, not failed
    assert result.verify is not None and (result.verify.deployable or result.tflite.flex_ops), \
        f"{result.model_id}: deliverable does not run without TensorFlow: {result.verify.deploy_message}"
    assert result.deliverable, f"{result.model_id}: passed but no deliverable was written"
