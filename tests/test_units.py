"""Unit tests of converter/ pieces that need no conversion: spec, metrics, ids, settings, results."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from converter.discovery import assign_ids, discover
from converter.failures import Failure, FailureKind, normalise_message
from converter.metrics import compare
from converter.results import Result
from converter.settings import SettingsError, resolve
from converter.spec import SpecError, defaults_layer, load_spec, parse_shape


def write(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- spec -------------------------------------------------------------------------------

def test_spec_layers_merge_nearest_wins(tmp_path):
    write(tmp_path / "models.toml", "timeout = 100\n[tolerance]\ndrq = 0.1\n[[inputs]]\nshape = [1, 3, 8, 8]\n")
    write(tmp_path / "sub" / "models.toml", "layout = \"nchw\"\n")
    model = write(tmp_path / "sub" / "net.pt")
    write(tmp_path / "sub" / "net.toml", "timeout = 5\n[tolerance.outputs.logits]\nfp32 = 0.002\n")
    spec = load_spec(model, "net", root=tmp_path)
    assert spec.timeout == 5 and spec.layout == "nchw"
    assert spec.inputs[0].shape == (1, 3, 8, 8) and spec.inputs[0].name == "input"
    assert spec.tolerance_for("drq", "logits") == 0.1
    assert spec.tolerance_for("fp32", "logits") == 0.002
    assert spec.tolerance_for("fp32", "other") == 1e-4
    assert len(spec.sources) == 3


@pytest.mark.parametrize("toml, key, words", [
    ("colour = 1\n", "colour", "unknown key"),
    ("layout = \"nhcw\"\n", "layout", "must be one of"),
    ("timeout = -1\n", "timeout", "between 1 and"),
    ("factory = \"no_colon\"\n", "factory", "package.module:function"),
    ("[[inputs]]\nshape = [1, 0]\n", "inputs", "positive integers"),
    ("[[inputs]]\nshape = [1]\ndtype = \"float64\"\n", "inputs", "dtype"),
    ("[[inputs]]\nshape = [1]\nrange = [2, 1]\n", "inputs", "low < high"),
    ("[expect]\nkind = \"nope\"\nreason = \"x\"\n", "expect", "kind must be one of"),
    ("[tolerance]\ndrq = \"big\"\n", "tolerance", "positive finite number"),
    ("timeout = [\n", None, "not valid TOML"),
    # absurd numbers: the same bounds as the options, refused where they are written
    ("timeout = 1e308\n", "timeout", "between 1 and 604800"),
    ("timeout = inf\n", "timeout", "between 1 and 604800"),
    ("memory_limit_mb = 1\n", "memory_limit_mb", "between 64 and"),
    ("seed = -1\n", "seed", "between 0 and 4294967295"),
    ("seed = 1.5\n", "seed", "an integer"),
    ("[[inputs]]\nshape = [1, 4]\nrange = [0, 1e400]\n", "inputs", "finite"),
    ("[[inputs]]\nshape = [1, 4]\ndtype = \"float16\"\nrange = [0, 1e6]\n", "inputs", "65504"),
    ("[[inputs]]\nshape = [1, 4]\ndtype = \"int64\"\nrange = [0, 2.5]\n", "inputs", "whole numbers"),
    ("[[inputs]]\nshape = [1, 4]\ndtype = \"bool\"\nrange = [0, 1]\n", "inputs", "no meaning for a bool"),
    ("[[inputs]]\nshape = [100000, 100000]\n", "inputs", "elements"),
    ("[tolerance]\ndrq = nan\n", "tolerance", "positive finite"),
])
def test_spec_errors_name_file_and_key(tmp_path, toml, key, words):
    model = write(tmp_path / "m.pt")
    side = write(tmp_path / "m.toml", toml + ("" if "inputs" in toml else "\n[[inputs]]\nshape = [1]\n"))
    with pytest.raises(SpecError) as info:
        load_spec(model, "m")
    assert info.value.where == str(side) and info.value.key == key and words in str(info.value)


def test_missing_shape_says_what_to_add(tmp_path):
    with pytest.raises(SpecError, match="no input shape from any source.*--input-shape"):
        load_spec(write(tmp_path / "m.pt"), "m")
    spec = load_spec(tmp_path / "m.pt", "m", defaults=defaults_layer(["1,3,4,4", "1x2"]))
    assert [(i.name, i.shape) for i in spec.inputs] == [("input_0", (1, 3, 4, 4)), ("input_1", (1, 2))]


def test_spec_round_trips_through_the_child_job(tmp_path):
    write(tmp_path / "m.toml", "[[inputs]]\nshape=[1,4]\ndtype=\"int64\"\nrange=[0,9]\n"
                               "[expect]\nkind=\"crash\"\nreason=\"r\"\n")
    spec = load_spec(write(tmp_path / "m.pt"), "m")
    assert type(spec).from_dict(spec.to_dict()) == spec


@given(st.lists(st.integers(1, 64), min_size=1, max_size=5))
def test_parse_shape_accepts_every_static_shape(dims):
    assert parse_shape(",".join(map(str, dims))) == tuple(dims)
    assert parse_shape(dims) == tuple(dims)


# --- metrics ----------------------------------------------------------------------------

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


# --- ids, settings, results -------------------------------------------------------------

def test_ids_are_sorted_names_and_paths_on_collision(tmp_path):
    for rel in ("b/net.pt", "a/net.pt", "solo.pt2", "c/x.txt", ".hidden/h.pt"):
        write(tmp_path / rel)
    write(tmp_path / "models.toml", "[[inputs]]\nshape = [1, 4]\n")
    cases = discover([tmp_path])
    assert [c.model_id for c in cases] == ["a/net", "b/net", "solo"]
    # the same relative path under two roots is prefixed by the root's name
    ids = assign_ids([(tmp_path / "r1" / "m.pt", tmp_path / "r1"), (tmp_path / "r2" / "m.pt", tmp_path / "r2")])
    assert ids == ["r1/m", "r2/m"]


def test_settings_precedence_cli_env_ini_default(tmp_path):
    ini = {"conversion_timeout": "30", "input_shape": ["1,3,8,8"]}
    assert resolve({}, {}, ini, base=tmp_path).timeout == 30
    assert resolve({}, {"TFLITE_HARNESS_CONVERSION_TIMEOUT": "20"}, ini, base=tmp_path).timeout == 20
    s = resolve({"conversion_timeout": "10"}, {"TFLITE_HARNESS_CONVERSION_TIMEOUT": "20"}, ini, base=tmp_path)
    assert s.timeout == 10
    with pytest.raises(SettingsError, match="conversion_timeout from command line must be a number"):
        resolve({"conversion_timeout": "soon"}, {"TFLITE_HARNESS_CONVERSION_TIMEOUT": "20"}, ini, base=tmp_path)
    assert s.input_shapes == ((1, 3, 8, 8),) and s.deprecations == ()
    assert resolve({}, {}, {}, base=tmp_path).timeout == 600
    two = resolve({}, {}, {}, base=tmp_path, workers=2)
    one = resolve({}, {}, {}, base=tmp_path, workers=1)
    assert two.memory_limit_mb < one.memory_limit_mb and two.threads <= one.threads
    with pytest.raises(SettingsError, match="conversion_timeout from command line must be a number"):
        resolve({"conversion_timeout": "soon"}, {}, {}, base=tmp_path)


def test_old_spellings_still_work_for_one_release_and_say_so(tmp_path):
    s = resolve({}, {"TFLITE_HARNESS_TIMEOUT": "20", "TFLITE_HARNESS_THREADS": "3"},
                {"default_input_shape": ["1,4;1,2"]}, base=tmp_path)
    assert (s.timeout, s.threads, s.input_shapes) == (20, 3, ((1, 4), (1, 2)))
    assert set(s.deprecations) == {"$TFLITE_HARNESS_TIMEOUT is deprecated: use $TFLITE_HARNESS_CONVERSION_TIMEOUT",
                                   "$TFLITE_HARNESS_THREADS is deprecated: use $TFLITE_HARNESS_CONVERSION_THREADS",
                                   "ini key default_input_shape is deprecated: use input_shape"}


def test_a_list_or_an_empty_name_where_one_value_belongs_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="tflite_dir from ini tflite_dir must be one value, not a list"):
        resolve({}, {}, {"tflite_dir": ["x", "y"]}, base=tmp_path)
    with pytest.raises(SettingsError, match="reports_dir from command line must name a folder"):
        resolve({"reports_dir": " "}, {}, {}, base=tmp_path)


def test_every_setting_has_one_stem_for_flag_ini_and_environment():
    from converter.settings import SETTINGS

    for setting in SETTINGS:
        stem = setting.option
        assert setting.flag == "--" + stem.replace("_", "-") and setting.ini == stem
        assert setting.env == "TFLITE_HARNESS_" + stem.upper()


def test_messages_are_stable_across_machines():
    a = normalise_message("\x1b[31mError\x1b[0m at 0x7f3a2b1c4d5e in /tmp/pytest-7/run1/m/model.onnx\nmore")
    b = normalise_message("\x1b[31mError\x1b[0m at 0x7f00000a1b2c in /home/ci/work/model.onnx")
    assert a == b == "Error at 0x… in …/model.onnx"


def test_result_round_trips():
    r = Result("m", "m.pt", "failed", Failure(FailureKind.TIMEOUT, "export", "slow"),
               stage_seconds={"load": 1.0}, network_attempts=("connect x",))
    assert Result.from_dict(r.to_dict()) == r
    assert r.failure.signature == "timeout@export: slow"


def test_ids_stay_unique_when_names_collide(tmp_path):
    for rel in ("a/models/x.pt", "b/models/x.pt", "c/net.pt", "c/net.pt2", "c/sub/net.pt"):
        write(tmp_path / rel)
    roots = [tmp_path / "a" / "models", tmp_path / "b" / "models", tmp_path / "c", tmp_path / "c"]
    cases = discover(roots, input_shapes=["1,4"])
    ids = [c.model_id for c in cases]
    assert len(ids) == len(set(ids)) == 5  # the repeated folder is read once
    assert set(ids) == {"a/models/x", "b/models/x", "net.pt", "net.pt2", "sub/net"}


def test_artifact_folders_of_nested_ids_never_contain_each_other(tmp_path):
    s = resolve({}, {}, {}, base=tmp_path)
    assert s.artifacts_for("a") not in s.artifacts_for("a/net").parents
    assert s.deliverable_for("a/net") == tmp_path / "tflite_models" / "a" / "net.tflite"


def test_layout_follows_onnx2tf_even_when_dimensions_coincide():
    from converter.stages.savedmodel import layout_perm, signature_keys

    assert layout_perm((1, 64, 64), (1, 64, 64), kept=False) == (0, 2, 1)
    assert layout_perm((1, 64, 64), (1, 64, 64), kept=True) == (0, 1, 2)
    assert layout_perm((1, 3, 8, 8), (1, 8, 8, 3), kept=False) == (0, 2, 3, 1)
    assert layout_perm((1, 12), (1, 12), kept=False) == (0, 1)
    assert signature_keys(["a.b", "a_b", "0x"], "input") == ["a_b", "input_1", "input_2"]


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "-5"])
def test_non_finite_or_negative_settings_are_refused(tmp_path, value):
    with pytest.raises(SettingsError, match="must be"):
        resolve({"memory_limit_mb": value}, {}, {}, base=tmp_path)
    with pytest.raises(SettingsError, match="must be"):
        resolve({"conversion_timeout": value}, {}, {}, base=tmp_path)


def test_shapes_with_holes_are_refused():
    for bad in ("1,,3", "", "1,3,"):
        with pytest.raises(ValueError):
            parse_shape(bad)


def test_non_finite_metrics_survive_json(tmp_path):
    from converter.results import ExportResult, OutputComparison

    bad = compare("y", np.zeros((2, 3)), np.zeros((3, 2)), 0.1)
    r = Result("m", "m.pt", "failed", export=ExportResult("legacy", 17, "x", 1, ((1,),), (), (bad,), 0.1))
    r.write(tmp_path / "r.json")  # strict JSON: no Infinity / NaN tokens
    assert "Infinity" not in (tmp_path / "r.json").read_text()
    back = Result.read(tmp_path / "r.json")
    assert isinstance(back.export.outputs[0], OutputComparison)
    assert math.isinf(back.export.outputs[0].range_rel_err) and math.isnan(back.export.outputs[0].cosine)


def test_the_shipped_configuration_runs_with_every_plugin_on():
    """An ini key or option that pytest or a plugin already owns (the cache provider's cache_dir)
    breaks every run at configure time: collect with the repo's own configuration, cache on."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "model_cases"],
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0 and "INTERNALERROR" not in proc.stdout + proc.stderr, proc.stdout[-2000:]
    assert "model_cases/examples/resnet_tiny.pt2::resnet_tiny" in proc.stdout


def test_a_state_dict_without_a_factory_is_told_with_its_missing_shape_at_once(tmp_path):
    import torch

    from converter.spec import SpecError, load_spec

    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(SpecError) as both:
        load_spec(tmp_path / "weights.pt", "weights")
    assert "no input shape" in str(both.value) and "add [[inputs]] with a shape to weights.toml (or to a models.toml" \
        in str(both.value) and "factory = 'module:function'" in str(both.value)
    (tmp_path / "weights.toml").write_text("[[inputs]]\nshape = [1, 3]\n")
    with pytest.raises(SpecError, match="key 'factory': the file holds a state_dict"):
        load_spec(tmp_path / "weights.pt", "weights")
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4)), tmp_path / "module.pt")  # a module's class: not a state_dict
    (tmp_path / "module.toml").write_text("[[inputs]]\nshape = [1, 3]\n")
    assert load_spec(tmp_path / "module.pt", "module").factory is None
