"""The pytest plugin driven for real through pytester (subprocess runs, -n 2 included)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from converter.columns import COLUMNS

from .. import builders
from ..support import run


def test_ids_are_model_names_sorted_and_k_selects(harness):
    models = harness.path / "models"
    for rel in ("b/net.pt", "a/net.pt", "solo.pt", "z_last.pt2"):
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).write_bytes(b"")
    (models / "models.toml").write_text("[[inputs]]\nshape = [1, 4]\n")
    result = run(harness, "--collect-only", "-q", "--models-dir", "models")
    assert [line for line in result.outlines if "::" in line] == [
        "models/a/net.pt::a/net", "models/b/net.pt::b/net", "models/solo.pt::solo", "models/z_last.pt2::z_last"]
    picked = run(harness, "--collect-only", "-q", "--models-dir", "models", "-k", "solo")
    assert [ln for ln in picked.outlines if "::" in ln] == ["models/solo.pt::solo"]
    for arg in ("models/b/net.pt", "models/b/net.pt::b/net"):  # a file, or the node id pytest prints
        by_path = run(harness, "--collect-only", "-q", "--models-dir", "models", arg)
        assert [ln for ln in by_path.outlines if "::" in ln] == ["models/b/net.pt::b/net"], arg


def test_batch_under_xdist_survives_a_crash_and_a_missing_shape(harness):
    shared = harness.path / "shared_shape"
    builders.torchscript_cnn(shared, name="good", toml="")
    (shared / "models.toml").write_text("[[inputs]]\nshape = [1, 3, 16, 16]\n")
    builders.factory_model(shared, "segv", builders.SEGFAULT_SOURCE, "crashy:segfaults", (1, 4))
    lonely = harness.path / "lonely"
    builders.torchscript_cnn(lonely, name="noshape", toml="")

    result = run(harness, "-n", "2", "--models-dir", "shared_shape", "--models-dir", "lonely")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*1 converted and verified, 2 failed, 0 failed as expected, of 3 models*",
                                 "*noshape: spec [[]spec_error[]]*no input shape*",
                                 "*segv: load [[]crash[]]*SIGSEGV*"])

    summary = json.loads((harness.path / "reports" / "summary.json").read_text())
    rows = summary["table"]
    assert sorted(rows) == ["good", "noshape", "segv"]
    assert rows["good"]["outcome"] == "passed" and rows["good"]["exporter"] == "legacy"
    assert rows["segv"]["failure_kind"] == "crash" and rows["noshape"]["failure_kind"] == "spec_error"
    assert (harness.path / "tflite_models" / "good.tflite").is_file()
    assert "| `segv` | failed | load | crash |" in (harness.path / "reports" / "summary.md").read_text()

    cases = ET.parse(harness.path / "junit.xml").getroot().iter("testcase")
    props = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in cases}
    assert set(props) == {"good", "segv", "noshape"}
    fixed = tuple(c.key for c in COLUMNS if c.junit)
    for values in props.values():
        assert tuple(values)[:len(fixed)] == fixed
    per_recipe = tuple(props["good"])[len(fixed):]
    assert per_recipe == ("drq_bytes", "drq_range_rel_err", "drq_p99_rel_err", "drq_cosine", "drq_inputs",
                          "drq_invoke_ms")
    assert props["good"]["delivered"] == "drq" and props["good"]["drq_inputs"] == props["good"]["verify_inputs"] == "8"
    assert props["segv"]["failure_kind"] == "crash"
    assert int(props["good"]["tflite_bytes"]) > 0
    assert float(props["good"]["drq_range_rel_err"]) < 0.05


def test_expect_becomes_strict_xfail(harness):
    models = harness.path / "models"
    builders.pickled_module(models, "refused")
    expected = '[expect]\nkind = "untrusted_pickle"\nreason = "no opt-in"\n'
    (models / "refused.toml").write_text((models / "refused.toml").read_text() + expected)
    builders.pickled_module(models, "wrongkind")
    (models / "wrongkind.toml").write_text((models / "wrongkind.toml").read_text()
                                           + expected.replace("untrusted_pickle", "export_error"))
    builders.pickled_module(models, "nowconverts", trusted=True)  # a model that started to convert
    (models / "nowconverts.toml").write_text((models / "nowconverts.toml").read_text() + expected)
    result = run(harness, "--models-dir", "models", "-rxX")
    result.assert_outcomes(xfailed=1, failed=2)
    result.stdout.fnmatch_lines(["*nowconverts: expected to fail with untrusted_pickle (no opt-in) but converted*",
                                 "*expected export_error (no opt-in), got instead: wrongkind: load failed*",
                                 "*XFAIL*refused*no opt-in*"])


def test_settings_come_from_environment_and_bad_values_are_usage_errors(harness, monkeypatch):
    models = harness.path / "envmodels"
    models.mkdir()
    (models / "m.pt").write_bytes(b"")
    monkeypatch.setenv("TFLITE_HARNESS_MODELS_DIR", str(models))
    monkeypatch.setenv("TFLITE_HARNESS_INPUT_SHAPE", "1,4")
    result = run(harness, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["envmodels/m.pt::m"])
    bad = run(harness, "--collect-only", "--conversion-timeout", "soon")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*argument --conversion-timeout: must be a number*"])


def test_lf_reruns_only_the_models_that_failed_and_junitxml_wins(harness):
    models = harness.path / "models"
    builders.torchscript_cnn(models, name="good")
    (models / "noshape.pt").write_bytes(b"")
    common = ("--models-dir", "models", "--conversion-threads=1")
    first = harness.runpytest_subprocess(*common)  # the cache provider is on, as in the shipped config
    first.assert_outcomes(passed=1, failed=1)
    default_junit = harness.path / "reports" / "junit.xml"
    assert default_junit.is_file()  # without --junitxml it goes beside the other reports
    written = default_junit.stat().st_mtime_ns
    again = harness.runpytest_subprocess(*common, "--lf", "--junitxml=mine.xml")
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["*run-last-failure: rerun previous 1 failure*"])
    assert "noshape" in (harness.path / "mine.xml").read_text()
    assert default_junit.stat().st_mtime_ns == written  # --junitxml wins


def test_help_names_every_setting_with_its_ini_key_and_variable(harness):
    from converter.settings import SETTINGS

    result = harness.runpytest_subprocess("--help")
    assert result.ret == 0
    text = " ".join(result.stdout.str().split())
    for setting in SETTINGS:
        assert setting.flag in text and setting.env in text and f"ini {setting.ini}" in text
    assert "junit.xml (unless --junitxml is given)" in text


def test_the_plugin_does_nothing_where_no_models_folder_is_asked_for(harness):
    harness.makepyfile(test_plain="def test_ok():\n    pass\n")
    plain = harness.runpytest_subprocess("-p", "no:cacheprovider")
    plain.assert_outcomes(passed=1)
    assert "tflite harness" not in plain.stdout.str()
    assert not (harness.path / "tflite_models").exists() and not (harness.path / "reports").exists()
    # named in the ini but outside what pytest collects: still nothing
    builders.torchscript_cnn(harness.path / "models", name="net")
    harness.makeini("[pytest]\nmodels_dir = models\n")
    (harness.path / "unit").mkdir()
    (harness.path / "test_plain.py").rename(harness.path / "unit" / "test_plain.py")
    only_units = harness.runpytest_subprocess("-p", "no:cacheprovider", "unit")
    only_units.assert_outcomes(passed=1)
    assert not (harness.path / "tflite_models").exists()
    everything = harness.runpytest_subprocess("-p", "no:cacheprovider", "--conversion-threads=1")  # collects models/
    everything.assert_outcomes(passed=2)
    assert (harness.path / "tflite_models" / "net.tflite").is_file()


def test_your_own_test_takes_the_same_conversion_through_the_fixtures(harness):
    builders.torchscript_cnn(harness.path / "models", name="net")
    harness.makepyfile(test_mine="""
        def test_small_enough(model_case, conversion):
            assert conversion.model_id == model_case.model_id == "net"
            assert conversion.deliverable_of("drq").bytes < 100_000
    """)
    result = run(harness, "--models-dir", "models", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*models/net.pt::net PASSED*", "*test_mine.py::test_small_enough[[]net[]] PASSED*",
                                 "*1 converted and verified, 0 failed, 0 failed as expected, of 1 model*"])


def test_an_empty_or_missing_models_folder_is_one_line(harness):
    (harness.path / "empty").mkdir()
    for folder, words in (("empty", "no model files (.pt, .pth, .pt2) under"), ("nowhere", "models folder not found")):
        result = run(harness, "--models-dir", folder)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "Traceback" not in result.stdout.str() + result.stderr.str()
        result.stderr.fnmatch_lines([f"ERROR: {words}*"])
