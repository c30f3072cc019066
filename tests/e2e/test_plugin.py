"""The pytest plugin driven for real through pytester (subprocess runs, -n 2 included)."""
from __future__ import annotations

import json
import os
import textwrap
import xml.etree.ElementTree as ET

import pytest

from converter.columns import COLUMNS
from converter.failures import FailureKind

from .. import builders
from ..support import run


def test_ids_are_model_names_sorted_and_k_selects(harness):
    models = harness.path / "models"
    for rel in ("b/net.pt", "a/net.pt", "solo.pt", "z_last.pt2"):
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).write_bytes(b"")
    (models / "models.toml").write_text("[[inputs]]\nshape = [1, 4]\n")
    result = run(harness, "--collect-only", "-q", "--tflite-models-dir", "models")
    assert [line for line in result.outlines if "::" in line] == [
        "models/a/net.pt::a/net", "models/b/net.pt::b/net", "models/solo.pt::solo", "models/z_last.pt2::z_last"]
    picked = run(harness, "--collect-only", "-q", "--tflite-models-dir", "models", "-k", "solo")
    assert [ln for ln in picked.outlines if "::" in ln] == ["models/solo.pt::solo"]
    for arg in ("models/b/net.pt", "models/b/net.pt::b/net"):  # a file, or the node id pytest prints
        by_path = run(harness, "--collect-only", "-q", "--tflite-models-dir", "models", arg)
        assert [ln for ln in by_path.outlines if "::" in ln] == ["models/b/net.pt::b/net"], arg


def test_batch_under_xdist_survives_a_crash_and_a_missing_shape(harness, monkeypatch):
    shared = harness.path / "shared_shape"
    builders.torchscript_cnn(shared, name="good", toml="")
    (shared / "models.toml").write_text("[[inputs]]\nshape = [1, 3, 16, 16]\n")
    builders.factory_model(shared, "segv", builders.SEGFAULT_SOURCE, "crashy:segfaults", (1, 4))
    lonely = harness.path / "lonely"
    builders.torchscript_cnn(lonely, name="noshape", toml="")

    monkeypatch.setenv("CI", "true")  # as on a CI runner, where pytest's short summary prints each message whole
    result = run(harness, "-n", "2", "--tflite-models-dir", "shared_shape", "--tflite-models-dir", "lonely")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*1 converted and verified, 2 failed, 0 failed as expected, of 3 models*",
                                 "*noshape: spec [[]spec_error[]]*", "*segv: load [[]crash[]]*"])
    # each failing model's message is told once, in its FAILURES entry, with its log and what to do next
    out = result.stdout.str()
    lines = result.outlines
    assert out.count("no input shape from any source") == 1, out
    assert out.count("killed by SIGSEGV") == 1, out
    segv = lines.index(next(ln for ln in lines if ln.startswith("segv: load failed [crash]: ")))
    assert lines[segv + 1:segv + 3] == ["  log: reports/artifacts/segv/convert.log",
                                        f"  next: {FailureKind.CRASH.next_step}"], lines[segv:segv + 3]
    assert (harness.path / "reports" / "artifacts" / "segv" / "convert.log").is_file()
    noshape = lines.index(next(ln for ln in lines if ln.startswith("noshape: spec failed [spec_error]: ")))
    assert lines[noshape + 1] == f"  next: {FailureKind.SPEC_ERROR.next_step}"  # no child ran: no log to name
    assert "FAILED lonely/noshape.pt::noshape" in lines and "assert " not in out

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
    assert per_recipe == ("drq_bytes", "drq_range_rel_err", "drq_p99_rel_err", "drq_cosine", "drq_verify_inputs",
                          "drq_invoke_ms", "drq_inputs", "drq_outputs")
    # the file as the device sees it: onnx2tf's channels-last input, float32 in and out
    assert props["good"]["drq_inputs"] == "input [1, 16, 16, 3] NHWC float32"
    assert props["good"]["drq_outputs"] == "output_0 [1, 5] float32"
    assert props["good"]["delivered"] == "drq" and props["good"]["drq_verify_inputs"] == props["good"]["verify_inputs"] == "8"
    assert props["segv"]["failure_kind"] == "crash"
    failures = {c.get("name"): c.find("failure") for c in ET.parse(harness.path / "junit.xml").getroot().iter("testcase")}
    assert failures["segv"].get("message").startswith("segv: load failed [crash]: ")
    assert f"next: {FailureKind.CRASH.next_step}" in failures["segv"].text
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
    result = run(harness, "--tflite-models-dir", "models", "-rxX")
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
    bad = run(harness, "--collect-only", "--tflite-conversion-timeout", "soon")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*argument --tflite-conversion-timeout: must be a number*"])


def test_lf_reruns_only_the_models_that_failed_and_junitxml_wins(harness):
    models = harness.path / "models"
    builders.torchscript_cnn(models, name="good")
    (models / "noshape.pt").write_bytes(b"")
    common = ("--tflite-models-dir", "models", "--tflite-conversion-threads=1")
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
    summary = json.loads((harness.path / "reports" / "summary.json").read_text())  # the rerun's row, and the rest kept
    assert sorted(summary["models"]) == ["good", "noshape"] and list(summary["kept_from_earlier_runs"]) == ["good"]


