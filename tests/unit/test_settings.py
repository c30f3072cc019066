"""Settings: one table, one resolution point (option > environment > ini > default), bounds shared with sidecars (settings.py)."""
from __future__ import annotations

import pytest

from converter.settings import SettingsError, resolve


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


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "-5"])
def test_non_finite_or_negative_settings_are_refused(tmp_path, value):
    with pytest.raises(SettingsError, match="must be"):
        resolve({"memory_limit_mb": value}, {}, {}, base=tmp_path)
    with pytest.raises(SettingsError, match="must be"):
        resolve({"conversion_timeout": value}, {}, {}, base=tmp_path)


@pytest.mark.parametrize("setting, value, words", [
    ("conversion_timeout", "1e308", "between 1 and 604800"),
    ("memory_limit_mb", "1", "between 64 and"),
    ("conversion_threads", "0", "between 1 and 1024"),
    ("conversion_threads", "2.5", "an integer"),
    ("verify_samples", "0", "between 1 and 1000"),
])
def test_options_environment_and_ini_share_the_sidecar_bounds(tmp_path, setting, value, words):
    env_var = "TFLITE_HARNESS_" + setting.upper()
    for cli, env, where in (({setting: value}, {}, "command line"), ({}, {env_var: value}, f"${env_var}")):
        with pytest.raises(SettingsError) as info:
            resolve(cli, env, {}, base=tmp_path)
        assert f"{setting} from {where}" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("value", ["nan", "maybe", "2"])
def test_a_switch_that_is_neither_on_nor_off_is_refused(value):
    with pytest.raises(SettingsError, match="TFLITE_HARNESS_NO_CACHE"):
        resolve({}, env={"TFLITE_HARNESS_NO_CACHE": value}, ini={})
