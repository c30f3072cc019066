"""Sidecars and folder defaults: layers, validation, one-line errors naming file and key (spec.py)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.spec import SpecError, defaults_layer, load_spec, parse_shape

from ..support import write


def test_spec_layers_merge_nearest_wins(tmp_path):
    write(tmp_path / "models.toml", "timeout = 100\n[tolerance]\ndrq = 0.1\n[[inputs]]\nshape = [1, 3, 8, 8]\n")
    write(tmp_path / "sub" / "models.toml", "layout = \"nchw\"\n")
    model = write(tmp_path / "sub" / "net.pt")
    write(tmp_path / "sub" / "net.toml", "timeout = 5\n[tolerance.outputs.logits]\nfp32 = 0.002\n")
    spec = load_spec(model, "net", root=tmp_path, defaults=defaults_layer(verify_samples="3"))
    assert spec.timeout == 5 and spec.layout == "nchw" and spec.verify_samples == 3
    write(tmp_path / "sub" / "models.toml", "layout = \"nchw\"\nverify_samples = 12\n")
    assert load_spec(model, "net", root=tmp_path, defaults=defaults_layer(verify_samples="3")).verify_samples == 12
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
    ("verify_samples = 0\n", "verify_samples", "between 1 and 1000"),
    ("verify_samples = 2.5\n", "verify_samples", "an integer"),
])
def test_spec_errors_name_file_and_key(tmp_path, toml, key, words):
    model = write(tmp_path / "m.pt")
    side = write(tmp_path / "m.toml", toml + ("" if "inputs" in toml else "\n[[inputs]]\nshape = [1]\n"))
    with pytest.raises(SpecError) as info:
        load_spec(model, "m")
    assert info.value.where == str(side) and info.value.key == key and words in str(info.value)


def test_missing_shape_says_what_to_add(tmp_path):
    with pytest.raises(SpecError, match="no input shape from any source.*--tflite-input-shape"):
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


def test_shapes_with_holes_are_refused():
    for bad in ("1,,3", "", "1,3,"):
        with pytest.raises(ValueError):
            parse_shape(bad)


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


@pytest.mark.parametrize("toml, words", [
    ("timout = 5\n[[inputs]]\nshape = [1]\n", "key 'timout': unknown key: did you mean 'timeout'?"),
    ("input_shape = [1, 4]\n", "key 'input_shape': unknown key: did you mean 'inputs'?"),
    ("[[inputs]]\nshap = [1, 4]\n", "unknown key 'shap': did you mean 'shape'?"),
    ("[tolerance]\ndqr = 0.1\n[[inputs]]\nshape = [1]\n", "unknown key 'dqr': did you mean 'drq'?"),
    ("[tolerance.outputs.logits]\nfp61 = 0.1\n[[inputs]]\nshape = [1]\n", "unknown key 'fp61': did you mean 'fp16'?"),
    ("[expect]\nkind = \"crash\"\nreason = \"r\"\nreasons = \"r\"\n[[inputs]]\nshape = [1]\n",
     "unknown key 'reasons': did you mean 'reason'?"),
])
def test_a_sidecar_typo_is_answered_with_the_key_it_meant(tmp_path, toml, words):
    model = write(tmp_path / "m.pt")
    write(tmp_path / "m.toml", toml)
    with pytest.raises(SpecError) as info:
        load_spec(model, "m")
    assert words in str(info.value), str(info.value)


def test_a_key_like_no_other_lists_the_known_keys(tmp_path):
    write(tmp_path / "m.toml", "colour = 1\n[[inputs]]\nshape = [1]\n")
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path / "m.pt"), "m")
    assert "did you mean" not in str(info.value) and "(known keys: allow_flex, auto_fixes, calibration," in str(info.value)


def test_every_error_of_a_file_is_in_its_one_message(tmp_path):
    """A sidecar with three mistakes is fixed in one round, not three: each named, in the file's order."""
    write(tmp_path / "models.toml", "timout = 5\nseed = -1\nlayout = \"nhcw\"\n[[inputs]]\nshape = [1]\n")
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path / "m.pt"), "m", root=tmp_path)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'models.toml'}: 3 errors: key 'timout': unknown key: did you mean 'timeout'?; "
                           "key 'seed': must be between 0 and 4294967295, not -1; key 'layout': must be one of"), text
    assert info.value.key is None and "\n" not in text
