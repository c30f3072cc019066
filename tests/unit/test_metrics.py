"""Numeric comparison against PyTorch (metrics.py), and its figures in JSON."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from converter.metrics import compare
from converter.results import Result

finite = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                    elements=st.floats(-1e3, 1e3, width=32))


@hsettings(max_examples=60, deadline=None)
@given(finite)
def test_identical_outputs_have_no_error(a):
    c = compare("y", a, a.copy(), 1e-4)
    assert c.max_abs_err == 0 and c.range_rel_err == 0 and c.passed and c.mismatched == 0
    assert math.isclose(c.cosine, 1.0, abs_tol=1e-9) or not np.any(a)


@hsettings(max_examples=60, deadline=None)
@given(finite, st.floats(1e-3, 10))
def test_error_is_relative_to_the_output_range(a, shift):
    c = compare("y", a, a + np.float32(shift), 1e-4)
    ref = a.astype(np.float64)
    scale = float(ref.max() - ref.min())
    scale = scale if scale > 1e-12 else max(float(np.abs(ref).max()), 1.0)
    assert math.isclose(c.range_rel_err, c.max_abs_err / scale, rel_tol=1e-9)
    assert c.passed == (c.range_rel_err <= 1e-4)


def test_shape_mismatch_and_top1():
    ref = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    swapped = np.array([[0.9, 0.1, 0.0], [0.8, 0.1, 0.1]])
    c = compare("logits", ref, swapped, 0.05)
    assert c.top1_agreement == 0.5 and not c.passed
    assert "range-relative max error" in c.describe("DRQ TFLite") and "top-1 agreement 50.0%" in c.describe("x")
    bad = compare("logits", ref, ref.T, 0.05)
    assert not bad.shape_ok and "shape [3, 2] != PyTorch [2, 3]" in bad.describe("fp32")
    assert not compare("y", ref, np.full_like(ref, np.nan), 1.0).passed


def test_non_finite_metrics_survive_json(tmp_path):
    from converter.checks import OutputComparison
    from converter.results import ExportResult

    bad = compare("y", np.zeros((2, 3)), np.zeros((3, 2)), 0.1)
    r = Result("m", "m.pt", "failed", export=ExportResult("legacy", 17, "x", 1, ((1,),), (), (bad,), 0.1))
    r.write(tmp_path / "r.json")  # strict JSON: no Infinity / NaN tokens
    assert "Infinity" not in (tmp_path / "r.json").read_text()
    back = Result.read(tmp_path / "r.json")
    assert isinstance(back.export.outputs[0], OutputComparison)
    assert math.isinf(back.export.outputs[0].range_rel_err) and math.isnan(back.export.outputs[0].cosine)


def test_each_verification_input_is_judged_against_its_own_range_so_more_inputs_never_hide_an_error():
    """Stacked over inputs, one input's wide output (a planted large weight) would make the range
    that another input's error is measured against: the second input's 50 % error would read 0.5 %."""
    wide, narrow = np.array([[100.0, 0.0, 0.0]]), np.array([[1.0, 0.0, 0.5]])
    reference = np.concatenate([wide, narrow])
    candidate = np.concatenate([wide, narrow + [[0.0, 0.5, 0.0]]])
    alone = compare("y", narrow, narrow + [[0.0, 0.5, 0.0]], 0.05)
    stacked = compare("y", reference, candidate, 0.05, samples=2)
    assert alone.range_rel_err == stacked.range_rel_err == 0.5 and not stacked.passed
    assert stacked.mismatched == 1 and stacked.samples == 2
    assert compare("y", reference, candidate, 0.05).range_rel_err == 0.005  # one range over both: hidden
    # per channel too: each channel against its range on its own input; the axis named by the model's shape
    per_channel = compare("y", reference, candidate, 0.05, samples=2, channel_axis=1)
    assert per_channel.range_rel_err == 0.5 and per_channel.worst_channel == 1
    import pytest

    from converter.failures import ConversionError

    with pytest.raises(ConversionError, match=r"shape \[1, 3\]"):
        compare("y", reference, candidate, 0.05, samples=2, channel_axis=5)
