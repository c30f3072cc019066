"""The regression gate: unit tests of the comparison, and the whole flow through pytester."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from converter.baseline import compare, record
from converter.html_report import render
from converter.thresholds import Thresholds, parse_thresholds

from . import builders
from .conftest import run


def row(outcome="passed", kind=None, signature=None, **figures):
    return builders.record(outcome, kind, signature, **figures)


def baseline_of(**rows):
    return {"schema_version": 2, "models": {m: record(r) for m, r in rows.items()}}


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
    assert any("schema-1 baseline, read as schema 2; rewrite it with --baseline-update" in t for t in texts)
    assert outcome.failed and outcome.labels == {"a": "DRQ error x5.0"}


def test_html_report_is_self_contained_and_well_formed():
    records = {"good": row(model_id="good"), "bad": row(outcome="failed", kind="crash", signature="x <y>", model_id="bad")}
    gate = {"labels": {"good": "=", "bad": "PASS->FAILED (crash)"}, "marks": {"bad": "regression"},
            "lines": [{"severity": "regression", "text": "REGRESSION bad: ..."}]}
    page = render(records, {"torch": "2.13.0"}, gate)

    class Check(HTMLParser):
        tags, external = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.external += [v for k, v in attrs if k in ("src", "href") and v and "//" in v]

    parser = Check()
    parser.feed(page)
    assert parser.external == [] and "script" not in parser.tags
    assert parser.tags.count("svg") == 4 and "x &lt;y&gt;" in page
    assert page.index("<code>bad</code>") < page.index("<code>good</code>")  # failures come first
    assert len(re.findall(r'class="[^"]*\bregress\b', page)) == 2  # the model's cell and the verdict line


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_regression_flow(harness, workers):
    models = harness.path / "models"
    builders.torchscript_mlp(models, "mlp")
    builders.torchscript_mlp(models, "wide")
    builders.pickled_module(models, "leaving")  # refused at load: cheap, and baselined as xfailed
    with open(models / "leaving.toml", "a") as fh:
        fh.write('[expect]\nkind = "untrusted_pickle"\nreason = "not opted in"\n')
    builders.torchscript_mlp(models, "fails_later")
    args = [*workers, "--models-dir", "models"]

    if not workers:  # the start of the story, told once
        first = run(harness, *args, "-k", "mlp")
        assert first.ret == 0
        first.stdout.fnmatch_lines(["*no baseline at *baseline.json*--baseline-update*"])

    update = run(harness, *args, "--baseline-update")
    assert update.ret == 0
    baseline = json.loads((harness.path / "tflite_baseline.json").read_text())
    assert sorted(baseline["models"]) == ["fails_later", "leaving", "mlp", "wide"] and baseline["versions"]["onnx2tf"]
    assert baseline["models"]["leaving"]["status"] == "xfailed"
    if not workers:
        rerun = run(harness, *args, "-k", "mlp")  # models not run are neither judged nor GONE
        assert rerun.ret == 0 and "GONE" not in rerun.stdout.str() and "REGRESSION" not in rerun.stdout.str()
        rerun.stdout.fnmatch_lines(["*no regression against*"])

    builders.torchscript_mlp(models, "mlp", outlier=8.0)   # drifts, but within its tolerance
    builders.torchscript_mlp(models, "wide", hidden=128)  # a grown layer
    (models / "leaving.pt").unlink()
    (models / "fails_later.pt").unlink()  # now holds an op that no exporter supports
    builders.factory_model(models, "fails_later", builders.EIGH_SOURCE, "eighs:eigh", (1, 4, 4))
    builders.torchscript_mlp(models, "arrived")
    broken = run(harness, *args)
    assert broken.ret == 1
    broken.assert_outcomes(passed=3, failed=1)  # the drift and the growth pass every test ...
    broken.stdout.fnmatch_lines([               # ... and only the baseline gate catches them
        "*REGRESSION leaving: was in the baseline and has disappeared*",
        "*REGRESSION fails_later: passed before, now failed: export failed [[]export_error[]]: every exporter failed*",
        "*REGRESSION mlp: DRQ error grew x*",
        "*REGRESSION wide: DRQ file grew +*",
        "*note arrived: new model, not in the baseline yet*",
        "*regression(s) against*"])
    summary_md = (harness.path / "reports" / "summary.md").read_text()
    assert "vs baseline" in summary_md and "| PASS->FAILED (export_error) |" in summary_md
    # size and error charts for the 3 converted models; seconds by stage for all 4 (the failed one too)
    assert (harness.path / "reports" / "summary.html").read_text().count("<svg") == 3 * 2 + 4

    accept = run(harness, *args, "--baseline-update")  # accept the broken state (its failing test still fails) ...
    accept.stdout.fnmatch_lines(["*baseline written: *baseline.json (4 models)*"])
    builders.torchscript_mlp(models, "mlp")                    # ... then mend it
    builders.torchscript_mlp(models, "wide")
    builders.torchscript_mlp(models, "fails_later")
    mended = run(harness, *args)
    assert mended.ret == 0
    mended.stdout.fnmatch_lines(["*improved fails_later: failed before (export_error), now passes*",
                                 "*improved mlp: DRQ error shrank*", "*improved wide: DRQ file shrank*",
                                 "*update the baseline with --baseline-update*", "*no regression against*"])


def test_bad_threshold_is_a_usage_error(harness):
    result = run(harness, "--collect-only", "--regression-threshold", "size:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--regression-threshold*bad regression threshold 'size:10%'*"])


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
    path.write_text("{ not json")
    assert gate(path, {"a": row()}, discovered={"a"}, models_dirs=["examples"], update=False, **common).failed
    repaired = gate(path, {"a": row()}, discovered={"a"}, models_dirs=["examples"], update=True, **common)
    assert not repaired.failed and json.loads(path.read_text())["models"]["a"]["status"] == "passed"


def test_an_expected_failure_that_now_converts_is_good_news():
    base = baseline_of(m=row(outcome="xfailed", kind="export_error", signature="e"))
    import dataclasses

    from converter.results import Outcome

    v = compare(base, {"m": dataclasses.replace(row(), outcome=Outcome.FAILED)}, {"m"}, Thresholds())
    assert not v.failed and v.labels["m"] == "now converts"


def test_signatures_ignore_figures_that_vary_between_machines():
    from converter.failures import Failure, FailureKind

    a = Failure(FailureKind.OUT_OF_MEMORY, "export", "resident memory exceeded the 9642 MB ceiling")
    b = Failure(FailureKind.OUT_OF_MEMORY, "export", "resident memory exceeded the 4821 MB ceiling")
    assert a.signature == b.signature and a.message != b.message
