"""The baseline file and the gate's verdict, with severities (baseline.py, thresholds.py)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from converter.baseline import compare, gate, record
from converter.failures import FailureKind
from converter.results import Outcome
from converter.thresholds import Thresholds, parse_thresholds

from .. import builders
from ..support import write


def row(outcome="passed", kind=None, signature=None, **figures):
    return builders.record(outcome, kind, signature, **figures)


def baseline_of(**rows):
    return {"schema_version": 2, "models": {m: record(r) for m, r in rows.items()}}


@pytest.mark.parametrize("content, words", [
    ("[]", "holds a JSON list"),
    ('{"schema_version": 1, "models": []}', "'models' must be an object"),
    ('{"schema_version": 1, "models": {"m": "passed"}}', "record of model 'm'"),
    ('{"schema_version": 1, "models": {"m": {"sta', "not a readable baseline"),
    ('{"schema_version": 1, "models": {"m": {"status": "passed", "drq_range_rel_err": "0.01"}}}', "not a float"),
    # NaN compares false with everything: it would have let any error growth through as "no regression"
    ('{"schema_version": 2, "models": {"m": {"status": "passed", "recipes": {"drq": {"err": NaN}}}}}', "holds NaN"),
    ('{"schema_version": 1, "models": {"m": {"status": "passed", "drq_range_rel_err": Infinity}}}', "holds Infinity"),
    ('{"schema_version": 2, "models": {"m": {"status": "passed", "recipes": {"drq": {"err": 1e999}}}}}', "not a number"),
    ("[" * 200_000 + "]" * 200_000, "nested more than 64 levels deep"),
    ('{"schema_version": 3, "models": {}}', "baseline schema 3 is not 2"),
])
def test_a_baseline_with_the_wrong_structure_is_one_error_line_and_update_repairs_it(tmp_path, content, words):
    path = write(tmp_path / "baseline.json", content)
    row = builders.record(model_id="m")
    common = dict(discovered={"m"}, thresholds=Thresholds(), versions={}, models_dirs=["x"])
    outcome = gate(path, {"m": row}, update=False, **common)
    assert outcome.failed and len(outcome.lines) == 1
    assert outcome.lines[0].text.startswith(f"ERROR: cannot use the baseline {path}") and words in outcome.lines[0].text
    assert not gate(path, {"m": row}, update=True, **common).failed
    assert json.loads(path.read_text())["models"]["m"]["status"] == "passed"


def test_thresholds_parse_and_refuse_nonsense():
    assert parse_thresholds("drq_err:x3,size:+5%") == Thresholds(size=0.05, per_recipe={"drq_err": 3.0})
    assert parse_thresholds("") == Thresholds()
    custom = Thresholds(err=3, err_floor=1e-6, per_recipe={"fp32_err": 4.0, "drq_size": 0.05})
    assert parse_thresholds(custom.describe()) == custom
    assert custom.err_factor("fp32") == 4 and custom.err_factor("drq") == 3 and custom.size_growth("drq") == 0.05
    for bad in ("drq_err:2", "size:10%", "speed:x2", "drq_err:x0.5", "int4_err:x2", "err:x2,err:x3"):
        with pytest.raises(ValueError, match="bad regression threshold"):
            parse_thresholds(bad)


def test_each_kind_of_regression_and_improvement():
    base = baseline_of(a=row(), b=row(), c=row(outcome="failed", kind="export_error", signature="s1"),
                       d=row(), e=row(drq=1e-7), gone=row(), f=row(outcome="failed", kind="crash", signature="s2"),
                       g=row())
    now = {"a": row(outcome="failed", kind="timeout", signature="t"),   # PASS -> FAIL
           "b": row(drq=3.1e-3, size=11_200),                            # error x3.1 and size +12 %
           "c": row(outcome="failed", kind="tflite_error", signature="s3"),  # fails differently
           "d": row(drq=4e-4, size=8_000),                               # better on both counts
           "e": row(drq=5e-7),                                           # x5 but under the noise floor
           "f": row(),                                                   # a failure now passes
           "g": row(fp32=1e-4),                                          # onnx2tf's float32 numbers drift
           "new": row()}
    v = compare(base, now, discovered=set(now), t=Thresholds())
    regressions = {(c.model_id, c.label) for c in v.regressions}
    assert regressions == {("a", "PASS->FAILED (timeout)"), ("b", "DRQ error x3.1"), ("b", "DRQ size +12%"),
                           ("g", "TF model error x1000.0"),
                           ("c", "new failure (tflite_error)"), ("gone", "GONE")}
    assert {c.model_id for c in v.improvements} == {"d", "f"}
    assert v.labels["b"] == "DRQ error x3.1; DRQ size +12%"
    assert v.labels["e"] == "=" and v.labels["new"] == "new"
    assert v.failed
    quiet = compare(base, {"e": row(drq=5e-7), "d": row(seconds=30.0)}, discovered=set(base["models"]),
                    t=Thresholds())
    assert not quiet.failed and {c.model_id for c in quiet.notes if "not gated" in c.what} == {"d", "(all)"}
    # a model restored from the cache took no conversion: no timing note, and not in the batch's total
    cached = compare(base, {"d": row(seconds=30.0, cache_hit=True), "e": row(seconds=3.0)}, discovered=set(base["models"]),
                     t=Thresholds())
    assert [c.what for c in cached.notes if "took" in c.what] == [
        "1 conversion(s) took 3.0 s, 3.0 s in the baseline (x1.00; reported, not gated)"]


def test_a_model_that_fails_differently_is_told_with_the_figures_of_both_failures():
    base = baseline_of(m=row(outcome="failed", kind="numeric_mismatch", signature="DRQ error 0.53 > tolerance 0.05"))
    now = {"m": row(outcome="failed", kind="tflite_error", signature="TFLiteConverter (drq): error at op 12")}
    (change,) = [c for c in compare(base, now, discovered={"m"}, t=Thresholds()).regressions if c.model_id == "m"]
    assert "was 'DRQ error 0.53 > tolerance 0.05'" in change.what and "error at op 12" in change.what
    assert "#" not in change.what  # the signature (figures replaced) is what is compared, not what is shown


def test_a_schema_1_baseline_is_read_with_a_note(tmp_path):
    from converter.baseline import gate

    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"schema_version": 1, "models_dirs": ["examples"], "models": {"a": {
        "status": "passed", "failure_kind": None, "failure_signature": None, "exporter": "legacy", "opset": 17,
        "tflite_bytes": 10_000, "tflite_fp32_bytes": 20_000, "fp32_range_rel_err": 1e-7, "drq_range_rel_err": 1e-3,
        "drq_cosine": 0.9999, "convert_seconds": 3.0, "fixes_applied": None}}}))
    outcome = gate(path, {"a": row(drq=5e-3)}, discovered={"a"}, models_dirs=["examples"], update=False,
                   thresholds=Thresholds(), versions={})
    texts = [line.text for line in outcome.lines]
    assert any("schema-1 baseline, read as schema 2; rewrite it with --tflite-baseline-update" in t for t in texts)
    assert outcome.failed and outcome.labels == {"a": "DRQ error x5.0"}


def test_gate_only_compares_the_folder_it_was_made_for_and_update_repairs(tmp_path):
    from converter.baseline import gate

    path = tmp_path / "baseline.json"
    common = dict(thresholds=Thresholds(), versions={"torch": "x"})
    gate(path, {"a": row()}, discovered={"a"}, models_dirs=["examples"], update=True, **common)
    other = gate(path, {"b": row()}, discovered={"b"}, models_dirs=["mine"], update=False, **common)
    assert not other.failed and "not compared" in other.lines[0].text
    same = gate(path, {"a": row(outcome="failed", kind="crash", signature="c")}, discovered={"a"},
                models_dirs=["examples"], update=False, **common)
    assert same.failed and same.labels == {"a": "PASS->FAILED (crash)"}
    (failure,) = same.failures  # one test case each in JUnit, unless the model's own test shows it already
    assert (failure.model_id, failure.kind) == ("a", "regression") and failure.text.startswith("REGRESSION a: passed before")
    crashed = dataclasses.replace(row(outcome="failed", kind="crash", signature="c"), outcome=Outcome.FAILED)
    assert same.unseen_failures({"a": crashed}) == [] and same.unseen_failures({}) == [failure]
    path.write_text("{ not json")
    assert gate(path, {"a": row()}, discovered={"a"}, models_dirs=["examples"], update=False, **common).failed
    repaired = gate(path, {"a": row()}, discovered={"a"}, models_dirs=["examples"], update=True, **common)
    assert not repaired.failed and json.loads(path.read_text())["models"]["a"]["status"] == "passed"


def test_an_expected_failure_that_now_converts_is_good_news():
    base = baseline_of(m=row(outcome="xfailed", kind="export_error", signature="e"))
    v = compare(base, {"m": dataclasses.replace(row(), outcome=Outcome.FAILED)}, {"m"}, Thresholds())
    assert not v.failed and v.labels["m"] == "now converts"


def test_signatures_ignore_figures_that_vary_between_machines():
    from converter.failures import Failure

    a = Failure(FailureKind.OUT_OF_MEMORY, "export", "resident memory exceeded the 9642 MB ceiling")
    b = Failure(FailureKind.OUT_OF_MEMORY, "export", "resident memory exceeded the 4821 MB ceiling")
    assert a.signature == b.signature and a.message != b.message