def test_help_names_every_setting_with_its_ini_key_and_variable(harness):
    from converter.settings import SETTINGS

    result = harness.runpytest_subprocess("--help")
    assert result.ret == 0
    text = " ".join(result.stdout.str().split())
    for setting in SETTINGS:
        assert setting.flag in text and setting.env in text and f"ini {setting.ini}" in text
    assert "junit.xml (unless --junitxml is given)" in text


def test_the_plugin_does_nothing_where_no_models_folder_is_asked_for(harness):
    harness.makepyfile(test_plain="def test_ok():\n    pass\n",
                       test_mine="def test_x(model_case):\n    assert model_case.model_id == 'net'\n")
    plain = harness.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    plain.assert_outcomes(passed=1, skipped=1)  # a test taking the fixture, with no models folder: skipped, saying so
    plain.stdout.fnmatch_lines(["SKIPPED*no models folder is set: pass --tflite-models-dir DIR or set tflite_models_dir*"])
    assert "tflite harness" not in plain.stdout.str()
    assert not (harness.path / "tflite_models").exists() and not (harness.path / "reports").exists()
    # named in the ini but outside what pytest collects: nothing converted; a test there still names each model
    builders.torchscript_cnn(harness.path / "models", name="net")
    harness.makeini("[pytest]\ntflite_models_dir = models\n")
    (harness.path / "unit").mkdir()
    for name in ("test_plain.py", "test_mine.py"):
        (harness.path / name).rename(harness.path / "unit" / name)
    only_units = harness.runpytest_subprocess("-p", "no:cacheprovider", "unit")
    only_units.assert_outcomes(passed=2)
    assert not (harness.path / "tflite_models").exists()
    everything = harness.runpytest_subprocess("-p", "no:cacheprovider", "--tflite-conversion-threads=1")  # collects models/
    everything.assert_outcomes(passed=3)
    assert (harness.path / "tflite_models" / "net.tflite").is_file()


# a repository of someone else's: its own options, ini keys and `model_case` fixture under the names any
# repository may use (and the harness used to take), and tests of its own that take the harness's fixtures
THEIR_CONFTEST = """
import pytest

def pytest_addoption(parser):
    for name in ("--baseline", "--reports-dir", "--deliverables", "--input-shape", "--models-dir"):
        parser.addoption(name, default="theirs")
    parser.addoption("--no-cache", action="store_true")
    for key in ("baseline", "reports_dir", "models_dir", "input_shape"):
        parser.addini(key, "their own", type="paths")
"""
THEIR_TESTS = {
    "tests/golden/conftest.py": """
        import pytest

        @pytest.fixture
        def model_case():
            return "their golden model"
    """,
    "tests/golden/test_golden.py": """
        def test_their_options_ini_keys_and_fixture(model_case, request):
            config = request.config
            assert model_case == "their golden model"
            assert (config.getoption("--baseline"), config.getoption("--reports-dir")) == ("golden_cli", "their_cli_reports")
            assert config.getoption("--no-cache") is True and config.getoption("--models-dir") == "theirs"
            assert config.getini("baseline") == [config.rootpath / "golden.json"]
            assert config.getini("models_dir") == [config.rootpath / "their_models"]
    """,
    "tests/test_with_harness.py": """
        def test_every_model_has_its_file(model_case):
            assert model_case.path.is_file()

        def test_small_enough(model_case, conversion):
            assert conversion.model_id == model_case.model_id
            assert conversion.deliverable_of("drq").bytes < 100_000
    """,
}


