"""Assertions on a conversion Result, written for the person reading a failing test.

Each check raises its verdict rather than `assert`ing it: pytest rewrites the asserts of an
installed plugin's modules, and a rewritten one adds its own `assert Failure(...) is None` line
under the message, a second telling of what the message already said.
"""
from __future__ import annotations

from .failures import FailureKind
from .results import Result, labelled_comparisons
from .spec import Expectation


class ExpectedConversionFailure(Exception):
    """Raised when a model fails exactly as its spec's `expect` says (xfail(raises=...))."""


class ModelFailed(AssertionError):
    """A model's verdict: its one line (model, stage, cause) and the kind of failure, whose row says
    what to do next."""

    def __init__(self, line: str, kind: FailureKind | None = None):
        super().__init__(line)
        self.line, self.kind = line, kind

    def describe(self, log: str | None = None) -> str:
        """The verdict as a failing test shows it: the line, where the child's log is, what to do."""
        lines = [self.line] + ([f"  log: {log}"] if log else [])
        return "\n".join(lines + ([f"  next: {self.kind.next_step}"] if self.kind else []))


def assert_conversion(result: Result, expect: Expectation | None = None) -> None:
    """Fail with the model, stage and cause; checks in a fixed order: converted, shapes, values, deployable."""
    __tracebackhide__ = True
    failure = result.failure
    kind = failure.kind if failure else None
    if expect is not None:
        if failure is None:
            raise ModelFailed(f"{result.model_id}: expected to fail with {expect.kind} ({expect.reason}) but converted "
                              "and passed every check: remove [expect]")
        if failure.kind.value == expect.kind:
            raise ExpectedConversionFailure(failure.one_line(result.model_id))
        raise ModelFailed(f"expected {expect.kind} ({expect.reason}), got instead: {failure.one_line(result.model_id)}",
                          kind)
    chosen = result.chosen  # ONNX, the TF model and the deliverable must hold; see verify.verdict
    labelled = labelled_comparisons(result.export, result.savedmodel, (chosen,) if chosen else ())
    for label, c in labelled:
        if not c.shape_ok:
            raise ModelFailed(f"{result.model_id}: {c.describe(label)}", kind or FailureKind.SHAPE_MISMATCH)
    for label, c in labelled:
        if not c.passed:
            raise ModelFailed(f"{result.model_id}: {c.describe(label)}", kind or FailureKind.NUMERIC_MISMATCH)
    if failure is not None:
        raise ModelFailed(failure.one_line(result.model_id), kind)
    # a Flex model (allow_flex) needs the Flex delegate on the device: reported, not failed
    if result.verify is None or not (result.verify.deployable or result.tflite.flex_ops):
        why = result.verify.deploy_message if result.verify else "it was never run"
        raise ModelFailed(f"{result.model_id}: deliverable does not run without TensorFlow: {why}",
                          FailureKind.TFLITE_ERROR)
    if not result.deliverable:
        raise ModelFailed(f"{result.model_id}: passed but no deliverable was written")