def test_a_repository_with_options_ini_keys_and_a_model_case_fixture_of_its_own(harness):
    """The plugin installed (-p: loaded before the conftests, as by its entry point) in a repository that
    declares --baseline, --reports-dir, --no-cache ... and ini keys baseline, models_dir ... of its own
    (the harness's are `tflite`-prefixed: its old spellings are read only where no one declares them),
    with a `model_case` fixture of its own, and tests taking the harness's fixtures: `pytest tests/`
    runs only tests/ (the fixtures' tests name each model, `conversion` skips saying why), and in the
    whole run a failing model fails the tests taking its conversion with its one-line verdict, a model
    expected to fail skips them, and its [expect] turns no test of the repository's into an xfail."""
    harness.makeconftest(THEIR_CONFTEST)
    for name, text in THEIR_TESTS.items():
        (harness.path / name).parent.mkdir(parents=True, exist_ok=True)
        (harness.path / name).write_text(textwrap.dedent(text))
    harness.makeini("[pytest]\njunit_family = xunit1\ntflite_models_dir = models\n"
                    "baseline = golden.json\nmodels_dir = their_models\nreports_dir = their_reports\n")
    models = harness.path / "models"
    builders.torchscript_cnn(models, name="net")
    (models / "noshape.pt").write_bytes(b"")  # fails at its spec, in the parent
    (models / "refused.pt").write_bytes(b"")
    (models / "refused.toml").write_text('[[inputs]]\nshape = [1, 4]\n[expect]\nkind = "load_error"\nreason = "not yet"\n')
    theirs = ("-p", "converter.pytest_plugin", "-p", "no:cacheprovider", "--baseline", "golden_cli",
              "--reports-dir", "their_cli_reports", "--no-cache", "-rsx")

    only_tests = harness.runpytest_subprocess(*theirs, "tests")
    only_tests.assert_outcomes(passed=4, skipped=3)
    only_tests.stdout.fnmatch_lines(["*net: this run converts nothing, as it leaves out the models folder models: name it "
                                     "too (pytest models ...) or pass --tflite-models-dir models"])
    assert "tflite harness" not in only_tests.stdout.str()
    assert not {"reports", "tflite_models", ".tflite_cache"} & {p.name for p in harness.path.iterdir()}

    everything = harness.runpytest_subprocess(*theirs, "--conversion-threads", "1")  # an old spelling no one declares
    everything.assert_outcomes(passed=6, failed=1, errors=1, xfailed=1, skipped=1)
    everything.stdout.fnmatch_lines([
        f"baseline: {harness.path / 'tflite_baseline.json'}*",
        "deprecated: --conversion-threads is deprecated: use --tflite-conversion-threads",
        "*ERROR at setup of test_small_enough[[]noshape[]]*",
        "noshape: spec failed [[]spec_error[]]*no input shape*",
        "*1 converted and verified, 1 failed, 1 failed as expected, of 3 models*",
        "SKIPPED*test_with_harness.py*refused: load failed [[]load_error[]]*(expected: not yet)"])
    text = everything.stdout.str()
    assert "deliverable_of" not in text and "another exception" not in text  # the verdict in one line, no traceback
    rows = json.loads((harness.path / "reports" / "summary.json").read_text())["table"]
    assert {m: r["outcome"] for m, r in rows.items()} == {"net": "passed", "noshape": "failed", "refused": "xfailed"}
    assert (harness.path / ".tflite_cache").is_dir()  # their --no-cache is theirs
    assert not {"their_cli_reports", "their_reports", "golden.json"} & {p.name for p in harness.path.iterdir()}


def test_output_folders_outside_the_repository_given_either_way_keep_its_ini_file(harness):
    """pytest picks its rootdir and ini file before it knows an installed plugin's options: the value of
    `--tflite-reports-dir /elsewhere` (a space, not `=`), an existing folder, was taken for a path to test,
    so the repository's ini file and its models folder were never read and the run collected nothing
    (exit 5, no header). The plugin loaded as an installed one is (-p); nothing converts (a model with
    no shape fails at its spec, in the parent), under -n 2 (every worker picks the rootdir itself)."""
    harness.makeini("[pytest]\njunit_family = xunit1\ntflite_models_dir = models\n")
    (harness.path / "models").mkdir()
    (harness.path / "models" / "noshape.pt").write_bytes(b"")
    outside = harness.path.parent / f"{harness.path.name}_outside"
    reports, tflite, cache = (outside / name for name in ("reports", "tflite", "cache"))
    for folder in (reports, tflite, cache):
        folder.mkdir(parents=True)
    installed = ("-p", "converter.pytest_plugin", "-p", "no:cacheprovider")
    result = harness.runpytest_subprocess(*installed, "-n", "2", "--tflite-reports-dir", str(reports), "--tflite-dir",
                                          os.path.relpath(tflite, harness.path), "--tflite-cache-dir", str(cache))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"deliverables: *tflite  reports: {reports}", f"rootdir: {harness.path}*",
                                 "*configfile: tox.ini"])
    assert json.loads((reports / "summary.json").read_text())["table"]["noshape"]["failure_kind"] == "spec_error"
    assert (reports / "junit.xml").is_file() and not (harness.path / "reports").exists()
    # no models folder set anywhere: the harness's options are one line, not a run that does nothing
    harness.makeini("[pytest]\n")
    alone = harness.runpytest_subprocess(*installed, "--tflite-reports-dir", str(reports), "--tflite-no-cache")
    assert alone.ret == pytest.ExitCode.USAGE_ERROR
    alone.stderr.fnmatch_lines([
        "ERROR: --tflite-reports-dir, --tflite-no-cache given, but no models folder is set: pass --tflite-models-dir DIR, "
        f"set $TFLITE_HARNESS_MODELS_DIR, or set tflite_models_dir in the ini file (pytest read {harness.path / 'tox.ini'})"])
    assert "Traceback" not in alone.stdout.str() + alone.stderr.str()


def test_an_empty_or_missing_models_folder_is_one_line(harness):
    (harness.path / "empty").mkdir()
    for folder, words in (("empty", "no model files (.pt, .pth, .pt2) under"), ("nowhere", "models folder not found")):
        result = run(harness, "--tflite-models-dir", folder)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "Traceback" not in result.stdout.str() + result.stderr.str()
        result.stderr.fnmatch_lines([f"ERROR: {words}*"])
